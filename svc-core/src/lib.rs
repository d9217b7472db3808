//! # svc-core
//!
//! Live *Service name → ClusterIP → endpoints* state, kept from the Kubernetes API (or a
//! manifests file) instead of cached DNS answers.
//!
//! - [`model`]: our own compact types, converted from k8s-openapi objects with `TryFrom`.
//! - [`store`]: a [`Writer`] that applies changes incrementally and a cloneable, read-only
//!   [`Store`] with lookups by name, by ClusterIP:port and by NodePort, per-port subscriptions
//!   and a whole-store change feed.
//! - [`source`]: the Kubernetes watch source and the manifests source; both feed a `Writer`.
//!
//! ## Cargo features
//!
//! - `kube` (default): the Kubernetes API source, `source::kube`. Without it only the
//!   manifests source is built, and neither kube nor a TLS stack is compiled.
//! - `rustls-tls` (default) or `openssl-tls`: the API client's TLS, and `ring` (default) or
//!   `aws-lc-rs`: rustls' crypto provider. All are passed through to kube's features of the
//!   same names.
//!
//! Like every library on k8s-openapi, svc-core does not pick a Kubernetes version: the
//! application enables one `v1_*` feature (or `latest`) on its own k8s-openapi dependency.
//!
//! ## Manifests, applied by hand
//!
//! ```
//! use svc_core::store::{Event, StoreConfig, Writer};
//! use svc_core::source::manifests;
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
//! endpoints: [{addresses: [127.0.0.11], conditions: {ready: true}}]
//! "#;
//! let (store, mut writer) = svc_core::store::store(StoreConfig::default());
//! let parsed = manifests::parse_str(yaml).unwrap();
//! for event in parsed.into_events() {
//!     writer.apply(event);
//! }
//! let web = store.resolve_name("web.shop.svc.cluster.local").unwrap();
//! assert_eq!(web.ports[0].endpoints[0].addr.to_string(), "127.0.0.11:8080");
//! let by_ip = store
//!     .lookup_vip("127.0.0.77".parse().unwrap(), 80, svc_core::model::Protocol::Tcp)
//!     .unwrap();
//! assert_eq!(by_ip.service.service.key.name.as_ref(), "web");
//! ```
//!
//! ## Live, from the Kubernetes API
//!
//! The [`Writer`] runs in a task of its own and applies what the source sends it; the
//! [`Store`] is cloned to every reader.
//!
//! ```no_run
//! # #[cfg(feature = "kube")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use svc_core::{source, StoreConfig, Writer};
//! use tokio::sync::mpsc;
//!
//! let client = kube::Client::try_default().await?;
//! let (store, writer) = svc_core::store::store(StoreConfig::default());
//! let (events, changes) = mpsc::channel(1024);
//! tokio::spawn(writer.run(changes));
//!
//! // Watch only the Services this app resolves (default: the whole cluster).
//! let config = source::kube::Config::default().scope(source::kube::Scope::OnDemand(Default::default()));
//! tokio::spawn(source::kube::run(client, config, store.clone(), events));
//!
//! // Starts watching the name and waits, bounded, for its first lists; fails with the
//! // source's error (a 403 names the missing verb) rather than waiting it out.
//! let name = "web.shop.svc.cluster.local";
//! store.ready_for(name, std::time::Duration::from_secs(2)).await?;
//! if let Some(web) = store.resolve_name(name) {
//!     println!("{:?}", web.ports[0].endpoints);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Live, from a manifests file or directory
//!
//! The same store, followed from YAML files (reloaded when they change) instead of a cluster.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use svc_core::source::manifests;
//! use svc_core::{StoreConfig, Writer};
//! use tokio::sync::mpsc;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(
//!     dir.path().join("web.yaml"),
//!     "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
//!      spec: {clusterIP: 127.0.0.77, ports: [{port: 80}]}\n",
//! )?;
//!
//! let (store, writer) = svc_core::store::store(StoreConfig::default());
//! let (events, changes) = mpsc::channel(1024);
//! tokio::spawn(writer.run(changes));
//! // Loads the files before it returns, so that a bad path or file fails here.
//! let follow = manifests::start(dir.path().into(), manifests::Options::default(), events).await?;
//! tokio::spawn(follow);
//!
//! store.wait_until_ready().await;
//! assert!(store.resolve_name("web.shop").is_some());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod model;
pub mod name;
pub mod source;
pub mod store;

/// kube, whose `Client` the API source takes, so that apps need no dependency of their own.
#[cfg(feature = "kube")]
pub use kube;
pub use model::{ModelError, ServiceKey};
pub use store::{Store, StoreConfig, Writer};
