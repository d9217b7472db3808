//! [`Destination`]: send a request to a given Service port instead of routing it by authority.

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use crate::balance::EndpointPool;

/// Hears of every endpoint a routed request tries, for per-endpoint metrics (a proxy counts
/// picks and errors per pod with it).
pub trait EndpointObserver: Send + Sync + 'static {
    /// `endpoint` was picked for an attempt.
    fn picked(&self, endpoint: SocketAddr);
    /// An attempt on `endpoint` failed: the connect, the request, or (with
    /// [`eject_on_5xx`](super::BalanceLayer::eject_on_5xx)) a 5xx response.
    fn failed(&self, endpoint: SocketAddr);
}

/// A request extension that routes the request to `pool` instead of by its authority.
///
/// For proxies, which know the Service port from the address the client connected to, not
/// from the `Host` header; the client's address also feeds `sessionAffinity: ClientIP`.
///
/// A `Destination` and its clones share one set of connections to the pool's endpoints,
/// opened by the first request that uses it (with that layer's settings): keep one per
/// Service port and clone it into each request. Dropping the last clone drains them.
///
/// ```no_run
/// # fn doc(pool: svc_tower::EndpointPool, client: std::net::IpAddr) {
/// use svc_tower::layer::Destination;
/// let mut req = http::Request::get("/").body(()).unwrap();
/// req.extensions_mut().insert(Destination::new(pool).client(client));
/// # }
/// ```
#[derive(Clone)]
pub struct Destination {
    pub(crate) pool: EndpointPool,
    pub(crate) client: Option<IpAddr>,
    pub(crate) observer: Option<Arc<dyn EndpointObserver>>,
    /// The route (a `layer::route::Route<B>`), type-erased because the body type is the
    /// layer's business, not the caller's.
    pub(crate) route: Arc<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl Destination {
    /// Route to `pool`.
    pub fn new(pool: EndpointPool) -> Self {
        Self {
            pool,
            client: None,
            observer: None,
            route: Arc::default(),
        }
    }

    /// The client's address, for session affinity.
    #[must_use]
    pub fn client(mut self, client: IpAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// Report picks and failures to `observer`.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn EndpointObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub(crate) fn picked(&self, endpoint: SocketAddr) {
        if let Some(o) = &self.observer {
            o.picked(endpoint);
        }
    }

    pub(crate) fn failed(&self, endpoint: SocketAddr) {
        if let Some(o) = &self.observer {
            o.failed(endpoint);
        }
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("service", self.pool.service())
            .field("port", self.pool.port())
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}
