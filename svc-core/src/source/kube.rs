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
//!
//! What is watched is the [`Scope`]: the whole cluster (the proxy's default), a set of
//! namespaces, or only the Services the app resolves ([`Scope::OnDemand`], see [`on_demand`]).
//! Each watch tags its events with its own [`Origin`], so other sources
//! can feed the same store (see [`feed`] for apps that already run a `kube::runtime::watcher`).
//!
//! Failures are typed ([`Error`]) and reported to the store, so that a caller waiting in
//! [`Store::ready_for`] fails with the cause (a 403 names the missing verb) instead of waiting.

mod error;
pub mod feed;
pub mod on_demand;
mod recovery;
mod watcher;

pub use error::Error;
pub use on_demand::OnDemand;
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
use crate::store::{Event, Origin, ResourceKind, Store};

/// What the source watches.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Scope {
    /// Every namespace (needs a ClusterRole): the proxy's default. With
    /// [`Config::namespace`] set, that one namespace.
    #[default]
    Cluster,
    /// These namespaces, two watches each (a namespaced `Role` in each is enough).
    Namespaces(Vec<String>),
    /// Only the Services the app resolves, each from the first time
    /// [`Store::ready_for`] is asked for it until it has been idle for a while.
    OnDemand(OnDemand),
}

/// How to watch the API.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Watch one namespace, or all of them (`None`, the default). Used with
    /// [`Scope::Cluster`] only.
    pub namespace: Option<String>,
    /// What to watch (default [`Scope::Cluster`]).
    pub scope: Scope,
    /// Watch only objects matching this label selector (default: all). Not used by
    /// [`Scope::OnDemand`], whose watches select by name.
    pub label_selector: Option<String>,
    /// Watch only objects matching this field selector (default: all), e.g.
    /// `metadata.namespace!=kube-system`. Not used by [`Scope::OnDemand`].
    pub field_selector: Option<String>,
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
            scope: Scope::Cluster,
            label_selector: None,
            field_selector: None,
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

/// Builder methods, by value as kube-runtime's `watcher::Config` has them:
/// `Config::default().scope(Scope::OnDemand(Default::default())).page_size(100)`.
impl Config {
    /// Watches one namespace with [`Scope::Cluster`] (default: all of them); see
    /// [`Config::namespace`](field@Config::namespace).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// What to watch (default [`Scope::Cluster`]).
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Watches only objects matching this label selector (default: all; kube's
    /// `watcher::Config::labels`). Not used by [`Scope::OnDemand`].
    #[must_use]
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Watches only objects matching this field selector (default: all; kube's
    /// `watcher::Config::fields`). Not used by [`Scope::OnDemand`].
    #[must_use]
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Restarts a watch that delivered no event and no bookmark for this long (default
    /// 180 s).
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// The server-side watch timeout, in seconds (default 290; kube's
    /// `watcher::Config::timeout`).
    #[must_use]
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.watch_timeout_secs = seconds;
        self
    }

    /// The list page size (default 500).
    #[must_use]
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size;
        self
    }

    /// Uses streaming lists (`sendInitialEvents`) instead of paginated ones (default: off;
    /// kube's `watcher::Config::streaming_lists`).
    #[must_use]
    pub fn streaming_lists(mut self) -> Self {
        self.streaming_lists = true;
        self
    }

    /// How the apiserver is probed while it does not answer (default
    /// [`ProbeConfig::default`]).
    #[must_use]
    pub fn probe(mut self, probe: ProbeConfig) -> Self {
        self.probe = probe;
        self
    }

    /// The trigger that retries a backing-off list or watch at once (default: never pulled;
    /// SIGHUP in svc-proxy).
    #[must_use]
    pub fn reload(mut self, reload: Reload) -> Self {
        self.reload = reload;
        self
    }

    /// Shares the source's health with whoever reports on it (default: a fresh one).
    #[must_use]
    pub fn health(mut self, health: ApiHealth) -> Self {
        self.health = health;
        self
    }
}

/// Watches Services and EndpointSlices in the configured [`Scope`] and sends their changes to
/// `events` until the receiver is dropped.
///
/// API errors are logged, counted in the store's freshness, reported to the store as a typed
/// [`Error`] (permanent ones, 401/403/404, at once and as errors; callers waiting in
/// [`Store::ready_for`] then fail with it), and retried with backoff; while the apiserver does
/// not answer, it is probed (see [`ApiHealth`]).
pub async fn run(client: kube::Client, config: Config, store: Store, events: mpsc::Sender<Event>) {
    let health = config.health.clone();
    let watches = async {
        match &config.scope {
            Scope::OnDemand(on_demand) => {
                on_demand::run(client.clone(), &config, on_demand, store, events).await
            }
            Scope::Cluster => {
                let spec = namespace_spec(&config, config.namespace.clone());
                watch_pair(client.clone(), spec, &config, &store, &events).await
            }
            Scope::Namespaces(namespaces) => {
                let pairs = namespaces.iter().map(|ns| {
                    let spec = namespace_spec(&config, Some(ns.clone()));
                    watch_pair(client.clone(), spec, &config, &store, &events)
                });
                futures::future::join_all(pairs).await;
            }
        }
    };
    let probe = recovery::probe(client.clone(), health.clone(), config.probe.clone());
    let reload = async {
        loop {
            config.reload.requested().await;
            tracing::info!("reload requested; retrying any backing-off list or watch now");
            health.wake();
        }
    };
    tokio::select! {
        _ = watches => {}
        _ = probe => {}
        _ = reload => {}
    }
}

/// The watch of one namespace (or of all, for `None`), with the configured selectors.
fn namespace_spec(config: &Config, namespace: Option<String>) -> watcher::Spec {
    let origin = match &namespace {
        Some(ns) => Origin::new(format!("kube/ns/{ns}")),
        None => Origin::new("kube"),
    };
    watcher::Spec {
        origin,
        namespace,
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
    }
}

/// Watches Services and EndpointSlices of `spec` (the store waits for it to sync).
async fn watch_pair(
    client: kube::Client,
    spec: watcher::Spec,
    config: &Config,
    store: &Store,
    events: &mpsc::Sender<Event>,
) {
    store.expect_origin(&spec.origin);
    let services = watcher::watch::<corev1::Service>(
        client.clone(),
        spec.clone(),
        config,
        store.clone(),
        events.clone(),
    );
    let slices = watcher::watch::<discoveryv1::EndpointSlice>(
        client,
        spec,
        config,
        store.clone(),
        events.clone(),
    );
    tokio::join!(services, slices);
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
    /// The resource as RBAC names it.
    const RESOURCE: &'static str;
    type Model: for<'a> TryFrom<&'a Self, Error = ModelError>;
    fn apply(model: Self::Model) -> Event;
    fn delete(key: ServiceKey) -> Event;
    fn replace(models: Vec<Self::Model>, retain: Vec<ServiceKey>) -> Event;
}

impl Watched for corev1::Service {
    const KIND: ResourceKind = ResourceKind::Service;
    const NAME: &'static str = "Service";
    const RESOURCE: &'static str = "services";
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
    const RESOURCE: &'static str = "endpointslices.discovery.k8s.io";
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

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn builders_set_their_own_field() {
        let (reload, health) = (Reload::new(), ApiHealth::new());
        let config = Config::default()
            .namespace("shop")
            .scope(Scope::Namespaces(vec!["a".into()]))
            .labels("tier=web")
            .fields("metadata.name=web")
            .stall_timeout(Duration::from_millis(7))
            .timeout(8)
            .page_size(9)
            .streaming_lists()
            .probe(ProbeConfig::default().timeout(Duration::from_millis(10)))
            .reload(reload.clone())
            .health(health.clone());
        assert_eq!(config.namespace.as_deref(), Some("shop"));
        assert!(matches!(&config.scope, Scope::Namespaces(ns) if ns == &["a"]));
        assert_eq!(config.label_selector.as_deref(), Some("tier=web"));
        assert_eq!(config.field_selector.as_deref(), Some("metadata.name=web"));
        assert_eq!(config.stall_timeout, Duration::from_millis(7));
        assert_eq!(config.watch_timeout_secs, 8);
        assert_eq!(config.page_size, 9);
        assert!(config.streaming_lists);
        assert_eq!(config.probe.timeout, Duration::from_millis(10));
        reload.trigger();
        assert!(
            config.reload.requested().now_or_never().is_some(),
            "the trigger given is the one listened to"
        );
        health.wake();
        assert_eq!(
            config.health.ups(),
            1,
            "the health given is the one reported to"
        );
    }

    #[test]
    fn on_demand_builders_set_their_own_field() {
        let on_demand = OnDemand::default().idle_timeout(Duration::from_millis(7));
        assert_eq!(on_demand.idle_timeout, Duration::from_millis(7));
    }
}
