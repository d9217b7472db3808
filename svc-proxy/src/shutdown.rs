//! Graceful shutdown: stop accepting, drain flows up to a deadline, then cut the rest.
//!
//! [`Drain`] is a cheap handle shared by every listener and flow. Listeners stop accepting once
//! [`Drain::signaled`] resolves; flows are spawned on its task tracker so that shutdown can wait
//! for them, and long-lived ones (HTTP keep-alive connections) watch the signal too, to close
//! between requests. Flows still open at the deadline are cut ([`Drain::cut`]): with
//! `--drain-deadline-close reset` (the default) they end with a reset, so that a client of a
//! raw TCP stream sees the transfer was cut short, where a FIN would look like its end.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shutdown signal and the set of running flows.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    signal: CancellationToken,
    cut: CancellationToken,
    flows: TaskTracker,
}

impl Drain {
    /// A fresh, unsignaled drain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a flow that shutdown waits for.
    pub fn spawn<F>(&self, flow: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.flows.spawn(flow);
    }

    /// Spawns a flow that shutdown waits for on another runtime (a worker's).
    pub fn spawn_on<F>(&self, flow: F, runtime: &tokio::runtime::Handle)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.flows.spawn_on(flow, runtime);
    }

    /// Resolves once shutdown has begun.
    pub async fn signaled(&self) {
        self.signal.cancelled().await
    }

    /// Whether shutdown has begun.
    pub fn is_signaled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// A token cancelled on shutdown, or earlier by whoever holds it (a listener being removed).
    pub fn child_token(&self) -> CancellationToken {
        self.signal.child_token()
    }

    /// The number of flows still running.
    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// Begins shutdown and waits up to `deadline` for the flows to finish. Returns the number
    /// of flows still running when it gave up (0 when all drained).
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.signal.cancel();
        self.flows.close();
        let _ = tokio::time::timeout(deadline, self.flows.wait()).await;
        self.flows.len()
    }

    /// Tells the flows still running to end with a reset, and waits up to `grace` for them
    /// to do so. Returns the number still running.
    pub async fn cut(&self, grace: Duration) -> usize {
        self.cut.cancel();
        let _ = tokio::time::timeout(grace, self.flows.wait()).await;
        self.flows.len()
    }

    /// Whether the flows were cut.
    pub fn was_cut(&self) -> bool {
        self.cut.is_cancelled()
    }

    /// Resolves once the flows must be cut (see [`Drain::cut`]).
    pub async fn cutting(&self) {
        self.cut.cancelled().await
    }

    /// A token cancelled when the flows must be cut: for a socket that resets itself when it
    /// is dropped after that.
    pub fn cut_token(&self) -> CancellationToken {
        self.cut.clone()
    }
}

/// From now on, SIGHUP pulls `reload` (re-read the manifests, or retry the API at once)
/// instead of killing the process, its default action.
pub fn reload_on_hangup(reload: svc_core::source::Reload) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!(signal = "SIGHUP", "reloading the source");
                        reload.trigger();
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; it will kill the proxy")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_flows_then_gives_up() {
        let drain = Drain::new();
        let d = drain.clone();
        drain.spawn(async move {
            d.signaled().await;
        });
        drain.spawn(std::future::pending());
        assert_eq!(drain.active(), 2);
        let left = drain.drain(Duration::from_secs(5)).await;
        assert_eq!(
            left, 1,
            "the flow that honours the signal ends; the stuck one is left"
        );
        assert!(drain.is_signaled());
        let d = drain.clone();
        drain.spawn(async move { d.cutting().await });
        assert_eq!(
            drain.cut(Duration::from_secs(1)).await,
            1,
            "only the stuck one is left"
        );
    }
}
