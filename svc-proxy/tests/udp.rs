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
