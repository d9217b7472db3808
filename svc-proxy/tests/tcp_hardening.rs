//! TCP mode and the process under stress: the memory ceiling, a dead backend's log volume,
//! log colours, flows cut at the drain deadline, and HTTP connections on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::Notify;

async fn sigterm_and_wait(child: &mut Child) {
    sigterm(child);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Connects; `None` if the proxy reset the connection so fast that `connect` saw it (on
/// loopback the reset can arrive before `connect` returns).
async fn connect_or_reset(addr: SocketAddr) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connecting to {addr}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_memory_ceiling_new_tcp_connections_are_refused_and_counted() {
    let echo = svc_testkit::spawn_tcp_echo("127.162.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("tcp-memory", 162);
    // Any process is above 1 MiB: every new connection is refused once the sampler has run.
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.162.0.1:9901",
        "--memory-ceiling",
        "1MiB",
    ])
    .await;
    let vip: SocketAddr = "127.162.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    let sample = r#"svc_proxy_connections_refused_total{service="test/echo",port="7000",protocol="TCP",reason="memory_ceiling"}"#;
    // Convergence: the sampler runs every 250 ms; keep connecting until one is refused.
    let refused = eventually("refused connections are counted", || async {
        drop(connect_or_reset(vip).await);
        let (_, metrics) = proxy.admin("/metrics").await;
        metric(&metrics, sample).filter(|n| *n > 0.0)
    })
    .await;
    // A connection made before the sampler's first run was rightly let through to the
    // backend; from here on the proxy is known to be above its ceiling.
    let reached_before = echo.connections();
    for _ in 0..5 {
        let Some(mut s) = connect_or_reset(vip).await else {
            continue;
        };
        let mut buf = [0u8; 8];
        // Written before the proxy closes, or refused with a reset: either way no echo.
        let _ = s.write_all(b"hello").await;
        let read = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection is closed at once: {read:?}"
        );
    }
    assert_eq!(
        echo.connections(),
        reached_before,
        "nothing more reached the backend"
    );
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(metric(&metrics, sample).unwrap() >= refused + 5.0);
    proxy.stop().await.unwrap();
}

/// Item: every connection to a dead backend logged a WARN. Now one line per endpoint per
/// interval (10 s), with the number of failures it stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_logged_once_per_interval_with_a_count() {
    // Nothing listens on 127.163.0.11:7001: every connect is refused.
    let m = echo_manifests("tcp-dead-log", 163);
    let log = m.dir.join("proxy.log");
    let started = std::time::Instant::now();
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            "127.163.0.1:9901",
        ],
        &log,
    );
    let vip: SocketAddr = "127.163.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    for _ in 0..20 {
        let Some(mut s) = connect_or_reset(vip).await else {
            continue;
        };
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
        assert!(matches!(read, Ok(Err(_)) | Ok(Ok(0))), "{read:?}");
    }
    sigterm_and_wait(&mut child).await;
    let intervals = 1 + started.elapsed().as_secs() / 10;
    let log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("127.163.0.11:7001"))
        .collect();
    assert!(!lines.is_empty(), "the dead endpoint is reported: {log}");
    assert!(
        lines.len() as u64 <= intervals,
        "{} lines in {intervals} interval(s):\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines[0].contains("failures=1"), "{}", lines[0]);
}

/// Item: log lines carried ANSI colour codes when stderr was not a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let m = echo_manifests("tcp-ansi", 164);
    let log = m.dir.join("proxy.log");
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            "127.164.0.1:9901",
        ],
        &log,
    );
    wait_listening("127.164.0.1:7000".parse().unwrap()).await;
    sigterm_and_wait(&mut child).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log:?}");
}

/// Item: flows still open at the drain deadline ended with a FIN, which a client cannot tell
/// from a complete transfer; they are reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_cut_at_the_drain_deadline_are_reset() {
    let _echo = svc_testkit::spawn_tcp_echo("127.165.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("tcp-drain-reset", 165);
    let log = m.dir.join("proxy.log");
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            "127.165.0.1:9901",
            "--drain-timeout",
            "1s",
        ],
        &log,
    );
    let vip: SocketAddr = "127.165.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    let mut flow = TcpStream::connect(vip).await.unwrap();
    assert!(roundtrip(&mut flow, b"hi").await);
    sigterm_and_wait(&mut child).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, flow.read_to_end(&mut rest))
        .await
        .expect("the flow ends with the process");
    let error = read.expect_err("a reset, not an orderly end of stream");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

/// svc-proxy as a child process, serving Service `web` on `NET.1:80` (appProtocol
/// `app_protocol`) with one ready endpoint on `NET.11:8080`, admin on `NET.1:9901`; returns
/// once the Service port listens.
async fn http_proxy_to_one_endpoint(
    name: &str,
    net: &str,
    app_protocol: &str,
    drain_timeout: &str,
) -> (Manifests, Child, SocketAddr) {
    let m = Manifests::new(name);
    m.write(
        "svc.yaml",
        &service(
            "web",
            &format!("{net}.1"),
            &[&format!(
                "{{name: http, port: 80, targetPort: 8080, appProtocol: {app_protocol}}}"
            )],
            "",
        ),
    );
    let endpoint = format!("{net}.11");
    m.write(
        "slice.yaml",
        &slice(
            "web-1",
            "web",
            ("http", 8080, "TCP"),
            &[(&endpoint, true, "")],
        ),
    );
    let log = m.dir.join("proxy.log");
    let admin = format!("{net}.1:9901");
    let child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            &admin,
            "--drain-timeout",
            drain_timeout,
        ],
        &log,
    );
    let vip: SocketAddr = format!("{net}.1:80").parse().unwrap();
    wait_listening(vip).await;
    (m, child, vip)
}

/// The same for an upgraded HTTP connection (WebSocket) still open at the drain deadline:
/// the client's side of the tunnel is reset too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_cut_at_the_drain_deadline_are_reset() {
    // Answers upgrades with `101`, then echoes.
    let _backend = svc_testkit::spawn_http1_backend("127.164.1.11:8080".parse().unwrap())
        .await
        .unwrap();
    let (_m, mut child, vip) =
        http_proxy_to_one_endpoint("http-drain-reset", "127.164.1", "kubernetes.io/ws", "1s").await;
    let mut ws = TcpStream::connect(vip).await.unwrap();
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(ws.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    assert!(roundtrip(&mut ws, b"ping").await);
    sigterm_and_wait(&mut child).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, ws.read_to_end(&mut rest))
        .await
        .expect("the tunnel ends with the process");
    let error = read.expect_err("a reset, not an orderly end of stream");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

/// An HTTP/1.1 endpoint for the drain test: answers at once, except `/slow`, whose arrival it
/// notifies on `arrived` and which it answers only once `release` is notified.
async fn held_backend(addr: &str, arrived: Arc<Notify>, release: Arc<Notify>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (arrived, release) = (arrived.clone(), release.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head: Vec<u8> = buf.drain(..end).collect();
                    if head.starts_with(b"GET /slow ") {
                        arrived.notify_one();
                        release.notified().await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Reads one response with a 3-byte body from a client connection: its head, lowercased.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"ok\n") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).to_lowercase()
}

/// On SIGTERM, HTTP mode closes idle keep-alive connections at once and lets a request in
/// flight finish, with `connection: close`, before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_http_connections_and_finishes_requests_in_flight() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    held_backend("127.166.0.11:8080", arrived.clone(), release.clone()).await;
    let (_m, mut child, vip) =
        http_proxy_to_one_endpoint("http-drain", "127.166.0", "http", "30s").await;
    // One connection that has had its answer and sits idle, one waiting for `/slow`.
    let mut idle = TcpStream::connect(vip).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle).await.starts_with("http/1.1 200"));
    let mut busy = TcpStream::connect(vip).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, arrived.notified())
        .await
        .expect("the slow request reaches the endpoint");
    sigterm(&child);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed while a request is still in flight")
        .unwrap();
    assert_eq!(n, 0, "nothing more on the idle connection: {rest:?}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process waits for the request in flight"
    );
    release.notify_one();
    let head = read_response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits once the request is done")
        .unwrap();
    assert!(status.success(), "{status}");
}
