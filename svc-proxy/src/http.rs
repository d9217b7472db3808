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

pub mod body;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use svc_tower::balance::{BalanceConfig, Pools};
use svc_tower::layer::{Balance, BalanceLayer, Destination, HttpVersion, NoFallback};
use tokio::net::TcpStream;
use tower::Layer;

use crate::metrics::WorkerEndpointMetrics;
use crate::target::{Mode, Target};
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    balance: Balance<NoFallback, RequestBody>,
    destination: Destination,
}

impl Handler {
    /// The handler of `target`'s connections in `mode` (HTTP or h2c), on the current worker.
    pub fn new(target: Arc<Target>, mode: Mode) -> Self {
        let ctx = &target.ctx;
        let pools = Pools::new(
            ctx.store.clone(),
            ctx.locality.clone(),
            BalanceConfig::default(),
        );
        let balance = BalanceLayer::new(pools)
            .http_version(HttpVersion::Service)
            .connect_timeout(Some(ctx.args.connect_timeout))
            .max_idle_per_endpoint(MAX_IDLE_PER_ENDPOINT)
            .layer(NoFallback);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // `writev(false)`: hyper copies a small body next to the head and sends both with one
        // `send`; with 2 iovecs per `writev` the kernel side cost ~1.5 µs more per request
        // (BENCHMARKS.md).
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .writev(false);
        builder.http2().timer(TokioTimer::new());
        if mode == Mode::H2c {
            builder = builder.http2_only();
        }
        let observer = WorkerEndpointMetrics::new(target.metrics.clone());
        let destination = Destination::new(target.pool().clone()).observer(Arc::new(observer));
        Self {
            target,
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
        let proxy = Proxy::new(
            self.target.clone(),
            self.balance.clone(),
            &self.destination,
            client,
        );
        connection(self.builder.clone(), stream, proxy)
    }
}

/// Serves one client connection; on shutdown, finishes the request in flight and closes.
async fn connection(builder: Arc<auto::Builder<TokioExecutor>>, stream: TcpStream, proxy: Proxy) {
    let target = proxy.target.clone();
    let client = proxy.client;
    target.metrics.connections.inc();
    target.metrics.active.inc();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), proxy);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = target.ctx.drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(service = %target.service, %client, %error, "http connection ended with an error");
    }
    target.metrics.active.dec();
}
