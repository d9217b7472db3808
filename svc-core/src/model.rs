//! Our own model of Services and EndpointSlices.
//!
//! Objects from the API (or a manifests file) are converted with `TryFrom` into these
//! compact types, so that the store keeps only what routing needs and never holds
//! k8s-openapi objects. A conversion that fails gives a typed [`ModelError`]; the caller logs
//! it once and skips the object.

mod error;
mod family;
mod service;
mod slice;
mod validate;

pub use error::ModelError;
pub use family::{IpFamily, IpFamilyPolicy, Stack};
pub use service::{
    LoadBalancerIngress, Protocol, Service, ServicePort, ServiceType, SessionAffinity, TargetPort,
    TrafficDistribution, TrafficPolicy,
};
pub use slice::{
    AddressType, Conditions, Endpoint, EndpointPort, EndpointSlice, Hints, SliceKey, TargetRef,
    LAST_CHANGE_TRIGGER_TIME, SERVICE_NAME_LABEL,
};

use std::fmt;
use std::sync::Arc;

/// A cheap, shared, immutable string (one allocation, clones are a refcount bump).
pub type Str = Arc<str>;

/// Identifies a Service: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: Str,
    /// The Service's name.
    pub name: Str,
}

impl ServiceKey {
    /// Builds a key from a namespace and a name.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self {
            namespace: Str::from(namespace.as_ref()),
            name: Str::from(name.as_ref()),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests;
