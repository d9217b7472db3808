//! # svc-tower
//!
//! Readiness- and latency-aware client-side balancing over live Kubernetes endpoints, for Rust
//! services: what kube-proxy, Envoy and Linkerd give, in-process, with no sidecar and no DNS
//! cache.
//!
//! - [`policy`]: which endpoints of a Service port are eligible for a client, following
//!   kube-proxy's rules (readiness, terminating fallback, traffic policies, trafficDistribution,
//!   topology hints), and `sessionAffinity: ClientIP`.
//! - [`balance`]: [`EndpointPool`], P2C with a rotation and a latency tolerance band, a
//!   starvation bound and Envoy-style outlier ejection, per
//!   Service port; [`Pools`](balance::Pools) shares them; [`Discover`](balance::Discover)
//!   feeds tower's own balancers.
//! - [`connect`]: a `Service<Uri>` connector and a `Service<Name>` resolver for hyper-util's
//!   client, resolving Service names and cluster IPs to a live endpoint at connect time.
//! - [`layer`]: request-level routing for HTTP/1.1 and HTTP/2 (so gRPC): each request is
//!   balanced over per-endpoint connections, new endpoints get traffic at once and removed
//!   ones are drained.
//! - [`error`]: the small, downcastable errors the services return.
//!
//! All of it reads a [`Store`], kept up to date from the Kubernetes API or a manifests file by
//! svc-core. svc-tower re-exports what its API takes ([`Store`], [`Writer`], [`StoreConfig`],
//! [`ServiceKey`], [`PortRef`], [`Protocol`]), the sources ([`source`]), kube (with the `kube`
//! feature) and svc-core itself, so that one dependency is enough.
//!
//! ## Cargo features
//!
//! - `kube` (default): svc-core's Kubernetes API source. Without it only the manifests source
//!   is built, and neither kube nor a TLS stack is compiled.
//! - `rustls-tls` (default) or `openssl-tls`, and `ring` (default) or `aws-lc-rs`: the API
//!   client's TLS and rustls' crypto provider, passed through to svc-core and so to kube.
//!
//! Like every library on k8s-openapi, svc-tower does not pick a Kubernetes version: the
//! application enables one `v1_*` feature (or `latest`) on its own k8s-openapi dependency.
//!
//! ## Live, from the Kubernetes API, through hyper-util's client
//!
//! The [`Writer`] runs in a task of its own and applies what the source sends it; the
//! [`Store`] behind the connector is a clone.
//!
//! ```no_run
//! # #[cfg(feature = "kube")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use http_body_util::Empty;
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use svc_tower::connect::SvcConnector;
//! use svc_tower::{kube, source, StoreConfig, Writer};
//! use tokio::sync::mpsc;
//!
//! let (store, writer) = svc_core::store::store(StoreConfig::default());
//! let (events, changes) = mpsc::channel(1024);
//! tokio::spawn(writer.run(changes));
//! let api = kube::Client::try_default().await?;
//! // Watch only the Services this client resolves (default: the whole cluster).
//! let config = source::kube::Config::default().scope(source::kube::Scope::OnDemand(Default::default()));
//! tokio::spawn(source::kube::run(api, config, store.clone(), events));
//!
//! let client: Client<_, Empty<Bytes>> =
//!     Client::builder(TokioExecutor::new()).build(SvcConnector::new(store));
//! let response = client.get("http://web.shop.svc.cluster.local/".parse()?).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```
//!
//! ## Live, from a manifests file or directory
//!
//! The same, followed from YAML files (reloaded when they change) instead of a cluster; this
//! one runs against a local backend.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use http_body_util::{BodyExt, Empty};
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use svc_tower::connect::SvcConnector;
//! use svc_tower::source::manifests;
//! use svc_tower::{StoreConfig, Writer};
//! use tokio::sync::mpsc;
//!
//! # let backend = svc_testkit::spawn_http_backend(([127, 210, 0, 1], 0).into()).await?;
//! # let port = backend.addr().port();
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("web.yaml"), format!(r#"
//! apiVersion: v1
//! kind: Service
//! metadata: {{name: web, namespace: shop}}
//! spec: {{clusterIP: 127.210.0.100, ports: [{{name: http, port: 80, targetPort: {port}}}]}}
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
//! addressType: IPv4
//! ports: [{{name: http, port: {port}}}]
//! endpoints: [{{addresses: [127.210.0.1], conditions: {{ready: true}}}}]
//! "#))?;
//!
//! let (store, writer) = svc_core::store::store(StoreConfig::default());
//! let (events, changes) = mpsc::channel(1024);
//! tokio::spawn(writer.run(changes));
//! // Loads the files before it returns, so that a bad path or file fails here.
//! let follow = manifests::start(dir.path().into(), manifests::Options::default(), events).await?;
//! tokio::spawn(follow);
//!
//! let client: Client<_, Empty<Bytes>> =
//!     Client::builder(TokioExecutor::new()).build(SvcConnector::new(store));
//! let response = client.get("http://web.shop/".parse()?).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(body, format!("127.210.0.1:{port}"));
//! # Ok(())
//! # }
//! ```
//!
//! ## One Service port's endpoints, by hand
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use svc_tower::{PortRef, StoreConfig, Writer};
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
//! let (store, mut writer) = svc_core::store::store(StoreConfig::default());
//! for event in svc_tower::source::manifests::parse_str(yaml).unwrap().into_events() {
//!     writer.apply(event);
//! }
//! let pool = EndpointPool::builder(
//!     store,
//!     svc_tower::ServiceKey::new("shop", "web"),
//!     PortRef::Name(Some("http".into())),
//! )
//! .locality(Locality::default())
//! .scope(Scope::Internal)
//! .config(BalanceConfig::default())
//! .build();
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
#[cfg(feature = "tonic")]
pub mod grpc;
pub mod layer;
pub mod main_first;
pub mod policy;
mod target;

#[cfg(test)]
mod test_support;

pub use balance::{BalanceConfig, EndpointPool, NoEndpoints, Pick};
pub use policy::{eligible, Locality, Scope};

/// svc-core, whose [`Store`] everything here reads, so that one dependency is enough.
pub use svc_core;
/// kube, whose `Client` the API source takes (with the `kube` feature).
#[cfg(feature = "kube")]
pub use svc_core::kube;
/// The sources that keep a [`Store`] up to date: the Kubernetes API and manifests files.
pub use svc_core::source;
/// The svc-core types that svc-tower's API takes.
pub use svc_core::{model::Protocol, store::PortRef, ServiceKey, Store, StoreConfig, Writer};
