//! The API server's validation rules, row by row: each row is an object the API server
//! refuses, and the error it must give; then what the rules must not refuse.

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde_json::{json, Value};

use crate::model::*;

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

/// The API server's validation, row by row: each spec is refused with the named error, as the
/// API server would refuse it, so a manifest cannot get what the API would never serve.
#[test]
fn api_validation_rules() {
    let rows: Vec<(&str, Value, ErrorCheck)> = vec![
        (
            "duplicate port/protocol (one TCP, one appProtocol http on the same number)",
            json!({"clusterIP": "10.0.0.1", "ports": [
                {"name": "tcp", "port": 80},
                {"name": "http", "port": 80, "appProtocol": "http"}]}),
            |e| {
                matches!(
                    e,
                    ModelError::DuplicatePort {
                        field: "spec.ports",
                        port: 80,
                        protocol: "TCP",
                        first: 0,
                        index: 1
                    }
                )
            },
        ),
        (
            "duplicate port name",
            json!({"clusterIP": "10.0.0.1", "ports": [
                {"name": "http", "port": 80}, {"name": "http", "port": 81}]}),
            |e| matches!(e, ModelError::DuplicatePortName { index: 1, .. }),
        ),
        (
            "unnamed port among several",
            json!({"clusterIP": "10.0.0.1", "ports": [{"name": "a", "port": 80}, {"port": 81}]}),
            |e| *e == ModelError::MissingPortName { index: 1 },
        ),
        (
            "port name not a DNS label",
            json!({"clusterIP": "10.0.0.1", "ports": [{"name": "Web_Port", "port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "spec.ports[].name",
                        ..
                    }
                )
            },
        ),
        (
            "named targetPort not an IANA service name",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80, "targetPort": "a-very-long-port-name"}]}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "spec.ports[].targetPort",
                        ..
                    }
                )
            },
        ),
        (
            "duplicate nodePort/protocol",
            json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [
                {"name": "a", "port": 80, "nodePort": 30080},
                {"name": "b", "port": 81, "nodePort": 30080}]}),
            |e| {
                matches!(
                    e,
                    ModelError::DuplicatePort {
                        field: "spec.ports[].nodePort",
                        port: 30080,
                        ..
                    }
                )
            },
        ),
        (
            "nodePort on a ClusterIP Service",
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 30080}]}),
            |e| *e == ModelError::NodePortNotAllowed { index: 0 },
        ),
        (
            "clusterIP 0.0.0.0 would listen on every interface",
            json!({"clusterIP": "0.0.0.0", "ports": [{"port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.clusterIPs",
                        ..
                    }
                )
            },
        ),
        (
            "clusterIP ::",
            json!({"clusterIP": "::", "ports": [{"port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.clusterIPs",
                        ..
                    }
                )
            },
        ),
        (
            "clusterIP ::ffff:0.0.0.0 (IPv4-mapped unspecified)",
            json!({"clusterIP": "::ffff:0.0.0.0", "ports": [{"port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.clusterIPs",
                        ..
                    }
                )
            },
        ),
        (
            "multicast clusterIP",
            json!({"clusterIP": "224.0.0.1", "ports": [{"port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.clusterIPs",
                        ..
                    }
                )
            },
        ),
        (
            "broadcast clusterIP",
            json!({"clusterIP": "255.255.255.255", "ports": [{"port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.clusterIPs",
                        ..
                    }
                )
            },
        ),
        (
            "two clusterIPs of one family",
            json!({"clusterIPs": ["10.0.0.1", "10.0.0.2"]}),
            |e| matches!(e, ModelError::InvalidClusterIps(_)),
        ),
        (
            "three clusterIPs",
            json!({"clusterIPs": ["10.0.0.1", "fd00::1", "10.0.0.2"]}),
            |e| matches!(e, ModelError::InvalidClusterIps(_)),
        ),
        (
            "clusterIPs[0] differs from clusterIP",
            json!({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"]}),
            |e| matches!(e, ModelError::InvalidClusterIps(_)),
        ),
        (
            "None with another clusterIP",
            json!({"clusterIPs": ["None", "10.0.0.2"]}),
            |e| matches!(e, ModelError::InvalidClusterIps(_)),
        ),
        (
            "unspecified externalIP",
            json!({"clusterIP": "10.0.0.1", "externalIPs": ["0.0.0.0"]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.externalIPs",
                        ..
                    }
                )
            },
        ),
        (
            "link-local externalIP",
            json!({"clusterIP": "10.0.0.1", "externalIPs": ["169.254.1.1"]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "spec.externalIPs",
                        ..
                    }
                )
            },
        ),
        (
            "externalName not a DNS name",
            json!({"type": "ExternalName", "externalName": "db..example.com"}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "spec.externalName",
                        ..
                    }
                )
            },
        ),
    ];
    for (rule, meta, check) in [
        (
            "an upper-case namespace could never be looked up by name",
            json!({"name": "web", "namespace": "Shop"}),
            (|e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "metadata.namespace",
                        ..
                    }
                )
            }) as ErrorCheck,
        ),
        (
            "a Service name must be a DNS-1035 label",
            json!({"name": "1web", "namespace": "shop"}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "metadata.name",
                        ..
                    }
                )
            },
        ),
        (
            "no dots in a Service name",
            json!({"name": "web.v2", "namespace": "shop"}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "metadata.name",
                        ..
                    }
                )
            },
        ),
    ] {
        let obj: corev1::Service =
            serde_json::from_value(json!({"metadata": meta, "spec": {"clusterIP": "10.0.0.1"}}))
                .unwrap();
        let err = Service::try_from(&obj).expect_err(rule);
        assert!(check(&err), "{rule}: unexpected {err:?}");
    }
    for (rule, spec, check) in rows {
        let err = svc(spec.clone()).expect_err(rule);
        assert!(check(&err), "{rule}: {spec}: unexpected {err:?}");
        let message = err.to_string();
        assert!(
            message.contains("spec.") || message.contains("status."),
            "{rule}: the message names the field: {message}"
        );
    }

    let unspecified_lb: corev1::Service = serde_json::from_value(json!({
        "metadata": {"name": "lb", "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9", "ports": [{"port": 443, "nodePort": 30443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "0.0.0.0"}]}},
    }))
    .unwrap();
    assert!(matches!(
        Service::try_from(&unspecified_lb),
        Err(ModelError::ForbiddenIp {
            field: "status.loadBalancer.ingress[].ip",
            ..
        })
    ));
}

/// What the rules must not refuse: the same number on TCP and UDP (DNS), loopback addresses
/// (how svc serves manifests without a cluster), dual stack, a trailing dot on externalName.
#[test]
fn api_validation_accepts_what_the_api_accepts() {
    let rows = [
        json!({"clusterIP": "10.0.0.1", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
        json!({"clusterIP": "127.0.0.77", "externalIPs": ["127.0.0.78"], "ports": [{"port": 80}]}),
        json!({"clusterIPs": ["10.0.0.1", "fd00::1"], "ports": [{"port": 80, "targetPort": "http-alt"}]}),
        json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [
            {"name": "a", "port": 53, "protocol": "UDP", "nodePort": 30053},
            {"name": "b", "port": 53, "protocol": "TCP", "nodePort": 30053}]}),
        json!({"type": "ExternalName", "externalName": "db.example.com."}),
    ];
    for spec in rows {
        svc(spec.clone()).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
    slice(json!({"endpoints": [{"addresses": ["127.0.0.11"]}],
                 "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 1, "protocol": "UDP"}]}))
    .unwrap();
}

#[test]
fn slice_validation_rules() {
    let rows: Vec<(&str, Value, ErrorCheck)> = vec![
        (
            "unspecified endpoint (connecting would reach this host)",
            json!({"endpoints": [{"addresses": ["0.0.0.0"]}]}),
            |e| {
                matches!(
                    e,
                    ModelError::ForbiddenIp {
                        field: "endpoints[].addresses",
                        ..
                    }
                )
            },
        ),
        (
            "multicast endpoint",
            json!({"endpoints": [{"addresses": ["239.1.1.1"]}]}),
            |e| matches!(e, ModelError::ForbiddenIp { .. }),
        ),
        (
            "unspecified IPv6 endpoint",
            json!({"addressType": "IPv6", "endpoints": [{"addresses": ["::"]}]}),
            |e| matches!(e, ModelError::ForbiddenIp { .. }),
        ),
        (
            "duplicate port name",
            json!({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}),
            |e| {
                matches!(
                    e,
                    ModelError::DuplicatePortName {
                        field: "ports",
                        index: 1,
                        ..
                    }
                )
            },
        ),
        (
            "two unnamed ports",
            json!({"ports": [{"port": 80}, {"port": 81}]}),
            |e| matches!(e, ModelError::DuplicatePortName { field: "ports", .. }),
        ),
        (
            "port name not a DNS label",
            json!({"ports": [{"name": "HTTP", "port": 80}]}),
            |e| {
                matches!(
                    e,
                    ModelError::InvalidName {
                        field: "ports[].name",
                        ..
                    }
                )
            },
        ),
    ];
    let rows = rows.into_iter().chain([(
        "a slice name must be a DNS-1123 subdomain",
        json!({"metadata": {"name": "Web_1", "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": "web"}}}),
        (|e| {
            matches!(
                e,
                ModelError::InvalidName {
                    field: "metadata.name",
                    ..
                }
            )
        }) as ErrorCheck,
    )]);
    for (rule, body, check) in rows {
        let err = slice(body.clone()).expect_err(rule);
        assert!(check(&err), "{rule}: {body}: unexpected {err:?}");
    }
}
