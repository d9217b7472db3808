//! [`SvcConnector`]: a `Service<Uri>` that connects to a live endpoint.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use http::Uri;
use svc_core::Store;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::dns::Dns;
use super::idle::IdleConns;
use super::routed::SvcStream;
use crate::balance::{EndpointPool, Pick, Pools};
use crate::error::{BoxError, ConnectFailed, TlsRequired};
use crate::target::{self, Target};

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) max_attempts: u32,
    pub(crate) nodelay: bool,
    pub(crate) sync_timeout: Duration,
    pub(crate) balance_requests: bool,
    pub(crate) eject_on_5xx: bool,
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) enforce_http: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(2)),
            max_attempts: 3,
            nodelay: true,
            sync_timeout: Duration::from_secs(5),
            balance_requests: true,
            eject_on_5xx: true,
            max_idle_per_endpoint: 64,
            enforce_http: true,
        }
    }
}

/// A connector for `hyper_util::client::legacy::Client` that resolves Service names and
/// cluster IPs to a live endpoint at connect time.
///
/// `http://web.shop.svc.cluster.local:80`, `web.shop:80`, `web:80` (in the store's default
/// namespace) and `<cluster IP>:80` all lead to the Service port 80 of `shop/web`; the
/// connector picks one of its eligible endpoints (see [`EndpointPool`]) and connects to its
/// target port. A connect failure is reported to
/// outlier ejection and another endpoint is tried, up to
/// [`max_attempts`](Self::max_attempts). ExternalName Services and names outside the
/// cluster are resolved with hickory-resolver; other IPs are connected to directly.
///
/// hyper-util's client pools connections per URI authority and reuses the most recent idle
/// one. So that a client sending one request at a time still spreads over every pod, and never
/// reuses a connection to a pod that stopped being ready, the connection this connector
/// returns for a Service ([`SvcStream`]) is not tied to one pod: each HTTP/1.1 request goes
/// to an endpoint picked for it, over kept-alive connections per endpoint shared by this
/// connector's clones (see [`balance_requests`](Self::balance_requests)). HTTP/2
/// (`http2_only`) is balanced per connection: use the [`layer`](crate::layer) for HTTP/2 and
/// gRPC.
///
/// `Clone` is cheap: the configuration is behind an `Arc`, and clones share their pools.
///
/// Settings are by-value builder methods (`SvcConnector::new(store).max_attempts(2)`), as for
/// every configurable type of this crate and as tower's layers and kube-runtime's
/// `watcher::Config` have them. hyper-util's `HttpConnector` uses `&mut self` setters
/// (`set_connect_timeout`) instead; the names here are the same without `set_`, and differ on
/// purpose, so that one style holds across the crate.
///
/// ```no_run
/// # async fn doc(store: svc_core::Store) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// let connector = svc_tower::connect::SvcConnector::new(store)
///     .connect_timeout(Some(Duration::from_secs(1)))
///     .max_attempts(2);
/// let client: Client<_, Empty<bytes::Bytes>> =
///     Client::builder(TokioExecutor::new()).build(connector);
/// let response = client.get("http://web.shop/".parse()?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SvcConnector {
    pools: Pools,
    dns: Dns,
    config: Arc<Config>,
    idle: Arc<IdleConns>,
}

impl fmt::Debug for SvcConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvcConnector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SvcConnector {
    /// A connector over `store`, for a client with no known node or zone, with the default
    /// [`BalanceConfig`](crate::balance::BalanceConfig).
    pub fn new(store: Store) -> Self {
        Self::with_pools(Pools::new(store))
    }

    /// A connector sharing `pools` (and so their load estimates and ejections) with other
    /// users, such as a [`layer`](crate::layer).
    pub fn with_pools(pools: Pools) -> Self {
        let config = Config::default();
        Self {
            pools,
            dns: Dns::default(),
            idle: IdleConns::new(config.max_idle_per_endpoint),
            config: Arc::new(config),
        }
    }

    /// The pools this connector picks from.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Timeout for each connect attempt. Default 2 s; `None` waits as long as the OS does.
    #[must_use]
    pub fn connect_timeout(self, timeout: Option<Duration>) -> Self {
        self.with(|c| c.connect_timeout = timeout)
    }

    /// How many endpoints to try before giving up. Default 3 (at least 1).
    #[must_use]
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|c| c.max_attempts = attempts.max(1))
    }

    /// Sets `TCP_NODELAY` on connections. Default `true`.
    #[must_use]
    pub fn nodelay(self, nodelay: bool) -> Self {
        self.with(|c| c.nodelay = nodelay)
    }

    /// How long a connect waits for the store's initial sync before resolving anyway.
    /// Default 5 s.
    #[must_use]
    pub fn sync_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.sync_timeout = timeout)
    }

    /// Whether each HTTP/1.1 request to a Service is balanced on its own (default `true`).
    ///
    /// hyper-util's pool reuses its most recent idle connection, so with per-connection
    /// balancing a client that sends one request at a time sends every request to one pod,
    /// and keeps using a pooled connection to a pod that is no longer ready. With this on,
    /// the connection hyper-util pools is not tied to a pod: each request goes to an endpoint
    /// picked for it, over kept-alive connections per endpoint that this connector (and its
    /// clones) share, and none goes to an endpoint that has left the eligible set. HTTP/2
    /// (`http2_only`) and upgraded connections stay on the endpoint they were opened to.
    /// With `false`, each connection goes to one endpoint for its whole life.
    #[must_use]
    pub fn balance_requests(self, balance: bool) -> Self {
        self.with(|c| c.balance_requests = balance)
    }

    /// Whether a 5xx response counts as a failure for outlier ejection, with per-request
    /// balancing (Envoy's `consecutive_5xx`). Default `true`.
    #[must_use]
    pub fn eject_on_5xx(self, eject: bool) -> Self {
        self.with(|c| c.eject_on_5xx = eject)
    }

    /// Kept-alive connections per endpoint, with per-request balancing. Default 64. The
    /// connector (and the clones made from it from now on) gets a fresh set of kept
    /// connections: the kept ones are not carried over.
    #[must_use]
    pub fn max_idle_per_endpoint(mut self, max: usize) -> Self {
        self.idle = IdleConns::new(max);
        self.with(|c| c.max_idle_per_endpoint = max)
    }

    /// The DNS resolver for ExternalName targets and names outside the cluster. Default: one
    /// built on first use from the system configuration (`/etc/resolv.conf`).
    #[must_use]
    pub fn dns_resolver(mut self, resolver: TokioResolver) -> Self {
        self.dns = Dns::with(resolver);
        self
    }

    /// Disables DNS: names outside the cluster and ExternalName Services fail with
    /// [`ResolveFailed`](crate::error::ResolveFailed). Default: enabled.
    #[must_use]
    pub fn disable_dns(mut self) -> Self {
        self.dns = Dns::disabled();
        self
    }

    /// Whether URIs other than `http://` are refused with [`TlsRequired`]. Default `true`, as
    /// hyper-util's `HttpConnector::enforce_http`: this connector speaks cleartext, so an
    /// `https://` request through it alone would go out unencrypted.
    ///
    /// Set it to `false` only when a TLS connector wraps this one, such as hyper-rustls's
    /// `HttpsConnector::from((connector, tls_config))`; `https://` connections are then balanced
    /// per connection (the requests inside TLS cannot be routed one by one). See the
    /// `tls` example.
    #[must_use]
    pub fn enforce_http(self, enforce: bool) -> Self {
        self.with(|c| c.enforce_http = enforce)
    }

    async fn connect(self, uri: Uri) -> Result<SvcStream, BoxError> {
        let cleartext = match uri.scheme_str() {
            None | Some("http") => true,
            Some(_) if self.config.enforce_http => return Err(TlsRequired::new(&uri).into()),
            Some(_) => false,
        };
        let (host, port) = target::host_port(&uri)?;
        target::wait_until_ready(&self.pools, host, self.config.sync_timeout).await?;
        let stream = match target::resolve(&self.pools, host, port)? {
            Target::Pool { pool, .. } => {
                let start = Instant::now();
                let (pick, stream) = connect_pool(&pool, &self.config, None).await?;
                if !self.config.balance_requests || !cleartext {
                    pick.success_since(start);
                    return Ok(SvcStream::plain(stream));
                }
                // Each request will report its own latency; the connect is not one.
                let first = (pick.addr, stream);
                drop(pick);
                return Ok(SvcStream::routed(pool, self.idle, self.config, first));
            }
            Target::Direct(addr) => connect_addrs(&[addr], &self.config).await?,
            Target::External { name, port } => self.connect_dns(&name, port).await?,
            Target::Dns { host, port } => self.connect_dns(&host, port).await?,
        };
        Ok(SvcStream::plain(stream))
    }

    async fn connect_dns(&self, name: &str, port: u16) -> Result<TcpStream, BoxError> {
        let addrs: Vec<SocketAddr> = self
            .dns
            .lookup(name)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        Ok(connect_addrs(&addrs, &self.config).await?)
    }
}

async fn connect_one(addr: SocketAddr, config: &Config) -> std::io::Result<TcpStream> {
    tcp(addr, config.connect_timeout, config.nodelay).await
}

/// Connects to `addr` within `timeout`, with `TCP_NODELAY` as asked.
pub(crate) async fn tcp(
    addr: SocketAddr,
    timeout: Option<Duration>,
    nodelay: bool,
) -> std::io::Result<TcpStream> {
    let connect = TcpStream::connect(addr);
    let stream = match timeout {
        Some(limit) => tokio::time::timeout(limit, connect).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??,
        None => connect.await?,
    };
    if nodelay {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    }
    Ok(stream)
}

/// Connects to a picked endpoint (`first`, or a new pick); on failure, reports it and tries
/// another. The caller reports how the pick went.
pub(crate) async fn connect_pool(
    pool: &EndpointPool,
    config: &Config,
    mut first: Option<Pick>,
) -> Result<(Pick, TcpStream), BoxError> {
    let mut tried = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let pick = match first.take() {
            Some(pick) => pick,
            None => pool.pick_excluding(None, &tried)?,
        };
        let addr = pick.addr;
        match connect_one(addr, config).await {
            Ok(stream) => return Ok((pick, stream)),
            Err(error) => {
                pick.failure();
                tracing::debug!(endpoint = %addr, %error, attempt, "connect failed");
                if attempt >= config.max_attempts {
                    return Err(ConnectFailed::new(addr, attempt, error).into());
                }
                tried.push(addr);
            }
        }
    }
}

/// Connects to the first of `addrs` that answers, trying at most `max_attempts`.
async fn connect_addrs(addrs: &[SocketAddr], config: &Config) -> Result<TcpStream, ConnectFailed> {
    let mut last = None;
    let limit = addrs.len().min(config.max_attempts as usize);
    for (i, &addr) in addrs.iter().take(limit).enumerate() {
        match connect_one(addr, config).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some((addr, i as u32 + 1, error)),
        }
    }
    let (addr, attempts, error) = last.expect("resolvers never return an empty list");
    Err(ConnectFailed::new(addr, attempts, error))
}

impl tower::Service<Uri> for SvcConnector {
    type Response = SvcStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Connecting(Box::pin(self.clone().connect(uri)))
    }
}

type BoxConnecting = Pin<Box<dyn Future<Output = Result<SvcStream, BoxError>> + Send>>;

/// The future [`SvcConnector`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct Connecting(BoxConnecting);

impl Future for Connecting {
    type Output = Result<SvcStream, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connecting")
    }
}

#[cfg(test)]
mod tests {
    use svc_core::StoreConfig;

    use super::*;

    fn connector() -> SvcConnector {
        SvcConnector::new(svc_core::store::store(StoreConfig::default()).0)
    }

    #[test]
    fn builders_set_their_own_setting() {
        let ms = Duration::from_millis;
        let base = connector();
        let c = base
            .clone()
            .connect_timeout(Some(ms(1)))
            .max_attempts(2)
            .nodelay(false)
            .sync_timeout(ms(3))
            .balance_requests(false)
            .eject_on_5xx(false)
            .max_idle_per_endpoint(4)
            .enforce_http(false);
        assert_eq!(c.config.connect_timeout, Some(ms(1)));
        assert_eq!(c.config.max_attempts, 2);
        assert!(!c.config.nodelay);
        assert_eq!(c.config.sync_timeout, ms(3));
        assert!(!c.config.balance_requests);
        assert!(!c.config.eject_on_5xx);
        assert_eq!(c.config.max_idle_per_endpoint, 4);
        assert_eq!(
            c.idle.max_per_endpoint, 4,
            "the kept connections follow the limit"
        );
        assert!(!c.config.enforce_http);
        assert_eq!(
            base.config.max_attempts, 3,
            "a clone's settings are its own"
        );
        assert_eq!(connector().max_attempts(0).config.max_attempts, 1);
    }

    #[tokio::test]
    async fn dns_builders_set_the_resolver() {
        assert_eq!(connector().dns.given(), None);
        assert_eq!(connector().disable_dns().dns.given(), Some(false));
        let resolver = super::super::dns::unused_resolver();
        assert_eq!(connector().dns_resolver(resolver).dns.given(), Some(true));
    }
}
