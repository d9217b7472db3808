//! The only mutator of the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::freshness::ResourceKind;
use super::held::Held;
use super::origin::Origin;
use super::snapshot::{self, ServiceSnapshot};
use super::{Shared, Store, StoreConfig};
use crate::model::{EndpointSlice, Service, ServiceKey, SliceKey, Str};

/// A change to apply to the store. Sources produce these; the [`Writer`] applies them.
///
/// Events belong to an [`Origin`]: [`Event::Tagged`] names it, other events belong to
/// [`Origin::default`]. A replace from one origin never removes what another holds; an object
/// that several origins hold is served in the version applied last, and goes when the last
/// holder deletes it.
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
    /// `event`, from `origin`: its replaces replace only what `origin` holds.
    Tagged {
        /// The source (or the watch of a source) the event comes from.
        origin: Origin,
        /// The event. A nested `Tagged` event uses its own origin.
        event: Box<Event>,
    },
    /// `origin` is gone (an on-demand watch stopped): drop what only it holds and forget its
    /// sync state.
    Release(Origin),
}

impl Event {
    /// This event, from `origin`.
    pub fn tagged(self, origin: &Origin) -> Self {
        Self::Tagged {
            origin: origin.clone(),
            event: Box::new(self),
        }
    }
}

type SliceMap = BTreeMap<Str, Arc<EndpointSlice>>;

/// The writing half of the store (not `Clone`): applies [`Event`]s incrementally and publishes
/// per-Service snapshots to the [`Store`] readers.
///
/// Applying one Service or slice change rebuilds only that Service's snapshot: the cost is
/// proportional to that Service's endpoints, not to the cluster.
pub struct Writer {
    shared: Arc<Shared>,
    services: HashMap<ServiceKey, Held<Service>>,
    /// The served version of each slice, by owning Service. Slices of a Service that does not
    /// exist (yet) are staged here and published when it arrives.
    slices: HashMap<ServiceKey, SliceMap>,
    /// Every slice with the versions its origins hold (the served one names its owner).
    slice_versions: HashMap<SliceKey, Held<EndpointSlice>>,
}

/// Creates an empty store: its reader and its writer, in that order, as kube-runtime's
/// `reflector::store()` returns them. Clone the [`Store`] for every reader; more readers
/// also come from [`Writer::store`].
pub fn store(config: StoreConfig) -> (Store, Writer) {
    let writer = Writer::new(config);
    (writer.store(), writer)
}

impl Writer {
    /// Creates an empty store's writer; [`Writer::store`] gives its readers (or use
    /// [`store`](fn@store) for both at once).
    pub fn new(config: StoreConfig) -> Writer {
        Writer {
            shared: Arc::new(Shared::new(config)),
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_versions: HashMap::new(),
        }
    }

    /// A reader of this writer's store.
    pub fn store(&self) -> Store {
        Store {
            shared: self.shared.clone(),
        }
    }

    /// Applies one event and publishes its effect.
    pub fn apply(&mut self, event: Event) {
        self.apply_from(&Origin::default(), event);
    }

    fn apply_from(&mut self, origin: &Origin, event: Event) {
        let mut changed = HashSet::new();
        match event {
            Event::Tagged { origin, event } => return self.apply_from(&origin, *event),
            Event::ApplyService(svc) => self.set_service(origin, svc, &mut changed),
            Event::DeleteService(key) => self.drop_service(origin, &key, &mut changed),
            Event::ApplySlice(slice) => self.set_slice(origin, slice, &mut changed),
            Event::DeleteSlice(key) => self.drop_slice(origin, &key, &mut changed),
            Event::ReplaceServices { services, retain } => {
                self.replace_services(origin, services, retain, &mut changed);
                self.publish(changed);
                self.shared.mark_synced(origin, ResourceKind::Service);
                return;
            }
            Event::ReplaceSlices { slices, retain } => {
                self.replace_slices(origin, slices, retain, &mut changed);
                self.publish(changed);
                self.shared.mark_synced(origin, ResourceKind::EndpointSlice);
                return;
            }
            Event::Release(gone) => {
                self.replace_services(&gone, Vec::new(), Vec::new(), &mut changed);
                self.replace_slices(&gone, Vec::new(), Vec::new(), &mut changed);
                self.publish(changed);
                self.shared.forget_origin(&gone);
                return;
            }
        }
        self.publish(changed);
    }

    /// Applies every event currently queued in `events`, then waits for more; returns when
    /// every sender is gone.
    pub async fn run(mut self, mut events: tokio::sync::mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            self.apply(event);
        }
    }

    fn set_service(&mut self, origin: &Origin, svc: Service, changed: &mut HashSet<ServiceKey>) {
        let key = svc.key.clone();
        match self.services.get_mut(&key) {
            Some(held) => {
                let before = held.current().clone();
                held.set(origin, svc);
                if !Arc::ptr_eq(&before, held.current()) {
                    changed.insert(key);
                }
            }
            None => {
                self.services
                    .insert(key.clone(), Held::new(origin.clone(), Arc::new(svc)));
                changed.insert(key);
            }
        }
    }

    fn drop_service(
        &mut self,
        origin: &Origin,
        key: &ServiceKey,
        changed: &mut HashSet<ServiceKey>,
    ) {
        let Some(held) = self.services.get_mut(key) else {
            return;
        };
        if !held.holds(origin) {
            return;
        }
        let before = held.current().clone();
        if !held.remove(origin) {
            self.services.remove(key);
            changed.insert(key.clone());
        } else if !Arc::ptr_eq(&before, held.current()) {
            changed.insert(key.clone());
        }
    }

    fn set_slice(
        &mut self,
        origin: &Origin,
        slice: EndpointSlice,
        changed: &mut HashSet<ServiceKey>,
    ) {
        let key = slice.key.clone();
        let (before, after) = match self.slice_versions.get_mut(&key) {
            Some(held) => {
                let before = held.current().clone();
                held.set(origin, slice);
                (Some(before), held.current().clone())
            }
            None => {
                let slice = Arc::new(slice);
                self.slice_versions
                    .insert(key, Held::new(origin.clone(), slice.clone()));
                (None, slice)
            }
        };
        self.serve_slice(before, Some(after), changed);
    }

    fn drop_slice(&mut self, origin: &Origin, key: &SliceKey, changed: &mut HashSet<ServiceKey>) {
        let Some(held) = self.slice_versions.get_mut(key) else {
            return;
        };
        if !held.holds(origin) {
            return;
        }
        let before = held.current().clone();
        let after = if held.remove(origin) {
            Some(held.current().clone())
        } else {
            self.slice_versions.remove(key);
            None
        };
        self.serve_slice(Some(before), after, changed);
    }

    /// Moves the served version of a slice from `before` to `after` in the per-Service maps.
    fn serve_slice(
        &mut self,
        before: Option<Arc<EndpointSlice>>,
        after: Option<Arc<EndpointSlice>>,
        changed: &mut HashSet<ServiceKey>,
    ) {
        if let (Some(b), Some(a)) = (&before, &after) {
            if Arc::ptr_eq(b, a) {
                return;
            }
        }
        if let Some(old) = before {
            // The service-name label may have changed: the slice moves between Services.
            if let Some(map) = self.slices.get_mut(&old.service) {
                map.remove(&old.key.name);
                if map.is_empty() {
                    self.slices.remove(&old.service);
                }
            }
            changed.insert(old.service.clone());
        }
        if let Some(new) = after {
            // Only changes count: a relist re-delivers old slices with old trigger times.
            if let Some(trigger) = new.last_change_trigger_time {
                self.shared.freshness.lag.observe_trigger(trigger);
            }
            changed.insert(new.service.clone());
            self.slices
                .entry(new.service.clone())
                .or_default()
                .insert(new.key.name.clone(), new);
        }
    }

    fn replace_services(
        &mut self,
        origin: &Origin,
        list: Vec<Service>,
        retain: Vec<ServiceKey>,
        changed: &mut HashSet<ServiceKey>,
    ) {
        let mut stale: HashSet<ServiceKey> = self
            .services
            .iter()
            .filter(|(_, held)| held.holds(origin))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &retain {
            stale.remove(key);
        }
        for svc in list {
            stale.remove(&svc.key);
            self.set_service(origin, svc, changed);
        }
        for key in stale {
            self.drop_service(origin, &key, changed);
        }
    }

    fn replace_slices(
        &mut self,
        origin: &Origin,
        list: Vec<EndpointSlice>,
        retain: Vec<SliceKey>,
        changed: &mut HashSet<ServiceKey>,
    ) {
        let mut stale: HashSet<SliceKey> = self
            .slice_versions
            .iter()
            .filter(|(_, held)| held.holds(origin))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &retain {
            stale.remove(key);
        }
        for slice in list {
            stale.remove(&slice.key);
            self.set_slice(origin, slice, changed);
        }
        for key in stale {
            self.drop_slice(origin, &key, changed);
        }
    }

    /// Rebuilds the snapshots of `changed` Services outside the lock, swaps them all in under
    /// one write lock (so a relist is seen whole or not at all), then notifies subscribers.
    fn publish(&mut self, changed: HashSet<ServiceKey>) {
        if changed.is_empty() {
            return;
        }
        let empty = SliceMap::new();
        let snapshots: Vec<(ServiceKey, Option<Arc<ServiceSnapshot>>)> = changed
            .into_iter()
            .map(|key| {
                let snap = self.services.get(&key).map(|held| {
                    let slices = self.slices.get(&key).unwrap_or(&empty);
                    Arc::new(snapshot::build(held.current().clone(), slices))
                });
                (key, snap)
            })
            .collect();
        self.shared.publish(snapshots);
    }
}
