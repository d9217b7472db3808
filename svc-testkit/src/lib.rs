//! Test kit for `svc`: a fake Kubernetes API server, object builders and
//! backend servers.
//!
//! - [`FakeApiServer`] serves `core/v1` Services and `discovery.k8s.io/v1`
//!   EndpointSlices over real HTTP on `127.0.0.1:<random port>`, so a real
//!   [`kube::Client`] can list (with pagination) and watch them (with
//!   resume, bookmarks, streaming lists and 410 Gone after compaction).
//!   Tests mutate objects through the handle and inject faults: dropped or
//!   stalled watches, failing requests (5xx/429 with `Retry-After`),
//!   latency, compaction.
//! - [`service`] and [`endpoint_slice`] build k8s-openapi objects.
//! - [`spawn_http_backend`], [`spawn_tcp_echo`] and [`spawn_udp_echo`] start
//!   backends on loopback addresses such as `127.0.0.11`.
//!
//! # Example
//!
//! ```
//! use k8s_openapi::api::core::v1::Service;
//! use kube::api::{Api, ListParams};
//! use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer, Kind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = FakeApiServer::start().await;
//! let rv = server.apply_service(service("default", "web").cluster_ip("10.0.0.10").port("http", 80, 8080).build());
//! server.apply_slice(
//!     endpoint_slice("default", "web-1", "web")
//!         .port(Some("http"), 8080)
//!         .endpoint(EndpointSpec::new("127.0.0.11"))
//!         .build(),
//! );
//!
//! let api: Api<Service> = Api::default_namespaced(server.client());
//! let list = api.list(&ListParams::default()).await.unwrap();
//! assert_eq!(list.items.len(), 1);
//! assert_eq!(list.items[0].metadata.resource_version, Some(rv.to_string()));
//! assert_eq!(server.list_count(Kind::Service), 1);
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backends;
mod builders;
mod error;
mod faults;
pub mod grpcio;
mod kind;
mod rbac;
mod selector;
mod server;
mod store;
mod tls;

pub use backends::{
    spawn_http1_backend, spawn_http_backend, spawn_tcp_echo, spawn_udp_echo, Backend,
    BACKEND_HEADER,
};
pub use builders::{
    endpoint_slice, service, EndpointPortSpec, EndpointSliceBuilder, EndpointSpec, PortSpec,
    ServiceBuilder, LAST_CHANGE_TRIGGER_TIME, SERVICE_NAME_LABEL,
};
pub use error::{Error, Result};
pub use kind::{FakeResource, Kind};
pub use rbac::Rbac;
pub use server::FakeApiServer;
pub use tls::{spawn_tls_backend, tls_client_config, TlsBackend};
