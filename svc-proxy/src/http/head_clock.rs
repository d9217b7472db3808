//! The header read timeout, kept per connection rather than by hyper.
//!
//! hyper's HTTP/1 header timer boxes a new sleep for every request head and puts it in and
//! takes it out of tokio's timer wheel (it is armed while the connection waits for the next
//! keep-alive request, that is always). Here a connection has one sleep for its life, moved
//! only when it fires (at most once per timeout), and a request costs two counter updates
//! and one clock read when its response ends.
//!
//! The rule is hyper's, applied from the connection's start (where hyper's own timer starts
//! only once hyper-util's auto builder has seen the client's first bytes): a request head
//! must be complete within the timeout of the moment the connection started waiting for it,
//! which is the connection's start or the end of the previous response. Bodies are not
//! timed. HTTP/2 connections are held to it for their first request only (hyper's HTTP/2
//! server has no header timeout, and streams overlap).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// A connection's requests in flight and when it last went idle.
#[derive(Debug)]
pub struct HeadClock {
    start: Instant,
    /// Requests whose response has not ended.
    in_flight: AtomicU32,
    /// When the last response ended, in ns from `start` (0: none yet).
    idle_since: AtomicU64,
    /// The connection speaks HTTP/2: only its first request was timed.
    http2: AtomicBool,
}

impl HeadClock {
    /// A clock for a connection that starts waiting for its first head now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    /// A request head is complete.
    pub fn request(&self, version: http::Version) {
        self.in_flight.fetch_add(1, Relaxed);
        if version == http::Version::HTTP_2 && !self.http2.load(Relaxed) {
            self.http2.store(true, Relaxed);
        }
    }

    /// A response has been written whole (or abandoned); with none left in flight, the
    /// connection waits for a head from now.
    pub fn response_ended(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            let since = Instant::now().saturating_duration_since(self.start);
            let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
            self.idle_since.store(nanos.max(1), Relaxed);
        }
    }

    /// Resolves once the connection has waited for a request head for `timeout`; never for
    /// an HTTP/2 connection past its first request.
    pub async fn overdue(&self, timeout: Duration) {
        let mut deadline = self.start + timeout;
        loop {
            tokio::time::sleep_until(deadline).await;
            if self.http2.load(Relaxed) {
                return std::future::pending().await;
            }
            if self.in_flight.load(Relaxed) > 0 {
                // The next wait starts when this response ends, at least one timeout away.
                deadline = Instant::now() + timeout;
                continue;
            }
            let idle_since = self.start + Duration::from_nanos(self.idle_since.load(Relaxed));
            deadline = idle_since + timeout;
            if Instant::now() >= deadline && self.in_flight.load(Relaxed) == 0 {
                return;
            }
        }
    }
}

impl Default for HeadClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    /// Paused time: `overdue` resolved by `at` (from the clock's start), or still pending.
    async fn overdue_by(clock: &HeadClock, at: Duration) -> bool {
        let target = clock.start + at;
        tokio::select! {
            biased;
            () = clock.overdue(T) => Instant::now() <= target,
            () = tokio::time::sleep_until(target) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_overdue_after_the_timeout() {
        let clock = HeadClock::new();
        assert!(!overdue_by(&clock, T - Duration::from_millis(1)).await);
        let clock = HeadClock::new();
        assert!(overdue_by(&clock, T).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_restarts_when_a_response_ends() {
        let clock = HeadClock::new();
        tokio::time::advance(Duration::from_secs(9)).await;
        clock.request(http::Version::HTTP_11);
        // A long response: not overdue while it is in flight.
        tokio::time::advance(Duration::from_secs(30)).await;
        clock.response_ended();
        // Idle since 39 s: overdue at 49 s, not before.
        assert!(!overdue_by(&clock, Duration::from_millis(48_999)).await);
        let clock2 = HeadClock::new();
        clock2.request(http::Version::HTTP_11);
        tokio::time::advance(Duration::from_secs(5)).await;
        clock2.response_ended();
        let ended = Instant::now();
        tokio::select! {
            () = clock2.overdue(T) => assert_eq!(Instant::now(), ended + T),
            () = tokio::time::sleep(T * 3) => panic!("never overdue"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_timed_to_their_first_request_only() {
        let clock = HeadClock::new();
        clock.request(http::Version::HTTP_2);
        clock.response_ended();
        assert!(!overdue_by(&clock, T * 10).await);
    }
}
