//! Routes: authority → Service port pool, with its per-endpoint connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use svc_core::model::ServicePort;
use tokio::sync::watch;

use super::body::Watched;
use super::conn::{EndpointConns, Proto};
use super::Config;
use crate::balance::EndpointPool;
use crate::error::BoxError;

/// Every route known so far, by authority (`host:port` as the request gave it). Authorities
/// that lead to the same pool (`web`, `web.shop:80`, the cluster IP) share one route, and so
/// one set of connections.
pub(crate) struct Routes<B> {
    by_authority: RwLock<HashMap<Box<str>, Arc<Route<B>>>>,
    by_pool: Mutex<HashMap<usize, Weak<Route<B>>>>,
}

impl<B> Default for Routes<B> {
    fn default() -> Self {
        Self {
            by_authority: RwLock::default(),
            by_pool: Mutex::default(),
        }
    }
}

impl<B> Routes<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn get(&self, authority: &str) -> Option<Arc<Route<B>>> {
        self.by_authority.read().get(authority).cloned()
    }

    /// The route to `pool`, shared with other authorities that lead there.
    pub(crate) fn insert(
        &self,
        authority: &str,
        pool: EndpointPool,
        port: Option<&ServicePort>,
        config: &Arc<Config>,
    ) -> Arc<Route<B>> {
        let route = {
            let mut by_pool = self.by_pool.lock();
            by_pool.retain(|_, r| r.strong_count() > 0);
            match by_pool.get(&pool.id()).and_then(Weak::upgrade) {
                Some(route) => route,
                None => {
                    let id = pool.id();
                    let route = Route::new(pool, port, config.clone());
                    by_pool.insert(id, Arc::downgrade(&route));
                    route
                }
            }
        };
        self.by_authority
            .write()
            .entry(authority.into())
            .or_insert(route)
            .clone()
    }

    /// Forgets `authority`, so that the next request resolves it again (its Service is gone,
    /// and the name or IP may come to mean another one).
    pub(crate) fn forget(&self, authority: &str) {
        self.by_authority.write().remove(authority);
    }
}

/// Aborts the pruning task with the route.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ConnsByEndpoint<B> =
    HashMap<SocketAddr, Arc<EndpointConns<Watched<B>>>, foldhash::fast::RandomState>;

/// One Service port, as reached by one authority.
pub(crate) struct Route<B> {
    pub(crate) pool: EndpointPool,
    /// The protocol the port's `appProtocol` asks for.
    pub(crate) proto_hint: Option<Proto>,
    eligible: watch::Receiver<Arc<[SocketAddr]>>,
    /// Looked up on every request: foldhash instead of SipHash saves ~170 instructions per
    /// proxied request (BENCHMARKS.md); the keys are endpoint addresses from the API server,
    /// not chosen by clients.
    conns: RwLock<ConnsByEndpoint<B>>,
    config: Arc<Config>,
    _pruner: AbortOnDrop,
}

fn proto_hint(port: Option<&ServicePort>) -> Option<Proto> {
    match port?.app_protocol.as_deref()? {
        "kubernetes.io/h2c" | "h2c" | "grpc" => Some(Proto::Http2),
        "http" | "kubernetes.io/http" => Some(Proto::Http1),
        _ => None,
    }
}

impl<B> Route<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        pool: EndpointPool,
        port: Option<&ServicePort>,
        config: Arc<Config>,
    ) -> Arc<Self> {
        let eligible = pool.watch_endpoints();
        let idle_timeout = config.pool_idle_timeout;
        Arc::new_cyclic(|weak: &Weak<Route<B>>| {
            let task = tokio::spawn(prune(weak.clone(), pool.watch_endpoints(), idle_timeout));
            Route {
                pool,
                proto_hint: proto_hint(port),
                eligible,
                conns: RwLock::default(),
                config,
                _pruner: AbortOnDrop(task.abort_handle()),
            }
        })
    }

    /// The connections to `addr`. An endpoint that has just left the eligible set gets
    /// connections that are not kept, so that nothing lingers after its drain.
    pub(crate) fn conns(&self, addr: SocketAddr) -> Arc<EndpointConns<Watched<B>>> {
        if let Some(c) = self.conns.read().get(&addr) {
            return c.clone();
        }
        let conns = Arc::new(EndpointConns::new(addr, self.config.clone()));
        let mut map = self.conns.write();
        if self.eligible.borrow().binary_search(&addr).is_ok() {
            map.entry(addr).or_insert(conns).clone()
        } else {
            conns
        }
    }
}

/// Drops the connections of endpoints that leave the eligible set: their senders go, so
/// hyper closes each connection once its requests in flight are done. With an idle timeout,
/// also closes kept-alive HTTP/1.1 connections unused for that long (checked every quarter of
/// it, so a connection goes between 1 and 1.25 times the timeout after its last use).
async fn prune<B>(
    route: Weak<Route<B>>,
    mut eligible: watch::Receiver<Arc<[SocketAddr]>>,
    idle_timeout: Option<std::time::Duration>,
) where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut sweep = idle_timeout.map(IdleSweep::new);
    loop {
        tokio::select! {
            changed = eligible.changed() => if changed.is_err() { return },
            timeout = IdleSweep::due(&mut sweep) => {
                let Some(route) = route.upgrade() else {
                    return;
                };
                let now = tokio::time::Instant::now();
                for c in route.conns.read().values() {
                    c.close_idle(now, timeout);
                }
                continue;
            }
        }
        let Some(route) = route.upgrade() else {
            return;
        };
        let now = eligible.borrow_and_update().clone();
        let drained: Vec<_> = {
            let mut conns = route.conns.write();
            let gone: Vec<SocketAddr> = conns
                .keys()
                .filter(|a| now.binary_search(a).is_err())
                .copied()
                .collect();
            gone.iter().filter_map(|a| conns.remove(a)).collect()
        };
        for c in &drained {
            tracing::debug!(service = %route.pool.service(), endpoint = %c.addr(), "draining endpoint connections");
        }
    }
}

/// The schedule of the idle-connection sweep.
struct IdleSweep {
    timeout: std::time::Duration,
    tick: tokio::time::Interval,
}

impl IdleSweep {
    fn new(timeout: std::time::Duration) -> Self {
        let every = (timeout / 4).max(std::time::Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { timeout, tick }
    }

    /// Resolves with the idle timeout when a sweep is due (never without one).
    async fn due(this: &mut Option<Self>) -> std::time::Duration {
        match this {
            Some(s) => {
                s.tick.tick().await;
                s.timeout
            }
            None => std::future::pending().await,
        }
    }
}
