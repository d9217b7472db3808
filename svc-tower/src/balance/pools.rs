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

/// Settings of a [`Pools`], as by-value builder methods; [`build`](Self::build) makes it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolsBuilder {
    store: Store,
    locality: Locality,
    config: BalanceConfig,
    seed: Option<u64>,
}

impl PoolsBuilder {
    /// Where the client runs (its node and zone), for topology-aware routing and
    /// `Local` traffic policies. Default: unknown ([`Locality::default`]).
    pub fn locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// The balancer settings every pool uses. Default [`BalanceConfig::default`].
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Seeds every pool's pick RNG from `seed`, for deterministic tests. Default: a random
    /// seed per pool.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The registry.
    pub fn build(self) -> Pools {
        Pools {
            inner: Arc::new(Inner {
                store: self.store,
                locality: self.locality,
                config: self.config,
                seed: self.seed,
                pools: Mutex::default(),
            }),
        }
    }
}

/// A registry of [`EndpointPool`]s sharing one store, client locality and configuration:
/// every caller that reaches the same Service port shares its load estimates, ejections and
/// session affinity. `Clone` is cheap.
#[derive(Clone, Debug)]
pub struct Pools {
    inner: Arc<Inner>,
}

impl Pools {
    /// A registry over `store` with the defaults: no [`Locality`] (locality rules do not
    /// apply, and a `Local` traffic policy has no endpoints) and [`BalanceConfig::default`].
    /// [`builder`](Self::builder) sets them.
    pub fn new(store: Store) -> Self {
        Self::builder(store).build()
    }

    /// A [`PoolsBuilder`] over `store`, for the client's locality, the balancer settings or a
    /// seed.
    pub fn builder(store: Store) -> PoolsBuilder {
        PoolsBuilder {
            store,
            locality: Locality::default(),
            config: BalanceConfig::default(),
            seed: None,
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

#[cfg(test)]
mod tests {
    use svc_core::store::StoreConfig;

    use super::*;

    #[test]
    fn builders_set_their_own_option() {
        let (store, _writer) = svc_core::store::store(StoreConfig::default());
        let settings = |p: &Pools| {
            (
                p.inner.locality.clone(),
                p.inner.config.clone(),
                p.inner.seed,
            )
        };
        let node = Locality::new(Some("node-1"), None);
        let tuned = BalanceConfig::default().starvation_picks(7);
        let built = Pools::builder(store.clone())
            .locality(node.clone())
            .config(tuned.clone())
            .seed(8)
            .build();
        assert_eq!(settings(&built), (node, tuned, Some(8)));
        let defaults = (Locality::default(), BalanceConfig::default(), None);
        assert_eq!(settings(&Pools::new(store)), defaults);
    }
}
