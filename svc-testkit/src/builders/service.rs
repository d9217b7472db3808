//! `Service` builder.

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
    ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{insert, object_meta, strings};

/// Starts building a `ClusterIP` Service with no cluster IP and no ports.
///
/// ```
/// use svc_testkit::{service, PortSpec};
///
/// let svc = service("default", "web")
///     .cluster_ip("10.0.0.10")
///     .port("http", 80, 8080)
///     .port_spec(PortSpec::new(9090).name("grpc").target_port_name("grpc-port").app_protocol("kubernetes.io/h2c"))
///     .build();
/// assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 2);
/// ```
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder {
        service: Service {
            metadata: object_meta(namespace, name),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                session_affinity: Some("None".into()),
                ..ServiceSpec::default()
            }),
            status: None,
        },
    }
}

/// One Service port. Defaults: protocol `TCP`, `targetPort` = `port`.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    port: ServicePort,
}

impl PortSpec {
    /// A TCP port, unnamed, targeting the same port number.
    pub fn new(port: i32) -> Self {
        Self {
            port: ServicePort {
                port,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            },
        }
    }

    /// Sets the port name.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.port.name = Some(name.into());
        self
    }

    /// Sets the protocol (`TCP`, `UDP` or `SCTP`).
    #[must_use]
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.port.protocol = Some(protocol.into());
        self
    }

    /// Targets a port number on the endpoints.
    #[must_use]
    pub fn target_port(mut self, port: i32) -> Self {
        self.port.target_port = Some(IntOrString::Int(port));
        self
    }

    /// Targets a named container port, resolved through EndpointSlice port names.
    #[must_use]
    pub fn target_port_name(mut self, name: &str) -> Self {
        self.port.target_port = Some(IntOrString::String(name.into()));
        self
    }

    /// Sets the node port.
    #[must_use]
    pub fn node_port(mut self, node_port: i32) -> Self {
        self.port.node_port = Some(node_port);
        self
    }

    /// Sets `appProtocol` (e.g. `http`, `kubernetes.io/h2c`).
    #[must_use]
    pub fn app_protocol(mut self, app_protocol: &str) -> Self {
        self.port.app_protocol = Some(app_protocol.into());
        self
    }
}

impl From<PortSpec> for ServicePort {
    fn from(spec: PortSpec) -> Self {
        let mut port = spec.port;
        port.target_port.get_or_insert(IntOrString::Int(port.port));
        port
    }
}

/// Builds a `Service`; see [`service`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBuilder {
    service: Service,
}

fn family(ip: &str) -> String {
    if ip.contains(':') { "IPv6" } else { "IPv4" }.to_owned()
}

impl ServiceBuilder {
    fn spec(&mut self) -> &mut ServiceSpec {
        self.service.spec.get_or_insert_with(ServiceSpec::default)
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.service.metadata.labels, key, value);
        self
    }

    /// Adds an annotation.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.service.metadata.annotations, key, value);
        self
    }

    /// Adds a pod selector entry.
    #[must_use]
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        insert(&mut self.spec().selector, key, value);
        self
    }

    /// Sets `spec.type` (`ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`).
    #[must_use]
    pub fn type_(mut self, type_: &str) -> Self {
        self.spec().type_ = Some(type_.into());
        self
    }

    /// Sets a single cluster IP (`clusterIP`, `clusterIPs`, `ipFamilies`).
    #[must_use]
    pub fn cluster_ip(self, ip: &str) -> Self {
        self.cluster_ips(&[ip])
    }

    /// Sets the cluster IPs, primary first; two IPs make a dual-stack Service
    /// (`ipFamilyPolicy: RequireDualStack`).
    #[must_use]
    pub fn cluster_ips(mut self, ips: &[&str]) -> Self {
        let spec = self.spec();
        spec.cluster_ip = ips.first().map(|ip| (*ip).to_owned());
        spec.cluster_ips = Some(strings(ips));
        spec.ip_families = Some(ips.iter().map(|ip| family(ip)).collect());
        let policy = if ips.len() > 1 {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.ip_family_policy = Some(policy.into());
        self
    }

    /// Makes the Service headless (`clusterIP: None`).
    #[must_use]
    pub fn headless(mut self) -> Self {
        let spec = self.spec();
        spec.cluster_ip = Some("None".into());
        spec.cluster_ips = Some(vec!["None".into()]);
        self
    }

    /// Sets `ipFamilyPolicy` (`SingleStack`, `PreferDualStack`, `RequireDualStack`).
    #[must_use]
    pub fn ip_family_policy(mut self, policy: &str) -> Self {
        self.spec().ip_family_policy = Some(policy.into());
        self
    }

    /// Adds a TCP port targeting a port number.
    #[must_use]
    pub fn port(self, name: &str, port: i32, target_port: i32) -> Self {
        self.port_spec(PortSpec::new(port).name(name).target_port(target_port))
    }

    /// Adds a TCP port targeting a named container port.
    #[must_use]
    pub fn port_named_target(self, name: &str, port: i32, target_port: &str) -> Self {
        self.port_spec(PortSpec::new(port).name(name).target_port_name(target_port))
    }

    /// Adds a port with full control over its fields.
    #[must_use]
    pub fn port_spec(mut self, port: PortSpec) -> Self {
        self.spec()
            .ports
            .get_or_insert_with(Vec::new)
            .push(port.into());
        self
    }

    /// Sets the node port of the most recently added port (no-op without ports).
    #[must_use]
    pub fn node_port(mut self, node_port: i32) -> Self {
        if let Some(last) = self.spec().ports.as_mut().and_then(|p| p.last_mut()) {
            last.node_port = Some(node_port);
        }
        self
    }

    /// Makes this an `ExternalName` Service pointing at `name`.
    #[must_use]
    pub fn external_name(mut self, name: &str) -> Self {
        let spec = self.spec();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some(name.into());
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        self
    }

    /// Sets `externalIPs`.
    #[must_use]
    pub fn external_ips(mut self, ips: &[&str]) -> Self {
        self.spec().external_ips = Some(strings(ips));
        self
    }

    /// Sets `status.loadBalancer.ingress` IPs (does not change the type).
    #[must_use]
    pub fn load_balancer_ingress(mut self, ips: &[&str]) -> Self {
        let ingress = ips
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some((*ip).to_owned()),
                ..LoadBalancerIngress::default()
            })
            .collect();
        self.service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        });
        self
    }

    /// Sets `sessionAffinity: ClientIP`, with an optional timeout in seconds.
    #[must_use]
    pub fn session_affinity_client_ip(mut self, timeout_seconds: Option<i32>) -> Self {
        let spec = self.spec();
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = timeout_seconds.map(|t| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(t),
            }),
        });
        self
    }

    /// Sets `internalTrafficPolicy` (`Cluster` or `Local`).
    #[must_use]
    pub fn internal_traffic_policy(mut self, policy: &str) -> Self {
        self.spec().internal_traffic_policy = Some(policy.into());
        self
    }

    /// Sets `externalTrafficPolicy` (`Cluster` or `Local`).
    #[must_use]
    pub fn external_traffic_policy(mut self, policy: &str) -> Self {
        self.spec().external_traffic_policy = Some(policy.into());
        self
    }

    /// Sets `trafficDistribution` (e.g. `PreferClose`, `PreferSameZone`, `PreferSameNode`).
    #[must_use]
    pub fn traffic_distribution(mut self, distribution: &str) -> Self {
        self.spec().traffic_distribution = Some(distribution.into());
        self
    }

    /// Sets `publishNotReadyAddresses`.
    #[must_use]
    pub fn publish_not_ready(mut self, publish: bool) -> Self {
        self.spec().publish_not_ready_addresses = Some(publish);
        self
    }

    /// Returns the Service.
    pub fn build(self) -> Service {
        self.service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_field() {
        let svc = service("ns", "web")
            .label("app", "web")
            .annotation("a", "b")
            .selector("app", "web")
            .type_("NodePort")
            .cluster_ips(&["10.0.0.1", "fd00::1"])
            .port("http", 80, 8080)
            .node_port(30080)
            .port_named_target("grpc", 9090, "grpc-port")
            .port_spec(
                PortSpec::new(53)
                    .name("dns")
                    .protocol("UDP")
                    .app_protocol("dns"),
            )
            .external_ips(&["192.0.2.1"])
            .load_balancer_ingress(&["198.51.100.1"])
            .session_affinity_client_ip(Some(10800))
            .internal_traffic_policy("Local")
            .external_traffic_policy("Local")
            .traffic_distribution("PreferClose")
            .publish_not_ready(true)
            .build();
        assert_eq!(svc.metadata.namespace.as_deref(), Some("ns"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(spec.ip_families, Some(vec!["IPv4".into(), "IPv6".into()]));
        assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
        let ports = spec.ports.unwrap();
        assert_eq!(ports[0].node_port, Some(30080));
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(8080)));
        assert_eq!(
            ports[1].target_port,
            Some(IntOrString::String("grpc-port".into()))
        );
        assert_eq!(ports[2].target_port, Some(IntOrString::Int(53)));
        assert_eq!(ports[2].protocol.as_deref(), Some("UDP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
        let timeout = spec
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds);
        assert_eq!(timeout, Some(10800));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap();
        assert_eq!(ingress[0].ip.as_deref(), Some("198.51.100.1"));
    }

    #[test]
    fn headless_and_external_name() {
        let headless = service("ns", "h").headless().build().spec.unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        let ext = service("ns", "e")
            .cluster_ip("10.0.0.1")
            .external_name("x.example.com")
            .build()
            .spec
            .unwrap();
        assert_eq!(ext.type_.as_deref(), Some("ExternalName"));
        assert_eq!(ext.cluster_ip, None);
        assert_eq!(ext.external_name.as_deref(), Some("x.example.com"));
    }
}
