//! HTTP-level tests: the kube source runs a real `kube::Client` against svc-testkit's fake
//! API server, and the store must follow whatever the server does.

mod common;

use std::time::Duration;

use futures::StreamExt;
use svc_core::source::kube::{run, Config, ProbeConfig};
use svc_core::store::{PortRef, Update};
use svc_core::{ServiceKey, Store, StoreConfig};
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer, Kind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::{eventually, PATIENCE};

struct Harness {
    store: Store,
    tasks: Vec<JoinHandle<()>>,
}

impl Harness {
    async fn synced(&self) {
        tokio::time::timeout(PATIENCE, self.store.wait_until_ready())
            .await
            .expect("store synced");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start(server: &FakeApiServer, config: Config) -> Harness {
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = mpsc::channel(1024);
    let tasks = vec![
        tokio::spawn(writer.run(rx)),
        tokio::spawn(run(server.client(), config, store.clone(), tx)),
    ];
    Harness { store, tasks }
}

fn addrs(store: &Store, ns: &str, name: &str) -> Option<Vec<String>> {
    let s = store.get(&ServiceKey::new(ns, name))?;
    Some(
        s.ports
            .first()?
            .endpoints
            .iter()
            .map(|e| e.addr.to_string())
            .collect(),
    )
}

fn plain_service(server: &FakeApiServer, ns: &str, name: &str, cluster_ip: &str) {
    server.apply_service(
        service(ns, name)
            .cluster_ip(cluster_ip)
            .port("http", 80, 8080)
            .build(),
    );
}

fn web(server: &FakeApiServer, ips: &[&str]) {
    plain_service(server, "shop", "web", "127.0.0.77");
    server.apply_slice(
        endpoint_slice("shop", "web-1", "web")
            .port(Some("http"), 8080)
            .endpoints(ips.iter().map(|ip| EndpointSpec::new(ip)))
            .build(),
    );
}

#[tokio::test]
async fn initial_sync_then_add_change_delete() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11", "127.0.0.12"]);
    let h = start(&server, Config::default());
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("synced");
    assert_eq!(
        addrs(&h.store, "shop", "web").unwrap(),
        ["127.0.0.11:8080", "127.0.0.12:8080"]
    );

    server.apply_service(
        service("shop", "api")
            .cluster_ip("127.0.0.78")
            .port("grpc", 90, 9090)
            .build(),
    );
    eventually("api added", || async {
        h.store.resolve_name("api.shop").is_some()
    })
    .await;
    web(&server, &["127.0.0.13"]);
    eventually("web changed", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.13:8080"]
    })
    .await;
    server.delete_service("shop", "web");
    eventually("web deleted", || async {
        h.store.resolve_name("web.shop").is_none()
    })
    .await;
    assert_eq!(server.list_count(Kind::Service), 1, "no relist was needed");
}

#[tokio::test]
async fn readiness_flip_reaches_a_subscriber() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    let h = start(&server, Config::default());
    let mut sub = h.store.subscribe(
        &ServiceKey::new("shop", "web"),
        PortRef::Name(Some("http".into())),
    );
    loop {
        match tokio::time::timeout(PATIENCE, sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Update::Reset(eps) if !eps.is_empty() => break,
            _ => continue,
        }
    }
    server.apply_slice(
        endpoint_slice("shop", "web-1", "web")
            .port(Some("http"), 8080)
            .endpoint(EndpointSpec::new("127.0.0.11").ready(false))
            .build(),
    );
    match tokio::time::timeout(PATIENCE, sub.next())
        .await
        .unwrap()
        .unwrap()
    {
        Update::Add(eps) => {
            assert_eq!(eps.len(), 1);
            assert!(!eps[0].endpoint.conditions.ready);
        }
        other => panic!("expected the flip as an Add, got {other:?}"),
    }
}

#[tokio::test]
async fn dropped_watch_resumes_without_losing_events() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    let h = start(&server, Config::default());
    h.synced().await;
    server.wait_for_open_watches(2).await;
    for i in 0..5 {
        server.drop_watches();
        web(&server, &[&format!("127.0.0.{}", 20 + i)]);
    }
    eventually("last change arrived", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.24:8080"]
    })
    .await;
    assert_eq!(
        server.list_count(Kind::EndpointSlice),
        1,
        "resumed from the resourceVersion, no relist"
    );
    assert!(
        server.watch_count(Kind::EndpointSlice) >= 2,
        "the watch was re-opened"
    );
}

#[tokio::test]
async fn gone_leads_to_a_relist_that_removes_objects_deleted_meanwhile() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    plain_service(&server, "shop", "old", "127.0.0.79");
    let h = start(&server, Config::default());
    h.synced().await;
    server.wait_for_open_watches(2).await;
    assert!(h.store.resolve_name("old.shop").is_some());
    // The watch goes quiet; meanwhile objects change and history is compacted.
    server.stall_watches(true);
    server.delete_service("shop", "old");
    web(&server, &["127.0.0.12"]);
    server.compact();
    server.drop_watches();
    server.stall_watches(false);
    eventually("relist removed the deleted service", || async {
        h.store.resolve_name("old.shop").is_none()
    })
    .await;
    eventually("relist applied the change", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.12:8080"]
    })
    .await;
    assert!(server.list_count(Kind::Service) >= 2, "a relist happened");
    assert!(h.store.freshness().services.stats().relists >= 2);
}

#[tokio::test]
async fn server_errors_and_throttling_back_off_and_recover() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    server.fail_next(2, 500);
    let h = start(&server, Config::default());
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("recovered from 500s");
    let errors =
        h.store.freshness().services.stats().errors + h.store.freshness().slices.stats().errors;
    assert_eq!(
        errors, 2,
        "both 500s were seen, counted and retried with backoff"
    );

    // 429 with Retry-After: kube's client retry layer honours the header, then we carry on.
    server.wait_for_open_watches(2).await;
    let requests = server.request_count();
    server.fail_next_with_retry_after(1, 429, 1);
    server.drop_watches();
    web(&server, &["127.0.0.12"]);
    eventually("recovered after throttling", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.12:8080"]
    })
    .await;
    assert!(
        server.request_count() >= requests + 2,
        "the throttled request was retried"
    );
    let after =
        h.store.freshness().services.stats().errors + h.store.freshness().slices.stats().errors;
    assert_eq!(after, errors, "the client's retry layer absorbed the 429");

    // A failing re-watch (503 beyond the client's own retries would be retried by us too).
    server.fail_next(2, 500);
    server.drop_watches();
    web(&server, &["127.0.0.13"]);
    eventually("recovered after failing re-watches", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.13:8080"]
    })
    .await;
}

#[tokio::test]
async fn stalled_watch_is_detected_and_restarted() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Some(Duration::from_millis(50)));
    web(&server, &["127.0.0.11"]);
    let config = Config::default().stall_timeout(Duration::from_millis(500));
    let h = start(&server, config);
    h.synced().await;
    eventually("bookmarks counted", || async {
        h.store.freshness().slices.stats().bookmarks > 0
    })
    .await;
    let before = h.store.freshness().slices.stats().stall_restarts;
    server.stall_watches(true);
    web(&server, &["127.0.0.12"]);
    eventually("stall detected", || async {
        h.store.freshness().slices.stats().stall_restarts > before
    })
    .await;
    server.stall_watches(false);
    eventually("restarted watch delivered the change", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.12:8080"]
    })
    .await;
}

#[tokio::test]
async fn three_slices_with_per_slice_named_target_ports() {
    let server = FakeApiServer::start().await;
    server.apply_service(
        service("shop", "web")
            .cluster_ip("127.0.0.77")
            .port_named_target("http", 80, "web")
            .build(),
    );
    for (i, port) in [8080, 8081, 8082].into_iter().enumerate() {
        server.apply_slice(
            endpoint_slice("shop", &format!("web-{i}"), "web")
                .port(Some("http"), port)
                .endpoint(EndpointSpec::new(&format!("127.0.0.{}", 11 + i)))
                .endpoint(EndpointSpec::new("127.0.0.50"))
                .build(),
        );
    }
    let h = start(&server, Config::default().page_size(1));
    h.synced().await;
    assert_eq!(
        addrs(&h.store, "shop", "web").unwrap(),
        [
            "127.0.0.11:8080",
            "127.0.0.12:8081",
            "127.0.0.13:8082",
            "127.0.0.50:8080",
            "127.0.0.50:8081",
            "127.0.0.50:8082"
        ],
        "every slice resolves the named port itself; IP:port is the identity"
    );
    assert!(
        server.list_count(Kind::EndpointSlice) >= 3,
        "listed page by page"
    );
}

#[tokio::test]
async fn streaming_lists_namespace_and_label_selector() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    plain_service(&server, "other", "web", "127.0.0.80");
    server.apply_service(
        service("shop", "hidden")
            .label("tier", "internal")
            .cluster_ip("127.0.0.81")
            .port("http", 80, 8080)
            .build(),
    );
    let config = Config::default()
        .namespace("shop")
        .labels("tier!=internal")
        .streaming_lists();
    let h = start(&server, config);
    h.synced().await;
    assert_eq!(addrs(&h.store, "shop", "web").unwrap(), ["127.0.0.11:8080"]);
    assert!(
        h.store.get(&ServiceKey::new("other", "web")).is_none(),
        "other namespace not watched"
    );
    assert!(
        h.store.get(&ServiceKey::new("shop", "hidden")).is_none(),
        "label selector applied"
    );
    assert_eq!(
        server.list_count(Kind::Service),
        0,
        "streaming list, not a paginated one"
    );
    web(&server, &["127.0.0.12"]);
    eventually("watch after streaming list", || async {
        addrs(&h.store, "shop", "web").unwrap() == ["127.0.0.12:8080"]
    })
    .await;
}

#[tokio::test]
async fn invalid_object_is_skipped_and_others_still_apply() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    plain_service(&server, "shop", "bad", "127.0.0.300");
    let h = start(&server, Config::default());
    h.synced().await;
    assert!(h.store.resolve_name("bad.shop").is_none());
    assert!(h.store.resolve_name("web.shop").is_some());
    // A bad update keeps the last good version.
    plain_service(&server, "shop", "web", "not-an-ip");
    plain_service(&server, "shop", "api", "127.0.0.82");
    eventually("later good object applied", || async {
        h.store.resolve_name("api.shop").is_some()
    })
    .await;
    assert_eq!(
        h.store
            .resolve_name("web.shop")
            .unwrap()
            .service
            .cluster_ips[0]
            .to_string(),
        "127.0.0.77"
    );
}

#[tokio::test]
async fn propagation_lag_is_recorded() {
    let server = FakeApiServer::start().await;
    web(&server, &["127.0.0.11"]);
    let h = start(&server, Config::default());
    h.synced().await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    server.apply_slice(
        endpoint_slice("shop", "web-1", "web")
            .port(Some("http"), 8080)
            .endpoint(EndpointSpec::new("127.0.0.12"))
            .last_change_trigger_time(&now)
            .build(),
    );
    eventually("lag observed", || async {
        h.store.freshness().lag.snapshot().count() == 1
    })
    .await;
}

/// Waits in real time (the test's clock is paused) until `check` holds.
async fn until_real(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5)))
            .await
            .unwrap();
    }
}

/// Moves the paused clock forward by `total` in small steps, letting the real sockets settle
/// after each, so that everything that fails during an outage fails at its own pace.
async fn pass(total: Duration) {
    let step = Duration::from_millis(100);
    let mut passed = Duration::ZERO;
    while passed < total {
        tokio::time::advance(step).await;
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        passed += step;
    }
}

/// The medium item "slow recovery after an apiserver outage": after outages of 15 s and 120 s
/// (long enough for each watch's own backoff to reach its 30 s cap), both watches are back, and
/// the change made during the outage applied, after at most the probe's cap (4 s) from the
/// apiserver answering again, without waiting out their own backoff.
///
/// The clock is paused and moved by hand (a blocking task keeps tokio from moving it on its
/// own), so the bound is exact and the machine's load cannot affect it: after the server comes
/// back the clock moves by exactly the probe cap, then stands still while the watches must get
/// back in real time. Before this fix they waited up to 30 s (plus jitter) of backoff.
#[tokio::test(start_paused = true)]
async fn watches_resume_within_the_probe_cap_after_an_outage() {
    let (hold, held) = std::sync::mpsc::channel::<()>();
    // While a blocking task runs, tokio does not auto-advance the paused clock.
    let inhibit = tokio::task::spawn_blocking(move || {
        let _ = held.recv();
    });
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(None);
    web(&server, &["127.0.0.11"]);
    // A probe never times out inside one jump of the hand-moved clock.
    let probe = ProbeConfig::default()
        .timeout(Duration::from_secs(600))
        .jitter_seed(1);
    let config = Config::default().probe(probe);
    let cap = config.probe.max_interval;
    assert_eq!(
        cap,
        Duration::from_secs(4),
        "the default cap is what is tested"
    );
    let h = start(&server, config);
    until_real("synced", || h.store.is_synced()).await;
    until_real("two watches open", || server.open_watches() == 2).await;

    for (round, outage) in [Duration::from_secs(15), Duration::from_secs(120)]
        .into_iter()
        .enumerate()
    {
        server.stop().await;
        pass(outage).await;
        let fresh = h.store.freshness();
        assert!(
            fresh.services.stats().errors > 0 && fresh.slices.stats().errors > 0,
            "both watches saw the outage"
        );
        let endpoint = format!("127.0.0.{}", 21 + round);
        web(&server, &[&endpoint]);
        server.start_again().await.unwrap();

        tokio::time::advance(cap).await;
        until_real("both watches back without more time passing", || {
            server.open_watches() == 2
        })
        .await;
        let want = vec![format!("{endpoint}:8080")];
        until_real("the change made during the outage applied", || {
            addrs(&h.store, "shop", "web").as_ref() == Some(&want)
        })
        .await;
        assert_eq!(
            h.store.freshness().services.connection(),
            svc_core::store::Connection::Connected
        );
    }
    drop(hold);
    inhibit.await.unwrap();
}

/// The other half of the recovery item: while the apiserver fails, lists and watches come no
/// faster than client-go's schedule (each watch backs off from 0.8 s, doubling, to 30 s); only
/// the cheap `/readyz` probe runs on the short cap.
#[tokio::test(start_paused = true)]
async fn a_failing_apiserver_sees_no_more_lists_and_watches_than_client_go_sends() {
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let inhibit = tokio::task::spawn_blocking(move || {
        let _ = held.recv();
    });
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(None);
    web(&server, &["127.0.0.11"]);
    let probe = ProbeConfig::default()
        .timeout(Duration::from_secs(600))
        .jitter_seed(2);
    let config = Config::default().probe(probe);
    // Every request fails (500 is not retried by kube's client), the probe included.
    server.fail_next(usize::MAX / 2, 500);
    let h = start(&server, config);
    pass(Duration::from_secs(120)).await;
    for kind in [Kind::Service, Kind::EndpointSlice] {
        let attempts = server.list_count(kind) + server.watch_count(kind);
        // client-go's schedule: attempts at 0 and after 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30,
        // 30 s (at least; jitter only lengthens them): 9 within 120 s.
        assert!(
            (2..=9).contains(&attempts),
            "{kind:?}: {attempts} lists and watches in 120 s"
        );
    }
    let probes = server.request_count()
        - [Kind::Service, Kind::EndpointSlice]
            .iter()
            .map(|k| server.list_count(*k) + server.watch_count(*k))
            .sum::<u64>();
    assert!(probes >= 120 / 4, "{probes} probes in 120 s");
    assert!(!h.store.is_synced());
    server.fail_next(0, 500);
    tokio::time::advance(Duration::from_secs(4)).await;
    until_real("synced once the apiserver answers", || h.store.is_synced()).await;
    drop(hold);
    inhibit.await.unwrap();
}
