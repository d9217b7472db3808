//! HTTP mode end to end: per-request balancing over one client connection, h2c, bad input.

mod common;

use std::collections::HashSet;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(
    test: &str,
    net: u8,
    app_protocol: &str,
) -> (Manifests, Proxy, Vec<svc_testkit::Backend>) {
    setup_with(test, net, app_protocol, Backends::Http1And2, &[]).await
}

/// What the endpoints speak.
#[derive(PartialEq)]
enum Backends {
    Http1And2,
    /// HTTP/1.1 only, with upgrades (like nginx without `http2`).
    Http1,
}

async fn setup_with(
    test: &str,
    net: u8,
    app_protocol: &str,
    kind: Backends,
    extra_args: &[&str],
) -> (Manifests, Proxy, Vec<svc_testkit::Backend>) {
    let mut backends = Vec::new();
    for i in 11..=13 {
        let addr = format!("127.{net}.0.{i}:8080").parse().unwrap();
        let backend = match kind {
            Backends::Http1And2 => svc_testkit::spawn_http_backend(addr).await,
            Backends::Http1 => svc_testkit::spawn_http1_backend(addr).await,
        };
        backends.push(backend.unwrap());
    }
    let m = Manifests::new(test);
    let port = format!("{{name: http, port: 80, targetPort: 8080, appProtocol: {app_protocol}}}");
    m.write(
        "svc.yaml",
        &service("web", &format!("127.{net}.0.1"), &[&port], ""),
    );
    let ips: Vec<String> = (11..=13).map(|i| format!("127.{net}.0.{i}")).collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|a| (a.as_str(), true, "")).collect();
    m.write(
        "slice.yaml",
        &slice("web-1", "web", ("http", 8080, "TCP"), &eps),
    );
    let admin = format!("127.{net}.0.1:9901");
    let mut args = vec![
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ];
    args.extend_from_slice(extra_args);
    let proxy = Proxy::start(&args).await;
    wait_listening(format!("127.{net}.0.1:80").parse().unwrap()).await;
    (m, proxy, backends)
}

/// Every backend answered at least one of the requests (bodies are backend addresses).
fn assert_all_answered(bodies: &[String], backends: &[svc_testkit::Backend]) {
    let seen: HashSet<&str> = bodies.iter().map(String::as_str).collect();
    for b in backends {
        assert!(
            seen.contains(b.addr().to_string().as_str()),
            "{} got no request: {seen:?}",
            b.addr()
        );
    }
}

/// The proxy's metrics count `n` 2xx responses for the test Service.
async fn assert_2xx_counted(proxy: &Proxy, n: u32) {
    let (_, metrics) = proxy.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"svc_proxy_http_requests_total{service="test/web",port="80",protocol="TCP",code="2xx"}"#
        ),
        Some(f64::from(n)),
        "{metrics}"
    );
}

/// Runs one curl with many URLs (curl reuses one connection for them) and returns the bodies
/// and the number of connections curl opened.
async fn curl_many(args: &[&str], url: &str, n: usize) -> (Vec<String>, usize) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-s", "-w", "|%{num_connects}\n"]);
    let urls = vec![url; n];
    all.extend(urls.iter().copied());
    let out = run("curl", &all).await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut bodies = Vec::new();
    let mut connects = 0;
    for line in text.lines() {
        let (body, c) = line.rsplit_once('|').unwrap();
        bodies.push(body.to_string());
        connects += c.parse::<usize>().unwrap();
    }
    (bodies, connects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_balances_each_request_over_one_keep_alive_connection() {
    let (_m, proxy, backends) = setup("http-mode", 41, "http").await;
    let (bodies, connects) = curl_many(&["--http1.1"], "http://127.41.0.1/", 60).await;
    assert_eq!(connects, 1, "curl used one keep-alive connection");
    assert_eq!(bodies.len(), 60);
    assert_all_answered(&bodies, &backends);
    assert_2xx_counted(&proxy, 60).await;
    // Response body bytes are counted per Service (when each body is done with).
    let body_bytes: usize = bodies.iter().map(String::len).sum();
    eventually("response bytes counted", || async {
        let (_, metrics) = proxy.admin("/metrics").await;
        let tx = metric(
            &metrics,
            r#"svc_proxy_bytes_total{service="test/web",port="80",protocol="TCP",direction="tx"}"#,
        );
        (tx == Some(body_bytes as f64)).then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_mode_balances_streams_of_one_connection() {
    let (_m, proxy, backends) = setup("h2c-mode", 42, "kubernetes.io/h2c").await;
    // curl 7.88 cannot reuse a prior-knowledge HTTP/2 connection to a hyper server (it fails
    // the second request with a framing error, proxy or not), so this uses hyper's client:
    // one connection, many streams.
    let bodies = h2c_requests("127.42.0.1:80", 60).await;
    assert_all_answered(&bodies, &backends);
    proxy.stop().await.unwrap();
}

/// Writes `request` on a new connection and reads until the proxy closes it.
async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_requests_get_400_and_never_reach_an_endpoint() {
    let (_m, proxy, backends) = setup("http-bad", 43, "http").await;
    let reply = raw_exchange("127.43.0.1:80", b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(backends.iter().map(|b| b.requests()).sum::<u64>(), 0);
    // And it still serves.
    assert!(curl("http://127.43.0.1/").await.is_some());
    proxy.stop().await.unwrap();
}

/// HTTP/1.0 without `Host`: the upstream request gets the Service's name as its `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_requests_without_host_are_served() {
    let (_m, proxy, backends) = setup("http-10", 47, "http").await;
    let reply = raw_exchange("127.47.0.1:80", b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        backends.iter().any(|b| b.addr().to_string() == body),
        "answered by a backend: {reply}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_endpoint_gives_503() {
    let (m, proxy, _backends) = setup("http-none", 44, "http").await;
    m.write(
        "slice.yaml",
        &slice(
            "web-1",
            "web",
            ("http", 8080, "TCP"),
            &[("127.44.0.11", false, "")],
        ),
    );
    eventually("503 once no endpoint is ready", || async {
        (curl_status("http://127.44.0.1/", &[]).await == 503).then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}

/// Sends `n` requests as streams of one prior-knowledge HTTP/2 connection; the bodies.
async fn h2c_requests(addr: &str, n: usize) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..n {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        bodies.push(String::from_utf8(body.to_vec()).unwrap());
    }
    bodies
}

/// An h2c port whose pods speak HTTP/1.1 only (the bench harness's h2c mode: h2load in
/// front, nginx behind): each endpoint is asked once whether it speaks HTTP/2, and gets
/// HTTP/1.1 when it does not, instead of every request failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_port_with_http1_endpoints_gets_http1_upstream() {
    let (_m, proxy, backends) =
        setup_with("h2c-h1", 45, "kubernetes.io/h2c", Backends::Http1, &[]).await;
    let bodies = h2c_requests("127.45.0.1:80", 60).await;
    assert_all_answered(&bodies, &backends);
    assert_2xx_counted(&proxy, 60).await;
    proxy.stop().await.unwrap();
}

/// Connects and upgrades to `websocket`; the stream after the `101`.
async fn upgrade(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s
}

/// An upgraded connection that goes quiet is closed after `--idle-timeout`, like a TCP flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upgraded_connections_are_closed() {
    let (_m, proxy, _backends) = setup_with(
        "http-upgrade-idle",
        48,
        "http",
        Backends::Http1,
        &["--idle-timeout", "1s"],
    )
    .await;
    let mut s = upgrade("127.48.0.1:80").await;
    s.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    let quiet = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut rest))
        .await
        .expect("the proxy closes an idle upgraded connection");
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(quiet.elapsed() >= std::time::Duration::from_millis(900));
    proxy.stop().await.unwrap();
}

/// A WebSocket-style upgrade goes through HTTP mode: the `101` comes back with its `Upgrade`
/// header, and then bytes flow both ways over the joined connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_passed_through() {
    let (_m, proxy, backends) = setup_with("http-upgrade", 46, "http", Backends::Http1, &[]).await;
    let mut s = upgrade("127.46.0.1:80").await;
    for msg in [&b"ping"[..], b"and more bytes"] {
        s.write_all(msg).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, msg);
    }
    assert_eq!(backends.iter().map(|b| b.requests()).sum::<u64>(), 1);
    // Closing our side ends the tunnel (else the proxy's drain would wait for it).
    drop(s);
    proxy.stop().await.unwrap();
}
