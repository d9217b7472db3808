//! Builders of svc-core model objects for unit tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use svc_core::model::{
    AddressType, Conditions, Endpoint, EndpointPort, EndpointSlice, Hints, Protocol, Service,
    ServicePort, SessionAffinity, TargetPort, TrafficDistribution, TrafficPolicy,
};
use svc_core::store::{Event, PortEndpoint, PortRef, StoreConfig, Writer};
use svc_core::{ServiceKey, Store};

pub(crate) fn key() -> ServiceKey {
    ServiceKey::new("shop", "web")
}

pub(crate) fn http() -> PortRef {
    PortRef::Name(Some("http".into()))
}

/// `shop/web`, cluster IP 127.0.0.77, port `http` 80 → 8080.
pub(crate) fn service() -> Service {
    Service {
        cluster_ips: vec![[127, 0, 0, 77].into()],
        ports: vec![ServicePort {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
            app_protocol: None,
        }],
        ..Service::new(key())
    }
}

/// Shorthands for the fields tests vary.
pub(crate) trait ServiceExt {
    fn affinity(self, timeout: Duration) -> Self;
    fn internal(self, policy: TrafficPolicy) -> Self;
    fn external(self, policy: TrafficPolicy) -> Self;
    fn distribution(self, d: TrafficDistribution) -> Self;
    fn publish_not_ready(self) -> Self;
}

impl ServiceExt for Service {
    fn affinity(mut self, timeout: Duration) -> Self {
        self.session_affinity = SessionAffinity::ClientIp { timeout };
        self
    }
    fn internal(mut self, policy: TrafficPolicy) -> Self {
        self.internal_traffic_policy = policy;
        self
    }
    fn external(mut self, policy: TrafficPolicy) -> Self {
        self.external_traffic_policy = policy;
        self
    }
    fn distribution(mut self, d: TrafficDistribution) -> Self {
        self.traffic_distribution = Some(d);
        self
    }
    fn publish_not_ready(mut self) -> Self {
        self.publish_not_ready_addresses = true;
        self
    }
}

/// An endpoint at 127.0.0.`last`.
#[derive(Clone, Debug)]
pub(crate) struct Ep(pub(crate) Endpoint);

pub(crate) fn ep(last: u8) -> Ep {
    Ep(Endpoint {
        address: IpAddr::from([127, 0, 0, last]),
        conditions: Conditions::default(),
        zone: None,
        node_name: None,
        hints: None,
        target_ref: None,
        hostname: None,
    })
}

impl Ep {
    pub(crate) fn cond(mut self, ready: bool, serving: bool, terminating: bool) -> Self {
        self.0.conditions = Conditions {
            ready,
            serving,
            terminating,
        };
        self
    }
    pub(crate) fn not_ready(self) -> Self {
        self.cond(false, false, false)
    }
    /// Terminating but still serving (a pod draining during a rollout).
    pub(crate) fn draining(self) -> Self {
        self.cond(false, true, true)
    }
    pub(crate) fn node(mut self, node: &str) -> Self {
        self.0.node_name = Some(node.into());
        self
    }
    pub(crate) fn zone(mut self, zone: &str) -> Self {
        self.0.zone = Some(zone.into());
        self
    }
    pub(crate) fn hint_zones(mut self, zones: &[&str]) -> Self {
        let mut h = self.0.hints.as_deref().cloned().unwrap_or_default();
        h.for_zones = zones.iter().map(|z| (*z).into()).collect();
        self.0.hints = Some(Arc::new(h));
        self
    }
    pub(crate) fn hint_nodes(mut self, nodes: &[&str]) -> Self {
        let mut h: Hints = self.0.hints.as_deref().cloned().unwrap_or_default();
        h.for_nodes = nodes.iter().map(|n| (*n).into()).collect();
        self.0.hints = Some(Arc::new(h));
        self
    }
    pub(crate) fn port_endpoint(&self) -> PortEndpoint {
        PortEndpoint {
            addr: SocketAddr::new(self.0.address, 8080),
            endpoint: Arc::new(self.0.clone()),
        }
    }
}

/// Port endpoints sorted by address, as the store gives them.
pub(crate) fn port_endpoints(eps: &[Ep]) -> Vec<PortEndpoint> {
    let mut v: Vec<_> = eps.iter().map(Ep::port_endpoint).collect();
    v.sort_by_key(|e| e.addr);
    v
}

/// The slice `web-1` of `shop/web` with these endpoints on port `http` 8080.
pub(crate) fn slice(eps: &[Ep]) -> EndpointSlice {
    EndpointSlice {
        key: ServiceKey::new("shop", "web-1"),
        service: key(),
        address_type: AddressType::IPv4,
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        endpoints: eps.iter().map(|e| Arc::new(e.0.clone())).collect(),
        last_change_trigger_time: None,
    }
}

/// A synced store holding `svc` with `eps`.
pub(crate) fn store_with(svc: Service, eps: &[Ep]) -> (Writer, Store) {
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    writer.apply(Event::ReplaceServices {
        services: vec![svc],
        retain: vec![],
    });
    writer.apply(Event::ReplaceSlices {
        slices: vec![slice(eps)],
        retain: vec![],
    });
    (writer, store)
}

pub(crate) fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([127, 0, 0, last]), 8080)
}
