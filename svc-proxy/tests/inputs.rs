//! The proxy's inputs end to end: manifests edits (half-written, broken, invalid objects) and
//! the API server's validation rules, seen through real sockets, `curl` and the admin server.

mod common;

use std::io::Write;
use std::net::SocketAddr;

use common::*;
use tokio::net::TcpStream;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A Service on `ip:80` → `8080` with one ready endpoint, as one YAML text.
fn web(name: &str, ip: &str, endpoint: &str) -> String {
    format!(
        "{}---\n{}",
        service(name, ip, &["{name: web, port: 80, targetPort: 8080}"], ""),
        slice(
            &format!("{name}-1"),
            name,
            ("web", 8080, "TCP"),
            &[(endpoint, true, "")]
        )
    )
}

/// The Services the admin server lists.
async fn services(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = proxy.admin("/debug/services").await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// The first endpoint of `test/<name>`'s first port, per `/debug/services`.
async fn endpoint_of(proxy: &Proxy, name: &str) -> Option<String> {
    services(proxy).await[format!("test/{name}")]["ports"][0]["endpoints"][0]["address"]
        .as_str()
        .map(str::to_string)
}

async fn refused(a: SocketAddr) -> bool {
    matches!(TcpStream::connect(a).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Item 12: a Service with two ports on one port/protocol pair (one plain TCP, one
/// `appProtocol: http`) is refused as the API server refuses it: a Service that had a good
/// version keeps serving it, one that never had none gets no listener, and the metric counts
/// the invalid object of that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_port_protocol_pairs_are_refused_and_the_last_good_version_serves() {
    let backend = svc_testkit::spawn_http_backend(addr("127.170.0.11:8080"))
        .await
        .unwrap();
    let m = Manifests::new("dup-ports");
    m.write("web.yaml", &web("web", "127.170.0.1", "127.170.0.11"));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.170.0.1:9901",
    ])
    .await;
    wait_listening(addr("127.170.0.1:80")).await;
    let body = backend.addr().to_string();
    assert_eq!(
        curl("http://127.170.0.1/").await.as_deref(),
        Some(body.as_str())
    );

    // The edit adds a second port on 80/TCP, for HTTP mode, beside the plain one.
    let dup_ports = "{name: web, port: 80, targetPort: 8080}\n  - {name: http, port: 80, targetPort: 8080, appProtocol: http}";
    let edit = [
        format!(
            "{}---\n{}",
            service("web", "127.170.0.1", &[dup_ports], ""),
            slice(
                "web-1",
                "web",
                ("web", 8080, "TCP"),
                &[("127.170.0.11", true, "")]
            )
        ),
        service("fresh", "127.170.0.2", &[dup_ports], ""),
        web("marker", "127.170.0.3", "127.170.0.11"),
    ]
    .join("---\n");
    m.write("web.yaml", &edit);
    wait_listening(addr("127.170.0.3:80")).await;

    let listed = services(&proxy).await;
    assert!(listed.get("test/marker").is_some());
    assert!(
        listed.get("test/fresh").is_none(),
        "an invalid Service never served is skipped: {listed}"
    );
    let ports = listed["test/web"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "web keeps its last good version: {ports:?}");
    for i in 0..10 {
        assert_eq!(
            curl("http://127.170.0.1/").await.as_deref(),
            Some(body.as_str()),
            "request {i} through the last good version"
        );
    }
    assert!(
        refused(addr("127.170.0.2:80")).await,
        "no listener for the invalid Service"
    );
    let metrics = proxy.admin("/metrics").await.1;
    let file = m.path().join("web.yaml");
    let sample = format!(
        "svc_proxy_manifest_invalid_objects{{file=\"{}\"}}",
        file.display()
    );
    assert_eq!(metric(&metrics, &sample), Some(2.0), "{metrics}");
    proxy.stop().await.unwrap();
}

/// Item 13: `clusterIP: 0.0.0.0` (or `::`) would listen on every interface; it is refused, so
/// nothing listens on the wildcard address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_cluster_ip_never_listens_on_every_interface() {
    let m = Manifests::new("wildcard");
    m.write(
        "all.yaml",
        &[
            service(
                "wild",
                "0.0.0.0",
                &["{name: web, port: 47171, targetPort: 8080}"],
                "",
            ),
            service(
                "wild6",
                "\"::\"",
                &["{name: web, port: 47172, targetPort: 8080}"],
                "",
            ),
            web("marker", "127.171.0.3", "127.171.0.11"),
        ]
        .join("---\n"),
    );
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.171.0.1:9901",
    ])
    .await;
    wait_listening(addr("127.171.0.3:80")).await;
    let listed = services(&proxy).await;
    assert!(listed.get("test/marker").is_some());
    assert!(
        listed.get("test/wild").is_none() && listed.get("test/wild6").is_none(),
        "{listed}"
    );
    assert!(
        refused(addr("127.171.0.9:47171")).await,
        "nothing listens on 0.0.0.0:47171"
    );
    proxy.stop().await.unwrap();
}

/// Item 9: a broken file keeps serving its last good version while the other files reload (a
/// new file is served), `/readyz` fails naming the file, and a metric says so; fixing the file
/// clears both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_reported_and_does_not_freeze_the_others() {
    let a = svc_testkit::spawn_http_backend(addr("127.172.0.11:8080"))
        .await
        .unwrap();
    let c = svc_testkit::spawn_http_backend(addr("127.172.0.13:8080"))
        .await
        .unwrap();
    let m = Manifests::new("broken-file");
    m.write("a.yaml", &web("a", "127.172.0.1", "127.172.0.11"));
    m.write("b.yaml", &web("b", "127.172.0.2", "127.172.0.11"));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.172.0.1:9901",
    ])
    .await;
    wait_listening(addr("127.172.0.1:80")).await;
    assert_eq!(proxy.admin("/readyz").await.0, 200);

    m.write(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    );
    m.write("c.yaml", &web("c", "127.172.0.3", "127.172.0.13"));
    wait_listening(addr("127.172.0.3:80")).await;
    assert_eq!(
        curl("http://127.172.0.3/").await.as_deref(),
        Some(c.addr().to_string().as_str()),
        "a new file is served beside the broken one"
    );
    assert_eq!(
        curl("http://127.172.0.1/").await.as_deref(),
        Some(a.addr().to_string().as_str()),
        "the broken file's last good version is served"
    );
    let file = m.path().join("a.yaml");
    let (code, body) = eventually("readyz names the broken file", || async {
        let (code, body) = proxy.admin("/readyz?verbose").await;
        (code == 503).then_some((code, body))
    })
    .await;
    assert_eq!(code, 503);
    let line = format!("[-]manifests:{} failed: ", file.display());
    assert!(body.contains(&line), "{body}");
    assert!(body.contains("[+]store-synced ok"), "{body}");
    let metrics = proxy.admin("/metrics").await.1;
    let sample = format!(
        "svc_proxy_manifest_file_failing{{file=\"{}\"}}",
        file.display()
    );
    assert_eq!(metric(&metrics, &sample), Some(1.0), "{metrics}");

    m.write("a.yaml", &web("a", "127.172.0.1", "127.172.0.13"));
    eventually("the fixed file is applied and readyz passes", || async {
        let fixed = endpoint_of(&proxy, "a").await.as_deref() == Some("127.172.0.13:8080");
        (fixed && proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let metrics = proxy.admin("/metrics").await.1;
    assert_eq!(metric(&metrics, &sample), Some(0.0), "{metrics}");
    proxy.stop().await.unwrap();
}

/// Item 8: a file rewritten in place and left half-written (its writer still has it open) is
/// not applied, however long it stays so; no listener drops. Once the writer finishes, the
/// whole file is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_drops_no_listeners() {
    let _backend = svc_testkit::spawn_http_backend(addr("127.173.0.11:8080"))
        .await
        .unwrap();
    let m = Manifests::new("half-written");
    let whole: Vec<String> = (1..=3)
        .map(|i| web(&format!("s{i}"), &format!("127.173.0.{i}"), "127.173.0.11"))
        .collect();
    m.write("apps.yaml", &whole.join("---\n"));
    m.write("marker.yaml", &web("marker", "127.173.0.9", "127.173.0.11"));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.173.0.1:9901",
    ])
    .await;
    for i in 1..=3 {
        wait_listening(addr(&format!("127.173.0.{i}:80"))).await;
    }

    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path().join("apps.yaml"))
        .unwrap();
    writer.write_all(whole[0].as_bytes()).unwrap();
    writer.flush().unwrap();
    // Several polls (one a second) pass while it is half-written, each long enough for the
    // half to count as stable: only its open writer holds it back. Each marker edit is applied
    // by a later look than the previous one.
    for round in 12..=14 {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        m.write(
            "marker.yaml",
            &web("marker", "127.173.0.9", &format!("127.173.0.{round}")),
        );
        let want = format!("127.173.0.{round}:8080");
        eventually("the marker edit is applied", || async {
            (endpoint_of(&proxy, "marker").await.as_deref() == Some(want.as_str())).then_some(())
        })
        .await;
    }
    let listed = services(&proxy).await;
    assert!(
        listed.get("test/s2").is_some() && listed.get("test/s3").is_some(),
        "the half-written file was applied: {listed}"
    );
    for i in 1..=3 {
        TcpStream::connect(addr(&format!("127.173.0.{i}:80")))
            .await
            .unwrap_or_else(|e| panic!("listener {i} dropped: {e}"));
    }

    let rest = [
        whole[1].clone(),
        whole[2].clone(),
        web("s4", "127.173.0.4", "127.173.0.11"),
    ];
    writer
        .write_all(format!("---\n{}", rest.join("---\n")).as_bytes())
        .unwrap();
    drop(writer);
    wait_listening(addr("127.173.0.4:80")).await;
    for i in 1..=3 {
        TcpStream::connect(addr(&format!("127.173.0.{i}:80")))
            .await
            .unwrap();
    }
    proxy.stop().await.unwrap();
}
