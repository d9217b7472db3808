//! Errors that cross tower boundaries.
//!
//! Services in this crate return [`BoxError`]; each failure is one of the small named types
//! here, so that callers can `downcast_ref` to find out what happened (tower's style).

use std::fmt;
use std::net::SocketAddr;

use svc_core::store::{NotSynced, PortRef};
use svc_core::ServiceKey;

/// A boxed error, as tower services return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a Service port has no endpoint to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoEndpointsReason {
    /// The store has not finished its initial sync and the Service is not known yet.
    NotSynced,
    /// The Service does not exist.
    NoService,
    /// The Service exists but has no such port.
    NoPort,
    /// The port exists, but the Kubernetes rules leave no endpoint for this client.
    NoneEligible,
}

impl fmt::Display for NoEndpointsReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotSynced => "the store is not synced yet",
            Self::NoService => "the service does not exist",
            Self::NoPort => "the service has no such port",
            Self::NoneEligible => "no endpoint is ready",
        })
    }
}

/// Nothing is eligible: the request fails at once instead of waiting.
///
/// Building one does not allocate (the key and port are reference-counted). With reason
/// [`NotSynced`](NoEndpointsReason::NotSynced) after a bounded wait, it carries the store's
/// [`NotSynced`] as its [`source`](std::error::Error::source) (and in
/// [`not_synced`](Self::not_synced)): the source's last error, such as a 403 naming the
/// missing verb.
#[derive(Clone, Debug, thiserror::Error)]
#[error("no eligible endpoints for {service}:{port} ({reason}{cause})",
    port = PortDisplay(&self.port),
    cause = self.not_synced.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
pub struct NoEndpoints {
    service: ServiceKey,
    port: PortRef,
    reason: NoEndpointsReason,
    #[source]
    not_synced: Option<NotSynced>,
}

impl NoEndpoints {
    /// A `NoEndpoints` for this Service port.
    pub fn new(service: ServiceKey, port: PortRef, reason: NoEndpointsReason) -> Self {
        Self {
            service,
            port,
            reason,
            not_synced: None,
        }
    }

    /// A `NoEndpoints` with reason [`NotSynced`](NoEndpointsReason::NotSynced), carrying why.
    pub fn not_synced(service: ServiceKey, port: PortRef, cause: NotSynced) -> Self {
        Self {
            service,
            port,
            reason: NoEndpointsReason::NotSynced,
            not_synced: Some(cause),
        }
    }

    /// Why the store was not synced, when that is the reason and the wait found out.
    pub fn not_synced_cause(&self) -> Option<&NotSynced> {
        self.not_synced.as_ref()
    }

    /// The Service.
    pub fn service(&self) -> &ServiceKey {
        &self.service
    }

    /// The Service port.
    pub fn port(&self) -> &PortRef {
        &self.port
    }

    /// Why there is no endpoint.
    pub fn reason(&self) -> NoEndpointsReason {
        self.reason
    }
}

/// Formats a [`PortRef`] as `http`, `<unnamed>`, `80/TCP` or `80/TCP at IPv6`.
pub(crate) struct PortDisplay<'a>(pub(crate) &'a PortRef);

impl fmt::Display for PortDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            PortRef::Name(Some(name)) => f.write_str(name),
            PortRef::Name(None) => f.write_str("<unnamed>"),
            PortRef::Number(port, protocol) => write!(f, "{port}/{}", protocol.as_str()),
            PortRef::Family(port, protocol, family) => {
                write!(f, "{port}/{} at {family}", protocol.as_str())
            }
        }
    }
}

/// Every connect attempt failed.
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} failed after {attempts} attempt(s)")]
#[non_exhaustive]
pub struct ConnectFailed {
    /// The last address tried.
    pub addr: SocketAddr,
    /// How many endpoints were tried.
    pub attempts: u32,
    #[source]
    source: std::io::Error,
}

impl ConnectFailed {
    pub(crate) fn new(addr: SocketAddr, attempts: u32, source: std::io::Error) -> Self {
        Self {
            addr,
            attempts,
            source,
        }
    }
}

/// An `https://` (or other non-`http`) URI reached a client path that speaks cleartext only.
///
/// [`SvcConnector`](crate::connect::SvcConnector) refuses such URIs unless a TLS connector
/// wraps it (see [`SvcConnector::enforce_http`](crate::connect::SvcConnector::enforce_http));
/// the [`layer`](crate::layer) speaks cleartext HTTP/1.1 and h2c only and always refuses
/// them. Without this, the request would leave unencrypted to a peer that expects TLS.
#[derive(Debug, thiserror::Error)]
#[error("{scheme}://{authority} needs TLS, but this client path speaks cleartext HTTP only")]
#[non_exhaustive]
pub struct TlsRequired {
    /// The URI's scheme.
    pub scheme: String,
    /// The URI's authority (host and port), empty if it had none.
    pub authority: String,
}

impl TlsRequired {
    pub(crate) fn new(uri: &http::Uri) -> Self {
        Self {
            scheme: uri.scheme_str().unwrap_or_default().to_owned(),
            authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        }
    }
}

/// The host is not a Service of the store (nor, where that applies, a name DNS could resolve).
#[derive(Debug, thiserror::Error)]
#[error("{host} is not a known service")]
#[non_exhaustive]
pub struct UnknownService {
    /// The host as given (name or IP).
    pub host: String,
}

/// The request has no authority (no URI authority and no `Host` header) to route by.
#[derive(Debug, Default, thiserror::Error)]
#[error("request has no authority to route by")]
pub struct MissingAuthority;

/// [`Balance`](crate::layer::Balance) was called without a permit from `poll_ready` while a
/// [`max_in_flight`](crate::layer::BalanceLayer::max_in_flight) limit is set. tower's contract
/// is that each `call` follows a `poll_ready` that returned `Ready` (as `ServiceExt::ready`,
/// `oneshot`, tonic and tower's `Buffer` do); tower's `ConcurrencyLimit` panics here, this
/// layer fails the request instead and sends nothing.
#[derive(Debug, Default, thiserror::Error)]
#[error("request not sent: called without a permit from poll_ready (max_in_flight is set, so each call needs poll_ready to have returned Ready first)")]
pub struct NotReady;

/// A name lookup (ExternalName target or a name outside the cluster) failed.
#[derive(Debug, thiserror::Error)]
#[error("resolving {name} failed")]
#[non_exhaustive]
pub struct ResolveFailed {
    /// The name.
    pub name: String,
    #[source]
    source: BoxError,
}

impl ResolveFailed {
    pub(crate) fn new(name: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
        }
    }
}

/// The request failed on an endpoint after it was sent (reset, protocol error, closed
/// connection mid-response).
#[derive(Debug, thiserror::Error)]
#[error("request to {endpoint} failed")]
#[non_exhaustive]
pub struct RequestFailed {
    /// The endpoint.
    pub endpoint: SocketAddr,
    #[source]
    source: BoxError,
}

impl RequestFailed {
    pub(crate) fn new(endpoint: SocketAddr, source: impl Into<BoxError>) -> Self {
        Self {
            endpoint,
            source: source.into(),
        }
    }
}

/// The endpoint sent no response head within the layer's response timeout, counted from the
/// end of the request (its body sent whole). The request was abandoned and its connection
/// closed; the endpoint is reported to outlier ejection.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint} sent no response within {timeout:?}")]
#[non_exhaustive]
pub struct ResponseTimeout {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// The timeout that passed.
    pub timeout: std::time::Duration,
}

/// Reading the request's own body failed while it was being sent (a client that sent a
/// malformed chunk, or went away mid-body): the caller's fault, so the endpoint is not
/// reported to outlier ejection.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body for {endpoint} failed")]
#[non_exhaustive]
pub struct RequestBodyFailed {
    /// The endpoint the request was going to.
    pub endpoint: SocketAddr,
    #[source]
    source: BoxError,
}

impl RequestBodyFailed {
    pub(crate) fn new(endpoint: SocketAddr, source: impl Into<BoxError>) -> Self {
        Self {
            endpoint,
            source: source.into(),
        }
    }
}
