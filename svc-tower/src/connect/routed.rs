//! [`SvcStream`]: the connection [`SvcConnector`](super::SvcConnector) hands to hyper-util,
//! which balances each HTTP/1.1 request on its own.
//!
//! hyper-util's pool keeps idle connections per host and reuses the most recent one, so with
//! a plain connector a client sending one request at a time uses one connection, and so one
//! pod, forever; and a pooled connection to a pod that stopped being ready is reused. A
//! connector cannot see requests, and cannot poison a pooled connection either
//! (`Connected::poison` needs the `Connected` that hyper-util keeps, which has no public
//! clone). It does see the bytes, though, and hyper's HTTP/1 client writes one request and
//! reads its whole response before the next. So a routed stream is a connection in hyper's
//! eyes that sends each request to an endpoint picked for it, over kept-alive connections
//! per endpoint shared by the connector ([`IdleConns`]), finding the end of each exchange
//! with [`h1`](super::h1)'s framing. Between requests it holds no endpoint connection at all.
//!
//! What it cannot frame (the HTTP/2 preface of an `http2_only` client, a tunnel after `101`
//! or `CONNECT`, a malformed message) it passes through unchanged on the endpoint it is on,
//! which is then what a plain connection would be.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::rt::ReadBufCursor;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::{Invalid, RequestFramer, ResponseFramer};
use super::http::{connect_pool, Config};
use super::idle::IdleConns;
use crate::balance::{EndpointPool, Pick};
use crate::error::BoxError;

/// Bytes read from an endpoint per read (and copied once into hyper's buffer).
const READ_CHUNK: usize = 16 * 1024;

/// A connection returned by [`SvcConnector`](super::SvcConnector).
///
/// To a Service's endpoints, each HTTP/1.1 request goes to an endpoint picked for it (see
/// [`SvcConnector`](super::SvcConnector)); to other destinations, it is a plain TCP
/// connection.
pub struct SvcStream(Inner);

enum Inner {
    Plain(TokioIo<TcpStream>),
    Routed(Box<Routed>),
}

impl fmt::Debug for SvcStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Plain(io) => f.debug_tuple("SvcStream::Plain").field(io.inner()).finish(),
            Inner::Routed(r) => f
                .debug_struct("SvcStream::Routed")
                .field("service", r.pool.service())
                .field("endpoint", &r.backend.as_ref().map(|b| b.addr))
                .finish_non_exhaustive(),
        }
    }
}

impl SvcStream {
    pub(crate) fn plain(io: TcpStream) -> Self {
        Self(Inner::Plain(TokioIo::new(io)))
    }

    /// A routed stream whose first request may go to `first` (connected for it).
    pub(crate) fn routed(
        pool: EndpointPool,
        idle: Arc<IdleConns>,
        config: Arc<Config>,
        first: (SocketAddr, TcpStream),
    ) -> Self {
        Self(Inner::Routed(Box::new(Routed {
            pool,
            idle,
            config,
            backend: Some(Backend {
                addr: first.0,
                io: first.1,
                reused: true,
            }),
            acquiring: None,
            phase: Phase::Between,
            pick: None,
            started: Instant::now(),
            req: RequestFramer::default(),
            resp: ResponseFramer::default(),
            reusable: true,
            staging: vec![0; READ_CHUNK].into_boxed_slice(),
            parked_reader: None,
        })))
    }
}

struct Backend {
    addr: SocketAddr,
    io: TcpStream,
    /// Kept alive from before, so that the endpoint may have closed it meanwhile.
    reused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request under way; the next write starts one.
    Between,
    /// A request and its response are under way on `backend`.
    Exchange,
    /// Passing bytes through on `backend` for good.
    Opaque,
}

type Acquiring = Pin<Box<dyn Future<Output = Result<(Pick, Backend), BoxError>> + Send>>;

struct Routed {
    pool: EndpointPool,
    idle: Arc<IdleConns>,
    config: Arc<Config>,
    backend: Option<Backend>,
    acquiring: Option<Acquiring>,
    phase: Phase,
    /// The request's pick, in flight until its response head.
    pick: Option<Pick>,
    started: Instant,
    req: RequestFramer,
    resp: ResponseFramer,
    /// Whether the endpoint connection may carry another request after this exchange.
    reusable: bool,
    staging: Box<[u8]>,
    /// hyper's reader, parked while no exchange is under way: the next one must wake it, as
    /// nothing else will (it waits on the endpoint connection only once it has one).
    parked_reader: Option<std::task::Waker>,
}

/// No endpoint could take the request; the cause is the error's source.
#[derive(Debug)]
struct Unroutable(BoxError);

impl fmt::Display for Unroutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no endpoint took the request: {}", self.0)
    }
}

impl std::error::Error for Unroutable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether an idle endpoint connection is still open and quiet.
fn is_usable(io: &TcpStream) -> bool {
    matches!(io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

async fn acquire(
    pool: EndpointPool,
    idle: Arc<IdleConns>,
    config: Arc<Config>,
) -> Result<(Pick, Backend), BoxError> {
    let pick = pool.pick(None)?;
    if let Some(io) = idle.take(&pool, pick.addr) {
        let addr = pick.addr;
        let reused = true;
        return Ok((pick, Backend { addr, io, reused }));
    }
    // The pick is tried first; on failure, `connect_pool` reports it and picks others.
    let (pick, io) = connect_pool(&pool, &config, Some(pick)).await?;
    let (addr, reused) = (pick.addr, false);
    Ok((pick, Backend { addr, io, reused }))
}

impl Routed {
    /// Starts a request: keeps the first connection if its endpoint may still be used, else
    /// picks an endpoint and takes a kept-alive connection to it or opens one.
    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.acquiring.is_none() {
            if let Some(b) = self.backend.take() {
                let pick = is_usable(&b.io)
                    .then(|| self.pool.pick_endpoint(b.addr))
                    .flatten();
                if let Some(pick) = pick {
                    self.begin(pick, b);
                    return Poll::Ready(Ok(()));
                }
            }
            let (pool, idle, config) = (self.pool.clone(), self.idle.clone(), self.config.clone());
            self.acquiring = Some(Box::pin(acquire(pool, idle, config)));
        }
        let acquiring = self.acquiring.as_mut().expect("set above");
        let result = ready!(acquiring.as_mut().poll(cx));
        self.acquiring = None;
        match result {
            Ok((pick, backend)) => {
                self.begin(pick, backend);
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(io::Error::other(Unroutable(error)))),
        }
    }

    fn begin(&mut self, pick: Pick, backend: Backend) {
        self.backend = Some(backend);
        self.pick = Some(pick);
        self.started = Instant::now();
        self.req.reset();
        self.resp.reset();
        self.reusable = true;
        self.phase = Phase::Exchange;
        if let Some(reader) = self.parked_reader.take() {
            reader.wake();
        }
    }

    /// The exchange is over: the endpoint connection goes back for another request, or closes.
    fn finish(&mut self) {
        self.phase = Phase::Between;
        drop(self.pick.take());
        let reusable = self.reusable && !self.req.close && !self.resp.close;
        if let Some(b) = self.backend.take() {
            if reusable {
                self.idle.put(&self.pool, b.addr, b.io);
            }
        }
    }

    /// Stops following the protocol: the rest passes through on the current endpoint.
    fn go_opaque(&mut self) {
        self.phase = Phase::Opaque;
        if let Some(pick) = self.pick.take() {
            pick.success_since(self.started);
        }
    }

    /// The final response head arrived: the request's latency and outcome are known.
    fn answered(&mut self, status: u16) {
        if let Some(pick) = self.pick.take() {
            if self.config.eject_on_5xx && (500..600).contains(&status) {
                pick.failure();
            } else {
                pick.success_since(self.started);
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = loop {
            if self.phase == Phase::Between {
                ready!(self.poll_start(cx))?;
            }
            let backend = self.backend.as_mut().expect("an exchange has an endpoint");
            match ready!(Pin::new(&mut backend.io).poll_write(cx, buf)) {
                Ok(n) => break n,
                // A kept-alive connection the endpoint closed just before this request: nothing
                // of it was sent, so it goes out on another connection (hyper-util retries the
                // same case on its own pooled connections).
                Err(e)
                    if backend.reused
                        && self.phase == Phase::Exchange
                        && self.req.is_untouched() =>
                {
                    tracing::debug!(endpoint = %backend.addr, error = %e, "kept-alive connection closed; sending on another");
                    self.backend = None;
                    drop(self.pick.take());
                    self.phase = Phase::Between;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        if self.phase == Phase::Exchange {
            if let Err(Invalid) = self.req.feed(&buf[..n]) {
                self.go_opaque();
            } else if self.req.is_done() && self.resp.is_done() {
                self.finish();
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.phase == Phase::Between {
            // hyper watches an idle connection for a close; this one holds nothing to close.
            match &self.parked_reader {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => self.parked_reader = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let Some(backend) = self.backend.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let want = buf.remaining().min(self.staging.len());
        let mut staging = ReadBuf::new(&mut self.staging[..want]);
        ready!(Pin::new(&mut backend.io).poll_read(cx, &mut staging))?;
        let got = staging.filled().len();
        if self.phase == Phase::Opaque {
            buf.put_slice(&self.staging[..got]);
            return Poll::Ready(Ok(()));
        }
        if got == 0 {
            // The endpoint closed: the end of a response delimited by closing, or a failure
            // that hyper reports for this request.
            if !self.resp.until_close() {
                if let Some(pick) = self.pick.take() {
                    pick.failure();
                }
            }
            self.reusable = false;
            self.phase = Phase::Opaque;
            return Poll::Ready(Ok(()));
        }
        match self.resp.feed(&self.staging[..got], &self.req) {
            Err(Invalid) => {
                self.go_opaque();
                buf.put_slice(&self.staging[..got]);
            }
            Ok(progress) => {
                if let Some(status) = progress.status {
                    self.answered(status);
                }
                // Bytes after the end of a response answer nothing: the endpoint is out of
                // step, and its connection is not reused.
                if progress.used < got {
                    self.reusable = false;
                }
                buf.put_slice(&self.staging[..progress.used]);
                if progress.tunnel {
                    self.phase = Phase::Opaque;
                } else if progress.done && self.req.is_done() {
                    self.finish();
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Read for SvcStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Inner::Routed(r) => r.poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for SvcStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Inner::Routed(r) => r.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Plain(io) => Pin::new(io).poll_flush(cx),
            Inner::Routed(r) => match r.backend.as_mut() {
                Some(b) => Pin::new(&mut b.io).poll_flush(cx),
                None => Poll::Ready(Ok(())),
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Inner::Routed(r) => match (r.phase, r.backend.as_mut()) {
                // Between requests nothing is borrowed; a kept first connection just closes.
                (Phase::Between, _) | (_, None) => Poll::Ready(Ok(())),
                (_, Some(b)) => Pin::new(&mut b.io).poll_shutdown(cx),
            },
        }
    }
}

impl Connection for SvcStream {
    fn connected(&self) -> Connected {
        match &self.0 {
            Inner::Plain(io) => io.connected(),
            Inner::Routed(_) => Connected::new(),
        }
    }
}
