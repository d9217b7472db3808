//! [`SvcResolver`]: a `Service<Name>` for `HttpConnector::new_with_resolver`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;
use svc_core::model::ServiceType;
use svc_core::store::PortRef;
use svc_core::Store;

use super::dns::Dns;
use crate::balance::Pools;
use crate::error::{BoxError, NoEndpoints, NoEndpointsReason};
use crate::policy::Scope;
use crate::target;

/// A resolver for hyper-util's `HttpConnector`: Service names resolve to the addresses of
/// their live endpoints, best first; other names go through hickory-resolver.
///
/// A resolver only sees the host, never the port, and `HttpConnector` puts the URI's port on
/// every address it gets. So for a Service this returns its endpoints' IPs with the target
/// port of the Service's *first* port, and that port is used only for URIs without an
/// explicit port. With an explicit port, that port is used as is: correct when it equals the
/// target port (the common `port: 8080, targetPort: 8080`), wrong otherwise. Prefer
/// [`SvcConnector`](super::SvcConnector), which maps each Service port to its target port and
/// retries another endpoint on connect failure.
///
/// The first address is a P2C pick; the others follow in address order, so that
/// `HttpConnector` falls back to them if the first does not answer.
///
/// Settings are by-value builder methods (`SvcResolver::new(store).disable_dns()`), as for
/// every configurable type of this crate; hyper-util's `&mut self` setters (`set_*`) are not
/// followed on purpose, so that one style holds across the crate.
#[derive(Clone)]
pub struct SvcResolver {
    pools: Pools,
    dns: Dns,
    sync_timeout: Duration,
}

impl fmt::Debug for SvcResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvcResolver").finish_non_exhaustive()
    }
}

impl SvcResolver {
    /// A resolver over `store`, with DNS from the system configuration for other names.
    pub fn new(store: Store) -> Self {
        Self::with_pools(Pools::new(store))
    }

    /// A resolver sharing `pools` with other users.
    pub fn with_pools(pools: Pools) -> Self {
        Self {
            pools,
            dns: Dns::default(),
            sync_timeout: Duration::from_secs(5),
        }
    }

    /// The DNS resolver for names outside the cluster. Default: one built on first use from
    /// the system configuration.
    #[must_use]
    pub fn dns_resolver(mut self, resolver: TokioResolver) -> Self {
        self.dns = Dns::with(resolver);
        self
    }

    /// Disables DNS for names outside the cluster. Default: enabled.
    #[must_use]
    pub fn disable_dns(mut self) -> Self {
        self.dns = Dns::disabled();
        self
    }

    /// How long a resolution waits for the store's initial sync before resolving anyway.
    /// Default 5 s.
    #[must_use]
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    async fn resolve(self, name: Name) -> Result<SocketAddrs, BoxError> {
        let host = target::bare_host(name.as_str());
        target::wait_until_ready(&self.pools, host, self.sync_timeout).await?;
        let store = self.pools.store();
        let snapshot = match host.parse() {
            Ok(ip) => store
                .services()
                .into_iter()
                .find(|s| s.service.cluster_ips.contains(&ip)),
            Err(_) => store.resolve_name(host),
        };
        let dns_name = match &snapshot {
            Some(s) if s.service.service_type == ServiceType::ExternalName => {
                s.service.external_name.clone()
            }
            Some(_) => None,
            None => {
                // Not a Service: resolve with DNS (an IP resolves to itself there), unless the
                // name can only be a cluster name.
                target::resolve(&self.pools, host, 0)?;
                Some(host.into())
            }
        };
        if let Some(dns_name) = dns_name {
            let ips = self.dns.lookup(&dns_name).await?;
            return Ok(SocketAddrs(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ));
        }
        let snapshot = snapshot.expect("handled above");
        let key = &snapshot.service.key;
        let Some(first) = snapshot.service.ports.first() else {
            let port = PortRef::Name(None);
            return Err(NoEndpoints::new(key.clone(), port, NoEndpointsReason::NoPort).into());
        };
        let port = PortRef::Name(first.name.clone());
        let pool = self.pools.get(key, &port, Scope::Internal);
        let best = pool.pick(None)?;
        let mut addrs = vec![best.addr];
        addrs.extend(pool.endpoints().into_iter().filter(|a| *a != best.addr));
        Ok(SocketAddrs(addrs.into_iter()))
    }
}

/// The addresses [`SvcResolver`] returns.
#[derive(Debug)]
pub struct SocketAddrs(std::vec::IntoIter<SocketAddr>);

impl Iterator for SocketAddrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.0.next()
    }
}

impl tower::Service<Name> for SvcResolver {
    type Response = SocketAddrs;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Resolving(Box::pin(self.clone().resolve(name)))
    }
}

type BoxResolving = Pin<Box<dyn Future<Output = Result<SocketAddrs, BoxError>> + Send>>;

/// The future [`SvcResolver`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct Resolving(BoxResolving);

impl Future for Resolving {
    type Output = Result<SocketAddrs, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Resolving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolving")
    }
}

#[cfg(test)]
mod tests {
    use svc_core::StoreConfig;

    use super::*;

    fn resolver() -> SvcResolver {
        SvcResolver::new(svc_core::store::store(StoreConfig::default()).0)
    }

    #[tokio::test]
    async fn builders_set_their_own_setting() {
        let r = resolver()
            .sync_timeout(Duration::from_millis(7))
            .disable_dns();
        assert_eq!(r.sync_timeout, Duration::from_millis(7));
        assert_eq!(r.dns.given(), Some(false));
        assert_eq!(resolver().dns.given(), None);
        let given = resolver().dns_resolver(super::super::dns::unused_resolver());
        assert_eq!(given.dns.given(), Some(true));
    }
}
