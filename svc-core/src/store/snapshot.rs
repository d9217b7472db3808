//! The per-Service snapshot readers see, and the pure merge that builds it.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::model::{
    AddressType, Endpoint, EndpointSlice, Protocol, Service, ServicePort, Str, TargetPort,
};

/// One endpoint of one Service port: where to connect, and what we know about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortEndpoint {
    /// The endpoint's IP and the port resolved for this Service port.
    pub addr: SocketAddr,
    /// Conditions, zone, node, hints and target of the endpoint.
    pub endpoint: Arc<Endpoint>,
}

/// The endpoints of one Service port, sorted by address and unique per address.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortSnapshot {
    /// The Service port.
    pub port: ServicePort,
    /// The endpoints merged from every slice of the Service, sorted by `addr`.
    pub endpoints: Arc<[PortEndpoint]>,
}

impl PortSnapshot {
    /// The endpoint at this address, if any.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&PortEndpoint> {
        self.endpoints
            .binary_search_by(|e| e.addr.cmp(&addr))
            .ok()
            .map(|i| &self.endpoints[i])
    }
}

/// Everything known about one Service, immutable and shared: readers hold it as an `Arc`
/// and never a lock guard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceSnapshot {
    /// The Service.
    pub service: Arc<Service>,
    /// One entry per `service.ports`, in the same order.
    pub ports: Vec<PortSnapshot>,
    /// Every endpoint of the Service regardless of port, unique per IP (for DNS, notably of
    /// headless Services), sorted by address.
    pub endpoints: Arc<[Arc<Endpoint>]>,
}

impl ServiceSnapshot {
    /// The port snapshot with this name (`None` is the unnamed port).
    pub fn port_by_name(&self, name: Option<&str>) -> Option<&PortSnapshot> {
        self.ports.iter().find(|p| p.port.name.as_deref() == name)
    }

    /// The port snapshot with this number and protocol.
    pub fn port_by_number(&self, port: u16, protocol: Protocol) -> Option<&PortSnapshot> {
        self.ports
            .iter()
            .find(|p| p.port.port == port && p.port.protocol == protocol)
    }
}

/// The slice port that carries a Service port.
///
/// The EndpointSlice controller names each slice port after the Service port it serves, with the
/// number resolved from that slice's pods (so a named targetPort may differ per slice); kube-proxy
/// matches on that name and protocol. Hand-written slices sometimes use the targetPort's name
/// instead, so that is tried second; a slice with no ports at all carries a numeric targetPort.
fn slice_port(slice: &EndpointSlice, sp: &ServicePort) -> Option<u16> {
    let by_name = |name: Option<&str>| {
        slice
            .ports
            .iter()
            .find(|p| p.name.as_deref() == name && p.protocol == sp.protocol)
            .map(|p| p.port)
    };
    by_name(sp.name.as_deref())
        .or_else(|| match &sp.target_port {
            TargetPort::Name(n) => by_name(Some(n)),
            TargetPort::Number(_) => None,
        })
        .or(match (&sp.target_port, slice.ports.is_empty()) {
            (TargetPort::Number(n), true) => Some(*n),
            _ => None,
        })
}

/// Builds a Service's snapshot from the Service and all of its slices.
///
/// `slices` is ordered by slice name. When two slices carry the same IP:port, the copy from the
/// first slice by name wins. kube-proxy (`EndpointSliceCache.addEndpoints`) keeps the first copy
/// it meets, overridden only by a node-local copy; it walks slices in map order, so which copy is
/// "first" is random there. We make it deterministic; the node-local override does not apply to a
/// node-agnostic store, and the copies agree in practice (they describe the same pod).
pub fn build(service: Arc<Service>, slices: &BTreeMap<Str, Arc<EndpointSlice>>) -> ServiceSnapshot {
    let routed = || {
        slices
            .values()
            .filter(|s| s.address_type != AddressType::Fqdn)
    };
    let ports = service
        .ports
        .iter()
        .map(|sp| {
            let mut seen = HashSet::new();
            let mut endpoints = Vec::new();
            for slice in routed() {
                let Some(port) = slice_port(slice, sp) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let addr = SocketAddr::new(ep.address, port);
                    if seen.insert(addr) {
                        endpoints.push(PortEndpoint {
                            addr,
                            endpoint: ep.clone(),
                        });
                    }
                }
            }
            endpoints.sort_unstable_by_key(|e| e.addr);
            PortSnapshot {
                port: sp.clone(),
                endpoints: endpoints.into(),
            }
        })
        .collect();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut all: Vec<Arc<Endpoint>> = routed()
        .flat_map(|s| s.endpoints.iter())
        .filter(|ep| seen.insert(ep.address))
        .cloned()
        .collect();
    all.sort_unstable_by_key(|e| e.address);
    ServiceSnapshot {
        service,
        ports,
        endpoints: all.into(),
    }
}
