//! Balancing over the eligible endpoints of a Service port.
//!
//! [`EndpointPool`] follows one Service port in the store, keeps the endpoints that
//! [`policy::eligible`](crate::policy::eligible) allows, and picks among them:
//!
//! - **P2C over PeakEWMA:** two random endpoints, the one with the lower
//!   `RTT estimate × (in flight + 1)` wins (the cost of `tower::load::PeakEwma`).
//! - **Outlier ejection** with Envoy's defaults (see [`BalanceConfig`]).
//! - **Session affinity** (`ClientIP`) when the caller passes the client's address.
//! - **Fail fast:** [`NoEndpoints`] at once when nothing is eligible.
//!
//! A [`Pick`] reports back how the use went, which feeds the load estimate and ejection.
//! [`EndpointPool::stats`] exposes per-endpoint counters for metrics.

mod builder;
mod config;
mod discover;
mod endpoint;
mod outlier;
mod p2c;
mod pick;
mod pool;
mod pools;
mod rng;
#[cfg(test)]
mod tests;

pub use crate::error::{NoEndpoints, NoEndpointsReason};
pub use builder::PoolBuilder;
pub use config::BalanceConfig;
pub use discover::Discover;
pub use endpoint::EndpointStats;
pub use pick::Pick;
pub use pool::EndpointPool;
pub use pools::Pools;
