//! State shared by the server handle, the HTTP handlers and watch streams.
//!
//! Writes and watch registration happen under one lock, and writes push
//! their events to every registered watcher's queue while holding it, so
//! each watcher sees a gap-free, ordered sequence of events no matter how
//! slowly it drains its queue.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::watch::{bookmark_line, event_line};
use crate::faults::{Counters, Faults};
use crate::kind::Kind;
use crate::selector::Filter;
use crate::store::{Event, ObjKey, Store, StoreError, WriteMode};

/// Default interval between periodic bookmarks.
pub(crate) const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// A message queued for one watch stream.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    /// A newline-terminated JSON watch event.
    Line(Bytes),
    /// End the stream cleanly after the preceding lines.
    End,
}

/// A registered watch stream.
#[derive(Debug)]
pub(crate) struct Watcher {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) filter: Filter,
    pub(crate) bookmarks: bool,
    pub(crate) tx: mpsc::UnboundedSender<WatchMsg>,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) next_watcher_id: u64,
}

impl Inner {
    fn broadcast(&mut self, event: &Event) {
        self.watchers.retain(|w| {
            if w.kind != event.kind {
                return true;
            }
            match event.view(&w.filter) {
                Some((type_, object)) => {
                    w.tx.send(WatchMsg::Line(event_line(type_.as_str(), &object)))
                        .is_ok()
                }
                None => !w.tx.is_closed(),
            }
        });
    }
}

/// Shared server state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    pub(crate) bookmark_interval: watch::Sender<Option<Duration>>,
    pub(crate) open_watches: watch::Sender<usize>,
    /// `None`: every request is allowed.
    pub(crate) rbac: parking_lot::RwLock<Option<crate::rbac::Rbac>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            faults: Faults::default(),
            counters: Counters::default(),
            bookmark_interval: watch::Sender::new(Some(DEFAULT_BOOKMARK_INTERVAL)),
            open_watches: watch::Sender::new(0),
            rbac: parking_lot::RwLock::default(),
        }
    }
}

/// The current time as a Kubernetes timestamp (RFC 3339, seconds).
fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

impl Shared {
    /// Writes an object and notifies watchers.
    pub(crate) fn write(
        &self,
        kind: Kind,
        obj: Value,
        mode: WriteMode,
    ) -> Result<Arc<Event>, StoreError> {
        let now = now();
        let mut inner = self.inner.lock();
        let event = inner.store.write(kind, obj, mode, &now)?;
        inner.broadcast(&event);
        Ok(event)
    }

    /// Deletes an object and notifies watchers.
    pub(crate) fn delete(&self, kind: Kind, key: &ObjKey) -> Option<Arc<Event>> {
        let mut inner = self.inner.lock();
        let event = inner.store.delete(kind, key)?;
        inner.broadcast(&event);
        Some(event)
    }

    /// Queues a bookmark at the current version on every watch that asked for bookmarks.
    pub(crate) fn send_bookmarks(&self) {
        let mut inner = self.inner.lock();
        let rv = inner.store.resource_version();
        inner.watchers.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(WatchMsg::Line(bookmark_line(w.kind, rv, false)))
                    .is_ok()
        });
    }

    /// Registers a watcher and counts it as open. Call under the lock.
    pub(crate) fn register(
        &self,
        inner: &mut Inner,
        kind: Kind,
        filter: Filter,
        bookmarks: bool,
        tx: mpsc::UnboundedSender<WatchMsg>,
    ) -> u64 {
        let id = inner.next_watcher_id;
        inner.next_watcher_id += 1;
        inner.watchers.push(Watcher {
            id,
            kind,
            filter,
            bookmarks,
            tx,
        });
        self.open_watches.send_modify(|n| *n += 1);
        id
    }

    /// Forgets a watcher registered with [`Shared::register`].
    pub(crate) fn unregister(&self, id: u64) {
        self.inner.lock().watchers.retain(|w| w.id != id);
        self.open_watches.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Sends periodic bookmarks until `shutdown`'s sender is dropped.
pub(crate) async fn bookmark_ticker(shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    let mut interval_rx = shared.bookmark_interval.subscribe();
    loop {
        let interval = *interval_rx.borrow_and_update();
        let tick = async {
            match interval {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = interval_rx.changed() => if changed.is_err() { return },
            () = tick => shared.send_bookmarks(),
        }
    }
}
