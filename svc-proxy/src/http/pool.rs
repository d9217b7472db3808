//! Per-endpoint upstream connections for HTTP mode.
//!
//! HTTP/1.1: a stack of connections per endpoint. A connection goes back on the stack as soon as
//! its response headers are in, and is handed out again once it is ready (its response body has
//! been read), so one client keep-alive connection can be spread over many endpoints, request by
//! request. HTTP/2: one multiplexed connection
//! per endpoint, re-dialled when it closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// A connection to send one request on.
pub enum Conn {
    /// HTTP/1.1, exclusive until its response is read.
    H1(http1::SendRequest<Incoming>),
    /// HTTP/2, shared.
    H2(http2::SendRequest<Incoming>),
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// The TCP connect timed out.
    #[error("connect timed out")]
    Timeout,
    /// The HTTP handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Upstream connections of one HTTP-mode listener, per endpoint.
#[derive(Debug)]
pub struct Pool {
    h2: bool,
    connect_timeout: Duration,
    h1_idle: Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<Incoming>>>>,
    h2_conns: Mutex<HashMap<SocketAddr, http2::SendRequest<Incoming>>>,
}

impl Pool {
    /// A pool speaking HTTP/2 with prior knowledge when `h2`, else HTTP/1.1.
    pub fn new(h2: bool, connect_timeout: Duration) -> Self {
        Self {
            h2,
            connect_timeout,
            h1_idle: Mutex::default(),
            h2_conns: Mutex::default(),
        }
    }

    /// Whether upstream connections speak HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// A pooled connection to `endpoint`, if one is ready (no I/O).
    pub fn pooled(&self, endpoint: SocketAddr) -> Option<Conn> {
        if self.h2 {
            let mut conns = self.h2_conns.lock();
            let sender = conns.get(&endpoint)?;
            if sender.is_closed() {
                conns.remove(&endpoint);
                return None;
            }
            return Some(Conn::H2(sender.clone()));
        }
        let mut idle = self.h1_idle.lock();
        let stack = idle.get_mut(&endpoint)?;
        // Connections still streaming a response body stay (they become ready once it is
        // read); closed ones go.
        let mut i = stack.len();
        while i > 0 {
            i -= 1;
            if stack[i].is_ready() {
                return Some(Conn::H1(stack.swap_remove(i)));
            }
            if stack[i].is_closed() {
                stack.swap_remove(i);
            }
        }
        None
    }

    /// Dials a new connection to `endpoint`.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect(&self, endpoint: SocketAddr) -> Result<Conn, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        if self.h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%endpoint, %error, "upstream h2 connection ended");
                }
            });
            self.h2_conns.lock().insert(endpoint, sender.clone());
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%endpoint, %error, "upstream connection ended");
                }
            });
            Ok(Conn::H1(sender))
        }
    }

    /// Returns an HTTP/1.1 connection to the pool as soon as its response headers are in; it
    /// is handed out again once it is ready, that is once the response body has been read.
    pub fn recycle(&self, endpoint: SocketAddr, sender: http1::SendRequest<Incoming>) {
        let mut idle = self.h1_idle.lock();
        let stack = idle.entry(endpoint).or_default();
        if stack.len() < MAX_IDLE_PER_ENDPOINT {
            stack.push(sender);
        }
    }

    /// Forgets the connections to endpoints not in `keep` (they close once their last request
    /// is done).
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.h1_idle.lock().retain(|a, _| keep(a));
        self.h2_conns.lock().retain(|a, _| keep(a));
    }
}
