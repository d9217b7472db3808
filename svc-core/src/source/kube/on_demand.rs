//! [`Scope::OnDemand`](super::Scope::OnDemand): watch only the Services the app resolves.
//!
//! The first [`Store::ready_for`] of a name registers it; this source then starts two watches
//! in its namespace, Services by `fieldSelector=metadata.name=<name>` and EndpointSlices by
//! `labelSelector=kubernetes.io/service-name=<name>`, and the wait ends when both initial
//! lists are applied (or with the typed error of a failing one). A name nobody resolved for
//! [`OnDemand::idle_timeout`] and that no endpoint pool follows
//! ([`Store::watch_service`](crate::store::Store::watch_service)) has its watches stopped and
//! its objects dropped.
//!
//! **When names share a watch.** Never automatically: each name has its own two watches. A
//! per-name watch costs what the app uses (one Service and its slices, and one filtered
//! watcher in the apiserver's watch cache); a namespace-wide watch costs what the namespace
//! holds, which the app cannot know before it has listed it, and a Role in every namespace it
//! touches. So sharing is the operator's decision: an app that uses many Services of a few
//! namespaces (as a rule, more than about ten per namespace, or most of a small namespace) runs
//! [`Scope::Namespaces`](super::Scope::Namespaces) instead, which watches each listed
//! namespace with one pair of watches.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::watcher::{self, Spec};
use super::Config;
use crate::store::{Event, Origin, Store, Wanted};

/// Settings of [`Scope::OnDemand`](super::Scope::OnDemand).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OnDemand {
    /// Stop a name's watches once nobody resolved it for this long and no endpoint pool
    /// follows it (default 5 min).
    pub idle_timeout: Duration,
}

impl Default for OnDemand {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Builder methods, by value as kube-runtime's `watcher::Config` has them.
impl OnDemand {
    /// Stops a name's watches once nobody resolved it for this long and no endpoint pool
    /// follows it (default 5 min).
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }
}

/// The origin of the (empty) initial lists that mark an on-demand store synced: there is
/// nothing to list before the first name is resolved.
const BASE: &str = "kube/on-demand";

pub(super) async fn run(
    client: kube::Client,
    config: &Config,
    on_demand: &OnDemand,
    store: Store,
    events: mpsc::Sender<Event>,
) {
    let mut requests = store.serve_on_demand("kube/svc");
    let base = Origin::new(BASE);
    for event in [
        Event::ReplaceServices {
            services: Vec::new(),
            retain: Vec::new(),
        },
        Event::ReplaceSlices {
            slices: Vec::new(),
            retain: Vec::new(),
        },
    ] {
        if events.send(event.tagged(&base)).await.is_err() {
            return;
        }
    }
    let idle = on_demand.idle_timeout;
    let mut sweep = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Dropping the set (when `run` is dropped) aborts every watch.
    let mut tasks = JoinSet::new();
    let mut running: HashMap<Origin, AbortHandle> = HashMap::new();
    loop {
        tokio::select! {
            wanted = requests.recv() => {
                let Some(wanted) = wanted else { return };
                tracing::debug!(service = %wanted.key, origin = %wanted.origin, "watching on demand");
                let watch = watch_name(client.clone(), config.clone(), wanted.clone(), store.clone(), events.clone());
                running.insert(wanted.origin, tasks.spawn(watch));
            }
            _ = sweep.tick() => {
                for gone in requests.take_idle(idle) {
                    tracing::debug!(service = %gone.key, "idle; stopping its watches");
                    if let Some(task) = running.remove(&gone.origin) {
                        task.abort();
                    }
                    if events.send(Event::Release(gone.origin)).await.is_err() {
                        return;
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = events.closed() => return,
        }
    }
}

/// The two watches of one name.
async fn watch_name(
    client: kube::Client,
    config: Config,
    wanted: Wanted,
    store: Store,
    events: mpsc::Sender<Event>,
) {
    let name = &wanted.key.name;
    let namespace = Some(wanted.key.namespace.to_string());
    let services = Spec {
        origin: wanted.origin.clone(),
        namespace: namespace.clone(),
        label_selector: None,
        field_selector: Some(format!("metadata.name={name}")),
    };
    let slices = Spec {
        origin: wanted.origin.clone(),
        namespace,
        label_selector: Some(format!("kubernetes.io/service-name={name}")),
        field_selector: None,
    };
    tokio::join!(
        watcher::watch::<corev1::Service>(
            client.clone(),
            services,
            &config,
            store.clone(),
            events.clone()
        ),
        watcher::watch::<discoveryv1::EndpointSlice>(client, slices, &config, store, events),
    );
}
