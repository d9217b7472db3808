//! Floors for the cost per request of svc-proxy's HTTP mode (issue 12): three stripped-down
//! proxies that show how much of that cost is svc's, how much any proxy built on hyper pays,
//! and what a proxy without hyper on its data path would pay.
//!
//! ```text
//! l7-floor MODE LISTEN BACKENDS THREADS
//!   hyper-proxy  hyper's server (HTTP/1.1, and HTTP/2 with prior knowledge) in front of hyper's
//!                HTTP/1.1 client, round robin over BACKENDS: svc-proxy's HTTP mode without
//!                svc (no balancer, header rewriting, metrics, timeouts or drain)
//!   hyper-inline hyper-proxy, but a request's task drives its upstream connection itself: the
//!                connection is not a task of its own; the request future polls it until the
//!                response head is in and the response body polls it until its end, then it
//!                goes back to an idle list unpolled (a checkout polls it once to learn
//!                whether the backend closed it)
//!   hyper-serve  hyper's server answering `200 ok` itself: no upstream at all
//!   hyper-raw    hyper's server (for HTTP/2 clients: the h2c cells) in front of a raw HTTP/1.1
//!                upstream: a request's own task writes its head to an idle connection and
//!                reads the answer with httparse into a whole-body response (Content-Length
//!                bodies only): what an HTTP/2 server pays with svc-proxy's direct upstream
//!   raw-h1       HTTP/1.1 without hyper: one task per client connection reads a request with
//!                httparse, writes it to its own upstream connection, reads the answer and
//!                writes it back (Content-Length bodies only)
//! ```
//!
//! LISTEN is `host:port`, BACKENDS `host:port,host:port,…`, THREADS the number of
//! single-threaded runtimes (each with its own `SO_REUSEPORT` listener). The argument order is
//! the shared proxy harness's (`PROXY_UNDER_TEST_CMD='… {mode} {listen} {backends} {threads}'`
//! with the mode fixed), and `scripts/ab-l7.sh` takes `floor:MODE` in place of a binary.
//!
//! These are measuring instruments, not proxies to deploy: none bounds what a client can hold,
//! and raw-h1 forwards heads verbatim (hop-by-hop headers included).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

// svc-proxy's allocator (the same file), so that the floors and svc-proxy differ only in code.
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

#[allow(unsafe_code)]
#[path = "../../svc-proxy/src/allocator.rs"]
mod allocator;

#[derive(Clone, Copy)]
enum Floor {
    HyperProxy,
    HyperInline,
    HyperServe,
    HyperRaw,
    RawH1,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, listen, backends, threads] = args.as_slice() else {
        bail!(
            "usage: l7-floor hyper-proxy|hyper-inline|hyper-serve|hyper-raw|raw-h1 LISTEN BACKENDS THREADS"
        );
    };
    let floor = match mode.as_str() {
        "hyper-proxy" => Floor::HyperProxy,
        "hyper-inline" => Floor::HyperInline,
        "hyper-serve" => Floor::HyperServe,
        "hyper-raw" => Floor::HyperRaw,
        "raw-h1" => Floor::RawH1,
        other => bail!("unknown mode {other:?}"),
    };
    let listen: SocketAddr = listen.parse().context("LISTEN")?;
    let backends = backends
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<SocketAddr>, _>>()
        .context("BACKENDS")?;
    let threads: usize = threads.parse().context("THREADS")?;
    let workers: Vec<_> = (0..threads.max(1))
        .map(|i| {
            let backends = backends.clone();
            std::thread::Builder::new()
                .name(format!("floor-{i}"))
                .spawn(move || worker(floor, listen, backends))
        })
        .collect::<Result<_, _>>()?;
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    Ok(())
}

/// One single-threaded runtime serving its own `SO_REUSEPORT` listener, with its own
/// upstream connections (as svc-proxy's workers keep theirs).
fn worker(floor: Floor, listen: SocketAddr, backends: Vec<SocketAddr>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener: TcpListener = socket.listen(1024)?;
        let upstreams = Arc::new(Upstreams::<SendRequest<Incoming>>::new(backends.clone()));
        let raw = Arc::new(Upstreams::<TcpStream>::new(backends.clone()));
        let inline = Arc::new(InlineUpstreams::new(backends));
        let server = Arc::new(server());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let upstreams = upstreams.clone();
            match floor {
                Floor::HyperProxy => {
                    let svc = service_fn(move |req| {
                        let upstreams = upstreams.clone();
                        async move { upstreams.send(req).await }
                    });
                    serve(&server, stream, svc);
                }
                Floor::HyperInline => {
                    let inline = inline.clone();
                    let svc = service_fn(move |req| {
                        let inline = inline.clone();
                        async move { inline.send(req).await }
                    });
                    serve(&server, stream, svc);
                }
                Floor::HyperServe => {
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    });
                    serve(&server, stream, svc);
                }
                Floor::HyperRaw => {
                    let raw = raw.clone();
                    let svc = service_fn(move |req| {
                        let raw = raw.clone();
                        async move { raw.send_raw(req).await }
                    });
                    serve(&server, stream, svc);
                }
                Floor::RawH1 => {
                    tokio::spawn(async move {
                        if let Err(e) = raw_h1(stream, &upstreams).await {
                            eprintln!("raw-h1 connection: {e}");
                        }
                    });
                }
            }
        }
    })
}

/// Serves one client connection on its own task.
fn serve<S, B>(server: &Arc<auto::Builder<TokioExecutor>>, stream: TcpStream, svc: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = server.clone();
    tokio::spawn(async move {
        let _ = server.serve_connection(TokioIo::new(stream), svc).await;
    });
}

/// svc-proxy's hyper server settings (`http.rs`), minus its limits.
fn server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).writev(false);
    builder
}

/// One worker's backends and their idle HTTP/1.1 connections.
struct Upstreams<C> {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    idle: Vec<Mutex<Vec<C>>>,
}

impl<C> Upstreams<C> {
    fn new(backends: Vec<SocketAddr>) -> Self {
        let idle = backends.iter().map(|_| Mutex::default()).collect();
        Self {
            backends,
            next: AtomicUsize::new(0),
            idle,
        }
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Relaxed) % self.backends.len()
    }

    fn idle(&self, i: usize) -> std::sync::MutexGuard<'_, Vec<C>> {
        self.idle[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Upstreams<SendRequest<Incoming>> {
    /// Sends `req` to the next backend on an idle connection (or a new one). The connection goes
    /// back to the idle list when the response head is in, as svc-tower's pool does; it is
    /// taken again only once hyper says it is ready for another request.
    async fn send(&self, mut req: Request<Incoming>) -> io::Result<Response<Incoming>> {
        let i = self.pick();
        let taken = {
            let mut idle = self.idle(i);
            idle.retain(|s| !s.is_closed());
            let ready = idle.iter().position(SendRequest::is_ready);
            ready.map(|at| idle.swap_remove(at))
        };
        let mut sender = match taken {
            Some(sender) => sender,
            None => connect(self.backends[i]).await?,
        };
        to_http1(&mut req);
        let resp = sender.send_request(req).await.map_err(io::Error::other)?;
        self.idle(i).push(sender);
        Ok(resp)
    }
}

impl Upstreams<TcpStream> {
    /// Sends `req` (its head only) to the next backend on an idle raw connection (or a new
    /// one) from this task, and reads the whole answer.
    async fn send_raw(&self, req: Request<Incoming>) -> io::Result<Response<Full<Bytes>>> {
        let i = self.pick();
        let taken = self.idle(i).pop();
        let mut stream = match taken {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.backends[i]).await?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(req.method().as_str().as_bytes());
        head.push(b' ');
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(authority) = req.uri().authority() {
            head.extend_from_slice(b"host: ");
            head.extend_from_slice(authority.as_str().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        for (name, value) in req.headers() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        stream.write_all(&head).await?;
        let mut buf = Vec::with_capacity(8192);
        let len = read_message(&mut stream, &mut buf, Message::Response)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed"))?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&buf[..len]) else {
            return Err(io::Error::other("unparsable response"));
        };
        let mut resp = Response::new(Full::new(Bytes::copy_from_slice(&buf[head_len..len])));
        *resp.status_mut() =
            http::StatusCode::from_u16(parsed.code.unwrap_or(502)).map_err(io::Error::other)?;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            let name =
                header::HeaderName::from_bytes(h.name.as_bytes()).map_err(io::Error::other)?;
            let value = HeaderValue::from_bytes(h.value).map_err(io::Error::other)?;
            resp.headers_mut().append(name, value);
        }
        self.idle(i).push(stream);
        Ok(resp)
    }
}

/// An HTTP/2 request names its authority in the URI; an HTTP/1.1 endpoint wants Host and the
/// origin form.
fn to_http1(req: &mut Request<Incoming>) {
    if req.version() != Version::HTTP_2 {
        return;
    }
    *req.version_mut() = Version::HTTP_11;
    if let Some(host) = req.uri().authority().map(|a| a.as_str().to_owned()) {
        if let Ok(host) = HeaderValue::from_str(&host) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let origin = req.uri().path_and_query().cloned();
    if let Some(origin) = origin {
        *req.uri_mut() = Uri::from(origin);
    }
}

type UpstreamConn = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>;

/// An upstream connection that no task drives: whoever uses it polls `conn`.
struct Inline {
    sender: SendRequest<Incoming>,
    conn: UpstreamConn,
}

impl Inline {
    /// Polls the connection; `true` once it has ended (closed by the backend, or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.conn).poll(cx).is_ready()
    }
}

/// One worker's backends and their idle, undriven HTTP/1.1 connections.
type InlineUpstreams = Upstreams<Inline>;

impl Upstreams<Inline> {
    /// An idle connection to backend `i` that is still open and ready, or a new one.
    async fn checkout(&self, i: usize) -> io::Result<Inline> {
        loop {
            let Some(mut up) = self.idle(i).pop() else {
                return connect_inline(self.backends[i]).await;
            };
            let ready = std::future::poll_fn(|cx| {
                if up.drive(cx) {
                    return Poll::Ready(false);
                }
                up.sender.poll_ready(cx).map(|r| r.is_ok())
            })
            .await;
            if ready {
                return Ok(up);
            }
        }
    }

    async fn send(self: Arc<Self>, mut req: Request<Incoming>) -> io::Result<Response<InlineBody>> {
        let i = self.pick();
        let mut up = self.checkout(i).await?;
        to_http1(&mut req);
        let mut answer = std::pin::pin!(up.sender.send_request(req));
        let resp = std::future::poll_fn(|cx| {
            let ended = up.drive(cx);
            match answer.as_mut().poll(cx) {
                Poll::Pending if ended => Poll::Ready(Err(io::Error::other("upstream closed"))),
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => Poll::Ready(r.map_err(io::Error::other)),
            }
        })
        .await?;
        Ok(resp.map(|inner| InlineBody {
            inner,
            up: Some(up),
            home: self.clone(),
            backend: i,
        }))
    }
}

/// A response body that drives its upstream connection while it is read, and gives the
/// connection back when the body has ended.
struct InlineBody {
    inner: Incoming,
    up: Option<Inline>,
    home: Arc<InlineUpstreams>,
    backend: usize,
}

impl InlineBody {
    fn give_back(&mut self) {
        if let Some(up) = self.up.take() {
            self.home.idle(self.backend).push(up);
        }
    }
}

impl hyper::body::Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        if self.up.as_mut().is_some_and(|up| up.drive(cx)) {
            self.up = None;
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.give_back();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InlineBody {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}

async fn connect_inline(addr: SocketAddr) -> io::Result<Inline> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    Ok(Inline { sender, conn })
}

async fn connect(addr: SocketAddr) -> io::Result<SendRequest<Incoming>> {
    let Inline { sender, conn } = connect_inline(addr).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One client connection of raw-h1: each request goes whole to the next backend on this
/// connection's own upstream connection to it, and its answer comes back whole. One task,
/// two buffers reused for the connection's life, no channels.
async fn raw_h1<C>(mut client: TcpStream, upstreams: &Upstreams<C>) -> io::Result<()> {
    let mut own: Vec<Option<TcpStream>> = upstreams.backends.iter().map(|_| None).collect();
    let mut request = Vec::with_capacity(8192);
    let mut response = Vec::with_capacity(8192);
    while let Some(len) = read_message(&mut client, &mut request, Message::Request).await? {
        let i = upstreams.pick();
        let upstream = match &mut own[i] {
            Some(upstream) => upstream,
            slot => {
                let stream = TcpStream::connect(upstreams.backends[i]).await?;
                stream.set_nodelay(true)?;
                slot.insert(stream)
            }
        };
        upstream.write_all(&request[..len]).await?;
        request.drain(..len);
        let len = read_message(upstream, &mut response, Message::Response)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed"))?;
        client.write_all(&response[..len]).await?;
        response.drain(..len);
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Message {
    Request,
    Response,
}

/// Reads until `buf` starts with one whole message and returns its length; `None` if the peer
/// closed before sending a byte of it.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: Message,
) -> io::Result<Option<usize>> {
    loop {
        if let Some(len) = message_len(buf, kind)? {
            if buf.len() >= len {
                return Ok(Some(len));
            }
        }
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "cut mid-message",
                )),
            };
        }
    }
}

/// The length of the message at the start of `buf` (head and Content-Length body), once its
/// head is whole.
fn message_len(buf: &[u8], kind: Message) -> io::Result<Option<usize>> {
    let invalid =
        |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (status, headers) = match kind {
        Message::Request => {
            let mut head = httparse::Request::new(&mut headers);
            (head.parse(buf).map_err(|e| invalid(&e))?, head.headers)
        }
        Message::Response => {
            let mut head = httparse::Response::new(&mut headers);
            (head.parse(buf).map_err(|e| invalid(&e))?, head.headers)
        }
    };
    let httparse::Status::Complete(head_len) = status else {
        return Ok(None);
    };
    let mut body_len = 0;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(&"raw-h1 forwards Content-Length bodies only"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid(&"bad Content-Length"))?;
        }
    }
    Ok(Some(head_len + body_len))
}
