//! Listener management: one listener per Service address, added and removed live.
//!
//! The [`Reconciler`] follows the store's change feed. For each changed Service it works out
//! the addresses the Service should be served on (each cluster IP, external IP and
//! load-balancer IP with each port, and the NodePorts on `--nodeport-addr`) and starts or stops
//! listeners to match. An address no Service claims has no listener, so the proxy is never an
//! open relay. When two Services claim one address, the store's index decides (the lower name
//! wins), and the loser takes over if the winner goes away.
//!
//! Changes are applied in rounds: every Service the feed reports at once is worked out first,
//! then the removed listeners are closed together, the interface addresses changed in one batch
//! of netlink requests, and the new sockets bound. Ready means programmed ([`Status`]): once the
//! store has synced and every Service of the sync has been through a round, `/readyz` reports
//! the dataplane, and any listener that could not be created keeps it failing. Such a listener
//! is retried with backoff (`failure::backoff`) on its own, not only when its Service
//! changes, counted in `svc_proxy_listener_errors_total`, listed in `/readyz?verbose` and
//! logged once per cause per round.

mod apply;
mod failure;
mod status;

pub use failure::Cause;
pub use status::{FailingListener, Status};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::FutureExt;
use svc_core::model::{IpFamily, Protocol, ServiceKey};
use svc_core::store::VipKind;
use svc_tower::policy::Scope;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::iface::{Cidr, Interface};
use crate::target::{Mode, Route, Target};
use crate::Context;
use failure::FailureLog;

/// A listening address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    /// The address.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

enum State {
    /// To be created at the end of this round.
    Pending,
    /// Serving; the task owns the socket.
    Listening {
        cancel: CancellationToken,
        task: JoinHandle<()>,
    },
    /// Could not be created; retried at `retry_at`.
    Failing {
        cause: Cause,
        error: String,
        retry_at: Instant,
    },
}

struct Active {
    route: Route,
    state: State,
    /// Failed attempts since it last listened.
    attempts: u32,
    /// The interface address this listener holds, if any.
    iface_ip: Option<IpAddr>,
}

type PoolKey = (ServiceKey, u16, Protocol, Scope, IpFamily);

/// Where Service addresses become local: `--service-cidr` routes cover some, the managed
/// interface (if any) gets the rest.
pub struct Addresses {
    /// `--manage-interface`.
    pub interface: Option<Interface>,
    /// `--service-cidr`: addresses in these need nothing per address.
    pub routed: Vec<Cidr>,
}

impl Addresses {
    /// Whether a listener on `ip`, reached as `kind`, needs an address on the interface.
    fn needs_address(&self, ip: IpAddr, kind: VipKind) -> bool {
        // The NodePort address is the node's own.
        self.interface.is_some()
            && kind != VipKind::NodePort
            && !self.routed.iter().any(|c| c.contains(ip))
    }
}

/// Keeps the set of listeners in line with the store.
pub struct Reconciler {
    ctx: Arc<Context>,
    listeners: HashMap<ListenKey, Active>,
    /// A Service's listeners (a handful: a Vec is a tenth of a HashSet's size).
    by_service: HashMap<ServiceKey, Vec<ListenKey>>,
    targets: HashMap<PoolKey, (Arc<Target>, usize)>,
    addresses: Addresses,
    /// Listeners to create at the end of this round.
    pending: Vec<ListenKey>,
    /// Tasks of listeners stopped this round, to wait for before binding again.
    stopping: Vec<JoinHandle<()>>,
    /// Interface addresses to release at the end of this round.
    unheld: Vec<IpAddr>,
    failing: HashSet<ListenKey>,
    /// Listening sockets, and how many may be open (from the open-file limit).
    sockets: usize,
    budget: usize,
    log: FailureLog,
    /// Listeners started and stopped since the last summary line.
    started: usize,
    stopped: usize,
}

impl Reconciler {
    /// A reconciler with no listeners yet, which makes addresses local through `addresses`
    /// and opens at most `budget` listening sockets.
    pub fn new(ctx: Arc<Context>, addresses: Addresses, budget: usize) -> Self {
        Self {
            ctx,
            listeners: HashMap::new(),
            by_service: HashMap::new(),
            targets: HashMap::new(),
            addresses,
            pending: Vec::new(),
            stopping: Vec::new(),
            unheld: Vec::new(),
            failing: HashSet::new(),
            sockets: 0,
            budget,
            log: FailureLog::default(),
            started: 0,
            stopped: 0,
        }
    }

    /// Follows the store until shutdown begins, then stops every listener.
    pub async fn run(mut self) {
        let mut changes = self.ctx.store.changes();
        let began = Instant::now();
        let status = self.ctx.dataplane.clone();
        // Nothing is served before the initial lists are in (and `/readyz` waits for them
        // anyway): listeners built between the Services' list and the EndpointSlices' would
        // rebuild every balancer at once when the slices land, which at 10,000 Services put
        // that garbage on top of the sync's own peak memory.
        tokio::select! {
            _ = self.ctx.store.wait_until_ready() => {}
            _ = self.ctx.drain.signaled() => return,
        }
        loop {
            // Every key the store published before it marked itself synced is in the feed by
            // now (it publishes first): once a drain started after seeing `synced` finds
            // nothing more, the whole sync has been applied.
            let synced = self.ctx.store.is_synced();
            if synced && !status.is_programmed() {
                match changes.changed().now_or_never() {
                    Some(keys) => {
                        self.reconcile(keys).await;
                        continue;
                    }
                    None => {
                        status.set_programmed();
                        tracing::info!(
                            listening = self.sockets,
                            failing = self.failing.len(),
                            took_ms = began.elapsed().as_millis() as u64,
                            "dataplane programmed: every Service of the initial sync has its listeners"
                        );
                    }
                }
            }
            let retry = self.next_retry();
            tokio::select! {
                keys = changes.changed() => self.reconcile(keys).await,
                _ = sleep_until(retry) => self.retry_due().await,
                _ = self.ctx.store.wait_until_ready(), if !synced => {}
                _ = self.ctx.drain.signaled() => break,
            }
        }
        for (_, active) in self.listeners.drain() {
            if let State::Listening { cancel, task } = active.state {
                cancel.cancel();
                let _ = task.await;
            }
        }
    }

    /// The number of listening sockets.
    pub fn len(&self) -> usize {
        self.sockets
    }

    /// Whether no listener is up.
    pub fn is_empty(&self) -> bool {
        self.sockets == 0
    }

    /// Brings the listeners of these Services in line with the store, in one round.
    pub async fn reconcile(&mut self, keys: Vec<ServiceKey>) {
        let mut work = keys;
        let mut done = HashSet::new();
        while let Some(key) = work.pop() {
            if !done.insert(key.clone()) {
                continue;
            }
            let desired = self.desired(&key);
            let current: Vec<ListenKey> = self
                .by_service
                .get(&key)
                .into_iter()
                .flatten()
                .copied()
                .collect();
            for lk in current {
                let keep = desired
                    .get(&lk)
                    .is_some_and(|r| self.listeners.get(&lk).is_some_and(|a| a.route == *r));
                if !keep {
                    self.stop(lk);
                    // Another Service may claim the address now.
                    if let Some(other) = self.owner(&lk).filter(|o| *o != key) {
                        done.remove(&other);
                        work.push(other);
                    }
                }
            }
            for (lk, route) in desired {
                if let Some(active) = self.listeners.get(&lk) {
                    // A failing listener with the same route keeps its backoff.
                    if active.route == route {
                        continue;
                    }
                    self.stop(lk);
                }
                self.add(lk, route);
            }
        }
        self.apply().await;
    }

    /// Which Service the store says owns this address.
    fn owner(&self, lk: &ListenKey) -> Option<ServiceKey> {
        let store = &self.ctx.store;
        let m = if Some(lk.addr.ip()) == self.ctx.args.nodeport_addr {
            store.lookup_node_port(lk.addr.port(), lk.protocol)
        } else {
            None
        };
        m.or_else(|| store.lookup_vip(lk.addr.ip(), lk.addr.port(), lk.protocol))
            .map(|m| m.service.service.key.clone())
    }

    /// The addresses `key` should be served on, with how.
    fn desired(&self, key: &ServiceKey) -> HashMap<ListenKey, Route> {
        let mut out = HashMap::new();
        let store = &self.ctx.store;
        let Some(snap) = store.get(key) else {
            return out;
        };
        let svc = &snap.service;
        if !svc.is_proxied() {
            return out;
        }
        let ips = svc
            .cluster_ips
            .iter()
            .copied()
            .chain(svc.external_ips.iter().copied())
            .chain(svc.load_balancer_ingress.iter().filter_map(|i| i.ip));
        for (i, p) in svc.ports.iter().enumerate() {
            let Some(mode) = Mode::of(p) else { continue };
            let route = |kind: VipKind, ip: IpAddr| Route {
                service: key.clone(),
                port: p.port,
                protocol: p.protocol,
                kind,
                family: IpFamily::of(ip),
                mode,
            };
            for ip in ips.clone() {
                // Only where the index agrees that this Service owns the address.
                if let Some(m) = store.lookup_vip(ip, p.port, p.protocol) {
                    if m.service.service.key == *key && m.port == i {
                        let lk = ListenKey {
                            addr: SocketAddr::new(ip, p.port),
                            protocol: p.protocol,
                        };
                        out.insert(lk, route(m.kind, ip));
                    }
                }
            }
            if let (Some(np), Some(node_ip)) = (p.node_port, self.ctx.args.nodeport_addr) {
                if let Some(m) = store.lookup_node_port(np, p.protocol) {
                    if m.service.service.key == *key && m.port == i {
                        let lk = ListenKey {
                            addr: SocketAddr::new(node_ip, np),
                            protocol: p.protocol,
                        };
                        out.insert(lk, route(VipKind::NodePort, node_ip));
                    }
                }
            }
        }
        out
    }

    fn target(&mut self, route: &Route) -> Arc<Target> {
        let entry = self
            .targets
            .entry(route.pool_key())
            .or_insert_with(|| (Target::new(self.ctx.clone(), route), 0));
        entry.1 += 1;
        entry.0.clone()
    }

    fn release_target(&mut self, route: &Route) {
        let key = route.pool_key();
        if let Some(entry) = self.targets.get_mut(&key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.targets.remove(&key);
            }
        }
    }

    /// Records a listener to create at the end of the round.
    fn add(&mut self, lk: ListenKey, route: Route) {
        let listeners = self.by_service.entry(route.service.clone()).or_default();
        if !listeners.contains(&lk) {
            listeners.push(lk);
        }
        self.listeners.insert(
            lk,
            Active {
                route,
                state: State::Pending,
                attempts: 0,
                iface_ip: None,
            },
        );
        self.pending.push(lk);
    }

    /// Stops a listener: its task is cancelled now and waited for at the end of the round.
    fn stop(&mut self, lk: ListenKey) {
        let Some(active) = self.listeners.remove(&lk) else {
            return;
        };
        if let Some(set) = self.by_service.get_mut(&active.route.service) {
            set.retain(|l| *l != lk);
            if set.is_empty() {
                self.by_service.remove(&active.route.service);
            }
        }
        self.failing.remove(&lk);
        if let State::Listening { cancel, task } = active.state {
            cancel.cancel();
            self.stopping.push(task);
            self.sockets -= 1;
            self.stopped += 1;
            self.release_target(&active.route);
            tracing::debug!(addr = %lk.addr, protocol = lk.protocol.as_str(), service = %active.route.service,
                "stopped listening");
        }
        self.unheld.extend(active.iface_ip);
    }

    fn next_retry(&self) -> Option<Instant> {
        self.failing
            .iter()
            .filter_map(|lk| match self.listeners.get(lk).map(|a| &a.state) {
                Some(State::Failing { retry_at, .. }) => Some(*retry_at),
                _ => None,
            })
            .min()
    }

    /// Tries the failing listeners whose backoff has passed again.
    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ListenKey> = self
            .failing
            .iter()
            .filter(|lk| {
                matches!(self.listeners.get(lk).map(|a| &a.state),
                    Some(State::Failing { retry_at, .. }) if *retry_at <= now)
            })
            .copied()
            .collect();
        for lk in due {
            self.failing.remove(&lk);
            if let Some(active) = self.listeners.get_mut(&lk) {
                active.state = State::Pending;
                self.pending.push(lk);
            }
        }
        self.apply().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
