//! Per-endpoint state: load (PeakEWMA), outlier streaks and counters.
//!
//! Everything a pick reads is an atomic, so picks never lock. Writers (a finished request)
//! take a per-endpoint lock only to update the RTT estimate consistently.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Nanoseconds since the pool's epoch (a `tokio::time::Instant`), so that paused-time tests
/// move the clock.
pub(crate) type Nanos = u64;

/// PeakEWMA's estimate, as in `tower::load::PeakEwma`: a sample above the estimate replaces
/// it (the peak); below it, it is averaged in with a weight that grows with the time since the
/// last update. Reading the cost decays the estimate towards zero in the same way, so an idle
/// endpoint looks cheaper over time and is tried again.
pub(crate) fn decayed(rtt_ns: f64, since_ns: u64, decay_ns: f64) -> f64 {
    rtt_ns * decay_weight(since_ns, decay_ns)
}

/// `e^(-since/decay)`: how much of an estimate `since_ns` old is left.
///
/// Between two answers of a busy endpoint `since/decay` is ~1e-5 (microseconds against the
/// 10 s default), where the series' first three terms are exact to within `x³/6` < 2e-10 and
/// cost a few multiplications instead of a libm call on every request.
#[inline]
pub(crate) fn decay_weight(since_ns: u64, decay_ns: f64) -> f64 {
    let x = since_ns as f64 / decay_ns;
    if x < 1e-3 {
        1.0 - x + x * x * 0.5
    } else {
        (-x).exp()
    }
}

/// RTT samples whose median the balancer compares.
pub(crate) const RECENT: usize = 7;

/// Answers before an endpoint's latency is compared with others' (until then it is as fast
/// as any).
pub(crate) const MIN_SAMPLES: u64 = 3;

/// The last [`RECENT`] RTT samples. Endpoints are compared by them rather than by PeakEWMA's
/// estimate, which a single slow answer raises at once and which then takes seconds to decay
/// (a scheduling hiccup would cost an endpoint its traffic for that long). An endpoint is
/// slower than another only when even its fastest recent answer is slower than the other's
/// median, beyond the tolerance band: noise leaves some fast answers, an endpoint that became
/// 5 ms slower has none after 7 answers.
///
/// The samples are kept twice: in arrival order (which one leaves next) and sorted (median
/// and minimum), so that a sample costs one insertion-sort step, not a sort, per request.
#[derive(Debug, Default)]
struct Recent {
    samples: [u64; RECENT],
    sorted: [u64; RECENT],
    len: usize,
    next: usize,
}

impl Recent {
    /// Adds a sample; returns the median and the minimum of the kept ones.
    fn push(&mut self, sample: u64) -> (u64, u64) {
        let mut len = self.len;
        if len == RECENT {
            // The oldest sample leaves `sorted`: everything after it moves down one.
            let oldest = self.samples[self.next];
            let mut i = self
                .sorted
                .iter()
                .position(|&s| s == oldest)
                .unwrap_or(len - 1);
            while i + 1 < len {
                self.sorted[i] = self.sorted[i + 1];
                i += 1;
            }
            len -= 1;
        }
        let mut i = len;
        while i > 0 && self.sorted[i - 1] > sample {
            self.sorted[i] = self.sorted[i - 1];
            i -= 1;
        }
        self.sorted[i] = sample;
        self.samples[self.next] = sample;
        self.next = (self.next + 1) % RECENT;
        self.len = len + 1;
        (self.sorted[self.len / 2], self.sorted[0])
    }
}

/// [`EndpointState::eligible_since`] of an endpoint that is not in slow start.
pub(crate) const NOT_STARTING: Nanos = Nanos::MAX;

/// One endpoint's live state, shared by the pool and its outstanding picks.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) addr: SocketAddr,
    in_flight: AtomicU32,
    /// `f64` bits of the RTT estimate in nanoseconds.
    rtt_ns: AtomicU64,
    rtt_at: AtomicU64,
    /// The last RTT samples; taken by writers only.
    recent: Mutex<Recent>,
    /// The median of `recent`, in nanoseconds.
    typical_ns: AtomicU64,
    /// The minimum of `recent`, in nanoseconds.
    best_ns: AtomicU64,
    consecutive_failures: AtomicU32,
    /// The pool's rotation counter when this endpoint was last chosen (starvation check).
    last_chosen: AtomicU64,
    /// When it last became eligible, for slow start; [`NOT_STARTING`] when not ramping.
    eligible_since: AtomicU64,
    ejected: AtomicBool,
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rtt_total_ns: AtomicU64,
}

impl EndpointState {
    pub(crate) fn new(addr: SocketAddr, default_rtt: Duration, now: Nanos) -> Self {
        Self {
            addr,
            in_flight: AtomicU32::new(0),
            rtt_ns: AtomicU64::new((default_rtt.as_nanos() as f64).to_bits()),
            rtt_at: AtomicU64::new(now),
            recent: Mutex::new(Recent::default()),
            typical_ns: AtomicU64::new(0),
            best_ns: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_chosen: AtomicU64::new(0),
            eligible_since: AtomicU64::new(NOT_STARTING),
            ejected: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rtt_total_ns: AtomicU64::new(0),
        }
    }

    /// The decayed RTT estimate, in nanoseconds.
    pub(crate) fn rtt_estimate(&self, now: Nanos, decay_ns: f64) -> f64 {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let at = self.rtt_at.load(Ordering::Relaxed);
        decayed(rtt, now.saturating_sub(at), decay_ns)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The median of the last [`RECENT`] RTT samples, in nanoseconds (0 before the first).
    #[inline]
    pub(crate) fn typical_rtt(&self) -> f64 {
        self.typical_ns.load(Ordering::Relaxed) as f64
    }

    /// The fastest of the last [`RECENT`] RTT samples, in nanoseconds (0 before the first).
    #[inline]
    pub(crate) fn best_rtt(&self) -> f64 {
        self.best_ns.load(Ordering::Relaxed) as f64
    }

    /// Whether it has answered often enough for its latency to mean something: the median
    /// of fewer than [`MIN_SAMPLES`] answers is one unlucky answer away from anything.
    #[inline]
    pub(crate) fn is_measured(&self) -> bool {
        self.successes.load(Ordering::Relaxed) >= MIN_SAMPLES
    }

    /// Failures in a row since the last success.
    #[inline]
    pub(crate) fn failure_streak(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn last_chosen(&self) -> u64 {
        self.last_chosen.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_last_chosen(&self, turn: u64) {
        self.last_chosen.store(turn, Ordering::Relaxed);
    }

    /// When the endpoint became eligible, if it is in slow start.
    #[inline]
    pub(crate) fn eligible_since(&self) -> Option<Nanos> {
        let since = self.eligible_since.load(Ordering::Relaxed);
        (since != NOT_STARTING).then_some(since)
    }

    pub(crate) fn set_eligible_since(&self, since: Nanos) {
        self.eligible_since.store(since, Ordering::Relaxed);
    }

    /// Records a success: the streak ends and the RTT sample feeds the estimate.
    pub(crate) fn success(&self, rtt: Duration, now: Nanos, decay_ns: f64) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        // `as_nanos` is a u128, whose conversion to f64 is a ~45-instruction library call on
        // every request; a u64 holds 584 years.
        let rtt_ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        let sample = rtt_ns as f64;
        let mut recent = self.recent.lock();
        // Only writers holding `recent` change these two: plain stores under the lock, not two
        // more locked read-modify-writes per request.
        let successes = self.successes.load(Ordering::Relaxed);
        let first = successes == 0;
        self.successes.store(successes + 1, Ordering::Relaxed);
        let total = self.rtt_total_ns.load(Ordering::Relaxed);
        self.rtt_total_ns
            .store(total.saturating_add(rtt_ns), Ordering::Relaxed);
        let (typical, best) = recent.push(rtt_ns);
        self.typical_ns.store(typical, Ordering::Relaxed);
        self.best_ns.store(best, Ordering::Relaxed);
        let prev = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let at = self.rtt_at.load(Ordering::Relaxed);
        // The first sample replaces the starting estimate, which is only a guess: otherwise
        // a fast endpoint would take tens of seconds of decay to come down from the 30 ms
        // default, and every endpoint would look alike meanwhile.
        let next = if first || prev < sample {
            sample
        } else {
            let w = decay_weight(now.saturating_sub(at), decay_ns);
            prev * w + sample * (1.0 - w)
        };
        self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        self.rtt_at.store(now, Ordering::Relaxed);
    }

    /// Forgets the failure streak (the endpoint passed its readiness probe again).
    pub(crate) fn forgive(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failure; returns the length of the failure streak.
    pub(crate) fn failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Marks the endpoint ejected; returns until when.
    pub(crate) fn eject(&self, now: Nanos, base: Duration, max: Duration) -> Nanos {
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let span = base.saturating_mul(times).min(max);
        let until = now.saturating_add(span.as_nanos() as u64);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected.store(true, Ordering::Release);
        until
    }

    pub(crate) fn ejected_until(&self) -> Nanos {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn uneject(&self) {
        self.ejected.store(false, Ordering::Release);
    }

    pub(crate) fn stats(&self, now: Nanos, decay_ns: f64) -> EndpointStats {
        EndpointStats {
            addr: self.addr,
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency_total: Duration::from_nanos(self.rtt_total_ns.load(Ordering::Relaxed)),
            rtt_estimate: Duration::from_nanos(self.rtt_estimate(now, decay_ns) as u64),
            latency: Duration::from_nanos(self.typical_ns.load(Ordering::Relaxed)),
            ejected: self.is_ejected(),
            times_ejected: self.times_ejected.load(Ordering::Relaxed),
        }
    }
}

/// Counters and load of one endpoint, for metrics (see [`EndpointPool::stats`]).
///
/// Counters are cumulative since the endpoint first appeared in the pool.
///
/// [`EndpointPool::stats`]: super::EndpointPool::stats
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Picks not yet finished.
    pub in_flight: u32,
    /// Picks made.
    pub requests: u64,
    /// Picks that ended in [`Pick::success`](super::Pick::success).
    pub successes: u64,
    /// Picks that ended in [`Pick::failure`](super::Pick::failure).
    pub failures: u64,
    /// Sum of the RTTs reported with [`Pick::success`](super::Pick::success) (divide by
    /// `successes` for a mean).
    pub latency_total: Duration,
    /// The current PeakEWMA RTT estimate (as `tower::load::PeakEwma` computes it).
    pub rtt_estimate: Duration,
    /// The median of the last 7 RTTs: the latency the balancer compares endpoints by (zero
    /// before the first answer).
    pub latency: Duration,
    /// Whether outlier detection has ejected it.
    pub ejected: bool,
    /// How many times it was ejected.
    pub times_ejected: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The kept-sorted window answers what sorting the last 7 samples answers.
        #[test]
        fn recent_matches_sorting_the_last_samples(samples in prop::collection::vec(0u64..50, 1..40)) {
            let mut recent = Recent::default();
            for (n, &sample) in samples.iter().enumerate() {
                let got = recent.push(sample);
                let mut window: Vec<u64> = samples[(n + 1).saturating_sub(RECENT)..=n].to_vec();
                window.sort_unstable();
                prop_assert_eq!(got, (window[window.len() / 2], window[0]));
            }
        }

        /// The series stands in for `exp` only where it agrees with it.
        #[test]
        fn decay_weight_agrees_with_exp(since_ns in 0u64..100_000_000_000, decay_s in 1u64..60) {
            let decay_ns = decay_s as f64 * 1e9;
            let exact = (-(since_ns as f64) / decay_ns).exp();
            let got = decay_weight(since_ns, decay_ns);
            prop_assert!((got - exact).abs() <= 1e-9 * exact.max(1e-300), "{got} vs {exact}");
        }
    }

    #[test]
    fn decay_weight_is_one_at_zero_and_exact_beyond_the_series() {
        assert_eq!(decay_weight(0, 1e10), 1.0);
        assert_eq!(decay_weight(20_000_000_000, 1e10), (-2.0f64).exp());
    }
}
