//! UDP: a per-client flow table with idle timeout and re-picks.
//!
//! Each client address gets a flow: a connected socket to one picked endpoint, and a task that
//! relays the endpoint's replies back from the Service address. A flow ends when it is idle
//! for `--udp-idle-timeout`. When its endpoint stops being eligible (removed, not ready, or
//! filtered out by policy), the flow is dropped and the client's next datagram is balanced
//! afresh, so a client never keeps sending into a dead endpoint (the conntrack blackhole that
//! kube-proxy clears by flushing conntrack entries).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::target::Target;

/// Flows per listener; datagrams from further new clients are dropped until some expire.
pub const MAX_FLOWS: usize = 65_536;
/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

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

struct Flow {
    id: u64,
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    relay: AbortHandle,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Serves UDP on `socket` until `cancel` fires.
pub async fn serve(socket: UdpSocket, target: Arc<Target>, cancel: CancellationToken) {
    let socket = Arc::new(socket);
    let start = Instant::now();
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut sets = target.sets.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_id = 0u64;
    let local = socket.local_addr().ok();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some((client, id)) = ended.recv() => {
                if flows.get(&client).is_some_and(|f| f.id == id) {
                    flows.remove(&client);
                    target.metrics.active.dec();
                }
            }
            changed = sets.changed() => {
                if changed.is_err() {
                    break;
                }
                let eligible = target.eligible_now();
                let before = flows.len();
                flows.retain(|client, f| {
                    let keep = eligible.contains(&f.endpoint);
                    if !keep {
                        tracing::debug!(service = %target.service, %client, endpoint = %f.endpoint,
                            "endpoint no longer eligible; the flow will be re-picked");
                    }
                    keep
                });
                target.metrics.active.dec_by((before - flows.len()) as i64);
            }
            received = socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(error) => {
                        // ICMP errors from earlier sends surface here; nothing is wrong with
                        // the socket itself.
                        tracing::debug!(addr = ?local, %error, "udp receive error");
                        continue;
                    }
                };
                if !flows.contains_key(&client) {
                    if flows.len() >= MAX_FLOWS {
                        tracing::debug!(service = %target.service, %client, "udp flow table full; dropping datagram");
                        continue;
                    }
                    let Some(flow) = open_flow(&target, &socket, client, next_id, start, &ended_tx).await else {
                        continue;
                    };
                    next_id += 1;
                    target.metrics.connections.inc();
                    target.metrics.active.inc();
                    flows.insert(client, flow);
                }
                let flow = &flows[&client];
                flow.last.store(start.elapsed().as_nanos() as u64, Relaxed);
                match flow.upstream.try_send(&buf[..n]) {
                    Ok(_) => {
                        target.metrics.rx.inc_by(n as u64);
                    }
                    Err(error) => tracing::debug!(service = %target.service, endpoint = %flow.endpoint, %error, "udp send failed; datagram dropped"),
                }
            }
        }
    }
    target.metrics.active.dec_by(flows.len() as i64);
}

/// Picks an endpoint for a new client and starts relaying its replies.
async fn open_flow(
    target: &Arc<Target>,
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    id: u64,
    start: Instant,
    ended: &mpsc::UnboundedSender<(SocketAddr, u64)>,
) -> Option<Flow> {
    let endpoint = pick(target, client.ip())?;
    let unspecified: IpAddr = match endpoint {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = match UdpSocket::bind(SocketAddr::new(unspecified, 0)).await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(service = %target.service, %error, "cannot open a udp socket");
            return None;
        }
    };
    if let Err(error) = upstream.connect(endpoint).await {
        tracing::debug!(service = %target.service, %endpoint, %error, "udp connect failed");
        target.metrics.endpoint(endpoint).errors.inc();
        return None;
    }
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(start.elapsed().as_nanos() as u64));
    let relay = tokio::spawn({
        let (upstream, socket, last, target, ended) = (
            upstream.clone(),
            socket.clone(),
            last.clone(),
            target.clone(),
            ended.clone(),
        );
        async move {
            relay(
                upstream,
                socket,
                client,
                last,
                start,
                target.ctx.args.udp_idle_timeout,
                &target,
            )
            .await;
            // Idle: tell the listener to forget the flow.
            let _ = ended.send((client, id));
        }
    });
    Some(Flow {
        id,
        endpoint,
        upstream,
        last,
        relay: relay.abort_handle(),
    })
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

/// Relays replies from the endpoint to the client until the flow is idle.
async fn relay(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    start: Instant,
    idle: Duration,
    target: &Target,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = start + Duration::from_nanos(last.load(Relaxed)) + idle;
        if deadline <= Instant::now() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            received = upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    last.store(start.elapsed().as_nanos() as u64, Relaxed);
                    match socket.send_to(&buf[..n], client).await {
                        Ok(_) => {
                            target.metrics.tx.inc_by(n as u64);
                        }
                        Err(error) => tracing::debug!(%client, %error, "udp reply failed"),
                    }
                }
                // ICMP port unreachable from the endpoint and the like.
                Err(error) => {
                    tracing::debug!(%client, %error, "udp receive from endpoint failed");
                    target.metrics.endpoint(upstream.peer_addr().unwrap_or(client)).errors.inc();
                }
            }
        }
    }
}
