//! The response deadline of a request on an HTTP/1.1 connection, kept by the connection.
//!
//! A request on an HTTP/1.1 connection is the only one on it until its response head is in,
//! so the connection can keep the request's deadline: the request stores when it is due (one
//! atomic write) and clears it when the head is in (one more), and the connection's task has
//! one sleep for its life, moved only when it fires: once per timeout while the connection
//! is idle, or at a request's deadline. A tokio sleep of its own per request costs a
//! timer-wheel insert and removal and a poll, about 700 of the ~29,000 user-space
//! instructions a request through svc-proxy took (callgrind).
//!
//! Only requests without a body are kept this way: a body's requests are timed from the end
//! of the body (a slow upload is not the endpoint's delay), which the connection does not
//! see. When a request is overdue the connection's task ends, which closes the connection
//! (as abandoning the request does with hyper) and fails the request; the request then finds
//! that it was timed out, not failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// `due` while no request is waiting for its response head.
const IDLE: u64 = 0;
/// `due` once the connection has timed out the request that was waiting.
const OVERDUE: u64 = u64::MAX;

/// One connection's response deadline.
#[derive(Debug)]
pub(crate) struct ResponseDeadline {
    start: Instant,
    timeout: Duration,
    /// When the waiting request is due, in ns from `start`; or [`IDLE`] or [`OVERDUE`].
    due: AtomicU64,
}

impl ResponseDeadline {
    /// A deadline of `timeout` for each request on a connection that opens now.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            start: Instant::now(),
            timeout,
            due: AtomicU64::new(IDLE),
        }
    }

    /// The timeout each request gets.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request sent whole at `sent_at` waits for its response head until the guard goes.
    pub(crate) fn arm(&self, sent_at: Instant) -> Armed<'_> {
        let due = (sent_at + self.timeout).saturating_duration_since(self.start);
        let due = u64::try_from(due.as_nanos()).unwrap_or(OVERDUE - 1);
        self.due
            .store(due.clamp(IDLE + 1, OVERDUE - 1), Ordering::Release);
        Armed(self)
    }

    /// Resolves once a request has waited past its deadline, which it marks so; never while
    /// requests get their heads in time.
    pub(crate) async fn overdue(&self) {
        let sleep = tokio::time::sleep_until(self.start + self.timeout);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let next = match self.due.load(Ordering::Acquire) {
                // A request that comes later is due at least one timeout from now.
                IDLE | OVERDUE => now + self.timeout,
                due => {
                    let at = self.start + Duration::from_nanos(due);
                    if at > now {
                        at
                    } else if self
                        .due
                        .compare_exchange(due, OVERDUE, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return;
                    } else {
                        // The request got its head just now (another may have started): look
                        // again, the sleep has fired already.
                        continue;
                    }
                }
            };
            sleep.as_mut().reset(next);
        }
    }
}

/// A request waiting for its response head; dropping it (the request was abandoned) clears
/// the deadline too.
#[derive(Debug)]
pub(crate) struct Armed<'a>(&'a ResponseDeadline);

impl Armed<'_> {
    /// The response head is in, or the request failed: whether the connection had timed the
    /// request out by then (and was closed for it).
    pub(crate) fn was_overdue(self) -> bool {
        let due = self.0.due.swap(IDLE, Ordering::AcqRel);
        std::mem::forget(self);
        due == OVERDUE
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.due.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(15);

    /// Paused time: whether `overdue` resolves within `within`.
    async fn overdue_within(deadline: &ResponseDeadline, within: Duration) -> bool {
        tokio::select! {
            () = deadline.overdue() => true,
            () = tokio::time::sleep(within) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_never_overdue() {
        let deadline = ResponseDeadline::new(T);
        assert!(!overdue_within(&deadline, T * 10).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_overdue_at_its_deadline_not_before() {
        let deadline = ResponseDeadline::new(T);
        // Sent part-way through the connection's first timeout: its deadline is not the
        // moment the connection's sleep first fires.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let armed = deadline.arm(Instant::now());
        let begun = Instant::now();
        assert!(overdue_within(&deadline, T * 2).await);
        assert_eq!(
            begun.elapsed(),
            T,
            "due exactly one timeout after it was sent"
        );
        assert!(armed.was_overdue());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_in_time_is_not_overdue_and_the_next_one_is_timed_afresh() {
        let deadline = ResponseDeadline::new(T);
        let watch = deadline.overdue();
        tokio::pin!(watch);
        for _ in 0..3 {
            let armed = deadline.arm(Instant::now());
            tokio::select! {
                () = &mut watch => panic!("overdue while answered in time"),
                () = tokio::time::sleep(T - Duration::from_secs(1)) => {}
            }
            assert!(!armed.was_overdue());
        }
        // A fourth request that gets no answer is timed from when it was sent.
        let sent_at = Instant::now();
        let armed = deadline.arm(sent_at);
        watch.await;
        assert_eq!(sent_at.elapsed(), T);
        assert!(armed.was_overdue());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_leaves_the_connection_idle() {
        let deadline = ResponseDeadline::new(T);
        drop(deadline.arm(Instant::now()));
        assert!(!overdue_within(&deadline, T * 3).await);
    }
}
