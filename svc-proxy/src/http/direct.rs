//! HTTP mode's direct engine: HTTP/1.1 clients to HTTP/1.1 endpoints without hyper on the
//! request path (`--http1-engine direct`, the default on `http` ports).
//!
//! hyper's server and client cost a proxy request a dispatch channel, a oneshot, a task per
//! upstream connection, a header map built from the client's head and encoded again for the
//! endpoint, and the same on the way back (BENCHMARKS.md, issue 12: the bare hyper proxy only
//! ties haproxy at one thread). Here one task per client connection reads a request into a
//! pooled buffer, picks an endpoint with svc-tower's balancer, writes the request's bytes as
//! they came to a kept-alive connection of this worker's, and writes the response's bytes
//! back as they come, following their framing only to know where the response ends
//! (`svc_tower::connect::BodyFraming`).
//!
//! What it forwards is the plain case: an HTTP/1.1 request in origin form with one Host, no
//! body or a `Content-Length` body that fits the buffer with its head, and no hop-by-hop
//! header but `Connection: keep-alive` or `close`. Anything else (HTTP/2, HTTP/1.0, chunked
//! or large uploads, `Expect: 100-continue`, upgrades, absolute URIs, heads hyper would
//! reject) hands the connection, with the bytes read so far, to hyper's server for the rest
//! of its life (`head::Request::Hyper`): such requests are served exactly as before, and a
//! client is never answered differently for having been read by this engine first.
//!
//! The rules are HTTP mode's: the header read timeout (`HeadClock`), the upstream response
//! timeout (504, the endpoint counts as failed), connect retries on other endpoints (503 when
//! none answers), a kept-alive connection found closed sends its request again on a new one
//! (when nothing came back and the request is idempotent), hop-by-hop headers are not
//! forwarded, 5xx answers and failures feed outlier ejection, and drain finishes the
//! response in flight.

pub mod head;
mod relay;
mod upstream;
mod wire;

pub use relay::{http1_head, RelayedBody};

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use svc_tower::main_first::{MainFirst, Polled};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head_clock::HeadClock;
use super::io::ResetOnCut;
use super::{rare_event, Rare};
use crate::metrics::WorkerEndpointMetrics;
use crate::target::Target;
use crate::tcp::buffers::Buffer;
use head::{Request, RequestHead, ResponseHead};
use svc_tower::layer::EndpointObserver;
use upstream::Upstreams;
use wire::{forward_response, read_client, send, Upstream};

/// The buffer a request (head and body) is read into, and a response's reads start in: a
/// request that does not fit is hyper's. Small, because a busy worker has one of each per
/// request in flight (at 200 in flight, 64 KiB buffers went past what the worker's pool
/// keeps and cost page faults).
const BUF: usize = 16 * 1024;

/// A response head that does not fit [`BUF`] continues in a buffer this large (up to
/// `head::MAX_RESPONSE_HEAD`).
const HEAD_BUF: usize = head::MAX_RESPONSE_HEAD;

/// A response body read that fills its buffer moves the rest of the body to a buffer this
/// large (as TCP mode's bulk flows do): fewer, larger reads and writes.
const BULK_BUF: usize = 256 * 1024;

/// Attempts on different endpoints when connects fail (svc-tower's default).
const MAX_ATTEMPTS: u32 = 3;

/// Sends again of a request whose kept-alive connection was found closed (svc-tower's).
const MAX_STALE_RETRIES: u32 = 2;

/// The direct engine of one listener on one worker.
pub struct Direct {
    target: Arc<Target>,
    upstreams: Upstreams,
    observer: Arc<WorkerEndpointMetrics>,
    response_timeout: Option<Duration>,
    header_timeout: Option<Duration>,
    /// The largest request head served here; larger ones go to hyper (431 past the limit).
    max_head: usize,
}

/// How a client connection's service here ended.
pub enum Served {
    /// Closed (by either side, a timeout or drain).
    Closed,
    /// Handed to hyper, with the bytes read and not yet served.
    Hyper(Option<Buffer>),
}

/// A connection's state shared by its request loop and the rare events around it.
struct ConnState {
    clock: HeadClock,
    /// Drain began: the response in flight is the last.
    closing: AtomicBool,
    /// Waiting for the first byte of a request: drain may close the connection now.
    idle: AtomicBool,
}

impl Direct {
    /// The engine for `target` on the current worker, reporting per-endpoint picks and
    /// failures to `observer`. On a runtime, it sweeps out idle upstream connections past
    /// `--upstream-idle-timeout` while it lives, as hyper's pool does.
    pub fn new(
        target: Arc<Target>,
        observer: Arc<WorkerEndpointMetrics>,
        max_idle_per_endpoint: usize,
    ) -> Arc<Self> {
        let args = &target.ctx.args;
        let idle_timeout = crate::cli::non_zero(args.upstream_idle_timeout);
        let upstreams = Upstreams::new(max_idle_per_endpoint, idle_timeout, args.connect_timeout);
        let max_head = usize::try_from(args.max_request_headers)
            .unwrap_or(usize::MAX)
            .min(BUF);
        let direct = Arc::new(Self {
            response_timeout: crate::cli::non_zero(args.upstream_response_timeout),
            header_timeout: crate::cli::non_zero(args.header_read_timeout),
            target,
            upstreams,
            observer,
            max_head,
        });
        if let (Some(timeout), Ok(runtime)) = (idle_timeout, tokio::runtime::Handle::try_current())
        {
            runtime.spawn(sweep_idle(Arc::downgrade(&direct), timeout));
        }
        direct
    }

    /// Serves `io`'s requests until the connection ends or is hyper's.
    pub async fn serve(&self, io: &mut ResetOnCut, client: SocketAddr) -> Served {
        let state = ConnState {
            clock: HeadClock::new(),
            closing: AtomicBool::new(false),
            idle: AtomicBool::new(true),
        };
        let mut buf: Option<Buffer> = None;
        let drain = &self.target.ctx.drain;
        let overdue = async {
            match self.header_timeout {
                Some(timeout) => state.clock.overdue(timeout).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(overdue);
        let served = {
            let requests = self.requests(io, &mut buf, client, &state);
            tokio::pin!(requests);
            let mut shutting_down = false;
            loop {
                let rare = rare_event(drain, overdue.as_mut(), shutting_down);
                tokio::pin!(rare);
                match MainFirst::new(requests.as_mut(), rare).await {
                    Polled::Main(served) => break served,
                    Polled::Side(Rare::Shutdown) => {
                        shutting_down = true;
                        state.closing.store(true, Relaxed);
                        if state.idle.load(Relaxed) {
                            break Ok(false);
                        }
                    }
                    Polled::Side(Rare::Cut) => break Ok(false),
                    Polled::Side(Rare::Overdue) => {
                        tracing::debug!(service = %self.target.service, %client, "no request head within the header read timeout; closing");
                        break Ok(false);
                    }
                }
            }
        };
        match served {
            Ok(true) => Served::Hyper(buf),
            Ok(false) => Served::Closed,
            Err(error) => {
                tracing::debug!(service = %self.target.service, %client, %error, "http connection ended with an error");
                Served::Closed
            }
        }
    }

    /// The request loop: `Ok(true)` when the connection is hyper's from here on.
    async fn requests(
        &self,
        io: &mut ResetOnCut,
        buf: &mut Option<Buffer>,
        client: SocketAddr,
        state: &ConnState,
    ) -> io::Result<bool> {
        loop {
            let head = loop {
                if let Some(b) = buf.as_deref() {
                    match head::request(b, self.max_head, BUF) {
                        Request::Direct(h) if b.len() >= h.len + h.body => break h,
                        Request::Direct(_) | Request::Partial => {}
                        Request::Hyper => return Ok(true),
                    }
                }
                if state.closing.load(Relaxed) && buf.is_none() {
                    return Ok(false);
                }
                state.idle.store(buf.is_none(), Relaxed);
                let read = read_client(io, buf).await;
                state.idle.store(false, Relaxed);
                if read? == 0 {
                    return Ok(false);
                }
            };
            state.clock.request(http::Version::HTTP_11);
            let message_len = head.len + head.body;
            let Some(b) = buf.as_deref() else {
                return Ok(false);
            };
            let kept = self
                .exchange(io, &b[..message_len], &head, client, &state.closing)
                .await;
            state.clock.response_ended();
            if let Some(b) = buf.as_deref_mut() {
                b.drain(..message_len);
                if b.is_empty() {
                    // An idle connection holds no buffer.
                    *buf = None;
                }
            }
            if !kept? || head.close || state.closing.load(Relaxed) {
                return Ok(false);
            }
        }
    }

    /// Forwards one request (`message`: its head and body) and its response: `Ok(true)`
    /// when the client connection may carry the next request. The response tells the client
    /// that the connection closes after it if the client asked, or if drain began (`closing`)
    /// before its head.
    async fn exchange(
        &self,
        client_io: &mut ResetOnCut,
        message: &[u8],
        req: &RequestHead,
        client: SocketAddr,
        closing: &AtomicBool,
    ) -> io::Result<bool> {
        let close_client = || req.close || closing.load(Relaxed);
        let metrics = &self.target.metrics;
        if req.body > 0 {
            metrics.rx.inc_by(req.body as u64);
        }
        let out: Cow<'_, [u8]> = match &req.rewritten {
            None => Cow::Borrowed(message),
            Some(head) => Cow::Owned([head, &message[req.len..]].concat()),
        };
        let shape = Shape {
            is_head: req.is_head,
            idempotent: req.idempotent,
        };
        let answer = match self.dispatch(&out, shape, client.ip(), &close_client).await {
            Ok(answer) => answer,
            Err(failure) => return self.answer_error(client_io, failure, close_client()).await,
        };
        let Answer {
            mut up,
            rbuf,
            head: resp,
            addr,
            at,
        } = answer;
        metrics.request(http::StatusCode::from_u16(resp.status).unwrap_or_default());
        let forwarded = forward_response(client_io, &mut up, rbuf, &resp).await?;
        if forwarded.endpoint_reusable && resp.reusable {
            self.upstreams.checkin(addr, up, at);
        }
        if forwarded.body_bytes > 0 {
            metrics.tx.inc_by(forwarded.body_bytes);
        }
        Ok(!resp.told_close())
    }

    /// Sends `out` (a whole request) to an endpoint and reads its response head, retrying as
    /// svc-tower's send does: other endpoints when connects fail, a new connection when a
    /// kept-alive one turns out closed. Reports the outcome to the balancer and the
    /// per-endpoint observer.
    async fn dispatch(
        &self,
        out: &[u8],
        shape: Shape,
        client: IpAddr,
        close_client: &impl Fn() -> bool,
    ) -> Result<Answer, Failure> {
        let pool = self.target.pool();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let (mut attempts, mut stale_retries, mut fresh) = (0, 0, false);
        loop {
            attempts += 1;
            let picked_at = Instant::now();
            let pick = pool
                .pick_excluding_at(Some(client), &tried, picked_at)
                .map_err(|_| Failure::NoEndpoints)?;
            let addr = pick.addr;
            self.observer.picked(addr);
            let reused = match (!fresh).then(|| self.upstreams.checkout(addr, picked_at)) {
                Some(Some(stream)) => Some(stream),
                _ => None,
            };
            let is_reused = reused.is_some();
            let mut up = match reused {
                Some(stream) => stream,
                None => match self.upstreams.connect(addr).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        pick.failure();
                        self.observer.failed(addr);
                        tracing::debug!(endpoint = %addr, %error, attempts, "connect failed");
                        if attempts >= MAX_ATTEMPTS {
                            self.log_failure(addr, &error, "connect failed");
                            return Err(Failure::Connect);
                        }
                        tried.push(addr);
                        fresh = false;
                        continue;
                    }
                },
            };
            // The RTT covers the request, not the connect (as svc-tower's does).
            let start = if is_reused { picked_at } else { Instant::now() };
            let mut rbuf = Buffer::take(BUF);
            let sent = send(&mut up, out, &mut rbuf, shape.is_head, close_client);
            let outcome = match self.response_timeout {
                Some(timeout) => tokio::time::timeout_at(start + timeout, sent)
                    .await
                    .unwrap_or(Err(Upstream::Timeout)),
                None => sent.await,
            };
            let head = match outcome {
                Ok(head) => head,
                Err(Upstream::Stale(error))
                    if is_reused && stale_retries < MAX_STALE_RETRIES && shape.idempotent =>
                {
                    tracing::debug!(endpoint = %addr, %error, "retrying on a new connection");
                    stale_retries += 1;
                    attempts -= 1;
                    fresh = true;
                    drop(pick);
                    continue;
                }
                Err(failed) => {
                    pick.failure();
                    self.observer.failed(addr);
                    let (failure, error) = match failed {
                        Upstream::Timeout => (Failure::Timeout, "upstream response timeout".into()),
                        Upstream::Stale(e) | Upstream::Io(e) => (Failure::Request, e.to_string()),
                        Upstream::Invalid(why) => (Failure::Request, why.to_string()),
                    };
                    self.log_failure(addr, &error, "request failed");
                    return Err(failure);
                }
            };
            let at = Instant::now();
            if head.status >= 500 {
                pick.failure();
                self.observer.failed(addr);
            } else {
                pick.success_between(start, at);
            }
            return Ok(Answer {
                up,
                rbuf,
                head,
                addr,
                at,
            });
        }
    }

    /// Answers the client for a request the endpoints could not serve.
    async fn answer_error(
        &self,
        client_io: &mut ResetOnCut,
        failure: Failure,
        close_client: bool,
    ) -> io::Result<bool> {
        let (status, reason, body) = failure.answer();
        self.target
            .metrics
            .request(http::StatusCode::from_u16(status).unwrap_or_default());
        let connection = if close_client {
            "connection: close\r\n"
        } else {
            ""
        };
        let bytes = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{connection}\r\n{body}",
            body.len()
        );
        client_io.write_all(bytes.as_bytes()).await?;
        Ok(!close_client)
    }

    /// Failures of endpoints at WARN, at most one line per endpoint per interval (as the
    /// hyper engine logs them).
    fn log_failure(&self, endpoint: SocketAddr, error: &dyn std::fmt::Display, what: &str) {
        let warnings = &self.target.ctx.endpoint_warnings;
        if let Some(failures) = warnings.hit((endpoint, "http")) {
            let service = &self.target.service;
            tracing::warn!(%service, %endpoint, %error, failures, what,
                "request to the endpoint failed (logged once per endpoint per 10 s; failures: how many since the last line)");
        }
    }
}

/// Closes upstream connections idle past `timeout`, checking twice per timeout, until the
/// engine is gone.
async fn sweep_idle(direct: std::sync::Weak<Direct>, timeout: Duration) {
    let every = (timeout / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match direct.upgrade() {
            Some(direct) => direct.upstreams.sweep(Instant::now()),
            None => return,
        }
    }
}

/// What about a request decides how it is sent.
#[derive(Clone, Copy)]
pub struct Shape {
    /// A HEAD request: its response has no body.
    is_head: bool,
    /// It may be sent again (see [`RequestHead::idempotent`]).
    idempotent: bool,
}

/// An endpoint's answer: the connection it came on, with the response head at the start of
/// `rbuf` (and whatever of the body came with it).
struct Answer {
    up: TcpStream,
    rbuf: Buffer,
    head: ResponseHead,
    addr: SocketAddr,
    /// When the head was in.
    at: Instant,
}

/// Why a request got no answer from an endpoint.
pub enum Failure {
    /// No endpoint is eligible.
    NoEndpoints,
    /// Every connect failed.
    Connect,
    /// No response head within the response timeout.
    Timeout,
    /// The endpoint failed the request (or answered what cannot be forwarded).
    Request,
}

impl Failure {
    /// Status, reason and body: the hyper engine's (Envoy's statuses).
    pub fn answer(&self) -> (u16, &'static str, &'static str) {
        match self {
            Failure::NoEndpoints => (503, "Service Unavailable", "no endpoints available\n"),
            Failure::Connect => (503, "Service Unavailable", "upstream connect failed\n"),
            Failure::Timeout => (504, "Gateway Timeout", "upstream response timeout\n"),
            Failure::Request => (502, "Bad Gateway", "upstream request failed\n"),
        }
    }
}
