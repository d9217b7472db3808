//! Where a `host:port` leads: a Service port's pool, an ExternalName, or plain DNS.
//!
//! Shared by the connector, the resolver and the request layer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use svc_core::model::{Protocol, Service, ServicePort, ServiceType, Stack, Str};
use svc_core::store::{PortRef, ServiceSnapshot};
use svc_core::ServiceKey;

use crate::balance::{EndpointPool, Pools};
use crate::error::{MissingAuthority, NoEndpoints, UnknownService};
use crate::policy::Scope;

/// What a `host:port` resolves to.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A port of a Service with endpoints (a cluster IP, or a name; headless Services too).
    Pool {
        pool: EndpointPool,
        /// The Service port, when it exists (for `appProtocol`).
        port: Option<ServicePort>,
    },
    /// An ExternalName Service: resolve `name` with DNS and connect to `port`.
    External { name: Str, port: u16 },
    /// An IP that is not a Service address: connect as is.
    Direct(SocketAddr),
    /// A name outside the cluster: resolve with DNS.
    Dns { host: Str, port: u16 },
}

/// `host` without IPv6 brackets.
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The host and port of a URI, with the scheme's default port.
pub(crate) fn host_port(uri: &http::Uri) -> Result<(&str, u16), MissingAuthority> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(MissingAuthority)?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Ok((bare_host(host), port))
}

/// Whether `host` can only be a cluster name (`…​.svc` or `…​.svc.<domain>`), so that it must
/// never leak to DNS.
fn cluster_only(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    host.ends_with(".svc")
        || host
            .strip_suffix(domain)
            .is_some_and(|h| h.ends_with(".svc."))
}

/// The pool of `snap`'s `port`, as `port_ref` reaches it (by name, or see [`by_address`]).
fn pool_target(
    pools: &Pools,
    snap: &Arc<ServiceSnapshot>,
    port: u16,
    port_ref: PortRef,
    scope: Scope,
) -> Target {
    let key = &snap.service.key;
    Target::Pool {
        pool: pools.get(key, &port_ref, scope),
        port: snap.service.port_by_number(port, Protocol::Tcp).cloned(),
    }
}

/// The port `ip:port` reaches. A dual-stack Service's address reaches its own family's
/// endpoints, as through kube-proxy. Any other Service's address reaches what its name does,
/// with the same [`PortRef`], so that both share one pool (and, in the layer, one set of
/// connections), as do pools callers get from [`Pools`] by number.
fn by_address(service: &Service, ip: IpAddr, port: u16) -> PortRef {
    match service.stack() {
        Stack::Dual => PortRef::reached_at(ip, port, Protocol::Tcp),
        Stack::Single(_) | Stack::Unknown => PortRef::Number(port, Protocol::Tcp),
    }
}

/// Resolves `host:port` against the store behind `pools`.
///
/// # Errors
///
/// [`UnknownService`] for a cluster-only name (`*.svc`, `*.svc.<domain>`) the store does not
/// have.
pub(crate) fn resolve(pools: &Pools, host: &str, port: u16) -> Result<Target, UnknownService> {
    let store = pools.store();
    let host = bare_host(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(match store.lookup_vip(ip, port, Protocol::Tcp) {
            Some(vip) => {
                let port_ref = by_address(&vip.service.service, ip, port);
                pool_target(pools, &vip.service, port, port_ref, Scope::from(vip.kind))
            }
            None => Target::Direct(SocketAddr::new(ip, port)),
        });
    }
    match store.resolve_name(host) {
        Some(snap) if snap.service.service_type == ServiceType::ExternalName => {
            let name = snap
                .service
                .external_name
                .clone()
                .ok_or_else(|| UnknownService {
                    host: host.to_string(),
                })?;
            Ok(Target::External { name, port })
        }
        Some(snap) => {
            let port_ref = PortRef::Number(port, Protocol::Tcp);
            Ok(pool_target(pools, &snap, port, port_ref, Scope::Internal))
        }
        None if cluster_only(host, &store.config().cluster_domain) => Err(UnknownService {
            host: host.to_string(),
        }),
        None => Ok(Target::Dns {
            host: host.into(),
            port,
        }),
    }
}

/// Waits (at most `limit`, less once the source reports an error) until the store can answer
/// for `host`: its initial sync, or, in an on-demand store, the name's own initial lists
/// (this is what starts watching the name). So the first requests after start-up, and the
/// first request for a new name, do not fail for want of state.
///
/// # Errors
///
/// [`NoEndpoints`] with reason `NotSynced` and the store's cause (the source's last error),
/// when the store still cannot answer and the host can only be a Service (a bare name or a
/// cluster-only name) that the store does not have. Other names (`a.b`) may be outside the
/// cluster and go on to DNS, as before.
pub(crate) async fn wait_until_ready(
    pools: &Pools,
    host: &str,
    limit: std::time::Duration,
) -> Result<(), NoEndpoints> {
    let store = pools.store();
    let host = bare_host(host);
    if host.parse::<IpAddr>().is_ok() {
        // An address names no Service to wait for; only the initial sync helps.
        if !store.is_synced() {
            let _ = tokio::time::timeout(limit, store.wait_until_ready()).await;
        }
        return Ok(());
    }
    let Err(cause) = store.ready_for(host, limit).await else {
        return Ok(());
    };
    let domain = &store.config().cluster_domain;
    let only_a_service = cluster_only(host, domain) || !host.trim_end_matches('.').contains('.');
    if !only_a_service || store.resolve_name(host).is_some() {
        return Ok(());
    }
    let config = store.config();
    let lower = host.to_ascii_lowercase();
    let key = match svc_core::name::parse(&lower, domain) {
        Some(p) => ServiceKey::new(p.namespace.unwrap_or(&config.default_namespace), p.name),
        None => ServiceKey::new("", host),
    };
    Err(NoEndpoints::not_synced(key, PortRef::Name(None), cause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_only_names() {
        assert!(cluster_only("web.shop.svc", "cluster.local"));
        assert!(cluster_only("web.shop.svc.cluster.local.", "cluster.local"));
        assert!(!cluster_only("web.shop", "cluster.local"));
        assert!(!cluster_only("example.com", "cluster.local"));
        assert!(!cluster_only("svc.example.com", "cluster.local"));
    }

    #[test]
    fn host_and_default_ports() {
        let uri: http::Uri = "http://web.shop/x".parse().unwrap();
        assert_eq!(host_port(&uri).unwrap(), ("web.shop", 80));
        let uri: http::Uri = "https://[::1]:8443/".parse().unwrap();
        assert_eq!(host_port(&uri).unwrap(), ("::1", 8443));
        let uri: http::Uri = "/just/a/path".parse().unwrap();
        assert!(host_port(&uri).is_err());
    }
}
