//! One TCP connection: pick an endpoint, connect (retrying another on failure), copy.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use svc_tower::balance::Pick;
use svc_tower::main_first::{MainFirst, Polled};

use super::copy::{self, CopyEnd, Counters, FirstBytes};
use crate::target::{EndpointSets, Target};

/// Endpoints tried per connection before giving up.
pub const CONNECT_ATTEMPTS: usize = 3;

/// Decrements the active gauge when the flow ends, however it ends.
struct ActiveGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Forwards one accepted connection.
pub async fn forward(target: Arc<Target>, mut client: TcpStream, peer: SocketAddr) {
    if super::refused(&client, &target) {
        return;
    }
    let m = &target.metrics;
    m.connections.inc();
    m.active.inc();
    let _active = ActiveGuard(&m.active);
    let Some(Connected {
        mut server,
        endpoint,
        pick,
        rtt,
    }) = connect(&target, peer.ip()).await
    else {
        // Nothing to talk to: a reset tells the client at once (as kube-proxy's REJECT does).
        reset(&client);
        return;
    };
    let args = &target.ctx.args;
    let first = FirstBytes::default();
    let copy = copy::bidirectional_timed(
        &mut client,
        &mut server,
        args.buffer_size,
        args.idle_timeout,
        Counters {
            rx: &m.rx,
            tx: &m.tx,
        },
        Some(&first),
    );
    let removed = async {
        if args.reset_removed {
            removed(target.sets.clone(), endpoint).await
        } else {
            std::future::pending().await
        }
    };
    // The copy wakes the task for every chunk; the cuts are polled only when they wake it
    // (see `svc_tower::main_first`), not on each of those wake-ups.
    let cut = async {
        tokio::select! {
            _ = removed => Cut::Removed,
            _ = target.ctx.drain.cutting() => Cut::DrainDeadline,
        }
    };
    let end = match MainFirst::new(pin!(copy), pin!(cut)).await {
        Polled::Main(end) => Ok(end),
        Polled::Side(cut) => Err(cut),
    };
    // The pick was held for the whole flow, so that the balancer counted it as an open
    // connection (TCP mode balances least-connections). The latency sample, which only breaks
    // ties, is the time the endpoint took to send its first bytes (to answer a request, or to
    // greet); the connect time when it sent none.
    pick.success(first.latency().unwrap_or(rtt));
    match end {
        Ok(CopyEnd::Closed) => {}
        Ok(CopyEnd::Idle) => {
            tracing::debug!(service = %target.service, client = %peer, %endpoint, "idle timeout");
        }
        Ok(CopyEnd::Error(error)) => {
            // Pass a reset on as a reset, so that neither side mistakes a cut flow for a
            // complete one.
            tracing::debug!(service = %target.service, client = %peer, %endpoint, %error, "flow failed");
            reset(&client);
            reset(&server);
        }
        Err(Cut::Removed) => {
            tracing::info!(service = %target.service, client = %peer, %endpoint,
                "endpoint removed; resetting flow (--reset-removed)");
            reset(&client);
            reset(&server);
        }
        Err(Cut::DrainDeadline) => {
            tracing::debug!(service = %target.service, client = %peer, %endpoint,
                "drain deadline passed; resetting flow");
            reset(&client);
            reset(&server);
        }
    }
}

/// Why a flow was cut short.
enum Cut {
    /// Its endpoint left the Service (`--reset-removed`).
    Removed,
    /// Shutdown's drain deadline passed (with `--drain-deadline-close reset`).
    DrainDeadline,
}

/// Makes the socket send RST instead of FIN when dropped.
pub(crate) fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Resolves once `endpoint` is no longer listed by the Service port (never, if the target is
/// gone, as the listener is then shutting down and drain decides).
async fn removed(mut sets: watch::Receiver<Arc<EndpointSets>>, endpoint: SocketAddr) {
    if sets
        .wait_for(|s| !s.listed.contains(&endpoint))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// A connection to a picked endpoint.
pub struct Connected {
    /// The connection.
    pub server: TcpStream,
    /// Where it goes.
    pub endpoint: SocketAddr,
    /// The balancer's pick, in flight until reported.
    pub pick: Pick,
    /// How long connecting took.
    pub rtt: Duration,
}

/// Connects to a picked endpoint, trying up to [`CONNECT_ATTEMPTS`] different ones.
pub async fn connect(target: &Target, client: IpAddr) -> Option<Connected> {
    let timeout = target.ctx.args.connect_timeout;
    let warnings = &target.ctx.endpoint_warnings;
    let mut tried: Vec<SocketAddr> = Vec::with_capacity(CONNECT_ATTEMPTS);
    for _ in 0..CONNECT_ATTEMPTS {
        let pick = match target.pick(client, &tried) {
            Ok(p) => p,
            Err(error) => {
                tracing::debug!(service = %target.service, port = target.port, %client, %error, "no endpoint");
                return None;
            }
        };
        let addr = pick.addr;
        if tried.contains(&addr) {
            // Only failed endpoints are left.
            break;
        }
        tried.push(addr);
        let started = Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(server)) => {
                let _ = server.set_nodelay(true);
                return Some(Connected {
                    server,
                    endpoint: addr,
                    pick,
                    rtt: started.elapsed(),
                });
            }
            Ok(Err(error)) if crate::tcp::listener::is_resource_exhaustion(&error) => {
                // Our own problem, not the endpoint's: no failure report, no retry.
                if let Some(failures) = warnings.hit((addr, "socket")) {
                    tracing::warn!(service = %target.service, endpoint = %addr, %error, failures,
                        "cannot open a socket to the endpoint (logged once per endpoint per 10 s; failures: how many since the last line)");
                }
                return None;
            }
            Ok(Err(error)) => {
                if let Some(failures) = warnings.hit((addr, "connect")) {
                    tracing::warn!(service = %target.service, endpoint = %addr, %error, failures,
                        "cannot connect to the endpoint (logged once per endpoint per 10 s; failures: how many since the last line)");
                }
                target.failed(pick);
            }
            Err(_) => {
                if let Some(failures) = warnings.hit((addr, "connect")) {
                    tracing::warn!(service = %target.service, endpoint = %addr, ?timeout, failures,
                        "connecting to the endpoint timed out (logged once per endpoint per 10 s; failures: how many since the last line)");
                }
                target.failed(pick);
            }
        }
    }
    // Each endpoint's failure was reported above (throttled); the client gets a reset.
    tracing::debug!(service = %target.service, port = target.port, %client, tried = ?tried, "no endpoint accepted the connection");
    None
}
