//! Request-level balancing for HTTP/1.1 and HTTP/2 (and so gRPC).
//!
//! [`Balance`] routes each request by its authority (`host:port` from the URI, or the `Host`
//! header) to that Service port's [`EndpointPool`](crate::balance::EndpointPool), and sends it
//! over a connection to the endpoint picked *for that request*:
//!
//! - HTTP/2 requests share one multiplexed connection per endpoint, so a long-lived client
//!   spreads its requests over every pod, and an endpoint that appears gets requests at once
//!   (the new connection is opened by the first request picked for it).
//! - HTTP/1.1 requests use a pool of kept-alive connections per endpoint.
//! - When an endpoint is removed or stops being eligible (not ready, terminating while others
//!   are ready), no new request goes to it; requests in flight finish and its connections are
//!   closed after them. Servers need no `MaxConnectionAge`.
//! - A connect failure is reported to outlier ejection and the request is retried on another
//!   endpoint (its body is untouched until a connection exists). A request whose kept-alive
//!   connection turned out to be closed before it was written is retried on a new connection.
//! - With a [response timeout](BalanceLayer::response_timeout), an endpoint that sends no
//!   response head in time fails the request and is reported to outlier ejection. A request
//!   whose own body fails (a client's malformed chunk) fails without blaming the endpoint.
//! - Kept-alive HTTP/1.1 connections unused for the [pool idle
//!   timeout](BalanceLayer::pool_idle_timeout) are closed.
//!
//! Requests for hosts that are not Services (and ExternalName Services) go to the wrapped
//! service, the *fallback*: for instance a hyper-util client with an
//! [`SvcConnector`](crate::connect::SvcConnector), any other `tower::Service` whose response
//! body is an [`http_body::Body`](hyper::body::Body) of `Bytes`, or [`NoFallback`] to refuse
//! them. Responses come back with a [`ResponseBody`]: an endpoint's body or the fallback's own,
//! so the fallback's body type is kept whatever it is.
//!
//! With [`max_in_flight`](BalanceLayer::max_in_flight), `poll_ready` gives backpressure: it is
//! `Pending` while that many requests wait for their response heads, across every service the
//! layer makes, and callers such as tower's `Buffer` or `LoadShed` see it. Without it (the
//! default, as hyper-util's client) `poll_ready` is always ready.
//!
//! The protocol is HTTP/2 when the request is (`Version::HTTP_2`, as tonic sends), when the
//! Service port's `appProtocol` is `kubernetes.io/h2c`, `h2c` or `grpc`, or when configured;
//! otherwise HTTP/1.1. When it is HTTP/2 because of `appProtocol`, each endpoint is first
//! asked (once, on a connection of its own) whether it answers the HTTP/2 preface, and one that
//! answers in HTTP/1.1 gets HTTP/1.1: a port's `appProtocol` is not always true of every pod.
//!
//! A [`Destination`] request extension routes a request to a given Service port instead of by
//! its authority, as a proxy that knows the port from the listener needs;
//! [`Balance::send_to`] does the same without going through [`tower::Service`] (no boxed
//! future per request), and [`Balance::send_held`] through a [`BalanceHolder`] handle, for a
//! future that borrows nothing.
//!
//! Errors are [`BoxError`](crate::error::BoxError)s that downcast to
//! [`NoEndpoints`](crate::error::NoEndpoints), [`ConnectFailed`](crate::error::ConnectFailed),
//! [`RequestFailed`](crate::error::RequestFailed), [`ResponseTimeout`](crate::error::ResponseTimeout),
//! [`RequestBodyFailed`](crate::error::RequestBodyFailed), [`UnknownService`](crate::error::UnknownService),
//! [`MissingAuthority`](crate::error::MissingAuthority) or (a `call` without `poll_ready`
//! under a `max_in_flight` limit) [`NotReady`](crate::error::NotReady); the fallback's own
//! errors come back as they are, boxed.
//!
//! ```no_run
//! # async fn doc(store: svc_core::Store) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use http_body_util::Empty;
//! use tower::{Layer, ServiceExt};
//! use svc_tower::balance::Pools;
//! use svc_tower::layer::{BalanceLayer, NoFallback};
//!
//! let pools = Pools::new(store);
//! let client = BalanceLayer::<Empty<bytes::Bytes>>::new(pools).layer(NoFallback);
//! let request = http::Request::get("http://web.shop/").body(Empty::new())?;
//! let response = client.oneshot(request).await?;
//! # Ok(()) }
//! ```
//!
//! Over a hyper-util client for other hosts, with at most 512 requests in flight:
//!
//! ```no_run
//! # async fn doc(pools: svc_tower::balance::Pools) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use svc_tower::connect::SvcConnector;
//! use svc_tower::layer::BalanceLayer;
//! use tower::{Layer, ServiceExt};
//!
//! type Body = Empty<bytes::Bytes>;
//! let connector = SvcConnector::with_pools(pools.clone());
//! let fallback: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
//! let client = BalanceLayer::<Body>::new(pools)
//!     .max_in_flight(Some(512))
//!     .layer(fallback);
//! // `oneshot` waits in `poll_ready` while 512 requests are out.
//! let request = http::Request::get("http://example.com/").body(Body::new())?;
//! let response = client.oneshot(request).await?;
//! // A `ResponseBody`: here the fallback's (hyper's `Incoming`).
//! let body = response.into_body().collect().await?.to_bytes();
//! # let _ = body; Ok(()) }
//! ```

mod body;
mod conn;
mod deadline;
mod destination;
mod future;
mod limit;
mod response_body;
mod route;
mod send;
mod service;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use destination::{Destination, EndpointObserver};
pub use future::ResponseFuture;
pub use response_body::ResponseBody;
pub use service::{Balance, BalanceHolder, NoFallback};

use crate::balance::Pools;

/// Which HTTP version requests go out with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/2 for HTTP/2 requests and for ports whose `appProtocol` says so; else HTTP/1.1.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 with prior knowledge (h2c).
    Http2,
    /// The Service port's `appProtocol` alone decides (HTTP/2 for `kubernetes.io/h2c`, `h2c`
    /// and `grpc`), whatever version the request came in with: for proxies, whose clients'
    /// protocol says nothing of the endpoints'.
    Service,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) nodelay: bool,
    pub(crate) max_attempts: u32,
    pub(crate) max_idle_per_endpoint: usize,
    pub(crate) version: HttpVersion,
    pub(crate) sync_timeout: Duration,
    pub(crate) eject_on_5xx: bool,
    pub(crate) response_timeout: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(2)),
            nodelay: true,
            max_attempts: 3,
            max_idle_per_endpoint: 64,
            version: HttpVersion::Auto,
            sync_timeout: Duration::from_secs(5),
            eject_on_5xx: true,
            response_timeout: None,
            pool_idle_timeout: Some(Duration::from_secs(90)),
        }
    }
}

/// Wraps a fallback service in a [`Balance`]. A plain `Clone` configuration holder; every
/// service it makes (and every clone of it) shares one set of routes and connections.
///
/// `B` is the request body type.
#[must_use = "a layer does nothing until it wraps a service"]
pub struct BalanceLayer<B> {
    pools: Pools,
    config: Config,
    routes: Arc<route::Routes<B>>,
    max_in_flight: Option<usize>,
    /// The permits for `max_in_flight`, shared like `routes`.
    in_flight: Option<Arc<Semaphore>>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for BalanceLayer<B> {
    fn clone(&self) -> Self {
        Self {
            pools: self.pools.clone(),
            config: self.config.clone(),
            routes: self.routes.clone(),
            max_in_flight: self.max_in_flight,
            in_flight: self.in_flight.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for BalanceLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("config", &self.config)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl<B> BalanceLayer<B> {
    /// A layer balancing over `pools` (which fix the store, the client's locality and the
    /// balancer settings).
    pub fn new(pools: Pools) -> Self {
        Self {
            pools,
            config: Config::default(),
            routes: Arc::default(),
            max_in_flight: None,
            in_flight: None,
            _body: PhantomData,
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        // Services made from now on use the new settings; existing routes keep theirs.
        self.routes = Arc::default();
        self
    }

    /// Timeout for each connect. Default 2 s.
    pub fn connect_timeout(self, timeout: Option<Duration>) -> Self {
        self.with(|c| c.connect_timeout = timeout)
    }

    /// Endpoints to try when connects fail. Default 3 (at least 1).
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|c| c.max_attempts = attempts.max(1))
    }

    /// Kept-alive HTTP/1.1 connections per endpoint. Default 64.
    pub fn max_idle_per_endpoint(self, max: usize) -> Self {
        self.with(|c| c.max_idle_per_endpoint = max)
    }

    /// The HTTP version requests go out with. Default [`HttpVersion::Auto`].
    pub fn http_version(self, version: HttpVersion) -> Self {
        self.with(|c| c.version = version)
    }

    /// Whether a 5xx response counts as a failure for outlier ejection (Envoy's
    /// `consecutive_5xx`). Default `true`.
    pub fn eject_on_5xx(self, eject: bool) -> Self {
        self.with(|c| c.eject_on_5xx = eject)
    }

    /// How long the first requests wait for the store's initial sync. Default 5 s.
    pub fn sync_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.sync_timeout = timeout)
    }

    /// How long an endpoint may take to send the response head, counted from the end of the
    /// request (its body sent whole, so that a slow upload is not cut short). When it passes,
    /// the request fails with [`ResponseTimeout`](crate::error::ResponseTimeout), its
    /// connection is closed and the endpoint is reported to outlier ejection. The response
    /// body is not timed: streams and long downloads are left alone. Default `None` (no
    /// timeout, as hyper); Envoy's route timeout defaults to 15 s.
    pub fn response_timeout(self, timeout: Option<Duration>) -> Self {
        self.with(|c| c.response_timeout = timeout)
    }

    /// How long a kept-alive HTTP/1.1 connection to an endpoint may stay unused before it is
    /// closed. Default 90 s (hyper-util's pooled client's default).
    pub fn pool_idle_timeout(self, timeout: Option<Duration>) -> Self {
        self.with(|c| c.pool_idle_timeout = timeout)
    }

    /// Sets `TCP_NODELAY`. Default `true`.
    pub fn nodelay(self, nodelay: bool) -> Self {
        self.with(|c| c.nodelay = nodelay)
    }

    /// The most requests in flight at once over every service this layer makes and their
    /// clones: they share one limit, as they share routes and connections. Requests to the
    /// fallback count too. `Some(0)` is taken as 1. Default `None` (no limit).
    ///
    /// With a limit, [`poll_ready`](tower::Service::poll_ready) takes a permit and returns
    /// `Pending` while none is free; the task is woken when one is released. `call` moves the
    /// permit into the [`ResponseFuture`], which holds it until the response head arrives or
    /// the request fails (or the future is dropped). The response *body* is not covered: a
    /// gRPC stream or a long download would otherwise hold a permit for its whole life and
    /// starve short requests, and a body left unread would hold one for ever; what a body in
    /// flight costs is bounded by HTTP/2 flow control and hyper's buffers instead. This is
    /// where tower's `ConcurrencyLimit` releases too.
    ///
    /// A `call` without a `Ready` from `poll_ready` first fails with
    /// [`NotReady`](crate::error::NotReady) (tower's `ConcurrencyLimit` panics);
    /// `ServiceExt::ready` and `oneshot`, tonic and tower's `Buffer` always poll first. To
    /// fail fast when the limit is reached instead of waiting, as Envoy's circuit breakers
    /// do, put tower's `LoadShed` in front. [`Balance::send_to`] takes no permit: it is for
    /// proxies, which bound their connections themselves.
    ///
    /// Why no default: hyper-util's client and tonic's channel have no limit, and Envoy's
    /// (`max_requests` 1024) is per upstream cluster and fails fast; Istio sets it to
    /// 2<sup>32</sup>−1 by default because a fixed number cut off busy clients. This limit
    /// spans every Service the client reaches and makes callers wait, so no single number
    /// fits every app: choose one from the memory and the load a client may put in flight.
    pub fn max_in_flight(mut self, max: Option<usize>) -> Self {
        let max = max.map(|m| m.clamp(1, Semaphore::MAX_PERMITS));
        self.max_in_flight = max;
        // Services made from now on share a new limit; existing ones keep theirs.
        self.in_flight = max.map(|m| Arc::new(Semaphore::new(m)));
        self
    }
}

impl<S, B> tower::Layer<S> for BalanceLayer<B> {
    type Service = Balance<S, B>;

    fn layer(&self, inner: S) -> Balance<S, B> {
        Balance::new(
            inner,
            self.pools.clone(),
            Arc::new(self.config.clone()),
            self.routes.clone(),
            self.in_flight.clone(),
        )
    }
}
