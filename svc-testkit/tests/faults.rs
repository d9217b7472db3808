//! Fault injection, counters, and a kube-runtime watcher riding through faults.

mod common;

use std::time::Duration;

use common::{next_change, setup, summary, svc, within};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, WatchParams};
use kube::core::WatchEvent;
use kube::runtime::watcher;
use kube::Api;
use svc_testkit::{FakeApiServer, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn fail_next_returns_the_status_then_recovers() {
    let (server, api) = setup().await;
    server.fail_next(2, 500);
    for _ in 0..2 {
        match api.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 500);
                assert_eq!(status.reason, "InternalError");
            }
            other => panic!("expected 500, got {other:?}"),
        }
    }
    assert!(api.list(&ListParams::default()).await.is_ok());
    assert_eq!(server.request_count(), 3);
    assert_eq!(server.list_count(Kind::Service), 3);

    server.fail_next(1, 403);
    let watch = api.watch(&WatchParams::default(), "0").await;
    assert!(matches!(watch, Err(kube::Error::Api(s)) if s.code == 403));
    assert_eq!(server.watch_count(Kind::Service), 1);
}

#[tokio::test]
async fn retry_after_is_sent_and_honoured_by_kube_retries() {
    let server = FakeApiServer::start().await;
    server.fail_next_with_retry_after(1, 429, 7);
    let mut conn = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    conn.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    within(conn.read_to_string(&mut raw)).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 7"), "{raw}");
    assert!(raw.contains("\"reason\":\"TooManyRequests\""), "{raw}");

    // kube's default client retries 429 after Retry-After.
    server.fail_next_with_retry_after(1, 429, 0);
    let api: Api<Service> = Api::default_namespaced(server.client());
    within(api.list(&ListParams::default())).await.unwrap();
    assert_eq!(server.list_count(Kind::Service), 3);
}

#[tokio::test]
async fn latency_delays_responses() {
    let (server, api) = setup().await;
    server.set_latency(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn drop_watches_cuts_streams_and_clients_resume() {
    let (server, api) = setup().await;
    let rv1 = server.apply_service(svc("default", "a", "web")).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv1)
        .await
        .unwrap()
        .boxed();
    within(server.wait_for_open_watches(1)).await;
    server.drop_watches();
    // The stream ends (possibly after an I/O error item).
    loop {
        match within(stream.next()).await {
            None => break,
            Some(Ok(WatchEvent::Bookmark(_))) | Some(Err(_)) => continue,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    within(server.wait_for_open_watches(0)).await;
    let rv2 = server.apply_service(svc("default", "b", "web"));
    let mut resumed = api
        .watch(&WatchParams::default(), &rv1)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        summary(&next_change(&mut resumed).await),
        ("ADDED", "b".into(), rv2.to_string())
    );
}

#[tokio::test]
async fn stalled_watches_deliver_nothing_until_released() {
    let (server, api) = setup().await;
    server.set_bookmark_interval(Some(Duration::from_millis(20)));
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    within(server.wait_for_open_watches(1)).await;
    server.stall_watches(true);
    // Drain anything that was already in flight, then expect silence.
    while tokio::time::timeout(Duration::from_millis(100), stream.next())
        .await
        .is_ok()
    {}
    server.apply_service(svc("default", "a", "web"));
    let waited = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(waited.is_err(), "stalled watch delivered {waited:?}");
    assert_eq!(server.open_watches(), 1);
    server.stall_watches(false);
    assert_eq!(summary(&next_change(&mut stream).await).1, "a");
}

#[tokio::test]
async fn kube_watcher_relists_after_compaction_and_drop() {
    let (server, api) = setup().await;
    server.apply_service(svc("default", "a", "web"));
    // Drive the watcher in the background: it only watches while polled.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher(api, watcher::Config::default().page_size(1)).boxed();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    let mut next = async || within(events.recv()).await.expect("watcher ended");
    let init = until_init_done(&mut next).await;
    assert_eq!(init, ["a"]);
    assert_eq!(server.list_count(Kind::Service), 1);

    // A plain drop: the watcher resumes from its version, no relist.
    within(server.wait_for_open_watches(1)).await;
    server.drop_watches();
    server.apply_service(svc("default", "b", "web"));
    loop {
        if let Ok(watcher::Event::Apply(svc)) = next().await {
            assert_eq!(svc.metadata.name.as_deref(), Some("b"));
            break;
        }
    }
    assert_eq!(server.list_count(Kind::Service), 1);

    // A change the watcher misses, compaction, then a drop: resuming gets
    // 410 Gone, so the watcher relists.
    within(server.wait_for_open_watches(1)).await;
    server.stall_watches(true);
    server.apply_service(svc("default", "c", "web"));
    server.compact();
    server.drop_watches();
    server.stall_watches(false);
    assert_eq!(until_init_done(&mut next).await, ["a", "b", "c"]);
    assert!(server.list_count(Kind::Service) >= 2);
}

/// Names from the next `Init` .. `InitDone` sequence.
async fn until_init_done<F>(next: &mut F) -> Vec<String>
where
    F: AsyncFnMut() -> Result<watcher::Event<Service>, watcher::Error>,
{
    let mut names = Vec::new();
    loop {
        match next().await {
            Ok(watcher::Event::Init) => names.clear(),
            Ok(watcher::Event::InitApply(svc)) => names.push(svc.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::InitDone) => return names,
            _ => {}
        }
    }
}

/// An outage: `stop` cuts the open watch and refuses new connections while the state stays
/// (and can change); `start_again` serves on the same address, and a watch resumed from the
/// last seen resource version gets what changed meanwhile.
#[tokio::test]
async fn stop_and_start_again_keep_the_state() {
    let (server, api) = setup().await;
    let rv = server.apply(svc("default", "a", "x"));
    let stream = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .unwrap();
    let mut stream = stream.boxed();
    within(server.wait_for_open_watches(1)).await;

    server.stop().await;
    assert!(!server.is_running());
    // The open stream ends (abruptly or not), and the server refuses new requests.
    loop {
        match within(stream.next()).await {
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            Some(Ok(other)) => panic!("no event was written: {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert!(api.list(&ListParams::default()).await.is_err());
    assert!(
        tokio::net::TcpStream::connect(server.addr()).await.is_err(),
        "the port is closed"
    );
    // Writes while stopped go to the same store, with newer resource versions.
    let newer = server.apply(svc("default", "b", "x"));
    assert!(newer > rv);

    server.start_again().await.unwrap();
    assert!(server.is_running());
    let mut resumed = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .unwrap()
        .boxed();
    let (t, name, _) = summary(&next_change(&mut resumed).await);
    assert_eq!((t, name.as_str()), ("ADDED", "b"));
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    // A restart is the same, in one call.
    server.restart().await.unwrap();
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

/// The server's port is below the kernel's ephemeral range, so that no client can hold it as
/// a source port (or connect to itself on it) while a test has the server stopped, and a
/// restart always gets its port back.
#[tokio::test]
async fn the_port_is_outside_the_ephemeral_range_and_survives_self_connect_attempts() {
    let (server, _api) = setup().await;
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        low > 21_000,
        "this check needs the default range, not {low}"
    );
    let port = server.addr().port();
    assert!(
        (20_000..low).contains(&port),
        "port {port}, ephemeral from {low}"
    );
    server.stop().await;
    // During the outage, many clients try the address (as a watcher retrying does).
    for _ in 0..2_000 {
        let _ = tokio::net::TcpStream::connect(server.addr()).await;
    }
    server.start_again().await.unwrap();
    tokio::net::TcpStream::connect(server.addr()).await.unwrap();
}
