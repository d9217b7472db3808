//! Listener management: one listener per Service address, added and removed live.
//!
//! The [`Reconciler`] follows the store's change feed. For each changed Service it works out
//! the addresses the Service should be served on (each cluster IP, external IP and
//! load-balancer IP with each port, and the NodePorts on `--nodeport-addr`) and starts or stops
//! listeners to match. An address no Service claims has no listener, so the proxy is never an
//! open relay. When two Services claim one address, the store's index decides (the lower name
//! wins), and the loser takes over if the winner goes away.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use svc_core::model::{Protocol, ServiceKey};
use svc_core::store::VipKind;
use svc_tower::policy::Scope;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::iface::Interface;
use crate::target::{Mode, Route, Target};
use crate::{http, tcp, udp, Context};

/// A listening address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// The address.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

struct Active {
    route: Route,
    /// `None` when binding failed; retried when the route changes.
    running: Option<(CancellationToken, Vec<JoinHandle<()>>)>,
    /// The interface address this listener holds, if any.
    iface_ip: Option<IpAddr>,
}

type PoolKey = (ServiceKey, u16, Protocol, Scope);

/// Keeps the set of listeners in line with the store.
pub struct Reconciler {
    ctx: Arc<Context>,
    listeners: HashMap<ListenKey, Active>,
    by_service: HashMap<ServiceKey, HashSet<ListenKey>>,
    targets: HashMap<PoolKey, (Arc<Target>, usize)>,
    iface: Option<Interface>,
}

impl Reconciler {
    /// A reconciler with no listeners yet; `iface` is the managed interface, if any.
    pub fn new(ctx: Arc<Context>, iface: Option<Interface>) -> Self {
        Self {
            ctx,
            listeners: HashMap::new(),
            by_service: HashMap::new(),
            targets: HashMap::new(),
            iface,
        }
    }

    /// Follows the store until shutdown begins, then stops every listener.
    pub async fn run(mut self) {
        let mut changes = self.ctx.store.changes();
        loop {
            let keys = tokio::select! {
                keys = changes.changed() => keys,
                _ = self.ctx.drain.signaled() => break,
            };
            self.reconcile(keys).await;
        }
        for (_, active) in self.listeners.drain() {
            if let Some((cancel, tasks)) = active.running {
                cancel.cancel();
                futures::future::join_all(tasks).await;
            }
        }
    }

    /// The number of listening sockets.
    pub fn len(&self) -> usize {
        self.listeners
            .values()
            .filter(|a| a.running.is_some())
            .count()
    }

    /// Whether no listener is up.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Brings the listeners of these Services in line with the store.
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
                    self.remove(lk).await;
                    // Another Service may claim the address now.
                    if let Some(other) = self.owner(&lk).filter(|o| *o != key) {
                        done.remove(&other);
                        work.push(other);
                    }
                }
            }
            for (lk, route) in desired {
                if self.listeners.contains_key(&lk) {
                    match self.listeners.get(&lk) {
                        Some(a) if a.route == route => continue,
                        _ => self.remove(lk).await,
                    }
                }
                self.add(lk, route).await;
            }
        }
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
            let route = |kind: VipKind| Route {
                service: key.clone(),
                port: p.port,
                protocol: p.protocol,
                kind,
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
                        out.insert(lk, route(m.kind));
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
                        out.insert(lk, route(VipKind::NodePort));
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

    async fn add(&mut self, lk: ListenKey, route: Route) {
        // The node address of NodePorts is the node's own; every other address is a virtual
        // IP that must be made local.
        let managed_ip =
            (route.kind != VipKind::NodePort && self.iface.is_some()).then_some(lk.addr.ip());
        let mut iface_ip = None;
        if let (Some(iface), Some(ip)) = (self.iface.as_mut(), managed_ip) {
            match iface.acquire(ip).await {
                Ok(()) => iface_ip = Some(ip),
                Err(error) => {
                    tracing::warn!(%ip, %error, "cannot add address to the managed interface")
                }
            }
        }
        let freebind = self.iface.is_some();
        let target = self.target(&route);
        let cancel = self.ctx.drain.child_token();
        let workers = &self.ctx.workers;
        let started = match route.mode {
            Mode::Tcp => tcp::listen(lk.addr, freebind).and_then(|l| {
                let cancel = cancel.clone();
                workers.serve(l, move |l| tcp::serve(l, target.clone(), cancel.clone()))
            }),
            Mode::Http | Mode::H2c => tcp::listen(lk.addr, freebind).and_then(|l| {
                let (cancel, mode) = (cancel.clone(), route.mode);
                workers.serve(l, move |l| {
                    http::serve(l, target.clone(), mode, cancel.clone())
                })
            }),
            // One socket, one flow table: UDP stays on the control-plane runtime.
            Mode::Udp => udp::bind(lk.addr, freebind)
                .map(|s| vec![tokio::spawn(udp::serve(s, target, cancel.clone()))]),
        };
        let running = match started {
            Ok(tasks) => {
                tracing::info!(addr = %lk.addr, protocol = lk.protocol.as_str(), service = %route.service,
                    mode = ?route.mode, "listening");
                Some((cancel, tasks))
            }
            Err(error) => {
                tracing::warn!(addr = %lk.addr, protocol = lk.protocol.as_str(), service = %route.service,
                    %error, "cannot listen; will retry when the Service changes");
                self.release_target(&route);
                None
            }
        };
        self.by_service
            .entry(route.service.clone())
            .or_default()
            .insert(lk);
        self.listeners.insert(
            lk,
            Active {
                route,
                running,
                iface_ip,
            },
        );
    }

    async fn remove(&mut self, lk: ListenKey) {
        let Some(active) = self.listeners.remove(&lk) else {
            return;
        };
        if let Some(set) = self.by_service.get_mut(&active.route.service) {
            set.remove(&lk);
            if set.is_empty() {
                self.by_service.remove(&active.route.service);
            }
        }
        if let Some((cancel, tasks)) = active.running {
            // Wait for the tasks to drop their sockets, so that the address can be bound again
            // at once (e.g. when only the appProtocol changed).
            cancel.cancel();
            futures::future::join_all(tasks).await;
            self.release_target(&active.route);
            tracing::info!(addr = %lk.addr, protocol = lk.protocol.as_str(), service = %active.route.service,
                "stopped listening");
        }
        if let (Some(iface), Some(ip)) = (self.iface.as_mut(), active.iface_ip) {
            if let Err(error) = iface.release(ip).await {
                tracing::warn!(%ip, %error, "cannot remove address from the managed interface");
            }
        }
    }
}
