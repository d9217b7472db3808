//! [`EndpointPool`]: the live, balanced endpoint set of one Service port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use svc_core::model::SessionAffinity;
use svc_core::store::{PortRef, ServiceSnapshot};
use svc_core::{ServiceKey, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use super::builder::{PoolBuilder, TaskGuard};
use super::config::BalanceConfig;
use super::endpoint::{EndpointState, EndpointStats, Nanos, NOT_STARTING};
use super::outlier::{panicking, Outlier};
use super::p2c::{choose, Skip, Tuning, Turn};
use super::pick::Pick;
use super::rng::SplitMix;
use crate::error::{NoEndpoints, NoEndpointsReason};
use crate::policy::{self, AffinityTable, Locality, Scope};

/// The eligible endpoints at one moment, replaced whole on every change.
#[derive(Debug)]
struct Set {
    /// Why the set is empty, when it is.
    reason: NoEndpointsReason,
    /// Eligible endpoints, sorted by address.
    endpoints: Box<[Arc<EndpointState>]>,
    /// `Some(timeout)` for `sessionAffinity: ClientIP`.
    affinity: Option<Duration>,
}

impl Set {
    fn find(&self, addr: SocketAddr) -> Option<&Arc<EndpointState>> {
        self.endpoints
            .binary_search_by(|e| e.addr.cmp(&addr))
            .ok()
            .map(|i| &self.endpoints[i])
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    key: ServiceKey,
    port: PortRef,
    locality: Locality,
    scope: Scope,
    pub(crate) config: BalanceConfig,
    pub(crate) decay_ns: f64,
    tuning: Tuning,
    epoch: Instant,
    rng: SplitMix,
    /// The rotation: each pick takes the next value; it jumps to an endpoint that joins.
    turns: AtomicU64,
    /// Whether the pool has had endpoints (the first ones are not "joining").
    had_endpoints: AtomicBool,
    set: RwLock<Arc<Set>>,
    outlier: Outlier,
    affinity: Mutex<Option<AffinityTable>>,
    ready: watch::Sender<bool>,
    addrs: watch::Sender<Arc<[SocketAddr]>>,
}

impl Shared {
    pub(super) fn new(
        key: ServiceKey,
        port: PortRef,
        locality: Locality,
        scope: Scope,
        config: BalanceConfig,
        seed: u64,
    ) -> Self {
        let decay_ns = (config.ewma_decay.as_nanos() as f64).max(1.0);
        Self {
            decay_ns,
            tuning: Tuning {
                tolerance: config.latency_tolerance.max(1.0),
                floor_ns: config.latency_floor.as_nanos() as f64,
                starvation: u64::from(config.starvation_picks),
                slow_start: config.slow_start.clone(),
            },
            turns: AtomicU64::new(0),
            had_endpoints: AtomicBool::new(false),
            config,
            key,
            port,
            locality,
            scope,
            epoch: Instant::now(),
            rng: SplitMix::new(seed),
            set: RwLock::new(Arc::new(Set {
                reason: NoEndpointsReason::NotSynced,
                endpoints: Box::new([]),
                affinity: None,
            })),
            outlier: Outlier::default(),
            affinity: Mutex::new(None),
            ready: watch::Sender::new(false),
            addrs: watch::Sender::new(Arc::from([])),
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.nanos_at(Instant::now())
    }

    /// `at` on the pool's clock.
    pub(crate) fn nanos_at(&self, at: Instant) -> Nanos {
        at.saturating_duration_since(self.epoch).as_nanos() as Nanos
    }

    /// Called when a pick fails: ejects the endpoint once its streak is long enough.
    pub(crate) fn on_failure(&self, ep: &Arc<EndpointState>) {
        let streak = ep.failure();
        let threshold = self.config.consecutive_failures;
        if threshold == 0 || streak < threshold || ep.is_ejected() {
            return;
        }
        let set = self.set.read().clone();
        let in_set = set.find(ep.addr).is_some_and(|e| Arc::ptr_eq(e, ep));
        self.outlier
            .try_eject(ep, set.endpoints.len(), in_set, self.now(), &self.config);
    }

    /// The RTT estimate a new endpoint starts with: the median of the current estimates, so
    /// that it is equal to the others from the start (with `default_rtt` it would look slower
    /// than every warmed-up endpoint of a fast service; the median, unlike the mean, is not
    /// pulled out of the others' band by one slow endpoint), or `default_rtt` when there is
    /// nothing to go by.
    fn initial_rtt<'a>(
        &self,
        existing: impl Iterator<Item = &'a Arc<EndpointState>>,
        now: Nanos,
    ) -> Duration {
        let mut estimates: Vec<f64> = existing
            .map(|e| e.rtt_estimate(now, self.decay_ns))
            .collect();
        if estimates.is_empty() {
            return self.config.default_rtt;
        }
        estimates.sort_by(f64::total_cmp);
        let median = estimates[estimates.len() / 2];
        Duration::from_nanos(median as u64).min(self.config.default_rtt)
    }

    /// Prepares endpoints that have just become eligible (`joined`, indexes into `eps`): their
    /// failure streak is forgiven (the readiness probe passed again), they count as chosen
    /// now (so that the starvation rule does not single them out), and either they start
    /// their slow start, or the rotation moves to the first of them so that it gets the very
    /// next pick.
    fn welcome(&self, eps: &[Arc<EndpointState>], joined: &[usize], now: Nanos) {
        let turn = self.turns.load(Ordering::Relaxed);
        for &i in joined {
            let ep = &eps[i];
            ep.forgive();
            ep.set_last_chosen(turn);
            match &self.config.slow_start {
                Some(_) => ep.set_eligible_since(now),
                None => ep.set_eligible_since(NOT_STARTING),
            }
        }
        if let (None, Some(&first)) = (&self.config.slow_start, joined.first()) {
            let n = eps.len() as u64;
            let _ = self
                .turns
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some(t + (first as u64 + n - t % n) % n)
                });
        }
    }

    /// Recomputes the eligible set from a snapshot of the Service.
    pub(super) fn update(
        &self,
        snapshot: Option<&ServiceSnapshot>,
        synced: bool,
        states: &mut HashMap<SocketAddr, Arc<EndpointState>>,
    ) {
        let now = self.now();
        let port = snapshot.and_then(|s| self.port.find(s).map(|p| (s, p)));
        let mut set = Set {
            reason: NoEndpointsReason::NoneEligible,
            endpoints: Box::new([]),
            affinity: None,
        };
        match (snapshot, port) {
            (None, _) if !synced => set.reason = NoEndpointsReason::NotSynced,
            (None, _) => set.reason = NoEndpointsReason::NoService,
            (Some(_), None) => set.reason = NoEndpointsReason::NoPort,
            (Some(_), Some((snap, port))) => {
                // Keep state (load, streaks, ejections) for every endpoint of the port, eligible
                // or not, so that a readiness flip does not reset it.
                states.retain(|addr, _| port.endpoint(*addr).is_some());
                let eligible =
                    policy::eligible(&snap.service, &port.endpoints, &self.locality, self.scope);
                let initial_rtt = self.initial_rtt(states.values(), now);
                set.endpoints = eligible
                    .iter()
                    .map(|pe| {
                        states
                            .entry(pe.addr)
                            .or_insert_with(|| {
                                Arc::new(EndpointState::new(pe.addr, initial_rtt, now))
                            })
                            .clone()
                    })
                    .collect();
                if let SessionAffinity::ClientIp { timeout } = snap.service.session_affinity {
                    set.affinity = Some(timeout);
                }
                let before = self.set.read().clone();
                let joined: Vec<usize> = if self.had_endpoints.load(Ordering::Relaxed) {
                    (0..set.endpoints.len())
                        .filter(|&i| before.find(set.endpoints[i].addr).is_none())
                        .collect()
                } else {
                    Vec::new()
                };
                self.welcome(&set.endpoints, &joined, now);
                if !set.endpoints.is_empty() {
                    self.had_endpoints.store(true, Ordering::Relaxed);
                }
            }
        }
        if set.reason != NoEndpointsReason::NoneEligible {
            states.clear();
        }
        let set = Arc::new(set);
        {
            let mut table = self.affinity.lock();
            match (set.affinity, table.as_mut()) {
                (None, _) => *table = None,
                (Some(t), None) => *table = Some(AffinityTable::new(t)),
                (Some(t), Some(existing)) => {
                    existing.set_timeout(t);
                    existing.retain_endpoints(|a| set.find(a).is_some());
                }
            }
        }
        self.outlier
            .retain(|e| set.find(e.addr).is_some_and(|x| Arc::ptr_eq(x, e)));
        let addrs: Arc<[SocketAddr]> = set.endpoints.iter().map(|e| e.addr).collect();
        tracing::debug!(
            service = %self.key,
            endpoints = addrs.len(),
            reason = %set.reason,
            "endpoint pool updated"
        );
        *self.set.write() = set.clone();
        self.addrs.send_if_modified(|current| {
            let changed = **current != *addrs;
            if changed {
                *current = addrs;
            }
            changed
        });
        if set.reason != NoEndpointsReason::NotSynced {
            self.ready.send_if_modified(|r| !std::mem::replace(r, true));
        }
    }

    fn no_endpoints(&self, reason: NoEndpointsReason) -> NoEndpoints {
        NoEndpoints::new(self.key.clone(), self.port.clone(), reason)
    }
}

/// The live, balanced endpoints of one Service port.
///
/// Follows the Service in the store, keeps the endpoints that [`policy::eligible`] allows for
/// this client, and picks among them (see the [module docs](super)), skipping outliers. Cheap to clone
/// (one `Arc`); `Send + Sync`. The follower task ends when the last clone is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use svc_core::store::{Event, PortRef, StoreConfig, Writer};
/// use svc_tower::balance::{BalanceConfig, EndpointPool};
/// use svc_tower::policy::{Locality, Scope};
///
/// let (store, mut writer) = svc_core::store::store(StoreConfig::default());
/// let yaml = r#"
/// apiVersion: v1
/// kind: Service
/// metadata: {name: web, namespace: shop}
/// spec: {clusterIP: 127.0.0.77, ports: [{name: http, port: 80, targetPort: 8080}]}
/// ---
/// apiVersion: discovery.k8s.io/v1
/// kind: EndpointSlice
/// metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
/// addressType: IPv4
/// ports: [{name: http, port: 8080}]
/// endpoints: [{addresses: [127.0.0.11], conditions: {ready: true}}]
/// "#;
/// for event in svc_core::source::manifests::parse_str(yaml).unwrap().into_events() {
///     writer.apply(event);
/// }
/// let pool = EndpointPool::builder(
///     store,
///     svc_core::ServiceKey::new("shop", "web"),
///     PortRef::Name(Some("http".into())),
/// )
/// .locality(Locality::default())
/// .scope(Scope::Internal)
/// .config(BalanceConfig::default().consecutive_failures(3))
/// .build();
/// let pick = pool.pick(None).unwrap();
/// assert_eq!(pick.addr.to_string(), "127.0.0.11:8080");
/// pick.success(std::time::Duration::from_millis(3));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct EndpointPool {
    pub(super) shared: Arc<Shared>,
    pub(super) _task: Arc<TaskGuard>,
}

impl EndpointPool {
    /// A [`PoolBuilder`] for a pool following `key`'s `port` in `store`: the one way to make a
    /// pool. Its by-value methods set where the client runs, how the Service is reached and
    /// the balancer settings; [`PoolBuilder::build`] does not block (the current state is read
    /// at once, and a spawned task follows later changes).
    pub fn builder(store: Store, key: ServiceKey, port: PortRef) -> PoolBuilder {
        PoolBuilder {
            store,
            key,
            port,
            locality: Locality::default(),
            scope: Scope::default(),
            config: BalanceConfig::default(),
            seed: None,
        }
    }

    /// Picks an endpoint among the eligible, un-ejected endpoints (see [`BalanceConfig`]). With
    /// `client` set and `sessionAffinity: ClientIP` on the Service, the client's previous
    /// endpoint is reused while it stays eligible (within the affinity timeout).
    ///
    /// Synchronous and lock-free apart from a read lock on the endpoint set; it allocates
    /// nothing, except to remember a new client under session affinity.
    ///
    /// # Errors
    ///
    /// [`NoEndpoints`] at once when nothing is eligible.
    pub fn pick(&self, client: Option<IpAddr>) -> Result<Pick, NoEndpoints> {
        self.pick_excluding(client, &[])
    }

    /// Like [`pick`](Self::pick), but avoids the addresses in `exclude` (e.g. endpoints a
    /// retry already failed to connect to) unless nothing else is left.
    ///
    /// # Errors
    ///
    /// [`NoEndpoints`] at once when nothing is eligible.
    pub fn pick_excluding(
        &self,
        client: Option<IpAddr>,
        exclude: &[SocketAddr],
    ) -> Result<Pick, NoEndpoints> {
        self.pick_excluding_at(client, exclude, Instant::now())
    }

    /// [`pick_excluding`](Self::pick_excluding) at `at`, a clock read of the caller's (a
    /// request path reads the clock enough without the pool reading it again).
    ///
    /// # Errors
    ///
    /// [`NoEndpoints`] at once when nothing is eligible.
    pub fn pick_excluding_at(
        &self,
        client: Option<IpAddr>,
        exclude: &[SocketAddr],
        at: Instant,
    ) -> Result<Pick, NoEndpoints> {
        let shared = &self.shared;
        let set = shared.set.read();
        let eps = &set.endpoints[..];
        if eps.is_empty() {
            return Err(shared.no_endpoints(set.reason));
        }
        let now = shared.nanos_at(at);
        if shared.outlier.sweep_due(now) {
            shared.outlier.sweep(now);
        }
        let ejected = shared.outlier.count();
        let skip_ejected =
            ejected > 0 && !panicking(eps.len(), ejected, shared.config.panic_threshold_percent);
        if let (Some(client), Some(_)) = (client, set.affinity) {
            let mut table = shared.affinity.lock();
            if let Some(table) = table.as_mut() {
                let usable = |addr: SocketAddr| {
                    !exclude.contains(&addr)
                        && set
                            .find(addr)
                            .is_some_and(|e| !(skip_ejected && e.is_ejected()))
                };
                if let Some(addr) = table.get(client, at, usable) {
                    let ep = set.find(addr).expect("checked by `usable`");
                    return Ok(Pick::new(ep.clone(), shared.clone()));
                }
                let ep = self.choose(eps, now, skip_ejected, exclude);
                table.insert(client, ep.addr, at);
                return Ok(Pick::new(ep.clone(), shared.clone()));
            }
        }
        let ep = self.choose(eps, now, skip_ejected, exclude);
        Ok(Pick::new(ep.clone(), shared.clone()))
    }

    #[inline]
    fn choose<'a>(
        &self,
        eps: &'a [Arc<EndpointState>],
        now: Nanos,
        skip_ejected: bool,
        exclude: &[SocketAddr],
    ) -> &'a Arc<EndpointState> {
        let shared = &self.shared;
        let turn = Turn {
            turn: shared.turns.fetch_add(1, Ordering::Relaxed),
            now,
            rng: &shared.rng,
            tuning: &shared.tuning,
        };
        let skip = |ejected, exclude| Skip { ejected, exclude };
        choose(eps, &turn, skip(skip_ejected, exclude))
            .or_else(|| choose(eps, &turn, skip(skip_ejected, &[])))
            .or_else(|| choose(eps, &turn, skip(false, &[])))
            .expect("eps is not empty")
    }

    /// The eligible endpoints right now, sorted by address (ejected ones included).
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.shared
            .set
            .read()
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect()
    }

    /// A watch on the eligible endpoints: it changes whenever the set of addresses does.
    pub fn watch_endpoints(&self) -> watch::Receiver<Arc<[SocketAddr]>> {
        self.shared.addrs.subscribe()
    }

    /// Counters and load of each eligible endpoint, for metrics.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let now = self.shared.now();
        let set = self.shared.set.read().clone();
        set.endpoints
            .iter()
            .map(|e| e.stats(now, self.shared.decay_ns))
            .collect()
    }

    /// Why the pool is empty, or `None` when it has endpoints.
    pub fn empty_reason(&self) -> Option<NoEndpointsReason> {
        let set = self.shared.set.read();
        set.endpoints.is_empty().then_some(set.reason)
    }

    /// Resolves once the pool knows whether the Service exists: it has seen the Service, or
    /// the store has finished its initial sync.
    pub async fn ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        // The sender lives in `shared`, which `self` keeps alive.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether `addr` is eligible right now (ejected or not).
    pub(crate) fn is_eligible(&self, addr: SocketAddr) -> bool {
        self.shared.set.read().find(addr).is_some()
    }

    /// A pick of `addr` itself, not by the balancer: for a connection made for one pick and
    /// used later, as long as its endpoint is still eligible and not ejected (unless the pool
    /// is in panic). It counts as in flight and reports like any pick.
    pub(crate) fn pick_endpoint(&self, addr: SocketAddr) -> Option<Pick> {
        let shared = &self.shared;
        let set = shared.set.read();
        let ep = set.find(addr)?;
        if ep.is_ejected() {
            let ejected = shared.outlier.count();
            if !panicking(
                set.endpoints.len(),
                ejected,
                shared.config.panic_threshold_percent,
            ) {
                return None;
            }
        }
        Some(Pick::new(ep.clone(), shared.clone()))
    }

    /// Identifies the pool: clones share it.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The Service this pool follows.
    pub fn service(&self) -> &ServiceKey {
        &self.shared.key
    }

    /// The Service port this pool follows.
    pub fn port(&self) -> &PortRef {
        &self.shared.port
    }
}
