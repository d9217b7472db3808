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
    let mut backends = Vec::new();
    for i in 11..=13 {
        backends.push(
            svc_testkit::spawn_http_backend(format!("127.{net}.0.{i}:8080").parse().unwrap())
                .await
                .unwrap(),
        );
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
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ])
    .await;
    wait_listening(format!("127.{net}.0.1:80").parse().unwrap()).await;
    (m, proxy, backends)
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
    let seen: HashSet<&str> = bodies.iter().map(String::as_str).collect();
    for b in &backends {
        assert!(
            seen.contains(b.addr().to_string().as_str()),
            "{} got no request: {seen:?}",
            b.addr()
        );
    }
    let (_, metrics) = proxy.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"svc_proxy_http_requests_total{service="test/web",port="80",protocol="TCP",code="2xx"}"#
        ),
        Some(60.0),
        "{metrics}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_mode_balances_streams_of_one_connection() {
    let (_m, proxy, backends) = setup("h2c-mode", 42, "kubernetes.io/h2c").await;
    // curl 7.88 cannot reuse a prior-knowledge HTTP/2 connection to a hyper server (it fails
    // the second request with a framing error, proxy or not), so this uses hyper's client:
    // one connection, many streams.
    let stream = TcpStream::connect("127.42.0.1:80").await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..60 {
        let req = http::Request::get("http://127.42.0.1/")
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
    let seen: HashSet<&str> = bodies.iter().map(String::as_str).collect();
    for b in &backends {
        assert!(
            seen.contains(b.addr().to_string().as_str()),
            "{} got no request: {seen:?}",
            b.addr()
        );
    }
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_requests_get_400_and_never_reach_an_endpoint() {
    let (_m, proxy, backends) = setup("http-bad", 43, "http").await;
    let mut s = TcpStream::connect("127.43.0.1:80").await.unwrap();
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(backends.iter().map(|b| b.requests()).sum::<u64>(), 0);
    // And it still serves.
    assert!(curl("http://127.43.0.1/").await.is_some());
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
        let out = run(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.44.0.1/",
            ],
        )
        .await;
        (String::from_utf8_lossy(&out.stdout) == "503").then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}
