//! The per-request proxy service of HTTP mode.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use svc_tower::error::{
    BoxError, ConnectFailed, MissingAuthority, NoEndpoints, RequestBodyFailed, RequestFailed,
    ResponseTimeout,
};
use svc_tower::layer::{Balance, BalanceHolder, Destination, NoFallback};

use super::body::{data_bytes, Counted};
use super::direct::{http1_head, Direct, Failure, RelayedBody};
use super::expect::{expects_continue, ClientBody, Continue};
use super::head_clock::HeadClock;
use super::headers::{strip_scanned, Scan};
use crate::target::{Mode, Target};

/// The request body sent upstream: the client's (held back until the endpoint asks for it,
/// under `Expect: 100-continue`), counted.
pub type RequestBody = Counted<ClientBody>;

/// The response body (counted by [`ResponseBody`]).
pub enum Body {
    /// The endpoint's, through hyper's client.
    Proxied(Incoming),
    /// The endpoint's, through the direct engine's upstream connections.
    Relayed(RelayedBody),
    /// One the proxy made up for an error.
    MadeUp(Full<Bytes>),
}

/// What a request's future resolves to, as hyper's service wants it.
type Answer = Result<Response<ResponseBody>, Infallible>;

/// Proxies one client connection's requests, each to an endpoint picked for it.
///
/// Cloned per request (hyper's HTTP/2 server runs each stream on a task of its own), so the
/// connection's state sits behind one `Arc`: a clone is one reference count, not one per
/// field.
#[derive(Clone)]
pub struct Proxy(Arc<Connection>);

/// One client connection's state.
pub struct Connection {
    /// What the listener serves.
    pub target: Arc<Target>,
    /// The client's address.
    pub client: SocketAddr,
    balance: Balance<NoFallback, RequestBody>,
    destination: Destination,
    mode: Mode,
    /// The direct engine, whose upstream connections carry this connection's requests
    /// without a body (`--http1-engine direct` on `http` ports).
    direct: Option<Arc<Direct>>,
    /// Requests in flight and the wait for the next head (the header read timeout).
    pub(super) clock: HeadClock,
}

impl Proxy {
    /// The proxy for one connection from `client` to a listener in `mode`, sending requests
    /// to `destination` (those without a body through `direct`, if given).
    pub fn new(
        target: Arc<Target>,
        balance: Balance<NoFallback, RequestBody>,
        destination: &Destination,
        client: SocketAddr,
        mode: Mode,
        direct: Option<Arc<Direct>>,
    ) -> Self {
        let destination = destination.clone().client(client.ip());
        Self(Arc::new(Connection {
            mode,
            direct,
            target,
            client,
            balance,
            destination,
            clock: HeadClock::new(),
        }))
    }
}

impl std::ops::Deref for Proxy {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.clock.request(req.version());
        // Made here, so that a request abandoned before its response also ends. The proxying
        // future finishes the response itself: a `map` around it would copy its ~1.2 KB once
        // more per request before it is boxed.
        Box::pin(proxy(req, InFlight(self.clone())))
    }
}

/// One request in flight on its connection, until dropped.
struct InFlight(Proxy);

impl InFlight {
    /// The response the client gets: counted, with its body ending this request.
    fn finish(self, resp: Response<Body>) -> Answer {
        self.0.target.metrics.request(resp.status());
        Ok(resp.map(|inner| ResponseBody {
            inner,
            sent: 0,
            in_flight: self,
        }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.clock.response_ended();
    }
}

/// The body the client gets: [`Body`], which ends its request when hyper has written it
/// whole (or gave up on it), and adds the endpoint's bytes to the Service's counter then.
/// It counts through its connection's reference rather than holding one of its own on the
/// counter, which every worker's requests share.
pub struct ResponseBody {
    inner: Body,
    /// Bytes of the endpoint's data frames so far.
    sent: u64,
    in_flight: InFlight,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.sent > 0 {
            self.in_flight.0.target.metrics.tx.inc_by(self.sent);
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Body::Proxied(proxied) => Pin::new(proxied)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            Body::Relayed(relayed) => Pin::new(relayed)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            Body::MadeUp(made_up) => {
                return Pin::new(made_up)
                    .poll_frame(cx)
                    .map(|f| f.map(|f| f.map_err(|never| match never {})))
            }
        };
        this.sent += data_bytes(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Body::Proxied(b) => b.is_end_stream(),
            Body::Relayed(b) => b.is_end_stream(),
            Body::MadeUp(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Body::Proxied(b) => b.size_hint(),
            Body::Relayed(b) => b.size_hint(),
            Body::MadeUp(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

fn error(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::MadeUp(Full::new(Bytes::from_static(msg.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The status a failed request gets, as Envoy answers: 503 when no endpoint could be reached
/// (none eligible, or every connect failed), 504 when the endpoint did not answer in time,
/// 502 when the endpoint failed the request, 400 when the client's own body was broken.
fn error_response(e: &BoxError) -> Response<Body> {
    if e.is::<NoEndpoints>() {
        error(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available\n")
    } else if e.is::<ConnectFailed>() {
        error(StatusCode::SERVICE_UNAVAILABLE, "upstream connect failed\n")
    } else if e.is::<ResponseTimeout>() {
        error(StatusCode::GATEWAY_TIMEOUT, "upstream response timeout\n")
    } else if e.is::<RequestBodyFailed>() {
        error(StatusCode::BAD_REQUEST, "invalid request body\n")
    } else if e.is::<MissingAuthority>() {
        error(StatusCode::BAD_REQUEST, "missing Host\n")
    } else {
        error(StatusCode::BAD_GATEWAY, "upstream request failed\n")
    }
}

/// The answer to a relayed request that no endpoint answered (the same as
/// [`error_response`]'s).
fn relay_error(failure: &Failure) -> Response<Body> {
    let (status, _, body) = failure.answer();
    error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
}

/// The endpoint a failure is about, if it is one's.
fn failed_endpoint(e: &BoxError) -> Option<SocketAddr> {
    if let Some(e) = e.downcast_ref::<ConnectFailed>() {
        Some(e.addr)
    } else if let Some(e) = e.downcast_ref::<ResponseTimeout>() {
        Some(e.endpoint)
    } else {
        e.downcast_ref::<RequestFailed>().map(|e| e.endpoint)
    }
}

/// Proxies one request. The checks and header rewrites run now; the future holds only
/// the request as it will be sent (see `svc_tower`'s `send` for why that matters).
fn proxy(mut req: Request<Incoming>, in_flight: InFlight) -> impl Future<Output = Answer> + Send {
    let conn = &*in_flight.0;
    if req.method() == http::Method::CONNECT {
        let resp = error(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n");
        return future::Either::Left(ready(in_flight.finish(resp)));
    }
    let scan = Scan::of(req.headers());
    // RFC 9112 §3.2: which Host would the endpoint believe? Neither.
    if scan.hosts() > 1 {
        let resp = error(StatusCode::BAD_REQUEST, "more than one Host header\n");
        return future::Either::Left(ready(in_flight.finish(resp)));
    }
    let upgrade =
        upgrade_of(req.headers(), scan).filter(|_| req.version() == http::Version::HTTP_11);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    if upgrade.is_none() && scan.has_upgrade() {
        // An h2c upgrade is served as the plain HTTP/1.1 request it also is.
        req.headers_mut().remove(HTTP2_SETTINGS);
    }
    strip_scanned(req.headers_mut(), scan);
    if let Some(protocol) = &upgrade {
        keep_upgrade(req.headers_mut(), protocol.clone());
    }
    // hyper's HTTP/2 client reports no 1xx answers: only HTTP/1.1 endpoints (`http`
    // ports) can decide a `100-continue` (see `expect`).
    let decision = (conn.mode == Mode::Http
        && expects_continue(req.version(), req.headers(), req.body()))
    .then(Arc::<Continue>::default);
    // HTTP/2 streams without a body only: an HTTP/1.1 connection hyper serves is one the
    // direct engine handed over, whose requests all stay on hyper's path (one upstream pool
    // for the connection, and the behaviour it always had).
    let relayable =
        req.version() == http::Version::HTTP_2 && hyper::body::Body::is_end_stream(req.body());
    let relayed = match &conn.direct {
        Some(direct) if relayable => {
            http1_head(&req).map(|(head, shape)| (direct.clone(), head, shape))
        }
        _ => None,
    };
    if let Some((direct, head, shape)) = relayed {
        drop(req);
        let client = conn.client.ip();
        return future::Either::Right(future::Either::Right(async move {
            let resp = match direct.relay(head, shape, client).await {
                Ok(resp) => resp.map(Body::Relayed),
                Err(failure) => relay_error(&failure),
            };
            in_flight.finish(resp)
        }));
    }
    let rx = &conn.target.metrics.rx;
    let mut req = req.map(|body| Counted::new(ClientBody::new(body, decision.clone()), rx));
    if let Some(d) = &decision {
        let d = d.clone();
        hyper::ext::on_informational(&mut req, move |informational| {
            if informational.status() == StatusCode::CONTINUE {
                d.open();
            }
        });
    }
    future::Either::Right(future::Either::Left(Proxying {
        sent: Balance::send_held(in_flight.0.clone(), req),
        after: Some(After {
            in_flight,
            decision,
            client_upgrade,
        }),
    }))
}

/// One request's future after its checks: svc-tower's send, whose response is then made the
/// client's. Written out rather than an `async` block: the block kept a dead copy of the
/// request next to the send's future, and moved that ~1.2 KB future in when first polled.
#[pin_project::pin_project]
struct Proxying<F> {
    #[pin]
    sent: F,
    /// Taken when the send ends.
    after: Option<After>,
}

/// What the response needs from the request.
struct After {
    in_flight: InFlight,
    /// The `100-continue` decision, closed once the response is in.
    decision: Option<Arc<Continue>>,
    /// The client's side of an upgrade it asked for.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl<F> Future for Proxying<F>
where
    F: Future<Output = Result<Response<Incoming>, BoxError>>,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.project();
        let sent = std::task::ready!(this.sent.poll(cx));
        // hyper polls a response future until it is ready, never after: as with an `async`
        // block, a poll after that is the caller's bug.
        let after = this
            .after
            .take()
            .expect("Proxying polled after it finished");
        Poll::Ready(after.response(sent))
    }
}

impl After {
    fn response(self, sent: Result<Response<Incoming>, BoxError>) -> Answer {
        let After {
            in_flight,
            decision,
            client_upgrade,
        } = self;
        let conn = &*in_flight.0;
        if let Some(d) = &decision {
            d.close();
        }
        let mut resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                conn.log_failure(&e);
                return in_flight.finish(error_response(&e));
            }
        };
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let scan = Scan::of(resp.headers());
        let resp_upgrade = upgrade_of(resp.headers(), scan);
        strip_scanned(resp.headers_mut(), scan);
        if let (true, Some(client_upgrade), Some(protocol)) =
            (upgraded, client_upgrade, resp_upgrade)
        {
            keep_upgrade(resp.headers_mut(), protocol);
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            conn.target.ctx.drain.spawn(super::tunnel::tunnel(
                conn.target.clone(),
                client_upgrade,
                upstream_upgrade,
            ));
        }
        in_flight.finish(resp.map(Body::Proxied))
    }
}

/// A request's send holds its connection's state, where the balancer and destination are.
impl BalanceHolder for Proxy {
    type Fallback = NoFallback;
    type Body = RequestBody;

    fn balance(&self) -> &Balance<NoFallback, RequestBody> {
        &self.0.balance
    }

    fn destination(&self) -> &Destination {
        &self.0.destination
    }
}

impl Connection {
    /// Failures of endpoints at WARN, at most one line per endpoint per interval; the rest
    /// (no endpoints, bad requests) at debug.
    fn log_failure(&self, e: &BoxError) {
        let service = &self.target.service;
        match failed_endpoint(e) {
            Some(endpoint) => {
                let warnings = &self.target.ctx.endpoint_warnings;
                if let Some(failures) = warnings.hit((endpoint, "http")) {
                    tracing::warn!(%service, %endpoint, error = %e, failures,
                        "request to the endpoint failed (logged once per endpoint per 10 s; failures: how many since the last line)");
                }
            }
            None => {
                tracing::debug!(%service, client = %self.client, error = %e, "request failed");
            }
        }
    }
}

/// The header an h2c upgrade carries its HTTP/2 settings in.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The protocol an HTTP/1.1 message asks to upgrade to (`Connection: upgrade` plus an
/// `Upgrade` header). `h2c` is never one: the proxy speaks HTTP/2 to clients itself (with prior
/// knowledge), and RFC 9113 §3.1 retired the upgrade; a request offering only `h2c` is served
/// as plain HTTP/1.1, and `h2c` is dropped from a list of offers.
fn upgrade_of(headers: &HeaderMap, scan: Scan) -> Option<HeaderValue> {
    if !scan.has_upgrade() {
        return None;
    }
    let protocol = without_h2c(headers.get(header::UPGRADE)?)?;
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| protocol.clone())
}

/// `Upgrade`'s value without `h2c`; `None` if nothing else is offered.
fn without_h2c(offer: &HeaderValue) -> Option<HeaderValue> {
    let is_h2c = |t: &str| t.trim().eq_ignore_ascii_case("h2c");
    let Ok(text) = offer.to_str() else {
        return Some(offer.clone());
    };
    if !text.split(',').any(is_h2c) {
        return Some(offer.clone());
    }
    let rest: Vec<&str> = text
        .split(',')
        .filter(|t| !is_h2c(t))
        .map(str::trim)
        .collect();
    (!rest.is_empty()).then(|| HeaderValue::from_str(&rest.join(", ")).ok())?
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
        assert_eq!(upgrade_of(&h, Scan::of(&h)), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_of(&h, Scan::of(&h)),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn h2c_is_never_an_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("H2C"));
        assert_eq!(upgrade_of(&h, Scan::of(&h)), None);
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c, websocket"));
        assert_eq!(
            upgrade_of(&h, Scan::of(&h)),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
