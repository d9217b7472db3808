//! The resource kinds the fake API server serves.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A resource kind served by [`FakeApiServer`](crate::FakeApiServer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `core/v1` `Service`.
    Service,
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlice,
}

impl Kind {
    /// Both kinds, in a fixed order.
    pub const ALL: [Kind; 2] = [Kind::Service, Kind::EndpointSlice];

    /// The `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    /// The `kind` of objects of this kind.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// The `kind` of a list of objects of this kind.
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }

    /// The plural resource name used in URL paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
        }
    }

    /// Dense index, for per-kind arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Kind::Service => 0,
            Kind::EndpointSlice => 1,
        }
    }

    /// Checks that `value` deserializes as this kind's k8s-openapi type.
    pub(crate) fn validate(self, value: &serde_json::Value) -> Result<(), String> {
        fn check<T: DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
            T::deserialize(value).map(drop).map_err(|e| e.to_string())
        }
        match self {
            Kind::Service => check::<Service>(value),
            Kind::EndpointSlice => check::<EndpointSlice>(value),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for k8s_openapi::api::core::v1::Service {}
    impl Sealed for k8s_openapi::api::discovery::v1::EndpointSlice {}
}

/// A k8s-openapi type the fake API server stores: `Service` or `EndpointSlice`.
///
/// This trait is sealed.
pub trait FakeResource: Serialize + DeserializeOwned + sealed::Sealed {
    /// The kind this type is stored as.
    const KIND: Kind;
}

impl FakeResource for Service {
    const KIND: Kind = Kind::Service;
}

impl FakeResource for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
}
