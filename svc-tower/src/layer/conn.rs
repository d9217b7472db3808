//! Connections to one endpoint: one multiplexed HTTP/2 connection, and a pool of HTTP/1.1
//! connections.
//!
//! Built on hyper's `client::conn` API rather than hyper-util's pooled client, so that a
//! request keeps its body until a connection is really there: a connect failure can then be
//! retried on another endpoint. Dropping an [`EndpointConns`] drains it: the connections'
//! senders go away, requests in flight finish, and hyper closes each connection when it has
//! nothing left to do.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::Either;

use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::deadline::ResponseDeadline;
use super::Config;
use crate::error::BoxError;
use crate::main_first::{MainFirst, Polled};

type Request<B> = http::Request<B>;
type Response = http::Response<Incoming>;

/// Which protocol a request goes out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

/// A connection ready for one request.
pub(crate) enum Sender<B> {
    Http1(Http1Conn<B>),
    Http2(http2::SendRequest<B>),
}

/// An HTTP/1.1 connection: its sender, and the response deadline it keeps for requests
/// without a body (when there is a response timeout).
pub(crate) struct Http1Conn<B> {
    send: http1::SendRequest<B>,
    deadline: Option<Arc<ResponseDeadline>>,
}

/// How sending went.
pub(crate) enum Sent<B> {
    Response(Response),
    /// The connection closed before the request was written: it is given back to be retried.
    Retry(Request<B>, hyper::Error),
    Failed(hyper::Error),
    /// No response head within this timeout (kept by the connection or by the request).
    Overdue(std::time::Duration),
}

impl<B> Sender<B> {
    pub(crate) fn proto(&self) -> Proto {
        match self {
            Sender::Http1(_) => Proto::Http1,
            Sender::Http2(_) => Proto::Http2,
        }
    }

    /// The response deadline the connection keeps for requests without a body, if it keeps
    /// one (see `deadline`).
    pub(crate) fn deadline(&self) -> Option<&ResponseDeadline> {
        match self {
            Sender::Http1(c) => c.deadline.as_deref(),
            Sender::Http2(_) => None,
        }
    }
}

impl<B> Sender<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Hands `req` to the connection (hyper queues it for the connection's task at once) and
    /// gives the wait for its response head, which borrows nothing.
    ///
    /// Not an `async fn` sending and then waiting: the caller awaits hyper's future itself,
    /// so that the request's future does not hold (and move, per request) a future of ours
    /// around hyper's, next to a second copy of the request.
    pub(crate) fn hand_off(
        &mut self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response, TrySendError<Request<B>>>> + Send + 'static {
        match self {
            Sender::Http1(c) => Either::Left(c.send.try_send_request(req)),
            Sender::Http2(s) => Either::Right(s.try_send_request(req)),
        }
    }

    /// The response head is in (or the request failed) at `now`: an HTTP/1 connection goes
    /// back to the pool, to be ready again when the response body has been read.
    pub(crate) fn release(self, conns: &EndpointConns<B>, now: Instant) {
        if let Sender::Http1(c) = self {
            conns.put_http1(c, now);
        }
    }
}

impl<B> Sent<B> {
    /// How hyper's wait for a response head ended.
    pub(crate) fn of(result: Result<Response, TrySendError<Request<B>>>) -> Self {
        match result {
            Ok(response) => Sent::Response(response),
            Err(e) => into_sent(e),
        }
    }
}

fn into_sent<B>(mut e: TrySendError<Request<B>>) -> Sent<B> {
    match e.take_message() {
        Some(req) => Sent::Retry(req, e.into_error()),
        None => Sent::Failed(e.into_error()),
    }
}

/// The connections to one endpoint.
pub(crate) struct EndpointConns<B> {
    addr: SocketAddr,
    config: Arc<Config>,
    h2: Mutex<Option<http2::SendRequest<B>>>,
    /// Serialises HTTP/2 connects, so that a burst of requests opens one connection.
    h2_connect: tokio::sync::Mutex<()>,
    /// Kept-alive HTTP/1.1 connections, each with when it was last seen in use.
    h1: Mutex<Vec<(Http1Conn<B>, Instant)>>,
    /// Whether the endpoint speaks HTTP/2, once asked.
    h2_probe: tokio::sync::OnceCell<bool>,
}

/// How long the HTTP/2 probe waits for the endpoint's first bytes.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads until `buf` is full or the peer closes; the bytes read.
async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]).await? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

impl<B> EndpointConns<B> {
    /// The endpoint.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl<B> EndpointConns<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(addr: SocketAddr, config: Arc<Config>) -> Self {
        Self {
            addr,
            config,
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
            h1: Mutex::new(Vec::new()),
            h2_probe: tokio::sync::OnceCell::new(),
        }
    }

    /// A connection for one request: an existing one when there is one (unless `fresh`:
    /// an idle HTTP/1 one turned out stale), else a new one; and whether this waited for a
    /// connect (or the HTTP/2 probe), so that the caller knows whether a clock read from
    /// before it still marks the request's start.
    ///
    /// With `detect`, `Http2` comes from the port's `appProtocol` rather than from the
    /// caller: the endpoint is asked once whether it speaks HTTP/2, and gets HTTP/1.1 if not.
    ///
    /// # Errors
    ///
    /// The connect or handshake error; the request was not touched.
    pub(crate) async fn sender(
        &self,
        proto: Proto,
        detect: bool,
        fresh: bool,
    ) -> Result<(Sender<B>, bool), BoxError> {
        // Connects and the probe are boxed: they are rare, and would otherwise make every
        // request's future (moved into a box per request) several times larger.
        let (proto, probed) = match (proto, self.h2_probe.get()) {
            (Proto::Http2, Some(false)) if detect => (Proto::Http1, false),
            (Proto::Http2, None) if detect => match Box::pin(self.speaks_http2()).await? {
                true => (Proto::Http2, true),
                false => (Proto::Http1, true),
            },
            (p, _) => (p, false),
        };
        match proto {
            // A closed HTTP/2 connection is never reused, and a live one is as good as new.
            Proto::Http2 => match self.live_http2() {
                Some(s) => Ok((Sender::Http2(s), probed)),
                None => Box::pin(self.connect_http2())
                    .await
                    .map(|s| (Sender::Http2(s), true)),
            },
            Proto::Http1 => match (!fresh).then(|| self.idle_http1()).flatten() {
                Some(c) => Ok((Sender::Http1(c), probed)),
                None => Box::pin(self.connect_http1())
                    .await
                    .map(|c| (Sender::Http1(c), true)),
            },
        }
    }

    /// Whether the endpoint answers the HTTP/2 connection preface as an HTTP/2 server: asked
    /// once, on a connection of its own (hyper's handshake cannot be undone on a connection
    /// that turns out to speak HTTP/1.1).
    ///
    /// An HTTP/1.1 server answers the preface (`PRI * HTTP/2.0`) with an HTTP/1.x error
    /// status or hangs up; an HTTP/2 server sends its SETTINGS frame at once. Silence is
    /// taken as HTTP/2, as the port's `appProtocol` says.
    async fn speaks_http2(&self) -> Result<bool, BoxError> {
        /// The client connection preface and an empty SETTINGS frame (RFC 9113 §3.4).
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        let probe = self.h2_probe.get_or_try_init(|| async {
            let mut stream =
                crate::connect::tcp(self.addr, self.config.connect_timeout, self.config.nodelay)
                    .await?;
            stream.write_all(PREFACE).await?;
            let mut head = [0u8; 5];
            let answer = tokio::time::timeout(PROBE_TIMEOUT, read_head(&mut stream, &mut head));
            let speaks = match answer.await {
                Err(_elapsed) => true,
                Ok(Ok(n)) => n > 0 && !head[..n].starts_with(&b"HTTP/"[..n.min(5)]),
                Ok(Err(_)) => false,
            };
            if !speaks {
                tracing::info!(endpoint = %self.addr, "endpoint does not speak HTTP/2 with prior knowledge though its port's appProtocol says so; using HTTP/1.1");
            }
            Ok::<_, std::io::Error>(speaks)
        });
        Ok(*probe.await?)
    }

    fn idle_http1(&self) -> Option<Http1Conn<B>> {
        let mut pool = self.h1.lock();
        // From the top, the most recently used first; connections still reading a response
        // body stay (they are ready again once it is read), closed ones go.
        let mut i = pool.len();
        while i > 0 {
            i -= 1;
            if pool[i].0.send.is_ready() {
                return Some(pool.swap_remove(i).0);
            }
            if pool[i].0.send.is_closed() {
                pool.swap_remove(i);
            }
        }
        None
    }

    fn put_http1(&self, conn: Http1Conn<B>, now: Instant) {
        let mut pool = self.h1.lock();
        if !conn.send.is_closed() && pool.len() < self.config.max_idle_per_endpoint {
            pool.push((conn, now));
        }
    }

    /// Closes the kept-alive HTTP/1.1 connections unused for `timeout` (dropping the sender of
    /// an idle connection makes hyper close it). One still reading a response body is in use:
    /// its clock starts again.
    pub(crate) fn close_idle(&self, now: Instant, timeout: std::time::Duration) {
        let mut pool = self.h1.lock();
        let before = pool.len();
        pool.retain_mut(|(conn, since)| {
            if conn.send.is_closed() {
                return false;
            }
            if !conn.send.is_ready() {
                *since = now;
                return true;
            }
            now.duration_since(*since) < timeout
        });
        let closed = before - pool.len();
        if closed > 0 {
            tracing::debug!(endpoint = %self.addr, closed, "closed idle HTTP/1 connections");
        }
    }

    async fn connect_http1(&self) -> Result<Http1Conn<B>, BoxError> {
        let io = self.connect().await?;
        // One flat buffer per write (head and small body copied together) is cheaper in the
        // kernel than `writev` with an iovec each, for the small requests that dominate.
        let (send, conn) = http1::Builder::new().writev(false).handshake(io).await?;
        let deadline = self
            .config
            .response_timeout
            .map(|timeout| Arc::new(ResponseDeadline::new(timeout)));
        let addr = self.addr;
        let watched = deadline.clone();
        tokio::spawn(async move {
            // With upgrades, a `101` response hands the connection to whoever awaits
            // `hyper::upgrade::on(response)` (a proxy passing WebSocket through).
            let conn = std::pin::pin!(conn.with_upgrades());
            let ended = match &watched {
                None => conn.await,
                // The deadline is polled only when its sleep fires (see `main_first`).
                Some(deadline) => {
                    match MainFirst::new(conn, std::pin::pin!(deadline.overdue())).await {
                        Polled::Main(ended) => ended,
                        Polled::Side(()) => {
                            tracing::debug!(endpoint = %addr, timeout = ?deadline.timeout(), "no response head within the response timeout; closing the connection");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(endpoint = %addr, %error, "HTTP/1 connection ended");
            }
        });
        Ok(Http1Conn { send, deadline })
    }

    fn live_http2(&self) -> Option<http2::SendRequest<B>> {
        self.h2.lock().as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<B>, BoxError> {
        let _connecting = self.h2_connect.lock().await;
        if let Some(s) = self.live_http2() {
            return Ok(s);
        }
        let io = self.connect().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(endpoint = %addr, %error, "HTTP/2 connection ended");
            }
        });
        *self.h2.lock() = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> std::io::Result<TokioIo<tokio::net::TcpStream>> {
        let stream =
            crate::connect::tcp(self.addr, self.config.connect_timeout, self.config.nodelay)
                .await?;
        Ok(TokioIo::new(stream))
    }
}
