//! The per-request proxy service of HTTP mode.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::pool::{Conn, Pool};
use crate::target::Target;

/// The response body: the endpoint's, or one the proxy made up for an error.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Endpoints tried per request when connecting fails (before the request is sent).
const ATTEMPTS: usize = 3;

/// Proxies one client connection's requests, each to an endpoint picked for it.
#[derive(Clone)]
pub struct Proxy {
    /// What the listener serves.
    pub target: Arc<Target>,
    /// Upstream connections.
    pub pool: Arc<Pool>,
    /// The client's address (for session affinity).
    pub client: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let resp = this.proxy(req).await;
            this.target.metrics.request(resp.status());
            Ok(resp)
        })
    }
}

fn error(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

impl Proxy {
    async fn proxy(&self, req: Request<Incoming>) -> Response<Body> {
        let mut req = match prepare(req, self.pool.is_h2()) {
            Ok(r) => r,
            Err((status, msg)) => return error(status, msg),
        };
        let target = &self.target;
        let mut tried: Vec<SocketAddr> = Vec::new();
        for _ in 0..ATTEMPTS {
            let pick = match target.pick(self.client.ip(), &tried) {
                Ok(p) => p,
                Err(_) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available\n")
                }
            };
            let endpoint = pick.addr;
            if tried.contains(&endpoint) {
                // Only failed endpoints are left.
                break;
            }
            let started = Instant::now();
            let conn = match self.pool.pooled(endpoint) {
                Some(c) => c,
                None => match self.pool.connect(endpoint).await {
                    Ok(c) => c,
                    Err(error) => {
                        tracing::debug!(service = %target.service, %endpoint, %error, "upstream connect failed; trying another endpoint");
                        tried.push(endpoint);
                        target.failed(pick);
                        continue;
                    }
                },
            };
            let sent = match conn {
                Conn::H1(mut sender) => {
                    let r = sender.try_send_request(req).await;
                    if r.is_ok() {
                        self.pool.recycle(endpoint, sender);
                    }
                    r
                }
                Conn::H2(mut sender) => sender.try_send_request(req).await,
            };
            match sent {
                Ok(mut resp) => {
                    pick.success(started.elapsed());
                    strip_hop_by_hop(resp.headers_mut());
                    return resp.map(Either::Left);
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (a pooled connection closed under us): safe to try again.
                    Some(unsent) => {
                        tracing::debug!(service = %target.service, %endpoint, error = %e.error(), "request not sent; retrying");
                        target.failed(pick);
                        tried.push(endpoint);
                        req = unsent;
                    }
                    None => {
                        tracing::debug!(service = %target.service, %endpoint, error = %e.error(), "upstream request failed");
                        target.failed(pick);
                        return error(StatusCode::BAD_GATEWAY, "upstream request failed\n");
                    }
                },
            }
        }
        error(
            StatusCode::BAD_GATEWAY,
            "no endpoint accepted the request\n",
        )
    }
}

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.is_empty() {
        return;
    }
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Rewrites the client's request for the upstream: hop-by-hop headers dropped; origin-form
/// with a Host header for HTTP/1.1, absolute-form (which gives `:authority`) for HTTP/2.
fn prepare(
    mut req: Request<Incoming>,
    h2: bool,
) -> Result<Request<Incoming>, (StatusCode, &'static str)> {
    if req.method() == http::Method::CONNECT {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n"));
    }
    strip_hop_by_hop(req.headers_mut());
    let authority: Option<Authority> = req.uri().authority().cloned().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
    });
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    if h2 {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.ok_or((StatusCode::BAD_REQUEST, "missing Host\n"))?);
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        if !req.headers().contains_key(header::HOST) {
            if let Some(a) = &authority {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    req.headers_mut().insert(header::HOST, v);
                }
            }
        }
        *req.version_mut() = http::Version::HTTP_11;
    }
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| (StatusCode::BAD_REQUEST, "bad request target\n"))?;
    Ok(req)
}
