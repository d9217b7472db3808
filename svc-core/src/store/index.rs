//! The published, read-side indexes: by name, by virtual IP:port, by NodePort.
//!
//! ztunnel's `ServiceStore` shape: one primary map plus secondary indexes that point at the same
//! `Arc` snapshots, all updated together under one short write lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::snapshot::ServiceSnapshot;
use crate::model::{Protocol, ServiceKey, Str};

/// How an address reached a Service, which decides the traffic policy that applies.
///
/// Deliberately exhaustive: each kind must map to a traffic policy, so a new one must be a
/// compile error in every `match`, not fall into a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VipKind {
    /// One of `spec.clusterIPs` (internalTrafficPolicy applies).
    ClusterIp,
    /// One of `spec.externalIPs` (externalTrafficPolicy applies).
    ExternalIp,
    /// A `status.loadBalancer.ingress` IP (externalTrafficPolicy applies).
    LoadBalancer,
    /// A NodePort (externalTrafficPolicy applies).
    NodePort,
}

/// The Service port an address leads to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VipMatch {
    /// The Service.
    pub service: Arc<ServiceSnapshot>,
    /// Index into `service.ports`.
    pub port: usize,
    /// Which kind of address matched.
    pub kind: VipKind,
}

impl VipMatch {
    /// The matched port's snapshot.
    pub fn port(&self) -> &super::PortSnapshot {
        &self.service.ports[self.port]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VipKey {
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
}

/// Every address one Service claims. Two Services may (wrongly) claim the same address, e.g.
/// in a hand-written manifest; the lowest key wins, so the answer does not depend on the order
/// in which they arrived.
type Claims = Vec<(ServiceKey, VipMatch)>;

#[derive(Default)]
pub(crate) struct Index {
    by_name: HashMap<Str, HashMap<Str, Arc<ServiceSnapshot>>>,
    by_vip: HashMap<VipKey, Claims>,
    /// Cluster IPs alone (reverse DNS), sorted by key like [`Claims`].
    by_cluster_ip: HashMap<IpAddr, Vec<(ServiceKey, Arc<ServiceSnapshot>)>>,
    len: usize,
}

fn vips(snapshot: &Arc<ServiceSnapshot>) -> impl Iterator<Item = (VipKey, VipMatch)> + '_ {
    let svc = &snapshot.service;
    let proxied = svc.is_proxied();
    let ips = svc
        .cluster_ips
        .iter()
        .map(|ip| (*ip, VipKind::ClusterIp))
        .chain(svc.external_ips.iter().map(|ip| (*ip, VipKind::ExternalIp)))
        .chain(
            svc.load_balancer_ingress
                .iter()
                .filter_map(|i| i.ip)
                .map(|ip| (ip, VipKind::LoadBalancer)),
        )
        .filter(move |_| proxied);
    svc.ports.iter().enumerate().flat_map(move |(i, p)| {
        let on_ips = ips.clone().map(move |(ip, kind)| {
            let key = VipKey {
                ip: Some(ip),
                port: p.port,
                protocol: p.protocol,
            };
            (key, (i, kind))
        });
        let on_node = p.node_port.filter(|_| proxied).map(|np| {
            let key = VipKey {
                ip: None,
                port: np,
                protocol: p.protocol,
            };
            (key, (i, VipKind::NodePort))
        });
        on_ips.chain(on_node).map(|(key, (port, kind))| {
            (
                key,
                VipMatch {
                    service: snapshot.clone(),
                    port,
                    kind,
                },
            )
        })
    })
}

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceSnapshot>> {
        self.by_name.get(namespace)?.get(name)
    }

    pub fn vip(&self, key: &VipKey) -> Option<&VipMatch> {
        self.by_vip.get(key).and_then(|c| c.first()).map(|(_, m)| m)
    }

    pub fn cluster_ip(&self, ip: &IpAddr) -> Option<&Arc<ServiceSnapshot>> {
        self.by_cluster_ip
            .get(ip)
            .and_then(|c| c.first())
            .map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceSnapshot>> {
        self.by_name.values().flat_map(|m| m.values())
    }

    /// Replaces (or with `None` removes) one Service's snapshot and its index entries.
    pub fn set(&mut self, key: &ServiceKey, snapshot: Option<Arc<ServiceSnapshot>>) {
        let old = match &snapshot {
            Some(s) => self
                .by_name
                .entry(key.namespace.clone())
                .or_default()
                .insert(key.name.clone(), s.clone()),
            None => {
                let ns = self.by_name.get_mut(&*key.namespace);
                let old = ns.and_then(|m| m.remove(&*key.name));
                if self
                    .by_name
                    .get(&*key.namespace)
                    .is_some_and(|m| m.is_empty())
                {
                    self.by_name.remove(&*key.namespace);
                }
                old
            }
        };
        match (&old, &snapshot) {
            (None, Some(_)) => self.len += 1,
            (Some(_), None) => self.len -= 1,
            _ => {}
        }
        if let Some(old) = &old {
            for ip in &old.service.cluster_ips {
                if let Some(claims) = self.by_cluster_ip.get_mut(ip) {
                    claims.retain(|(k, _)| k != key);
                    if claims.is_empty() {
                        self.by_cluster_ip.remove(ip);
                    }
                }
            }
            for (vip, _) in vips(old) {
                if let Some(claims) = self.by_vip.get_mut(&vip) {
                    claims.retain(|(k, _)| k != key);
                    if claims.is_empty() {
                        self.by_vip.remove(&vip);
                    }
                }
            }
        }
        if let Some(new) = &snapshot {
            for ip in &new.service.cluster_ips {
                let claims = self.by_cluster_ip.entry(*ip).or_default();
                let at = claims.partition_point(|(k, _)| k < key);
                claims.insert(at, (key.clone(), new.clone()));
            }
            for (vip, m) in vips(new) {
                let claims = self.by_vip.entry(vip).or_default();
                if let Some(existing) = claims.first() {
                    if existing.0 != *key {
                        tracing::warn!(service = %key, other = %existing.0, ip = ?vip.ip, port = vip.port,
                            "two services claim the same address; the lower name wins");
                    }
                }
                let at = claims.partition_point(|(k, _)| k < key);
                claims.insert(at, (key.clone(), m));
            }
        }
    }
}
