//! One UDP flow: a connected socket to its endpoint, and the task relaying the endpoint's
//! replies back to the client.
//!
//! A flow owns no buffer. Datagrams are read into one scratch buffer per thread, right after
//! the socket reports readable and with no `.await` until the datagram is sent on, so an idle
//! flow costs its socket, its table entry and a small task (a few hundred bytes), not the
//! 64 KiB a per-flow buffer would (65 KB × 14,800 flows took RSS to 1 GB).

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::table::Activity;
use crate::limits::FlowSlot;
use crate::metrics::UdpDrop;
use crate::target::Target;

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice());
}

/// Runs `f` with this thread's datagram buffer. `f` must not await (it cannot: it is not
/// async), so one buffer per thread serves every socket on it.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|b| f(&mut b.borrow_mut()))
}

/// Sends on a socket without waiting for tokio's readiness state: a socket created this
/// instant has not had its first readiness event yet, and tokio's `try_send` then reports
/// `WouldBlock` without trying, which dropped the first datagram of every flow. A UDP send
/// only blocks when the socket buffer is full; then the datagram is dropped, as the network
/// would drop it.
pub(crate) fn send_now(
    socket: &UdpSocket,
    buf: &[u8],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    let sock = SockRef::from(socket);
    match to {
        Some(addr) => sock.send_to(buf, &addr.into()),
        None => sock.send(buf),
    }
}

/// Nanoseconds since the listener started: the flow's activity stamp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    pub(crate) fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A live flow, as the listener's table holds it.
pub(crate) struct Flow {
    pub(crate) endpoint: SocketAddr,
    pub(crate) upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    relay: AbortHandle,
    _slot: FlowSlot,
}

impl Activity for Flow {
    fn last_active(&self) -> u64 {
        self.last.load(Relaxed)
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl Flow {
    /// Forwards one client datagram to the endpoint.
    pub(crate) fn forward(&self, datagram: &[u8], clock: Clock, target: &Target) {
        self.last.store(clock.now(), Relaxed);
        match send_now(&self.upstream, datagram, None) {
            Ok(_) => {
                target.metrics.rx.inc_by(datagram.len() as u64);
            }
            Err(error) => {
                target.metrics.udp_dropped(UdpDrop::Send);
                tracing::debug!(service = %target.service, endpoint = %self.endpoint, %error,
                    "udp send failed; datagram dropped");
            }
        }
    }
}

/// What a new flow needs from its listener.
pub(crate) struct Opening<'a> {
    pub(crate) target: &'a Arc<Target>,
    pub(crate) listener: &'a Arc<UdpSocket>,
    pub(crate) client: SocketAddr,
    pub(crate) endpoint: SocketAddr,
    pub(crate) clock: Clock,
    /// Where the relay says it ended (idle), with the flow's id.
    pub(crate) ended: &'a mpsc::UnboundedSender<(SocketAddr, u64)>,
    pub(crate) id: u64,
}

/// Opens a socket connected to the endpoint and starts relaying its replies.
///
/// # Errors
/// The socket could not be created or connected (e.g. out of file descriptors).
pub(crate) fn open(o: Opening<'_>, slot: FlowSlot) -> io::Result<Flow> {
    let unspecified: IpAddr = match o.endpoint {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    // Plain std calls: binding and connecting a UDP socket never block.
    let socket = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    socket.connect(o.endpoint)?;
    socket.set_nonblocking(true)?;
    let upstream = Arc::new(UdpSocket::from_std(socket)?);
    let last = Arc::new(AtomicU64::new(o.clock.now()));
    let relay = tokio::spawn({
        let relay = Relay {
            upstream: upstream.clone(),
            listener: o.listener.clone(),
            client: o.client,
            last: last.clone(),
            clock: o.clock,
            target: o.target.clone(),
        };
        let (ended, id, client) = (o.ended.clone(), o.id, o.client);
        async move {
            relay.run().await;
            // Idle: tell the listener to forget the flow.
            let _ = ended.send((client, id));
        }
    });
    Ok(Flow {
        endpoint: o.endpoint,
        upstream,
        last,
        relay: relay.abort_handle(),
        _slot: slot,
    })
}

struct Relay {
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    clock: Clock,
    target: Arc<Target>,
}

impl Relay {
    /// Relays replies from the endpoint to the client until the flow is idle.
    async fn run(self) {
        let idle = self.target.ctx.args.udp_idle_timeout;
        loop {
            let deadline = self.clock.0 + Duration::from_nanos(self.last.load(Relaxed)) + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                readable = self.upstream.readable() => {
                    if readable.is_err() {
                        return;
                    }
                    self.relay_ready();
                }
            }
        }
    }

    /// Sends on every datagram the endpoint socket holds now.
    fn relay_ready(&self) {
        loop {
            let relayed = with_scratch(|buf| {
                let n = self.upstream.try_recv(buf)?;
                Ok::<_, io::Error>((n, send_now(&self.listener, &buf[..n], Some(self.client))))
            });
            match relayed {
                Ok((n, Ok(_))) => {
                    self.last.store(self.clock.now(), Relaxed);
                    self.target.metrics.tx.inc_by(n as u64);
                }
                // The client's socket buffer is full: this reply is lost, as on a network.
                Ok((_, Err(error))) => {
                    tracing::debug!(client = %self.client, %error, "udp reply not relayed");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable from the endpoint and the like: the flow goes on.
                Err(error) => {
                    tracing::debug!(client = %self.client, %error, "udp receive from endpoint failed");
                    let endpoint = self.upstream.peer_addr().unwrap_or(self.client);
                    self.target.metrics.endpoint(endpoint).errors.inc();
                }
            }
        }
    }
}
