//! The Kubernetes source: list+watch of Services and EndpointSlices through `kube::Client`.
//!
//! This is a small explicit state machine in the shape of kube-runtime's watcher (list, then
//! watch from the list's resourceVersion, relist on 410 Gone, exponential backoff on errors).
//! We drive `Api::list`/`Api::watch` ourselves rather than use `kube::runtime::watcher` because
//! that watcher consumes bookmarks internally, and freshness must count bookmarks: a quiet but
//! healthy watch is told apart from a stalled one only by them.

use std::fmt::Debug;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::DefaultBackoff;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::model::{EndpointSlice, ModelError, Service, ServiceKey};
use crate::store::{Event, ResourceKind, Store, WatchFreshness};

/// How to watch the API.
#[derive(Clone, Debug)]
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
        }
    }
}

/// Watches Services and EndpointSlices and sends their changes to `events` until the receiver
/// is dropped. Never gives up on API errors: they are logged, counted in the store's
/// freshness, and retried with backoff.
pub async fn run(client: kube::Client, config: Config, store: Store, events: mpsc::Sender<Event>) {
    let services = watch::<corev1::Service>(client.clone(), &config, store.clone(), events.clone());
    let slices = watch::<discoveryv1::EndpointSlice>(client, &config, store, events);
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

fn key_of<K: Resource>(obj: &K) -> ServiceKey {
    let meta = obj.meta();
    ServiceKey::new(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// A list being collected: converted models, and the keys of objects that failed conversion.
struct Listed<M> {
    good: Vec<M>,
    bad: Vec<ServiceKey>,
}

impl<M> Default for Listed<M> {
    fn default() -> Self {
        Self {
            good: Vec::new(),
            bad: Vec::new(),
        }
    }
}

/// The watch state machine's states.
enum State {
    /// Need a full list (at start, and after 410 Gone).
    List,
    /// Watching from this resourceVersion.
    Watch { resource_version: String },
}

/// Why a watch stream ended.
enum WatchEnd {
    /// Closed normally or silent too long: watch again from the last resourceVersion.
    Resume,
    /// The resourceVersion is too old: relist.
    Gone,
    /// An error: back off, then watch again.
    Failed,
    /// The store's receiver is gone: stop.
    Closed,
}

struct Watcher<K: Watched> {
    api: Api<K>,
    config: Config,
    store: Store,
    events: mpsc::Sender<Event>,
    backoff: DefaultBackoff,
    streaming: bool,
    /// Invalid object versions already logged. Only bad objects land here, so it stays small.
    reported: std::collections::HashSet<(ServiceKey, String)>,
}

async fn watch<K: Watched>(
    client: kube::Client,
    config: &Config,
    store: Store,
    events: mpsc::Sender<Event>,
) {
    let api = match &config.namespace {
        Some(ns) => Api::<K>::namespaced(client, ns),
        None => Api::<K>::all(client),
    };
    let mut w = Watcher {
        api,
        streaming: config.streaming_lists,
        config: config.clone(),
        store,
        events,
        backoff: DefaultBackoff::default(),
        reported: Default::default(),
    };
    w.run().await
}

impl<K: Watched> Watcher<K> {
    fn freshness(&self) -> &WatchFreshness {
        self.store.freshness().watch(K::KIND)
    }

    async fn sleep_backoff(&mut self) {
        // DefaultBackoff never ends (it caps at a maximum delay), so the fallback is unreachable
        // in practice; it keeps a bug from turning into a hot loop.
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }

    async fn run(&mut self) {
        let mut state = State::List;
        loop {
            if self.events.is_closed() {
                return;
            }
            state = match state {
                State::List => match self.list().await {
                    Ok(Some(resource_version)) => {
                        self.backoff = DefaultBackoff::default();
                        State::Watch { resource_version }
                    }
                    Ok(None) => return,
                    Err(error) => {
                        self.freshness().record_error();
                        tracing::warn!(kind = K::NAME, %error, "list failed; backing off");
                        self.sleep_backoff().await;
                        State::List
                    }
                },
                State::Watch {
                    mut resource_version,
                } => match self.watch_once(&mut resource_version).await {
                    WatchEnd::Resume => State::Watch { resource_version },
                    WatchEnd::Gone => {
                        tracing::info!(kind = K::NAME, %resource_version, "resourceVersion expired (410 Gone); relisting");
                        State::List
                    }
                    WatchEnd::Failed => {
                        self.sleep_backoff().await;
                        State::Watch { resource_version }
                    }
                    WatchEnd::Closed => return,
                },
            };
        }
    }

    /// Converts listed objects as they arrive, so that a large list never holds more than one
    /// page of API objects: only our compact models are kept. Bad objects are noted, so that
    /// their last good version is kept.
    fn convert_into(&mut self, objects: impl IntoIterator<Item = K>, into: &mut Listed<K::Model>) {
        for obj in objects {
            match self.convert(&obj) {
                Ok(m) => into.good.push(m),
                Err(_) => into.bad.push(key_of(&obj)),
            }
        }
    }

    /// Lists everything; returns the list's resourceVersion, or `None` if the store is gone.
    async fn list(&mut self) -> Result<Option<String>, kube::Error> {
        self.freshness().record_relist();
        if self.streaming {
            match self.streaming_list().await {
                Ok(rv) => return Ok(rv),
                Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 404 | 422) => {
                    tracing::warn!(kind = K::NAME, code = s.code, message = %s.message,
                        "server rejected a streaming list; using paginated lists from now on");
                    self.streaming = false;
                }
                Err(e) => return Err(e),
            }
        }
        let mut listed = Listed::default();
        let mut params = ListParams::default().limit(self.config.page_size);
        params.label_selector = self.config.label_selector.clone();
        let resource_version = loop {
            let page = self.api.list(&params).await?;
            self.freshness().record_events(page.items.len() as u64);
            self.convert_into(page.items, &mut listed);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        tracing::debug!(kind = K::NAME, %resource_version, objects = listed.good.len(), "listed");
        let event = K::replace(listed.good, listed.bad);
        Ok(self.events.send(event).await.ok().map(|_| resource_version))
    }

    /// A streaming list: a watch with `sendInitialEvents`, collected until the bookmark that
    /// marks the end of the initial events.
    async fn streaming_list(&mut self) -> Result<Option<String>, kube::Error> {
        let mut params = WatchParams::streaming_lists().timeout(self.config.watch_timeout_secs);
        params.label_selector = self.config.label_selector.clone();
        let stream = self.api.watch(&params, "").await?;
        futures::pin_mut!(stream);
        // Keyed, so that a MODIFIED or DELETED during the initial events replaces or drops it.
        let mut objects = std::collections::BTreeMap::new();
        while let Some(event) = stream.try_next().await? {
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    self.freshness().record_events(1);
                    objects.insert(key_of(&o), o);
                }
                WatchEvent::Deleted(o) => {
                    objects.remove(&key_of(&o));
                }
                WatchEvent::Bookmark(b) => {
                    self.freshness().record_bookmark();
                    if b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str)
                        == Some("true")
                    {
                        let mut listed = Listed::default();
                        self.convert_into(std::mem::take(&mut objects).into_values(), &mut listed);
                        let event = K::replace(listed.good, listed.bad);
                        let rv = b.metadata.resource_version;
                        return Ok(self.events.send(event).await.ok().map(|_| rv));
                    }
                }
                WatchEvent::Error(s) => return Err(kube::Error::Api(s)),
            }
        }
        Err(kube::Error::Api(Box::new(
            kube::core::Status::failure(
                "streaming list ended before its initial-events-end bookmark",
                "Incomplete",
            )
            .with_code(500),
        )))
    }

    async fn watch_once(&mut self, resource_version: &mut String) -> WatchEnd {
        let mut params = WatchParams::default().timeout(self.config.watch_timeout_secs);
        params.label_selector = self.config.label_selector.clone();
        let stream = match self.api.watch(&params, resource_version).await {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return WatchEnd::Gone,
            Err(error) => {
                self.freshness().record_error();
                tracing::warn!(kind = K::NAME, %error, "watch failed; backing off");
                return WatchEnd::Failed;
            }
        };
        futures::pin_mut!(stream);
        loop {
            let next = tokio::time::timeout(self.config.stall_timeout, stream.next()).await;
            let event = match next {
                Err(_) => {
                    self.freshness().record_stall_restart();
                    tracing::warn!(kind = K::NAME, timeout = ?self.config.stall_timeout,
                        "watch silent past the stall bound (no event, no bookmark); restarting it");
                    return WatchEnd::Resume;
                }
                Ok(None) => return WatchEnd::Resume,
                Ok(Some(Err(error))) => {
                    self.freshness().record_error();
                    tracing::warn!(kind = K::NAME, %error, "watch stream broke; resuming");
                    return WatchEnd::Failed;
                }
                Ok(Some(Ok(event))) => event,
            };
            let out = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    self.note_version(&o, resource_version);
                    super::convert::<K, K::Model>(&o, K::NAME)
                        .ok()
                        .map(K::apply)
                }
                WatchEvent::Deleted(o) => {
                    self.note_version(&o, resource_version);
                    Some(K::delete(key_of(&o)))
                }
                WatchEvent::Bookmark(b) => {
                    self.freshness().record_bookmark();
                    *resource_version = b.metadata.resource_version;
                    None
                }
                WatchEvent::Error(s) if s.code == 410 => return WatchEnd::Gone,
                WatchEvent::Error(s) => {
                    self.freshness().record_error();
                    tracing::warn!(kind = K::NAME, code = s.code, message = %s.message, "watch error event");
                    return WatchEnd::Failed;
                }
            };
            self.backoff = DefaultBackoff::default();
            if let Some(event) = out {
                if self.events.send(event).await.is_err() {
                    return WatchEnd::Closed;
                }
            }
        }
    }

    /// Converts an object. A failure is logged once per object version: a relist that meets
    /// the same bad object again stays quiet.
    fn convert(&mut self, obj: &K) -> Result<K::Model, ModelError> {
        K::Model::try_from(obj).inspect_err(|error| {
            let version = obj.meta().resource_version.clone().unwrap_or_default();
            if self.reported.insert((key_of(obj), version)) {
                super::log_invalid(obj, K::NAME, error);
            }
        })
    }

    fn note_version(&self, obj: &K, resource_version: &mut String) {
        self.freshness().record_events(1);
        if let Some(rv) = &obj.meta().resource_version {
            resource_version.clone_from(rv);
        }
    }
}
