//! UDP end to end: per-client flows, re-picked when their endpoint goes away.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

/// Sends one datagram and waits (briefly) for its echo.
async fn echo(socket: &UdpSocket, msg: &[u8]) -> Option<Vec<u8>> {
    socket.send(msg).await.ok()?;
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_is_re_picked_when_its_endpoint_goes_away() {
    let a = svc_testkit::spawn_udp_echo("127.31.0.11:9053".parse().unwrap())
        .await
        .unwrap();
    let b = svc_testkit::spawn_udp_echo("127.31.0.12:9053".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("udp-repin");
    m.write(
        "svc.yaml",
        &service(
            "echo",
            "127.31.0.1",
            &["{name: echo, port: 5300, targetPort: 9053, protocol: UDP}"],
            "",
        ),
    );
    let both = slice(
        "echo-1",
        "echo",
        ("echo", 9053, "UDP"),
        &[("127.31.0.11", true, ""), ("127.31.0.12", true, "")],
    );
    m.write("slice.yaml", &both);
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.31.0.1:9901",
        "--udp-idle-timeout",
        "2s",
    ])
    .await;

    let client = UdpSocket::bind("127.31.0.100:0").await.unwrap();
    client.connect("127.31.0.1:5300").await.unwrap();
    eventually("the udp listener answers", || echo(&client, b"hello")).await;

    // The flow sticks to one endpoint.
    let (pinned, other) = if a.requests() > 0 { (&a, &b) } else { (&b, &a) };
    let (pinned_before, other_before) = (pinned.requests(), other.requests());
    for i in 0..10u8 {
        assert_eq!(echo(&client, &[i]).await, Some(vec![i]));
    }
    assert_eq!(
        pinned.requests(),
        pinned_before + 10,
        "one flow, one endpoint"
    );
    assert_eq!(other.requests(), other_before);

    // Mark the pinned endpoint not ready: the same client's next datagrams go to the other.
    let pinned_ip = pinned.addr().ip().to_string();
    let other_ip = other.addr().ip().to_string();
    m.write(
        "slice.yaml",
        &slice(
            "echo-1",
            "echo",
            ("echo", 9053, "UDP"),
            &[(&pinned_ip, false, ""), (&other_ip, true, "")],
        ),
    );
    eventually("the flow moves to the remaining endpoint", || async {
        let before = other.requests();
        echo(&client, b"again").await?;
        (other.requests() > before).then_some(())
    })
    .await;
    let stale = pinned.requests();
    for i in 0..10u8 {
        assert_eq!(echo(&client, &[i]).await, Some(vec![i]));
    }
    assert_eq!(
        pinned.requests(),
        stale,
        "nothing goes to the not-ready endpoint any more"
    );

    // Idle flows are forgotten.
    eventually("the idle flow expires", || async {
        let (_, metrics) = proxy.admin("/metrics").await;
        let active = metric(
            &metrics,
            r#"svc_proxy_active_connections{service="test/echo",port="5300",protocol="UDP"}"#,
        )?;
        (active == 0.0).then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}

/// A UDP Service `echo` on `127.101.{net}.1:5300` in front of echo backends on
/// `127.101.{net}.11..`, and a proxy with `extra` flags.
async fn udp_setup(
    test: &str,
    net: u8,
    backends: u8,
    extra: &[&str],
) -> (Manifests, Proxy, Vec<svc_testkit::Backend>) {
    let mut echoes = Vec::new();
    for i in 0..backends {
        let addr = format!("127.101.{net}.{}:9053", 11 + i).parse().unwrap();
        echoes.push(svc_testkit::spawn_udp_echo(addr).await.unwrap());
    }
    let m = Manifests::new(test);
    let vip = format!("127.101.{net}.1");
    m.write(
        "svc.yaml",
        &service(
            "echo",
            &vip,
            &["{name: echo, port: 5300, targetPort: 9053, protocol: UDP}"],
            "",
        ),
    );
    let ips: Vec<String> = (0..backends)
        .map(|i| format!("127.101.{net}.{}", 11 + i))
        .collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|a| (a.as_str(), true, "")).collect();
    m.write(
        "slice.yaml",
        &slice("echo-1", "echo", ("echo", 9053, "UDP"), &eps),
    );
    let admin = format!("{vip}:9901");
    let mut args = vec![
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ];
    args.extend_from_slice(extra);
    let proxy = Proxy::start(&args).await;
    // Convergence only: the listener comes up after the first sync. This warm-up socket is
    // not one of the sockets whose first datagram the tests count.
    let warm = UdpSocket::bind(format!("127.101.{net}.99:0"))
        .await
        .unwrap();
    warm.connect(format!("{vip}:5300")).await.unwrap();
    eventually("the udp listener answers", || echo(&warm, b"warm-up")).await;
    (m, proxy, echoes)
}

/// Sends exactly one datagram from each of `n` fresh sockets on `client_ip` (all at once, or
/// one socket after the other when `serial`) and counts the sockets that got their answer. No
/// resends: every DNS query is a fresh socket's first datagram.
///
/// Every socket stays open until all are done: a closed socket's port may be handed to the
/// next one, whose datagram then belongs to the old socket's flow (as it would for any
/// proxy keyed by address and port), and the flows would no longer be one per socket.
async fn first_datagrams_answered(client_ip: &str, to: &str, n: usize, serial: bool) -> usize {
    let mut tasks = Vec::new();
    let mut done = Vec::new();
    for i in 0..n {
        let socket = UdpSocket::bind(format!("{client_ip}:0")).await.unwrap();
        socket.connect(to).await.unwrap();
        let task = tokio::spawn(async move {
            let msg = format!("query {i}");
            socket.send(msg.as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let got = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await;
            let answered = matches!(got, Ok(Ok(len)) if buf[..len] == *msg.as_bytes());
            (answered, socket)
        });
        if serial {
            done.push(task.await.unwrap());
        } else {
            tasks.push(task);
        }
    }
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done.iter().filter(|(answered, _)| *answered).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_datagram_of_every_new_flow_is_answered() {
    let (_m, proxy, _echoes) = udp_setup("udp-first", 1, 3, &[]).await;
    let answered = first_datagrams_answered("127.101.1.100", "127.101.1.1:5300", 200, false).await;
    assert_eq!(
        answered, 200,
        "fresh sockets answered on their one datagram"
    );
    let (_, metrics) = proxy.admin("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"svc_proxy_connections_total{service="test/echo",port="5300",protocol="UDP"}"#
        ),
        Some(201.0),
        "one flow per socket, plus the warm-up: {metrics}"
    );
}

/// Real DNS traffic: `dig` (one fresh socket per query, no retries) to a DNS Service whose
/// endpoint is the proxy's own DNS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_through_a_udp_cluster_ip_is_answered_on_the_first_try() {
    let m = Manifests::new("udp-dig");
    m.write(
        "svc.yaml",
        &service(
            "kube-dns",
            "127.101.2.10",
            &["{name: dns, port: 53, targetPort: 5353, protocol: UDP}"],
            "",
        ),
    );
    m.write(
        "slice.yaml",
        &slice(
            "kube-dns-1",
            "kube-dns",
            ("dns", 5353, "UDP"),
            &[("127.101.2.53", true, "")],
        ),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.101.2.1:9901",
        "--dns-addr",
        "127.101.2.53:5353",
    ])
    .await;
    let dig = |tries: &'static str| async move {
        let out = run(
            "dig",
            &[
                "@127.101.2.10",
                "-p",
                "53",
                tries,
                "+retry=0",
                "+timeout=2",
                "+short",
                "kube-dns.test.svc.cluster.local",
            ],
        )
        .await;
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Convergence: the listener and the DNS zone come up after the first sync.
    eventually("dns through the cluster IP answers", || async {
        (dig("+tries=3").await == "127.101.2.10").then_some(())
    })
    .await;
    for i in 0..20 {
        assert_eq!(dig("+tries=1").await, "127.101.2.10", "query {i}");
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_ceilings_evict_old_flows_instead_of_refusing_new_ones() {
    let (_m, proxy, _echoes) = udp_setup(
        "udp-ceilings",
        3,
        2,
        &["--udp-max-flows-per-client", "4", "--udp-max-flows", "8"],
    )
    .await;
    // One client IP, 10 fresh sockets, one query at a time (a stub resolver's shape): each
    // is answered, and 4 flows at most stay.
    let answered = first_datagrams_answered("127.101.3.100", "127.101.3.1:5300", 10, true).await;
    assert_eq!(answered, 10);
    // Nine more client IPs, two sockets each: the proxy-wide ceiling of 8 makes room.
    for c in 101..110 {
        let ip = format!("127.101.3.{c}");
        assert_eq!(
            first_datagrams_answered(&ip, "127.101.3.1:5300", 2, true).await,
            2
        );
    }
    let (_, metrics) = proxy.admin("/metrics").await;
    let labels = r#"service="test/echo",port="5300",protocol="UDP""#;
    let get = |name: &str, extra: &str| {
        let sample = if extra.is_empty() {
            format!("{name}{{{labels}}}")
        } else {
            format!("{name}{{{labels},{extra}}}")
        };
        metric(&metrics, &sample).unwrap_or(0.0)
    };
    assert!(get("svc_proxy_active_connections", "") <= 8.0, "{metrics}");
    assert!(
        get(
            "svc_proxy_udp_flows_evicted_total",
            r#"limit="client_limit""#
        ) >= 6.0,
        "{metrics}"
    );
    assert!(
        get(
            "svc_proxy_udp_flows_evicted_total",
            r#"limit="global_limit""#
        ) > 0.0,
        "{metrics}"
    );
    assert_eq!(
        get(
            "svc_proxy_udp_datagrams_dropped_total",
            r#"reason="flow_limit""#
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_memory_ceiling_new_flows_are_refused_and_counted() {
    // Any process is above 1 MiB: every new flow is refused once the sampler has run.
    let (_m, proxy, _echoes) = udp_setup("udp-memory", 4, 1, &[]).await;
    drop(proxy);
    let m = _m;
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.101.4.2:9901",
        "--memory-ceiling",
        "1MiB",
    ])
    .await;
    let sample = r#"svc_proxy_udp_datagrams_dropped_total{service="test/echo",port="5300",protocol="UDP",reason="memory_ceiling"}"#;
    eventually("a refused flow is counted", || async {
        let socket = UdpSocket::bind("127.101.4.100:0").await.unwrap();
        socket.connect("127.101.4.1:5300").await.unwrap();
        let _ = echo(&socket, b"x").await;
        let (_, metrics) = proxy.admin("/metrics").await;
        metric(&metrics, sample).filter(|n| *n > 0.0)
    })
    .await;
    assert_eq!(
        first_datagrams_answered("127.101.4.101", "127.101.4.1:5300", 5, false).await,
        0,
        "no new flow above the ceiling"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_endpoints_clients_get_port_unreachable() {
    let (m, _proxy, echoes) = udp_setup("udp-icmp", 5, 1, &[]).await;
    m.write(
        "slice.yaml",
        &slice(
            "echo-1",
            "echo",
            ("echo", 9053, "UDP"),
            &[("127.101.5.11", false, "")],
        ),
    );
    let client = UdpSocket::bind("127.101.5.100:0").await.unwrap();
    client.connect("127.101.5.1:5300").await.unwrap();
    // A connected UDP socket reports the ICMP error on its next receive.
    eventually("the client is told the port is unreachable", || async {
        client.send(b"anyone?").await.ok()?;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    let before = echoes[0].requests();
    m.write(
        "slice.yaml",
        &slice(
            "echo-1",
            "echo",
            ("echo", 9053, "UDP"),
            &[("127.101.5.11", true, "")],
        ),
    );
    eventually("served again once an endpoint is back", || {
        echo(&client, b"back")
    })
    .await;
    assert!(echoes[0].requests() > before);
}
