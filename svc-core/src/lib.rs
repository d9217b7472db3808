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
//! let (mut writer, store) = Writer::new(StoreConfig::default());
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
#![forbid(unsafe_code)]

pub mod model;
pub mod name;
pub mod source;
pub mod store;

pub use model::{ModelError, ServiceKey};
pub use store::{Store, StoreConfig, Writer};
