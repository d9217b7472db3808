//! What a listener serves: one Service port reached one way ([`Route`]), with its balancer,
//! metrics and live endpoint sets ([`Target`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use svc_core::model::{IpFamily, Protocol, ServiceKey, ServicePort};
use svc_core::store::{PortRef, ServiceSnapshot, VipKind};
use svc_tower::policy::{self, Scope};
use tokio::sync::watch;

use crate::metrics::ServiceMetrics;
use crate::Context;
use svc_tower::balance::{EndpointPool, NoEndpoints, Pick};

/// How a listener speaks to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Plain TCP: one endpoint per connection.
    Tcp,
    /// `appProtocol: http`: HTTP/1.1 (or HTTP/2 with prior knowledge) with per-request
    /// balancing over HTTP/1.1 endpoint connections.
    Http,
    /// `appProtocol: kubernetes.io/h2c`: HTTP/2 with prior knowledge on both sides.
    H2c,
    /// UDP: per-client flows.
    Udp,
}

impl Mode {
    /// The mode a Service port asks for. `appProtocol` values are Kubernetes' own
    /// (`kubernetes.io/h2c`, `kubernetes.io/ws`) and the IANA service names that Istio and
    /// Linkerd also read (`http`, `h2c`, `grpc`); anything else is plain TCP.
    pub fn of(port: &ServicePort) -> Option<Self> {
        match (port.protocol, port.app_protocol.as_deref()) {
            (Protocol::Udp, _) => Some(Self::Udp),
            (Protocol::Tcp, Some("http" | "kubernetes.io/ws")) => Some(Self::Http),
            (Protocol::Tcp, Some("kubernetes.io/h2c" | "h2c" | "grpc")) => Some(Self::H2c),
            (Protocol::Tcp, _) => Some(Self::Tcp),
            // SCTP, and any protocol added later, is not proxied.
            _ => None,
        }
    }
}

/// Which Service port a listener serves, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The Service.
    pub service: ServiceKey,
    /// The Service port number.
    pub port: u16,
    /// The Service port protocol.
    pub protocol: Protocol,
    /// How the address reaches the Service: cluster IP, external IP, load-balancer IP or
    /// NodePort (which decides the traffic policy).
    pub kind: VipKind,
    /// The family of the listener's address: on a dual-stack Service, only endpoints of this
    /// family are reached (kube-proxy's per-family proxiers).
    pub family: IpFamily,
    /// How to speak to clients.
    pub mode: Mode,
}

impl Route {
    /// Internal (cluster IP) or external (NodePort, external and load-balancer IPs).
    pub fn scope(&self) -> Scope {
        Scope::from(self.kind)
    }

    /// The balancer this route shares with other routes of the same port, scope and family.
    pub fn pool_key(&self) -> (ServiceKey, u16, Protocol, Scope, IpFamily) {
        (
            self.service.clone(),
            self.port,
            self.protocol,
            self.scope(),
            self.family,
        )
    }

    /// The Service port as this route reaches it.
    pub fn port_ref(&self) -> PortRef {
        PortRef::Family(self.port, self.protocol, self.family)
    }
}

/// Endpoint sets of a Service port, recomputed from each store snapshot.
#[derive(Debug, Default)]
pub struct EndpointSets {
    /// Every endpoint the Service port lists, whatever its conditions.
    pub listed: HashSet<SocketAddr>,
    /// The endpoints eligible for new traffic (policy applied).
    pub eligible: HashSet<SocketAddr>,
}

/// Everything a listener needs for one route. Shared by the listeners of one Service port,
/// scope and family (e.g. a cluster IP and an external IP of one family), so that they
/// balance together; a dual-stack Service's two cluster IPs have a target each, as each
/// reaches its own family's endpoints.
#[derive(Debug)]
pub struct Target {
    /// Shared proxy state.
    pub ctx: Arc<Context>,
    /// The Service.
    pub service: ServiceKey,
    /// The Service port number.
    pub port: u16,
    /// The Service port protocol.
    pub protocol: Protocol,
    /// Internal or external.
    pub scope: Scope,
    /// The Service port as the listeners reach it (with their address family).
    port_ref: PortRef,
    /// The balancer, built on the first pick: at 10,000 Services a node's clients reach a
    /// few hundred, and a pool costs about 4 KB and a follower task.
    pool: OnceLock<EndpointPool>,
    /// Counters.
    pub metrics: Arc<ServiceMetrics>,
    /// Live endpoint sets, for `--reset-removed` and UDP re-picks (for other targets, empty
    /// sets that never change).
    pub sets: watch::Receiver<Arc<EndpointSets>>,
}

impl Target {
    /// Builds the target of `route`. Its balancer is built, and follows the store, from the
    /// first pick on.
    pub fn new(ctx: Arc<Context>, route: &Route) -> Arc<Self> {
        let port_ref = route.port_ref();
        let http = matches!(route.mode, Mode::Http | Mode::H2c);
        let metrics = ctx
            .metrics
            .service(&route.service, route.port, route.protocol, http);
        // Only UDP re-picks and `--reset-removed` read the sets: other targets skip the
        // follower task and its two sets (about 2 KB per Service port, 20 MB at 10,000).
        let sets = if route.mode == Mode::Udp || ctx.args.reset_removed {
            follow_sets(&ctx, &route.service, port_ref.clone(), route.scope())
        } else {
            unfollowed_sets()
        };
        Arc::new(Self {
            ctx,
            service: route.service.clone(),
            port: route.port,
            protocol: route.protocol,
            scope: route.scope(),
            port_ref,
            pool: OnceLock::new(),
            metrics,
            sets,
        })
    }

    /// The balancer (built now if this is the first use).
    pub fn pool(&self) -> &EndpointPool {
        self.pool.get_or_init(|| {
            EndpointPool::builder(
                self.ctx.store.clone(),
                self.service.clone(),
                self.port_ref.clone(),
            )
            .locality(self.ctx.locality.clone())
            .scope(self.scope)
            .build()
        })
    }

    /// Picks an endpoint for `client` (avoiding `exclude`, the endpoints a retry already
    /// failed on, unless nothing else is left) and counts the pick.
    pub fn pick(&self, client: IpAddr, exclude: &[SocketAddr]) -> Result<Pick, NoEndpoints> {
        let pick = self.pool().pick_excluding(Some(client), exclude)?;
        self.metrics.endpoint(pick.addr).picks.inc();
        Ok(pick)
    }

    /// The endpoints eligible right now, computed from the store's latest snapshot (the
    /// balancer and [`Self::sets`] follow the store from their own tasks, so they may be a
    /// moment behind).
    pub fn eligible_now(&self) -> HashSet<SocketAddr> {
        let snap = self.ctx.store.get(&self.service);
        sets_of(
            snap.as_deref(),
            &self.port_ref,
            &self.ctx.locality,
            self.scope,
        )
        .eligible
    }

    /// Reports a failure talking to a picked endpoint.
    pub fn failed(&self, pick: Pick) {
        self.metrics.endpoint(pick.addr).errors.inc();
        pick.failure();
    }
}

/// Endpoint sets that follow the store from a task of their own.
fn follow_sets(
    ctx: &Context,
    service: &ServiceKey,
    port_ref: PortRef,
    scope: Scope,
) -> watch::Receiver<Arc<EndpointSets>> {
    let mut snapshots = ctx.store.watch_service(service);
    let locality = ctx.locality.clone();
    // The first sets are computed here, so that no flow ever sees a made-up empty set.
    let first = sets_of(
        snapshots.borrow_and_update().as_deref(),
        &port_ref,
        &locality,
        scope,
    );
    let (tx, sets) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let snap = snapshots.borrow_and_update().clone();
            tx.send_replace(Arc::new(sets_of(
                snap.as_deref(),
                &port_ref,
                &locality,
                scope,
            )));
        }
    });
    sets
}

/// Empty sets that never change, shared by every target that does not follow them.
fn unfollowed_sets() -> watch::Receiver<Arc<EndpointSets>> {
    static NEVER: std::sync::OnceLock<watch::Sender<Arc<EndpointSets>>> =
        std::sync::OnceLock::new();
    NEVER
        .get_or_init(|| watch::Sender::new(Arc::default()))
        .subscribe()
}

fn sets_of(
    snap: Option<&ServiceSnapshot>,
    port: &PortRef,
    locality: &policy::Locality,
    scope: Scope,
) -> EndpointSets {
    let Some((svc, p)) = snap.and_then(|s| port.find(s).map(|p| (s, p))) else {
        return EndpointSets::default();
    };
    EndpointSets {
        listed: p.endpoints.iter().map(|e| e.addr).collect(),
        eligible: policy::eligible(&svc.service, &p.endpoints, locality, scope)
            .into_iter()
            .map(|e| e.addr)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svc_core::model::TargetPort;

    #[test]
    fn modes_follow_protocol_and_app_protocol() {
        let port = |protocol, app: Option<&str>| {
            let mut p = ServicePort::tcp(None, 80, TargetPort::Number(8080));
            p.protocol = protocol;
            p.app_protocol = app.map(Into::into);
            p
        };
        let rows: [(Protocol, Option<&str>, Option<Mode>); 10] = [
            (Protocol::Tcp, None, Some(Mode::Tcp)),
            (Protocol::Tcp, Some("http"), Some(Mode::Http)),
            (Protocol::Tcp, Some("kubernetes.io/ws"), Some(Mode::Http)),
            (Protocol::Tcp, Some("kubernetes.io/h2c"), Some(Mode::H2c)),
            (Protocol::Tcp, Some("h2c"), Some(Mode::H2c)),
            (Protocol::Tcp, Some("grpc"), Some(Mode::H2c)),
            // TLS is end to end: the proxy cannot read it, so it stays L4.
            (Protocol::Tcp, Some("https"), Some(Mode::Tcp)),
            (Protocol::Tcp, Some("kubernetes.io/wss"), Some(Mode::Tcp)),
            (Protocol::Udp, Some("http"), Some(Mode::Udp)),
            (Protocol::Sctp, None, None),
        ];
        for (protocol, app, want) in rows {
            assert_eq!(Mode::of(&port(protocol, app)), want, "{protocol:?} {app:?}");
        }
    }
}
