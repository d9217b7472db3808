//! Coming back quickly after an apiserver outage, without hammering a recovering apiserver.
//!
//! Each watch backs off on its own with client-go's schedule (kube-runtime's `DefaultBackoff`:
//! from 0.8 s, doubling, capped at 30 s, jittered). Alone, that leaves routing frozen for up to
//! a minute after the apiserver is back. So the two watches of a source share an
//! [`ApiHealth`]:
//!
//! - A failure that says the apiserver is unreachable or unwell (a transport error, 5xx, 429)
//!   marks it down. While it is down, one cheap probe (`GET /readyz`) per source runs on a
//!   short jittered schedule, capped at [`ProbeConfig::max_interval`] (default 4 s), each with
//!   a short timeout, so that it never waits out a 30 s connect timeout.
//! - A probe answered (2xx, or 401/403/404 from an apiserver that will not say more), or any
//!   list or watch that succeeds, marks it up, which wakes every watch waiting out a backoff:
//!   one watch's success wakes the other.
//! - A watch attempt still pending when someone else sees the apiserver come back is abandoned
//!   and retried at once (it may be stuck in a connect to a dead address).
//! - A watch that fails again right after such a wake-up (an apiserver whose `/readyz` is fine
//!   but whose lists fail) ignores wake-ups until it succeeds, so it falls back to its own
//!   schedule: lists and watches never come faster than client-go's schedule plus one, and
//!   the probes in between cost the apiserver next to nothing (no etcd, no watch cache).

use std::time::Duration;

use kube::client::Body;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the source believes about the apiserver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reachability {
    /// Answering: the last request that reached a verdict succeeded.
    Up,
    /// Not answering (or failing) since `since`, with the last error.
    Down {
        /// When the first failure of this outage happened.
        since: Instant,
        /// The last error seen.
        error: String,
    },
}

/// The probe's schedule.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProbeConfig {
    /// The first probe comes this long after the apiserver is seen down (default 0.5 s); the
    /// delay doubles up to `max_interval`.
    pub min_interval: Duration,
    /// The longest gap between probes (default 4 s): the worst-case delay from the apiserver
    /// answering again to the watches resuming.
    pub max_interval: Duration,
    /// How long one probe may take (default 2 s).
    pub timeout: Duration,
    /// Seeds the jitter (each delay is drawn from its upper half), so that thousands of nodes
    /// do not probe in step; `None` seeds from the process's random state.
    pub jitter_seed: Option<u64>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(4),
            timeout: Duration::from_secs(2),
            jitter_seed: None,
        }
    }
}

/// Builder methods, by value as kube-runtime's `watcher::Config` has them:
/// `ProbeConfig::default().max_interval(Duration::from_secs(2))`.
impl ProbeConfig {
    /// The delay before the first probe once the apiserver is seen down (default 0.5 s); it
    /// doubles up to [`max_interval`](field@Self::max_interval).
    #[must_use]
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The longest gap between probes (default 4 s): the worst-case delay from the apiserver
    /// answering again to the watches resuming.
    #[must_use]
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self
    }

    /// How long one probe may take (default 2 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Seeds the jitter, for reproducible schedules (default: seeded from the process's
    /// random state, so that thousands of nodes do not probe in step).
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }
}

/// Shared by the watches (and the probe) of one source.
#[derive(Clone, Debug)]
pub struct ApiHealth {
    state: watch::Sender<(Reachability, u64)>,
}

impl Default for ApiHealth {
    fn default() -> Self {
        Self {
            state: watch::Sender::new((Reachability::Up, 0)),
        }
    }
}

impl ApiHealth {
    /// Up, until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current belief.
    pub fn reachability(&self) -> Reachability {
        self.state.borrow().0.clone()
    }

    /// Whether the apiserver is believed up.
    pub fn is_up(&self) -> bool {
        self.state.borrow().0 == Reachability::Up
    }

    /// Counts the transitions to up; a waiter compares it with the value it started from.
    pub(super) fn ups(&self) -> u64 {
        self.state.borrow().1
    }

    /// Something reached the apiserver: mark it up and wake whoever waits for that.
    pub(super) fn report_up(&self) {
        self.state.send_if_modified(|(r, ups)| match r {
            Reachability::Up => false,
            Reachability::Down { since, .. } => {
                tracing::info!(down_for = ?since.elapsed(), "the apiserver answers again");
                *r = Reachability::Up;
                *ups += 1;
                true
            }
        });
    }

    /// A request failed in a way that says the apiserver is unreachable or unwell.
    pub(super) fn report_down(&self, error: &kube::Error) {
        let error = error.to_string();
        self.state.send_modify(|(r, _)| match r {
            Reachability::Up => {
                tracing::warn!(%error, "the apiserver does not answer; probing it until it does");
                *r = Reachability::Down {
                    since: Instant::now(),
                    error,
                };
            }
            Reachability::Down { error: last, .. } => *last = error,
        });
    }

    /// Wakes every waiter as if the apiserver came back (a reload request).
    pub(super) fn wake(&self) {
        self.state.send_modify(|(_, ups)| *ups += 1);
    }

    /// Resolves once the apiserver has come back (or a reload asked for a retry) after `ups`
    /// was read; at once if that happened already.
    pub(super) async fn up_after(&self, ups: u64) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx.wait_for(|(_, n)| *n > ups).await;
    }

    async fn down(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|(r, _)| *r != Reachability::Up).await;
    }
}

/// Whether a failed request says the apiserver is unreachable or unwell (rather than that this
/// request was wrong: 4xx other than 429).
pub(super) fn unreachable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => false,
        _ => true,
    }
}

/// A tiny, seedable generator for jitter (SplitMix64).
struct Jitter(u64);

impl Jitter {
    fn new(seed: Option<u64>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        Self(seed.unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        }))
    }

    /// A duration drawn uniformly from `[d/2, d]`.
    fn upper_half(&mut self, d: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + fraction / 2.0)
    }
}

/// Asks `/readyz`; `Ok` when the apiserver answers as ready, or will not say (401/403/404).
async fn probe_once(client: &kube::Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Body::from(Vec::new()))
        .map_err(|e| e.to_string())?;
    let response = client.send(request).await.map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200..=299 | 401 | 403 | 404 => Ok(()),
        code => Err(format!("/readyz answered {code}")),
    }
}

/// Runs forever: whenever the apiserver is believed down, probes it until it answers.
pub(super) async fn probe(client: kube::Client, health: ApiHealth, config: ProbeConfig) {
    let mut jitter = Jitter::new(config.jitter_seed);
    loop {
        health.down().await;
        let mut delay = config.min_interval;
        loop {
            let ups = health.ups();
            tokio::select! {
                _ = tokio::time::sleep(jitter.upper_half(delay)) => {}
                // A watch got through meanwhile.
                _ = health.up_after(ups) => break,
            }
            match tokio::time::timeout(config.timeout, probe_once(&client)).await {
                Ok(Ok(())) => {
                    health.report_up();
                    break;
                }
                Ok(Err(error)) => tracing::debug!(%error, "apiserver probe failed"),
                Err(_) => tracing::debug!(timeout = ?config.timeout, "apiserver probe timed out"),
            }
            delay = (delay * 2).min(config.max_interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half_and_varies() {
        let mut j = Jitter::new(Some(7));
        let d = Duration::from_secs(4);
        let draws: Vec<Duration> = (0..1000).map(|_| j.upper_half(d)).collect();
        assert!(draws.iter().all(|x| *x >= d / 2 && *x <= d));
        let low = draws.iter().filter(|x| **x < d * 3 / 4).count();
        assert!(
            (300..700).contains(&low),
            "{low} of 1000 in the lower quarter"
        );
    }

    #[test]
    fn probe_builders_set_their_own_field() {
        let config = ProbeConfig::default()
            .min_interval(Duration::from_millis(1))
            .max_interval(Duration::from_millis(2))
            .timeout(Duration::from_millis(3))
            .jitter_seed(4);
        assert_eq!(config.min_interval, Duration::from_millis(1));
        assert_eq!(config.max_interval, Duration::from_millis(2));
        assert_eq!(config.timeout, Duration::from_millis(3));
        assert_eq!(config.jitter_seed, Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn up_wakes_only_after_a_real_transition() {
        let health = ApiHealth::new();
        let ups = health.ups();
        health.report_down(&kube::Error::LinesCodecMaxLineLengthExceeded);
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.up_after(ups).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        health.report_up();
        waiter.await.unwrap();
        assert!(health.is_up());
    }
}
