//! Connecting to a live endpoint, for `hyper_util::client::legacy::Client`.
//!
//! - [`SvcConnector`]: a `Service<Uri>` that resolves Service names and cluster IPs to an
//!   eligible endpoint at connect time, mapping the Service port to the endpoint's target
//!   port and retrying another endpoint when a connect fails.
//! - [`SvcResolver`]: a `Service<Name>` for `HttpConnector::new_with_resolver`.
//!
//! ExternalName Services and names outside the cluster resolve through hickory-resolver,
//! whose cache honours each record's TTL; nothing here caches an answer.

mod dns;
mod h1;
mod http;
mod idle;
mod resolve;
mod routed;

pub(crate) use self::http::tcp;
pub use self::http::{Connecting, SvcConnector};
/// HTTP/1.1 body framing, for proxies that forward bodies verbatim (svc-proxy's HTTP mode).
pub use h1::{Body as BodyFraming, Chunk, Invalid as InvalidFraming};
pub use resolve::{Resolving, SocketAddrs, SvcResolver};
pub use routed::SvcStream;
