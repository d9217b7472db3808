//! How fresh the store is: per-watch activity and the propagation lag of endpoint changes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Which watch a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceKind {
    /// core/v1 Services.
    Service,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlice,
}

impl ResourceKind {
    /// A short lowercase name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "services",
            Self::EndpointSlice => "endpointslices",
        }
    }
}

/// Whether a watch is getting through to the API right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Connection {
    /// No request has reached a verdict yet.
    #[default]
    Starting,
    /// The last list or watch request succeeded.
    Connected,
    /// Requests fail since `since`; `error` is the last failure.
    Disconnected {
        /// When the first failure of this run happened.
        since: Instant,
        /// The last error.
        error: String,
    },
}

/// Activity counters of one watch. Sources update them; anyone may read them.
#[derive(Debug, Default)]
pub struct WatchFreshness {
    connection: Mutex<Connection>,
    last_activity: Mutex<Option<Instant>>,
    events: AtomicU64,
    bookmarks: AtomicU64,
    relists: AtomicU64,
    stall_restarts: AtomicU64,
    errors: AtomicU64,
}

/// A copy of a watch's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchStats {
    /// Time since the last event or bookmark, if there was one.
    pub since_last_activity: Option<Duration>,
    /// Objects received (list items and watch events).
    pub events: u64,
    /// Bookmarks received.
    pub bookmarks: u64,
    /// Full lists, the first one included (410 Gone leads to another).
    pub relists: u64,
    /// Watches restarted because they went silent past the stall bound.
    pub stall_restarts: u64,
    /// Failed requests or error events.
    pub errors: u64,
}

impl WatchFreshness {
    fn touch(&self) {
        *self.last_activity.lock() = Some(Instant::now());
    }
    /// Records `n` objects received.
    pub fn record_events(&self, n: u64) {
        self.events.fetch_add(n, Relaxed);
        self.touch();
    }
    /// Records a bookmark.
    pub fn record_bookmark(&self) {
        self.bookmarks.fetch_add(1, Relaxed);
        self.touch();
    }
    /// Records the start of a full list.
    pub fn record_relist(&self) {
        self.relists.fetch_add(1, Relaxed);
    }
    /// Records a watch restarted for silence.
    pub fn record_stall_restart(&self) {
        self.stall_restarts.fetch_add(1, Relaxed);
    }
    /// Records a failed request or an error event.
    pub fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    /// Records a list or watch request that succeeded.
    pub fn record_connected(&self) {
        *self.connection.lock() = Connection::Connected;
    }
    /// Records a list or watch request that failed; the outage's start is kept.
    pub fn record_disconnected(&self, error: impl std::fmt::Display) {
        let mut c = self.connection.lock();
        let since = match &*c {
            Connection::Disconnected { since, .. } => *since,
            _ => Instant::now(),
        };
        *c = Connection::Disconnected {
            since,
            error: error.to_string(),
        };
    }
    /// Whether the watch is getting through right now.
    pub fn connection(&self) -> Connection {
        self.connection.lock().clone()
    }
    /// Reads the counters.
    pub fn stats(&self) -> WatchStats {
        WatchStats {
            since_last_activity: self.last_activity.lock().map(|t| t.elapsed()),
            events: self.events.load(Relaxed),
            bookmarks: self.bookmarks.load(Relaxed),
            relists: self.relists.load(Relaxed),
            stall_restarts: self.stall_restarts.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// Upper bounds (seconds) of the propagation-lag histogram buckets; the last bucket is +Inf.
pub const LAG_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A fixed-bucket histogram of the time from an endpoint change (the
/// `endpoints.kubernetes.io/last-change-trigger-time` annotation) to its arrival in the store.
#[derive(Debug, Default)]
pub struct LagHistogram {
    counts: [AtomicU64; LAG_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of the histogram: non-cumulative counts per bucket (the last is +Inf) and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LagSnapshot {
    /// Observations per bucket of [`LAG_BUCKETS`], then one for +Inf.
    pub counts: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl LagSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl LagHistogram {
    /// Records one lag.
    pub fn observe(&self, lag: Duration) {
        let secs = lag.as_secs_f64();
        let bucket = LAG_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LAG_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(lag.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Records the lag of a change triggered at `trigger` (the wall clock is what the
    /// annotation uses; a trigger in the future, from clock skew, counts as zero).
    pub fn observe_trigger(&self, trigger: SystemTime) {
        self.observe(
            SystemTime::now()
                .duration_since(trigger)
                .unwrap_or_default(),
        );
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> LagSnapshot {
        LagSnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// Freshness of the whole store.
#[derive(Debug, Default)]
pub struct Freshness {
    /// The Service watch.
    pub services: WatchFreshness,
    /// The EndpointSlice watch.
    pub slices: WatchFreshness,
    /// Propagation lag of EndpointSlice changes.
    pub lag: LagHistogram,
}

impl Freshness {
    /// The counters of one watch.
    pub fn watch(&self, kind: ResourceKind) -> &WatchFreshness {
        match kind {
            ResourceKind::Service => &self.services,
            ResourceKind::EndpointSlice => &self.slices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_lands_in_the_right_bucket() {
        let h = LagHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(700));
        h.observe(Duration::from_secs(1000));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(
            s.counts[LAG_BUCKETS.iter().position(|b| *b == 1.0).unwrap()],
            1
        );
        assert_eq!(s.counts[LAG_BUCKETS.len()], 1);
        assert_eq!(s.count(), 3);
        assert!((s.sum_seconds - 1000.703).abs() < 1e-6);
    }

    #[test]
    fn future_trigger_counts_as_zero() {
        let h = LagHistogram::default();
        h.observe_trigger(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(h.snapshot().counts[0], 1);
    }
}
