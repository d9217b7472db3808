//! `EndpointSlice` builder.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
};

use super::{insert, object_meta};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation with the time of the change that triggered this slice version.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// Starts building an `IPv4` EndpointSlice of Service `service_name`, with
/// the `kubernetes.io/service-name` and controller `managed-by` labels.
///
/// ```
/// use svc_testkit::{endpoint_slice, EndpointSpec};
///
/// let slice = endpoint_slice("default", "web-abc12", "web")
///     .port(Some("http"), 8080)
///     .endpoint(EndpointSpec::new("127.0.0.11").zone("a").node("n1"))
///     .endpoint(EndpointSpec::new("127.0.0.12").ready(false).terminating(true))
///     .build();
/// assert_eq!(slice.endpoints.len(), 2);
/// ```
pub fn endpoint_slice(namespace: &str, name: &str, service_name: &str) -> EndpointSliceBuilder {
    let mut metadata = object_meta(namespace, name);
    insert(&mut metadata.labels, SERVICE_NAME_LABEL, service_name);
    insert(
        &mut metadata.labels,
        MANAGED_BY_LABEL,
        "endpointslice-controller.k8s.io",
    );
    EndpointSliceBuilder {
        slice: EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            endpoints: Default::default(),
            ports: None,
        },
    }
}

/// Builds an `EndpointSlice`; see [`endpoint_slice`].
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSliceBuilder {
    slice: EndpointSlice,
}

impl EndpointSliceBuilder {
    /// Sets `addressType` (`IPv4`, `IPv6` or `FQDN`). Default `IPv4`.
    #[must_use]
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.slice.address_type = address_type.into();
        self
    }

    /// Adds a TCP port; `name` must match the Service port's name (`None` for
    /// an unnamed Service port).
    #[must_use]
    pub fn port(self, name: Option<&str>, port: i32) -> Self {
        self.port_spec(EndpointPortSpec::new(name, port))
    }

    /// Adds a port with full control over its fields.
    #[must_use]
    pub fn port_spec(mut self, port: EndpointPortSpec) -> Self {
        self.slice
            .ports
            .get_or_insert_with(Vec::new)
            .push(port.port);
        self
    }

    /// Adds an endpoint. A `target_pod` without namespace gets the slice's.
    #[must_use]
    pub fn endpoint(mut self, endpoint: EndpointSpec) -> Self {
        let mut endpoint = endpoint.endpoint;
        if let Some(target) = endpoint.target_ref.as_mut() {
            target
                .namespace
                .get_or_insert_with(|| self.slice.metadata.namespace.clone().unwrap_or_default());
        }
        self.slice.endpoints.push_item(endpoint);
        self
    }

    /// Adds several endpoints.
    #[must_use]
    pub fn endpoints(self, endpoints: impl IntoIterator<Item = EndpointSpec>) -> Self {
        endpoints.into_iter().fold(self, Self::endpoint)
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.slice.metadata.labels, key, value);
        self
    }

    /// Adds an annotation.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.slice.metadata.annotations, key, value);
        self
    }

    /// Sets the `endpoints.kubernetes.io/last-change-trigger-time` annotation
    /// (RFC 3339, e.g. `2026-01-01T00:00:00Z`).
    #[must_use]
    pub fn last_change_trigger_time(self, time: &str) -> Self {
        self.annotation(LAST_CHANGE_TRIGGER_TIME, time)
    }

    /// Returns the EndpointSlice.
    pub fn build(self) -> EndpointSlice {
        self.slice
    }
}

/// `EndpointSlice.endpoints` is a `Vec` in k8s-openapi before Kubernetes 1.36 and an
/// `Option<Vec>` from 1.36 on. The application picks the version, so the builder takes either.
trait ListField<T> {
    fn push_item(&mut self, item: T);
}

impl<T> ListField<T> for Vec<T> {
    fn push_item(&mut self, item: T) {
        self.push(item);
    }
}

impl<T> ListField<T> for Option<Vec<T>> {
    fn push_item(&mut self, item: T) {
        self.get_or_insert_with(Vec::new).push(item);
    }
}

/// One EndpointSlice port. Default protocol `TCP`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPortSpec {
    port: EndpointPort,
}

impl EndpointPortSpec {
    /// A TCP port.
    pub fn new(name: Option<&str>, port: i32) -> Self {
        Self {
            port: EndpointPort {
                name: name.map(str::to_owned),
                port: Some(port),
                protocol: Some("TCP".into()),
                app_protocol: None,
            },
        }
    }

    /// Sets the protocol (`TCP`, `UDP` or `SCTP`).
    #[must_use]
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.port.protocol = Some(protocol.into());
        self
    }

    /// Sets `appProtocol`.
    #[must_use]
    pub fn app_protocol(mut self, app_protocol: &str) -> Self {
        self.port.app_protocol = Some(app_protocol.into());
        self
    }
}

/// One endpoint. Defaults: ready, serving, not terminating.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    endpoint: Endpoint,
}

impl EndpointSpec {
    /// A ready endpoint with one address.
    pub fn new(address: &str) -> Self {
        Self {
            endpoint: Endpoint {
                addresses: vec![address.to_owned()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Endpoint::default()
            },
        }
    }

    fn conditions(&mut self) -> &mut EndpointConditions {
        self.endpoint
            .conditions
            .get_or_insert_with(EndpointConditions::default)
    }

    /// Adds another address (Kubernetes consumers use only the first).
    #[must_use]
    pub fn address(mut self, address: &str) -> Self {
        self.endpoint.addresses.push(address.to_owned());
        self
    }

    /// Sets `conditions.ready`.
    #[must_use]
    pub fn ready(mut self, ready: bool) -> Self {
        self.conditions().ready = Some(ready);
        self
    }

    /// Sets `conditions.serving`.
    #[must_use]
    pub fn serving(mut self, serving: bool) -> Self {
        self.conditions().serving = Some(serving);
        self
    }

    /// Sets `conditions.terminating`.
    #[must_use]
    pub fn terminating(mut self, terminating: bool) -> Self {
        self.conditions().terminating = Some(terminating);
        self
    }

    /// Removes all conditions (nil conditions, which consumers must treat as ready).
    #[must_use]
    pub fn no_conditions(mut self) -> Self {
        self.endpoint.conditions = None;
        self
    }

    /// Sets the zone.
    #[must_use]
    pub fn zone(mut self, zone: &str) -> Self {
        self.endpoint.zone = Some(zone.into());
        self
    }

    /// Sets `nodeName`.
    #[must_use]
    pub fn node(mut self, node: &str) -> Self {
        self.endpoint.node_name = Some(node.into());
        self
    }

    /// Sets the hostname.
    #[must_use]
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.endpoint.hostname = Some(hostname.into());
        self
    }

    /// Sets `hints.forZones`.
    #[must_use]
    pub fn hint_zones(mut self, zones: &[&str]) -> Self {
        let hints = self
            .endpoint
            .hints
            .get_or_insert_with(EndpointHints::default);
        hints.for_zones = Some(
            zones
                .iter()
                .map(|z| ForZone {
                    name: (*z).to_owned(),
                })
                .collect(),
        );
        self
    }

    /// Sets `hints.forNodes`.
    #[must_use]
    pub fn hint_nodes(mut self, nodes: &[&str]) -> Self {
        let hints = self
            .endpoint
            .hints
            .get_or_insert_with(EndpointHints::default);
        hints.for_nodes = Some(
            nodes
                .iter()
                .map(|n| ForNode {
                    name: (*n).to_owned(),
                })
                .collect(),
        );
        self
    }

    /// Sets `targetRef` to a Pod (namespace: the slice's).
    #[must_use]
    pub fn target_pod(mut self, pod: &str) -> Self {
        self.endpoint.target_ref = Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            ..ObjectReference::default()
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_full_slice() {
        let slice = endpoint_slice("ns", "web-1", "web")
            .address_type("IPv6")
            .port(Some("http"), 8080)
            .port_spec(
                EndpointPortSpec::new(None, 53)
                    .protocol("UDP")
                    .app_protocol("dns"),
            )
            .endpoint(
                EndpointSpec::new("fd00::11")
                    .ready(false)
                    .serving(true)
                    .terminating(true)
                    .zone("a")
                    .node("n1")
                    .hostname("h")
                    .hint_zones(&["a"])
                    .hint_nodes(&["n1"])
                    .target_pod("pod-1"),
            )
            .endpoints([EndpointSpec::new("fd00::12").no_conditions()])
            .last_change_trigger_time("2026-01-01T00:00:00Z")
            .build();
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(
            slice.metadata.annotations.unwrap()[LAST_CHANGE_TRIGGER_TIME],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(slice.address_type, "IPv6");
        let ports = slice.ports.unwrap();
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        let ep = &slice.endpoints[0];
        let conditions = ep.conditions.clone().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(
            ep.target_ref.as_ref().unwrap().namespace.as_deref(),
            Some("ns")
        );
        assert_eq!(
            ep.hints.as_ref().unwrap().for_nodes.as_ref().unwrap()[0].name,
            "n1"
        );
        assert!(slice.endpoints[1].conditions.is_none());
    }
}
