//! Power of two choices, one from a rotation and one at random, with a tolerance band.
//!
//! Plain P2C over PeakEWMA (Mitzenmacher 2001; tower, Linkerd) strictly prefers the lower
//! cost. Under light load every cost is "RTT × 1", and loopback or LAN RTTs differ by noise
//! (0.1–0.5 ms), so serial traffic settles on whichever endpoint last measured fastest, and a
//! new endpoint loses every comparison until the others' estimates decay. Here:
//!
//! - candidate A is the rotation's (`turn mod n`), candidate B is drawn at random;
//! - an endpoint passed over for more than `starvation_picks` picks wins (no starvation);
//! - a shorter failure streak wins (a refusing endpoint loses at once);
//! - latencies are equal unless one endpoint's fastest recent answer (of its last 7) is
//!   slower than the other's median beyond the tolerance band (an endpoint is as fast as any
//!   before its third answer); equal latencies leave it to picks in flight (alike within the
//!   same factor); otherwise the cost median × (in flight + 1) decides, as PeakEWMA's does;
//! - a full tie goes to A, so equal endpoints under serial traffic get exact round robin.
//!
//! The rotation also bounds the wait: once an endpoint has been passed over for more than
//! `starvation_picks` picks, it wins the next time the rotation reaches it, which takes at
//! most `n` picks while the set does not change. Nothing here allocates.

use std::net::SocketAddr;
use std::sync::Arc;

use super::config::SlowStart;
use super::endpoint::{EndpointState, Nanos};
use super::rng::{below, SplitMix};

/// What to skip.
#[derive(Clone, Copy)]
pub(crate) struct Skip<'a> {
    /// Skip ejected endpoints.
    pub(crate) ejected: bool,
    /// Skip these addresses.
    pub(crate) exclude: &'a [SocketAddr],
}

impl Skip<'_> {
    #[inline]
    fn is_usable(&self, ep: &EndpointState) -> bool {
        let ejected = self.ejected && ep.is_ejected();
        !ejected && !self.exclude.contains(&ep.addr)
    }

    #[inline]
    fn is_trivial(&self) -> bool {
        !self.ejected && self.exclude.is_empty()
    }
}

/// The settings a pick needs, in the units it compares.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub(crate) tolerance: f64,
    pub(crate) floor_ns: f64,
    pub(crate) starvation: u64,
    pub(crate) slow_start: Option<SlowStart>,
}

impl Tuning {
    /// Whether `x` (an endpoint's fastest recent answer) is slower than `y` (another's
    /// median) beyond the tolerance band.
    #[inline]
    fn slower(&self, x: f64, y: f64) -> bool {
        x - y > self.floor_ns && x > y * self.tolerance
    }

    /// Whether two endpoints answer alike: neither's fastest recent answer is slower than the
    /// other's median beyond the band.
    #[inline]
    fn same_latency(&self, a: &EndpointState, b: &EndpointState) -> bool {
        !a.is_measured()
            || !b.is_measured()
            || !(self.slower(a.best_rtt(), b.typical_rtt())
                || self.slower(b.best_rtt(), a.typical_rtt()))
    }
}

/// One pick's inputs.
pub(crate) struct Turn<'a> {
    /// The rotation counter's value for this pick.
    pub(crate) turn: u64,
    pub(crate) now: Nanos,
    pub(crate) rng: &'a SplitMix,
    pub(crate) tuning: &'a Tuning,
}

/// Random draws tried before a linear scan for a usable endpoint.
const DRAWS: usize = 4;

/// A usable index other than `not`: a few random draws, then a scan from a random start.
fn draw(
    eps: &[Arc<EndpointState>],
    rng: &SplitMix,
    skip: Skip<'_>,
    not: Option<usize>,
) -> Option<usize> {
    let n = eps.len();
    let ok = |i: usize| Some(i) != not && skip.is_usable(&eps[i]);
    let mut start = 0;
    for _ in 0..DRAWS {
        start = below(rng.next_u64() as u32, n);
        if ok(start) {
            return Some(start);
        }
    }
    (1..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

/// Picks an endpoint, or `None` when `skip` rules out every one. Marks the winner as chosen
/// at this turn.
#[inline]
pub(crate) fn choose<'a>(
    eps: &'a [Arc<EndpointState>],
    t: &Turn<'_>,
    skip: Skip<'_>,
) -> Option<&'a Arc<EndpointState>> {
    let n = eps.len();
    if n == 0 {
        return None;
    }
    let start = (t.turn % n as u64) as usize;
    let r = t.rng.next_u64();
    let (a, b) = if skip.is_trivial() {
        if n == 1 {
            return Some(chosen(&eps[0], t.turn));
        }
        (start, (start + 1 + below(r as u32, n - 1)) % n)
    } else {
        // The rotation's candidate is the first usable endpoint from its position on.
        let a = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| skip.is_usable(&eps[i]))?;
        match draw(eps, t.rng, skip, Some(a)) {
            Some(b) => (a, b),
            None => return Some(chosen(&eps[a], t.turn)),
        }
    };
    let (ea, eb) = (&eps[a], &eps[b]);
    let winner = if first_wins(ea, eb, t, (r >> 32) as u32) {
        ea
    } else {
        eb
    };
    Some(chosen(winner, t.turn))
}

#[inline]
fn chosen(ep: &Arc<EndpointState>, turn: u64) -> &Arc<EndpointState> {
    ep.set_last_chosen(turn);
    ep
}

/// Whether the rotation's candidate `a` beats the random one `b`. `coin` is 32 random bits.
#[inline]
fn first_wins(a: &EndpointState, b: &EndpointState, t: &Turn<'_>, coin: u32) -> bool {
    let tuning = t.tuning;
    let starving = |e: &EndpointState| t.turn.wrapping_sub(e.last_chosen()) > tuning.starvation;
    if starving(a) {
        return true;
    }
    if starving(b) {
        return false;
    }
    let (fa, fb) = (a.failure_streak(), b.failure_streak());
    if fa != fb {
        return fa < fb;
    }
    let (wa, wb) = match &tuning.slow_start {
        None => (1.0, 1.0),
        Some(s) => (weight(a, s, t.now), weight(b, s, t.now)),
    };
    // An endpoint in slow start takes the rotation's turn only with probability `weight`.
    let a_has_turn = wa >= 1.0 || f64::from(coin) < wa * f64::from(u32::MAX);
    // Requests in flight, counted `1 / weight` times for endpoints in slow start (so that
    // none in flight is still a tie, which the turn then decides).
    let (ia, ib) = (f64::from(a.in_flight()) / wa, f64::from(b.in_flight()) / wb);
    let (la, lb) = (a.typical_rtt(), b.typical_rtt());
    // An endpoint that has not answered (often enough) yet is as fast as any: it must be
    // tried to be measured.
    let same = tuning.same_latency(a, b);
    if same {
        // Counts within the same factor are alike too: under concurrency, picks in flight
        // follow each endpoint's latency (Little's law), so endpoints alike within the band
        // but not identical (0.6 ms and 0.4 ms) would otherwise split the traffic by that
        // difference. Beyond it, the less loaded wins (0 against 1 is never alike).
        let (lo, hi) = if ia < ib { (ia, ib) } else { (ib, ia) };
        if hi > lo * tuning.tolerance {
            return ia < ib;
        }
    } else {
        let (ca, cb) = (la * (ia + 1.0), lb * (ib + 1.0));
        if ca != cb {
            return ca < cb;
        }
    }
    a_has_turn
}

#[inline]
fn weight(e: &EndpointState, slow_start: &SlowStart, now: Nanos) -> f64 {
    match e.eligible_since() {
        None => 1.0,
        Some(since) => {
            slow_start.weight(std::time::Duration::from_nanos(now.saturating_sub(since)))
        }
    }
}
