//! TCP end to end: real sockets on loopback, real `curl`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_a_cluster_ip_is_balanced_over_three_backends() {
    let mut backends = Vec::new();
    for i in 11..=14 {
        backends.push(
            svc_testkit::spawn_http_backend(format!("127.21.0.{i}:0").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let port = backends[0].addr().port();
    // The fourth backend listens on another port number, so give it its own slice port: here
    // every backend uses its own port, hence one slice each.
    let m = Manifests::new("balanced");
    m.write(
        "svc.yaml",
        &service(
            "web",
            "127.21.0.1",
            &["{name: http, port: 80, targetPort: http}"],
            "",
        ),
    );
    for (i, b) in backends.iter().enumerate() {
        let ready = i < 3; // the fourth is not ready and must never get traffic
        let ip = b.addr().ip().to_string();
        m.write(
            &format!("slice{i}.yaml"),
            &slice(
                &format!("web-{i}"),
                "web",
                ("http", b.addr().port(), "TCP"),
                &[(&ip, ready, "")],
            ),
        );
    }
    let _ = port;
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.21.0.1:9901",
        // Per endpoint series are opt-in.
        "--metrics-endpoints",
    ])
    .await;
    wait_listening("127.21.0.1:80".parse().unwrap()).await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let body = curl("http://127.21.0.1/")
            .await
            .expect("curl through the cluster IP succeeds");
        *seen.entry(body).or_default() += 1;
    }
    let ready: Vec<String> = backends[..3].iter().map(|b| b.addr().to_string()).collect();
    for b in &ready {
        assert!(seen.contains_key(b), "backend {b} got no traffic: {seen:?}");
    }
    assert!(
        !seen.contains_key(&backends[3].addr().to_string()),
        "the not-ready backend got traffic: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 60);

    let (_, metrics) = proxy.admin("/metrics").await;
    // 60 curls, plus the probe connection of `wait_listening`.
    let conns = metric(
        &metrics,
        r#"svc_proxy_connections_total{service="test/web",port="80",protocol="TCP"}"#,
    );
    assert_eq!(conns, Some(61.0), "{metrics}");
    let picks: f64 = ready
        .iter()
        .filter_map(|b| metric(&metrics, &format!(r#"svc_proxy_endpoint_picks_total{{service="test/web",port="80",protocol="TCP",endpoint="{b}"}}"#)))
        .sum();
    assert_eq!(picks, 61.0, "{metrics}");
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_retried_on_another() {
    let live = svc_testkit::spawn_http_backend("127.22.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    // 127.22.0.12:8080 has nothing listening: connects are refused.
    let m = Manifests::new("retry");
    m.write(
        "svc.yaml",
        &service(
            "web",
            "127.22.0.1",
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    m.write(
        "slice.yaml",
        &slice(
            "web-1",
            "web",
            ("http", 8080, "TCP"),
            &[("127.22.0.11", true, ""), ("127.22.0.12", true, "")],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.22.0.1:9901",
        "--metrics-endpoints",
    ])
    .await;
    wait_listening("127.22.0.1:80".parse().unwrap()).await;
    for _ in 0..20 {
        assert_eq!(
            curl("http://127.22.0.1/").await.as_deref(),
            Some(live.addr().to_string().as_str())
        );
    }
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(
        metrics.contains(r#"svc_proxy_endpoint_errors_total{service="test/web",port="80",protocol="TCP",endpoint="127.22.0.12:8080"}"#),
        "connect failures are counted per endpoint: {metrics}"
    );
    proxy.stop().await.unwrap();
}

/// A backend that reads the whole request (to the client's FIN), then answers: only works if
/// the proxy passes the FIN on and keeps the other direction open.
async fn answer_after_fin(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                s.read_to_end(&mut req).await.unwrap();
                let reply = format!("got {} bytes after your FIN", req.len());
                s.write_all(reply.as_bytes()).await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_response_direction_open() {
    let backend = answer_after_fin("127.23.0.11:0").await;
    let m = Manifests::new("halfclose");
    m.write(
        "svc.yaml",
        &service("hc", "127.23.0.1", &["{name: tcp, port: 7000}"], ""),
    );
    m.write(
        "slice.yaml",
        &slice(
            "hc-1",
            "hc",
            ("tcp", backend.port(), "TCP"),
            &[("127.23.0.11", true, "")],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.23.0.1:9901",
    ])
    .await;
    wait_listening("127.23.0.1:7000".parse().unwrap()).await;

    let mut s = TcpStream::connect("127.23.0.1:7000").await.unwrap();
    s.write_all(&[7u8; 100_000]).await.unwrap();
    s.shutdown().await.unwrap(); // FIN: we are done sending, still reading
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 100000 bytes after your FIN");
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_stream_resets_the_client_and_the_proxy_carries_on() {
    // The backend sends part of a response, then dies (RST).
    let l = TcpListener::bind("127.24.0.11:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                s.write_all(b"partial").await.unwrap();
                socket2::SockRef::from(&s)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
                drop(s);
            });
        }
    });
    let m = Manifests::new("killed");
    m.write(
        "svc.yaml",
        &service("k", "127.24.0.1", &["{name: tcp, port: 7000}"], ""),
    );
    m.write(
        "slice.yaml",
        &slice(
            "k-1",
            "k",
            ("tcp", port, "TCP"),
            &[("127.24.0.11", true, "")],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.24.0.1:9901",
    ])
    .await;
    wait_listening("127.24.0.1:7000".parse().unwrap()).await;

    for _ in 0..3 {
        let mut s = TcpStream::connect("127.24.0.1:7000").await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got).await;
        // The client gets what the backend sent, then a reset (not a clean FIN that would make
        // a truncated response look complete).
        assert!(b"partial".starts_with(&got), "{got:?}");
        let err = end.expect_err("the cut flow ends in an error");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
    let (status, _) = proxy.admin("/healthz").await;
    assert_eq!(status, 200);
    proxy.stop().await.unwrap();
}

/// An echo server that first greets each connection with its own address, so that a client
/// knows which endpoint its flow reached.
async fn greeting_echo(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let greeting = format!("{addr:<21}");
                if s.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Connects through the proxy and returns the flow with the endpoint that greeted it.
async fn open_flow(vip: SocketAddr) -> Option<(TcpStream, String)> {
    let mut s = TcpStream::connect(vip).await.ok()?;
    let mut greeting = [0u8; 21];
    s.read_exact(&mut greeting).await.ok()?;
    Some((s, String::from_utf8_lossy(&greeting).trim().to_string()))
}

async fn echo_flow_test(test: &str, net: u8, reset_removed: bool) {
    let keep = greeting_echo(&format!("127.{net}.0.11:7001"))
        .await
        .to_string();
    let gone = greeting_echo(&format!("127.{net}.0.12:7001"))
        .await
        .to_string();
    let vip = format!("127.{net}.0.1");
    let m = Manifests::new(test);
    m.write(
        "svc.yaml",
        &service(
            "echo",
            &vip,
            &["{name: tcp, port: 7000, targetPort: 7001}"],
            "",
        ),
    );
    let both = [
        (format!("127.{net}.0.11"), true),
        (format!("127.{net}.0.12"), true),
    ];
    let eps: Vec<(&str, bool, &str)> = both.iter().map(|(a, r)| (a.as_str(), *r, "")).collect();
    m.write(
        "slice.yaml",
        &slice("echo-1", "echo", ("tcp", 7001, "TCP"), &eps),
    );
    let admin = format!("{vip}:9901");
    let mut flags = vec![
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ];
    if reset_removed {
        flags.push("--reset-removed");
    }
    let proxy = Proxy::start(&flags).await;
    let vip_addr: SocketAddr = format!("{vip}:7000").parse().unwrap();
    wait_listening(vip_addr).await;

    // Open flows until one lands on the endpoint we are going to remove.
    let mut flow = eventually("a flow on the doomed endpoint", || async {
        let (s, endpoint) = open_flow(vip_addr).await?;
        (endpoint == gone).then_some(s)
    })
    .await;
    assert!(roundtrip(&mut flow, b"ping").await);

    m.write(
        "slice.yaml",
        &slice("echo-1", "echo", ("tcp", 7001, "TCP"), &eps[..1]),
    );
    eventually("the endpoint leaves the store", || async {
        let (_, body) = proxy.admin("/debug/services").await;
        (!body.contains(&gone)).then_some(())
    })
    .await;

    if reset_removed {
        // The proxy resets the flow: the client's read ends (without any data) within the
        // deadline.
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(DEADLINE, flow.read(&mut buf))
            .await
            .expect("the flow is closed");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    } else {
        // The flow keeps working after its endpoint left the Service.
        assert!(roundtrip(&mut flow, b"still there?").await);
    }
    // New flows go to the remaining endpoint only.
    for _ in 0..10 {
        let (mut s, endpoint) = open_flow(vip_addr).await.unwrap();
        assert_eq!(endpoint, keep);
        assert!(roundtrip(&mut s, b"x").await);
    }
    drop(flow);
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_to_removed_endpoints_keep_running_by_default() {
    echo_flow_test("keep-removed", 25, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removed_closes_flows_to_removed_endpoints() {
    echo_flow_test("reset-removed", 26, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodeport_with_external_traffic_policy_local_uses_local_endpoints_only() {
    let local = svc_testkit::spawn_http_backend("127.27.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    let remote = svc_testkit::spawn_http_backend("127.27.0.12:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("nodeport");
    m.write(
        "svc.yaml",
        &service(
            "np",
            "127.27.0.1",
            &["{name: http, port: 80, targetPort: 8080, nodePort: 30080}"],
            "  type: NodePort\n  externalTrafficPolicy: Local\n",
        ),
    );
    m.write(
        "slice.yaml",
        &slice(
            "np-1",
            "np",
            ("http", 8080, "TCP"),
            &[
                ("127.27.0.11", true, ", nodeName: node-a"),
                ("127.27.0.12", true, ", nodeName: node-b"),
            ],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.27.0.1:9901",
        "--nodeport-addr",
        "127.27.0.2",
        "--node-name",
        "node-a",
    ])
    .await;
    wait_listening("127.27.0.2:30080".parse().unwrap()).await;
    wait_listening("127.27.0.1:80".parse().unwrap()).await;
    // Through the NodePort (external traffic, policy Local): the local endpoint only.
    for _ in 0..20 {
        assert_eq!(
            curl("http://127.27.0.2:30080/").await.as_deref(),
            Some(local.addr().to_string().as_str())
        );
    }
    // Through the cluster IP (internal traffic, policy Cluster): both.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(curl("http://127.27.0.1/").await.unwrap());
    }
    assert!(
        seen.contains(&remote.addr().to_string()) && seen.contains(&local.addr().to_string()),
        "{seen:?}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_follow_services_and_unknown_ports_are_never_served() {
    let _b = svc_testkit::spawn_http_backend("127.28.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("live");
    m.write(
        "slice.yaml",
        &slice(
            "web-1",
            "web",
            ("http", 8080, "TCP"),
            &[("127.28.0.11", true, "")],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.28.0.1:9901",
    ])
    .await;
    let vip: SocketAddr = "127.28.0.1:80".parse().unwrap();
    wait_refused(vip).await;
    m.write(
        "svc.yaml",
        &service(
            "web",
            "127.28.0.1",
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    wait_listening(vip).await;
    assert!(curl("http://127.28.0.1/").await.is_some());
    // Not an open relay: another port on the same cluster IP has no listener.
    wait_refused("127.28.0.1:8080".parse().unwrap()).await;
    // Port changes move the listener.
    m.write(
        "svc.yaml",
        &service(
            "web",
            "127.28.0.1",
            &["{name: http, port: 81, targetPort: 8080}"],
            "",
        ),
    );
    wait_listening("127.28.0.1:81".parse().unwrap()).await;
    wait_refused(vip).await;
    m.remove("svc.yaml");
    wait_refused("127.28.0.1:81".parse().unwrap()).await;
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_client_ip_keeps_a_client_on_one_endpoint() {
    let mut backends = Vec::new();
    for i in 11..=13 {
        backends.push(
            svc_testkit::spawn_http_backend(format!("127.29.0.{i}:8080").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let m = Manifests::new("affinity");
    m.write(
        "svc.yaml",
        &service(
            "sticky",
            "127.29.0.1",
            &["{name: http, port: 80, targetPort: 8080}"],
            "  sessionAffinity: ClientIP\n",
        ),
    );
    m.write(
        "slice.yaml",
        &slice(
            "sticky-1",
            "sticky",
            ("http", 8080, "TCP"),
            &[
                ("127.29.0.11", true, ""),
                ("127.29.0.12", true, ""),
                ("127.29.0.13", true, ""),
            ],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.29.0.1:9901",
    ])
    .await;
    wait_listening("127.29.0.1:80".parse().unwrap()).await;
    let mut per_client = Vec::new();
    for i in 1..=10 {
        let client = format!("127.29.1.{i}");
        let client = client.as_str();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let out = run(
                "curl",
                &[
                    "-s",
                    "--max-time",
                    "10",
                    "--interface",
                    client,
                    "http://127.29.0.1/",
                ],
            )
            .await;
            assert!(out.status.success());
            seen.insert(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        assert_eq!(
            seen.len(),
            1,
            "client {client} moved between endpoints: {seen:?}"
        );
        per_client.extend(seen);
    }
    // Different clients are still spread (ten clients on one of three endpoints each: all on
    // the same one would mean affinity is global, not per client; by chance, 1 in 20,000).
    per_client.sort();
    per_client.dedup();
    assert!(per_client.len() > 1, "{per_client:?}");
    proxy.stop().await.unwrap();
}
