use thiserror::Error;

/// Why an object from the API or a manifest could not be turned into our model.
///
/// Every variant names the field at fault; the object is skipped and everything else keeps
/// working.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
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
}

/// A `Result` whose error is [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
