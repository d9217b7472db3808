//! The proxy's error type.

use std::net::SocketAddr;

use thiserror::Error;

/// Why the proxy could not start or had to stop.
#[derive(Debug, Error)]
pub enum Error {
    /// A listening socket could not be set up.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The manifests could not be loaded.
    #[error("manifests source: {0}")]
    Manifests(#[from] svc_core::source::manifests::Error),
    /// No Kubernetes client could be configured (no kubeconfig and not in a cluster).
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The managed interface could not be found or created.
    #[error("interface {name}: {message}")]
    Interface {
        /// The interface name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The DNS forwarder could not be configured.
    #[error("dns forwarder: {0}")]
    Forwarder(String),
    /// The connection-serving threads could not be started.
    #[error("starting worker threads: {0}")]
    Workers(std::io::Error),
    /// A task the proxy depends on stopped unexpectedly.
    #[error("{0} stopped unexpectedly")]
    TaskStopped(&'static str),
}

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
