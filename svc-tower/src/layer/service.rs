//! [`Balance`]: the request-routing service.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::{Body, Bytes, Incoming};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::destination::Destination;
use super::future::ResponseFuture;
use super::limit::InFlight;
use super::route::{Route, Routes};
use super::send::{send, SendContext};
use super::{Config, ResponseBody};
use crate::balance::Pools;
use crate::error::{
    BoxError, MissingAuthority, NoEndpoints, NoEndpointsReason, NotReady, UnknownService,
};
use crate::target::{self, Target};

/// Balances each request over the endpoints of the Service its authority names; see the
/// [module docs](super). Requests for other hosts go to the fallback `S`.
///
/// Its responses have a [`ResponseBody`]: an endpoint's body, or the fallback's own. With a
/// [`max_in_flight`](super::BalanceLayer::max_in_flight) limit, `poll_ready` waits for a
/// permit; clones share the limit but each takes its own permit.
pub struct Balance<S, B> {
    inner: S,
    pools: Pools,
    config: Arc<Config>,
    routes: Arc<Routes<B>>,
    in_flight: Option<InFlight>,
}

impl<S: Clone, B> Clone for Balance<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pools: self.pools.clone(),
            config: self.config.clone(),
            routes: self.routes.clone(),
            in_flight: self.in_flight.clone(),
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
    pub(crate) fn new(
        inner: S,
        pools: Pools,
        config: Arc<Config>,
        routes: Arc<Routes<B>>,
        in_flight: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            inner,
            pools,
            config,
            routes,
            in_flight: in_flight.map(InFlight::new),
        }
    }

    /// The pools requests are balanced with (for metrics: [`Pools::all`]).
    pub fn pools(&self) -> &Pools {
        &self.pools
    }
}

/// A fallback that refuses every request with [`UnknownService`]: only Services are reached.
/// (Its response type, never produced, is hyper's `Incoming`, so a `Balance<NoFallback, B>`
/// answers with `ResponseBody<Incoming>`.)
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
pub(super) fn authority_of<B>(req: &Request<B>) -> Result<Authority, MissingAuthority> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.clone());
    }
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok())
        .ok_or(MissingAuthority)
}

impl<S, B, F> tower::Service<Request<B>> for Balance<S, B>
where
    S: tower::Service<Request<B>, Response = Response<F>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Body<Data = Bytes> + Send + 'static,
    F::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<F>>;
    type Error = BoxError;
    type Future = ResponseFuture<F>;

    /// Ready at once without a [`max_in_flight`](super::BalanceLayer::max_in_flight) limit;
    /// with one, once this service holds a permit (`Pending` while none is free, woken when
    /// one is). The fallback is driven to readiness (with `oneshot`) only when a request needs
    /// it: most requests never touch it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(limit) = &mut self.in_flight {
            ready!(limit.poll_acquire(cx));
        }
        Poll::Ready(Ok(()))
    }

    /// # Errors
    ///
    /// Besides the routing and sending errors of the [module docs](super): [`NotReady`] when
    /// a `max_in_flight` limit is set and `poll_ready` did not return `Ready` first.
    fn call(&mut self, req: Request<B>) -> ResponseFuture<F> {
        let permit = match &mut self.in_flight {
            None => None,
            Some(limit) => match limit.take() {
                Some(permit) => Some(permit),
                None => return ResponseFuture::new(std::future::ready(Err(NotReady.into())), None),
            },
        };
        let routed = route(
            self.inner.clone(),
            self.pools.clone(),
            self.config.clone(),
            self.routes.clone(),
            req,
        );
        ResponseFuture::new(routed, permit)
    }
}

enum Routed<B> {
    Cluster(Arc<Route<B>>),
    Fallback,
}

async fn route<S, B, F>(
    inner: S,
    pools: Pools,
    config: Arc<Config>,
    routes: Arc<Routes<B>>,
    mut req: Request<B>,
) -> Result<Response<ResponseBody<F>>, BoxError>
where
    S: tower::Service<Request<B>, Response = Response<F>>,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Some(dest) = req.extensions_mut().remove::<Destination>() {
        let response = to_destination(&pools, &config, req, &dest).await?;
        return Ok(response.map(ResponseBody::Endpoint));
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
            let ctx = (&*config, None);
            let result = send(ctx, route, req, Some(authority.clone()), scheme).await;
            if let Err(e) = &result {
                let gone = e
                    .downcast_ref::<NoEndpoints>()
                    .is_some_and(|e| e.reason() == NoEndpointsReason::NoService);
                if gone {
                    routes.forget(authority.as_str());
                }
            }
            result.map(|response| response.map(ResponseBody::Endpoint))
        }
        Routed::Fallback => {
            let response = inner.oneshot(req).await.map_err(Into::into)?;
            Ok(response.map(ResponseBody::Fallback))
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
    /// [`tower::Service::call`] costs: for proxies, which send every request this way. It
    /// takes no permit of a [`max_in_flight`](super::BalanceLayer::max_in_flight) limit (a
    /// proxy bounds its connections itself), and the response body is the endpoint's own.
    ///
    /// # Errors
    ///
    /// As for [`tower::Service::call`]: [`NoEndpoints`],
    /// [`ConnectFailed`](crate::error::ConnectFailed) or
    /// [`RequestFailed`](crate::error::RequestFailed).
    pub fn send_to<'a>(
        &'a self,
        req: Request<B>,
        destination: &'a Destination,
    ) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'a {
        to_destination(&self.pools, &self.config, req, destination)
    }

    /// [`send_to`](Self::send_to) through a handle that `held` keeps the balancer and the
    /// destination in: the future owns the handle, so it borrows nothing. A proxy builds its
    /// per-request future around this one without an `async` block, whose dead copy of the
    /// request made each request's state about a quarter larger (and which moved this future
    /// into itself when first polled).
    ///
    /// # Errors
    ///
    /// As for [`send_to`](Self::send_to).
    pub fn send_held<H>(
        held: H,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send
    where
        H: BalanceHolder<Fallback = S, Body = B>,
    {
        let balance = held.balance();
        let route = destination_route::<B>(held.destination(), &balance.pools, &balance.config);
        let (authority, scheme) = authority_and_scheme(&req);
        send(Held(held), route, req, authority, scheme)
    }
}

/// A handle that keeps a [`Balance`] and a [`Destination`] alive (an `Arc` of a proxy
/// connection's state, say): what [`Balance::send_held`] sends through.
pub trait BalanceHolder: Send + Sync + 'static {
    /// The balancer's fallback (not used: the request goes to the destination).
    type Fallback;
    /// The request body.
    type Body;
    /// The balancer to send with.
    fn balance(&self) -> &Balance<Self::Fallback, Self::Body>;
    /// Where requests go.
    fn destination(&self) -> &Destination;
}

/// A [`BalanceHolder`] as the context of a send.
struct Held<H>(H);

impl<H: BalanceHolder> SendContext for Held<H> {
    fn config(&self) -> &Config {
        &self.0.balance().config
    }

    fn dest(&self) -> Option<&Destination> {
        Some(self.0.destination())
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
    let (authority, scheme) = authority_and_scheme(&req);
    send((&**config, Some(dest)), route, req, authority, scheme)
}

/// The authority to send with and the scheme. The authority is worked out only if the
/// upstream request needs it (see `prepare`).
fn authority_and_scheme<B>(req: &Request<B>) -> (Option<Authority>, Scheme) {
    let authority = req.uri().authority().cloned();
    let scheme = req.uri().scheme().cloned().unwrap_or(Scheme::HTTP);
    (authority, scheme)
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
