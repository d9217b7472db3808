//! Which endpoints of a Service port may receive a client's traffic.
//!
//! A pure function of (Service, endpoints, client locality, how the Service was reached),
//! following kube-proxy's `CategorizeEndpoints` (pkg/proxy/topology.go):
//!
//! 1. **Readiness.** Ready endpoints. When none is ready anywhere, serving-and-terminating ones
//!    (KEP-1669), so that a rollout's last pods still drain traffic. With
//!    `publishNotReadyAddresses`, every endpoint counts.
//! 2. **Traffic policy.** `Local` (internalTrafficPolicy for cluster IPs, externalTrafficPolicy
//!    for NodePorts, external and load-balancer IPs) keeps only endpoints on the client's
//!    node, with the same ready-then-terminating order, and never falls back to other nodes.
//! 3. **Topology.** `trafficDistribution: PreferSameZone`/`PreferClose` prefers the client's
//!    zone and `PreferSameNode` its node (then its zone). Each falls back to the wider set
//!    when the preferred one is empty. The EndpointSlice controller's hints (`forZones`,
//!    `forNodes`) are used when every candidate carries them; otherwise the endpoints' own
//!    `zone`/`nodeName` stand in, so hand-written manifests behave the same. Hints on a
//!    Service without trafficDistribution (topology-aware routing) are honoured the same way.
//!    As in kube-proxy, topology narrows only the ready endpoints; the terminating fallback is
//!    used whole, and node hints count only when every candidate has them.
//! 4. **Session affinity.** [`AffinityTable`] keeps `sessionAffinity: ClientIP` choices, with
//!    the Service's timeout; [`EndpointPool`](crate::balance::EndpointPool) applies it.

mod affinity;
#[cfg(test)]
mod tests;

pub use affinity::AffinityTable;

use std::sync::Arc;

use svc_core::model::{Service, TrafficDistribution, TrafficPolicy};
use svc_core::store::{PortEndpoint, VipKind};

/// Where the client runs. Both are optional: without them, locality rules do not apply
/// (`Local` traffic policy then has no endpoints, as a node with no name has no local pods).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    /// The client's node name.
    pub node: Option<Arc<str>>,
    /// The client's zone (`topology.kubernetes.io/zone` of its node).
    pub zone: Option<Arc<str>>,
}

impl Locality {
    /// A locality on `node` in `zone`.
    pub fn new(node: Option<&str>, zone: Option<&str>) -> Self {
        Self {
            node: node.map(Arc::from),
            zone: zone.map(Arc::from),
        }
    }
}

/// How the Service was reached, which decides the traffic policy that applies.
///
/// Exhaustive by definition: a Service has exactly an internal and an external traffic policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// From inside the cluster, by cluster IP or name: `internalTrafficPolicy`.
    #[default]
    Internal,
    /// From outside, by NodePort, external IP or load-balancer IP: `externalTrafficPolicy`.
    External,
}

impl From<VipKind> for Scope {
    fn from(kind: VipKind) -> Self {
        match kind {
            VipKind::ClusterIp => Scope::Internal,
            VipKind::ExternalIp | VipKind::LoadBalancer | VipKind::NodePort => Scope::External,
        }
    }
}

fn is_local(ep: &PortEndpoint, locality: &Locality) -> bool {
    locality.node.is_some() && ep.endpoint.node_name == locality.node
}

/// Readiness, step 1: ready endpoints, else serving-and-terminating ones. The flag says
/// whether this is the terminating fallback (to which kube-proxy applies no topology).
fn by_readiness<'a>(
    service: &Service,
    endpoints: impl Iterator<Item = &'a PortEndpoint> + Clone,
) -> (Vec<&'a PortEndpoint>, bool) {
    if service.publish_not_ready_addresses {
        return (endpoints.collect(), false);
    }
    let ready: Vec<_> = endpoints
        .clone()
        .filter(|e| e.endpoint.conditions.ready)
        .collect();
    if !ready.is_empty() {
        return (ready, false);
    }
    let fallback = endpoints
        .filter(|e| e.endpoint.conditions.serving && e.endpoint.conditions.terminating)
        .collect();
    (fallback, true)
}

/// Keeps the endpoints `prefer` accepts, unless there are none.
fn prefer(set: Vec<&PortEndpoint>, keep: impl Fn(&PortEndpoint) -> bool) -> Vec<&PortEndpoint> {
    let preferred: Vec<_> = set.iter().copied().filter(|e| keep(e)).collect();
    if preferred.is_empty() {
        set
    } else {
        preferred
    }
}

fn in_zone(ep: &PortEndpoint, zone: &str, use_hints: bool) -> bool {
    match (&ep.endpoint.hints, use_hints) {
        (Some(h), true) => h.for_zones.iter().any(|z| &**z == zone),
        _ => ep.endpoint.zone.as_deref() == Some(zone),
    }
}

fn on_node(ep: &PortEndpoint, node: &str, use_hints: bool) -> bool {
    match (&ep.endpoint.hints, use_hints) {
        (Some(h), true) => h.for_nodes.iter().any(|n| &**n == node),
        _ => ep.endpoint.node_name.as_deref() == Some(node),
    }
}

/// Topology, step 3.
fn by_topology<'a>(
    service: &Service,
    set: Vec<&'a PortEndpoint>,
    locality: &Locality,
) -> Vec<&'a PortEndpoint> {
    // kube-proxy ignores hints unless every candidate has them (a partly-hinted set means the
    // controller is mid-update or gave up).
    let all_hinted = !set.is_empty()
        && set.iter().all(|e| {
            e.endpoint
                .hints
                .as_ref()
                .is_some_and(|h| !h.for_zones.is_empty())
        });
    let all_node_hinted = !set.is_empty()
        && set.iter().all(|e| {
            e.endpoint
                .hints
                .as_ref()
                .is_some_and(|h| !h.for_nodes.is_empty())
        });
    let zone = locality.zone.as_deref();
    let node = locality.node.as_deref();
    match service.traffic_distribution {
        Some(TrafficDistribution::PreferSameNode) => {
            let set = match zone {
                Some(z) => prefer(set, |e| in_zone(e, z, all_hinted)),
                None => set,
            };
            match node {
                Some(n) => prefer(set, |e| on_node(e, n, all_node_hinted)),
                None => set,
            }
        }
        Some(TrafficDistribution::PreferSameZone) => match zone {
            Some(z) => prefer(set, |e| in_zone(e, z, all_hinted)),
            None => set,
        },
        // No trafficDistribution, or one this version does not know (kube-proxy ignores
        // unknown values): zone hints alone decide.
        _ if all_hinted => match zone {
            Some(z) => prefer(set, |e| in_zone(e, z, true)),
            None => set,
        },
        _ => set,
    }
}

/// The endpoints of one Service port that may receive this client's traffic, in the order
/// given (the store's order, by address). Empty means the request must fail: there is no
/// endpoint the Kubernetes rules allow.
pub fn eligible<'a>(
    service: &Service,
    endpoints: &'a [PortEndpoint],
    locality: &Locality,
    scope: Scope,
) -> Vec<&'a PortEndpoint> {
    let policy = match scope {
        Scope::Internal => service.internal_traffic_policy,
        Scope::External => service.external_traffic_policy,
    };
    match policy {
        TrafficPolicy::Local => {
            by_readiness(service, endpoints.iter().filter(|e| is_local(e, locality))).0
        }
        TrafficPolicy::Cluster => match by_readiness(service, endpoints.iter()) {
            // kube-proxy filters by topology among ready endpoints only; the terminating
            // fallback is used whole.
            (set, false) => by_topology(service, set, locality),
            (set, true) => set,
        },
    }
}
