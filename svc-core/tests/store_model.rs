//! Property test: any sequence of Service and EndpointSlice events, relists included, leaves
//! the store exactly as recomputing from scratch would, and per-port subscribers that fold
//! their updates end at the same endpoint sets.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;
use proptest::prelude::*;
use svc_core::model::*;
use svc_core::store::{Event, PortRef, Update};
use svc_core::{Store, StoreConfig};

const NAMESPACES: [&str; 2] = ["a", "b"];
const NAMES: [&str; 3] = ["web", "api", "db"];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn arb_service() -> impl Strategy<Value = Service> {
    (
        0..2usize,
        0..3usize,
        1..5u8,
        any::<bool>(),
        prop::sample::subsequence(vec![0usize, 1, 2], 1..=3),
        any::<bool>(),
        prop::option::of(30000..30003u16),
    )
        .prop_map(
            |(ns, name, vip, headless, port_ids, named_target, node_port)| {
                let ports = port_ids
                    .into_iter()
                    .map(|p| ServicePort {
                        name: Some(Str::from(["http", "grpc", "metrics"][p])),
                        protocol: if p == 2 { Protocol::Udp } else { Protocol::Tcp },
                        port: 80 + p as u16,
                        target_port: if named_target && p == 1 {
                            TargetPort::Name("grpc-port".into())
                        } else {
                            TargetPort::Number(8080 + p as u16)
                        },
                        node_port: node_port.filter(|_| p == 0),
                        app_protocol: None,
                    })
                    .collect();
                Service {
                    cluster_ips: if headless {
                        vec![]
                    } else {
                        vec![ip(200 + vip)]
                    },
                    headless,
                    ports,
                    ..Service::new(ServiceKey::new(NAMESPACES[ns], NAMES[name]))
                }
            },
        )
}

fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    let endpoint = (
        1..7u8,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0..2u8),
    )
        .prop_map(|(last, ready, terminating, zone)| {
            Arc::new(Endpoint {
                address: ip(last),
                conditions: Conditions {
                    ready,
                    serving: ready || terminating,
                    terminating,
                },
                zone: zone.map(|z| Str::from(format!("z{z}"))),
                node_name: None,
                hints: None,
                target_ref: None,
                hostname: None,
            })
        });
    (
        0..2usize,
        0..4usize,
        0..3usize,
        prop::sample::subsequence(vec![0usize, 1, 2, 3], 0..=3),
        prop::collection::vec(endpoint, 0..4),
    )
        .prop_map(|(ns, slice, owner, port_ids, endpoints)| EndpointSlice {
            key: ServiceKey::new(NAMESPACES[ns], format!("s{slice}")),
            service: ServiceKey::new(NAMESPACES[ns], NAMES[owner]),
            address_type: AddressType::IPv4,
            ports: port_ids
                .into_iter()
                .map(|p| EndpointPort {
                    // p == 3 names the targetPort instead of the Service port.
                    name: Some(Str::from(["http", "grpc", "metrics", "grpc-port"][p])),
                    port: 9000 + p as u16 + slice as u16 * 10,
                    protocol: if p == 2 { Protocol::Udp } else { Protocol::Tcp },
                    app_protocol: None,
                })
                .collect(),
            endpoints,
            last_change_trigger_time: None,
        })
}

#[derive(Clone, Debug)]
enum Op {
    ApplyService(Service),
    DeleteService(usize, usize),
    ApplySlice(EndpointSlice),
    DeleteSlice(usize, usize),
    RelistServices(Vec<Service>),
    RelistSlices(Vec<EndpointSlice>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => arb_service().prop_map(Op::ApplyService),
        1 => (0..2usize, 0..3usize).prop_map(|(n, s)| Op::DeleteService(n, s)),
        5 => arb_slice().prop_map(Op::ApplySlice),
        2 => (0..2usize, 0..4usize).prop_map(|(n, s)| Op::DeleteSlice(n, s)),
        1 => prop::collection::vec(arb_service(), 0..5).prop_map(Op::RelistServices),
        1 => prop::collection::vec(arb_slice(), 0..6).prop_map(Op::RelistSlices),
    ]
}

/// The reference: what exists, as plain maps (last write per key wins, as in the API).
#[derive(Default)]
struct Reference {
    services: BTreeMap<ServiceKey, Service>,
    slices: BTreeMap<ServiceKey, EndpointSlice>,
}

impl Reference {
    fn apply(&mut self, op: &Op) -> Event {
        match op.clone() {
            Op::ApplyService(s) => {
                self.services.insert(s.key.clone(), s.clone());
                Event::ApplyService(s)
            }
            Op::DeleteService(n, s) => {
                let key = ServiceKey::new(NAMESPACES[n], NAMES[s]);
                self.services.remove(&key);
                Event::DeleteService(key)
            }
            Op::ApplySlice(s) => {
                self.slices.insert(s.key.clone(), s.clone());
                Event::ApplySlice(s)
            }
            Op::DeleteSlice(n, s) => {
                let key = ServiceKey::new(NAMESPACES[n], format!("s{s}"));
                self.slices.remove(&key);
                Event::DeleteSlice(key)
            }
            Op::RelistServices(list) => {
                self.services = list.iter().map(|s| (s.key.clone(), s.clone())).collect();
                Event::ReplaceServices {
                    services: self.services.values().cloned().collect(),
                    retain: vec![],
                }
            }
            Op::RelistSlices(list) => {
                self.slices = list.iter().map(|s| (s.key.clone(), s.clone())).collect();
                Event::ReplaceSlices {
                    slices: self.slices.values().cloned().collect(),
                    retain: vec![],
                }
            }
        }
    }

    fn rebuilt(&self) -> Store {
        let (store, mut w) = svc_core::store::store(StoreConfig::default());
        w.apply(Event::ReplaceSlices {
            slices: self.slices.values().cloned().collect(),
            retain: vec![],
        });
        w.apply(Event::ReplaceServices {
            services: self.services.values().cloned().collect(),
            retain: vec![],
        });
        store
    }
}

fn assert_same(incremental: &Store, scratch: &Store) {
    let a = incremental.services();
    let b = scratch.services();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(**x, **y);
    }
    for ns in NAMESPACES {
        for name in NAMES {
            for host in [
                name.to_string(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc.cluster.local"),
            ] {
                let (x, y) = (incremental.resolve_name(&host), scratch.resolve_name(&host));
                assert_eq!(
                    x.map(|s| s.service.key.clone()),
                    y.map(|s| s.service.key.clone()),
                    "{host}"
                );
            }
        }
    }
    for last in 200..206 {
        let x = incremental
            .lookup_cluster_ip(ip(last))
            .map(|s| s.service.key.clone());
        let y = scratch
            .lookup_cluster_ip(ip(last))
            .map(|s| s.service.key.clone());
        assert_eq!(x, y, "cluster IP {last}");
        for port in 80..83 {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                let x = incremental
                    .lookup_vip(ip(last), port, proto)
                    .map(|m| (m.service.service.key.clone(), m.port));
                let y = scratch
                    .lookup_vip(ip(last), port, proto)
                    .map(|m| (m.service.service.key.clone(), m.port));
                assert_eq!(x, y, "vip {last}:{port}");
            }
        }
    }
    for np in 30000..30003 {
        let x = incremental
            .lookup_node_port(np, Protocol::Tcp)
            .map(|m| m.service.service.key.clone());
        let y = scratch
            .lookup_node_port(np, Protocol::Tcp)
            .map(|m| m.service.service.key.clone());
        assert_eq!(x, y, "nodePort {np}");
    }
}

/// Folds every update the stream has ready into `state`.
fn fold_ready(
    stream: &mut svc_core::store::EndpointUpdates,
    state: &mut Option<HashMap<std::net::SocketAddr, Arc<Endpoint>>>,
) {
    while let Some(Some(update)) = stream.next().now_or_never() {
        match update {
            Update::Reset(all) => {
                *state = Some(all.into_iter().map(|e| (e.addr, e.endpoint)).collect())
            }
            Update::Add(eps) => {
                let m = state.as_mut().expect("Add before Reset");
                for e in eps {
                    m.insert(e.addr, e.endpoint);
                }
            }
            Update::Remove(addrs) => {
                let m = state.as_mut().expect("Remove before Reset");
                for a in addrs {
                    assert!(m.remove(&a).is_some(), "removed an address it never had");
                }
            }
            Update::DoesNotExist => *state = None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_from_scratch(ops in prop::collection::vec(arb_op(), 1..40)) {
        let (store, mut writer) = svc_core::store::store(StoreConfig::default());
        let mut reference = Reference::default();
        let key = ServiceKey::new("a", "web");
        let mut subs: Vec<_> = [PortRef::Name(Some("http".into())), PortRef::Number(81, Protocol::Tcp)]
            .into_iter()
            .map(|p| (store.subscribe(&key, p), None))
            .collect();
        for (i, op) in ops.iter().enumerate() {
            writer.apply(reference.apply(op));
            // Fold only sometimes, so that subscribers also see coalesced jumps.
            if i % 3 == 0 {
                for (stream, state) in &mut subs {
                    fold_ready(stream, state);
                }
            }
        }
        let scratch = reference.rebuilt();
        assert_same(&store, &scratch);
        for ((stream, state), port) in subs.iter_mut().zip([PortRef::Name(Some("http".into())), PortRef::Number(81, Protocol::Tcp)]) {
            fold_ready(stream, state);
            let expected = store.get(&key).and_then(|s| port.find(&s).map(|p| {
                p.endpoints.iter().map(|e| (e.addr, e.endpoint.clone())).collect::<HashMap<_, _>>()
            }));
            prop_assert_eq!(state.clone(), expected);
        }
    }
}
