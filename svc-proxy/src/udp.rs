//! UDP: per-client flows with idle expiry, re-picks and ceilings.
//!
//! Each client address gets a flow (`udp::flow`): a socket connected to one picked endpoint, and a
//! task that relays the endpoint's replies back from the Service address. A flow ends when it
//! is idle for `--udp-idle-timeout`. When its endpoint stops being eligible (removed, not
//! ready, or filtered out by policy), the flow is dropped and the client's next datagram is
//! balanced afresh, so a client never keeps sending into a dead endpoint (the conntrack
//! blackhole that kube-proxy clears by flushing conntrack entries).
//!
//! - **First datagram.** A new flow's first datagram is sent at once on the fresh socket (see
//!   `flow::send_now`): every DNS query is a new flow, so losing it would fail every query's
//!   first try.
//! - **Ceilings** (`udp::table`, [`crate::limits`]): at most `--udp-max-flows-per-client` flows
//!   per client IP on a listener and `--udp-max-flows` in the whole proxy; reaching either
//!   evicts an old, idle flow rather than refusing the new one. Above `--memory-ceiling`, new
//!   flows are refused. Every datagram not forwarded is counted by reason
//!   (`svc_proxy_udp_datagrams_dropped_total`).
//! - **No endpoints.** While nothing is eligible, the listening socket is closed, so the
//!   kernel answers clients with ICMP port unreachable at once, as kube-proxy's REJECT rule
//!   does, instead of letting every query time out; it is bound again when endpoints return.

mod flow;
mod table;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{UdpDrop, UdpEviction};
use crate::target::Target;
use flow::{Clock, Flow, Opening};
use table::FlowTable;

/// Datagrams handled per wake-up before the listener yields to its other work.
const BATCH: usize = 64;
/// How soon a listening socket that could not be bound again is retried.
const REBIND_RETRY: Duration = Duration::from_secs(1);

/// Binds a UDP socket on `addr` (`IP_FREEBIND` when `freebind`).
///
/// # Errors
/// The socket error.
pub fn bind(addr: SocketAddr, freebind: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if freebind {
        crate::tcp::listener::set_freebind(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// One listener's state.
struct Listener {
    target: Arc<Target>,
    flows: FlowTable<Flow>,
    clock: Clock,
    ended: mpsc::UnboundedSender<(SocketAddr, u64)>,
    /// When a flow last failed to open with a warning (once a second at most: a flood of
    /// new flows with the fds all used would otherwise log a line per datagram).
    warned_at: Option<Instant>,
}

/// Serves UDP on `socket` until `cancel` fires.
pub async fn serve(socket: UdpSocket, target: Arc<Target>, cancel: CancellationToken) {
    let addr = socket.local_addr().ok();
    let mut socket = Some(Arc::new(socket));
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let mut l = Listener {
        flows: FlowTable::new(target.ctx.args.udp_max_flows_per_client),
        clock: Clock(Instant::now()),
        ended: ended_tx,
        warned_at: None,
        target,
    };
    let mut sets = l.target.sets.clone();
    sets.mark_changed();
    let mut rebind_at: Option<Instant> = None;
    loop {
        let current = socket.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some((client, id)) = ended.recv() => {
                if l.flows.remove(client, id).is_some() {
                    l.target.metrics.active.dec();
                }
            }
            changed = sets.changed() => {
                if changed.is_err() {
                    break;
                }
                let serving = l.endpoints_changed();
                match (serving, &socket, addr) {
                    (false, Some(_), _) => {
                        tracing::info!(service = %l.target.service, addr = ?addr,
                            "no eligible endpoints: udp socket closed, clients get ICMP port unreachable");
                        socket = None;
                    }
                    (true, None, Some(_)) => rebind_at = Some(Instant::now()),
                    _ => {}
                }
            }
            _ = sleep_until(rebind_at), if rebind_at.is_some() => {
                rebind_at = None;
                let Some(addr) = addr else { continue };
                if l.target.eligible_now().is_empty() {
                    continue;
                }
                // The address was bound before, so it is local; freebind only spares a
                // failure if it is being moved.
                match bind(addr, true) {
                    Ok(s) => {
                        tracing::info!(service = %l.target.service, %addr, "endpoints are back: udp socket bound again");
                        socket = Some(Arc::new(s));
                    }
                    Err(error) => {
                        tracing::warn!(service = %l.target.service, %addr, %error, "cannot bind the udp socket again; retrying");
                        rebind_at = Some(Instant::now() + REBIND_RETRY);
                    }
                }
            }
            readable = readable(current.as_deref()) => {
                let Some(sock) = current else { continue };
                if let Err(error) = readable {
                    tracing::warn!(addr = ?addr, %error, "udp socket failed");
                    continue;
                }
                l.receive(&sock, addr);
            }
        }
    }
    l.target.metrics.active.dec_by(l.flows.len() as i64);
}

async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Listener {
    /// Drops flows whose endpoint is no longer eligible; returns whether any endpoint is.
    fn endpoints_changed(&mut self) -> bool {
        let eligible = self.target.eligible_now();
        let target = &self.target;
        let gone = self.flows.retain(|client, f| {
            let keep = eligible.contains(&f.endpoint);
            if !keep {
                tracing::debug!(service = %target.service, %client, endpoint = %f.endpoint,
                    "endpoint no longer eligible; the flow will be re-picked");
            }
            keep
        });
        self.target.metrics.active.dec_by(gone as i64);
        !eligible.is_empty()
    }

    /// Handles the datagrams waiting on the socket (at most [`BATCH`]).
    fn receive(&mut self, socket: &Arc<UdpSocket>, addr: Option<SocketAddr>) {
        for _ in 0..BATCH {
            let done = flow::with_scratch(|buf| match socket.try_recv_from(buf) {
                Ok((n, client)) => {
                    self.datagram(socket, &buf[..n], client);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(error) => {
                    // ICMP errors from earlier replies surface here; the socket is fine.
                    tracing::debug!(addr = ?addr, %error, "udp receive error");
                    false
                }
            });
            if done {
                return;
            }
        }
    }

    fn datagram(&mut self, socket: &Arc<UdpSocket>, data: &[u8], client: SocketAddr) {
        if let Some(flow) = self.flows.get(&client) {
            return flow.forward(data, self.clock, &self.target);
        }
        match self.open(socket, client) {
            Ok(flow) => {
                // Counted before the first datagram leaves, as TCP counts before connecting:
                // the flow's relay may run on another worker and deliver the answer (and a
                // scrape may follow) before this thread gets past `forward`.
                self.target.metrics.connections.inc();
                self.target.metrics.active.inc();
                flow.forward(data, self.clock, &self.target);
                self.flows.insert(client, flow);
            }
            Err(why) => self.target.metrics.udp_dropped(why),
        }
    }

    /// Opens a flow for a new client, making room first if a ceiling is reached.
    fn open(&mut self, socket: &Arc<UdpSocket>, client: SocketAddr) -> Result<Flow, UdpDrop> {
        let ctx = &self.target.ctx;
        if ctx.limits.memory.exceeded() {
            return Err(UdpDrop::MemoryCeiling);
        }
        let endpoint = pick(&self.target, client.ip()).ok_or(UdpDrop::NoEndpoints)?;
        if self.flows.client_full(client.ip())
            && self.flows.evict_from_client(client.ip()).is_some()
        {
            self.evicted(UdpEviction::ClientLimit);
        }
        let budget = &ctx.limits.udp_flows;
        let slot = match budget.try_acquire() {
            Some(slot) => slot,
            None => {
                if self.flows.evict_oldest().is_some() {
                    self.evicted(UdpEviction::GlobalLimit);
                }
                budget.try_acquire().ok_or(UdpDrop::FlowLimit)?
            }
        };
        let opening = Opening {
            target: &self.target,
            listener: socket,
            client,
            endpoint,
            clock: self.clock,
            ended: &self.ended,
            id: self.flows.next_id(),
        };
        flow::open(opening, slot).map_err(|error| {
            let now = Instant::now();
            if self.warned_at.is_none_or(|t| now >= t + Duration::from_secs(1)) {
                self.warned_at = Some(now);
                tracing::warn!(service = %self.target.service, %endpoint, %error,
                    "cannot open a udp flow; datagrams are dropped (counted in svc_proxy_udp_datagrams_dropped_total)");
            }
            UdpDrop::Socket
        })
    }

    fn evicted(&self, why: UdpEviction) {
        self.target.metrics.active.dec();
        self.target.metrics.udp_evicted(why);
    }
}

/// Picks an endpoint that is eligible right now. The balancer follows the store from its own
/// task and may be a moment behind: a pick it still offers after its endpoint went away is
/// refused, and after a few refusals the endpoint is chosen from the store directly.
fn pick(target: &Target, client: IpAddr) -> Option<SocketAddr> {
    let eligible = target.eligible_now();
    let mut stale = Vec::new();
    for _ in 0..4 {
        match target.pick(client, &stale) {
            // UDP has no round trip to measure; the pick is dropped unreported (neutral).
            Ok(p) if eligible.contains(&p.addr) => return Some(p.addr),
            Ok(p) => stale.push(p.addr),
            Err(_) => break,
        }
    }
    let mut all: Vec<_> = eligible.into_iter().collect();
    all.sort_unstable();
    let addr = *all.get(hash_ip(client) % all.len().max(1))?;
    target.metrics.endpoint(addr).picks.inc();
    Some(addr)
}

fn hash_ip(ip: IpAddr) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(ip) as usize
}
