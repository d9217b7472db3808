//! [`PoolBuilder`] and the task that keeps a pool up to date.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use svc_core::store::{PortRef, ServiceSnapshot};
use svc_core::{ServiceKey, Store};
use tokio::sync::watch;

use super::endpoint::EndpointState;
use super::pool::{EndpointPool, Shared};
use super::rng::SplitMix;
use super::BalanceConfig;
use crate::policy::{Locality, Scope};

/// Aborts the follower task when the last pool handle goes.
#[derive(Debug)]
pub(super) struct TaskGuard(pub(super) tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Options for an [`EndpointPool`], set with by-value methods; made by
/// [`EndpointPool::builder`], the one way to make a pool.
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    pub(super) store: Store,
    pub(super) key: ServiceKey,
    pub(super) port: PortRef,
    pub(super) locality: Locality,
    pub(super) scope: Scope,
    pub(super) config: BalanceConfig,
    pub(super) seed: Option<u64>,
}

impl PoolBuilder {
    /// Where the client runs (default: unknown node and zone).
    #[must_use]
    pub fn locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// How the Service is reached (default [`Scope::Internal`]).
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Balancer settings (default [`BalanceConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Seeds the pick RNG, for deterministic tests (default: a random seed).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the pool and spawns its follower task.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the follower task needs one).
    pub fn build(self) -> EndpointPool {
        let mut rx = self.store.watch_service(&self.key);
        let shared = Arc::new(Shared::new(
            self.key,
            self.port,
            self.locality,
            self.scope,
            self.config,
            self.seed.unwrap_or_else(SplitMix::random_seed),
        ));
        let mut states = HashMap::new();
        let initial = rx.borrow_and_update().clone();
        let synced = self.store.is_synced();
        shared.update(initial.as_deref(), synced, &mut states);
        let task = tokio::spawn(follow(
            Arc::downgrade(&shared),
            rx,
            self.store,
            synced,
            states,
        ));
        EndpointPool {
            shared,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        }
    }
}

async fn follow(
    shared: Weak<Shared>,
    mut rx: watch::Receiver<Option<Arc<ServiceSnapshot>>>,
    store: Store,
    // Whether the store was synced when the pool last updated.
    mut synced: bool,
    mut states: HashMap<SocketAddr, Arc<EndpointState>>,
) {
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = store.wait_until_ready(), if !synced => synced = true,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let snapshot = rx.borrow_and_update().clone();
        shared.update(snapshot.as_deref(), synced, &mut states);
    }
}

#[cfg(test)]
mod tests {
    use svc_core::model::Protocol;
    use svc_core::StoreConfig;

    use super::*;

    #[test]
    fn builders_set_their_own_option() {
        let (store, _writer) = svc_core::store::store(StoreConfig::default());
        let locality = Locality::new(Some("node-1"), Some("zone-a"));
        let port = PortRef::Number(80, Protocol::Tcp);
        let builder = EndpointPool::builder(store, ServiceKey::new("shop", "web"), port)
            .locality(locality.clone())
            .scope(Scope::External)
            .config(BalanceConfig::default().starvation_picks(7))
            .seed(8);
        assert_eq!(builder.locality, locality);
        assert_eq!(builder.scope, Scope::External);
        assert_eq!(builder.config.starvation_picks, 7);
        assert_eq!(builder.seed, Some(8));
    }
}
