//! # svc-tower
//!
//! Readiness- and latency-aware client-side balancing over live Kubernetes endpoints.
//!
//! - [`policy`]: which endpoints of a Service port are eligible for a client, following
//!   kube-proxy's rules (readiness, terminating fallback, traffic policies, trafficDistribution,
//!   topology hints).
#![forbid(unsafe_code)]

pub mod policy;

pub use policy::{eligible, Locality, Scope};
