//! The error type of this crate.

use std::io;
use std::net::SocketAddr;

/// Errors from starting servers and building clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding a listening socket failed.
    #[error("failed to bind {addr}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// kube rejected the client configuration.
    #[error("failed to build a kube client")]
    Client(#[source] kube::Error),
    /// A TLS backend's certificate or configuration could not be made.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// An object could not be stored (no name, or not a valid object of its kind).
    #[error("invalid object: {0}")]
    InvalidObject(String),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
