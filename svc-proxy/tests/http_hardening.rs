//! HTTP mode against hostile or broken peers: silent clients, oversized and malformed
//! requests, backends that never answer, `Expect: 100-continue`, h2c upgrades, the memory
//! ceiling. Raw sockets stand in for clients and backends where the point is bytes on the wire.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend speaking raw HTTP/1.1, so that tests see exactly what the proxy sent.
#[derive(Clone, Copy)]
enum Backend {
    /// Answers each request with 200 and a body holding the request head it received
    /// (and the request body, if any, after it).
    EchoHead,
    /// Reads the request and never answers.
    Silent,
    /// Answers `Expect: 100-continue` at once with 417, without reading the body.
    Refuses,
    /// Answers `Expect: 100-continue` with `100 Continue`, then echoes the body with a 200.
    Continues,
}

/// What a raw backend saw.
#[derive(Default)]
struct Seen {
    heads: Vec<String>,
    connections: usize,
    closed: usize,
}

/// Reads one request head (through the blank line); `None` at EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf.drain(..len).collect())
}

async fn respond(s: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await
}

async fn serve_raw(mut s: TcpStream, kind: Backend, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf).await {
        seen.lock().heads.push(head.clone());
        let expects = head.to_ascii_lowercase().contains("expect: 100-continue");
        let ok = match kind {
            Backend::Silent => continue,
            Backend::Refuses if expects => {
                let _ = respond(&mut s, "417 Expectation Failed", b"no").await;
                break;
            }
            Backend::Continues if expects => {
                if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                    break;
                }
                match read_body(&mut s, &mut buf, content_length(&head)).await {
                    Some(body) => respond(&mut s, "200 OK", &body).await,
                    None => break,
                }
            }
            _ => match read_body(&mut s, &mut buf, content_length(&head)).await {
                Some(body) => {
                    let mut reply = head.into_bytes();
                    reply.extend_from_slice(&body);
                    respond(&mut s, "200 OK", &reply).await
                }
                None => break,
            },
        };
        if ok.is_err() {
            break;
        }
    }
    seen.lock().closed += 1;
}

/// Starts a raw backend on `addr`.
async fn raw_backend(addr: SocketAddr, kind: Backend) -> Arc<Mutex<Seen>> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.lock().connections += 1;
            tokio::spawn(serve_raw(stream, kind, s.clone()));
        }
    });
    seen
}

/// A Service `web` on 127.`net`.0.1:80 (`appProtocol`) with one raw backend on
/// 127.`net`.0.11:8080; the proxy started with `flags`.
async fn setup(
    test: &str,
    net: u8,
    app_protocol: &str,
    kind: Backend,
    flags: &[&str],
) -> (Manifests, Proxy, Arc<Mutex<Seen>>) {
    let seen = raw_backend(format!("127.{net}.0.11:8080").parse().unwrap(), kind).await;
    let m = Manifests::new(test);
    let port = format!("{{name: http, port: 80, targetPort: 8080, appProtocol: {app_protocol}}}");
    m.write(
        "svc.yaml",
        &service("web", &format!("127.{net}.0.1"), &[&port], ""),
    );
    let ip = format!("127.{net}.0.11");
    m.write(
        "slice.yaml",
        &slice("web-1", "web", ("http", 8080, "TCP"), &[(&ip, true, "")]),
    );
    let admin = format!("127.{net}.0.1:9901");
    let mut args = vec![
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ];
    args.extend_from_slice(flags);
    let proxy = Proxy::start(&args).await;
    wait_listening(format!("127.{net}.0.1:80").parse().unwrap()).await;
    // `wait_listening`'s probe connections sent nothing; let them go before counting.
    (m, proxy, seen)
}

/// Writes `request` on a new connection and reads until the proxy closes it (or
/// [`DEADLINE`]). A connection reset before the request is written (or, on loopback, before
/// `connect` returned) reads as nothing.
async fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return String::new(),
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    if s.write_all(request).await.is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// Reads until the peer closes; `true` if it did within [`DEADLINE`].
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    matches!(
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut sink)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

async fn endpoint_errors(proxy: &Proxy, endpoint: &str) -> f64 {
    let (_, metrics) = proxy.admin("/metrics").await;
    metric(
        &metrics,
        &format!(
            r#"svc_proxy_endpoint_errors_total{{service="test/web",port="80",protocol="TCP",endpoint="{endpoint}"}}"#
        ),
    )
    .unwrap_or(0.0)
}

fn requests_seen(seen: &Mutex<Seen>) -> usize {
    seen.lock().heads.len()
}

/// Item: a backend that accepts and never answers used to hold the client forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_and_counts_as_an_endpoint_error() {
    let (_m, proxy, seen) = setup(
        "http-504",
        150,
        "http",
        Backend::Silent,
        &["--upstream-response-timeout", "1s", "--metrics-endpoints"],
    )
    .await;
    let status = curl_status("http://127.150.0.1/", &["--max-time", "25"]).await;
    assert_eq!(status, 504);
    assert_eq!(requests_seen(&seen), 1);
    assert_eq!(endpoint_errors(&proxy, "127.150.0.11:8080").await, 1.0);
    // The abandoned request's connection is closed, not left to the silent backend.
    eventually("the upstream connection is closed", || async {
        (seen.lock().closed == 1).then_some(())
    })
    .await;
    // A request with a body is timed from the end of its body (the connection keeps the
    // deadline of bodyless requests only): it gets its 504 too.
    let body = ["--max-time", "25", "--data-binary", "a body"];
    assert_eq!(curl_status("http://127.150.0.1/", &body).await, 504);
    assert_eq!(requests_seen(&seen), 2);
    assert_eq!(endpoint_errors(&proxy, "127.150.0.11:8080").await, 2.0);
    eventually("the second upstream connection is closed", || async {
        (seen.lock().closed == 2).then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}

/// Item: connections that never send a byte were never closed (HTTP/1.1 and HTTP/2 ports,
/// partial heads and bare HTTP/2 prefaces alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_closed_after_the_header_read_timeout() {
    for (net, app) in [(151, "http"), (152, "kubernetes.io/h2c")] {
        let (_m, proxy, seen) = setup(
            &format!("http-header-timeout-{net}"),
            net,
            app,
            Backend::EchoHead,
            &["--header-read-timeout", "1s"],
        )
        .await;
        let vip = format!("127.{net}.0.1:80");
        let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        let partial: [&[u8]; 3] = [b"", b"GET / HTTP/1.1\r\nHost: web\r\n", h2_preface];
        for sent in partial {
            let mut s = TcpStream::connect(&vip).await.unwrap();
            s.write_all(sent).await.unwrap();
            assert!(
                closed_by_peer(&mut s).await,
                "{app}: a connection that sent {:?} stayed open",
                String::from_utf8_lossy(sent)
            );
        }
        assert_eq!(requests_seen(&seen), 0);
        proxy.stop().await.unwrap();
    }
}

/// Sends a GET on `s` and reads its response: (head, body).
async fn get(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    s.write_all(b"GET /k HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(s, buf).await.expect("a response head");
    let body = read_body(s, buf, content_length(&head))
        .await
        .expect("a response body");
    (head, body)
}

/// Between keep-alive requests the connection waits for a head under the header read
/// timeout too (the proxy keeps that timer itself, not hyper), and a response that takes
/// longer than the timeout is not cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_wait_for_the_next_head_under_the_header_read_timeout() {
    let (_m, _proxy, seen) = setup(
        "http-keepalive-timeout",
        232,
        "http",
        Backend::EchoHead,
        &["--header-read-timeout", "1s"],
    )
    .await;
    let vip = "127.232.0.1:80";
    let second: [&[u8]; 2] = [b"", b"GET /k HTTP/1.1\r\nHost: we"];
    for sent in second {
        let mut s = TcpStream::connect(vip).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..2 {
            let (head, body) = get(&mut s, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(String::from_utf8_lossy(&body).starts_with("GET /k HTTP/1.1"));
        }
        s.write_all(sent).await.unwrap();
        assert!(
            closed_by_peer(&mut s).await,
            "after two requests, a connection that sent {:?} stayed open",
            String::from_utf8_lossy(sent)
        );
    }
    assert_eq!(requests_seen(&seen), 4);

    // A silent endpoint: the response takes the upstream response timeout (3 s), longer
    // than the header read timeout (1 s), and the client still gets it.
    let (_m, _proxy, _seen) = setup(
        "http-keepalive-slow",
        233,
        "http",
        Backend::Silent,
        &[
            "--header-read-timeout",
            "1s",
            "--upstream-response-timeout",
            "3s",
        ],
    )
    .await;
    let mut s = TcpStream::connect("127.233.0.1:80").await.unwrap();
    let mut buf = Vec::new();
    let (head, _) = get(&mut s, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

/// Item: request heads up to ~400 KB were buffered; Envoy's limit is 60 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_60_kib_get_431_and_never_reach_an_endpoint() {
    let (_m, proxy, seen) = setup("http-431", 153, "http", Backend::EchoHead, &[]).await;
    let head = |size: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: web\r\nx-big: {}\r\nconnection: close\r\n\r\n",
            "a".repeat(size)
        )
    };
    let reply = exchange("127.153.0.1:80", head(100 * 1024).as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:.200}");
    assert_eq!(requests_seen(&seen), 0);
    // Large but within the limit still works.
    let reply = exchange("127.153.0.1:80", head(40 * 1024).as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:.200}");
    assert_eq!(requests_seen(&seen), 1);
    proxy.stop().await.unwrap();
}

/// Item: a client's malformed chunked body got 502 and an endpoint error (feeding outlier
/// ejection); it is the client's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_gets_400_and_no_endpoint_error() {
    let (_m, proxy, seen) = setup(
        "http-chunk",
        154,
        "http",
        Backend::EchoHead,
        &["--metrics-endpoints"],
    )
    .await;
    let reply = exchange(
        "127.154.0.1:80",
        b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\nxx\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // The endpoint's series exist (it was picked), and count no error.
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"svc_proxy_endpoint_picks_total{service="test/web",port="80",protocol="TCP",endpoint="127.154.0.11:8080"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(endpoint_errors(&proxy, "127.154.0.11:8080").await, 0.0);
    // The endpoint is still picked: nothing was ejected.
    let reply = exchange(
        "127.154.0.1:80",
        b"GET / HTTP/1.1\r\nHost: web\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(requests_seen(&seen) >= 1);
    proxy.stop().await.unwrap();
}

/// Item: two `Host` headers were forwarded (RFC 9112 §3.2: 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_get_400() {
    let (_m, proxy, seen) = setup("http-2host", 155, "http", Backend::EchoHead, &[]).await;
    let reply = exchange(
        "127.155.0.1:80",
        b"GET / HTTP/1.1\r\nHost: web\r\nHost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(requests_seen(&seen), 0);
    proxy.stop().await.unwrap();
}

/// Item: an absolute-form target's authority was ignored; it wins over `Host` (RFC 9112
/// §3.2.2), and the endpoint gets origin-form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_sets_the_upstream_host() {
    let (_m, proxy, _seen) = setup("http-absolute", 156, "http", Backend::EchoHead, &[]).await;
    let reply = exchange(
        "127.156.0.1:80",
        b"GET http://right.example:8000/path?q=1 HTTP/1.1\r\nHost: wrong.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let upstream = reply.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
    assert!(
        upstream.starts_with("get /path?q=1 http/1.1\r\n"),
        "{upstream}"
    );
    assert!(
        upstream.contains("host: right.example:8000\r\n"),
        "{upstream}"
    );
    assert!(!upstream.contains("wrong.example"), "{upstream}");
    proxy.stop().await.unwrap();
}

/// Item: an h2c upgrade (`Upgrade: h2c` over HTTP/1.1) was forwarded as an upgrade. It is
/// served as a plain HTTP/1.1 request instead (RFC 9113 §3.1 deprecates the upgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrades_are_not_forwarded() {
    let (_m, proxy, _seen) = setup("http-h2c-up", 157, "http", Backend::EchoHead, &[]).await;
    let reply = exchange(
        "127.157.0.1:80",
        b"GET / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let upstream = reply.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
    assert!(!upstream.contains("upgrade"), "{upstream}");
    assert!(!upstream.contains("http2-settings"), "{upstream}");
    proxy.stop().await.unwrap();
}

/// Item: `Expect: 100-continue` was answered by the proxy before the backend decided. A
/// backend that refuses gets its final answer to the client, with no `100 Continue` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_lets_the_backend_refuse() {
    let (_m, proxy, _seen) = setup("http-expect-no", 158, "http", Backend::Refuses, &[]).await;
    let mut s = TcpStream::connect("127.158.0.1:80").await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 417"), "{head}");
    proxy.stop().await.unwrap();
}

/// ... and one that accepts sends its `100 Continue` through, then gets the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_passes_the_backends_100_through() {
    let (_m, proxy, _seen) = setup("http-expect-yes", 159, "http", Backend::Continues, &[]).await;
    let mut s = TcpStream::connect("127.159.0.1:80").await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    s.write_all(b"hello").await.unwrap();
    let head = read_head(&mut s, &mut buf).await.expect("the final answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = read_body(&mut s, &mut buf, content_length(&head)).await;
    assert_eq!(body.as_deref(), Some(&b"hello"[..]));
    proxy.stop().await.unwrap();
}

/// Item: pooled upstream HTTP/1 connections had no idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed() {
    let (_m, proxy, seen) = setup(
        "http-pool-idle",
        160,
        "http",
        Backend::EchoHead,
        &["--upstream-idle-timeout", "1s"],
    )
    .await;
    assert!(curl("http://127.160.0.1/").await.is_some());
    assert_eq!(seen.lock().connections, 1);
    eventually("the idle upstream connection is closed", || async {
        (seen.lock().closed == 1).then_some(())
    })
    .await;
    // A new request opens a new connection and is served.
    assert!(curl("http://127.160.0.1/").await.is_some());
    assert_eq!(seen.lock().connections, 2);
    proxy.stop().await.unwrap();
}

/// Above `--memory-ceiling`, new HTTP connections are closed at once and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_memory_ceiling_new_http_connections_are_refused_and_counted() {
    // Any process is above 1 MiB: every new connection is refused once the sampler has run.
    let (_m, proxy, seen) = setup(
        "http-memory",
        161,
        "http",
        Backend::EchoHead,
        &["--memory-ceiling", "1MiB"],
    )
    .await;
    let sample = r#"svc_proxy_connections_refused_total{service="test/web",port="80",protocol="TCP",reason="memory_ceiling"}"#;
    // Convergence: the sampler runs every 250 ms; keep connecting until one is refused.
    let refused = eventually("refused connections are counted", || async {
        drop(tokio::net::TcpStream::connect("127.161.0.1:80").await);
        let (_, metrics) = proxy.admin("/metrics").await;
        metric(&metrics, sample).filter(|n| *n > 0.0)
    })
    .await;
    for _ in 0..5 {
        let reply = exchange(
            "127.161.0.1:80",
            b"GET / HTTP/1.1\r\nHost: web\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply, "", "no answer above the ceiling");
    }
    assert_eq!(requests_seen(&seen), 0);
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(metric(&metrics, sample).unwrap() >= refused + 5.0);
    proxy.stop().await.unwrap();
}
