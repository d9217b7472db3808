//! Balancer settings.

use std::time::Duration;

/// Outlier ejection and load estimation settings. [`Default`] gives Envoy's defaults.
///
/// Ejection follows Envoy's `consecutive_5xx` detector, fed by [`Pick::failure`]:
/// after `consecutive_failures` failures in a row an endpoint is ejected for
/// `base_ejection × (times it has been ejected)`, capped at `max_ejection`, unless that would
/// eject more than `max_ejection_percent` of the endpoints. As in Envoy, the percentage is
/// checked *including* the endpoint about to be ejected: with the default 10%, fewer than 10
/// endpoints means nothing is ever ejected (Envoy's `always_eject_one_host` is off by default;
/// set [`BalanceConfig::always_eject_one`] to change that).
///
/// When fewer than `panic_threshold_percent` of the eligible endpoints are un-ejected, the
/// balancer is in *panic* and ignores ejection altogether, as Envoy does.
///
/// [`Pick::failure`]: super::Pick::failure
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BalanceConfig {
    /// Consecutive failures that eject an endpoint (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// Base ejection time, multiplied by the number of times the endpoint was ejected
    /// (default 30 s).
    pub base_ejection: Duration,
    /// Longest ejection (default 300 s, Envoy's `max_ejection_time`).
    pub max_ejection: Duration,
    /// At most this share of the endpoints may be ejected at once (default 10).
    pub max_ejection_percent: u8,
    /// Eject one endpoint even when that exceeds `max_ejection_percent` (default false, as
    /// Envoy's `always_eject_one_host`).
    pub always_eject_one: bool,
    /// Below this share of un-ejected endpoints, ejection is ignored (default 50).
    pub panic_threshold_percent: u8,
    /// PeakEWMA decay: how fast the RTT estimate forgets (default 10 s).
    pub ewma_decay: Duration,
    /// The RTT estimate of the first endpoints, before any has answered (default 30 ms).
    /// Endpoints added later start at the mean of the pool's current estimates (at most
    /// this), so that they get their share of requests at once.
    pub default_rtt: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one: false,
            panic_threshold_percent: 50,
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        }
    }
}
