//! Balancer settings.

use std::time::Duration;

/// Envoy's `slow_start_config`: an endpoint that has just become eligible gets a share of
/// traffic that ramps up over `window` instead of a full share at once.
///
/// Its weight is `max(min_weight_percent / 100, (max(t, 1 s) / window) ^ (1 / aggression))`,
/// `t` being the time since it became eligible (Envoy's formula). The balancer applies the
/// weight twice: an endpoint in slow start that comes up as the rotation's candidate takes
/// that turn only with probability `weight` (serial traffic), and its requests in flight
/// count `1 / weight` times (concurrent traffic). The endpoints of a pool's first set are not
/// in slow start: a client that starts up has nothing to ramp from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SlowStart {
    /// How long the ramp lasts.
    pub window: Duration,
    /// The ramp's curve: 1.0 is linear, higher ramps faster at first (Envoy's default 1.0).
    pub aggression: f64,
    /// The weight an endpoint starts from, in percent of a full one (Envoy's default 10).
    pub min_weight_percent: u8,
}

impl SlowStart {
    /// A linear ramp over `window` from 10 % (Envoy's defaults for the other two fields); the
    /// builder methods below change any of them.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            aggression: 1.0,
            min_weight_percent: 10,
        }
    }

    /// How long the ramp lasts (set by [`new`](Self::new)).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The ramp's curve: 1.0 is linear, higher ramps faster at first (default 1.0, Envoy's).
    #[must_use]
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = aggression;
        self
    }

    /// The weight an endpoint starts from, in percent of a full one (default 10, Envoy's).
    #[must_use]
    pub fn min_weight_percent(mut self, percent: u8) -> Self {
        self.min_weight_percent = percent;
        self
    }

    /// The weight in (0, 1] of an endpoint eligible for `since`.
    pub(crate) fn weight(&self, since: Duration) -> f64 {
        if since >= self.window {
            return 1.0;
        }
        let time_factor = since.max(Duration::from_secs(1)).as_secs_f64()
            / self.window.as_secs_f64().max(f64::MIN_POSITIVE);
        let aggression = if self.aggression > 0.0 {
            self.aggression
        } else {
            1.0
        };
        let min = f64::from(self.min_weight_percent.clamp(1, 100)) / 100.0;
        time_factor.powf(1.0 / aggression).clamp(min, 1.0)
    }
}

/// Balancer, outlier ejection and load estimation settings. [`Default`] gives Envoy's
/// outlier-ejection defaults and the balancing described in the crate's ARCHITECTURE.md.
///
/// **Picking.** One candidate comes from a rotation over the eligible endpoints, the other at
/// random (power of two choices). In order, the candidate wins that:
/// 1. has been passed over for more than `starvation_picks` picks (no endpoint starves);
/// 2. has the shorter streak of consecutive failures (a failing endpoint loses at once);
/// 3. is cheaper: with latencies alike (see `latency_tolerance`), fewer picks in flight
///    (requests; open connections for a proxy that holds a pick per flow), counts within
///    `latency_tolerance`'s factor being alike; otherwise the lower latency × (in flight + 1),
///    as PeakEWMA's cost;
/// 4. is the rotation's candidate (equal endpoints get exact round robin).
///
/// **Ejection** follows Envoy's `consecutive_5xx` detector, fed by [`Pick::failure`]:
/// after `consecutive_failures` failures in a row an endpoint is ejected for
/// `base_ejection × (times it has been ejected)`, capped at `max_ejection`, unless that would
/// eject more than `max_ejection_percent` of the endpoints. As Envoy's outlier detection
/// documents ("if no hosts have been ejected, Envoy will eject the host immediately"), one
/// endpoint can always be ejected whatever the percentage (`always_eject_one`).
///
/// When fewer than `panic_threshold_percent` of the eligible endpoints are un-ejected, the
/// balancer is in *panic* and ignores ejection altogether, as Envoy does.
///
/// [`Pick::failure`]: super::Pick::failure
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BalanceConfig {
    /// An endpoint is slower than another only when its fastest recent answer (of its last
    /// 7) is more than this factor above the other's median (default 1.5) and more than
    /// `latency_floor` above it; otherwise they are equal and requests in flight decide, so
    /// that noise (loopback RTTs of 0.1–0.5 ms, a hiccup) never does.
    pub latency_tolerance: f64,
    /// See `latency_tolerance` (default 1 ms).
    pub latency_floor: Duration,
    /// An eligible, un-ejected endpoint passed over for more than this many picks wins the
    /// next comparison it takes part in (default 24). With `n` eligible endpoints and no
    /// change to the set, no endpoint waits more than `starvation_picks + n` picks.
    pub starvation_picks: u32,
    /// Opt-in slow start for endpoints that become eligible (default `None`: a new endpoint
    /// gets the very next pick and a full share from then on).
    pub slow_start: Option<SlowStart>,
    /// Consecutive failures that eject an endpoint (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// Base ejection time, multiplied by the number of times the endpoint was ejected
    /// (default 30 s).
    pub base_ejection: Duration,
    /// Longest ejection (default 300 s, Envoy's `max_ejection_time`).
    pub max_ejection: Duration,
    /// At most this share of the endpoints may be ejected at once (default 10), except for the
    /// first one (see `always_eject_one`).
    pub max_ejection_percent: u8,
    /// Eject an endpoint when none is ejected, even when that exceeds
    /// `max_ejection_percent` (default true, Envoy's documented behaviour; without it, a
    /// Service with fewer than 10 endpoints could never eject a dead one).
    pub always_eject_one: bool,
    /// Below this share of un-ejected endpoints, ejection is ignored (default 50).
    pub panic_threshold_percent: u8,
    /// PeakEWMA decay of the reported RTT estimate ([`EndpointStats::rtt_estimate`], for
    /// metrics; picks compare recent answers instead): how fast it forgets (default 10 s).
    ///
    /// [`EndpointStats::rtt_estimate`]: super::EndpointStats::rtt_estimate
    pub ewma_decay: Duration,
    /// The reported RTT estimate of the first endpoints before any answer (default 30 ms).
    /// Endpoints added later start at the median of the pool's estimates (at most this); an
    /// endpoint's first answer replaces it.
    pub default_rtt: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            latency_tolerance: 1.5,
            latency_floor: Duration::from_millis(1),
            starvation_picks: 24,
            slow_start: None,
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one: true,
            panic_threshold_percent: 50,
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        }
    }
}

/// Builder methods, by value as tower's layers and kube-runtime's `watcher::Config` have them:
/// `BalanceConfig::default().consecutive_failures(3).slow_start(SlowStart::new(window))`.
impl BalanceConfig {
    /// The factor by which an endpoint's fastest recent answer must exceed another's median
    /// for it to count as slower (default 1.5); see
    /// [`latency_tolerance`](field@Self::latency_tolerance).
    #[must_use]
    pub fn latency_tolerance(mut self, factor: f64) -> Self {
        self.latency_tolerance = factor;
        self
    }

    /// The margin by which an endpoint's fastest recent answer must exceed another's median
    /// for it to count as slower (default 1 ms); see
    /// [`latency_tolerance`](field@Self::latency_tolerance).
    #[must_use]
    pub fn latency_floor(mut self, floor: Duration) -> Self {
        self.latency_floor = floor;
        self
    }

    /// An eligible, un-ejected endpoint passed over for more than this many picks wins the
    /// next comparison it takes part in (default 24).
    #[must_use]
    pub fn starvation_picks(mut self, picks: u32) -> Self {
        self.starvation_picks = picks;
        self
    }

    /// Ramps up the share of endpoints that become eligible (default: no slow start, a new
    /// endpoint gets the very next pick and a full share from then on).
    #[must_use]
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.slow_start = Some(slow_start);
        self
    }

    /// Consecutive failures that eject an endpoint (default 5; 0 disables ejection).
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// Base ejection time, multiplied by the number of times the endpoint was ejected
    /// (default 30 s).
    #[must_use]
    pub fn base_ejection(mut self, time: Duration) -> Self {
        self.base_ejection = time;
        self
    }

    /// Longest ejection (default 300 s, Envoy's `max_ejection_time`).
    #[must_use]
    pub fn max_ejection(mut self, time: Duration) -> Self {
        self.max_ejection = time;
        self
    }

    /// At most this share of the endpoints may be ejected at once (default 10), except for
    /// the first one (see [`always_eject_one`](field@Self::always_eject_one)).
    #[must_use]
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.max_ejection_percent = percent;
        self
    }

    /// Ejects an endpoint when none is ejected, even when that exceeds
    /// [`max_ejection_percent`](field@Self::max_ejection_percent) (default true, Envoy's
    /// documented behaviour).
    #[must_use]
    pub fn always_eject_one(mut self, always: bool) -> Self {
        self.always_eject_one = always;
        self
    }

    /// Below this share of un-ejected endpoints, ejection is ignored (default 50).
    #[must_use]
    pub fn panic_threshold_percent(mut self, percent: u8) -> Self {
        self.panic_threshold_percent = percent;
        self
    }

    /// PeakEWMA decay of the reported RTT estimate, for metrics (default 10 s).
    #[must_use]
    pub fn ewma_decay(mut self, decay: Duration) -> Self {
        self.ewma_decay = decay;
        self
    }

    /// The reported RTT estimate of the first endpoints before any answer (default 30 ms).
    #[must_use]
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.default_rtt = rtt;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_builders_set_their_own_field() {
        let slow = SlowStart::new(Duration::from_secs(1))
            .window(Duration::from_secs(2))
            .aggression(3.0)
            .min_weight_percent(4);
        assert_eq!(slow.window, Duration::from_secs(2));
        assert_eq!(slow.aggression, 3.0);
        assert_eq!(slow.min_weight_percent, 4);
    }

    #[test]
    fn builders_set_their_own_field() {
        let ms = Duration::from_millis;
        let slow = SlowStart::new(ms(5));
        let config = BalanceConfig::default()
            .latency_tolerance(2.5)
            .latency_floor(ms(2))
            .starvation_picks(7)
            .slow_start(slow.clone())
            .consecutive_failures(8)
            .base_ejection(ms(9))
            .max_ejection(ms(10))
            .max_ejection_percent(11)
            .always_eject_one(false)
            .panic_threshold_percent(12)
            .ewma_decay(ms(13))
            .default_rtt(ms(14));
        assert_eq!(config.latency_tolerance, 2.5);
        assert_eq!(config.latency_floor, ms(2));
        assert_eq!(config.starvation_picks, 7);
        assert_eq!(config.slow_start, Some(slow));
        assert_eq!(config.consecutive_failures, 8);
        assert_eq!(config.base_ejection, ms(9));
        assert_eq!(config.max_ejection, ms(10));
        assert_eq!(config.max_ejection_percent, 11);
        assert!(!config.always_eject_one);
        assert_eq!(config.panic_threshold_percent, 12);
        assert_eq!(config.ewma_decay, ms(13));
        assert_eq!(config.default_rtt, ms(14));
    }
}
