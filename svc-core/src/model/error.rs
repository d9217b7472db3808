use thiserror::Error;

/// Why an object from the API or a manifest could not be turned into our model.
///
/// Every variant names the field at fault; the object is skipped and everything else keeps
/// working.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// `metadata.name` or `metadata.namespace` is missing or empty.
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// An IP address field did not parse.
    #[error("{field}: invalid IP address {value:?}")]
    InvalidIp {
        /// The field that held the address.
        field: &'static str,
        /// The text that failed to parse.
        value: String,
    },
    /// A port number is outside 1..=65535.
    #[error("{field}: port {value} out of range 1..=65535")]
    PortOutOfRange {
        /// The field that held the port.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A protocol other than TCP, UDP or SCTP.
    #[error("unknown protocol {0:?}")]
    UnknownProtocol(String),
    /// A Service type other than ClusterIP, NodePort, LoadBalancer or ExternalName.
    #[error("unknown service type {0:?}")]
    UnknownServiceType(String),
    /// A traffic policy other than Cluster or Local.
    #[error("{field}: unknown traffic policy {value:?}")]
    UnknownTrafficPolicy {
        /// `internalTrafficPolicy` or `externalTrafficPolicy`.
        field: &'static str,
        /// The value found.
        value: String,
    },
    /// A sessionAffinity other than None or ClientIP, or a timeout outside 1..=86400.
    #[error("invalid session affinity: {0}")]
    InvalidSessionAffinity(String),
    /// A Service of type ExternalName without `spec.externalName`.
    #[error("ExternalName service without spec.externalName")]
    MissingExternalName,
    /// The Service has no spec.
    #[error("service has no spec")]
    MissingSpec,
    /// An EndpointSlice without the `kubernetes.io/service-name` label.
    #[error("endpoint slice has no kubernetes.io/service-name label")]
    MissingServiceName,
    /// An EndpointSlice addressType other than IPv4, IPv6 or FQDN.
    #[error("unknown addressType {0:?}")]
    UnknownAddressType(String),
    /// An EndpointSlice port without a port number.
    #[error("endpoint slice port {0:?} has no port number")]
    MissingPortNumber(String),
    /// Two ports share a port number and protocol (or a nodePort and protocol). The API server
    /// refuses this: one socket cannot serve two ports.
    #[error("{field}[{index}]: duplicate port {port}/{protocol} (already in {field}[{first}])")]
    DuplicatePort {
        /// `spec.ports` or `spec.ports[].nodePort`.
        field: &'static str,
        /// The port number.
        port: u16,
        /// Its protocol.
        protocol: &'static str,
        /// The index of the first port with it.
        first: usize,
        /// The index of the duplicate.
        index: usize,
    },
    /// Two ports share a name, so a named lookup (SRV, EndpointSlice ports) is ambiguous.
    #[error("{field}[{index}].name: duplicate name {name:?} (already in {field}[{first}])")]
    DuplicatePortName {
        /// `spec.ports` or an EndpointSlice's `ports`.
        field: &'static str,
        /// The name.
        name: String,
        /// The index of the first port with it.
        first: usize,
        /// The index of the duplicate.
        index: usize,
    },
    /// A Service with more than one port has an unnamed one.
    #[error("spec.ports[{index}].name: required when a Service has more than one port")]
    MissingPortName {
        /// The index of the unnamed port.
        index: usize,
    },
    /// A name (port name, named targetPort, externalName) that the API would refuse.
    #[error("{field}: invalid name {value:?}: {reason}")]
    InvalidName {
        /// The field that held the name.
        field: &'static str,
        /// The name found.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A nodePort on a ClusterIP or ExternalName Service, which has no node ports.
    #[error(
        "spec.ports[{index}].nodePort: not allowed when spec.type is ClusterIP or ExternalName"
    )]
    NodePortNotAllowed {
        /// The index of the port.
        index: usize,
    },
    /// An address that may not be used in this field: unspecified (`0.0.0.0`, `::`), which
    /// would listen on every interface or connect to this host, multicast, broadcast, or (for
    /// externalIPs) link-local.
    #[error("{field}: {ip} {reason}")]
    ForbiddenIp {
        /// The field that held the address.
        field: &'static str,
        /// The address.
        ip: std::net::IpAddr,
        /// Why it may not be used.
        reason: &'static str,
    },
    /// `spec.clusterIPs` breaks the dual-stack rules (more than two, two of one family, or not
    /// starting with `spec.clusterIP`).
    #[error("spec.clusterIPs: {0}")]
    InvalidClusterIps(String),
    /// `spec.ipFamilies` or `spec.ipFamilyPolicy` is unknown or disagrees with the cluster
    /// IPs (more than two families, one twice, `ipFamilies[i]` not the family of
    /// `clusterIPs[i]`, or two families under `SingleStack`).
    /// The message starts with the field at fault.
    #[error("{0}")]
    InvalidIpFamilies(String),
}

/// A `Result` whose error is [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
