//! # svc-tower
//!
//! Readiness- and latency-aware client-side balancing over live Kubernetes endpoints, for Rust
//! services: what kube-proxy, Envoy and Linkerd give, in-process, with no sidecar and no DNS
//! cache.
//!
//! - [`policy`]: which endpoints of a Service port are eligible for a client, following
//!   kube-proxy's rules (readiness, terminating fallback, traffic policies, trafficDistribution,
//!   topology hints), and `sessionAffinity: ClientIP`.
//! - [`balance`]: [`EndpointPool`], P2C over PeakEWMA with Envoy-style outlier ejection, per
//!   Service port; [`Pools`](balance::Pools) shares them; [`Discover`](balance::Discover)
//!   feeds tower's own balancers.
//! - [`connect`]: a `Service<Uri>` connector and a `Service<Name>` resolver for hyper-util's
//!   client, resolving Service names and cluster IPs to a live endpoint at connect time.
//! - [`layer`]: request-level routing for HTTP/1.1 and HTTP/2 (so gRPC): each request is
//!   balanced over per-endpoint connections, new endpoints get traffic at once and removed
//!   ones are drained.
//! - [`error`]: the small, downcastable errors the services return.
//!
//! All of it reads a [`svc_core::Store`], kept up to date from the Kubernetes API or a
//! manifests file by svc-core.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use svc_core::store::{PortRef, StoreConfig, Writer};
//! use svc_tower::balance::{BalanceConfig, EndpointPool};
//! use svc_tower::policy::{Locality, Scope};
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web, namespace: shop}
//! spec: {clusterIP: 127.0.0.77, ports: [{name: http, port: 80, targetPort: 8080}]}
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
//! addressType: IPv4
//! ports: [{name: http, port: 8080}]
//! endpoints:
//! - {addresses: [127.0.0.11], conditions: {ready: true}}
//! - {addresses: [127.0.0.12], conditions: {ready: false, serving: true, terminating: true}}
//! "#;
//! let (mut writer, store) = Writer::new(StoreConfig::default());
//! for event in svc_core::source::manifests::parse_str(yaml).unwrap().into_events() {
//!     writer.apply(event);
//! }
//! let pool = EndpointPool::new(
//!     store,
//!     svc_core::ServiceKey::new("shop", "web"),
//!     PortRef::Name(Some("http".into())),
//!     Locality::default(),
//!     Scope::Internal,
//!     BalanceConfig::default(),
//! );
//! // The terminating endpoint gets nothing while a ready one exists.
//! assert_eq!(pool.endpoints(), vec!["127.0.0.11:8080".parse().unwrap()]);
//! let pick = pool.pick(None).unwrap();
//! pick.success(std::time::Duration::from_millis(2));
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod balance;
pub mod connect;
pub mod error;
pub mod layer;
pub mod policy;
mod target;

#[cfg(test)]
mod test_support;

pub use balance::{BalanceConfig, EndpointPool, NoEndpoints, Pick};
pub use policy::{eligible, Locality, Scope};

/// svc-core, whose [`Store`] everything here reads, so that one dependency is enough.
pub use svc_core;
/// The sources that keep a [`Store`] up to date (svc-core's [`source`](svc_core::source)).
pub use svc_core::source;
/// The svc-core types that svc-tower's API takes.
pub use svc_core::{model::Protocol, store::PortRef, ServiceKey, Store, StoreConfig, Writer};
