//! The fake Kubernetes API server and its handle.

mod discovery;
mod query;
mod routes;
mod shared;
mod status;
mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use self::shared::Shared;
use crate::error::{Error, Result};
use crate::faults::Failure;
use crate::kind::{FakeResource, Kind};
use crate::store::{ObjKey, WriteMode};

/// A fake Kubernetes API server serving `Service`s and `EndpointSlice`s over
/// real HTTP on `127.0.0.1`, with a mutation API and fault injection.
///
/// Dropping the handle shuts the server down: the listener closes and every
/// open connection (including watch streams) is cut.
///
/// # Semantics
///
/// - One global resource version (`u64`), bumped by every write of either
///   kind, like etcd. The store starts at version 1.
/// - **List**: ordered by namespace/name; `limit` + `continue` paginate over a
///   consistent snapshot (the token encodes the snapshot version and the last
///   key; a token older than the compaction point gets `410 Expired`).
///   `resourceVersion` unset/`0`/`NotOlderThan` reads the current state;
///   `Exact` reads the exact snapshot (410 if compacted). A version newer
///   than the store gets `504 Too large resource version` right away (a
///   real server waits first). With a continue token, `resourceVersion` is
///   ignored. `remainingItemCount` is set only without selectors.
/// - **Watch**: from `resourceVersion=N`, replays history after `N`, then
///   streams live events; from unset/`0` (or with `sendInitialEvents=true`)
///   it first sends `ADDED` for every current object (plus the
///   `k8s.io/initial-events-end` bookmark when `sendInitialEvents=true`). A
///   compacted `N` gets one `ERROR` event (410 Expired) and the stream ends.
///   Objects that start or stop matching the label selector show up as
///   `ADDED` / `DELETED`, as with the real watch cache. `timeoutSeconds`
///   ends the stream cleanly. Bookmarks go to watches with
///   `allowWatchBookmarks=true`, every [bookmark interval](Self::set_bookmark_interval).
/// - Field selectors support `metadata.name` and `metadata.namespace`.
/// - Also served: `GET`/`PUT`/`DELETE` of single objects, `POST` to a
///   namespaced collection, and minimal `/version`, `/api`, `/apis` discovery.
///   `PUT` creates missing objects and checks a non-empty `resourceVersion`.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop while the server is up; `None` while it is [stopped](Self::stop).
    running: parking_lot::Mutex<Option<Running>>,
}

/// A serving server: dropping `shutdown` stops the accept loop (cutting every connection) and
/// the bookmark ticker.
#[derive(Debug)]
struct Running {
    shutdown: tokio::sync::watch::Sender<()>,
    accept: tokio::task::JoinHandle<()>,
}

impl Running {
    fn spawn(listener: TcpListener, shared: &Arc<Shared>) -> Self {
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(());
        let accept = tokio::spawn(serve(listener, shared.clone(), shutdown_rx.clone()));
        tokio::spawn(shared::bookmark_ticker(shared.clone(), shutdown_rx));
        Self { shutdown, accept }
    }
}

impl FakeApiServer {
    /// Starts a server on a random port of `127.0.0.1`.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound; use [`try_start`](Self::try_start) to handle that.
    /// Must be called within a Tokio runtime.
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(server) => server,
            Err(e) => panic!("svc-testkit: cannot start the fake API server: {e}"),
        }
    }

    /// Starts a server on a random port of `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] if the listening socket cannot be bound.
    pub async fn try_start() -> Result<Self> {
        let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let bind_err = |source| Error::Bind {
            addr: requested,
            source,
        };
        let listener = bind_outside_ephemeral_range().await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared::default());
        let running = Running::spawn(listener, &shared);
        tracing::debug!(%addr, "fake API server started");
        Ok(Self {
            shared,
            addr,
            running: parking_lot::Mutex::new(Some(running)),
        })
    }

    /// Takes the server away, as an apiserver outage does: the listener closes (new
    /// connections are refused) and every open connection is cut, watch streams included. The
    /// stored state, the history and the resource version stay, and the handle still writes
    /// to them, so that the server can come back with a newer state. Returns once the port is
    /// closed. Does nothing if the server is stopped already.
    pub async fn stop(&self) {
        let running = self.running.lock().take();
        if let Some(Running { shutdown, accept }) = running {
            drop(shutdown);
            let _ = accept.await;
            tracing::debug!(addr = %self.addr, "fake API server stopped");
        }
    }

    /// Brings a [stopped](Self::stop) server back on the same address, with whatever state it
    /// holds now (clients resume their watches from their last resource version and get
    /// everything written meanwhile). Does nothing if it is running.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] if the address cannot be bound again (something else took the port).
    pub async fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = rebind(self.addr).await.map_err(|source| Error::Bind {
            addr: self.addr,
            source,
        })?;
        let running = Running::spawn(listener, &self.shared);
        *self.running.lock() = Some(running);
        tracing::debug!(addr = %self.addr, "fake API server started again");
        Ok(())
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again): a restart mid-watch, where
    /// every connection is dropped and the state is the same.
    ///
    /// # Errors
    ///
    /// See [`start_again`](Self::start_again).
    pub async fn restart(&self) -> Result<()> {
        self.stop().await;
        self.start_again().await
    }

    /// Whether the server is accepting connections (not [stopped](Self::stop)).
    pub fn is_running(&self) -> bool {
        self.running.lock().is_some()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube config for this server: no TLS, no auth, default namespace
    /// `default`, no read timeout (so long watches survive), kube's default
    /// retries of 429/503/504 left on.
    pub fn config(&self) -> kube::Config {
        let url = http::Uri::from_maybe_shared(self.url()).unwrap_or_default();
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        config.read_timeout = None;
        config
    }

    /// Turns RBAC on with these grants (`None` turns it off: everything allowed, the
    /// default). Denied resource requests get the apiserver's 403 `Forbidden` status.
    pub fn set_rbac(&self, rbac: Option<crate::Rbac>) {
        *self.shared.rbac.write() = rbac;
    }

    /// A kube client for this server, from [`config`](Self::config).
    ///
    /// # Errors
    ///
    /// [`Error::Client`] if kube rejects the configuration.
    pub fn try_client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config()).map_err(Error::Client)
    }

    /// A kube client for this server, from [`config`](Self::config).
    ///
    /// # Panics
    ///
    /// If kube rejects the configuration (it does not for a plain `http` URL).
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(client) => client,
            Err(e) => panic!("svc-testkit: cannot build a kube client: {e}"),
        }
    }

    /// Creates or replaces an object and returns its new resource version.
    ///
    /// Sets `metadata.resourceVersion`, and `uid`, `creationTimestamp` and
    /// `namespace` (`default`) when missing; an existing object's `uid` and
    /// `creationTimestamp` are kept. Any `resourceVersion` in `obj` is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObject`] if `metadata.name` is missing or invalid.
    pub fn try_apply<K: FakeResource>(&self, obj: &K) -> Result<u64> {
        let value = serde_json::to_value(obj).map_err(|e| Error::InvalidObject(e.to_string()))?;
        self.shared
            .write(K::KIND, value, WriteMode::Apply)
            .map(|event| event.rv)
            .map_err(|e| Error::InvalidObject(format!("{e:?}")))
    }

    /// Like [`try_apply`](Self::try_apply).
    ///
    /// # Panics
    ///
    /// If the object has no (valid) `metadata.name`.
    pub fn apply<K: FakeResource>(&self, obj: K) -> u64 {
        match self.try_apply(&obj) {
            Ok(rv) => rv,
            Err(e) => panic!("svc-testkit: cannot apply {}: {e}", K::KIND),
        }
    }

    /// Creates or replaces a `Service`; see [`apply`](Self::apply).
    pub fn apply_service(&self, service: Service) -> u64 {
        self.apply(service)
    }

    /// Creates or replaces an `EndpointSlice`; see [`apply`](Self::apply).
    pub fn apply_slice(&self, slice: EndpointSlice) -> u64 {
        self.apply(slice)
    }

    /// Deletes an object; returns the deletion's resource version, or `None`
    /// if it did not exist.
    pub fn delete<K: FakeResource>(&self, namespace: &str, name: &str) -> Option<u64> {
        self.shared
            .delete(K::KIND, &ObjKey::new(namespace, name))
            .map(|event| event.rv)
    }

    /// Deletes a `Service`; see [`delete`](Self::delete).
    pub fn delete_service(&self, namespace: &str, name: &str) -> Option<u64> {
        self.delete::<Service>(namespace, name)
    }

    /// Deletes an `EndpointSlice`; see [`delete`](Self::delete).
    pub fn delete_slice(&self, namespace: &str, name: &str) -> Option<u64> {
        self.delete::<EndpointSlice>(namespace, name)
    }

    /// The stored state of an object, as the API server would return it.
    pub fn get<K: FakeResource>(&self, namespace: &str, name: &str) -> Option<K> {
        let value = self
            .shared
            .inner
            .lock()
            .store
            .get(K::KIND, &ObjKey::new(namespace, name))?;
        K::deserialize(&*value).ok()
    }

    /// The current (latest) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.inner.lock().store.resource_version()
    }

    /// The compaction point: watches, continue tokens and `Exact` lists need a
    /// resource version at least this high.
    pub fn compacted_resource_version(&self) -> u64 {
        self.shared.inner.lock().store.compacted()
    }

    /// Forgets all history up to now: any watch, continue token or `Exact`
    /// list from an older resource version then gets 410 Gone. Open watches
    /// are not affected.
    ///
    /// History is also compacted automatically beyond 100 000 events.
    pub fn compact(&self) {
        self.shared.inner.lock().store.compact();
    }

    /// Ends every open watch stream abruptly: the response body fails, so the
    /// connection is cut without the final chunk. Clients must resume from
    /// their last resource version.
    pub fn drop_watches(&self) {
        self.shared.faults.drop_watches();
    }

    /// Fails the next `n` requests (of any kind, including lists, watches and
    /// discovery) with `status` and a `Status` body. Replaces any pending
    /// injected failures.
    ///
    /// Note that kube's client retries 429, 503 and 504 by itself (see
    /// [`config`](Self::config)); use e.g. 500 to see the error directly.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared.faults.fail_next(
            n,
            Failure {
                status,
                retry_after: None,
            },
        );
    }

    /// Like [`fail_next`](Self::fail_next), with a `Retry-After: secs` header.
    pub fn fail_next_with_retry_after(&self, n: usize, status: u16, secs: u64) {
        self.shared.faults.fail_next(
            n,
            Failure {
                status,
                retry_after: Some(secs),
            },
        );
    }

    /// Delays every response (watch responses: their headers) by `latency`.
    /// Default: zero.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.set_latency(latency);
    }

    /// While `true`, watch streams (open and new) deliver nothing: no events,
    /// no bookmarks, and they do not end at `timeoutSeconds`; the connection
    /// stays open. Events are queued, not lost: setting it back to `false`
    /// releases them in order. [`drop_watches`](Self::drop_watches) still
    /// ends stalled streams.
    pub fn stall_watches(&self, stalled: bool) {
        self.shared.faults.set_stalled(stalled);
    }

    /// Sets the interval of periodic bookmarks, `None` to disable them.
    /// Default: 1 second.
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.shared.bookmark_interval.send_replace(interval);
    }

    /// Sends a bookmark at the current resource version to every open watch
    /// that asked for bookmarks.
    pub fn send_bookmark_now(&self) {
        self.shared.send_bookmarks();
    }

    /// Requests received, of any kind (including failed ones).
    pub fn request_count(&self) -> u64 {
        self.shared.counters.requests()
    }

    /// List requests received for `kind` (including failed ones).
    pub fn list_count(&self, kind: Kind) -> u64 {
        self.shared.counters.lists(kind)
    }

    /// Watch requests received for `kind` (including failed ones).
    pub fn watch_count(&self, kind: Kind) -> u64 {
        self.shared.counters.watches(kind)
    }

    /// Watch streams currently open (not counting streams that only carry an
    /// error event).
    pub fn open_watches(&self) -> usize {
        *self.shared.open_watches.borrow()
    }

    /// Waits until exactly `n` watch streams are open. Combine with
    /// `tokio::time::timeout` in tests.
    pub async fn wait_for_open_watches(&self, n: usize) {
        let mut rx = self.shared.open_watches.subscribe();
        // The sender lives in `self.shared`, so this cannot fail.
        let _ = rx.wait_for(|open| *open == n).await;
    }
}

/// Accepts connections until the handle is dropped, then cuts them all.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| routes::handle(shared.clone(), req));
                        let builder = auto::Builder::new(TokioExecutor::new());
                        if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
                            tracing::trace!(error = %e, "fake API server connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fake API server accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // Dropping the set would only ask its tasks to stop; wait until every connection is
    // closed, so that `stop` returns with no socket of the server left open on the port.
    connections.shutdown().await;
    tracing::debug!("fake API server stopped");
}

/// Binds `addr` again after a [stop](FakeApiServer::stop). The connections the server cut
/// may still be closing (their sockets hold the port until the client's side has closed too),
/// and the kernel refused the bind once in a CI run under load: tries for up to two seconds
/// while the port is in use.
async fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bound => return bound,
        }
    }
}

/// Binds `127.0.0.1` on a random port below the kernel's ephemeral range (20000 up to it).
///
/// `bind(0)` picks a port from the ephemeral range, and while a test has the server
/// [stopped](FakeApiServer::stop) any client may get that port as its source port: a client
/// retrying `127.0.0.1:P` during the outage can even connect to itself (TCP simultaneous
/// open), and then [`FakeApiServer::start_again`] cannot bind `P` (it failed so once, under
/// load). Falls back to `bind(0)` when the range below is too small or every try is taken.
async fn bind_outside_ephemeral_range() -> std::io::Result<TcpListener> {
    use std::hash::{BuildHasher, Hasher};
    const FROM: u16 = 20_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > FROM + 1_000 {
        let span = u64::from(ephemeral_low - FROM);
        let mut seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        for _ in 0..64 {
            // xorshift64: enough to spread tries over the span.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let port = FROM + u16::try_from(seed % span).unwrap_or(0);
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
}
