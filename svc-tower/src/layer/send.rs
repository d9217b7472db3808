//! Sending one request over the route it was given: pick an endpoint, get a connection,
//! put the request in the form the connection's protocol wants, and retry or report as the
//! outcome says.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::Either;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::body::Watched;
use super::conn::{Proto, Sent};
use super::destination::Destination;
use super::route::Route;
use super::service::authority_of;
use super::{Config, HttpVersion};
use crate::error::{
    BoxError, ConnectFailed, MissingAuthority, RequestBodyFailed, RequestFailed, ResponseTimeout,
    TlsRequired,
};

/// `name.namespace` of the destination's Service, for requests without an authority
/// (HTTP/1.0 without `Host`).
fn service_authority(dest: &Destination) -> Result<Authority, MissingAuthority> {
    let key = dest.pool.service();
    format!("{}.{}", key.name, key.namespace)
        .parse()
        .map_err(|_| MissingAuthority)
}

/// Sends `req` to an endpoint of `route`, retrying as the outcome allows.
///
/// Not an `async fn`: the request is put in its sent form before the future is made, so that
/// the future holds it once. An `async fn` keeps its arguments for its whole life next to
/// what it makes of them, and this future is moved (whole) into each future that awaits it:
/// at 2 KiB it was the largest part of every request's state.
pub(super) fn send<C, B>(
    ctx: C,
    route: Arc<Route<B>>,
    req: Request<B>,
    authority: Option<Authority>,
    scheme: Scheme,
) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send
where
    C: SendContext,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // The layer's own connections are cleartext (HTTP/1.1 and h2c): an `https://` request
    // would otherwise leave unencrypted to a pod that expects TLS.
    if scheme != Scheme::HTTP {
        return Either::Left(std::future::ready(Err(TlsRequired::new(req.uri()).into())));
    }
    // `detect`: the protocol comes from the port's appProtocol, which an endpoint may not
    // live up to (an HTTP/1.1 pod behind an h2c port); see `EndpointConns::sender`.
    let (proto, detect) = match (ctx.config().version, route.proto_hint) {
        (HttpVersion::Http1, _) => (Proto::Http1, false),
        (HttpVersion::Http2, _) => (Proto::Http2, false),
        (HttpVersion::Auto, _) if req.version() == Version::HTTP_2 => (Proto::Http2, false),
        (HttpVersion::Auto | HttpVersion::Service, Some(hint)) => (hint, true),
        (HttpVersion::Auto | HttpVersion::Service, None) => (Proto::Http1, false),
    };
    let client = ctx.dest().and_then(|d| d.client);
    let (parts, body) = req.into_parts();
    let (body, progress) = Watched::new(body);
    let mut req = Request::from_parts(parts, body);
    Either::Right(async move {
        let (config, dest) = (ctx.config(), ctx.dest());
        let mut tried: Vec<SocketAddr> = Vec::new();
        let (mut attempts, mut stale_retries, mut fresh) = (0, 0, false);
        loop {
            attempts += 1;
            let picked_at = Instant::now();
            let pick = route.pool.pick_excluding_at(client, &tried, picked_at)?;
            let addr = pick.addr;
            if let Some(d) = dest {
                d.picked(addr);
            }
            let failed = |pick: crate::balance::Pick| {
                pick.failure();
                if let Some(d) = dest {
                    d.failed(addr);
                }
            };
            let conns = route.conns(addr);
            let sender = conns.sender(proto, detect, fresh).await;
            let (mut sender, connected) = match sender {
                Ok(s) => s,
                Err(error) => {
                    failed(pick);
                    tracing::debug!(endpoint = %addr, %error, attempts, "connect failed");
                    if attempts >= config.max_attempts {
                        return Err(ConnectFailed::new(addr, attempts, into_io(error)).into());
                    }
                    tried.push(addr);
                    fresh = false;
                    continue;
                }
            };
            prepare(&mut req, sender.proto(), authority.as_ref(), &scheme, dest)?;
            // The RTT sample covers the request only, not connection setup (as with tower's
            // PeakEwma behind a reconnecting service). On a kept connection nothing waited
            // since the pick, whose clock read then serves.
            let start = match connected {
                true => Instant::now(),
                false => picked_at,
            };
            let response = sender.hand_off(req);
            let sent = match (config.response_timeout, sender.deadline()) {
                (None, _) => Sent::of(response.await),
                // An HTTP/1.1 connection times a request without a body itself, with one sleep
                // for its life rather than one per request (see `deadline`).
                (Some(_), Some(deadline)) if progress.is_none() => {
                    let armed = deadline.arm(start);
                    let result = response.await;
                    match armed.was_overdue() {
                        true => Sent::Overdue(deadline.timeout()),
                        false => Sent::of(result),
                    }
                }
                (Some(timeout), _) => {
                    // Counted from the end of the request body: a slow upload is not the
                    // endpoint's delay. Dropping `response` abandons the request, and hyper
                    // closes its connection (HTTP/1) or resets its stream (HTTP/2).
                    let deadline = async {
                        // Without a body the request was sent whole at `start`: no clock read.
                        let at = match &progress {
                            Some(p) => {
                                p.ended().await;
                                Instant::now() + timeout
                            }
                            None => start + timeout,
                        };
                        tokio::time::sleep_until(at).await;
                    };
                    tokio::select! {
                        biased;
                        result = response => Sent::of(result),
                        () = deadline => Sent::Overdue(timeout),
                    }
                }
            };
            // One clock read for the pool's idle time and the RTT sample.
            let end = Instant::now();
            match sent {
                // The abandoned request may still be on its HTTP/1 connection: not for reuse.
                Sent::Overdue(_) => drop(sender),
                _ => sender.release(&conns, end),
            }
            match sent {
                Sent::Overdue(timeout) => {
                    failed(pick);
                    return Err(ResponseTimeout {
                        endpoint: addr,
                        timeout,
                    }
                    .into());
                }
                Sent::Response(response) => {
                    if config.eject_on_5xx && response.status().is_server_error() {
                        failed(pick);
                    } else {
                        pick.success_between(start, end);
                    }
                    return Ok(response);
                }
                Sent::Retry(_, error) | Sent::Failed(error)
                    if progress.as_ref().is_some_and(|p| p.failed()) =>
                {
                    // The caller's body broke (a client's malformed chunk, say): the endpoint did
                    // nothing wrong, so the pick is dropped unreported.
                    drop(pick);
                    return Err(RequestBodyFailed::new(addr, error).into());
                }
                Sent::Retry(r, error) if stale_retries < 2 => {
                    // The kept-alive connection closed before the request went out: nothing
                    // reached the server, so send it again on a new connection.
                    tracing::debug!(endpoint = %addr, %error, "retrying on a new connection");
                    stale_retries += 1;
                    attempts -= 1;
                    fresh = true;
                    req = r;
                    drop(pick);
                }
                Sent::Retry(_, error) | Sent::Failed(error) => {
                    failed(pick);
                    return Err(RequestFailed::new(addr, error).into());
                }
            }
        }
    })
}

/// Where a send finds its settings and destination: borrowed by a caller that awaits the
/// send itself, or held by the send's future (see [`Balance::send_held`]).
///
/// [`Balance::send_held`]: super::Balance::send_held
pub(super) trait SendContext: Send + Sync {
    fn config(&self) -> &Config;
    fn dest(&self) -> Option<&Destination>;
}

impl SendContext for (&Config, Option<&Destination>) {
    fn config(&self) -> &Config {
        self.0
    }

    fn dest(&self) -> Option<&Destination> {
        self.1
    }
}

fn into_io(error: BoxError) -> std::io::Error {
    match error.downcast::<std::io::Error>() {
        Ok(io) => *io,
        Err(other) => std::io::Error::other(other),
    }
}

/// Puts the request in the form each protocol wants: origin-form with a `Host` header for
/// HTTP/1.1, absolute-form (`:scheme` and `:authority`) for HTTP/2.
///
/// `authority` is the one the request was routed by, if any; otherwise it comes from the
/// request, or from the destination's Service name (HTTP/1.0 without `Host`).
fn prepare<B>(
    req: &mut Request<B>,
    proto: Proto,
    authority: Option<&Authority>,
    scheme: &Scheme,
    dest: Option<&Destination>,
) -> Result<(), BoxError> {
    let authority = |req: &Request<B>| -> Result<Authority, MissingAuthority> {
        match (authority, dest) {
            (Some(a), _) => Ok(a.clone()),
            (None, Some(dest)) => authority_of(req).or_else(|_| service_authority(dest)),
            (None, None) => authority_of(req),
        }
    };
    match proto {
        Proto::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            if let Some(target) = req.uri().authority() {
                // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2), and
                // an HTTP/2 request's `:authority` is its Host (RFC 9113 §8.3.1).
                let host = host_of(target)?;
                req.headers_mut().insert(HOST, host);
            } else if !req.headers().contains_key(HOST) {
                let host = http::HeaderValue::from_str(authority(req)?.as_str())?;
                req.headers_mut().insert(HOST, host);
            }
            // Most requests arrive in origin-form already.
            if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                *req.uri_mut() = Uri::from(path_of(req));
            }
        }
        Proto::Http2 => {
            let authority = authority(req)?;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(HOST);
            *req.uri_mut() = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority)
                .path_and_query(path_of(req))
                .build()?;
        }
    }
    Ok(())
}

/// `host[:port]` of an authority: a `Host` header never carries userinfo.
fn host_of(authority: &Authority) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
    let s = authority.as_str();
    http::HeaderValue::from_str(s.rsplit_once('@').map_or(s, |(_, host)| host))
}

fn path_of<B>(req: &Request<B>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}
