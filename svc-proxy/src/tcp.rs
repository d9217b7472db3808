//! TCP: listeners on Service addresses, and per-connection forwarding to a picked endpoint.
//!
//! - [`listener`]: binding and the accept loop (shared with HTTP mode), which survives running
//!   out of file descriptors. The workers ([`crate::workers`]) run it and hand each connection
//!   to [`forward::forward`].
//! - [`forward`]: pick, connect with retry on another endpoint, then copy.
//! - [`copy`]: the bidirectional copy with half-close, idle timeout and bounded buffers,
//!   lent per burst from [`buffers`].

pub mod buffers;
pub mod copy;
pub mod forward;
pub mod listener;

pub use listener::{accept_loop, listen};

use tokio::net::TcpStream;

use crate::target::Target;

/// Whether a connection just accepted must be refused because the proxy is above
/// `--memory-ceiling`. A refused connection is counted and reset when dropped: the client
/// learns at once, and the socket leaves no TIME_WAIT behind.
pub(crate) fn refused(stream: &TcpStream, target: &Target) -> bool {
    if !target.ctx.limits.memory.exceeded() {
        return false;
    }
    forward::reset(stream);
    target.metrics.refused_above_memory_ceiling();
    true
}
