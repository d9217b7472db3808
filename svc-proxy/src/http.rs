//! HTTP mode: per-request balancing for Service ports with `appProtocol: http` (HTTP/1.1,
//! plus HTTP/2 with prior knowledge from clients that use it) or `kubernetes.io/h2c`
//! (HTTP/2 with prior knowledge on both sides).
//!
//! Each request is balanced on its own, so one client keep-alive connection reaches every
//! endpoint, new endpoints get traffic at once, and connections to removed endpoints are
//! dropped from the pool. A request the proxy cannot parse gets a 400 from hyper and never
//! reaches an endpoint; a request that could not be sent is retried on another endpoint.

pub mod pool;
pub mod service;

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::target::{Mode, Target};
use crate::tcp::accept_loop;
use pool::Pool;
use service::Proxy;

/// Serves HTTP mode on `listener` until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    target: Arc<Target>,
    mode: Mode,
    cancel: CancellationToken,
) {
    let pool = Arc::new(Pool::new(
        mode == Mode::H2c,
        target.ctx.args.connect_timeout,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if mode == Mode::H2c {
        builder = builder.http2_only();
    }
    let builder = Arc::new(builder);
    // Drop pooled connections to endpoints the Service no longer lists.
    let mut sets = target.sets.clone();
    let pruner = {
        let pool = pool.clone();
        async move {
            while sets.changed().await.is_ok() {
                let listed = sets.borrow_and_update().listed.clone();
                pool.retain(|a| listed.contains(a));
            }
        }
    };
    let drain = target.ctx.drain.clone();
    let accept = accept_loop(&listener, &cancel, |stream, client| {
        let proxy = Proxy {
            target: target.clone(),
            pool: pool.clone(),
            client,
        };
        drain.spawn(connection(builder.clone(), stream, proxy));
    });
    tokio::select! {
        _ = accept => {}
        _ = pruner => {}
    }
}

/// Serves one client connection; on shutdown, finishes the request in flight and closes.
async fn connection(builder: Arc<auto::Builder<TokioExecutor>>, stream: TcpStream, proxy: Proxy) {
    let target = proxy.target.clone();
    let client = proxy.client;
    target.metrics.connections.inc();
    target.metrics.active.inc();
    let conn = builder.serve_connection(TokioIo::new(stream), proxy);
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
