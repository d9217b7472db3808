//! Table tests: each row names the Kubernetes rule it checks.

use std::net::IpAddr;
use std::time::Duration;

use svc_core::model::{Service, TrafficDistribution as TD, TrafficPolicy as TP};
use tokio::time::Instant;

use super::*;
use crate::test_support::*;

struct Row {
    rule: &'static str,
    service: Service,
    endpoints: Vec<Ep>,
    /// Client (node, zone).
    client: (Option<&'static str>, Option<&'static str>),
    scope: Scope,
    /// Last octets of the expected endpoints, in address order.
    want: &'static [u8],
}

fn row(rule: &'static str, service: Service, endpoints: Vec<Ep>, want: &'static [u8]) -> Row {
    Row {
        rule,
        service,
        endpoints,
        client: (None, None),
        scope: Scope::Internal,
        want,
    }
}

impl Row {
    fn client(mut self, node: Option<&'static str>, zone: Option<&'static str>) -> Self {
        self.client = (node, zone);
        self
    }
    fn external(mut self) -> Self {
        self.scope = Scope::External;
        self
    }
}

/// Two nodes in zone a (n1, n2) and one in zone b (n3); endpoint `i` runs on node `i`.
fn spread() -> Vec<Ep> {
    vec![
        ep(1).node("n1").zone("a"),
        ep(2).node("n2").zone("a"),
        ep(3).node("n3").zone("b"),
    ]
}

fn rows() -> Vec<Row> {
    let svc = service;
    vec![
        // --- Readiness (kube-proxy CategorizeEndpoints; EndpointSlice conditions) ---
        row("ready endpoints only", svc(), vec![ep(1), ep(2).not_ready(), ep(3)], &[1, 3]),
        row(
            "KEP-1669: with no ready endpoint, serving-and-terminating ones are used",
            svc(),
            vec![ep(1).not_ready(), ep(2).draining(), ep(3).cond(false, false, true)],
            &[2],
        ),
        row(
            "KEP-1669: any ready endpoint in the cluster excludes terminating ones",
            svc(),
            vec![ep(1).draining(), ep(2)],
            &[2],
        ),
        row(
            "KEP-1669: terminating but not serving is never used",
            svc(),
            vec![ep(1).cond(false, false, true), ep(2).not_ready()],
            &[],
        ),
        row(
            "serving but not terminating and not ready is not a fallback",
            svc(),
            vec![ep(1).cond(false, true, false)],
            &[],
        ),
        row(
            "publishNotReadyAddresses: every endpoint counts",
            svc().publish_not_ready(),
            vec![ep(1).not_ready(), ep(2).draining(), ep(3)],
            &[1, 2, 3],
        ),
        row("no endpoints: nothing eligible", svc(), vec![], &[]),
        // --- internalTrafficPolicy ---
        row("internalTrafficPolicy Local: only the client's node", svc().internal(TP::Local), spread(), &[2])
            .client(Some("n2"), Some("a")),
        row(
            "internalTrafficPolicy Local: no fallback to other nodes",
            svc().internal(TP::Local),
            spread(),
            &[],
        )
        .client(Some("n9"), Some("a")),
        row(
            "internalTrafficPolicy Local: a client with no node name has no local endpoints",
            svc().internal(TP::Local),
            spread(),
            &[],
        ),
        row(
            "internalTrafficPolicy Local: local not-ready is not used even if remote ones are ready",
            svc().internal(TP::Local),
            vec![ep(1).node("n1").not_ready(), ep(2).node("n2")],
            &[],
        )
        .client(Some("n1"), None),
        row(
            "internalTrafficPolicy Local: local serving-terminating fallback (KEP-1669)",
            svc().internal(TP::Local),
            vec![ep(1).node("n1").draining(), ep(2).node("n2")],
            &[1],
        )
        .client(Some("n1"), None),
        row(
            "internalTrafficPolicy Local: ignores trafficDistribution",
            svc().internal(TP::Local).distribution(TD::PreferSameZone),
            spread(),
            &[3],
        )
        .client(Some("n3"), Some("a")),
        row(
            "internalTrafficPolicy does not apply to external traffic",
            svc().internal(TP::Local),
            spread(),
            &[1, 2, 3],
        )
        .client(Some("n1"), None)
        .external(),
        // --- externalTrafficPolicy ---
        row(
            "externalTrafficPolicy Local: NodePort/LB traffic only to the node's endpoints",
            svc().external(TP::Local),
            spread(),
            &[1],
        )
        .client(Some("n1"), None)
        .external(),
        row(
            "externalTrafficPolicy Local: no fallback to other nodes",
            svc().external(TP::Local),
            spread(),
            &[],
        )
        .client(Some("n9"), None)
        .external(),
        row(
            "externalTrafficPolicy does not apply to cluster-IP traffic",
            svc().external(TP::Local),
            spread(),
            &[1, 2, 3],
        )
        .client(Some("n1"), None),
        // --- trafficDistribution ---
        row(
            "PreferSameZone/PreferClose: the client's zone",
            svc().distribution(TD::PreferSameZone),
            spread(),
            &[1, 2],
        )
        .client(Some("n1"), Some("a")),
        row(
            "PreferSameZone: falls back to all when the zone has no ready endpoint",
            svc().distribution(TD::PreferSameZone),
            vec![ep(1).zone("a").not_ready(), ep(3).zone("b")],
            &[3],
        )
        .client(None, Some("a")),
        row(
            "PreferSameZone: a client with no zone uses all",
            svc().distribution(TD::PreferSameZone),
            spread(),
            &[1, 2, 3],
        ),
        row(
            "PreferSameNode: the client's node",
            svc().distribution(TD::PreferSameNode),
            spread(),
            &[2],
        )
        .client(Some("n2"), Some("a")),
        row(
            "PreferSameNode: falls back to the client's zone",
            svc().distribution(TD::PreferSameNode),
            spread(),
            &[1, 2],
        )
        .client(Some("n9"), Some("a")),
        row(
            "PreferSameNode: falls back to all",
            svc().distribution(TD::PreferSameNode),
            spread(),
            &[1, 2, 3],
        )
        .client(Some("n9"), Some("z")),
        row(
            "topology does not narrow the terminating fallback",
            svc().distribution(TD::PreferSameZone),
            vec![ep(1).zone("a").draining(), ep(3).zone("b").draining()],
            &[1, 3],
        )
        .client(None, Some("b")),
        row(
            "no trafficDistribution and no hints: zones are ignored",
            svc(),
            spread(),
            &[1, 2, 3],
        )
        .client(Some("n1"), Some("a")),
        // --- Topology hints (forZones / forNodes) ---
        row(
            "hints forZones used when every ready endpoint is hinted (topology-aware routing)",
            svc(),
            vec![
                ep(1).zone("a").hint_zones(&["a"]),
                ep(2).zone("a").hint_zones(&["b"]),
                ep(3).zone("b").hint_zones(&["b"]),
            ],
            &[2, 3],
        )
        .client(None, Some("b")),
        row(
            "hints forZones override the endpoint's own zone under PreferSameZone",
            svc().distribution(TD::PreferSameZone),
            vec![
                ep(1).zone("a").hint_zones(&["a"]),
                ep(2).zone("a").hint_zones(&["b"]),
                ep(3).zone("b").hint_zones(&["b"]),
            ],
            &[1],
        )
        .client(None, Some("a")),
        row(
            "hints ignored when one ready endpoint has none",
            svc(),
            vec![ep(1).zone("a").hint_zones(&["a"]), ep(2).zone("b")],
            &[1, 2],
        )
        .client(None, Some("a")),
        row(
            "hints of not-ready endpoints do not matter (only ready ones are checked)",
            svc(),
            vec![ep(1).hint_zones(&["a"]), ep(2).not_ready(), ep(3).hint_zones(&["b"])],
            &[1],
        )
        .client(None, Some("a")),
        row(
            "hints: no endpoint hinted for the client's zone falls back to all",
            svc(),
            vec![ep(1).hint_zones(&["a"]), ep(2).hint_zones(&["b"])],
            &[1, 2],
        )
        .client(None, Some("c")),
        row(
            "hints: a client with no zone ignores them",
            svc(),
            vec![ep(1).hint_zones(&["a"]), ep(2).hint_zones(&["b"])],
            &[1, 2],
        ),
        row(
            "hints forNodes used by PreferSameNode when every endpoint has them",
            svc().distribution(TD::PreferSameNode),
            vec![
                ep(1).node("n1").zone("a").hint_zones(&["a"]).hint_nodes(&["n2"]),
                ep(2).node("n2").zone("a").hint_zones(&["a"]).hint_nodes(&["n1"]),
                ep(3).node("n3").zone("b").hint_zones(&["b"]).hint_nodes(&["n3"]),
            ],
            &[2],
        )
        .client(Some("n1"), Some("a")),
        row(
            "forNodes ignored when one endpoint lacks them: node names stand in",
            svc().distribution(TD::PreferSameNode),
            vec![
                ep(1).node("n1").zone("a").hint_zones(&["a"]).hint_nodes(&["n2"]),
                ep(2).node("n2").zone("a").hint_zones(&["a"]),
            ],
            &[1],
        )
        .client(Some("n1"), Some("a")),
    ]
}

#[test]
fn eligibility_follows_kubernetes_rules() {
    let mut failures = Vec::new();
    for r in rows() {
        let eps = port_endpoints(&r.endpoints);
        let locality = Locality::new(r.client.0, r.client.1);
        let got: Vec<u8> = eligible(&r.service, &eps, &locality, r.scope)
            .iter()
            .map(|e| match e.addr.ip() {
                IpAddr::V4(ip) => ip.octets()[3],
                IpAddr::V6(_) => unreachable!("tests use IPv4"),
            })
            .collect();
        if got != r.want {
            failures.push(format!("{}: got {got:?}, want {:?}", r.rule, r.want));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn scope_from_vip_kind() {
    use svc_core::store::VipKind;
    assert_eq!(Scope::from(VipKind::ClusterIp), Scope::Internal);
    for kind in [
        VipKind::ExternalIp,
        VipKind::LoadBalancer,
        VipKind::NodePort,
    ] {
        assert_eq!(Scope::from(kind), Scope::External, "{kind:?}");
    }
}

// --- sessionAffinity: ClientIP ---

fn client(last: u8) -> IpAddr {
    [10, 0, 0, last].into()
}

#[test]
fn affinity_sticks_and_each_use_extends_it() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(Duration::from_secs(10));
    assert_eq!(table.get(client(1), t0, |_| true), None);
    table.insert(client(1), addr(1), t0);
    let s = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(table.get(client(1), s(9), |_| true), Some(addr(1)));
    // Last use at 9 s, so it lives until 19 s.
    assert_eq!(table.get(client(1), s(18), |_| true), Some(addr(1)));
    assert_eq!(table.get(client(2), s(18), |_| true), None, "per client IP");
}

#[test]
fn affinity_expires_timeout_after_last_use() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(Duration::from_secs(10));
    table.insert(client(1), addr(1), t0);
    assert_eq!(
        table.get(client(1), t0 + Duration::from_secs(10), |_| true),
        None
    );
    assert!(table.is_empty(), "an expired entry is dropped on lookup");
}

#[test]
fn affinity_drops_entries_for_ineligible_endpoints() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(Duration::from_secs(10));
    table.insert(client(1), addr(1), t0);
    table.insert(client(2), addr(2), t0);
    assert_eq!(table.get(client(1), t0, |a| a != addr(1)), None);
    table.retain_endpoints(|a| a != addr(2));
    assert!(table.is_empty());
}

#[test]
fn affinity_sweeps_expired_entries() {
    let t0 = Instant::now();
    let mut table = AffinityTable::new(Duration::from_secs(10));
    table.insert(client(1), addr(1), t0);
    table.insert(client(2), addr(2), t0 + Duration::from_secs(5));
    table.sweep(t0 + Duration::from_secs(12));
    assert_eq!(table.len(), 1);
    table.set_timeout(Duration::from_secs(3));
    table.sweep(t0 + Duration::from_secs(12));
    assert!(
        table.is_empty(),
        "a shorter timeout applies to existing entries"
    );
}
