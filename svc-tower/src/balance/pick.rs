//! [`Pick`]: one use of one endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint::EndpointState;
use super::pool::Shared;

/// An endpoint chosen by [`EndpointPool::pick`](super::EndpointPool::pick), counted as in
/// flight until it is dropped.
///
/// Report how the use went with [`success`](Self::success) (feeds the latency and ends the
/// failure streak) or [`failure`](Self::failure) (lengthens the streak, which loses every
/// comparison until the next success, and feeds outlier ejection). Dropping it without either
/// is neutral: it only ends the in-flight count.
#[derive(Debug)]
#[must_use = "a pick is in flight until dropped; report success or failure"]
pub struct Pick {
    /// Where to connect.
    pub addr: SocketAddr,
    ep: Arc<EndpointState>,
    shared: Arc<Shared>,
}

impl Pick {
    pub(crate) fn new(ep: Arc<EndpointState>, shared: Arc<Shared>) -> Self {
        ep.start();
        Self {
            addr: ep.addr,
            ep,
            shared,
        }
    }

    /// The endpoint answered; `rtt` is how long it took (a request's latency, or the time to
    /// connect).
    pub fn success(self, rtt: Duration) {
        self.ep
            .success(rtt, self.shared.now(), self.shared.decay_ns);
    }

    /// [`success`](Self::success) of a use from `start` to now.
    pub(crate) fn success_since(self, start: Instant) {
        self.success_between(start, Instant::now());
    }

    /// [`success`](Self::success) of a use from `start` to `end`: the caller's clock reads
    /// give both the RTT and the sample's time (the request path reads the clock enough).
    pub fn success_between(self, start: Instant, end: Instant) {
        let rtt = end.saturating_duration_since(start);
        self.ep
            .success(rtt, self.shared.nanos_at(end), self.shared.decay_ns);
    }

    /// The endpoint failed (connect error, reset, 5xx: the caller decides).
    pub fn failure(self) {
        self.shared.on_failure(&self.ep);
    }

    /// Requests in flight to this endpoint, this one included.
    pub fn in_flight(&self) -> u32 {
        self.ep.in_flight()
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.ep.finish();
    }
}
