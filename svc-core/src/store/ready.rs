//! Waiting until the store can answer for a name, bounded, and failing with the source's
//! error when there is one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::origin::{kind_index, NotSynced, Origin};
use super::{ResourceKind, Store};
use crate::model::ServiceKey;
use crate::name;

impl Store {
    /// Waits (at most `limit`) until the store can answer for `host`, the way
    /// [`resolve_name`](Store::resolve_name) reads it:
    ///
    /// - in a store that [serves on demand](Store::serve_on_demand), registers the name (or
    ///   marks it used) and waits for its own initial lists;
    /// - otherwise waits for the initial sync ([`is_synced`](Store::is_synced)).
    ///
    /// Names that cannot be Services (`api.example.com`) are ready at once. Once synced, it
    /// returns at once.
    ///
    /// # Errors
    ///
    /// [`NotSynced::Source`] when a source that holds the answer back reports an error and
    /// [`StoreConfig::error_grace`](super::StoreConfig::error_grace) has passed since it
    /// started failing (at once for a failure older than that); [`NotSynced::Timeout`] when
    /// `limit` passes first.
    pub async fn ready_for(&self, host: &str, limit: Duration) -> Result<(), NotSynced> {
        let host = host.to_ascii_lowercase();
        let config = self.config();
        let Some(parts) = name::parse(&host, &config.cluster_domain) else {
            return Ok(());
        };
        let namespace = parts.namespace.unwrap_or(&config.default_namespace);
        let key = ServiceKey::new(namespace, parts.name);
        self.ready_for_key(&key, limit).await
    }

    /// [`ready_for`](Store::ready_for) with the Service's key.
    ///
    /// # Errors
    ///
    /// As for [`ready_for`](Store::ready_for).
    pub async fn ready_for_key(&self, key: &ServiceKey, limit: Duration) -> Result<(), NotSynced> {
        let deadline = Instant::now() + limit;
        let grace = self.config().error_grace;
        let mut rx = self.shared.sync.subscribe();
        let mut origin: Option<Origin> = None;
        loop {
            if origin.is_none() {
                // Checked on every wake-up: an on-demand source may install itself while this
                // waits (it wakes the waiters when it does).
                origin = self.demand().map(|d| d.want(key));
            }
            let origin = origin.as_ref();
            let until = {
                let state = rx.borrow_and_update();
                let ready = match origin {
                    Some(o) => state.origins.get(o).is_some_and(|s| s.synced()),
                    None => state.synced(),
                };
                if ready {
                    return Ok(());
                }
                let now = Instant::now();
                match state.blocking_error(origin) {
                    Some(error) if now >= (error.since() + grace).min(deadline) => {
                        return Err(NotSynced::Source(error.clone()));
                    }
                    Some(error) => (error.since() + grace).min(deadline),
                    None if now >= deadline => return Err(NotSynced::Timeout { waited: limit }),
                    None => deadline,
                }
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(NotSynced::Timeout { waited: limit });
                },
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// For sources: `origin`'s initial lists must be applied before the store counts as synced.
    /// A source calls it when it starts (the Kubernetes source does for each of its watches),
    /// so that another source syncing first does not make the store look complete.
    pub fn expect_origin(&self, origin: &Origin) {
        self.shared.sync.send_modify(|s| {
            s.origins.entry(origin.clone()).or_default().expected = true;
        });
    }

    /// For sources: `origin`'s watch of `kind` failed. Waits in [`ready_for`](Store::ready_for) that depend on it
    /// end [`error_grace`](super::StoreConfig::error_grace) after the first error of a run of
    /// failures, with this error. `permanent` says that retrying will not help (401, 403, 404
    /// of the API group).
    pub fn report_source_error(
        &self,
        origin: &Origin,
        kind: ResourceKind,
        error: Arc<dyn std::error::Error + Send + Sync>,
        permanent: bool,
    ) {
        self.shared
            .sync
            .send_modify(|s| s.set_error(origin, kind, error, permanent));
    }

    /// For sources: `origin`'s watch of `kind` got through again; its error is over.
    pub fn report_source_ok(&self, origin: &Origin, kind: ResourceKind) {
        self.shared.sync.send_if_modified(|s| {
            s.origins
                .get_mut(origin)
                .is_some_and(|o| o.errors[kind_index(kind)].take().is_some())
        });
    }

    /// The error that holds the store's sync back, if any (the oldest of the origins it waits
    /// for), for readiness reports.
    pub fn source_error(&self) -> Option<super::SourceError> {
        self.shared.sync.borrow().blocking_error(None).cloned()
    }
}
