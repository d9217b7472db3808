//! [`Balance`]: the request-routing service.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::Watched;
use super::conn::{Proto, Sent};
use super::destination::Destination;
use super::future::ResponseFuture;
use super::route::{Route, Routes};
use super::{Config, HttpVersion};
use crate::balance::Pools;
use crate::error::{
    BoxError, ConnectFailed, MissingAuthority, NoEndpoints, NoEndpointsReason, RequestBodyFailed,
    RequestFailed, ResponseTimeout, TlsRequired, UnknownService,
};
use crate::target::{self, Target};

/// Balances each request over the endpoints of the Service its authority names; see the
/// [module docs](super). Requests for other hosts go to the fallback `S`.
pub struct Balance<S, B> {
    inner: S,
    pools: Pools,
    config: Arc<Config>,
    routes: Arc<Routes<B>>,
}

impl<S: Clone, B> Clone for Balance<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pools: self.pools.clone(),
            config: self.config.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for Balance<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B> Balance<S, B> {
    pub(crate) fn new(inner: S, pools: Pools, config: Arc<Config>, routes: Arc<Routes<B>>) -> Self {
        Self {
            inner,
            pools,
            config,
            routes,
        }
    }

    /// The pools requests are balanced with (for metrics: [`Pools::all`]).
    pub fn pools(&self) -> &Pools {
        &self.pools
    }
}

/// A fallback that refuses every request with [`UnknownService`]: only Services are reached.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFallback;

impl<B> tower::Service<Request<B>> for NoFallback {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let host = authority_of(&req)
            .map(|a| a.host().to_string())
            .unwrap_or_default();
        std::future::ready(Err(UnknownService { host }.into()))
    }
}

/// The authority to route by: the URI's, else the `Host` header.
fn authority_of<B>(req: &Request<B>) -> Result<Authority, MissingAuthority> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.clone());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok())
        .ok_or(MissingAuthority)
}

impl<S, B> tower::Service<Request<B>> for Balance<S, B>
where
    S: tower::Service<Request<B>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The fallback is driven to readiness (with `oneshot`) only when a request needs it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let this = self.clone();
        ResponseFuture::new(this.route(req))
    }
}

enum Routed<B> {
    Cluster(Arc<Route<B>>),
    Fallback,
}

impl<S, B> Balance<S, B>
where
    S: tower::Service<Request<B>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn route(self, mut req: Request<B>) -> Result<Response<Incoming>, BoxError> {
        let Self {
            inner,
            pools,
            config,
            routes,
        } = self;
        if let Some(dest) = req.extensions_mut().remove::<Destination>() {
            return to_destination(&pools, &config, req, &dest).await;
        }
        let authority = authority_of(&req)?;
        let scheme = req.uri().scheme().cloned().unwrap_or(Scheme::HTTP);
        let routed = match routes.get(authority.as_str()) {
            Some(route) => Routed::Cluster(route),
            // Boxed: only a route's first request gets here, and every request's future
            // would otherwise be as large as this one's.
            None => Box::pin(lookup(&pools, &config, &routes, &authority, &scheme)).await?,
        };
        match routed {
            Routed::Cluster(route) => {
                let result = send(&config, route, req, Some(authority.clone()), scheme, None).await;
                if let Err(e) = &result {
                    let gone = e
                        .downcast_ref::<NoEndpoints>()
                        .is_some_and(|e| e.reason() == NoEndpointsReason::NoService);
                    if gone {
                        routes.forget(authority.as_str());
                    }
                }
                result
            }
            Routed::Fallback => inner.oneshot(req).await.map_err(Into::into),
        }
    }
}

impl<S, B> Balance<S, B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `req` to `destination`'s Service port, as a request carrying `destination` as an
    /// extension would go, but without the boxed future and the extension map that a
    /// [`tower::Service::call`] costs: for proxies, which send every request this way.
    ///
    /// # Errors
    ///
    /// As for [`tower::Service::call`]: [`NoEndpoints`], [`ConnectFailed`] or
    /// [`RequestFailed`].
    pub fn send_to<'a>(
        &'a self,
        req: Request<B>,
        destination: &'a Destination,
    ) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'a {
        to_destination(&self.pools, &self.config, req, destination)
    }
}

/// Not an `async fn`: the route is found here, so that the future is `send`'s alone (each
/// layer of `async fn` would keep its own copy of the request).
fn to_destination<'a, B>(
    pools: &Pools,
    config: &'a Arc<Config>,
    req: Request<B>,
    dest: &'a Destination,
) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'a
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let route = destination_route::<B>(dest, pools, config);
    // The authority is worked out only if the upstream request needs it (see `prepare`).
    let authority = req.uri().authority().cloned();
    let scheme = req.uri().scheme().cloned().unwrap_or(Scheme::HTTP);
    send(config, route, req, authority, scheme, Some(dest))
}

/// The route a [`Destination`] carries, made by its first request.
fn destination_route<B>(dest: &Destination, pools: &Pools, config: &Arc<Config>) -> Arc<Route<B>>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let make = || {
        let port = pools
            .store()
            .get(dest.pool.service())
            .and_then(|snap| dest.pool.port().find(&snap).map(|p| p.port.clone()));
        Route::<B>::new(dest.pool.clone(), port.as_ref(), config.clone())
    };
    let shared = dest
        .route
        .get_or_init(|| make() as Arc<dyn Any + Send + Sync>)
        .clone();
    // A Destination used with layers of two body types caches the first one's route only.
    shared.downcast::<Route<B>>().unwrap_or_else(|_| make())
}

/// `name.namespace` of the destination's Service, for requests without an authority
/// (HTTP/1.0 without `Host`).
fn service_authority(dest: &Destination) -> Result<Authority, MissingAuthority> {
    let key = dest.pool.service();
    format!("{}.{}", key.name, key.namespace)
        .parse()
        .map_err(|_| MissingAuthority)
}

async fn lookup<B>(
    pools: &Pools,
    config: &Arc<Config>,
    routes: &Routes<B>,
    authority: &Authority,
    scheme: &Scheme,
) -> Result<Routed<B>, BoxError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Some(route) = routes.get(authority.as_str()) {
        return Ok(Routed::Cluster(route));
    }
    target::wait_until_ready(pools, authority.host(), config.sync_timeout).await?;
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    match target::resolve(pools, authority.host(), port)? {
        Target::Pool { pool, port } => Ok(Routed::Cluster(routes.insert(
            authority.as_str(),
            pool,
            port.as_ref(),
            config,
        ))),
        Target::External { .. } | Target::Direct(_) | Target::Dns { .. } => Ok(Routed::Fallback),
    }
}

async fn send<B>(
    config: &Config,
    route: Arc<Route<B>>,
    req: Request<B>,
    authority: Option<Authority>,
    scheme: Scheme,
    dest: Option<&Destination>,
) -> Result<Response<Incoming>, BoxError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // The layer's own connections are cleartext (HTTP/1.1 and h2c): an `https://` request
    // would otherwise leave unencrypted to a pod that expects TLS.
    if scheme != Scheme::HTTP {
        return Err(TlsRequired::new(req.uri()).into());
    }
    // `detect`: the protocol comes from the port's appProtocol, which an endpoint may not
    // live up to (an HTTP/1.1 pod behind an h2c port); see `EndpointConns::sender`.
    let (proto, detect) = match (config.version, route.proto_hint) {
        (HttpVersion::Http1, _) => (Proto::Http1, false),
        (HttpVersion::Http2, _) => (Proto::Http2, false),
        (HttpVersion::Auto, _) if req.version() == Version::HTTP_2 => (Proto::Http2, false),
        (HttpVersion::Auto | HttpVersion::Service, Some(hint)) => (hint, true),
        (HttpVersion::Auto | HttpVersion::Service, None) => (Proto::Http1, false),
    };
    let client = dest.and_then(|d| d.client);
    let (parts, body) = req.into_parts();
    let (body, progress) = Watched::new(body);
    let mut req = Request::from_parts(parts, body);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let (mut attempts, mut stale_retries, mut fresh) = (0, 0, false);
    loop {
        attempts += 1;
        let pick = route.pool.pick_excluding(client, &tried)?;
        let addr = pick.addr;
        if let Some(d) = dest {
            d.picked(addr);
        }
        let failed = |pick: crate::balance::Pick| {
            pick.failure();
            if let Some(d) = dest {
                d.failed(addr);
            }
        };
        let conns = route.conns(addr);
        let sender = conns.sender(proto, detect, fresh).await;
        let sender = match sender {
            Ok(s) => s,
            Err(error) => {
                failed(pick);
                tracing::debug!(endpoint = %addr, %error, attempts, "connect failed");
                if attempts >= config.max_attempts {
                    return Err(ConnectFailed::new(addr, attempts, into_io(error)).into());
                }
                tried.push(addr);
                fresh = false;
                continue;
            }
        };
        prepare(&mut req, sender.proto(), authority.as_ref(), &scheme, dest)?;
        // The RTT sample covers the request only, not connection setup (as with tower's
        // PeakEwma behind a reconnecting service).
        let start = Instant::now();
        let sent = sender.send(req, &conns);
        let sent = match config.response_timeout {
            None => sent.await,
            Some(timeout) => {
                // Counted from the end of the request body: a slow upload is not the
                // endpoint's delay. Dropping `sent` abandons the request, and hyper closes its
                // connection.
                let deadline = async {
                    // Without a body the request was sent whole at `start`: no clock read.
                    let at = match &progress {
                        Some(p) => {
                            p.ended().await;
                            Instant::now() + timeout
                        }
                        None => start + timeout,
                    };
                    tokio::time::sleep_until(at).await;
                };
                tokio::select! {
                    biased;
                    sent = sent => sent,
                    () = deadline => {
                        failed(pick);
                        return Err(ResponseTimeout { endpoint: addr, timeout }.into());
                    }
                }
            }
        };
        match sent {
            Sent::Response(response) => {
                if config.eject_on_5xx && response.status().is_server_error() {
                    failed(pick);
                } else {
                    pick.success(start.elapsed());
                }
                return Ok(response);
            }
            Sent::Retry(_, error) | Sent::Failed(error)
                if progress.as_ref().is_some_and(|p| p.failed()) =>
            {
                // The caller's body broke (a client's malformed chunk, say): the endpoint did
                // nothing wrong, so the pick is dropped unreported.
                drop(pick);
                return Err(RequestBodyFailed::new(addr, error).into());
            }
            Sent::Retry(r, error) if stale_retries < 2 => {
                // The kept-alive connection closed before the request went out: nothing
                // reached the server, so send it again on a new connection.
                tracing::debug!(endpoint = %addr, %error, "retrying on a new connection");
                stale_retries += 1;
                attempts -= 1;
                fresh = true;
                req = r;
                drop(pick);
            }
            Sent::Retry(_, error) | Sent::Failed(error) => {
                failed(pick);
                return Err(RequestFailed::new(addr, error).into());
            }
        }
    }
}

fn into_io(error: BoxError) -> std::io::Error {
    match error.downcast::<std::io::Error>() {
        Ok(io) => *io,
        Err(other) => std::io::Error::other(other),
    }
}

/// Puts the request in the form each protocol wants: origin-form with a `Host` header for
/// HTTP/1.1, absolute-form (`:scheme` and `:authority`) for HTTP/2.
///
/// `authority` is the one the request was routed by, if any; otherwise it comes from the
/// request, or from the destination's Service name (HTTP/1.0 without `Host`).
fn prepare<B>(
    req: &mut Request<B>,
    proto: Proto,
    authority: Option<&Authority>,
    scheme: &Scheme,
    dest: Option<&Destination>,
) -> Result<(), BoxError> {
    let authority = |req: &Request<B>| -> Result<Authority, MissingAuthority> {
        match (authority, dest) {
            (Some(a), _) => Ok(a.clone()),
            (None, Some(dest)) => authority_of(req).or_else(|_| service_authority(dest)),
            (None, None) => authority_of(req),
        }
    };
    match proto {
        Proto::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            if let Some(target) = req.uri().authority() {
                // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2), and
                // an HTTP/2 request's `:authority` is its Host (RFC 9113 §8.3.1).
                let host = host_of(target)?;
                req.headers_mut().insert(HOST, host);
            } else if !req.headers().contains_key(HOST) {
                let host = http::HeaderValue::from_str(authority(req)?.as_str())?;
                req.headers_mut().insert(HOST, host);
            }
            // Most requests arrive in origin-form already.
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                *req.uri_mut() = Uri::from(path_of(req));
            }
        }
        Proto::Http2 => {
            let authority = authority(req)?;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(HOST);
            *req.uri_mut() = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority)
                .path_and_query(path_of(req))
                .build()?;
        }
    }
    Ok(())
}

/// `host[:port]` of an authority: a `Host` header never carries userinfo.
fn host_of(authority: &Authority) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
    let s = authority.as_str();
    http::HeaderValue::from_str(s.rsplit_once('@').map_or(s, |(_, host)| host))
}

fn path_of<B>(req: &Request<B>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}
