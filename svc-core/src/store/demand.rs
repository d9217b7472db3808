//! On-demand interest: the names the app resolves, handed to a source that watches only those.
//!
//! The store keeps the registry (so that [`Store::ready_for`] can register a name and wait for
//! it without knowing the source), and the source takes names from [`DemandRequests`]. Each
//! registration gets an [`Origin`] of its own, with a generation number: when a name goes idle
//! its watches stop and its origin is released, and a later resolution starts over with a new
//! origin, so it never mistakes the old watch's sync for its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::origin::Origin;
use super::Store;
use crate::model::ServiceKey;

/// A name the app resolved, and the origin its watches must tag their events with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The Service.
    pub key: ServiceKey,
    /// The origin for this registration's events.
    pub origin: Origin,
}

struct Entry {
    origin: Origin,
    last_used: Instant,
}

pub(crate) struct Demand {
    prefix: String,
    requests: mpsc::UnboundedSender<Wanted>,
    names: Mutex<HashMap<ServiceKey, Entry>>,
    generation: AtomicU64,
}

impl Demand {
    /// Registers (or touches) `key`; returns the origin whose sync answers for it.
    pub(crate) fn want(&self, key: &ServiceKey) -> Origin {
        let mut names = self.names.lock();
        if let Some(entry) = names.get_mut(key) {
            entry.last_used = Instant::now();
            return entry.origin.clone();
        }
        let generation = self.generation.fetch_add(1, Relaxed);
        let origin = Origin::new(format!(
            "{}/{}/{}#{generation}",
            self.prefix, key.namespace, key.name
        ));
        names.insert(
            key.clone(),
            Entry {
                origin: origin.clone(),
                last_used: Instant::now(),
            },
        );
        // The receiver is gone only when the source stopped; the wait then times out.
        let _ = self.requests.send(Wanted {
            key: key.clone(),
            origin: origin.clone(),
        });
        origin
    }
}

/// The receiving end of on-demand interest, for the source that serves it; see
/// [`Store::serve_on_demand`].
pub struct DemandRequests {
    requests: mpsc::UnboundedReceiver<Wanted>,
    demand: Arc<Demand>,
    store: Store,
}

impl std::fmt::Debug for DemandRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemandRequests")
            .field("in_use", &self.in_use())
            .finish_non_exhaustive()
    }
}

impl DemandRequests {
    /// The next newly wanted name; `None` once the store stopped serving on demand (another
    /// source called [`Store::serve_on_demand`]).
    pub async fn recv(&mut self) -> Option<Wanted> {
        self.requests.recv().await
    }

    /// Unregisters the names that nobody resolved for `idle` and that no subscriber
    /// ([`Store::watch_service`], hence no endpoint pool) follows, and returns them: the source
    /// stops their watches and sends [`Event::Release`](super::Event::Release) for their
    /// origins.
    pub fn take_idle(&self, idle: Duration) -> Vec<Wanted> {
        let now = Instant::now();
        let mut names = self.demand.names.lock();
        let idle_keys: Vec<ServiceKey> = names
            .iter()
            .filter(|(key, e)| {
                now.saturating_duration_since(e.last_used) >= idle && !self.store.is_followed(key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        idle_keys
            .into_iter()
            .filter_map(|key| {
                names.remove(&key).map(|entry| Wanted {
                    key,
                    origin: entry.origin,
                })
            })
            .collect()
    }

    /// How many names are registered.
    pub fn in_use(&self) -> usize {
        self.demand.names.lock().len()
    }
}

impl Store {
    /// Makes this store serve names on demand: from now on [`Store::ready_for`] registers each
    /// name it is asked for and waits for that name's origin to sync. The returned
    /// [`DemandRequests`] hands the names to the source; origins are named
    /// `<prefix>/<namespace>/<name>#<generation>`. A second call replaces the first.
    pub fn serve_on_demand(&self, prefix: &str) -> DemandRequests {
        let (tx, rx) = mpsc::unbounded_channel();
        let demand = Arc::new(Demand {
            prefix: prefix.to_owned(),
            requests: tx,
            names: Mutex::default(),
            generation: AtomicU64::new(1),
        });
        *self.shared.demand.lock() = Some(demand.clone());
        // Wake waits that started before: they register their names now.
        self.shared.sync.send_modify(|_| {});
        DemandRequests {
            requests: rx,
            demand,
            store: self.clone(),
        }
    }

    pub(crate) fn demand(&self) -> Option<Arc<Demand>> {
        self.shared.demand.lock().clone()
    }

    /// Whether something follows this Service through [`Store::watch_service`].
    pub(crate) fn is_followed(&self, key: &ServiceKey) -> bool {
        self.shared
            .watchers
            .lock()
            .get(key)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }
}
