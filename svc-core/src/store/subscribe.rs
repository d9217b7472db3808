//! Subscriptions: per-port endpoint updates and the whole-store change feed.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_stream::wrappers::WatchStream;

use super::snapshot::{PortEndpoint, PortSnapshot, ServiceSnapshot};
use crate::model::{IpFamily, Protocol, ServiceKey, Str};

/// Which port of a Service to follow: a Service port is named by its name or its number, so
/// this is exhaustive by definition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// By port name (`None` is the unnamed port).
    Name(Option<Str>),
    /// By port number and protocol.
    Number(u16, Protocol),
    /// By port number and protocol, as reached at an address of this family (a cluster,
    /// external or load-balancer IP, or a node address for a NodePort): on a dual-stack
    /// Service, that family's endpoints only (see [`ServiceSnapshot::ports_at`]).
    Family(u16, Protocol, IpFamily),
}

impl PortRef {
    /// Service port `port`/`protocol` as reached at `ip` (a [`PortRef::Family`]). For a
    /// NodePort, `ip` is the node address and `port` still the Service port.
    pub fn reached_at(ip: IpAddr, port: u16, protocol: Protocol) -> Self {
        Self::Family(port, protocol, IpFamily::of(ip))
    }

    /// Finds this port in a snapshot.
    pub fn find<'a>(&self, snapshot: &'a ServiceSnapshot) -> Option<&'a PortSnapshot> {
        match self {
            Self::Name(name) => snapshot.port_by_name(name.as_deref()),
            Self::Number(port, protocol) => snapshot.port_by_number(*port, *protocol),
            Self::Family(port, protocol, family) => snapshot.port_at(*port, *protocol, *family),
        }
    }
}

/// A change to the endpoint set of one Service port (linkerd's `Update` shape).
///
/// Deliberately exhaustive: a subscriber that skipped a kind of update would hold the wrong
/// endpoint set, so a new kind must be a compile error in every consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete set: replaces whatever the subscriber had.
    Reset(Vec<PortEndpoint>),
    /// New endpoints, or endpoints whose conditions or metadata changed (replace by address).
    Add(Vec<PortEndpoint>),
    /// Endpoints that are gone.
    Remove(Vec<SocketAddr>),
    /// The Service, or this port of it, does not exist.
    DoesNotExist,
}

/// A stream of [`Update`]s for one Service port; see [`super::Store::subscribe`].
///
/// Built on a coalescing watch: a slow reader skips intermediate states, and the diff it gets
/// takes it straight from what it last saw to the latest state.
pub struct EndpointUpdates {
    inner: WatchStream<Option<Arc<ServiceSnapshot>>>,
    port: PortRef,
    current: Option<Arc<[PortEndpoint]>>,
    started: bool,
    pending: VecDeque<Update>,
}

impl EndpointUpdates {
    pub(super) fn new(rx: watch::Receiver<Option<Arc<ServiceSnapshot>>>, port: PortRef) -> Self {
        Self {
            inner: WatchStream::new(rx),
            port,
            current: None,
            started: false,
            pending: VecDeque::new(),
        }
    }

    fn on_snapshot(&mut self, snapshot: Option<Arc<ServiceSnapshot>>) {
        let next = snapshot
            .as_deref()
            .and_then(|s| self.port.find(s))
            .map(|p| p.endpoints.clone());
        let first = !std::mem::replace(&mut self.started, true);
        match (self.current.take(), next) {
            (None, None) => {
                if first {
                    self.pending.push_back(Update::DoesNotExist);
                }
            }
            (Some(_), None) => self.pending.push_back(Update::DoesNotExist),
            (None, Some(next)) => {
                self.pending.push_back(Update::Reset(next.to_vec()));
                self.current = Some(next);
            }
            (Some(prev), Some(next)) => {
                if !Arc::ptr_eq(&prev, &next) {
                    let (added, removed) = diff(&prev, &next);
                    if !removed.is_empty() {
                        self.pending.push_back(Update::Remove(removed));
                    }
                    if !added.is_empty() {
                        self.pending.push_back(Update::Add(added));
                    }
                }
                self.current = Some(next);
            }
        }
    }
}

/// Diffs two address-sorted endpoint lists in one linear merge.
fn diff(prev: &[PortEndpoint], next: &[PortEndpoint]) -> (Vec<PortEndpoint>, Vec<SocketAddr>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < prev.len() || j < next.len() {
        match (prev.get(i), next.get(j)) {
            (Some(p), Some(n)) if p.addr == n.addr => {
                if p.endpoint != n.endpoint {
                    added.push(n.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(p), Some(n)) if p.addr < n.addr => {
                removed.push(p.addr);
                i += 1;
            }
            (Some(p), None) => {
                removed.push(p.addr);
                i += 1;
            }
            (_, Some(n)) => {
                added.push(n.clone());
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    (added, removed)
}

impl Stream for EndpointUpdates {
    type Item = Update;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Poll::Ready(Some(update));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(snapshot) => self.on_snapshot(snapshot),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct FeedShared {
    pending: Mutex<HashSet<ServiceKey>>,
    notify: Notify,
}

impl FeedShared {
    pub(crate) fn push(&self, keys: impl IntoIterator<Item = ServiceKey>) {
        let mut pending = self.pending.lock();
        let before = pending.len();
        pending.extend(keys);
        if pending.len() != before || before > 0 {
            drop(pending);
            self.notify.notify_one();
        }
    }
}

/// The whole-store change feed; see [`super::Store::changes`].
pub struct ChangeFeed {
    shared: Arc<FeedShared>,
}

impl ChangeFeed {
    pub(super) fn new(shared: Arc<FeedShared>) -> Self {
        Self { shared }
    }

    /// Waits until at least one Service changed, then returns every key changed since the last
    /// call (sorted). Look each one up in the store: `None` means it was deleted.
    pub async fn changed(&mut self) -> Vec<ServiceKey> {
        loop {
            let mut keys: Vec<ServiceKey> = self.shared.pending.lock().drain().collect();
            if !keys.is_empty() {
                keys.sort_unstable();
                return keys;
            }
            self.shared.notify.notified().await;
        }
    }

    /// The feed as a `Stream` of [`changed`](Self::changed) batches, for apps that combine
    /// streams (as kube-runtime's watchers are). It never ends while the store lives.
    pub fn into_stream(self) -> impl futures::Stream<Item = Vec<ServiceKey>> + Send + 'static {
        futures::stream::unfold(self, |mut feed| async move {
            let keys = feed.changed().await;
            Some((keys, feed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conditions, Endpoint};

    fn ep(port: u16, ready: bool) -> PortEndpoint {
        PortEndpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            endpoint: Arc::new(Endpoint {
                address: [127, 0, 0, 1].into(),
                conditions: Conditions {
                    ready,
                    serving: ready,
                    terminating: false,
                },
                zone: None,
                node_name: None,
                hints: None,
                target_ref: None,
                hostname: None,
            }),
        }
    }

    #[test]
    fn diff_reports_adds_removes_and_changes() {
        let prev = vec![ep(1, true), ep(2, true), ep(3, true)];
        let next = vec![ep(2, false), ep(3, true), ep(4, true)];
        let (added, removed) = diff(&prev, &next);
        assert_eq!(removed, vec![ep(1, true).addr]);
        assert_eq!(added, vec![ep(2, false), ep(4, true)]);
    }

    #[test]
    fn diff_of_equal_lists_is_empty() {
        let l = vec![ep(1, true), ep(2, true)];
        let (a, r) = diff(&l, &l.clone());
        assert!(a.is_empty() && r.is_empty());
    }
}
