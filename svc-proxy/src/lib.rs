//! # svc-proxy
//!
//! A node-local ClusterIP dataplane for clients that do not link Rust: Service name →
//! ClusterIP → ready pod, for any client on the node.
//!
//! - **Sources:** a manifests file or directory (`--manifests`), or the Kubernetes API
//!   (`KUBECONFIG` or in-cluster config), both into an `svc_core` store.
//! - **TCP** ([`tcp`]): a listener on every Service cluster IP, external IP and load-balancer IP
//!   and port, and on NodePorts at `--nodeport-addr`, added and removed live ([`listeners`]).
//!   Each connection goes to an endpoint picked by svc-tower's policy and balancer, with
//!   connect retry on another endpoint, half-close and idle timeout.
//! - **UDP** ([`udp`]): per-client flows, re-picked when their endpoint goes away.
//! - **HTTP mode** ([`http`]): `appProtocol: http` and `kubernetes.io/h2c` ports are balanced
//!   per request.
//! - **DNS** ([`dns`]): the cluster zone, from the store; not an open resolver.
//! - **Admin** ([`admin`]): `/healthz`, `/readyz`, `/metrics`, `/debug/services`.
//! - **Shutdown** ([`shutdown`]): SIGTERM stops accepting, drains flows up to a deadline, then
//!   resets the rest; SIGHUP reloads the source instead of killing the proxy.
//! - **Source health** ([`health`]): per-file manifests errors and watch connectivity, in
//!   `/readyz?verbose` and metrics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), svc_proxy::Error> {
//! let args = svc_proxy::Args::try_from_flags(["--manifests", "examples/demo", "--admin-addr", "127.0.0.1:0"])
//!     .expect("valid flags");
//! let proxy = svc_proxy::start(args).await?;
//! println!("admin on {}", proxy.admin_addr());
//! proxy.run_until(svc_proxy::shutdown::signal()).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod dns;
mod error;
pub mod health;
pub mod http;
pub mod iface;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod shutdown;
pub mod target;
pub mod tcp;
pub mod throttle;
pub mod udp;
pub mod workers;

pub use cli::Args;
pub use error::{Error, Result};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svc_core::source::{kube as kube_source, manifests, Reload};
use svc_core::store::{Event, StoreConfig, Writer};
use svc_core::Store;
use svc_tower::policy::Locality;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use metrics::Metrics;
use shutdown::Drain;

/// How often the manifests source looks for changes.
const MANIFESTS_INTERVAL: Duration = Duration::from_secs(1);

/// State shared by every part of the proxy.
#[derive(Debug)]
pub struct Context {
    /// The store everything is served from.
    pub store: Store,
    /// The flags.
    pub args: Args,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Shutdown signal and running flows.
    pub drain: Drain,
    /// This node's name and zone.
    pub locality: Locality,
    /// The threads that serve TCP and HTTP connections.
    pub workers: workers::Workers,
    /// Flow and memory ceilings.
    pub limits: limits::Limits,
    /// How the source is doing (for `/readyz` and metrics).
    pub source_health: health::SourceHealth,
    /// Warnings about failing endpoints, at most one per endpoint and kind per interval.
    pub endpoint_warnings: throttle::LogThrottle<(SocketAddr, &'static str)>,
    /// The listeners' state: programmed yet, failing ones.
    pub dataplane: Arc<listeners::Status>,
}

/// A started proxy.
pub struct Running {
    ctx: Arc<Context>,
    admin_addr: SocketAddr,
    dns: Option<(SocketAddr, hickory_server::Server<dns::Handler>)>,
    source: JoinHandle<Result<()>>,
    reconciler: JoinHandle<()>,
}

impl Running {
    /// Where the admin server listens (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where DNS listens, if enabled.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|(a, _)| *a)
    }

    /// The shared state.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Serves until `shutdown` resolves (or the source fails), then stops accepting and drains
    /// open flows for up to `--drain-timeout`.
    ///
    /// # Errors
    /// The source's error, if it stopped the proxy.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let outcome = tokio::select! {
            _ = shutdown => Ok(()),
            ended = &mut self.source => match ended {
                Ok(Err(e)) => Err(e),
                _ => Err(Error::TaskStopped("the source")),
            },
        };
        let active = self.ctx.drain.active();
        tracing::info!(flows = active, deadline = ?self.ctx.args.drain_timeout, "stopped accepting; draining");
        let drain = self.ctx.drain.drain(self.ctx.args.drain_timeout);
        if let Some((_, server)) = &mut self.dns {
            server.shutdown_token().cancel();
        }
        let mut left = drain.await;
        if left > 0 && self.ctx.args.drain_deadline_close == cli::DeadlineClose::Reset {
            // The flows reset their sockets and end at once; the bound is for safety.
            left = self.ctx.drain.cut(Duration::from_secs(1)).await;
        }
        // The reconciler closes its listeners as soon as the drain begins; bound the wait all
        // the same, so that nothing can keep the process from exiting.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reconciler).await;
        // Ending the worker runtimes drops the flows still open past the deadline.
        self.ctx.workers.stop();
        if self.ctx.drain.was_cut() {
            tracing::warn!(
                still_running = left,
                close = ?self.ctx.args.drain_deadline_close,
                "drain deadline passed; the remaining flows were cut"
            );
        } else if left > 0 {
            tracing::warn!(
                flows = left,
                "drain deadline passed; closing the remaining flows"
            );
        } else {
            tracing::info!("drained");
        }
        outcome
    }
}

/// Starts the proxy: the source, the listeners, DNS and the admin server.
///
/// # Errors
/// When the manifests path does not exist, no Kubernetes client can be configured, the admin
/// or DNS address cannot be bound, or the Service CIDR routes or the managed interface cannot
/// be set up. Manifests that do not parse end [`Running::run_until`] with the error.
pub async fn start(args: Args) -> Result<Running> {
    start_with(args, None).await
}

/// Like [`start`], watching the API through `client` (when `--manifests` is not given)
/// instead of one configured from the environment.
///
/// # Errors
/// See [`start`].
pub async fn start_with_client(args: Args, client: kube::Client) -> Result<Running> {
    start_with(args, Some(client)).await
}

async fn start_with(args: Args, client: Option<kube::Client>) -> Result<Running> {
    let fd_limit = limits::raise_fd_limit();
    let store_config =
        StoreConfig::default().cluster_domain(args.cluster_domain.trim_end_matches('.'));
    let (store, writer) = svc_core::store::store(store_config);
    let (tx, rx) = mpsc::channel(1024);
    spawn_writer(writer, rx)?;
    let reload = Reload::new();
    // From here on SIGHUP reloads instead of killing the process.
    shutdown::reload_on_hangup(reload.clone());
    let (source, source_health) = start_source(&args, client, store.clone(), tx, reload).await?;

    let dataplane = Arc::new(listeners::Status::default());
    let mut metrics = Metrics::new(store.clone(), dataplane.clone(), args.metrics_endpoints);
    metrics.register_collector(Box::new(health::SourceCollector::new(
        source_health.clone(),
        store.clone(),
    )));
    let metrics = Arc::new(metrics);
    let locality = Locality::new(args.node_name.as_deref(), args.zone.as_deref());
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let workers = workers::Workers::start(threads).map_err(Error::Workers)?;
    let limits = limits::Limits::new(args.udp_max_flows, args.memory_ceiling);
    let ctx = Arc::new(Context {
        limits,
        store: store.clone(),
        args,
        metrics,
        drain: Drain::new(),
        locality,
        workers,
        source_health,
        endpoint_warnings: throttle::LogThrottle::default(),
        dataplane,
    });

    let admin = admin::bind(ctx.args.admin_addr).await?;
    let admin_addr = admin.local_addr().map_err(|source| Error::Bind {
        addr: ctx.args.admin_addr,
        source,
    })?;
    tokio::spawn(admin::serve(admin, ctx.clone()));
    tracing::info!(addr = %admin_addr, "admin listening");

    let dns = match ctx.args.dns_addr {
        Some(addr) => {
            let zone = dns::answer::Zone::new(store.clone(), ctx.args.dns_ttl)
                .map_err(|e| Error::Forwarder(format!("invalid cluster domain: {e}")))?;
            let handler = dns::Handler::new(zone, ctx.args.dns_forward, ctx.metrics.clone())?;
            let server = dns::serve(addr, handler).await?;
            Some((addr, server))
        }
        None => None,
    };

    iface::route_service_cidrs(&ctx.args.service_cidr)
        .await
        .map_err(|e| Error::Interface {
            name: "lo".into(),
            message: e.to_string(),
        })?;
    let interface = match &ctx.args.manage_interface {
        Some(name) => Some(
            iface::Interface::open(name)
                .await
                .map_err(|e| Error::Interface {
                    name: name.clone(),
                    message: e.to_string(),
                })?,
        ),
        None => None,
    };
    let addresses = listeners::Addresses {
        interface,
        routed: ctx.args.service_cidr.clone(),
    };
    let budget = listener_budget(fd_limit);
    let reconciler = tokio::spawn(listeners::Reconciler::new(ctx.clone(), addresses, budget).run());
    Ok(Running {
        ctx,
        admin_addr,
        dns,
        source,
        reconciler,
    })
}

/// Applies the source's events on a thread of its own: a large change (a big manifests file, a
/// relist of a large cluster) rebuilds many snapshots, and the control-plane runtime that
/// serves DNS and the admin must not wait for that.
fn spawn_writer(mut writer: Writer, mut events: mpsc::Receiver<Event>) -> Result<()> {
    std::thread::Builder::new()
        .name("svc-store-writer".into())
        .spawn(move || {
            while let Some(event) = events.blocking_recv() {
                writer.apply(event);
            }
        })
        .map(|_| ())
        .map_err(Error::Workers)
}

/// How many listening sockets the open-file limit leaves room for, logged in those terms.
fn listener_budget(limit: Option<limits::FdLimit>) -> usize {
    let Some(limit) = limit else {
        tracing::warn!("cannot read the open-file limit; listeners are bounded by the kernel only");
        return usize::MAX;
    };
    // Counted now, with the admin, DNS and API connections open.
    let open = limits::open_fds().unwrap_or(64);
    let budget = limit.listener_budget(open);
    tracing::info!(
        limit = limit.soft,
        raised_from = limit.was,
        hard = limit.hard,
        in_use = open,
        reserve = limit.reserve(),
        service_ports = budget,
        "open-file limit: room for about {budget} Service ports (one listening socket each, \
         whatever --threads); each open TCP flow takes two descriptors more"
    );
    budget
}

async fn start_source(
    args: &Args,
    client: Option<kube::Client>,
    store: Store,
    tx: mpsc::Sender<Event>,
    reload: Reload,
) -> Result<(JoinHandle<Result<()>>, health::SourceHealth)> {
    match &args.manifests {
        Some(path) => {
            let options = manifests::Options::default()
                .interval(MANIFESTS_INTERVAL)
                .reload(reload);
            let status = options.status.clone();
            // The first load happens here, so that a bad path or file fails the start.
            let follow = manifests::start(path.clone(), options, tx).await?;
            tracing::info!(path = %path.display(), "serving manifests");
            let task = tokio::spawn(async move { follow.await.map_err(Error::from) });
            Ok((task, health::SourceHealth::Manifests(status)))
        }
        None => {
            let client = match client {
                Some(c) => c,
                None => kube::Client::try_default().await?,
            };
            let mut config = kube_source::Config::default().reload(reload);
            if let Some(namespace) = &args.namespace {
                config = config.namespace(namespace.clone());
            }
            let api = config.health.clone();
            tracing::info!(namespace = ?args.namespace, "watching the Kubernetes API");
            let task = tokio::spawn(async move {
                kube_source::run(client, config, store, tx).await;
                Err(Error::TaskStopped("the kubernetes source"))
            });
            Ok((task, health::SourceHealth::Kube(api)))
        }
    }
}

/// Starts the proxy and serves until SIGTERM or SIGINT, then drains.
///
/// # Errors
/// See [`start`] and [`Running::run_until`].
pub async fn run(args: Args) -> Result<()> {
    start(args).await?.run_until(shutdown::signal()).await
}
