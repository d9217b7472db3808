//! Binding listeners and accepting connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long to stop accepting after running out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds a non-blocking TCP listener on `addr` (with `SO_REUSEADDR`, and `IP_FREEBIND` when
/// `freebind`, so that an address still being added to the managed interface can be bound).
/// It is not registered with any runtime yet: the worker that accepts on it does that.
///
/// # Errors
/// The socket error.
pub fn listen(addr: SocketAddr, freebind: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if freebind {
        set_freebind(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

pub(crate) fn set_freebind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)
    } else {
        socket.set_freebind_v6(true)
    }
}

/// Whether an accept error means the process or system is out of a resource (as opposed to
/// one connection failing), so that accepting again at once would spin.
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts connections until `cancel` fires, handing each to `on_conn`. Errors never end the
/// loop: running out of file descriptors is logged and accepting backs off for 100 ms (the
/// pending connections wait in the backlog); a connection that fails during accept is skipped.
pub async fn accept_loop(
    listener: &TcpListener,
    cancel: &CancellationToken,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                on_conn(stream, peer);
            }
            Err(error) if is_resource_exhaustion(&error) => {
                tracing::warn!(addr = ?local, %error, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
                    "accept failed: out of file descriptors or memory; backing off");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
            Err(error) => tracing::debug!(addr = ?local, %error, "accept failed"),
        }
    }
}
