//! Helpers shared by svc-core's integration tests.

use std::future::Future;
use std::time::Duration;

/// A generous bound for things that normally take milliseconds; not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it holds; fails the test after [`PATIENCE`]. For convergence only:
/// first-try behaviour is asserted directly.
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
