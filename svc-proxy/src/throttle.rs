//! Throttled log lines: a dead endpoint fails every connection sent to it, and a line per
//! failure would flood the log (and the disk) exactly when someone needs to read it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How often one key may log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Keys remembered before the stale ones are forgotten.
const MAX_KEYS: usize = 4096;

/// Allows one line per key per interval; the lines in between are counted, and the next line
/// reports how many occurrences it stands for.
#[derive(Debug)]
pub struct LogThrottle<K> {
    interval: Duration,
    seen: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq> LogThrottle<K> {
    /// One line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::default(),
        }
    }

    /// Records one occurrence of `key`. `Some(n)` when a line is due: it stands for `n`
    /// occurrences (this one and those not logged since the last line).
    pub fn hit(&self, key: K) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if let Some((since, quiet)) = seen.get_mut(&key) {
            if now < *since + self.interval {
                *quiet += 1;
                return None;
            }
            let n = *quiet + 1;
            *since = now;
            *quiet = 0;
            return Some(n);
        }
        if seen.len() >= MAX_KEYS {
            let interval = self.interval;
            seen.retain(|_, (since, _)| now < *since + interval);
        }
        seen.insert(key, (now, 0));
        Some(1)
    }
}

impl<K: Hash + Eq> Default for LogThrottle<K> {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_per_interval_with_a_count() {
        let t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.hit("a"), Some(1));
        assert_eq!(t.hit("b"), Some(1), "keys are independent");
        for _ in 0..5 {
            assert_eq!(t.hit("a"), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(t.hit("a"), Some(6), "the five quiet ones and this one");
        assert_eq!(t.hit("a"), None);
    }
}
