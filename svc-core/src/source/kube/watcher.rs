//! One watch's state machine: list, watch from the list's resourceVersion, resume, relist on
//! 410 Gone, back off on errors (woken early when the apiserver comes back; see
//! [`super::recovery`]).

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::DefaultBackoff;
use kube::Resource;
use tokio::sync::mpsc;

use super::error::Error;
use super::recovery::{self, ApiHealth};
use super::{Config, Watched};
use crate::model::{ModelError, ServiceKey};
use crate::store::{Event, Origin, Store, WatchFreshness};

pub(super) fn key_of<K: Resource>(obj: &K) -> ServiceKey {
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

/// Why a list did not complete.
enum ListFailure {
    /// The request failed: back off.
    Failed(kube::Error),
    /// It was started while the apiserver was down and someone else saw it come back: retry
    /// at once.
    Abandoned,
}

impl From<kube::Error> for ListFailure {
    fn from(e: kube::Error) -> Self {
        Self::Failed(e)
    }
}

/// What one watch covers, and the origin its events carry.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) origin: Origin,
    pub(super) namespace: Option<String>,
    pub(super) label_selector: Option<String>,
    pub(super) field_selector: Option<String>,
}

struct Watcher<K: Watched> {
    api: Api<K>,
    spec: Spec,
    config: Config,
    store: Store,
    events: mpsc::Sender<Event>,
    backoff: DefaultBackoff,
    health: ApiHealth,
    /// The last pause was cut short by the apiserver coming back.
    woken: bool,
    /// An attempt right after such a wake-up failed too: wait out the own schedule until an
    /// attempt succeeds, so that an apiserver that answers probes but fails lists is not asked
    /// faster than client-go would.
    ignore_wakes: bool,
    streaming: bool,
    /// Invalid object versions already logged. Only bad objects land here, so it stays small.
    reported: std::collections::HashSet<(ServiceKey, String)>,
    /// A permanent error was logged in this run of failures (log it once, not per retry).
    logged_permanent: bool,
}

pub(super) async fn watch<K: Watched>(
    client: kube::Client,
    spec: Spec,
    config: &Config,
    store: Store,
    events: mpsc::Sender<Event>,
) {
    let api = match &spec.namespace {
        Some(ns) => Api::<K>::namespaced(client, ns),
        None => Api::<K>::all(client),
    };
    let mut w = Watcher {
        api,
        spec,
        logged_permanent: false,
        streaming: config.streaming_lists,
        config: config.clone(),
        health: config.health.clone(),
        store,
        events,
        backoff: DefaultBackoff::default(),
        woken: false,
        ignore_wakes: false,
        reported: Default::default(),
    };
    w.run().await
}

impl<K: Watched> Watcher<K> {
    fn freshness(&self) -> &WatchFreshness {
        self.store.freshness().watch(K::KIND)
    }

    /// A request got through.
    fn succeeded(&mut self) {
        self.freshness().record_connected();
        self.health.report_up();
        self.store.report_source_ok(&self.spec.origin, K::KIND);
        self.woken = false;
        self.ignore_wakes = false;
        self.logged_permanent = false;
    }

    /// A request failed: log it, report it to the store (typed, so that waiting callers fail
    /// with it), and return the health's wake-up count to pause from.
    fn failed(&mut self, error: kube::Error, verb: &'static str, what: &str) -> u64 {
        self.freshness().record_error();
        self.freshness().record_disconnected(&error);
        if self.woken {
            self.ignore_wakes = true;
            self.woken = false;
        }
        if recovery::unreachable(&error) {
            self.health.report_down(&error);
        }
        let error = Error::classify(error, verb, K::RESOURCE, self.spec.namespace.as_deref());
        let permanent = error.is_permanent();
        if permanent && !self.logged_permanent {
            self.logged_permanent = true;
            tracing::error!(kind = K::NAME, origin = %self.spec.origin, %error,
                "{what}; this will not heal by retrying: fix the credentials or RBAC (retrying with backoff meanwhile)");
        } else if !permanent {
            tracing::warn!(kind = K::NAME, origin = %self.spec.origin, %error, "{what}; backing off");
        }
        self.store.report_source_error(
            &self.spec.origin,
            K::KIND,
            std::sync::Arc::new(error),
            permanent,
        );
        self.health.ups()
    }

    /// Waits out the backoff after a failure, or less if the apiserver comes back meanwhile.
    async fn pause(&mut self, ups: u64) {
        // DefaultBackoff never ends (it caps at a maximum delay), so the fallback is unreachable
        // in practice; it keeps a bug from turning into a hot loop.
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(30));
        let health = self.health.clone();
        let ignore = self.ignore_wakes;
        let wake = async move {
            if ignore {
                std::future::pending::<()>().await
            }
            health.up_after(ups).await
        };
        self.woken = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = wake => true,
        };
    }

    /// Runs the first request of an attempt; `None` when the apiserver was down at the start
    /// and came back (seen by the other watch or the probe) before this one answered: the
    /// request may be stuck connecting to a dead address, and a fresh one goes through.
    async fn guarded<T>(&self, request: impl Future<Output = T>) -> Option<T> {
        if self.health.is_up() {
            return Some(request.await);
        }
        let ups = self.health.ups();
        tokio::select! {
            r = request => Some(r),
            _ = self.health.up_after(ups) => None,
        }
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
                    Err(ListFailure::Abandoned) => State::List,
                    Err(ListFailure::Failed(error)) => {
                        let ups = self.failed(error, "list", "list failed");
                        self.pause(ups).await;
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
                        let ups = self.health.ups();
                        self.pause(ups).await;
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
    async fn list(&mut self) -> Result<Option<String>, ListFailure> {
        self.freshness().record_relist();
        if self.streaming {
            match self.streaming_list().await {
                Ok(rv) => return Ok(rv),
                Err(ListFailure::Failed(kube::Error::Api(s)))
                    if matches!(s.code, 400 | 403 | 404 | 422) =>
                {
                    tracing::warn!(kind = K::NAME, code = s.code, message = %s.message,
                        "server rejected a streaming list; using paginated lists from now on");
                    self.streaming = false;
                }
                Err(e) => return Err(e),
            }
        }
        let mut listed = Listed::default();
        let mut params = ListParams::default().limit(self.config.page_size);
        params.label_selector = self.spec.label_selector.clone();
        params.field_selector = self.spec.field_selector.clone();
        let api = self.api.clone();
        let first = self.guarded(api.list(&params)).await;
        let mut page = first.ok_or(ListFailure::Abandoned)??;
        self.succeeded();
        let resource_version = loop {
            self.freshness().record_events(page.items.len() as u64);
            self.convert_into(page.items, &mut listed);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => {
                    params.continue_token = Some(token);
                    page = self.api.list(&params).await?;
                }
                None => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        tracing::debug!(kind = K::NAME, %resource_version, objects = listed.good.len(), "listed");
        let event = K::replace(listed.good, listed.bad).tagged(&self.spec.origin);
        Ok(self.events.send(event).await.ok().map(|_| resource_version))
    }

    /// A streaming list: a watch with `sendInitialEvents`, collected until the bookmark that
    /// marks the end of the initial events.
    async fn streaming_list(&mut self) -> Result<Option<String>, ListFailure> {
        let mut params = WatchParams::streaming_lists().timeout(self.config.watch_timeout_secs);
        params.label_selector = self.spec.label_selector.clone();
        params.field_selector = self.spec.field_selector.clone();
        let api = self.api.clone();
        let stream = self
            .guarded(api.watch(&params, ""))
            .await
            .ok_or(ListFailure::Abandoned)??;
        self.succeeded();
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
                        let event = K::replace(listed.good, listed.bad).tagged(&self.spec.origin);
                        let rv = b.metadata.resource_version;
                        return Ok(self.events.send(event).await.ok().map(|_| rv));
                    }
                }
                WatchEvent::Error(s) => return Err(kube::Error::Api(s).into()),
            }
        }
        Err(kube::Error::Api(Box::new(
            kube::core::Status::failure(
                "streaming list ended before its initial-events-end bookmark",
                "Incomplete",
            )
            .with_code(500),
        ))
        .into())
    }

    async fn watch_once(&mut self, resource_version: &mut String) -> WatchEnd {
        let mut params = WatchParams::default().timeout(self.config.watch_timeout_secs);
        params.label_selector = self.spec.label_selector.clone();
        params.field_selector = self.spec.field_selector.clone();
        let api = self.api.clone();
        let stream = match self.guarded(api.watch(&params, resource_version)).await {
            None => return WatchEnd::Resume,
            Some(Ok(s)) => s,
            Some(Err(e)) if is_gone(&e) => return WatchEnd::Gone,
            Some(Err(error)) => {
                self.failed(error, "watch", "watch failed");
                return WatchEnd::Failed;
            }
        };
        self.succeeded();
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
                    self.failed(error, "watch", "watch stream broke");
                    return WatchEnd::Failed;
                }
                Ok(Some(Ok(event))) => event,
            };
            let out = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    self.note_version(&o, resource_version);
                    crate::source::convert::<K, K::Model>(&o, K::NAME)
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
                    self.failed(kube::Error::Api(s), "watch", "watch error event");
                    return WatchEnd::Failed;
                }
            };
            self.backoff = DefaultBackoff::default();
            if let Some(event) = out {
                if self
                    .events
                    .send(event.tagged(&self.spec.origin))
                    .await
                    .is_err()
                {
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
                crate::source::log_invalid(obj, K::NAME, error);
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
