//! [`Pools`]: one [`EndpointPool`] per Service port, created on first use.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use svc_core::store::PortRef;
use svc_core::{ServiceKey, Store};

use super::{BalanceConfig, EndpointPool, NoEndpointsReason};
use crate::policy::{Locality, Scope};

type PoolKey = (ServiceKey, PortRef, Scope);

/// Pools are pruned (those whose Service is gone) every this many creations.
const PRUNE_EVERY: usize = 64;

#[derive(Debug)]
struct Inner {
    store: Store,
    locality: Locality,
    config: BalanceConfig,
    seed: Option<u64>,
    pools: Mutex<(HashMap<PoolKey, EndpointPool>, usize)>,
}

/// A registry of [`EndpointPool`]s sharing one store, client locality and configuration:
/// every caller that reaches the same Service port shares its load estimates, ejections and
/// session affinity. `Clone` is cheap.
#[derive(Clone, Debug)]
pub struct Pools {
    inner: Arc<Inner>,
}

impl Pools {
    /// A registry over `store` for a client at `locality`.
    pub fn new(store: Store, locality: Locality, config: BalanceConfig) -> Self {
        Self::build(store, locality, config, None)
    }

    /// Like [`new`](Self::new), with every pool's RNG seeded from `seed` (for tests).
    pub fn with_seed(store: Store, locality: Locality, config: BalanceConfig, seed: u64) -> Self {
        Self::build(store, locality, config, Some(seed))
    }

    fn build(store: Store, locality: Locality, config: BalanceConfig, seed: Option<u64>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                locality,
                config,
                seed,
                pools: Mutex::default(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The pool for `key`'s `port` reached through `scope`, created (and its follower task
    /// spawned) on first use.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, when the pool must be created.
    pub fn get(&self, key: &ServiceKey, port: &PortRef, scope: Scope) -> EndpointPool {
        let mut guard = self.inner.pools.lock();
        let (pools, created) = &mut *guard;
        let pool_key = (key.clone(), port.clone(), scope);
        if let Some(pool) = pools.get(&pool_key) {
            return pool.clone();
        }
        *created += 1;
        if *created % PRUNE_EVERY == 0 {
            pools.retain(|_, p| p.empty_reason() != Some(NoEndpointsReason::NoService));
        }
        let inner = &self.inner;
        let mut builder = EndpointPool::builder(inner.store.clone(), key.clone(), port.clone())
            .locality(inner.locality.clone())
            .scope(scope)
            .config(inner.config.clone());
        if let Some(seed) = inner.seed {
            builder = builder.seed(seed.wrapping_add(*created as u64));
        }
        let pool = builder.build();
        pools.insert(pool_key, pool.clone());
        pool
    }

    /// Every pool created so far.
    pub fn all(&self) -> Vec<EndpointPool> {
        self.inner.pools.lock().0.values().cloned().collect()
    }
}
