//! Names outside the cluster, and ExternalName targets, through hickory-resolver.
//!
//! hickory's cache keeps each answer for its TTL and no longer (`positive_max_ttl` is left
//! unset), and we keep nothing ourselves: every connect asks the resolver again.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use tokio::sync::OnceCell;

use crate::error::ResolveFailed;

/// A resolver built on first use from the system configuration, or one given.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dns {
    resolver: Arc<OnceCell<Option<TokioResolver>>>,
}

impl Dns {
    pub(crate) fn with(resolver: TokioResolver) -> Self {
        Self {
            resolver: Arc::new(OnceCell::new_with(Some(Some(resolver)))),
        }
    }

    /// No DNS at all: names outside the cluster fail.
    pub(crate) fn disabled() -> Self {
        Self {
            resolver: Arc::new(OnceCell::new_with(Some(None))),
        }
    }

    /// `Some(true)` with a resolver given, `Some(false)` when disabled, `None` until the
    /// system's is built on first use.
    #[cfg(test)]
    pub(crate) fn given(&self) -> Option<bool> {
        self.resolver.get().map(Option::is_some)
    }

    async fn resolver(&self) -> Result<&TokioResolver, String> {
        let resolver = self
            .resolver
            .get_or_init(|| async {
                match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                    Ok(r) => Some(r),
                    Err(error) => {
                        tracing::warn!(%error, "cannot build a DNS resolver from the system configuration");
                        None
                    }
                }
            })
            .await;
        resolver
            .as_ref()
            .ok_or_else(|| "DNS resolution is not available".to_string())
    }

    /// The addresses of `name`, in the resolver's order.
    pub(crate) async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveFailed> {
        let resolver = self
            .resolver()
            .await
            .map_err(|e| ResolveFailed::new(name, e))?;
        let lookup = resolver
            .lookup_ip(name)
            .await
            .map_err(|e| ResolveFailed::new(name, e))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(ResolveFailed::new(name, "no addresses"));
        }
        Ok(ips)
    }
}

/// A resolver that knows no name server, for tests of who holds which resolver.
#[cfg(test)]
pub(crate) fn unused_resolver() -> TokioResolver {
    use hickory_resolver::config::ResolverConfig;
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(Vec::new()),
        TokioRuntimeProvider::default(),
    )
    .build()
    .expect("a resolver without name servers builds")
}
