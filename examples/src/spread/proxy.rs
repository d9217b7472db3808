//! svc-proxy running in this process against the lab's API server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use svc_core::{ServiceKey, Store};
use svc_testkit::FakeApiServer;
use tokio::sync::oneshot;

/// How long the proxy's balancer gets to see a change after its store has: the pool follows
/// the store from its own task, woken by the same change, and svc-proxy has no handle on its
/// listeners' pools to wait on. A convergence allowance, not a measurement.
const FOLLOW: Duration = Duration::from_millis(200);

/// A running proxy; stopped when dropped.
pub struct ProxyHandle {
    store: Store,
    stop: Option<oneshot::Sender<()>>,
}

impl ProxyHandle {
    pub async fn start(api: &FakeApiServer, admin: SocketAddr) -> anyhow::Result<Self> {
        let admin = admin.to_string();
        let flags = [
            "--admin-addr",
            &admin,
            "--threads",
            "1",
            "--drain-timeout",
            "1s",
        ];
        let args = svc_proxy::Args::try_from_flags(flags.iter().copied())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let running = svc_proxy::start_with_client(args, api.try_client()?)
            .await
            .context("starting svc-proxy")?;
        let store = running.context().store.clone();
        let (stop, rx) = oneshot::channel();
        tokio::spawn(running.run_until(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            store,
            stop: Some(stop),
        })
    }

    /// Waits until the proxy's store lists exactly `ready` as the ready endpoints of `key`,
    /// and its balancer has had [`FOLLOW`] to catch up.
    pub async fn wait_for(&self, key: &ServiceKey, ready: &[SocketAddr]) -> anyhow::Result<()> {
        let mut want: Vec<SocketAddr> = ready.to_vec();
        want.sort();
        let mut rx = self.store.watch_service(key);
        let seen = rx.wait_for(|snap| {
            let Some(snap) = snap else { return false };
            let Some(port) = snap.ports.first() else {
                return false;
            };
            let mut now: Vec<SocketAddr> = port
                .endpoints
                .iter()
                .filter(|e| e.endpoint.conditions.ready)
                .map(|e| e.addr)
                .collect();
            now.sort();
            now == want
        });
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .context("the proxy never saw the change")??;
        tokio::time::sleep(FOLLOW).await;
        Ok(())
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
