//! TCP: listeners on Service addresses, and per-connection forwarding to a picked endpoint.
//!
//! - [`listener`]: binding and the accept loop (shared with HTTP mode), which survives running
//!   out of file descriptors. The workers ([`crate::workers`]) run it and hand each connection
//!   to [`forward::forward`].
//! - [`forward`]: pick, connect with retry on another endpoint, then copy.
//! - [`copy`]: the bidirectional copy with half-close, idle timeout and bounded buffers.

pub mod copy;
pub mod forward;
pub mod listener;

pub use listener::{accept_loop, listen};
