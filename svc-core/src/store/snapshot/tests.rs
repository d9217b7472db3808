//! The per-family views of [`build`]: pure, no store.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::*;
use crate::model::{
    Conditions, EndpointPort, IpFamilyPolicy, ServiceKey, ServicePort, SliceKey, TargetPort,
};
use crate::store::PortRef;

const V4: [&str; 2] = ["10.1.0.1", "10.1.0.2"];
const V6: [&str; 2] = ["fd00:1::1", "fd00:1::2"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(cluster_ips: &[&str]) -> Arc<Service> {
    Arc::new(Service {
        cluster_ips: cluster_ips.iter().map(|s| ip(s)).collect(),
        ports: vec![
            ServicePort::tcp(Some("http"), 80, TargetPort::Number(8080)),
            ServicePort {
                protocol: Protocol::Udp,
                ..ServicePort::tcp(Some("dns"), 53, TargetPort::Number(5353))
            },
        ],
        ..Service::new(ServiceKey::new("shop", "web"))
    })
}

fn slice(name: &str, address_type: AddressType, ips: &[&str]) -> (Str, Arc<EndpointSlice>) {
    let port = |name: &str, port, protocol| EndpointPort {
        name: Some(name.into()),
        port,
        protocol,
        app_protocol: None,
    };
    let endpoints = ips
        .iter()
        .map(|a| {
            Arc::new(Endpoint {
                address: ip(a),
                conditions: Conditions::default(),
                zone: None,
                node_name: None,
                hints: None,
                target_ref: None,
                hostname: None,
            })
        })
        .collect();
    let slice = EndpointSlice {
        key: SliceKey::new("shop", name),
        service: ServiceKey::new("shop", "web"),
        address_type,
        ports: vec![
            port("http", 8080, Protocol::Tcp),
            port("dns", 5353, Protocol::Udp),
        ],
        endpoints,
        last_change_trigger_time: None,
    };
    (name.into(), Arc::new(slice))
}

fn both_slices() -> BTreeMap<Str, Arc<EndpointSlice>> {
    [
        slice("web-v4", AddressType::IPv4, &V4),
        slice("web-v6", AddressType::IPv6, &V6),
    ]
    .into_iter()
    .collect()
}

fn ips(port: &PortSnapshot) -> Vec<IpAddr> {
    port.endpoints.iter().map(|e| e.addr.ip()).collect()
}

fn all_of(lists: &[&[&str]]) -> Vec<IpAddr> {
    lists.iter().flat_map(|l| l.iter().map(|s| ip(s))).collect()
}

#[test]
fn a_dual_stack_service_reaches_each_family_from_its_own_addresses() {
    // IPv6 first, as a cluster whose primary family is IPv6 allocates them.
    let snap = build(service(&["fd00:96::1", "10.96.0.1"]), &both_slices());
    for (port, protocol) in [(80, Protocol::Tcp), (53, Protocol::Udp)] {
        let at = |family| ips(snap.port_at(port, protocol, family).unwrap());
        assert_eq!(at(IpFamily::V4), all_of(&[&V4]), "{port}: IPv4 address");
        assert_eq!(at(IpFamily::V6), all_of(&[&V6]), "{port}: IPv6 address");
        // By name: both families, as a client resolving the name may get either cluster IP.
        let by_name = ips(snap.port_by_number(port, protocol).unwrap());
        assert_eq!(by_name, all_of(&[&V4, &V6]), "{port}: by name");
    }
    // PortRef::Family finds the family's view; the other refs find the by-name one.
    let v6 = PortRef::reached_at(ip("fd00:96::1"), 80, Protocol::Tcp);
    assert_eq!(ips(v6.find(&snap).unwrap()), all_of(&[&V6]));
    let by_number = PortRef::Number(80, Protocol::Tcp);
    assert_eq!(ips(by_number.find(&snap).unwrap()), all_of(&[&V4, &V6]));
    // Headless DNS still lists every endpoint.
    assert_eq!(snap.endpoints.len(), 4);
}

#[test]
fn ip_families_alone_make_a_service_dual_stack() {
    // A headless Service has no cluster IPs; ipFamilies says both. And a manifest may ask for
    // RequireDualStack with one cluster IP written down.
    let headless = Service {
        cluster_ips: vec![],
        headless: true,
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        ..(*service(&[])).clone()
    };
    let required = Service {
        ip_family_policy: Some(IpFamilyPolicy::RequireDualStack),
        ..(*service(&["10.96.0.1"])).clone()
    };
    for svc in [headless, required] {
        let snap = build(Arc::new(svc), &both_slices());
        let at = |family| ips(snap.port_at(80, Protocol::Tcp, family).unwrap());
        assert_eq!(at(IpFamily::V4), all_of(&[&V4]));
        assert_eq!(at(IpFamily::V6), all_of(&[&V6]));
        assert_eq!(ips(&snap.ports[0]), all_of(&[&V4, &V6]));
    }
}

#[test]
fn a_dual_stack_family_without_endpoints_reaches_none() {
    // The IPv6 slice is not there yet: the IPv6 cluster IP must not fall back to IPv4 pods
    // (kube-proxy's IPv6 proxier would have no endpoints either).
    let only_v4: BTreeMap<_, _> = [slice("web-v4", AddressType::IPv4, &V4)]
        .into_iter()
        .collect();
    let snap = build(service(&["10.96.0.1", "fd00:96::1"]), &only_v4);
    let v4 = snap.port_at(80, Protocol::Tcp, IpFamily::V4).unwrap();
    assert_eq!(ips(v4), all_of(&[&V4]));
    assert!(snap
        .port_at(80, Protocol::Tcp, IpFamily::V6)
        .unwrap()
        .endpoints
        .is_empty());
    // A family with every endpoint shares the by-name list instead of copying it.
    assert!(Arc::ptr_eq(&v4.endpoints, &snap.ports[0].endpoints));
}

#[test]
fn a_single_stack_service_reaches_its_own_family() {
    // A stray slice of the other family (hand-written, or left from a dual-stack past): the
    // Service's addresses and its name reach only its own family, as through kube-proxy.
    let snap = build(service(&["10.96.0.1"]), &both_slices());
    for family in [IpFamily::V4, IpFamily::V6] {
        let at = snap.port_at(80, Protocol::Tcp, family).unwrap();
        assert_eq!(ips(at), all_of(&[&V4]), "{family}");
    }
    assert_eq!(ips(&snap.ports[0]), all_of(&[&V4]));
    let snap = build(service(&["fd00:96::1"]), &both_slices());
    assert_eq!(ips(&snap.ports[0]), all_of(&[&V6]));
}

#[test]
fn a_single_stack_service_with_endpoints_of_one_family_is_not_split() {
    let v4_only: BTreeMap<_, _> = [slice("web-v4", AddressType::IPv4, &V4)]
        .into_iter()
        .collect();
    let v6_only: BTreeMap<_, _> = [slice("web-v6", AddressType::IPv6, &V6)]
        .into_iter()
        .collect();
    // Its own family, and (a manifest on loopback) the other one: served as they are.
    for (cluster_ip, slices, want) in [
        ("10.96.0.1", &v4_only, all_of(&[&V4])),
        ("10.96.0.1", &v6_only, all_of(&[&V6])),
        ("fd00:96::1", &v4_only, all_of(&[&V4])),
    ] {
        let snap = build(service(&[cluster_ip]), slices);
        for family in [IpFamily::V4, IpFamily::V6] {
            let at = snap.port_at(80, Protocol::Tcp, family).unwrap();
            assert_eq!(ips(at), want, "{cluster_ip} at {family}");
            assert!(Arc::ptr_eq(&at.endpoints, &snap.ports[0].endpoints));
        }
    }
}

#[test]
fn endpoints_sort_ipv4_before_ipv6() {
    // `family_ranges` relies on it.
    let a: SocketAddr = "[::1]:1".parse().unwrap();
    let b: SocketAddr = "255.255.255.255:65535".parse().unwrap();
    assert!(b < a);
}
