//! Conversion tables: each row is an API object (as JSON) and what it must become.

use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde_json::{json, Value};

use super::*;

/// Whether an error is the expected one.
type ErrorCheck = fn(&ModelError) -> bool;

fn svc(spec: Value) -> Result<Service, ModelError> {
    let obj: corev1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }))
    .unwrap();
    Service::try_from(&obj)
}

fn slice(body: Value) -> Result<EndpointSlice, ModelError> {
    let mut obj = json!({
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [],
    });
    for (k, v) in body.as_object().unwrap() {
        obj[k] = v.clone();
    }
    let es: discoveryv1::EndpointSlice = serde_json::from_value(obj).unwrap();
    EndpointSlice::try_from(&es)
}

#[test]
fn service_fields_convert() {
    let s = svc(json!({
        "type": "LoadBalancer",
        "clusterIP": "10.0.0.1",
        "clusterIPs": ["10.0.0.1", "fd00::1"],
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "appProtocol": "http"},
            {"name": "grpc", "port": 9090, "targetPort": "grpc-port", "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
        "internalTrafficPolicy": "Local",
        "externalTrafficPolicy": "Local",
        "trafficDistribution": "PreferClose",
        "publishNotReadyAddresses": true,
        "externalIPs": ["192.0.2.7"],
    }))
    .unwrap();
    assert_eq!(s.key, ServiceKey::new("shop", "web"));
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(
        s.cluster_ips,
        vec![
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert!(!s.headless);
    assert_eq!(s.ports[0].target_port, TargetPort::Number(8080));
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(s.ports[0].app_protocol.as_deref(), Some("http"));
    assert_eq!(s.ports[1].target_port, TargetPort::Name("grpc-port".into()));
    assert_eq!(s.ports[2].protocol, Protocol::Udp);
    assert_eq!(
        s.ports[2].target_port,
        TargetPort::Number(53),
        "targetPort defaults to port"
    );
    assert_eq!(
        s.session_affinity,
        SessionAffinity::ClientIp {
            timeout: Duration::from_secs(60)
        }
    );
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(
        s.traffic_distribution,
        Some(TrafficDistribution::PreferSameZone)
    );
    assert!(s.publish_not_ready_addresses);
    assert_eq!(s.external_ips.len(), 1);
}

#[test]
fn service_defaults_and_special_types() {
    let s = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})).unwrap();
    assert!(s.headless && s.cluster_ips.is_empty() && !s.is_proxied());
    assert_eq!(s.service_type, ServiceType::ClusterIp);
    assert_eq!(s.session_affinity, SessionAffinity::None);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.ports[0].name, None);

    let s = svc(json!({"type": "ExternalName", "externalName": "db.example.com"})).unwrap();
    assert_eq!(s.external_name.as_deref(), Some("db.example.com"));
    assert!(!s.is_proxied());

    let s = svc(json!({"clusterIP": "10.0.0.2", "sessionAffinity": "ClientIP"})).unwrap();
    assert_eq!(
        s.session_affinity,
        SessionAffinity::ClientIp {
            timeout: Duration::from_secs(10800)
        }
    );

    for (value, expected) in [
        ("PreferSameZone", Some(TrafficDistribution::PreferSameZone)),
        ("PreferSameNode", Some(TrafficDistribution::PreferSameNode)),
        ("SomethingNew", None),
    ] {
        let s = svc(json!({"clusterIP": "10.0.0.3", "trafficDistribution": value})).unwrap();
        assert_eq!(s.traffic_distribution, expected, "{value}");
    }
}

#[test]
fn load_balancer_status_converts() {
    let obj: corev1::Service = serde_json::from_value(json!({
        "metadata": {"name": "lb", "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9", "ports": [{"port": 443, "nodePort": 30443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}]}},
    }))
    .unwrap();
    let s = Service::try_from(&obj).unwrap();
    assert_eq!(
        s.load_balancer_ingress[0].ip,
        Some("203.0.113.5".parse().unwrap())
    );
    assert_eq!(
        s.load_balancer_ingress[1].hostname.as_deref(),
        Some("lb.example.com")
    );
}

#[test]
fn bad_services_are_typed_errors() {
    let rows: Vec<(Value, ErrorCheck)> = vec![
        (json!({"clusterIP": "10.0.0.300"}), |e| {
            matches!(e, ModelError::InvalidIp { .. })
        }),
        (
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 70000}]}),
            |e| matches!(e, ModelError::PortOutOfRange { value: 70000, .. }),
        ),
        (
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 0}]}),
            |e| matches!(e, ModelError::PortOutOfRange { .. }),
        ),
        (
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80, "targetPort": -1}]}),
            |e| matches!(e, ModelError::PortOutOfRange { .. }),
        ),
        (
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80, "protocol": "QUIC"}]}),
            |e| matches!(e, ModelError::UnknownProtocol(_)),
        ),
        (json!({"type": "Magic"}), |e| {
            matches!(e, ModelError::UnknownServiceType(_))
        }),
        (json!({"type": "ExternalName"}), |e| {
            *e == ModelError::MissingExternalName
        }),
        (json!({"internalTrafficPolicy": "Nearby"}), |e| {
            matches!(e, ModelError::UnknownTrafficPolicy { .. })
        }),
        (json!({"sessionAffinity": "Cookie"}), |e| {
            matches!(e, ModelError::InvalidSessionAffinity(_))
        }),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
            |e| matches!(e, ModelError::InvalidSessionAffinity(_)),
        ),
        (json!({"externalIPs": ["nope"]}), |e| {
            matches!(
                e,
                ModelError::InvalidIp {
                    field: "spec.externalIPs",
                    ..
                }
            )
        }),
    ];
    for (spec, check) in rows {
        let err = svc(spec.clone()).expect_err(&spec.to_string());
        assert!(check(&err), "{spec}: unexpected {err:?}");
        assert!(!err.to_string().is_empty());
    }
    let no_name: corev1::Service =
        serde_json::from_value(json!({"metadata": {"namespace": "x"}, "spec": {}})).unwrap();
    assert_eq!(
        Service::try_from(&no_name),
        Err(ModelError::MissingMetadata("metadata.name"))
    );
    let no_spec: corev1::Service =
        serde_json::from_value(json!({"metadata": {"namespace": "x", "name": "y"}})).unwrap();
    assert_eq!(Service::try_from(&no_spec), Err(ModelError::MissingSpec));
}

#[test]
fn slice_fields_convert() {
    let s = slice(json!({
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"},
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z"}},
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": [
            {"addresses": ["10.1.0.1", "10.1.0.99"], "conditions": {"ready": true},
             "zone": "z1", "nodeName": "n1", "hostname": "pod-a",
             "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]},
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.1.0.3"]},
            {"addresses": []},
        ],
    }))
    .unwrap();
    assert_eq!(s.service, ServiceKey::new("shop", "web"));
    assert_eq!(s.key, ServiceKey::new("shop", "web-abc"));
    assert_eq!(s.ports[0].name.as_deref(), Some("http"));
    assert_eq!(s.ports[0].port, 8080);
    assert_eq!(
        s.endpoints.len(),
        3,
        "an endpoint with no address is dropped"
    );
    let a = &s.endpoints[0];
    assert_eq!(
        a.address,
        "10.1.0.1".parse::<std::net::IpAddr>().unwrap(),
        "first address only"
    );
    assert_eq!(a.zone.as_deref(), Some("z1"));
    assert_eq!(a.node_name.as_deref(), Some("n1"));
    assert_eq!(a.hostname.as_deref(), Some("pod-a"));
    let hints = a.hints.as_ref().unwrap();
    assert_eq!(hints.for_zones, vec![Str::from("z1")]);
    assert_eq!(hints.for_nodes, vec![Str::from("n1")]);
    assert_eq!(
        a.target_ref.as_ref().unwrap().name.as_deref(),
        Some("web-1")
    );
    assert_eq!(
        s.endpoints[1].conditions,
        Conditions {
            ready: false,
            serving: true,
            terminating: true
        }
    );
    assert_eq!(
        s.endpoints[2].conditions,
        Conditions::default(),
        "nil conditions mean ready"
    );
    let t = s.last_change_trigger_time.unwrap();
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs, 1_767_323_045);
}

#[test]
fn serving_defaults_to_ready() {
    let s =
        slice(json!({"endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": false}}]}))
            .unwrap();
    assert_eq!(
        s.endpoints[0].conditions,
        Conditions {
            ready: false,
            serving: false,
            terminating: false
        }
    );
}

#[test]
fn fqdn_slices_carry_no_endpoints() {
    let s = slice(json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]}))
        .unwrap();
    assert_eq!(s.address_type, AddressType::Fqdn);
    assert!(s.endpoints.is_empty());
}

#[test]
fn bad_slices_are_typed_errors() {
    let rows: Vec<(Value, ErrorCheck)> = vec![
        (json!({"endpoints": [{"addresses": ["10.1.0.256"]}]}), |e| {
            matches!(e, ModelError::InvalidIp { .. })
        }),
        (json!({"endpoints": [{"addresses": ["fd00::1"]}]}), |e| {
            matches!(e, ModelError::InvalidIp { .. })
        }),
        (json!({"addressType": "IPv5"}), |e| {
            matches!(e, ModelError::UnknownAddressType(_))
        }),
        (json!({"ports": [{"name": "x", "port": 65536}]}), |e| {
            matches!(e, ModelError::PortOutOfRange { .. })
        }),
        (json!({"ports": [{"name": "x"}]}), |e| {
            matches!(e, ModelError::MissingPortNumber(_))
        }),
        (json!({"ports": [{"port": 80, "protocol": "ICMP"}]}), |e| {
            matches!(e, ModelError::UnknownProtocol(_))
        }),
        (
            json!({"metadata": {"name": "orphan", "namespace": "shop"}}),
            |e| *e == ModelError::MissingServiceName,
        ),
        (
            json!({"metadata": {"name": "orphan", "namespace": "shop", "labels": {"kubernetes.io/service-name": ""}}}),
            |e| *e == ModelError::MissingServiceName,
        ),
        (
            json!({"metadata": {"name": "x", "labels": {"kubernetes.io/service-name": "web"}}}),
            |e| *e == ModelError::MissingMetadata("metadata.namespace"),
        ),
    ];
    for (body, check) in rows {
        let err = slice(body.clone()).expect_err(&body.to_string());
        assert!(check(&err), "{body}: unexpected {err:?}");
    }
}

#[test]
fn bad_trigger_time_is_ignored_not_fatal() {
    let s = slice(json!({"metadata": {"name": "a", "namespace": "shop",
        "labels": {"kubernetes.io/service-name": "web"},
        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "yesterday"}}}))
    .unwrap();
    assert_eq!(s.last_change_trigger_time, None);
}

#[test]
fn ip_families_decide_the_stack() {
    let rows: [(&str, Value, Vec<IpFamily>, Stack); 7] = [
        (
            "ipFamilies as the API server writes them",
            json!({"clusterIPs": ["10.0.0.1", "fd00::1"], "ipFamilies": ["IPv4", "IPv6"],
                   "ipFamilyPolicy": "RequireDualStack"}),
            vec![IpFamily::V4, IpFamily::V6],
            Stack::Dual,
        ),
        (
            "IPv6 first",
            json!({"clusterIPs": ["fd00::1", "10.0.0.1"], "ipFamilies": ["IPv6", "IPv4"],
                   "ipFamilyPolicy": "PreferDualStack"}),
            vec![IpFamily::V6, IpFamily::V4],
            Stack::Dual,
        ),
        (
            "PreferDualStack on a single-stack cluster is single-stack",
            json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4"],
                   "ipFamilyPolicy": "PreferDualStack"}),
            vec![IpFamily::V4],
            Stack::Single(IpFamily::V4),
        ),
        (
            "a manifest without ipFamilies: the cluster IPs' families",
            json!({"clusterIPs": ["10.0.0.1", "fd00::1"]}),
            vec![IpFamily::V4, IpFamily::V6],
            Stack::Dual,
        ),
        (
            "a manifest with one IPv6 cluster IP",
            json!({"clusterIP": "fd00::1"}),
            vec![IpFamily::V6],
            Stack::Single(IpFamily::V6),
        ),
        (
            "headless dual-stack from the API",
            json!({"clusterIP": "None", "ipFamilies": ["IPv4", "IPv6"],
                   "ipFamilyPolicy": "RequireDualStack"}),
            vec![IpFamily::V4, IpFamily::V6],
            Stack::Dual,
        ),
        (
            "headless from a manifest: nothing says",
            json!({"clusterIP": "None"}),
            vec![],
            Stack::Unknown,
        ),
    ];
    for (why, spec, families, stack) in rows {
        let s = svc(spec).unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(s.ip_families, families, "{why}");
        assert_eq!(s.stack(), stack, "{why}");
    }
    // A Service built in code without ipFamilies takes its cluster IPs' families.
    let built = Service {
        cluster_ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        ..Service::new(ServiceKey::new("shop", "web"))
    };
    assert_eq!(built.stack(), Stack::Dual);
}

#[test]
fn bad_ip_families_are_refused() {
    let rows: [(&str, Value); 6] = [
        (
            "unknown family",
            json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv5"]}),
        ),
        (
            "three families",
            json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4", "IPv6", "IPv4"]}),
        ),
        (
            "one family twice",
            json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4", "IPv4"]}),
        ),
        (
            "ipFamilies[0] not the family of clusterIPs[0]",
            json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv6"]}),
        ),
        (
            "SingleStack with two families",
            json!({"clusterIPs": ["10.0.0.1", "fd00::1"], "ipFamilyPolicy": "SingleStack"}),
        ),
        (
            "unknown policy",
            json!({"clusterIP": "10.0.0.1", "ipFamilyPolicy": "TripleStack"}),
        ),
    ];
    for (why, spec) in rows {
        match svc(spec) {
            Err(ModelError::InvalidIpFamilies(msg)) => {
                assert!(msg.starts_with("spec.ipFamil"), "{why}: {msg}")
            }
            other => panic!("{why}: {other:?}"),
        }
    }
}
