//! The only mutator of the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::freshness::ResourceKind;
use super::snapshot::{self, ServiceSnapshot};
use super::{Shared, Store, StoreConfig};
use crate::model::{EndpointSlice, Service, ServiceKey, SliceKey, Str};

/// A change to apply to the store. Sources produce these; the [`Writer`] applies them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A Service was created or changed.
    ApplyService(Service),
    /// A Service was deleted.
    DeleteService(ServiceKey),
    /// An EndpointSlice was created or changed.
    ApplySlice(EndpointSlice),
    /// An EndpointSlice was deleted.
    DeleteSlice(SliceKey),
    /// A full list of Services (initial sync or relist): replaces every Service at once.
    ReplaceServices {
        /// Every Service that exists now.
        services: Vec<Service>,
        /// Services that exist but could not be converted: keep their last good version.
        retain: Vec<ServiceKey>,
    },
    /// A full list of EndpointSlices: replaces every slice at once.
    ReplaceSlices {
        /// Every slice that exists now.
        slices: Vec<EndpointSlice>,
        /// Slices that exist but could not be converted: keep their last good version.
        retain: Vec<SliceKey>,
    },
}

type SliceMap = BTreeMap<Str, Arc<EndpointSlice>>;

/// The writing half of the store (not `Clone`): applies [`Event`]s incrementally and publishes
/// per-Service snapshots to the [`Store`] readers.
///
/// Applying one Service or slice change rebuilds only that Service's snapshot: the cost is
/// proportional to that Service's endpoints, not to the cluster.
pub struct Writer {
    shared: Arc<Shared>,
    services: HashMap<ServiceKey, Arc<Service>>,
    /// Slices by owning Service. Slices of a Service that does not exist (yet) are staged here
    /// and published when it arrives.
    slices: HashMap<ServiceKey, SliceMap>,
    slice_owner: HashMap<SliceKey, ServiceKey>,
}

impl Writer {
    /// Creates an empty store and its writer.
    pub fn new(config: StoreConfig) -> (Writer, Store) {
        let shared = Arc::new(Shared::new(config));
        let writer = Writer {
            shared: shared.clone(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
        };
        (writer, Store { shared })
    }

    /// A reader of this writer's store.
    pub fn store(&self) -> Store {
        Store {
            shared: self.shared.clone(),
        }
    }

    /// Applies one event and publishes its effect.
    pub fn apply(&mut self, event: Event) {
        let changed = match event {
            Event::ApplyService(svc) => self.apply_service(svc),
            Event::DeleteService(key) => self.services.remove(&key).map(|_| key),
            Event::ApplySlice(slice) => return self.apply_slice(slice),
            Event::DeleteSlice(key) => self.delete_slice(&key),
            Event::ReplaceServices { services, retain } => {
                let changed = self.replace_services(services, retain);
                self.publish(changed);
                self.shared.mark_synced(ResourceKind::Service);
                return;
            }
            Event::ReplaceSlices { slices, retain } => {
                let changed = self.replace_slices(slices, retain);
                self.publish(changed);
                self.shared.mark_synced(ResourceKind::EndpointSlice);
                return;
            }
        };
        self.publish(changed.into_iter().collect());
    }

    /// Applies every event currently queued in `events`, then waits for more; returns when
    /// every sender is gone.
    pub async fn run(mut self, mut events: tokio::sync::mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.apply(event);
        }
    }

    fn apply_service(&mut self, svc: Service) -> Option<ServiceKey> {
        let key = svc.key.clone();
        match self.services.get(&key) {
            Some(old) if **old == svc => None,
            _ => {
                self.services.insert(key.clone(), Arc::new(svc));
                Some(key)
            }
        }
    }

    fn apply_slice(&mut self, slice: EndpointSlice) {
        let mut changed = Vec::with_capacity(2);
        let owner = slice.service.clone();
        if let Some(previous) = self.slice_owner.get(&slice.key) {
            if *previous != owner {
                // The service-name label changed: the slice moves between Services.
                let previous = previous.clone();
                self.remove_slice_from(&previous, &slice.key.name);
                changed.push(previous);
            }
        }
        let by_name = self.slices.entry(owner.clone()).or_default();
        if by_name.get(&slice.key.name).is_some_and(|s| **s == slice) && changed.is_empty() {
            return;
        }
        if let Some(trigger) = slice.last_change_trigger_time {
            self.shared.freshness.lag.observe_trigger(trigger);
        }
        self.slice_owner.insert(slice.key.clone(), owner.clone());
        by_name.insert(slice.key.name.clone(), Arc::new(slice));
        changed.push(owner);
        self.publish(changed);
    }

    fn remove_slice_from(&mut self, owner: &ServiceKey, name: &str) {
        if let Some(map) = self.slices.get_mut(owner) {
            map.remove(name);
            if map.is_empty() {
                self.slices.remove(owner);
            }
        }
    }

    fn delete_slice(&mut self, key: &SliceKey) -> Option<ServiceKey> {
        let owner = self.slice_owner.remove(key)?;
        self.remove_slice_from(&owner, &key.name);
        Some(owner)
    }

    fn replace_services(&mut self, list: Vec<Service>, retain: Vec<ServiceKey>) -> Vec<ServiceKey> {
        let mut next: HashMap<ServiceKey, Arc<Service>> = HashMap::with_capacity(list.len());
        for key in retain {
            if let Some(old) = self.services.get(&key) {
                next.insert(key, old.clone());
            }
        }
        for svc in list {
            let key = svc.key.clone();
            match self.services.get(&key) {
                // Keep the old Arc when nothing changed, so unchanged Services are not republished.
                Some(old) if **old == svc => next.insert(key, old.clone()),
                _ => next.insert(key, Arc::new(svc)),
            };
        }
        let mut changed: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(k, old)| next.get(*k).is_none_or(|new| !Arc::ptr_eq(old, new)))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            next.keys()
                .filter(|k| !self.services.contains_key(*k))
                .cloned(),
        );
        self.services = next;
        changed
    }

    fn replace_slices(
        &mut self,
        list: Vec<EndpointSlice>,
        retain: Vec<SliceKey>,
    ) -> Vec<ServiceKey> {
        let mut next: HashMap<ServiceKey, SliceMap> = HashMap::new();
        let mut next_owner: HashMap<SliceKey, ServiceKey> = HashMap::with_capacity(list.len());
        for key in retain {
            let Some(owner) = self.slice_owner.get(&key) else {
                continue;
            };
            if let Some(old) = self.slices.get(owner).and_then(|m| m.get(&key.name)) {
                next.entry(owner.clone())
                    .or_default()
                    .insert(key.name.clone(), old.clone());
                next_owner.insert(key, owner.clone());
            }
        }
        for slice in list {
            let owner = slice.service.clone();
            let old = self.slices.get(&owner).and_then(|m| m.get(&slice.key.name));
            let slice = match old {
                Some(old) if **old == slice => old.clone(),
                _ => {
                    // Only changes count: a relist re-delivers old slices with old trigger times.
                    if let Some(trigger) = slice.last_change_trigger_time {
                        self.shared.freshness.lag.observe_trigger(trigger);
                    }
                    Arc::new(slice)
                }
            };
            next_owner.insert(slice.key.clone(), owner.clone());
            next.entry(owner)
                .or_default()
                .insert(slice.key.name.clone(), slice);
        }
        let same = |a: &SliceMap, b: &SliceMap| {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
        };
        let mut changed: HashSet<ServiceKey> = self
            .slices
            .iter()
            .filter(|(k, old)| next.get(*k).is_none_or(|new| !same(old, new)))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            next.keys()
                .filter(|k| !self.slices.contains_key(*k))
                .cloned(),
        );
        self.slices = next;
        self.slice_owner = next_owner;
        changed.into_iter().collect()
    }

    /// Rebuilds the snapshots of `changed` Services outside the lock, swaps them all in under
    /// one write lock (so a relist is seen whole or not at all), then notifies subscribers.
    fn publish(&mut self, changed: Vec<ServiceKey>) {
        if changed.is_empty() {
            return;
        }
        let empty = SliceMap::new();
        let snapshots: Vec<(ServiceKey, Option<Arc<ServiceSnapshot>>)> = changed
            .into_iter()
            .map(|key| {
                let snap = self.services.get(&key).map(|svc| {
                    let slices = self.slices.get(&key).unwrap_or(&empty);
                    Arc::new(snapshot::build(svc.clone(), slices))
                });
                (key, snap)
            })
            .collect();
        self.shared.publish(snapshots);
    }
}
