//! The store: one [`Writer`] applies changes, any number of [`Store`] readers look things up
//! and subscribe.
//!
//! Readers get `Arc<ServiceSnapshot>`s, never lock guards: a lookup takes a read lock only long
//! enough to clone an `Arc`. Subscriptions are built on `tokio::sync::watch`, so a slow
//! subscriber never blocks the writer; it skips intermediate states and sees the latest one.

mod demand;
mod freshness;
mod held;
mod index;
mod origin;
mod ready;
mod snapshot;
mod subscribe;
mod writer;

pub use demand::{DemandRequests, Wanted};
pub use freshness::{
    Connection, Freshness, LagHistogram, LagSnapshot, ResourceKind, WatchFreshness, WatchStats,
    LAG_BUCKETS,
};
pub use index::{VipKind, VipMatch};
pub use origin::{NotSynced, Origin, SourceError};
pub use snapshot::{PortEndpoint, PortSnapshot, ServiceSnapshot};
pub use subscribe::{ChangeFeed, EndpointUpdates, PortRef, Update};
pub use writer::{store, Event, Writer};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::model::{Protocol, ServiceKey};
use crate::name;
use index::{Index, VipKey};
use origin::SyncState;
use subscribe::FeedShared;

/// How names are qualified, and how long [`Store::ready_for`] waits once a source fails.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The cluster DNS domain (default `cluster.local`).
    pub cluster_domain: String,
    /// The namespace that a bare `svc` name means (default `default`).
    pub default_namespace: String,
    /// How long [`Store::ready_for`] still waits after a source reported an error before it
    /// gives up with [`NotSynced::Source`] (default 250 ms: long enough for a retry that a
    /// blip needs, short enough that a 403 is not mistaken for latency).
    pub error_grace: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            default_namespace: "default".into(),
            error_grace: Duration::from_millis(250),
        }
    }
}

/// Builder methods, by value as kube-runtime's `watcher::Config` has them:
/// `StoreConfig::default().cluster_domain("corp.local").default_namespace("shop")`.
impl StoreConfig {
    /// The cluster DNS domain (default `cluster.local`).
    #[must_use]
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// The namespace that a bare `svc` name means (default `default`).
    #[must_use]
    pub fn default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.default_namespace = namespace.into();
        self
    }

    /// How long [`Store::ready_for`] still waits after a source reported an error (default
    /// 250 ms); see [`error_grace`](field@StoreConfig::error_grace).
    #[must_use]
    pub fn error_grace(mut self, grace: Duration) -> Self {
        self.error_grace = grace;
        self
    }
}

type ServiceWatch = watch::Sender<Option<Arc<ServiceSnapshot>>>;

struct Shared {
    config: StoreConfig,
    index: RwLock<Index>,
    watchers: Mutex<HashMap<ServiceKey, ServiceWatch>>,
    feeds: Mutex<Vec<Weak<FeedShared>>>,
    sync: watch::Sender<SyncState>,
    freshness: Freshness,
    demand: Mutex<Option<Arc<demand::Demand>>>,
}

impl Shared {
    fn new(config: StoreConfig) -> Self {
        Self {
            config,
            index: RwLock::default(),
            watchers: Mutex::default(),
            feeds: Mutex::default(),
            sync: watch::Sender::new(SyncState::default()),
            freshness: Freshness::default(),
            demand: Mutex::default(),
        }
    }

    /// A full list from `origin` was applied: it is synced for that kind, and its error (if
    /// any) is over.
    fn mark_synced(&self, origin: &origin::Origin, kind: ResourceKind) {
        self.sync.send_if_modified(|s| {
            let entry = s.origins.entry(origin.clone()).or_default();
            let (global, own) = match kind {
                ResourceKind::Service => (&mut s.services, &mut entry.services),
                ResourceKind::EndpointSlice => (&mut s.slices, &mut entry.slices),
            };
            let error = &mut entry.errors[origin::kind_index(kind)];
            let changed = !std::mem::replace(own, true) | error.take().is_some();
            !std::mem::replace(global, true) | changed
        });
    }

    fn forget_origin(&self, origin: &origin::Origin) {
        self.sync
            .send_if_modified(|s| s.origins.remove(origin).is_some());
    }

    fn publish(&self, snapshots: Vec<(ServiceKey, Option<Arc<ServiceSnapshot>>)>) {
        {
            let mut index = self.index.write();
            for (key, snap) in &snapshots {
                index.set(key, snap.clone());
            }
        }
        {
            let mut watchers = self.watchers.lock();
            for (key, snap) in &snapshots {
                if let Some(tx) = watchers.get(key) {
                    if tx.receiver_count() == 0 {
                        watchers.remove(key);
                    } else {
                        tx.send_replace(snap.clone());
                    }
                }
            }
        }
        let mut feeds = self.feeds.lock();
        feeds.retain(|feed| match feed.upgrade() {
            Some(feed) => {
                feed.push(snapshots.iter().map(|(k, _)| k.clone()));
                true
            }
            None => false,
        });
    }
}

/// The reading half of the store: `Clone`, cheap, read-only.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("services", &self.len())
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl Store {
    /// The naming configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The Service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<Arc<ServiceSnapshot>> {
        self.get_parts(&key.namespace, &key.name)
    }

    /// The Service `name` in `namespace`.
    pub fn get_parts(&self, namespace: &str, name: &str) -> Option<Arc<ServiceSnapshot>> {
        self.shared.index.read().get(namespace, name).cloned()
    }

    /// The Service a pod would reach by this host name: `svc`, `svc.ns`, `svc.ns.svc` or
    /// `svc.ns.svc.<cluster-domain>` (a trailing dot and upper case are accepted).
    pub fn resolve_name(&self, host: &str) -> Option<Arc<ServiceSnapshot>> {
        let config = &self.shared.config;
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.resolve_name(&host.to_ascii_lowercase());
        }
        let parts = name::parse(host, &config.cluster_domain)?;
        let namespace = parts.namespace.unwrap_or(&config.default_namespace);
        self.get_parts(namespace, parts.name)
    }

    /// The Service port reached at `ip:port` over `protocol`: a cluster IP, an external IP or a
    /// load-balancer ingress IP.
    pub fn lookup_vip(&self, ip: IpAddr, port: u16, protocol: Protocol) -> Option<VipMatch> {
        let key = VipKey {
            ip: Some(ip),
            port,
            protocol,
        };
        self.shared.index.read().vip(&key).cloned()
    }

    /// The Service that has `ip` among its cluster IPs (for reverse DNS). If two claim it (a
    /// bad manifest), the lower `namespace/name` wins, as for [`Store::lookup_vip`].
    pub fn lookup_cluster_ip(&self, ip: IpAddr) -> Option<Arc<ServiceSnapshot>> {
        self.shared.index.read().cluster_ip(&ip).cloned()
    }

    /// The Service port reached at a NodePort.
    pub fn lookup_node_port(&self, port: u16, protocol: Protocol) -> Option<VipMatch> {
        let key = VipKey {
            ip: None,
            port,
            protocol,
        };
        self.shared.index.read().vip(&key).cloned()
    }

    /// Every Service, sorted by key.
    pub fn services(&self) -> Vec<Arc<ServiceSnapshot>> {
        let mut all: Vec<_> = self.shared.index.read().iter().cloned().collect();
        all.sort_unstable_by(|a, b| a.service.key.cmp(&b.service.key));
        all
    }

    /// The number of Services.
    pub fn len(&self) -> usize {
        self.shared.index.read().len()
    }

    /// Whether there are no Services.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A coalescing watch on one Service: the receiver always holds its latest snapshot
    /// (`None` while it does not exist).
    pub fn watch_service(&self, key: &ServiceKey) -> watch::Receiver<Option<Arc<ServiceSnapshot>>> {
        let mut watchers = self.shared.watchers.lock();
        if let Some(tx) = watchers.get(key) {
            return tx.subscribe();
        }
        // Read the current state while holding the watcher lock: the writer publishes to the
        // index before it takes this lock, so no update can fall between the read and the
        // registration.
        let tx = watch::Sender::new(self.get(key));
        let rx = tx.subscribe();
        watchers.insert(key.clone(), tx);
        rx
    }

    /// A stream of [`Update`]s for one Service port (linkerd's resolution shape): `Reset` with
    /// the full set first, then `Add`/`Remove`, or `DoesNotExist` while the Service or port
    /// is missing.
    pub fn subscribe(&self, key: &ServiceKey, port: PortRef) -> EndpointUpdates {
        EndpointUpdates::new(self.watch_service(key), port)
    }

    /// A feed of the keys of Services that changed (added, changed or removed). It starts with
    /// every Service that exists now, and coalesces: a slow reader gets each changed key once.
    pub fn changes(&self) -> ChangeFeed {
        let feed = Arc::new(FeedShared::default());
        let mut feeds = self.shared.feeds.lock();
        // Seed under the feeds lock, so that nothing published meanwhile is missed.
        feed.push(
            self.shared
                .index
                .read()
                .iter()
                .map(|s| s.service.key.clone()),
        );
        feeds.push(Arc::downgrade(&feed));
        ChangeFeed::new(feed)
    }

    /// Whether the initial lists of both Services and EndpointSlices have been applied (and
    /// those of every origin a source [announced](Store::expect_origin)).
    pub fn is_synced(&self) -> bool {
        self.shared.sync.borrow().synced()
    }

    /// Resolves once the initial lists of both Services and EndpointSlices have been applied
    /// (and those of every origin a source [announced](Store::expect_origin)).
    pub async fn wait_until_ready(&self) {
        let mut rx = self.shared.sync.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
        let _ = rx.wait_for(SyncState::synced).await;
    }

    /// Watch activity and propagation lag.
    pub fn freshness(&self) -> &Freshness {
        &self.shared.freshness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_their_own_field() {
        let config = StoreConfig::default()
            .cluster_domain("corp.local")
            .default_namespace("shop")
            .error_grace(Duration::from_millis(7));
        assert_eq!(config.cluster_domain, "corp.local");
        assert_eq!(config.default_namespace, "shop");
        assert_eq!(config.error_grace, Duration::from_millis(7));
    }
}
