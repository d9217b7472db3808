//! Fault injection state and request counters of the fake API server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::kind::Kind;

/// An injected failure: HTTP status and optional `Retry-After` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
}

#[derive(Debug, Default)]
struct Injected {
    remaining: usize,
    failure: Option<Failure>,
    latency: Duration,
}

/// Faults the server applies to requests and watch streams.
#[derive(Debug)]
pub(crate) struct Faults {
    injected: Mutex<Injected>,
    /// `true` while watches are stalled.
    pub(crate) stall: watch::Sender<bool>,
    /// Bumped to drop every open watch.
    pub(crate) drops: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            injected: Mutex::default(),
            stall: watch::Sender::new(false),
            drops: watch::Sender::new(0),
        }
    }
}

impl Faults {
    /// Fails the next `n` requests with `failure`.
    pub(crate) fn fail_next(&self, n: usize, failure: Failure) {
        let mut injected = self.injected.lock();
        injected.remaining = n;
        injected.failure = Some(failure);
    }

    /// Takes one pending failure, if any.
    pub(crate) fn take_failure(&self) -> Option<Failure> {
        let mut injected = self.injected.lock();
        if injected.remaining == 0 {
            return None;
        }
        injected.remaining -= 1;
        injected.failure
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.injected.lock().latency = latency;
    }

    pub(crate) fn latency(&self) -> Duration {
        self.injected.lock().latency
    }

    pub(crate) fn set_stalled(&self, stalled: bool) {
        self.stall.send_replace(stalled);
    }

    pub(crate) fn drop_watches(&self) {
        self.drops.send_modify(|generation| *generation += 1);
    }
}

/// Request counters, for assertions in tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    lists: [AtomicU64; 2],
    watches: [AtomicU64; 2],
}

impl Counters {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_list(&self, kind: Kind) {
        self.lists[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_watch(&self, kind: Kind) {
        self.watches[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn lists(&self, kind: Kind) -> u64 {
        self.lists[kind.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn watches(&self, kind: Kind) -> u64 {
        self.watches[kind.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_consumed() {
        let faults = Faults::default();
        assert_eq!(faults.take_failure(), None);
        let f = Failure {
            status: 503,
            retry_after: Some(1),
        };
        faults.fail_next(2, f);
        assert_eq!(faults.take_failure(), Some(f));
        assert_eq!(faults.take_failure(), Some(f));
        assert_eq!(faults.take_failure(), None);
    }
}
