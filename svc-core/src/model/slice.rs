use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::discovery::v1 as discoveryv1;

use super::error::{ModelError, Result};
use super::service::{non_empty, object_key, parse_ip, parse_port, Protocol};
use super::{validate, ServiceKey, Str};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The annotation the EndpointSlice controller sets to the time of the pod or Service change
/// that caused this slice version; we measure propagation lag from it.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Identifies an EndpointSlice: `namespace/name`.
pub type SliceKey = ServiceKey;

/// `addressType` of an EndpointSlice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressType {
    /// IPv4 addresses.
    IPv4,
    /// IPv6 addresses.
    IPv6,
    /// Hostnames (deprecated); kube-proxy ignores such slices and so do we.
    Fqdn,
}

/// An endpoint's conditions, with the API's nil defaults applied as kube-proxy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conditions {
    /// Ready to receive new traffic (nil means true).
    pub ready: bool,
    /// Passing readiness checks, even while terminating (nil means the value of `ready`).
    pub serving: bool,
    /// The pod is shutting down (nil means false).
    pub terminating: bool,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// Topology hints (`forZones`, `forNodes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hints {
    /// Zones that should consume this endpoint.
    pub for_zones: Vec<Str>,
    /// Nodes that should consume this endpoint.
    pub for_nodes: Vec<Str>,
}

/// The object behind an endpoint, usually a Pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetRef {
    /// `kind`, e.g. `Pod`.
    pub kind: Option<Str>,
    /// `namespace`.
    pub namespace: Option<Str>,
    /// `name`.
    pub name: Option<Str>,
}

/// One endpoint of a slice.
///
/// The API allows several addresses but declares them fungible and kube-proxy uses only the
/// first, so we keep only that one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// `conditions`.
    pub conditions: Conditions,
    /// `zone`.
    pub zone: Option<Str>,
    /// `nodeName`.
    pub node_name: Option<Str>,
    /// `hints`; `None` when the slice carries none.
    pub hints: Option<Arc<Hints>>,
    /// `targetRef`.
    pub target_ref: Option<Arc<TargetRef>>,
    /// `hostname`, used for headless DNS records.
    pub hostname: Option<Str>,
}

/// One entry of a slice's `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// The Service port name this entry belongs to (`None` for the unnamed port).
    pub name: Option<Str>,
    /// The resolved port number on the endpoints of this slice.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// `appProtocol`.
    pub app_protocol: Option<Str>,
}

/// An EndpointSlice, as far as routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// `namespace/name` of the slice itself.
    pub key: SliceKey,
    /// The owning Service, from the `kubernetes.io/service-name` label.
    pub service: ServiceKey,
    /// `addressType`.
    pub address_type: AddressType,
    /// `ports`.
    pub ports: Vec<EndpointPort>,
    /// `endpoints` (empty for FQDN slices, which are not routed).
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation; an unparsable value
    /// is ignored (it only feeds the lag histogram).
    pub last_change_trigger_time: Option<SystemTime>,
}

fn endpoint(ep: &discoveryv1::Endpoint) -> Result<Option<Endpoint>> {
    let Some(first) = ep.addresses.first() else {
        return Ok(None);
    };
    let address = parse_ip("endpoints[].addresses", first)?;
    validate::endpoint_ip(address)?;
    let c = ep.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let conditions = Conditions {
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
    };
    let hints = ep.hints.as_ref().map(|h| {
        Arc::new(Hints {
            for_zones: h
                .for_zones
                .iter()
                .flatten()
                .map(|z| Str::from(z.name.as_str()))
                .collect(),
            for_nodes: h
                .for_nodes
                .iter()
                .flatten()
                .map(|n| Str::from(n.name.as_str()))
                .collect(),
        })
    });
    let target_ref = ep.target_ref.as_ref().map(|r| {
        Arc::new(TargetRef {
            kind: non_empty(r.kind.as_ref()),
            namespace: non_empty(r.namespace.as_ref()),
            name: non_empty(r.name.as_ref()),
        })
    });
    Ok(Some(Endpoint {
        address,
        conditions,
        zone: non_empty(ep.zone.as_ref()),
        node_name: non_empty(ep.node_name.as_ref()),
        hints,
        target_ref,
        hostname: non_empty(ep.hostname.as_ref()),
    }))
}

impl TryFrom<&discoveryv1::EndpointSlice> for EndpointSlice {
    type Error = ModelError;

    fn try_from(es: &discoveryv1::EndpointSlice) -> Result<Self> {
        let key = object_key(&es.metadata)?;
        validate::slice_key(&key.name, &key.namespace)?;
        let service_name = es
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
            .ok_or(ModelError::MissingServiceName)?;
        let service = ServiceKey {
            namespace: key.namespace.clone(),
            name: Str::from(service_name.as_str()),
        };
        let address_type = match es.address_type.as_str() {
            "IPv4" => AddressType::IPv4,
            "IPv6" => AddressType::IPv6,
            "FQDN" => AddressType::Fqdn,
            other => return Err(ModelError::UnknownAddressType(other.to_string())),
        };
        let ports: Vec<EndpointPort> = es
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let number = p.port.ok_or_else(|| {
                    ModelError::MissingPortNumber(p.name.clone().unwrap_or_default())
                })?;
                Ok(EndpointPort {
                    name: non_empty(p.name.as_ref()),
                    port: parse_port("ports[].port", number.into())?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    app_protocol: non_empty(p.app_protocol.as_ref()),
                })
            })
            .collect::<Result<_>>()?;
        validate::slice_ports(&ports)?;
        let endpoints = if address_type == AddressType::Fqdn {
            Vec::new()
        } else {
            let items = es.endpoints.items();
            let mut out = Vec::with_capacity(items.len());
            for ep in items {
                if let Some(ep) = endpoint(ep)? {
                    let family_ok = match address_type {
                        AddressType::IPv4 => ep.address.is_ipv4(),
                        AddressType::IPv6 => ep.address.is_ipv6(),
                        AddressType::Fqdn => false,
                    };
                    if !family_ok {
                        return Err(ModelError::InvalidIp {
                            field: "endpoints[].addresses (wrong family for addressType)",
                            value: ep.address.to_string(),
                        });
                    }
                    out.push(Arc::new(ep));
                }
            }
            out
        };
        let last_change_trigger_time = es
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            // Not `SystemTime::from`: that needs jiff's `std` feature, which only kube turns on.
            // A time before 1970 is nonsense here and reads as absent.
            .and_then(|ts| std::time::Duration::try_from(ts.as_duration()).ok())
            .map(|since_epoch| SystemTime::UNIX_EPOCH + since_epoch);
        Ok(EndpointSlice {
            key,
            service,
            address_type,
            ports,
            endpoints,
            last_change_trigger_time,
        })
    }
}

/// A list field that k8s-openapi types as `Vec` for some Kubernetes versions and as
/// `Option<Vec>` for others (`EndpointSlice.endpoints` became optional in 1.36). The
/// application picks the version, so conversions accept either.
trait ListField<T> {
    fn items(&self) -> &[T];
}

impl<T> ListField<T> for Vec<T> {
    fn items(&self) -> &[T] {
        self
    }
}

impl<T> ListField<T> for Option<Vec<T>> {
    fn items(&self) -> &[T] {
        self.as_deref().unwrap_or_default()
    }
}
