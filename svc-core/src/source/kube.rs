//! The Kubernetes source: list+watch of Services and EndpointSlices through `kube::Client`.
//!
//! This is a small explicit state machine in the shape of kube-runtime's watcher (list, then
//! watch from the list's resourceVersion, relist on 410 Gone, exponential backoff on errors).
//! We drive `Api::list`/`Api::watch` ourselves rather than use `kube::runtime::watcher` because
//! that watcher consumes bookmarks internally, and freshness must count bookmarks: a quiet but
//! healthy watch is told apart from a stalled one only by them.
//!
//! The two watches share an [`ApiHealth`] so that they come back together and quickly after an
//! apiserver outage: while it is down a cheap `GET /readyz` probe runs on the schedule of
//! [`ProbeConfig`], and any success wakes both watches out of their backoff.

mod recovery;
mod watcher;

pub use recovery::{ApiHealth, ProbeConfig, Reachability};

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::Reload;
use crate::model::{EndpointSlice, ModelError, Service, ServiceKey};
use crate::store::{Event, ResourceKind, Store};

/// How to watch the API.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Watch one namespace, or all of them (`None`, the default).
    pub namespace: Option<String>,
    /// Watch only objects matching this label selector (default: all).
    pub label_selector: Option<String>,
    /// Restart a watch that delivered no event and no bookmark for this long (default 180 s;
    /// apiservers send a bookmark about once a minute).
    pub stall_timeout: Duration,
    /// Server-side watch timeout in seconds (default 290, as kube-rs and client-go use).
    pub watch_timeout_secs: u32,
    /// List page size (default 500, as client-go's reflector uses).
    pub page_size: u32,
    /// Use streaming lists (`sendInitialEvents`, Kubernetes 1.27+) instead of paginated lists;
    /// falls back to paginated lists if the server rejects them (default false).
    pub streaming_lists: bool,
    /// How the apiserver is probed while it does not answer (see [`ApiHealth`]).
    pub probe: ProbeConfig,
    /// Pulled to retry a backing-off list or watch at once (default: never pulled).
    pub reload: Reload,
    /// Shared with whoever reports on the source (readiness checks, metrics); a fresh one by
    /// default.
    pub health: ApiHealth,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            label_selector: None,
            stall_timeout: Duration::from_secs(180),
            watch_timeout_secs: 290,
            page_size: 500,
            streaming_lists: false,
            probe: ProbeConfig::default(),
            reload: Reload::new(),
            health: ApiHealth::new(),
        }
    }
}

/// Watches Services and EndpointSlices and sends their changes to `events` until the receiver
/// is dropped. Never gives up on API errors: they are logged, counted in the store's
/// freshness, and retried with backoff; while the apiserver does not answer, it is probed
/// (see [`ApiHealth`]).
pub async fn run(client: kube::Client, config: Config, store: Store, events: mpsc::Sender<Event>) {
    let health = config.health.clone();
    let services =
        watcher::watch::<corev1::Service>(client.clone(), &config, store.clone(), events.clone());
    let slices =
        watcher::watch::<discoveryv1::EndpointSlice>(client.clone(), &config, store, events);
    let probe = recovery::probe(client, health.clone(), config.probe.clone());
    let reload = async {
        loop {
            config.reload.requested().await;
            tracing::info!("reload requested; retrying any backing-off list or watch now");
            health.wake();
        }
    };
    tokio::select! {
        _ = async { tokio::join!(services, slices) } => {}
        _ = probe => {}
        _ = reload => {}
    }
}

/// What differs between the two watched kinds.
trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: ResourceKind;
    const NAME: &'static str;
    type Model: for<'a> TryFrom<&'a Self, Error = ModelError>;
    fn apply(model: Self::Model) -> Event;
    fn delete(key: ServiceKey) -> Event;
    fn replace(models: Vec<Self::Model>, retain: Vec<ServiceKey>) -> Event;
}

impl Watched for corev1::Service {
    const KIND: ResourceKind = ResourceKind::Service;
    const NAME: &'static str = "Service";
    type Model = Service;
    fn apply(model: Service) -> Event {
        Event::ApplyService(model)
    }
    fn delete(key: ServiceKey) -> Event {
        Event::DeleteService(key)
    }
    fn replace(services: Vec<Service>, retain: Vec<ServiceKey>) -> Event {
        Event::ReplaceServices { services, retain }
    }
}

impl Watched for discoveryv1::EndpointSlice {
    const KIND: ResourceKind = ResourceKind::EndpointSlice;
    const NAME: &'static str = "EndpointSlice";
    type Model = EndpointSlice;
    fn apply(model: EndpointSlice) -> Event {
        Event::ApplySlice(model)
    }
    fn delete(key: ServiceKey) -> Event {
        Event::DeleteSlice(key)
    }
    fn replace(slices: Vec<EndpointSlice>, retain: Vec<ServiceKey>) -> Event {
        Event::ReplaceSlices { slices, retain }
    }
}
