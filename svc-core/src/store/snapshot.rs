//! The per-Service snapshot readers see, and the pure merge that builds it.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use crate::model::{
    AddressType, Endpoint, EndpointSlice, IpFamily, Protocol, Service, ServicePort, Stack, Str,
    TargetPort,
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
    /// The endpoints merged from the Service's slices, sorted by `addr` (so IPv4 before
    /// IPv6); which families they include depends on how the port was reached (see
    /// [`ServiceSnapshot::ports_at`]).
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
    /// One entry per `service.ports`, in the same order, with the endpoints a client reaches
    /// by the Service's name: those of every family the Service serves (see
    /// [`Service::stack`]).
    pub ports: Vec<PortSnapshot>,
    /// Every endpoint of the Service regardless of port, unique per IP (for DNS, notably of
    /// headless Services), sorted by address.
    pub endpoints: Arc<[Arc<Endpoint>]>,
    /// For a dual-stack Service, `ports` as reached at an IPv4 and at an IPv6 address, each
    /// with that family's endpoints only; `None` when every address reaches `ports`.
    by_family: Option<ByFamily>,
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

    /// The ports as reached at an address of `family`: a cluster IP, an external or
    /// load-balancer IP, or a node address for a NodePort. On a dual-stack Service each has
    /// that family's endpoints only, as kube-proxy's per-family proxiers give them; otherwise
    /// these are [`Self::ports`].
    pub fn ports_at(&self, family: IpFamily) -> &[PortSnapshot] {
        match (&self.by_family, family) {
            (Some(split), IpFamily::V4) => &split[0],
            (Some(split), IpFamily::V6) => &split[1],
            (None, _) => &self.ports,
        }
    }

    /// The port with this number and protocol as reached at an address of `family` (see
    /// [`Self::ports_at`]).
    pub fn port_at(
        &self,
        port: u16,
        protocol: Protocol,
        family: IpFamily,
    ) -> Option<&PortSnapshot> {
        self.ports_at(family)
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

/// The ranges of IPv4 and of IPv6 endpoints in an address-sorted list (`SocketAddr` orders
/// every IPv4 address before every IPv6 one).
fn family_ranges(endpoints: &[PortEndpoint]) -> [Range<usize>; 2] {
    let split = endpoints.partition_point(|e| e.addr.is_ipv4());
    [0..split, split..endpoints.len()]
}

/// `all[range]`, sharing `all` when the range covers it.
fn part(all: &Arc<[PortEndpoint]>, range: Range<usize>) -> Arc<[PortEndpoint]> {
    if range.len() == all.len() {
        all.clone()
    } else {
        all[range].into()
    }
}

fn with_endpoints(port: &PortSnapshot, endpoints: Arc<[PortEndpoint]>) -> PortSnapshot {
    PortSnapshot {
        port: port.port.clone(),
        endpoints,
    }
}

/// Builds a Service's snapshot from the Service and all of its slices.
///
/// **Families.** kube-proxy runs one proxier per family, and each sees only its family's
/// slices, so a dual-stack Service's IPv4 addresses reach its IPv4 endpoints and its IPv6
/// addresses its IPv6 endpoints. The snapshot keeps both views ([`ServiceSnapshot::ports_at`])
/// and, by name, all of them (a client resolving the name may get either cluster IP). A
/// single-stack Service reaches its own family's endpoints, as its kube-proxy would; but when
/// a port has none of its family and some of the other (a hand-written manifest with IPv6
/// endpoints behind an IPv4 cluster IP), it keeps them, since a proxy in user space can
/// reach them and that is what it did before families were split. Nothing is split for a
/// Service whose endpoints are all of one family.
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
    let (ports, by_family) = split_families(service.stack(), ports);
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
        by_family,
    }
}

/// The ports of a dual-stack Service as reached at an IPv4 and at an IPv6 address.
type ByFamily = Box<[Vec<PortSnapshot>; 2]>;

/// `ports` by name and, for a dual-stack Service, by family; see [`build`].
fn split_families(stack: Stack, ports: Vec<PortSnapshot>) -> (Vec<PortSnapshot>, Option<ByFamily>) {
    match stack {
        Stack::Dual => {
            let mut v4 = Vec::with_capacity(ports.len());
            let mut v6 = Vec::with_capacity(ports.len());
            for p in &ports {
                let [r4, r6] = family_ranges(&p.endpoints);
                v4.push(with_endpoints(p, part(&p.endpoints, r4)));
                v6.push(with_endpoints(p, part(&p.endpoints, r6)));
            }
            (ports, Some(Box::new([v4, v6])))
        }
        Stack::Single(family) => {
            let own = |p: PortSnapshot| {
                let [r4, r6] = family_ranges(&p.endpoints);
                let (mine, other) = match family {
                    IpFamily::V4 => (r4, r6),
                    IpFamily::V6 => (r6, r4),
                };
                if mine.is_empty() || other.is_empty() {
                    p
                } else {
                    let endpoints = part(&p.endpoints, mine);
                    with_endpoints(&p, endpoints)
                }
            };
            (ports.into_iter().map(own).collect(), None)
        }
        Stack::Unknown => (ports, None),
    }
}

#[cfg(test)]
mod tests;
