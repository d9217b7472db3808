//! The per-request proxy service of HTTP mode.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use svc_tower::error::{BoxError, ConnectFailed, MissingAuthority, NoEndpoints};
use svc_tower::layer::{Balance, Destination, NoFallback};

use super::body::Counted;
use super::headers::strip_hop_by_hop;
use crate::target::Target;

/// The request body sent upstream: the client's, counted.
pub type RequestBody = Counted<Incoming>;

/// The response body: the endpoint's (counted), or one the proxy made up for an error.
pub type Body = Either<Counted<Incoming>, Full<Bytes>>;

/// Proxies one client connection's requests, each to an endpoint picked for it.
#[derive(Clone)]
pub struct Proxy {
    /// What the listener serves.
    pub target: Arc<Target>,
    /// The client's address.
    pub client: SocketAddr,
    balance: Balance<NoFallback, RequestBody>,
    destination: Destination,
}

impl Proxy {
    /// The proxy for one connection from `client`, sending requests to `destination`.
    pub fn new(
        target: Arc<Target>,
        balance: Balance<NoFallback, RequestBody>,
        destination: &Destination,
        client: SocketAddr,
    ) -> Self {
        let destination = destination.clone().client(client.ip());
        Self {
            target,
            client,
            balance,
            destination,
        }
    }
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

/// The status a failed request gets, as Envoy answers: 503 when no endpoint could be reached
/// (none eligible, or every connect failed), 502 when the endpoint failed the request.
fn error_response(e: &BoxError) -> Response<Body> {
    if e.is::<NoEndpoints>() {
        error(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available\n")
    } else if e.is::<ConnectFailed>() {
        error(StatusCode::SERVICE_UNAVAILABLE, "upstream connect failed\n")
    } else if e.is::<MissingAuthority>() {
        error(StatusCode::BAD_REQUEST, "missing Host\n")
    } else {
        error(StatusCode::BAD_GATEWAY, "upstream request failed\n")
    }
}

impl Proxy {
    async fn proxy(&self, mut req: Request<Incoming>) -> Response<Body> {
        if req.method() == http::Method::CONNECT {
            return error(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n");
        }
        let upgrade = upgrade_of(req.headers()).filter(|_| req.version() == http::Version::HTTP_11);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        strip_hop_by_hop(req.headers_mut());
        if let Some(protocol) = &upgrade {
            keep_upgrade(req.headers_mut(), protocol.clone());
        }
        let metrics = &self.target.metrics;
        let req = req.map(|body| Counted::new(body, metrics.rx.clone()));
        let mut resp = match self.balance.send_to(req, &self.destination).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(service = %self.target.service, client = %self.client, error = %e, "request failed");
                return error_response(&e);
            }
        };
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let resp_upgrade = upgrade_of(resp.headers());
        strip_hop_by_hop(resp.headers_mut());
        if let (true, Some(client_upgrade), Some(protocol)) =
            (upgraded, client_upgrade, resp_upgrade)
        {
            keep_upgrade(resp.headers_mut(), protocol);
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            self.target.ctx.drain.spawn(tunnel(
                self.target.clone(),
                client_upgrade,
                upstream_upgrade,
            ));
        }
        resp.map(|b| Either::Left(Counted::new(b, metrics.tx.clone())))
    }
}

/// Joins an upgraded client connection to the upgraded endpoint connection.
async fn tunnel(
    target: Arc<Target>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(service = %target.service, %error, "upgrade failed");
            return;
        }
    };
    let args = &target.ctx.args;
    let metrics = &target.metrics;
    let end = crate::tcp::copy::bidirectional_io(
        TokioIo::new(client),
        TokioIo::new(upstream),
        args.buffer_size,
        args.idle_timeout,
        crate::tcp::copy::Counters {
            rx: &metrics.rx,
            tx: &metrics.tx,
        },
    )
    .await;
    tracing::debug!(service = %target.service, ?end, "upgraded connection ended");
}

/// The protocol an HTTP/1.1 message asks to upgrade to (`Connection: upgrade` plus an
/// `Upgrade` header).
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    // `Upgrade` first: almost no message has one, so this is one lookup per message.
    let protocol = headers.get(header::UPGRADE)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}

fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_of(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(upgrade_of(&h), Some(HeaderValue::from_static("websocket")));
    }
}
