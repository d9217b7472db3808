//! Backend servers for integration tests: HTTP (1 and 2), TCP echo, UDP echo.
//!
//! Bind them on distinct loopback addresses (`127.0.0.11:0`, `127.0.0.12:0`,
//! …; Linux routes all of `127.0.0.0/8` to loopback) and put those addresses
//! in EndpointSlices.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};

/// The response header naming the HTTP backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";

#[derive(Debug)]
struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    status: AtomicU16,
    latency: Mutex<Duration>,
}

/// A running backend. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: Mutex<Option<watch::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    fn spawn<F, Fut>(addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(Arc<Stats>, watch::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let stats = Arc::new(Stats {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            status: AtomicU16::new(200),
            latency: Mutex::new(Duration::ZERO),
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        let task = tokio::spawn(run(stats.clone(), shutdown_rx));
        Self {
            addr,
            stats,
            shutdown: Mutex::new(Some(shutdown)),
            task: Mutex::new(Some(task)),
        }
    }

    /// The bound address (with the actual port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// HTTP requests, TCP connections or UDP datagrams received so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far (0 for UDP).
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// HTTP only: the status of subsequent responses. Default 200.
    pub fn set_status(&self, status: u16) {
        self.stats.status.store(status, Ordering::Relaxed);
    }

    /// HTTP only: delay subsequent responses by `latency`. Default zero.
    pub fn set_latency(&self, latency: Duration) {
        *self.stats.latency.lock() = latency;
    }

    /// Stops accepting, closes every open connection, and waits until the
    /// socket is closed. Idempotent.
    pub async fn shutdown(&self) {
        drop(self.shutdown.lock().take());
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn bind_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Bind { addr, source }
}

/// Starts an HTTP/1 + HTTP/2 (prior knowledge) server on `addr` that answers
/// every request with the configured status (200), body = its address (e.g.
/// `127.0.0.11:40123`) and header `x-backend: <address>`.
///
/// # Errors
///
/// [`Error::Bind`] if `addr` cannot be bound.
pub async fn spawn_http_backend(addr: SocketAddr) -> Result<Backend> {
    spawn_http(addr, Protocols::Both).await
}

/// Like [`spawn_http_backend`], but speaking HTTP/1.1 only (as nginx without `http2`), and
/// accepting upgrades: a request with `Connection: upgrade` and `Upgrade: <p>` gets a `101`,
/// after which the connection echoes its bytes back.
///
/// # Errors
///
/// [`Error::Bind`] if `addr` cannot be bound.
pub async fn spawn_http1_backend(addr: SocketAddr) -> Result<Backend> {
    spawn_http(addr, Protocols::Http1).await
}

#[derive(Clone, Copy)]
enum Protocols {
    Both,
    Http1,
}

async fn spawn_http(addr: SocketAddr, protocols: Protocols) -> Result<Backend> {
    let listener = TcpListener::bind(addr).await.map_err(bind_error(addr))?;
    let addr = listener.local_addr().map_err(bind_error(addr))?;
    Ok(Backend::spawn(addr, move |stats, shutdown| {
        accept_loop(listener, stats.clone(), shutdown, move |io| {
            serve_http(io, addr, stats.clone(), protocols)
        })
    }))
}

async fn serve_http(io: TcpStream, addr: SocketAddr, stats: Arc<Stats>, protocols: Protocols) {
    let name = Bytes::from(addr.to_string());
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let (stats, name) = (stats.clone(), name.clone());
        async move {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(protocol) = req.headers().get(http::header::UPGRADE).cloned() {
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(upgraded) = upgrade.await {
                        let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                });
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(http::header::UPGRADE, protocol);
                headers.insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("upgrade"),
                );
                return Ok::<_, std::convert::Infallible>(response);
            }
            let latency = *stats.latency.lock();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let status = StatusCode::from_u16(stats.status.load(Ordering::Relaxed))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = Response::new(Full::new(name.clone()));
            *response.status_mut() = status;
            if let Ok(value) = http::HeaderValue::from_maybe_shared(name) {
                response.headers_mut().insert(BACKEND_HEADER, value);
            }
            Ok(response)
        }
    });
    let io = TokioIo::new(io);
    let ended = match protocols {
        Protocols::Both => {
            auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(io, service)
                .await
        }
        Protocols::Http1 => hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await
            .map_err(Into::into),
    };
    if let Err(e) = ended {
        tracing::trace!(error = %e, "backend connection ended");
    }
}

/// Starts a TCP echo server on `addr`: every connection gets its bytes back;
/// after reading EOF the server shuts down its write side (half-close).
///
/// # Errors
///
/// [`Error::Bind`] if `addr` cannot be bound.
pub async fn spawn_tcp_echo(addr: SocketAddr) -> Result<Backend> {
    let listener = TcpListener::bind(addr).await.map_err(bind_error(addr))?;
    let addr = listener.local_addr().map_err(bind_error(addr))?;
    Ok(Backend::spawn(addr, move |stats, shutdown| {
        accept_loop(listener, stats.clone(), shutdown, move |io| {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            echo(io)
        })
    }))
}

async fn echo(mut io: TcpStream) {
    let (mut read, mut write) = io.split();
    if tokio::io::copy(&mut read, &mut write).await.is_ok() {
        let _ = write.shutdown().await;
    }
}

/// Starts a UDP echo server on `addr`: every datagram is sent back to its sender.
///
/// # Errors
///
/// [`Error::Bind`] if `addr` cannot be bound.
pub async fn spawn_udp_echo(addr: SocketAddr) -> Result<Backend> {
    let socket = UdpSocket::bind(addr).await.map_err(bind_error(addr))?;
    let addr = socket.local_addr().map_err(bind_error(addr))?;
    Ok(Backend::spawn(
        addr,
        move |stats, mut shutdown| async move {
            let mut buf = vec![0; 65_536];
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    received = socket.recv_from(&mut buf) => match received {
                        Ok((len, peer)) => {
                            stats.requests.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.send_to(&buf[..len], peer).await;
                        }
                        Err(e) => tracing::trace!(error = %e, "udp echo receive failed"),
                    },
                }
            }
        },
    ))
}

/// Accepts connections until shutdown, then aborts every connection task.
async fn accept_loop<H, Fut>(
    listener: TcpListener,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<()>,
    handle: H,
) where
    H: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((io, _)) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(handle(io));
                }
                Err(e) => {
                    tracing::trace!(error = %e, "backend accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}
