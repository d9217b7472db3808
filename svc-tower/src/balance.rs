//! Balancing over the eligible endpoints of a Service port.
//!
//! [`EndpointPool`] follows one Service port in the store, keeps the endpoints that
//! [`policy::eligible`](crate::policy::eligible) allows, and picks among them:
//!
//! - **P2C with a rotation and a tolerance band:** one candidate comes from a rotation over
//!   the endpoints, the other at random. Latencies (each endpoint's last 7 answers) that are
//!   alike within a tolerance band count as equal, and then requests in flight decide; a
//!   full tie goes to the rotation's candidate. Equal endpoints get an even spread even under
//!   serial traffic, a really slower one loses, and a new one gets the very next pick. A
//!   proxy that holds each [`Pick`] for a whole TCP flow balances open connections.
//! - **No starvation:** an endpoint passed over for more than
//!   [`starvation_picks`](BalanceConfig::starvation_picks) picks wins its next comparison.
//! - **Failures cost:** a failure streak loses every comparison against an endpoint without
//!   one, and feeds outlier ejection with Envoy's defaults (see [`BalanceConfig`]).
//! - **Slow start** (opt-in, Envoy's semantics): see [`SlowStart`].
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
pub use config::{BalanceConfig, SlowStart};
pub use discover::Discover;
pub use endpoint::EndpointStats;
pub use pick::Pick;
pub use pool::EndpointPool;
pub use pools::{Pools, PoolsBuilder};
