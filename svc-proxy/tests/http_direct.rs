//! HTTP mode's HTTP/1.1 engines end to end, from the client's view: `--http1-engine direct`
//! (the proxy's own HTTP/1.1 path for plain requests, handing anything else to hyper) and
//! `--http1-engine hyper` must answer every client the same way.
//!
//! Every test runs once per engine (`direct::NAME` and `hyper::NAME`), each with a proxy of
//! its own in this process on 127.N.E.x (N per test, from 180, E = 1 for direct, 2 for
//! hyper). The endpoints are raw HTTP/1.1 servers written here, which record the bytes they
//! get and answer exactly the bytes a test wants (chunked, close-delimited, 103, `Connection:
//! close`, ...); clients are raw sockets (for exact shapes, pipelining and split writes) and
//! curl.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whether the proxy knows `--http1-engine`. Until it does, both variants run the proxy
/// without the flag (that is, on hyper), which validates the tests themselves; with `true`
/// each variant passes its engine (and a proxy without the flag fails every test loudly).
const ENGINE_FLAG: bool = true;

/// One variant of a test: the engine and the test's addresses.
#[derive(Clone, Copy)]
struct Engine {
    name: &'static str,
    /// The second octet of every address of the test.
    net: u8,
    /// The third octet: one per engine, so that both variants run in parallel.
    sub: u8,
}

impl Engine {
    fn new(name: &'static str, net: u8) -> Self {
        let sub = match name {
            "direct" => 1,
            "hyper" => 2,
            other => panic!("unknown engine {other}"),
        };
        Self { name, net, sub }
    }

    /// 127.net.sub.`host`.
    fn ip(&self, host: u8) -> String {
        format!("127.{}.{}.{host}", self.net, self.sub)
    }

    /// The Service's address, `ClusterIP:80`.
    fn vip(&self) -> String {
        format!("{}:80", self.ip(1))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.vip())
    }

    /// The proxy flags that pick this engine.
    fn flags(&self) -> Vec<&'static str> {
        if ENGINE_FLAG {
            vec!["--http1-engine", self.name]
        } else {
            Vec::new()
        }
    }
}

/// Generates `direct::$test` and `hyper::$test`, each calling `$test(Engine)` with net `$net`.
macro_rules! both_engines {
    ($($test:ident = $net:literal),* $(,)?) => {
        mod direct {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Engine::new("direct", $net)).await
                }
            )*
        }
        mod hyper {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Engine::new("hyper", $net)).await
                }
            )*
        }
    };
}

both_engines! {
    plain_requests_are_forwarded_without_hop_by_hop_headers = 180,
    a_client_connection_close_closes_after_the_response = 181,
    response_bodies_of_every_framing_arrive_whole = 182,
    bodiless_and_informational_responses_keep_the_connection_in_step = 183,
    a_backend_connection_close_keeps_the_client_connection = 184,
    a_close_delimited_response_arrives_whole_then_the_client_is_closed = 185,
    pipelined_requests_are_answered_in_order = 186,
    a_pooled_connection_the_backend_closed_is_not_used = 187,
    refusing_endpoints_give_503_upstream_connect_failed = 188,
    a_slow_endpoint_gives_504_upstream_response_timeout = 189,
    no_ready_endpoint_gives_503_no_endpoints_available = 190,
    silent_and_partial_heads_are_closed_after_the_header_read_timeout = 191,
    requests_of_one_connection_are_spread_over_endpoints = 192,
    metrics_count_requests_by_class_and_body_bytes = 193,
    requests_that_are_not_plain_are_served_the_same = 194,
    an_upgrade_and_h2c_prior_knowledge_are_served = 195,
    malformed_requests_get_400_and_never_reach_an_endpoint = 196,
    requests_and_responses_split_into_many_writes_are_reassembled = 197,
    a_response_cut_by_the_endpoint_is_never_completed_for_the_client = 198,
    odd_responses_keep_the_connection_in_step = 199,
    h2_response_framings_arrive_whole = 200,
    h2_requests_reach_the_endpoint_as_http1 = 201,
    h2_sequential_requests_share_one_upstream_connection = 202,
    h2_a_pooled_connection_the_backend_closed_is_not_used = 203,
    h2_refusing_endpoints_give_503 = 204,
    h2_no_ready_endpoint_gives_503 = 205,
    h2_slow_and_broken_endpoints_give_504_and_502 = 206,
    h2_concurrent_streams_are_all_answered_and_counted = 207,
}

// ---------------------------------------------------------------------------------------
// Buffered connection, shared by the raw backends and the raw clients.

/// A socket with a read buffer. A client's reads give up after [`DEADLINE`] (a test failure);
/// a backend's wait as long as the peer keeps the connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// Reads time out (clients).
    deadline: bool,
}

impl Conn {
    /// Reads more into the buffer; `false` at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let read = self.s.read(&mut chunk);
        let n = if self.deadline {
            match tokio::time::timeout(DEADLINE, read).await {
                Ok(r) => r,
                Err(_) => panic!(
                    "no answer within {DEADLINE:?}; so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        } else {
            read.await
        };
        match n {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The bytes through the next `\r\n\r\n` (a head); `None` at EOF before one.
    async fn head(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                return Some(self.buf.drain(..end + 4).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// One line without its `\r\n`.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..end + 2).collect();
                line.truncate(end);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Everything until EOF.
    async fn until_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// A chunked body: (data, trailer fields); `None` if it ended early or is malformed.
    async fn chunked(&mut self) -> Option<(Vec<u8>, Vec<(String, String)>)> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let line = String::from_utf8(line).ok()?;
            let size = line.split(';').next()?.trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                break;
            }
            body.extend(self.exact(size).await?);
            if self.exact(2).await? != b"\r\n" {
                return None;
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Some((body, trailers));
            }
            trailers.push(field(&String::from_utf8_lossy(&line))?);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Name: value` as (lowercase name, trimmed value).
fn field(line: &str) -> Option<(String, String)> {
    let (k, v) = line.split_once(':')?;
    Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
}

/// A head's start line and fields.
fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let start = lines.next().unwrap_or_default().to_string();
    (start, lines.filter_map(field).collect())
}

/// All values of `name` in `fields`, in order.
fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether a `Connection`-style list value names `token`.
fn lists(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

// ---------------------------------------------------------------------------------------
// Raw backends.

/// One request as an endpoint received it.
#[derive(Clone, Debug)]
struct Got {
    /// The raw head, exactly as received.
    head: String,
    target: String,
    fields: Vec<(String, String)>,
    /// The body, de-chunked if it came chunked.
    body: Vec<u8>,
    /// The upstream connection it came on (0, 1, ... in accept order).
    conn: usize,
}

impl Got {
    fn values(&self, name: &str) -> Vec<&str> {
        values(&self.fields, name)
    }

    fn has(&self, name: &str) -> bool {
        !self.values(name).is_empty()
    }
}

/// What an endpoint saw.
#[derive(Default)]
struct Log {
    requests: Vec<Got>,
    connections: usize,
    closed: usize,
}

/// A raw HTTP/1.1 endpoint whose answer depends on the request's path (see [`reply`]).
#[derive(Clone)]
struct RawBackend {
    log: Arc<Mutex<Log>>,
}

impl RawBackend {
    async fn spawn(addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let id = {
                    let mut log = l.lock().unwrap();
                    log.connections += 1;
                    log.connections - 1
                };
                tokio::spawn(serve(s, id, l.clone()));
            }
        });
        Self { log }
    }

    fn requests(&self) -> Vec<Got> {
        self.log.lock().unwrap().requests.clone()
    }

    fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }

    fn closed(&self) -> usize {
        self.log.lock().unwrap().closed
    }

    /// Waits until the endpoint has closed `n` connections, checking every millisecond (so
    /// that what follows follows the close closely).
    async fn wait_closed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.closed() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the endpoint never closed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// What an endpoint does after writing its answer.
enum After {
    KeepAlive,
    Close,
    /// Never answers; waits for the proxy to give up on the connection.
    Hang,
    /// Echoes raw bytes (after a `101`).
    Echo,
}

/// The answer: the bytes, how they are written (`pieces`: in that many writes, 5 ms apart),
/// and what follows.
struct Reply {
    bytes: Vec<u8>,
    pieces: usize,
    after: After,
}

fn reply_of(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        pieces: 1,
        after: After::KeepAlive,
    }
}

/// `n` bytes of a recognisable pattern (a position counter as text), so that a lost,
/// repeated or reordered piece shows.
fn pattern(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(format!("{i:07}|").as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// A chunked encoding of `body` in `chunk`-byte chunks, with `trailers` (raw lines).
fn chunk(body: &[u8], chunk: usize, trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// The body of `/chunked` and the trailer field it ends with.
const CHUNKED_BODY: &[u8] = b"hello chunked world, in three chunks";
const BIG: usize = 1 << 20;

/// The endpoint's answer to `req`, chosen by its path.
fn reply(req: &Got) -> Reply {
    let path = req.target.split('?').next().unwrap_or_default();
    let with_cl = |status: &str, extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    if req.values("upgrade").iter().any(|v| lists(v, "websocket")) {
        return Reply {
            bytes: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            pieces: 1,
            after: After::Echo,
        };
    }
    match path {
        // Hop-by-hop fields of every kind, and end-to-end ones around them.
        "/hop" => reply_of(
            "HTTP/1.1 200 OK\r\n\
             Connection: keep-alive, X-Resp-Hop, Upgrade\r\n\
             Keep-Alive: timeout=5, max=100\r\n\
             Proxy-Connection: keep-alive\r\n\
             Upgrade: foo/1\r\n\
             X-Resp-Hop: secret\r\n\
             Set-Cookie: a=1\r\n\
             Set-Cookie: b=2\r\n\
             X-End: kept\r\n\
             Content-Length: 3\r\n\r\nhop",
        ),
        // Hop-by-hop fields a closing, chunked answer carries (for HTTP/2 clients).
        "/hop-close" => {
            let mut out = b"HTTP/1.1 200 OK\r\n\
                Connection: close, X-Named\r\n\
                X-Named: secret\r\n\
                Keep-Alive: timeout=5, max=100\r\n\
                Transfer-Encoding: chunked\r\n\
                Set-Cookie: a=1\r\n\
                Set-Cookie: b=2\r\n\
                X-End: kept\r\n\r\n"
                .to_vec();
            out.extend(chunk(b"hop by hop", 4, ""));
            Reply {
                bytes: out,
                pieces: 1,
                after: After::Close,
            }
        }
        // Not HTTP at all.
        "/garbage" => Reply {
            bytes: b"this is not HTTP\r\n\r\n".to_vec(),
            pieces: 1,
            after: After::Close,
        },
        "/cl" => reply_of(with_cl(
            "200 OK",
            "X-Framing: length\r\n",
            b"a body with a length",
        )),
        "/chunked" => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nTrailer: X-Trailer\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            out.extend(chunk(CHUNKED_BODY, 14, "X-Trailer: t-value\r\n"));
            reply_of(out)
        }
        "/big-cl" => Reply {
            bytes: with_cl("200 OK", "", &pattern(BIG)),
            pieces: 8,
            after: After::KeepAlive,
        },
        "/big-chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            out.extend(chunk(&pattern(BIG), 10_000, ""));
            Reply {
                bytes: out,
                pieces: 8,
                after: After::KeepAlive,
            }
        }
        // Head and body in many small writes.
        "/dribble" => Reply {
            bytes: with_cl(
                "200 OK",
                "X-Dribble: yes\r\nX-Pad: 0123456789\r\n",
                &pattern(3000),
            ),
            pieces: 40,
            after: After::KeepAlive,
        },
        "/dribble-chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            out.extend(chunk(&pattern(3000), 300, "X-T: 1\r\n"));
            Reply {
                bytes: out,
                pieces: 40,
                after: After::KeepAlive,
            }
        }
        "/close-delimited" => Reply {
            bytes: [
                b"HTTP/1.1 200 OK\r\nX-Framing: close\r\n\r\n".to_vec(),
                pattern(100_000),
            ]
            .concat(),
            pieces: 10,
            after: After::Close,
        },
        "/head-cl" => reply_of("HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nX-Head: yes\r\n\r\n"),
        "/204" => reply_of("HTTP/1.1 204 No Content\r\nX-Status: 204\r\n\r\n"),
        "/304" => {
            reply_of("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n")
        }
        "/103" => reply_of(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ),
        "/backend-close" => Reply {
            bytes: with_cl("200 OK", "Connection: close\r\n", b"closed"),
            pieces: 1,
            after: After::Close,
        },
        // Claims keep-alive, then closes: the pooled connection is dead when next used.
        "/idle-close" => Reply {
            bytes: with_cl("200 OK", "", b"then closed"),
            pieces: 1,
            after: After::Close,
        },
        "/slow" => Reply {
            bytes: Vec::new(),
            pieces: 1,
            after: After::Hang,
        },
        "/404" => reply_of(with_cl("404 Not Found", "", b"not here")),
        "/500" => reply_of(with_cl("500 Internal Server Error", "", b"broken")),
        "/head-chunked" => {
            reply_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: chunked\r\n\r\n")
        }
        // A head of ~40 KB.
        "/big-head" => reply_of(with_cl(
            "200 OK",
            &format!("X-Big: {}\r\n", "b".repeat(40_000)),
            b"big head",
        )),
        // Length and chunked both: chunked wins (RFC 9112 §6.3).
        "/cl-and-te" => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            out.extend(chunk(b"length and chunked", 6, ""));
            reply_of(out)
        }
        // Bytes after the response: never a next response.
        "/extra" => reply_of(
            [
                with_cl("200 OK", "", b"hello"),
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nGARBAGE".to_vec(),
            ]
            .concat(),
        ),
        // The endpoint dies inside its body.
        "/truncated-cl" => Reply {
            bytes: [
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec(),
                pattern(50_000),
            ]
            .concat(),
            pieces: 2,
            after: After::Close,
        },
        "/truncated-chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let whole = chunk(&pattern(50_000), 10_000, "");
            // Through the third chunk's data, without the last chunk.
            out.extend_from_slice(&whole[..whole.len() - 12_000]);
            Reply {
                bytes: out,
                pieces: 2,
                after: After::Close,
            }
        }
        // Anything else: the request as received, head and body.
        _ => {
            let mut echo = req.head.clone().into_bytes();
            echo.extend_from_slice(&req.body);
            reply_of(with_cl("200 OK", "X-Echo: yes\r\n", &echo))
        }
    }
}

/// Reads one request (answering `Expect: 100-continue` first); `None` at EOF.
async fn read_request(c: &mut Conn, id: usize) -> Option<Got> {
    let head = c.head().await?;
    let (start, fields) = parse_head(&head);
    let target = start.split(' ').nth(1).unwrap_or_default().to_string();
    if values(&fields, "expect")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        c.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.ok()?;
    }
    let chunked = values(&fields, "transfer-encoding")
        .iter()
        .any(|v| lists(v, "chunked"));
    let body = if chunked {
        c.chunked().await?.0
    } else {
        let len = values(&fields, "content-length")
            .first()
            .map_or(0, |v| v.parse().unwrap());
        c.exact(len).await?
    };
    Some(Got {
        head: String::from_utf8_lossy(&head).into_owned(),
        target,
        fields,
        body,
        conn: id,
    })
}

async fn serve(s: TcpStream, id: usize, log: Arc<Mutex<Log>>) {
    let mut c = Conn {
        s,
        buf: Vec::new(),
        deadline: false,
    };
    while let Some(req) = read_request(&mut c, id).await {
        log.lock().unwrap().requests.push(req.clone());
        if req.target.starts_with("/delay") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = reply(&req);
        let size = r.bytes.len().div_ceil(r.pieces.max(1)).max(1);
        let mut failed = false;
        for (i, piece) in r.bytes.chunks(size).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if c.s.write_all(piece).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            break;
        }
        match r.after {
            After::KeepAlive => {}
            After::Close => break,
            After::Hang => {
                c.until_eof().await;
                break;
            }
            After::Echo => {
                let (mut rd, mut wr) = c.s.split();
                if !c.buf.is_empty() && wr.write_all(&c.buf).await.is_err() {
                    break;
                }
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                break;
            }
        }
    }
    let _ = c.s.shutdown().await;
    drop(c);
    log.lock().unwrap().closed += 1;
}

// ---------------------------------------------------------------------------------------
// Raw client.

/// A response as the client read it.
#[derive(Debug)]
struct Resp {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// 1xx responses before it (status and fields).
    interim: Vec<(u16, Vec<(String, String)>)>,
    /// How its body was delimited.
    framing: Framing,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Framing {
    None,
    Length,
    Chunked,
    Close,
}

impl Resp {
    fn values(&self, name: &str) -> Vec<&str> {
        values(&self.fields, name)
    }

    fn one(&self, name: &str) -> Option<&str> {
        let v = self.values(name);
        assert!(v.len() <= 1, "more than one {name}: {self:?}");
        v.first().copied()
    }

    fn has(&self, name: &str) -> bool {
        !self.values(name).is_empty()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the response tells the client that the connection closes after it.
    fn says_close(&self) -> bool {
        self.values("connection").iter().any(|v| lists(v, "close"))
    }
}

struct Client(Conn);

impl Client {
    async fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Client(Conn {
            s,
            buf: Vec::new(),
            deadline: true,
        })
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.s.write_all(bytes).await.unwrap();
    }

    /// Writes `bytes` one write per `piece` bytes, with a pause between writes so that each
    /// arrives on its own.
    async fn send_split(&mut self, bytes: &[u8], piece: usize) {
        for (i, p) in bytes.chunks(piece).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.0.s.write_all(p).await.unwrap();
        }
    }

    /// Reads the next response; `head_request`: it answers a HEAD (no body).
    async fn response(&mut self, head_request: bool) -> Resp {
        let mut interim = Vec::new();
        loop {
            let head = self.0.head().await.unwrap_or_else(|| {
                panic!(
                    "closed before a response head; got {:?}",
                    String::from_utf8_lossy(&self.0.buf)
                )
            });
            let (start, fields) = parse_head(&head);
            let mut parts = start.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_string();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a status line: {start:?}"));
            if (100..200).contains(&status) && status != 101 {
                interim.push((status, fields));
                continue;
            }
            let mut resp = Resp {
                version,
                status,
                fields,
                body: Vec::new(),
                trailers: Vec::new(),
                interim,
                framing: Framing::None,
            };
            if head_request || status == 204 || status == 304 || status == 101 {
                return resp;
            }
            let chunked = resp
                .values("transfer-encoding")
                .iter()
                .any(|v| lists(v, "chunked"));
            if chunked {
                let (body, trailers) = self.0.chunked().await.expect("a whole chunked body");
                resp.body = body;
                resp.trailers = trailers;
                resp.framing = Framing::Chunked;
            } else if let Some(len) = resp.one("content-length") {
                let len: usize = len.parse().expect("a numeric Content-Length");
                resp.body = self.0.exact(len).await.unwrap_or_else(|| {
                    panic!("closed inside a body of {len} bytes: {:?}", resp.fields)
                });
                resp.framing = Framing::Length;
            } else {
                resp.body = self.0.until_eof().await;
                resp.framing = Framing::Close;
            }
            return resp;
        }
    }

    /// GETs `path` (an echo path) and asserts that the endpoint got that request line.
    async fn echo_get(&mut self, path: &str, engine: &str) {
        let resp = self.exchange(&get(path)).await;
        assert_eq!(echoed(&resp).0, format!("GET {path} HTTP/1.1"), "{engine}");
    }

    /// Sends `request` and reads its response.
    async fn exchange(&mut self, request: &[u8]) -> Resp {
        self.send(request).await;
        self.response(request.starts_with(b"HEAD ")).await
    }

    /// Whether the proxy closed the connection (EOF or reset) with nothing more sent; panics
    /// if it stays open for [`DEADLINE`].
    async fn closed(&mut self) -> Result<(), String> {
        let rest = self.0.until_eof().await;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&rest).into_owned())
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: web.test\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: web.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The request an echo answer shows, parsed: (request line, fields, body).
fn echoed(resp: &Resp) -> (String, Vec<(String, String)>, Vec<u8>) {
    assert_eq!(resp.status, 200, "{resp:?}");
    split_echo(&resp.body)
}

/// An echo answer's body parsed: (request line, fields, body).
fn split_echo(echo: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
    let end = find(echo, b"\r\n\r\n").expect("an echoed head") + 4;
    let (start, fields) = parse_head(&echo[..end]);
    (start, fields, echo[end..].to_vec())
}

/// The hop-by-hop fields (and those `Connection` names in these tests) that must never reach
/// the other side.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "x-hop",
    "x-resp-hop",
    "http2-settings",
];

/// An endpoint got none of the hop-by-hop fields (`fields`: its request's).
fn assert_endpoint_got_no_hop_by_hop(fields: &[(String, String)], engine: &str) {
    for name in HOP {
        assert!(
            values(fields, name).is_empty(),
            "{engine}: the endpoint got `{name}`: {fields:?}"
        );
    }
}

/// A response on a kept-alive connection carries no hop-by-hop field of the endpoint's: at
/// most the proxy's own `Connection: keep-alive`, and `Transfer-Encoding` only as its own
/// chunked framing.
fn assert_no_hop_by_hop(resp: &Resp, engine: &str) {
    for name in HOP {
        for v in resp.values(name) {
            let own = match name {
                "connection" => v.eq_ignore_ascii_case("keep-alive"),
                "transfer-encoding" => v.eq_ignore_ascii_case("chunked"),
                _ => false,
            };
            assert!(own, "{engine}: the client got `{name}: {v}`: {resp:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The proxy.

/// A test's proxy, endpoints and manifests.
struct Env {
    _m: Manifests,
    proxy: Proxy,
    backends: Vec<RawBackend>,
}

/// Service `web` on 127.N.E.1:80 (`appProtocol: http`) with raw endpoints on hosts `spawn`
/// (port 8080) and `endpoints` as its EndpointSlice's endpoints (host, ready); the proxy
/// started with the engine's flags and `flags` (and `--header-read-timeout 0` unless `flags`
/// set one).
async fn setup_with(e: Engine, spawn: &[u8], endpoints: &[(u8, bool)], flags: &[&str]) -> Env {
    let mut backends = Vec::new();
    for host in spawn {
        backends.push(RawBackend::spawn(&format!("{}:8080", e.ip(*host))).await);
    }
    let m = Manifests::new(&format!("http-direct-{}-{}", e.net, e.name));
    m.write(
        "svc.yaml",
        &service(
            "web",
            &e.ip(1),
            &["{name: http, port: 80, targetPort: 8080, appProtocol: http}"],
            "",
        ),
    );
    let ips: Vec<(String, bool)> = endpoints.iter().map(|(h, r)| (e.ip(*h), *r)).collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|(a, r)| (a.as_str(), *r, "")).collect();
    m.write(
        "slice.yaml",
        &slice("web-1", "web", ("http", 8080, "TCP"), &eps),
    );
    let admin = format!("{}:9901", e.ip(1));
    let mut args = vec![
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ];
    args.extend(e.flags());
    // Without a test's own header read timeout, none: a connection the proxy closes is then
    // closed for the reason the test checks, not because it sat idle.
    if !flags.contains(&"--header-read-timeout") {
        args.extend(["--header-read-timeout", "0"]);
    }
    args.extend_from_slice(flags);
    let proxy = Proxy::start(&args).await;
    wait_listening(e.vip().parse().unwrap()).await;
    Env {
        _m: m,
        proxy,
        backends,
    }
}

/// One ready raw endpoint on host 11.
async fn setup(e: Engine, flags: &[&str]) -> Env {
    setup_with(e, &[11], &[(11, true)], flags).await
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Plain requests reach the endpoint as sent (method, target, Host, repeated fields, body)
/// minus the hop-by-hop fields, over one pooled upstream connection; the endpoint's
/// hop-by-hop response fields never reach the client, its end-to-end ones (two `Set-Cookie`
/// lines) do. A request whose `Connection` names a field has that field dropped too.
async fn plain_requests_are_forwarded_without_hop_by_hop_headers(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;

    // Plain: hop-by-hop fields that do not make a request "not plain".
    let body = b"hello world";
    let mut req = format!(
        "POST /echo/a?x=1&y=%20z HTTP/1.1\r\nHost: web.test:80\r\nConnection: keep-alive\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Custom: one\r\n\
         User-Agent: raw/1\r\nX-Custom: two\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let resp = c.exchange(&req).await;
    assert_no_hop_by_hop(&resp, e.name);
    let (line, fields, got_body) = echoed(&resp);
    assert_eq!(line, "POST /echo/a?x=1&y=%20z HTTP/1.1", "{}", e.name);
    assert_eq!(values(&fields, "host"), ["web.test:80"], "{}", e.name);
    assert_eq!(
        values(&fields, "x-custom").join(", "),
        "one, two",
        "{}: repeated fields keep their order",
        e.name
    );
    assert_eq!(values(&fields, "user-agent"), ["raw/1"]);
    assert_eq!(values(&fields, "content-length"), ["11"], "{}", e.name);
    assert_eq!(got_body, body, "{}", e.name);
    assert_endpoint_got_no_hop_by_hop(&fields, e.name);

    // A plain GET, `Connection` absent; then the endpoint's hop-by-hop response fields.
    let resp = c.exchange(&get("/echo/b")).await;
    let (line, fields, got_body) = echoed(&resp);
    assert_eq!(line, "GET /echo/b HTTP/1.1");
    assert!(got_body.is_empty());
    assert!(
        values(&fields, "content-length").iter().all(|v| *v == "0"),
        "{}: {fields:?}",
        e.name
    );
    let resp = c.exchange(&get("/hop")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "hop");
    assert_no_hop_by_hop(&resp, e.name);
    assert_eq!(resp.values("set-cookie"), ["a=1", "b=2"], "{}", e.name);
    assert_eq!(resp.values("x-end"), ["kept"], "{}", e.name);
    for _ in 0..3 {
        let resp = c.exchange(&get("/cl")).await;
        assert_eq!(resp.text(), "a body with a length");
    }
    // Six plain requests one after another: one upstream connection, kept alive.
    assert_eq!(b.requests().len(), 6);
    assert_eq!(
        b.connections(),
        1,
        "{}: sequential requests reuse the pooled connection",
        e.name
    );

    // Not plain: `Connection` names a field, and `TE` asks for trailers and a coding.
    let resp = c
        .exchange(
            b"GET /echo/c HTTP/1.1\r\nHost: web.test\r\nConnection: keep-alive, X-Hop\r\n\
              X-Hop: 1\r\nTE: trailers, deflate\r\nX-End: 2\r\n\r\n",
        )
        .await;
    assert_no_hop_by_hop(&resp, e.name);
    let (line, fields, _) = echoed(&resp);
    assert_eq!(line, "GET /echo/c HTTP/1.1");
    assert_endpoint_got_no_hop_by_hop(&fields, e.name);
    // `te: trailers` alone goes end to end (gRPC needs it); the coding does not.
    assert!(
        values(&fields, "te").iter().all(|v| *v == "trailers"),
        "{}: {fields:?}",
        e.name
    );
    assert_eq!(values(&fields, "x-end"), ["2"]);
    // And the connection still serves.
    let resp = c.exchange(&get("/cl")).await;
    assert_eq!(resp.text(), "a body with a length");
    assert_eq!(b.requests().len(), 8);
    env.proxy.stop().await.unwrap();
}

/// `Connection: close` from the client: the response comes whole, then the proxy closes the
/// client connection; the endpoint never sees `Connection`, and its upstream connection stays
/// pooled (nothing said it closes).
async fn a_client_connection_close_closes_after_the_response(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let shapes: [&[u8]; 4] = [
        b"GET /echo/1 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        b"POST /echo/2 HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
        b"GET /echo/3 HTTP/1.1\r\nHost: web\r\nconnection: CLOSE\r\n\r\n",
        b"GET /chunked HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
    ];
    for (i, req) in shapes.iter().enumerate() {
        let mut c = Client::connect(&e.vip()).await;
        let resp = c.exchange(req).await;
        assert_eq!(resp.status, 200, "{}: {resp:?}", e.name);
        if i == 3 {
            assert_eq!(resp.body, CHUNKED_BODY, "{}", e.name);
        } else {
            let (_, fields, body) = echoed(&resp);
            assert!(
                values(&fields, "connection").is_empty(),
                "{}: the endpoint got Connection: {fields:?}",
                e.name
            );
            assert_eq!(body, if i == 1 { &b"body"[..] } else { b"" });
        }
        assert_eq!(
            c.closed().await,
            Ok(()),
            "{}: the connection closes after the response to {:?}",
            e.name,
            String::from_utf8_lossy(req)
        );
    }
    // A keep-alive request, then a closing one, on one connection.
    let mut c = Client::connect(&e.vip()).await;
    let first = c.exchange(&get("/echo/4")).await;
    assert!(!first.says_close(), "{}: {first:?}", e.name);
    let second = c
        .exchange(b"GET /echo/5 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(echoed(&second).0, "GET /echo/5 HTTP/1.1");
    assert_eq!(c.closed().await, Ok(()), "{}", e.name);
    assert_eq!(b.requests().len(), 6);
    // curl agrees (it reports the connection it could not reuse).
    let out = curl_text(&[
        "-H",
        "Connection: close",
        "-w",
        "|%{http_code}|%{num_connects}",
        &e.url("/cl"),
        &e.url("/cl"),
    ])
    .await;
    assert_eq!(
        out, "a body with a length|200|1a body with a length|200|1",
        "{}: each request on a new connection",
        e.name
    );
    env.proxy.stop().await.unwrap();
}

/// Bodies delimited by length, chunked (with trailers), large (1 MiB both ways), and written
/// in many small pieces, all on one client connection: each arrives whole and the next
/// response starts where the last ended.
async fn response_bodies_of_every_framing_arrive_whole(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let resp = c.exchange(&get("/cl")).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "a body with a length")
    );
    assert_eq!(resp.values("x-framing"), ["length"]);
    let resp = c.exchange(&get("/chunked")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, CHUNKED_BODY, "{}: {resp:?}", e.name);
    // Trailers, when they are passed on, arrive intact.
    for (k, v) in &resp.trailers {
        assert_eq!(
            (k.as_str(), v.as_str()),
            ("x-trailer", "t-value"),
            "{}",
            e.name
        );
    }
    let resp = c.exchange(&get("/big-cl")).await;
    assert_eq!(resp.body.len(), BIG, "{}", e.name);
    assert!(
        resp.body == pattern(BIG),
        "{}: the 1 MiB body differs",
        e.name
    );
    let resp = c.exchange(&get("/big-chunked")).await;
    assert_eq!(resp.body.len(), BIG, "{}", e.name);
    assert!(
        resp.body == pattern(BIG),
        "{}: the 1 MiB chunked body differs",
        e.name
    );
    let resp = c.exchange(&get("/dribble")).await;
    assert_eq!(resp.values("x-dribble"), ["yes"], "{}: {resp:?}", e.name);
    assert_eq!(resp.values("x-pad"), ["0123456789"]);
    assert!(resp.body == pattern(3000), "{}: {resp:?}", e.name);
    let resp = c.exchange(&get("/dribble-chunked")).await;
    assert!(resp.body == pattern(3000), "{}: {resp:?}", e.name);
    // After all of them, the connection is in step.
    c.echo_get("/echo/last", e.name).await;
    assert_eq!(env.backends[0].requests().len(), 7);

    // A client that says it takes trailers gets them.
    let resp = c
        .exchange(b"GET /chunked HTTP/1.1\r\nHost: web\r\nTE: trailers\r\n\r\n")
        .await;
    assert_eq!(resp.body, CHUNKED_BODY, "{}", e.name);
    assert_eq!(resp.framing, Framing::Chunked, "{}: {resp:?}", e.name);
    assert_eq!(
        values(&resp.trailers, "x-trailer"),
        ["t-value"],
        "{}: {resp:?}",
        e.name
    );
    env.proxy.stop().await.unwrap();
}

/// HEAD with a `Content-Length`, 204, 304 with a `Content-Length`, and a 103 before a 200:
/// no body where there is none, the final response after the 103, and the connection stays in
/// step (the next request's answer is its own).
async fn bodiless_and_informational_responses_keep_the_connection_in_step(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;

    let resp = c
        .exchange(b"HEAD /head-cl HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200, "{}: {resp:?}", e.name);
    assert_eq!(resp.values("x-head"), ["yes"]);
    assert_eq!(
        resp.one("content-length"),
        Some("12345"),
        "{}: a HEAD response keeps its length: {resp:?}",
        e.name
    );
    c.echo_get("/echo/after-head", e.name).await;

    let resp = c.exchange(&get("/204")).await;
    assert_eq!(resp.status, 204, "{}: {resp:?}", e.name);
    assert_eq!(resp.values("x-status"), ["204"]);
    assert!(!resp.has("transfer-encoding"), "{}: {resp:?}", e.name);
    c.echo_get("/echo/after-204", e.name).await;

    let resp = c
        .exchange(b"GET /304 HTTP/1.1\r\nHost: web\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    assert_eq!(resp.status, 304, "{}: {resp:?}", e.name);
    assert_eq!(resp.values("etag"), ["\"v1\""]);
    assert!(!resp.has("transfer-encoding"), "{}: {resp:?}", e.name);
    c.echo_get("/echo/after-304", e.name).await;

    let resp = c.exchange(&get("/103")).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "final"),
        "{}: {resp:?}",
        e.name
    );
    // A 103 passed on is passed on intact.
    for (status, fields) in &resp.interim {
        assert_eq!(*status, 103, "{}: {resp:?}", e.name);
        assert_eq!(
            values(fields, "link"),
            ["</style.css>; rel=preload"],
            "{}",
            e.name
        );
    }
    c.echo_get("/echo/after-103", e.name).await;
    assert_eq!(env.backends[0].requests().len(), 8);
    env.proxy.stop().await.unwrap();
}

/// An endpoint's `Connection: close` ends the upstream connection only: the client is not
/// told to close and its connection serves the next request (on a new upstream connection).
async fn a_backend_connection_close_keeps_the_client_connection(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;
    for i in 0..3 {
        let resp = c.exchange(&get("/backend-close")).await;
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "closed"),
            "{}",
            e.name
        );
        assert!(
            !resp.says_close(),
            "{}: the endpoint's close reached the client: {resp:?}",
            e.name
        );
        let resp = c.exchange(&get(&format!("/echo/{i}"))).await;
        assert_eq!(
            echoed(&resp).0,
            format!("GET /echo/{i} HTTP/1.1"),
            "{}",
            e.name
        );
    }
    assert_eq!(b.requests().len(), 6);
    // Each closing answer ended its upstream connection: the next request needed a new one.
    let conns: Vec<usize> = b.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns.iter().collect::<std::collections::HashSet<_>>().len(),
        4,
        "{}: {conns:?}",
        e.name
    );
    // curl reuses its connection across such answers.
    let out = curl_text(&[
        "-w",
        "|%{num_connects}\n",
        &e.url("/backend-close"),
        &e.url("/cl"),
        &e.url("/backend-close"),
    ])
    .await;
    assert_eq!(
        out, "closed|1\na body with a length|0\nclosed|0\n",
        "{}",
        e.name
    );
    env.proxy.stop().await.unwrap();
}

/// An endpoint answers with no length and closes: the client gets the whole body. Either the
/// proxy delimits it the same way (and then closes the client connection), or it re-frames it
/// (chunked) and the client connection serves the next request. A new connection is served
/// normally.
async fn a_close_delimited_response_arrives_whole_then_the_client_is_closed(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;
    let first = c.exchange(&get("/cl")).await;
    assert_eq!(first.status, 200);
    let resp = c.exchange(&get("/close-delimited")).await;
    assert_eq!(resp.status, 200, "{}: {resp:?}", e.name);
    assert_eq!(resp.values("x-framing"), ["close"]);
    assert_eq!(
        resp.body.len(),
        100_000,
        "{}: framing {:?}",
        e.name,
        resp.framing
    );
    assert!(
        resp.body == pattern(100_000),
        "{}: the body differs",
        e.name
    );
    let framing = resp.framing;
    match framing {
        // `until_eof` read it: the connection has closed.
        Framing::Close => assert!(resp.says_close(), "{}: {resp:?}", e.name),
        Framing::Chunked => {
            assert!(!resp.says_close(), "{}: {resp:?}", e.name);
            c.echo_get("/echo/same", e.name).await;
        }
        other => panic!(
            "{}: a close-delimited body came {other:?}: {resp:?}",
            e.name
        ),
    }
    let mut c = Client::connect(&e.vip()).await;
    c.echo_get("/echo/next", e.name).await;
    assert_eq!(
        b.requests().len(),
        3 + usize::from(framing == Framing::Chunked)
    );
    env.proxy.stop().await.unwrap();
}

/// Requests written together in one write are answered in order, each with its own
/// response: plain ones, then a chunked one (not plain) between plain ones, with a closing
/// one last.
async fn pipelined_requests_are_answered_in_order(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;
    let mut all = Vec::new();
    all.extend(get("/echo/p1"));
    all.extend(post("/echo/p2", b"second body"));
    all.extend_from_slice(b"HEAD /head-cl HTTP/1.1\r\nHost: web.test\r\n\r\n");
    all.extend(get("/chunked"));
    all.extend(get("/204"));
    all.extend(get("/echo/p6"));
    c.send(&all).await;
    let r1 = c.response(false).await;
    assert_eq!(echoed(&r1).0, "GET /echo/p1 HTTP/1.1", "{}", e.name);
    let r2 = c.response(false).await;
    let (line, _, body) = echoed(&r2);
    assert_eq!(line, "POST /echo/p2 HTTP/1.1", "{}", e.name);
    assert_eq!(body, b"second body");
    let r3 = c.response(true).await;
    assert_eq!(
        r3.one("content-length"),
        Some("12345"),
        "{}: {r3:?}",
        e.name
    );
    let r4 = c.response(false).await;
    assert_eq!(r4.body, CHUNKED_BODY, "{}", e.name);
    let r5 = c.response(false).await;
    assert_eq!(r5.status, 204, "{}", e.name);
    let r6 = c.response(false).await;
    assert_eq!(echoed(&r6).0, "GET /echo/p6 HTTP/1.1", "{}", e.name);
    let order: Vec<String> = b.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        order,
        ["/echo/p1", "/echo/p2", "/head-cl", "/chunked", "/204", "/echo/p6"],
        "{}",
        e.name
    );

    // A chunked request (not plain) between plain ones, and a closing one last.
    let mut all = Vec::new();
    all.extend(get("/echo/q1"));
    all.extend_from_slice(
        b"POST /echo/q2 HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7\r\n chunks\r\n0\r\n\r\n",
    );
    all.extend(post("/echo/q3", b"third"));
    all.extend_from_slice(b"GET /echo/q4 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n");
    let mut c = Client::connect(&e.vip()).await;
    c.send(&all).await;
    let r1 = c.response(false).await;
    assert_eq!(echoed(&r1).0, "GET /echo/q1 HTTP/1.1", "{}", e.name);
    let r2 = c.response(false).await;
    let (line, fields, body) = echoed(&r2);
    assert_eq!(line, "POST /echo/q2 HTTP/1.1", "{}", e.name);
    assert_eq!(body, b"hello chunks", "{}: {fields:?}", e.name);
    let r3 = c.response(false).await;
    let (line, _, body) = echoed(&r3);
    assert_eq!(line, "POST /echo/q3 HTTP/1.1", "{}", e.name);
    assert_eq!(body, b"third");
    let r4 = c.response(false).await;
    assert_eq!(echoed(&r4).0, "GET /echo/q4 HTTP/1.1", "{}", e.name);
    assert_eq!(c.closed().await, Ok(()), "{}", e.name);
    assert_eq!(b.requests().len(), 10);
    env.proxy.stop().await.unwrap();
}

/// An endpoint that closes its kept-alive connection after answering (without saying so):
/// each next request, sent once the endpoint has closed, succeeds on its first try.
async fn a_pooled_connection_the_backend_closed_is_not_used(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;
    for i in 0..8 {
        let resp = c
            .exchange(format!("GET /idle-close?{i} HTTP/1.1\r\nHost: web\r\n\r\n").as_bytes())
            .await;
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "then closed"),
            "{}: request {i} on its first try: {resp:?}",
            e.name
        );
        // The endpoint has closed the connection the proxy pooled.
        // (Checked every millisecond, so that the next request follows the close closely.)
        b.wait_closed(i + 1).await;
    }
    // A plain GET and a POST with a body after the last close, too.
    let resp = c.exchange(&post("/echo/post", b"payload")).await;
    assert_eq!(echoed(&resp).2, b"payload", "{}", e.name);
    assert_eq!(b.requests().len(), 9);
    assert_eq!(b.connections(), 9, "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// Waits until the Service's `svc_proxy_http_requests_total` for status class `code` is `n`;
/// panics with the last value after [`DEADLINE`].
async fn assert_requests_counted(proxy: &Proxy, code: &str, n: f64, engine: &str) {
    let sample = format!(
        r#"svc_proxy_http_requests_total{{service="test/web",port="80",protocol="TCP",code="{code}"}}"#
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, metrics) = proxy.admin("/metrics").await;
        let got = metric(&metrics, &sample);
        if got == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{engine}: {sample} is {got:?}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the exact error answer a proxy makes up.
fn assert_error(resp: &Resp, status: u16, body: &str, engine: &str) {
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (status, body),
        "{engine}: {resp:?}"
    );
    assert_eq!(resp.values("content-type"), ["text/plain"], "{engine}");
    assert_eq!(resp.version, "HTTP/1.1", "{engine}");
}

/// Endpoints that refuse connections: 503 `upstream connect failed`, and the client's
/// connection stays usable.
async fn refusing_endpoints_give_503_upstream_connect_failed(e: Engine) {
    // Nothing listens on hosts 21 and 22.
    let env = setup_with(e, &[], &[(21, true), (22, true)], &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let resp = c.exchange(&get("/")).await;
    assert_error(&resp, 503, "upstream connect failed\n", e.name);
    let resp = c.exchange(&post("/", b"with a body")).await;
    assert_error(&resp, 503, "upstream connect failed\n", e.name);
    assert_eq!(
        curl_status(&e.url("/"), &["--max-time", "20"]).await,
        503,
        "{}",
        e.name
    );
    assert_requests_counted(&env.proxy, "5xx", 3.0, e.name).await;
    env.proxy.stop().await.unwrap();
}

/// An endpoint that does not answer within `--upstream-response-timeout`: 504 `upstream
/// response timeout`; the client's connection serves the next request.
async fn a_slow_endpoint_gives_504_upstream_response_timeout(e: Engine) {
    let env = setup(e, &["--upstream-response-timeout", "1s"]).await;
    let b = &env.backends[0];
    let mut c = Client::connect(&e.vip()).await;
    let resp = c.exchange(&get("/slow")).await;
    assert_error(&resp, 504, "upstream response timeout\n", e.name);
    let resp = c.exchange(&post("/slow", b"body")).await;
    assert_error(&resp, 504, "upstream response timeout\n", e.name);
    c.echo_get("/echo/after", e.name).await;
    assert_eq!(b.requests().len(), 3);
    assert_requests_counted(&env.proxy, "5xx", 2.0, e.name).await;
    assert_requests_counted(&env.proxy, "2xx", 1.0, e.name).await;
    // The abandoned upstream connections are closed.
    eventually("the timed-out upstream connections are closed", || async {
        (b.closed() >= 2).then_some(())
    })
    .await;
    env.proxy.stop().await.unwrap();
}

/// No ready endpoint: 503 `no endpoints available`, on a connection that stays usable.
async fn no_ready_endpoint_gives_503_no_endpoints_available(e: Engine) {
    let env = setup_with(e, &[11], &[(11, false)], &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    for _ in 0..2 {
        let resp = c.exchange(&get("/")).await;
        assert_error(&resp, 503, "no endpoints available\n", e.name);
    }
    assert!(env.backends[0].requests().is_empty());
    assert_requests_counted(&env.proxy, "5xx", 2.0, e.name).await;
    env.proxy.stop().await.unwrap();
}

/// `--header-read-timeout`: a connection that sends nothing, part of a head, or nothing
/// after a first request (keep-alive) is closed; none of the partial requests reaches the
/// endpoint.
async fn silent_and_partial_heads_are_closed_after_the_header_read_timeout(e: Engine) {
    let env = setup(e, &["--header-read-timeout", "1s"]).await;
    let partial: [&[u8]; 4] = [
        b"",
        b"GET /echo/partial HTTP/1.1\r\nHost: web\r\n",
        b"GET /echo/partial HTTP/1.1\r\nHost: web\r\nX-Long: ",
        b"GE",
    ];
    for sent in partial {
        let mut c = Client::connect(&e.vip()).await;
        c.send(sent).await;
        let closed = c.closed().await;
        assert!(
            closed.is_ok()
                || closed
                    .as_ref()
                    .is_err_and(|r| r.starts_with("HTTP/1.1 408")),
            "{}: after {:?}: {closed:?}",
            e.name,
            String::from_utf8_lossy(sent)
        );
    }
    // After a first request, nothing; and after a first request, part of a second.
    for second in [&b""[..], b"GET /echo/second HTTP/1.1\r\nHo"] {
        let mut c = Client::connect(&e.vip()).await;
        c.echo_get("/echo/first", e.name).await;
        c.send(second).await;
        let closed = c.closed().await;
        assert!(
            closed.is_ok()
                || closed
                    .as_ref()
                    .is_err_and(|r| r.starts_with("HTTP/1.1 408")),
            "{}: after a request and {:?}: {closed:?}",
            e.name,
            String::from_utf8_lossy(second)
        );
    }
    let targets: Vec<String> = env.backends[0]
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/echo/first", "/echo/first"], "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// One keep-alive client connection doing one request at a time (curl with 40 URLs) reaches
/// both endpoints.
async fn requests_of_one_connection_are_spread_over_endpoints(e: Engine) {
    let env = setup_with(e, &[11, 12], &[(11, true), (12, true)], &[]).await;
    let urls: Vec<String> = (0..40).map(|i| e.url(&format!("/echo/{i}"))).collect();
    let mut args = vec!["-s", "--max-time", "20", "-w", "|%{num_connects}\n"];
    args.extend(urls.iter().map(String::as_str));
    let out = run("curl", &args).await;
    assert!(out.status.success(), "{}: curl failed", e.name);
    let text = String::from_utf8_lossy(&out.stdout);
    let connects: usize = text
        .lines()
        .filter_map(|l| l.rsplit_once('|'))
        .map(|(_, n)| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(connects, 1, "{}: one client connection", e.name);
    let (a, b) = (
        env.backends[0].requests().len(),
        env.backends[1].requests().len(),
    );
    assert_eq!(a + b, 40, "{}", e.name);
    assert!(
        a > 0 && b > 0,
        "{}: both endpoints get requests ({a} and {b})",
        e.name
    );
    env.proxy.stop().await.unwrap();
}

/// The Service's metrics count the client connections, the requests by status class and their
/// body bytes (request bodies `rx`, response bodies' data `tx`, as the client decodes them).
async fn metrics_count_requests_by_class_and_body_bytes(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let mut tx = 0;
    let mut rx = 0;
    // 2xx: a GET, a POST with a body, a chunked response, via the raw client.
    let r = c.exchange(&get("/cl")).await;
    tx += r.body.len();
    let body = pattern(5000);
    rx += body.len();
    let r = c.exchange(&post("/echo/m", &body)).await;
    assert_eq!(echoed(&r).2, body);
    tx += r.body.len();
    let r = c.exchange(&get("/chunked")).await;
    tx += r.body.len();
    // 4xx and 5xx from the endpoint.
    let r = c.exchange(&get("/404")).await;
    assert_eq!(r.status, 404);
    tx += r.body.len();
    let r = c.exchange(&get("/500")).await;
    assert_eq!(r.status, 500);
    tx += r.body.len();
    // And curl: one more 2xx with a body of 3 bytes each way.
    let out = curl_text(&["--data-binary", "xyz", &e.url("/hop")]).await;
    assert_eq!(out, "hop");
    rx += 3;
    tx += 3;
    assert_eq!(env.backends[0].requests().len(), 6);

    let counted = |metrics: &str, name: &str, label: &str| {
        let labels = format!(r#"service="test/web",port="80",protocol="TCP"{label}"#);
        metric(metrics, &format!("svc_proxy_{name}{{{labels}}}"))
    };
    // Client connections: `setup`'s probe, the raw client's and curl's.
    let want = [
        ("connections_total", "", 3.0),
        ("http_requests_total", r#",code="2xx""#, 4.0),
        ("http_requests_total", r#",code="4xx""#, 1.0),
        ("http_requests_total", r#",code="5xx""#, 1.0),
        ("bytes_total", r#",direction="rx""#, rx as f64),
        ("bytes_total", r#",direction="tx""#, tx as f64),
    ];
    // Bodies are counted when they are done with: wait for the counts to settle.
    let proxy = &env.proxy;
    let wanted: Vec<Option<f64>> = want.iter().map(|w| Some(w.2)).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, metrics) = proxy.admin("/metrics").await;
        let got: Vec<Option<f64>> = want
            .iter()
            .map(|(name, label, _)| counted(&metrics, name, label))
            .collect();
        if got == wanted {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{}: {want:?}\ngot {got:?}\n{metrics}", e.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.proxy.stop().await.unwrap();
}

/// Requests that are not plain (handed to hyper by the direct engine) are served the same:
/// a chunked request body, a body over 64 KiB, `Expect: 100-continue`, HTTP/1.0, an
/// absolute-form target, a `Connection` naming a field; and a plain request on the same
/// connection after each.
async fn requests_that_are_not_plain_are_served_the_same(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];

    // Chunked request body, then a plain request on the same connection.
    let mut c = Client::connect(&e.vip()).await;
    let mut req =
        b"POST /echo/chunked HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let body = pattern(20_000);
    req.extend(chunk(&body, 3000, ""));
    let resp = c.exchange(&req).await;
    let (line, fields, got) = echoed(&resp);
    assert_eq!(line, "POST /echo/chunked HTTP/1.1");
    assert!(
        got == body,
        "{}: the chunked body differs: {fields:?}",
        e.name
    );
    let resp = c.exchange(&post("/echo/plain-after", b"x")).await;
    assert_eq!(echoed(&resp).2, b"x", "{}", e.name);

    // A body larger than any buffer (300 KiB, with a length), then a plain one.
    let big = pattern(300 * 1024);
    let resp = c.exchange(&post("/echo/big", &big)).await;
    let (_, fields, got) = echoed(&resp);
    assert_eq!(values(&fields, "content-length"), [big.len().to_string()]);
    assert!(got == big, "{}: the 300 KiB body differs", e.name);
    // ... just over 64 KiB, and just under.
    for n in [64 * 1024 + 1, 60 * 1024] {
        let body = pattern(n);
        let resp = c.exchange(&post("/echo/edge", &body)).await;
        assert!(
            echoed(&resp).2 == body,
            "{}: a body of {n} bytes differs",
            e.name
        );
    }
    c.echo_get("/echo/plain-after-big", e.name).await;

    // Expect: 100-continue: the endpoint's 100 comes through, then the body goes up.
    c.send(b"POST /echo/expect HTTP/1.1\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    let head = c.0.head().await.expect("an answer to Expect");
    assert!(
        head.starts_with(b"HTTP/1.1 100"),
        "{}: {}",
        e.name,
        String::from_utf8_lossy(&head)
    );
    c.send(b"hello").await;
    let resp = c.response(false).await;
    assert_eq!(echoed(&resp).2, b"hello", "{}", e.name);
    // curl too (it waits for the 100).
    let text = curl_text(&[
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "curl body",
        &e.url("/echo/curl-expect"),
    ])
    .await;
    assert!(text.ends_with("\r\n\r\ncurl body"), "{}: {text}", e.name);

    // Absolute form: the authority wins over Host, the endpoint gets origin form.
    let resp = c
        .exchange(b"GET http://right.example:8000/abs?q=1 HTTP/1.1\r\nHost: wrong.example\r\n\r\n")
        .await;
    let (line, fields, _) = echoed(&resp);
    assert_eq!(line, "GET /abs?q=1 HTTP/1.1", "{}", e.name);
    assert_eq!(
        values(&fields, "host"),
        ["right.example:8000"],
        "{}",
        e.name
    );
    c.echo_get("/echo/plain-after-abs", e.name).await;

    // HTTP/1.0 (closes after its response) and HTTP/1.0 keep-alive.
    let mut c10 = Client::connect(&e.vip()).await;
    let resp = c10
        .exchange(b"GET /echo/10 HTTP/1.0\r\nHost: web.test\r\n\r\n")
        .await;
    assert_eq!(resp.version, "HTTP/1.0", "{}: {resp:?}", e.name);
    let (line, fields, _) = echoed(&resp);
    assert_eq!(line, "GET /echo/10 HTTP/1.1", "{}", e.name);
    assert_eq!(values(&fields, "host"), ["web.test"]);
    assert_eq!(c10.closed().await, Ok(()), "{}", e.name);
    let mut c10 = Client::connect(&e.vip()).await;
    for i in 0..2 {
        let resp = c10
            .exchange(
                format!(
                    "GET /echo/ka{i} HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(resp.version, "HTTP/1.0", "{}: {resp:?}", e.name);
        let (line, fields, _) = echoed(&resp);
        assert_eq!(line, format!("GET /echo/ka{i} HTTP/1.1"));
        assert!(
            values(&fields, "connection").is_empty(),
            "{}: {fields:?}",
            e.name
        );
    }

    // Content-Length: 0 with a POST, a request with a body and no body framing (GET).
    let resp = c.exchange(&post("/echo/empty", b"")).await;
    let (line, fields, got) = echoed(&resp);
    assert_eq!(line, "POST /echo/empty HTTP/1.1");
    assert!(got.is_empty());
    assert!(
        values(&fields, "content-length").iter().all(|v| *v == "0"),
        "{fields:?}"
    );
    let targets: Vec<String> = b.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets.len(), 14, "{}: {targets:?}", e.name);
    for r in b.requests() {
        for name in HOP {
            // `transfer-encoding: chunked` is the upstream hop's own framing.
            assert!(
                r.values(name)
                    .iter()
                    .all(|v| name == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")),
                "{}: the endpoint got `{name}` with {}: {:?}",
                e.name,
                r.target,
                r.head
            );
        }
        assert!(!r.has("expect") || r.target == "/echo/expect" || r.target == "/echo/curl-expect");
    }
    env.proxy.stop().await.unwrap();
}

/// A WebSocket-style upgrade (`101`, then bytes both ways) and HTTP/2 with prior knowledge
/// (curl) on the HTTP/1.1 port.
async fn an_upgrade_and_h2c_prior_knowledge_are_served(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let resp = c
        .exchange(
            b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await;
    assert_eq!(resp.status, 101, "{}: {resp:?}", e.name);
    assert!(
        resp.values("upgrade").iter().any(|v| lists(v, "websocket")),
        "{}: {resp:?}",
        e.name
    );
    for msg in [&b"ping"[..], b"and more bytes"] {
        c.send(msg).await;
        let echo = c.0.exact(msg.len()).await.expect("the echo");
        assert_eq!(echo, msg, "{}", e.name);
    }
    drop(c);
    let up = &env.backends[0].requests()[0];
    assert!(
        up.values("connection").iter().any(|v| lists(v, "upgrade")),
        "{}: {}",
        e.name,
        up.head
    );

    let text = curl_text(&[
        "--http2-prior-knowledge",
        "-w",
        "|%{http_version}",
        &e.url("/echo/h2"),
    ])
    .await;
    assert!(
        text.starts_with("GET /echo/h2 HTTP/1.1\r\n") && text.ends_with("|2"),
        "{}: {text}",
        e.name
    );
    // The plain path still serves on a new connection.
    let mut c = Client::connect(&e.vip()).await;
    c.echo_get("/echo/after", e.name).await;
    env.proxy.stop().await.unwrap();
}

/// Requests the proxy must refuse: two `Host`s, an invalid, a negative or a conflicting
/// `Content-Length`, a bad request line: 400, and nothing reaches the endpoint. (An HTTP/1.1
/// request without `Host` is not refused: the endpoint gets the Service's name.)
async fn malformed_requests_get_400_and_never_reach_an_endpoint(e: Engine) {
    let env = setup(e, &[]).await;
    let bad: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: web\r\nHost: evil.example\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5x\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: -1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: web\r\n\r\n",
    ];
    for req in bad {
        let mut c = Client::connect(&e.vip()).await;
        let resp = c.exchange(req).await;
        assert_eq!(
            resp.status,
            400,
            "{}: {:?} got {resp:?}",
            e.name,
            String::from_utf8_lossy(req)
        );
    }
    assert!(
        env.backends[0].requests().is_empty(),
        "{}: {:?}",
        e.name,
        env.backends[0].requests()
    );
    // And it still serves; a request without Host gets the Service's name.
    let mut c = Client::connect(&e.vip()).await;
    c.echo_get("/echo/ok", e.name).await;
    let resp = c.exchange(b"GET /echo/no-host HTTP/1.1\r\n\r\n").await;
    let (line, fields, _) = echoed(&resp);
    assert_eq!(line, "GET /echo/no-host HTTP/1.1");
    assert_eq!(values(&fields, "host"), ["web.test"], "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// A request written a few bytes at a time (head and body), and responses the endpoint
/// writes in many pieces: each is put back together.
async fn requests_and_responses_split_into_many_writes_are_reassembled(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let req = post("/echo/split", b"a body sent in pieces");
    for piece in [1, 7] {
        c.send_split(&req, piece).await;
        let resp = c.response(false).await;
        let (line, fields, body) = echoed(&resp);
        assert_eq!(line, "POST /echo/split HTTP/1.1", "{}", e.name);
        assert_eq!(values(&fields, "host"), ["web.test"]);
        assert_eq!(body, b"a body sent in pieces", "{}", e.name);
    }
    // The head's end (`\r\n\r\n`) split across writes, and the next request glued to a body.
    let mut two = post("/echo/glued1", b"first");
    two.extend(get("/echo/glued2"));
    let cut = find(&two, b"\r\n\r\n").unwrap() + 2;
    c.send(&two[..cut]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(&two[cut..]).await;
    let r1 = c.response(false).await;
    assert_eq!(echoed(&r1).2, b"first", "{}", e.name);
    let r2 = c.response(false).await;
    assert_eq!(echoed(&r2).0, "GET /echo/glued2 HTTP/1.1", "{}", e.name);
    let resp = c.exchange(&get("/dribble")).await;
    assert!(resp.body == pattern(3000), "{}: {resp:?}", e.name);
    assert_eq!(env.backends[0].requests().len(), 5);
    env.proxy.stop().await.unwrap();
}

/// The endpoint closes inside a response body (with a length, and chunked): the client gets
/// the head and part of the body, then its connection is closed, never the rest of a
/// complete-looking message (no last chunk). A new connection is served.
async fn a_response_cut_by_the_endpoint_is_never_completed_for_the_client(e: Engine) {
    let env = setup(e, &[]).await;
    for path in ["/truncated-cl", "/truncated-chunked"] {
        let mut c = Client::connect(&e.vip()).await;
        c.send(&get(path)).await;
        let head = c.0.head().await;
        let rest = c.0.until_eof().await;
        let got = String::from_utf8_lossy(head.as_deref().unwrap_or_default()).into_owned();
        if let Some(head) = &head {
            assert!(head.starts_with(b"HTTP/1.1 200"), "{}: {got}", e.name);
        }
        match path {
            "/truncated-cl" => assert!(
                rest.len() < 100_000,
                "{}: {path}: all of the length arrived: {got}",
                e.name
            ),
            _ => assert!(
                !rest.ends_with(b"0\r\n\r\n"),
                "{}: {path}: the cut chunked body was completed: {got}",
                e.name
            ),
        }
    }
    let mut c = Client::connect(&e.vip()).await;
    c.echo_get("/echo/after", e.name).await;
    env.proxy.stop().await.unwrap();
}

/// Responses and requests of unusual shapes on one connection: a HEAD answered with
/// `Transfer-Encoding: chunked` (and no body), a ~40 KB head, `Content-Length` with chunked,
/// bytes after a response, an asterisk-form `OPTIONS`, requests pipelined behind slow
/// answers; each request gets its own answer, in order.
async fn odd_responses_keep_the_connection_in_step(e: Engine) {
    let env = setup(e, &[]).await;
    let mut c = Client::connect(&e.vip()).await;
    let resp = c
        .exchange(b"HEAD /head-chunked HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    assert_eq!(resp.status, 200, "{}: {resp:?}", e.name);
    assert_eq!(resp.values("x-head"), ["chunked"]);
    c.echo_get("/echo/after-head", e.name).await;

    let resp = c.exchange(&get("/big-head")).await;
    assert_eq!(
        resp.status,
        200,
        "{}: {:?}",
        e.name,
        (resp.status, resp.text())
    );
    assert_eq!(resp.one("x-big").map(str::len), Some(40_000), "{}", e.name);
    assert_eq!(resp.text(), "big head");

    // Length and chunked both (a smuggling shape): whatever the client gets, the connection
    // stays in step.
    let resp = c.exchange(&get("/cl-and-te")).await;
    assert!(
        resp.status == 502 || resp.status == 200,
        "{}: {resp:?}",
        e.name
    );
    c.echo_get("/echo/after-cl-te", e.name).await;

    // Bytes after a response are not the next response.
    let resp = c.exchange(&get("/extra")).await;
    assert_eq!(resp.text(), "hello", "{}", e.name);
    c.echo_get("/echo/after-extra", e.name).await;

    // Asterisk form (not origin form) reaches the endpoint as is.
    let resp = c.exchange(b"OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n").await;
    assert_eq!(echoed(&resp).0, "OPTIONS * HTTP/1.1", "{}", e.name);

    // Pipelined behind a slow answer: still in order.
    let mut all = get("/delay/1");
    all.extend(get("/cl"));
    all.extend(get("/delay/2"));
    all.extend(get("/chunked"));
    c.send(&all).await;
    assert_eq!(echoed(&c.response(false).await).0, "GET /delay/1 HTTP/1.1");
    assert_eq!(c.response(false).await.text(), "a body with a length");
    assert_eq!(echoed(&c.response(false).await).0, "GET /delay/2 HTTP/1.1");
    assert_eq!(c.response(false).await.body, CHUNKED_BODY, "{}", e.name);
    assert_eq!(env.backends[0].requests().len(), 12);
    env.proxy.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// HTTP/2 clients (prior knowledge) on the `http` port. With the direct engine, a stream
// without a request body is relayed over the engine's own upstream HTTP/1.1 connections
// (`relay.rs`); a stream with one goes through hyper's HTTP/1.1 client. With hyper, every
// stream goes through hyper's client.

/// An HTTP/2 client connection (hyper's client; every request's `:authority` is `web.test`).
#[derive(Clone)]
struct H2(::hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>);

/// An HTTP/2 response as the client read it.
#[derive(Debug)]
struct H2Resp {
    /// 0 when no response came (the stream failed first).
    status: u16,
    fields: Vec<(String, String)>,
    /// `Err` when the stream failed.
    body: Result<Vec<u8>, String>,
}

impl H2Resp {
    fn values(&self, name: &str) -> Vec<&str> {
        values(&self.fields, name)
    }

    /// The whole body; panics if the stream failed.
    fn bytes(&self) -> &[u8] {
        match &self.body {
            Ok(body) => body,
            Err(e) => panic!("the stream failed: {e}: {:?}", self.fields),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

impl H2 {
    async fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (send, conn) = ::hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        H2(send)
    }

    /// One request on this connection (`body` empty: the HEADERS frame ends the stream).
    async fn send(&self, method: &str, path: &str, fields: &[(&str, &str)], body: &[u8]) -> H2Resp {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://web.test{path}"));
        for (k, v) in fields {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .unwrap();
        let mut send = self.0.clone();
        let exchange = async move {
            let failed = |e: String| H2Resp {
                status: 0,
                fields: Vec::new(),
                body: Err(e),
            };
            if let Err(e) = send.ready().await {
                return failed(format!("not ready: {e:?}"));
            }
            let resp = match send.send_request(req).await {
                Ok(resp) => resp,
                Err(e) => return failed(format!("no response: {e:?}")),
            };
            let status = resp.status().as_u16();
            let fields = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|c| c.to_bytes().to_vec())
                .map_err(|e| format!("{e:?}"));
            H2Resp {
                status,
                fields,
                body,
            }
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| panic!("no HTTP/2 answer to {method} {path} within {DEADLINE:?}"))
    }

    async fn get(&self, path: &str) -> H2Resp {
        self.send("GET", path, &[], b"").await
    }
}

/// `curl -s --max-time 10 ARGS`: what it wrote to stdout.
async fn curl_text(args: &[&str]) -> String {
    let mut all = vec!["-s", "--max-time", "10"];
    all.extend_from_slice(args);
    let out = run("curl", &all).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`curl_text`] with `--http2-prior-knowledge`.
async fn curl_h2(args: &[&str]) -> String {
    let mut all = vec!["--http2-prior-knowledge"];
    all.extend_from_slice(args);
    curl_text(&all).await
}

/// The hop-by-hop fields of the endpoints' answers here; an HTTP/2 response has none.
const H2_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "x-resp-hop",
    "x-named",
];

fn assert_h2_no_hop_by_hop(resp: &H2Resp, engine: &str) {
    for name in H2_HOP {
        assert!(
            resp.values(name).is_empty(),
            "{engine}: the HTTP/2 client got `{name}`: {resp:?}"
        );
    }
}

/// The request an echo answer shows, parsed: (request line, fields, body).
fn h2_echoed(resp: &H2Resp) -> (String, Vec<(String, String)>, Vec<u8>) {
    assert_eq!(resp.status, 200, "{resp:?}");
    split_echo(resp.bytes())
}

/// Every framing and bodiless status over HTTP/2, all streams on one client connection:
/// length, chunked (decoded), 1 MiB with a length and chunked (byte-exact), close-delimited,
/// HEAD (with a length, and with chunked), 204, 304, a 103 before a 200, bytes after a
/// response; hop-by-hop fields never reach the client, two `Set-Cookie` lines do. curl
/// agrees on a few of them.
async fn h2_response_framings_arrive_whole(e: Engine) {
    let env = setup(e, &[]).await;
    let h2 = H2::connect(&e.vip()).await;
    let r = h2.get("/cl").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "a body with a length"),
        "{}",
        e.name
    );
    assert_eq!(r.values("x-framing"), ["length"], "{}", e.name);
    let r = h2.get("/chunked").await;
    assert_eq!(r.status, 200, "{}: {r:?}", e.name);
    assert_eq!(r.bytes(), CHUNKED_BODY, "{}: {r:?}", e.name);
    assert_h2_no_hop_by_hop(&r, e.name);
    for path in ["/big-cl", "/big-chunked"] {
        let r = h2.get(path).await;
        assert_eq!(r.status, 200, "{}: {path}", e.name);
        assert_eq!(r.bytes().len(), BIG, "{}: {path}", e.name);
        assert!(
            r.bytes() == pattern(BIG),
            "{}: {path}: the 1 MiB body differs",
            e.name
        );
    }
    let r = h2.get("/close-delimited").await;
    assert_eq!(r.status, 200, "{}", e.name);
    assert!(
        r.bytes() == pattern(100_000),
        "{}: the close-delimited body differs",
        e.name
    );
    for path in ["/head-cl", "/head-chunked"] {
        let r = h2.send("HEAD", path, &[], b"").await;
        assert_eq!(r.status, 200, "{}: HEAD {path}: {r:?}", e.name);
        assert!(r.bytes().is_empty(), "{}: HEAD {path}: {r:?}", e.name);
        assert_h2_no_hop_by_hop(&r, e.name);
    }
    let r = h2.get("/204").await;
    assert_eq!(r.status, 204, "{}: {r:?}", e.name);
    assert_eq!(r.values("x-status"), ["204"], "{}", e.name);
    assert!(r.bytes().is_empty(), "{}: {r:?}", e.name);
    let r = h2
        .send("GET", "/304", &[("if-none-match", "\"v1\"")], b"")
        .await;
    assert_eq!(r.status, 304, "{}: {r:?}", e.name);
    assert_eq!(r.values("etag"), ["\"v1\""], "{}", e.name);
    assert!(r.bytes().is_empty(), "{}: {r:?}", e.name);
    let r = h2.get("/103").await;
    assert_eq!((r.status, r.text().as_str()), (200, "final"), "{}", e.name);
    for path in ["/hop", "/hop-close"] {
        let r = h2.get(path).await;
        assert_eq!(r.status, 200, "{}: {path}: {r:?}", e.name);
        assert_h2_no_hop_by_hop(&r, e.name);
        assert_eq!(r.values("set-cookie"), ["a=1", "b=2"], "{}: {path}", e.name);
        assert_eq!(r.values("x-end"), ["kept"], "{}: {path}", e.name);
        let want = if path == "/hop" { "hop" } else { "hop by hop" };
        assert_eq!(r.text(), want, "{}: {path}", e.name);
    }
    let r = h2.get("/extra").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{}", e.name);
    let r = h2.get("/echo/last").await;
    assert_eq!(h2_echoed(&r).0, "GET /echo/last HTTP/1.1", "{}", e.name);
    assert_eq!(env.backends[0].requests().len(), 14, "{}", e.name);

    // curl: the decoded content, exactly, and the headers it shows.
    for (path, want) in [
        ("/cl", "a body with a length|200|2"),
        ("/chunked", "hello chunked world, in three chunks|200|2"),
        ("/204", "|204|2"),
        ("/hop-close", "hop by hop|200|2"),
    ] {
        let got = curl_h2(&["-w", "|%{http_code}|%{http_version}", &e.url(path)]).await;
        assert_eq!(got, want, "{}: {path}", e.name);
    }
    let got = curl_h2(&[
        "-I",
        "-w",
        "|%{http_code}|%{size_download}",
        &e.url("/head-cl"),
    ])
    .await;
    assert!(got.ends_with("\r\n\r\n|200|0"), "{}: {got}", e.name);
    let got = curl_h2(&["-D", "-", "-o", "/dev/null", &e.url("/hop-close")]).await;
    let (start, fields) = parse_head(got.as_bytes());
    assert_eq!(start.trim(), "HTTP/2 200", "{}: {got}", e.name);
    for name in H2_HOP {
        assert!(
            values(&fields, name).is_empty(),
            "{}: curl got `{name}`: {got}",
            e.name
        );
    }
    assert_eq!(
        values(&fields, "set-cookie"),
        ["a=1", "b=2"],
        "{}: {got}",
        e.name
    );
    env.proxy.stop().await.unwrap();
}

/// What an endpoint gets for HTTP/2 requests: the request line in origin form, exactly one
/// `host` (the `:authority`), the client's own fields in order, and for a GET no body and no
/// framing; a bodiless DELETE and POST (the POST with `content-length: 0`); a request with a
/// body (hyper's client path) with the body exact.
async fn h2_requests_reach_the_endpoint_as_http1(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let text = curl_h2(&[
        "-H",
        "Host: web.test:8000",
        "-H",
        "X-Custom: one",
        "-H",
        "X-Custom: two",
        "-H",
        "User-Agent: h2/1",
        &e.url("/echo/get?q=1&r=%20s"),
    ])
    .await;
    assert!(
        text.starts_with("GET /echo/get?q=1&r=%20s HTTP/1.1\r\n"),
        "{}: {text}",
        e.name
    );
    let got = b.requests().pop().expect("the GET");
    assert!(
        got.head
            .starts_with("GET /echo/get?q=1&r=%20s HTTP/1.1\r\n"),
        "{}: {}",
        e.name,
        got.head
    );
    assert_eq!(
        got.values("host"),
        ["web.test:8000"],
        "{}: {}",
        e.name,
        got.head
    );
    assert_eq!(
        got.values("x-custom").join(", "),
        "one, two",
        "{}: {}",
        e.name,
        got.head
    );
    assert_eq!(got.values("user-agent"), ["h2/1"], "{}", e.name);
    assert!(!got.has("content-length"), "{}: {}", e.name, got.head);
    assert!(!got.has("transfer-encoding"), "{}: {}", e.name, got.head);
    assert!(got.body.is_empty(), "{}", e.name);
    assert_endpoint_got_no_hop_by_hop(&got.fields, e.name);

    // A DELETE and a POST without a body.
    let text = curl_h2(&["-X", "DELETE", &e.url("/echo/del")]).await;
    assert!(
        text.starts_with("DELETE /echo/del HTTP/1.1\r\n"),
        "{}: {text}",
        e.name
    );
    let got = b.requests().pop().expect("the DELETE");
    assert!(
        got.body.is_empty() && !got.has("transfer-encoding"),
        "{}: {}",
        e.name,
        got.head
    );
    assert!(
        got.values("content-length").iter().all(|v| *v == "0"),
        "{}: {}",
        e.name,
        got.head
    );
    let text = curl_h2(&["-X", "POST", &e.url("/echo/post-empty")]).await;
    assert!(
        text.starts_with("POST /echo/post-empty HTTP/1.1\r\n"),
        "{}: {text}",
        e.name
    );
    let got = b.requests().pop().expect("the POST");
    // The relay says `content-length: 0`, as RFC 9110 §8.6 asks of a user agent for a
    // method that defines a body; hyper's HTTP/1.1 client sends no framing at all (which
    // also means no body, RFC 9112 §6.3).
    let want: &[&str] = if e.name == "direct" { &["0"] } else { &[] };
    assert_eq!(
        got.values("content-length"),
        want,
        "{}: {}",
        e.name,
        got.head
    );
    assert!(
        got.body.is_empty() && !got.has("transfer-encoding"),
        "{}: {}",
        e.name,
        got.head
    );

    // With a body (curl -d, and 100 KiB from hyper's client): echoed exactly.
    let text = curl_h2(&["--data-binary", "an HTTP/2 body", &e.url("/echo/post")]).await;
    assert!(
        text.starts_with("POST /echo/post HTTP/1.1\r\n"),
        "{}: {text}",
        e.name
    );
    assert!(
        text.ends_with("\r\n\r\nan HTTP/2 body"),
        "{}: {text}",
        e.name
    );
    assert_eq!(
        b.requests().pop().unwrap().body,
        b"an HTTP/2 body",
        "{}",
        e.name
    );
    let h2 = H2::connect(&e.vip()).await;
    let big = pattern(100 * 1024);
    let r = h2.send("PUT", "/echo/put", &[], &big).await;
    let (line, _, body) = h2_echoed(&r);
    assert_eq!(line, "PUT /echo/put HTTP/1.1", "{}", e.name);
    assert!(body == big, "{}: the 100 KiB body differs", e.name);

    // Two `cookie` fields: the endpoint gets both crumbs, in order. The relay joins them
    // into one line as RFC 9113 §8.2.3 requires; hyper's client path sends two lines.
    let r = h2
        .send(
            "GET",
            "/echo/cookies",
            &[("cookie", "a=1"), ("cookie", "b=2")],
            b"",
        )
        .await;
    let (_, fields, _) = h2_echoed(&r);
    let expected: &[&str] = match e.name {
        "direct" => &["a=1; b=2"],
        _ => &["a=1", "b=2"],
    };
    assert_eq!(values(&fields, "cookie"), expected, "{}", e.name);
    assert_eq!(b.requests().len(), 6, "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// Sequential bodiless HTTP/2 requests reuse one upstream connection. Upstream connections
/// are pooled per worker (`--threads 1`: one pool for every client connection); each request
/// is sent only once the last response has ended, and an answer that ends where its framing
/// says (length, chunked, none for HEAD and 204) gives its connection back before its end
/// reaches the client; so one connection serves them all, across client connections too.
async fn h2_sequential_requests_share_one_upstream_connection(e: Engine) {
    let env = setup(e, &["--threads", "1"]).await;
    let b = &env.backends[0];
    let h2 = H2::connect(&e.vip()).await;
    for i in 0..4 {
        for path in ["/cl", "/chunked", "/204"] {
            let r = h2.get(path).await;
            assert!(
                r.status == 200 || r.status == 204,
                "{}: {path}: {r:?}",
                e.name
            );
        }
        let r = h2.send("HEAD", "/head-cl", &[], b"").await;
        assert_eq!(r.status, 200, "{}: {r:?}", e.name);
        let r = h2.get(&format!("/echo/{i}")).await;
        assert_eq!(
            h2_echoed(&r).0,
            format!("GET /echo/{i} HTTP/1.1"),
            "{}",
            e.name
        );
    }
    assert_eq!(b.requests().len(), 20, "{}", e.name);
    assert_eq!(b.connections(), 1, "{}: one upstream connection", e.name);
    // (curl 7.88 fails every URL after the first on a prior-knowledge HTTP/2 connection to
    // a hyper server, proxy or not: see tests/http.rs; hence hyper's client above.)
    // curl, a client connection each, one after another: still the same upstream one.
    for i in 0..3 {
        let got = curl_h2(&["-w", "|%{http_code}", &e.url(&format!("/cl?{i}"))]).await;
        assert_eq!(got, "a body with a length|200", "{}", e.name);
    }
    assert_eq!(b.requests().len(), 23, "{}", e.name);
    assert_eq!(b.connections(), 1, "{}: one upstream connection", e.name);
    env.proxy.stop().await.unwrap();
}

/// An endpoint that closes its kept-alive connection after answering (without saying so):
/// each next HTTP/2 request, sent once the endpoint has closed, succeeds on its first try
/// (GET, DELETE, and a bodiless POST, which is not retried).
async fn h2_a_pooled_connection_the_backend_closed_is_not_used(e: Engine) {
    let env = setup(e, &[]).await;
    let b = &env.backends[0];
    let h2 = H2::connect(&e.vip()).await;
    for i in 0..9 {
        let method = ["GET", "DELETE", "POST"][i % 3];
        let r = h2.send(method, &format!("/idle-close?{i}"), &[], b"").await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "then closed"),
            "{}: {method} {i} on its first try: {r:?}",
            e.name
        );
        b.wait_closed(i + 1).await;
    }
    let r = h2.get("/echo/last").await;
    assert_eq!(h2_echoed(&r).0, "GET /echo/last HTTP/1.1", "{}", e.name);
    assert_eq!(b.requests().len(), 10, "{}", e.name);
    assert_eq!(b.connections(), 10, "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// Asserts the exact error answer a proxy makes up, as an HTTP/2 client gets it.
fn assert_h2_error(resp: &H2Resp, status: u16, body: &str, engine: &str) {
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (status, body),
        "{engine}: {resp:?}"
    );
    assert_eq!(resp.values("content-type"), ["text/plain"], "{engine}");
}

/// Endpoints that refuse connections: 503 `upstream connect failed` to HTTP/2 streams with
/// and without a body, on a client connection that stays usable; curl agrees.
async fn h2_refusing_endpoints_give_503(e: Engine) {
    let env = setup_with(e, &[], &[(21, true), (22, true)], &[]).await;
    let h2 = H2::connect(&e.vip()).await;
    for _ in 0..2 {
        assert_h2_error(&h2.get("/").await, 503, "upstream connect failed\n", e.name);
    }
    let r = h2.send("POST", "/", &[], b"with a body").await;
    assert_h2_error(&r, 503, "upstream connect failed\n", e.name);
    let got = curl_h2(&["-w", "|%{http_code}", &e.url("/")]).await;
    assert_eq!(got, "upstream connect failed\n|503", "{}", e.name);
    assert_requests_counted(&env.proxy, "5xx", 4.0, e.name).await;
    env.proxy.stop().await.unwrap();
}

/// No ready endpoint: 503 `no endpoints available` to HTTP/2 streams.
async fn h2_no_ready_endpoint_gives_503(e: Engine) {
    let env = setup_with(e, &[11], &[(11, false)], &[]).await;
    let h2 = H2::connect(&e.vip()).await;
    for _ in 0..2 {
        assert_h2_error(&h2.get("/").await, 503, "no endpoints available\n", e.name);
    }
    let got = curl_h2(&["-w", "|%{http_code}", &e.url("/")]).await;
    assert_eq!(got, "no endpoints available\n|503", "{}", e.name);
    assert!(env.backends[0].requests().is_empty(), "{}", e.name);
    assert_requests_counted(&env.proxy, "5xx", 3.0, e.name).await;
    env.proxy.stop().await.unwrap();
}

/// An endpoint slower than `--upstream-response-timeout`: 504 `upstream response timeout`;
/// one that answers not-HTTP: 502; one that answers with both a length and chunked (a
/// smuggling shape): 502 from the relay. The HTTP/2 connection serves the next request.
async fn h2_slow_and_broken_endpoints_give_504_and_502(e: Engine) {
    let env = setup(e, &["--upstream-response-timeout", "1s"]).await;
    let h2 = H2::connect(&e.vip()).await;
    let r = h2.get("/slow").await;
    assert_h2_error(&r, 504, "upstream response timeout\n", e.name);
    let r = h2.get("/garbage").await;
    assert_h2_error(&r, 502, "upstream request failed\n", e.name);
    let r = h2.get("/cl-and-te").await;
    if e.name == "direct" {
        assert_h2_error(&r, 502, "upstream request failed\n", e.name);
    } else {
        // hyper's HTTP/1.1 client reads the body as chunked but the response keeps its
        // `content-length: 3`: the HTTP/2 stream is then reset when the 18 decoded bytes
        // exceed it. Either way the client never gets a complete wrong body.
        assert!(
            r.status == 502 || (r.status == 200 && r.body.is_err()),
            "{}: {r:?}",
            e.name
        );
    }
    let r = h2.get("/echo/after").await;
    assert_eq!(h2_echoed(&r).0, "GET /echo/after HTTP/1.1", "{}", e.name);
    env.proxy.stop().await.unwrap();
}

/// Many concurrent HTTP/2 streams (h2load: 4 connections × 10 streams, 2000 requests) over
/// two endpoints: every answer is a 2xx, both endpoints serve, and the proxy counts every
/// request and every body byte. Then 8 concurrent 1 MiB answers on one connection arrive
/// byte-exact.
async fn h2_concurrent_streams_are_all_answered_and_counted(e: Engine) {
    let env = setup_with(e, &[11, 12], &[(11, true), (12, true)], &[]).await;
    let url = e.url("/cl");
    let out = run("h2load", &["-n", "2000", "-c", "4", "-m", "10", &url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "{}: {text}",
        e.name
    );
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{}: {text}",
        e.name
    );
    let (a, b) = (
        env.backends[0].requests().len(),
        env.backends[1].requests().len(),
    );
    assert_eq!(a + b, 2000, "{}", e.name);
    assert!(
        a > 0 && b > 0,
        "{}: both endpoints serve ({a} and {b})",
        e.name
    );
    assert_requests_counted(&env.proxy, "2xx", 2000.0, e.name).await;
    let tx = r#"svc_proxy_bytes_total{service="test/web",port="80",protocol="TCP",direction="tx"}"#;
    eventually("every body byte counted", || async {
        let (_, metrics) = env.proxy.admin("/metrics").await;
        (metric(&metrics, tx) == Some(2000.0 * 20.0)).then_some(())
    })
    .await;

    let h2 = H2::connect(&e.vip()).await;
    let streams: Vec<_> = (0..8)
        .map(|i| {
            let h2 = h2.clone();
            tokio::spawn(async move {
                let path = if i % 2 == 0 {
                    "/big-cl"
                } else {
                    "/big-chunked"
                };
                h2.get(path).await
            })
        })
        .collect();
    for s in streams {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "{}", e.name);
        assert!(
            r.bytes() == pattern(BIG),
            "{}: a 1 MiB body differs",
            e.name
        );
    }
    env.proxy.stop().await.unwrap();
}
