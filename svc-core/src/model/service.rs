use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::error::{ModelError, Result};
use super::family::{self, IpFamily, IpFamilyPolicy, Stack};
use super::{validate, ServiceKey, Str};

/// The Service's `spec.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ServiceType {
    /// Reachable on its cluster IPs only.
    #[default]
    ClusterIp,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external load balancer.
    LoadBalancer,
    /// A DNS alias (CNAME) for `spec.externalName`; no endpoints, no proxying.
    ExternalName,
}

/// An L4 protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (modelled, not proxied).
    Sctp,
}

impl Protocol {
    /// Parses an optional API value; absent means TCP, as in the API defaults.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("TCP") => Ok(Self::Tcp),
            Some("UDP") => Ok(Self::Udp),
            Some("SCTP") => Ok(Self::Sctp),
            Some(other) => Err(ModelError::UnknownProtocol(other.to_string())),
        }
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// A Service port's `targetPort`: an IntOrString, so exhaustive by definition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPort {
    /// A port number on the pod.
    Number(u16),
    /// A named container port, resolved per pod (and so per EndpointSlice).
    Name(Str),
}

/// `internalTrafficPolicy` / `externalTrafficPolicy`.
///
/// Deliberately exhaustive: `Local` forbids leaving the node, so a value added later must be a
/// compile error wherever policies are applied, never a silent fallback to `Cluster`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on the client's (or receiving) node; no fallback.
    Local,
}

/// `spec.trafficDistribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrafficDistribution {
    /// `PreferClose` (the original spelling) or `PreferSameZone`: prefer endpoints in the
    /// client's zone, falling back to all.
    PreferSameZone,
    /// `PreferSameNode`: prefer endpoints on the client's node, then its zone, then all.
    PreferSameNode,
}

/// `spec.sessionAffinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SessionAffinity {
    /// Every connection is balanced independently.
    #[default]
    None,
    /// Connections from one client IP stick to one endpoint for `timeout` after last use.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800 s).
        timeout: Duration,
    },
}

/// One entry of `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// The port's name; `None` for the single unnamed port.
    pub name: Option<Str>,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: u16,
    /// Where traffic goes on the pod.
    pub target_port: TargetPort,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `appProtocol`, e.g. `http` or `kubernetes.io/h2c`.
    pub app_protocol: Option<Str>,
}

impl ServicePort {
    /// A TCP port with no nodePort and no appProtocol.
    pub fn tcp(name: Option<&str>, port: u16, target_port: TargetPort) -> Self {
        Self {
            name: name.map(Str::from),
            protocol: Protocol::Tcp,
            port,
            target_port,
            node_port: None,
            app_protocol: None,
        }
    }
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadBalancerIngress {
    /// The ingress IP, when the load balancer has one.
    pub ip: Option<IpAddr>,
    /// The ingress hostname, when it has one.
    pub hostname: Option<Str>,
}

/// A Service, as far as routing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`); empty for headless and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: DNS answers with endpoint IPs and nothing is proxied.
    pub headless: bool,
    /// `spec.ipFamilies` (from a manifest without them, the families of `cluster_ips`).
    pub ip_families: Vec<IpFamily>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: Option<IpFamilyPolicy>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.sessionAffinity` with its timeout.
    pub session_affinity: SessionAffinity,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.trafficDistribution`; unknown values are ignored, as kube-proxy does.
    pub traffic_distribution: Option<TrafficDistribution>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready_addresses: bool,
    /// `spec.externalName`, for ExternalName Services.
    pub external_name: Option<Str>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress`.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `metadata.resourceVersion`, for debugging.
    pub resource_version: Option<Str>,
}

impl Service {
    /// A ClusterIP Service with the API's defaults and no addresses or ports. Set what differs
    /// with struct update syntax: `Service { ports, ..Service::new(key) }`.
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            service_type: ServiceType::ClusterIp,
            cluster_ips: Vec::new(),
            headless: false,
            ip_families: Vec::new(),
            ip_family_policy: None,
            ports: Vec::new(),
            session_affinity: SessionAffinity::None,
            internal_traffic_policy: TrafficPolicy::Cluster,
            external_traffic_policy: TrafficPolicy::Cluster,
            traffic_distribution: None,
            publish_not_ready_addresses: false,
            external_name: None,
            external_ips: Vec::new(),
            load_balancer_ingress: Vec::new(),
            resource_version: None,
        }
    }

    /// The port with this name (`None` matches the unnamed port).
    pub fn port_by_name(&self, name: Option<&str>) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name.as_deref() == name)
    }

    /// The port with this number and protocol.
    pub fn port_by_number(&self, port: u16, protocol: Protocol) -> Option<&ServicePort> {
        self.ports
            .iter()
            .find(|p| p.port == port && p.protocol == protocol)
    }

    /// Whether connections to this Service are proxied (it has cluster IPs).
    pub fn is_proxied(&self) -> bool {
        !self.headless && self.service_type != ServiceType::ExternalName
    }

    /// Which families the Service serves: from `ip_families` and `ip_family_policy`, or,
    /// when `ip_families` is empty, from the families of `cluster_ips`.
    pub fn stack(&self) -> Stack {
        if self.ip_families.is_empty() {
            let families: Vec<IpFamily> = self
                .cluster_ips
                .iter()
                .map(|ip| IpFamily::of(*ip))
                .collect();
            return family::stack(&families, self.ip_family_policy);
        }
        family::stack(&self.ip_families, self.ip_family_policy)
    }
}

pub(super) fn parse_ip(field: &'static str, value: &str) -> Result<IpAddr> {
    value.parse().map_err(|_| ModelError::InvalidIp {
        field,
        value: value.to_string(),
    })
}

pub(super) fn parse_port(field: &'static str, value: i64) -> Result<u16> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ModelError::PortOutOfRange { field, value }),
    }
}

pub(super) fn non_empty(value: Option<&String>) -> Option<Str> {
    value
        .filter(|s| !s.is_empty())
        .map(|s| Str::from(s.as_str()))
}

pub(super) fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ServiceKey> {
    let name = non_empty(meta.name.as_ref()).ok_or(ModelError::MissingMetadata("metadata.name"))?;
    let namespace = non_empty(meta.namespace.as_ref())
        .ok_or(ModelError::MissingMetadata("metadata.namespace"))?;
    Ok(ServiceKey { namespace, name })
}

fn traffic_policy(field: &'static str, value: Option<&str>) -> Result<TrafficPolicy> {
    match value {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(ModelError::UnknownTrafficPolicy {
            field,
            value: other.to_string(),
        }),
    }
}

/// The Kubernetes default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

fn session_affinity(spec: &corev1::ServiceSpec) -> Result<SessionAffinity> {
    match spec.session_affinity.as_deref() {
        None | Some("None") => Ok(SessionAffinity::None),
        Some("ClientIP") => {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout = match secs {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(s @ 1..=86_400) => Duration::from_secs(s as u64),
                Some(s) => {
                    return Err(ModelError::InvalidSessionAffinity(format!(
                        "timeoutSeconds {s} outside 1..=86400"
                    )))
                }
            };
            Ok(SessionAffinity::ClientIp { timeout })
        }
        Some(other) => Err(ModelError::InvalidSessionAffinity(format!(
            "unknown sessionAffinity {other:?}"
        ))),
    }
}

fn service_port(p: &corev1::ServicePort) -> Result<ServicePort> {
    let port = parse_port("spec.ports[].port", p.port.into())?;
    let target_port = match &p.target_port {
        None => TargetPort::Number(port),
        Some(IntOrString::Int(n)) => {
            TargetPort::Number(parse_port("spec.ports[].targetPort", (*n).into())?)
        }
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(n) => TargetPort::Number(parse_port("spec.ports[].targetPort", n)?),
            Err(_) if s.is_empty() => TargetPort::Number(port),
            Err(_) => TargetPort::Name(Str::from(s.as_str())),
        },
    };
    let node_port = match p.node_port {
        None | Some(0) => None,
        Some(n) => Some(parse_port("spec.ports[].nodePort", n.into())?),
    };
    Ok(ServicePort {
        name: non_empty(p.name.as_ref()),
        protocol: Protocol::parse(p.protocol.as_deref())?,
        port,
        target_port,
        node_port,
        app_protocol: non_empty(p.app_protocol.as_ref()),
    })
}

impl TryFrom<&corev1::Service> for Service {
    type Error = ModelError;

    fn try_from(svc: &corev1::Service) -> Result<Self> {
        let key = object_key(&svc.metadata)?;
        validate::service_key(&key.name, &key.namespace)?;
        let spec = svc.spec.as_ref().ok_or(ModelError::MissingSpec)?;
        let service_type = match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            Some(other) => return Err(ModelError::UnknownServiceType(other.to_string())),
        };
        // clusterIPs supersedes clusterIP (its first entry is always clusterIP).
        let raw_ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            (_, Some(ip)) if !ip.is_empty() => vec![ip.as_str()],
            _ => Vec::new(),
        };
        if let (Some(ip), Some(first)) = (
            spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()),
            raw_ips.first(),
        ) {
            if ip != *first {
                return Err(ModelError::InvalidClusterIps(format!(
                    "clusterIPs[0] {first:?} differs from clusterIP {ip:?}"
                )));
            }
        }
        let headless = raw_ips.first() == Some(&"None");
        if headless && raw_ips.len() > 1 {
            return Err(ModelError::InvalidClusterIps(
                "\"None\" must be the only entry".into(),
            ));
        }
        let cluster_ips: Vec<IpAddr> = if headless || service_type == ServiceType::ExternalName {
            Vec::new()
        } else {
            raw_ips
                .iter()
                .map(|ip| parse_ip("spec.clusterIPs", ip))
                .collect::<Result<_>>()?
        };
        validate::cluster_ips(&cluster_ips)?;
        let (ip_families, ip_family_policy) = if service_type == ServiceType::ExternalName {
            // The API server clears both for ExternalName Services.
            (Vec::new(), None)
        } else {
            family::parse(
                spec.ip_families.as_deref(),
                spec.ip_family_policy.as_deref(),
                &cluster_ips,
            )?
        };
        let external_name = non_empty(spec.external_name.as_ref());
        match (&external_name, service_type) {
            (None, ServiceType::ExternalName) => return Err(ModelError::MissingExternalName),
            (Some(name), ServiceType::ExternalName) => validate::external_name(name)?,
            _ => {}
        }
        let traffic_distribution = match spec.traffic_distribution.as_deref() {
            Some("PreferClose") | Some("PreferSameZone") => {
                Some(TrafficDistribution::PreferSameZone)
            }
            Some("PreferSameNode") => Some(TrafficDistribution::PreferSameNode),
            _ => None,
        };
        let external_ips: Vec<IpAddr> = spec
            .external_ips
            .iter()
            .flatten()
            .map(|ip| parse_ip("spec.externalIPs", ip))
            .collect::<Result<_>>()?;
        validate::external_ips(&external_ips)?;
        let load_balancer_ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .map(|ing| {
                Ok(LoadBalancerIngress {
                    ip: match ing.ip.as_deref() {
                        Some(ip) if !ip.is_empty() => {
                            let ip = parse_ip("status.loadBalancer.ingress[].ip", ip)?;
                            validate::load_balancer_ip(ip)?;
                            Some(ip)
                        }
                        _ => None,
                    },
                    hostname: non_empty(ing.hostname.as_ref()),
                })
            })
            .collect::<Result<_>>()?;
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .flatten()
            .map(service_port)
            .collect::<Result<_>>()?;
        validate::service_ports(&ports, service_type)?;
        Ok(Service {
            key,
            service_type,
            cluster_ips,
            headless,
            ip_families,
            ip_family_policy,
            ports,
            session_affinity: session_affinity(spec)?,
            internal_traffic_policy: traffic_policy(
                "spec.internalTrafficPolicy",
                spec.internal_traffic_policy.as_deref(),
            )?,
            external_traffic_policy: traffic_policy(
                "spec.externalTrafficPolicy",
                spec.external_traffic_policy.as_deref(),
            )?,
            traffic_distribution,
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            external_name,
            external_ips,
            load_balancer_ingress,
            resource_version: non_empty(svc.metadata.resource_version.as_ref()),
        })
    }
}
