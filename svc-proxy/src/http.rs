//! HTTP mode: per-request balancing for Service ports with `appProtocol: http` (or
//! `kubernetes.io/ws`) or `kubernetes.io/h2c` (or `h2c`, `grpc`), through svc-tower's request
//! layer.
//!
//! Clients may speak HTTP/1.1 or HTTP/2 with prior knowledge on either kind of port (h2c ports
//! take HTTP/2 only). The endpoints get what the port's `appProtocol` says: HTTP/1.1 for
//! `http`; HTTP/2 with prior knowledge for `kubernetes.io/h2c`, unless an endpoint answers the
//! HTTP/2 preface in HTTP/1.1 (svc-tower asks each once), in which case it gets HTTP/1.1.
//!
//! Each request is balanced on its own, so one client keep-alive connection reaches every
//! endpoint, new endpoints get traffic at once, and connections to endpoints that leave the
//! eligible set are drained. A request the proxy cannot parse gets a 400 from hyper and never
//! reaches an endpoint; a request whose connect failed is retried on another endpoint.
//! HTTP/1.1 upgrades (WebSocket) are passed through: after a `101` the two connections are
//! joined byte for byte.
//!
//! What a client can hold is bounded: a request head must arrive within
//! `--header-read-timeout` (also on connections that send nothing, and between keep-alive
//! requests) and fit in `--max-request-headers` (431 beyond). An endpoint gets
//! `--upstream-response-timeout` to start answering (504, and it counts as failed). A client's
//! broken request body is its own fault (400), never the endpoint's.

pub mod body;
pub mod direct;
pub mod expect;
pub mod head_clock;
pub mod headers;
pub mod io;
pub mod service;
mod tunnel;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use svc_tower::balance::Pools;
use svc_tower::layer::{Balance, BalanceLayer, Destination, HttpVersion, NoFallback};
use svc_tower::main_first::{MainFirst, Polled};
use tokio::net::TcpStream;
use tower::Layer;

use crate::cli::{non_zero, Http1Engine};
use crate::metrics::WorkerEndpointMetrics;
use crate::shutdown::Drain;
use crate::target::{Mode, Target};
use direct::{Direct, Served};
use io::{Prefixed, ResetOnCut};
use service::{Proxy, RequestBody};

/// Idle HTTP/1.1 connections kept per endpoint. Connections go back to the pool as soon as
/// their response head is in, so this bounds the concurrency per endpoint that reuses
/// connections; it is well above what one node's clients drive.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// HTTP mode's state for one listener on one worker: the hyper server settings, svc-tower's
/// balancer and the endpoint metrics observer. Each worker has its own, so that upstream
/// connections belong to the worker and a request and its upstream connection are served on
/// the same thread.
pub struct Handler {
    target: Arc<Target>,
    mode: Mode,
    builder: Arc<auto::Builder<TokioExecutor>>,
    balance: Balance<NoFallback, RequestBody>,
    destination: Destination,
    header_timeout: Option<Duration>,
    /// The direct engine, for `http` ports under `--http1-engine direct`.
    direct: Option<Arc<Direct>>,
}

impl Handler {
    /// The handler of `target`'s connections in `mode` (HTTP or h2c), on the current worker.
    pub fn new(target: Arc<Target>, mode: Mode) -> Self {
        let ctx = &target.ctx;
        let pools = Pools::builder(ctx.store.clone())
            .locality(ctx.locality.clone())
            .build();
        let args = &ctx.args;
        let balance = BalanceLayer::new(pools)
            .http_version(HttpVersion::Service)
            .connect_timeout(Some(args.connect_timeout))
            .max_idle_per_endpoint(MAX_IDLE_PER_ENDPOINT)
            .response_timeout(non_zero(args.upstream_response_timeout))
            .pool_idle_timeout(non_zero(args.upstream_idle_timeout))
            .layer(NoFallback);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // `writev(false)`: hyper copies a small body next to the head and sends both with one
        // `send`; with 2 iovecs per `writev` the kernel side cost ~1.5 µs more per request
        // (BENCHMARKS.md).
        // hyper's read buffer holds the request head, so its cap is the head's (431 beyond it);
        // hyper's own default is ~400 KB per connection. The header read timeout is the
        // connection's (`head_clock`), not hyper's: hyper's costs a boxed timer per request.
        let max_headers = args.max_request_headers;
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .writev(false)
            .header_read_timeout(None)
            .max_buf_size(usize::try_from(max_headers).unwrap_or(usize::MAX));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_headers).unwrap_or(u32::MAX));
        if mode == Mode::H2c {
            builder = builder.http2_only();
        }
        let observer = Arc::new(WorkerEndpointMetrics::new(target.metrics.clone()));
        let destination = Destination::new(target.pool().clone()).observer(observer.clone());
        let direct = (mode == Mode::Http && args.http1_engine == Http1Engine::Direct)
            .then(|| Direct::new(target.clone(), observer, MAX_IDLE_PER_ENDPOINT));
        Self {
            direct,
            header_timeout: non_zero(args.header_read_timeout),
            target,
            mode,
            builder: Arc::new(builder),
            balance,
            destination,
        }
    }

    /// Serves one client connection (on the current worker).
    pub fn connection(
        &self,
        stream: TcpStream,
        client: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let refused = crate::tcp::refused(&stream, &self.target);
        let target = self.target.clone();
        let (balance, destination) = (self.balance.clone(), self.destination.clone());
        let (builder, header_timeout) = (self.builder.clone(), self.header_timeout);
        let (direct, mode) = (self.direct.clone(), self.mode);
        async move {
            if refused {
                return;
            }
            let metrics = &target.metrics;
            metrics.connections.inc();
            metrics.active.inc();
            let mut io = ResetOnCut::new(stream, target.ctx.drain.cut_token());
            let unserved = match &direct {
                Some(direct) => match direct.serve(&mut io, client).await {
                    Served::Closed => None,
                    Served::Hyper(read) => Some(read),
                },
                None => Some(None),
            };
            if let Some(read) = unserved {
                // Made now: its header read clock starts with hyper's first request.
                let proxy = Proxy::new(target.clone(), balance, &destination, client, mode, direct);
                let io = Prefixed::new(read.map(|b| b.to_vec()).unwrap_or_default(), io);
                connection(builder, io, proxy, header_timeout).await;
            }
            metrics.active.dec();
        }
    }
}

/// Serves one client connection with hyper; on shutdown, finishes the request in flight and
/// closes. A connection that has waited `header_timeout` for a request head is closed (see
/// `head_clock`).
async fn connection<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    proxy: Proxy,
    header_timeout: Option<Duration>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let target = proxy.target.clone();
    let client = proxy.client;
    let state = proxy.clone();
    let drain = &target.ctx.drain;
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), proxy);
    tokio::pin!(conn);
    let overdue = async {
        match header_timeout {
            Some(timeout) => state.clock.overdue(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(overdue);
    let mut shutting_down = false;
    let result = loop {
        // The rare events are polled only when they wake the task (see `svc_tower::main_first`).
        let rare = rare_event(drain, overdue.as_mut(), shutting_down);
        tokio::pin!(rare);
        match MainFirst::new(conn.as_mut(), rare).await {
            Polled::Main(r) => break r,
            Polled::Side(Rare::Shutdown) => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            // Dropping the connection drops its socket, which resets itself.
            Polled::Side(Rare::Cut) => break Ok(()),
            Polled::Side(Rare::Overdue) => {
                tracing::debug!(service = %target.service, %client, "no request head within the header read timeout; closing");
                break Ok(());
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(service = %target.service, %client, %error, "http connection ended with an error");
    }
}

/// What, besides its own end, ends a client connection's wait.
enum Rare {
    /// Shutdown began: finish the request in flight, then close.
    Shutdown,
    /// The drain deadline passed: close now.
    Cut,
    /// No request head within the header read timeout.
    Overdue,
}

async fn rare_event(
    drain: &Drain,
    overdue: Pin<&mut impl Future<Output = ()>>,
    shutting_down: bool,
) -> Rare {
    tokio::select! {
        () = drain.signaled(), if !shutting_down => Rare::Shutdown,
        () = drain.cutting() => Rare::Cut,
        () = overdue => Rare::Overdue,
    }
}
