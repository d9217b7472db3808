//! The Kubernetes source end to end, against svc-testkit's fake API server: `/readyz` before
//! and after sync, and readiness flips taking effect.

mod common;

use std::collections::HashSet;

use common::*;
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer};

fn slice(ready_12: bool) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    endpoint_slice("test", "web-1", "web")
        .port(Some("http"), 8080)
        .endpoint(EndpointSpec::new("127.61.0.11"))
        .endpoint(EndpointSpec::new("127.61.0.12").ready(ready_12))
        .last_change_trigger_time("2020-01-01T00:00:00Z")
        .build()
}

async fn backends_seen(n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        if let Some(body) = curl("http://127.61.0.1/").await {
            seen.insert(body);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_sync_and_readiness_flips_take_effect() {
    let b11 = svc_testkit::spawn_http_backend("127.61.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    let b12 = svc_testkit::spawn_http_backend("127.61.0.12:8080".parse().unwrap())
        .await
        .unwrap();
    let server = FakeApiServer::start().await;
    server.apply_service(
        service("test", "web")
            .cluster_ip("127.61.0.1")
            .port("http", 80, 8080)
            .build(),
    );
    server.apply_slice(slice(true));
    // Every request fails until we say so: the proxy cannot sync.
    server.fail_next(usize::MAX / 2, 500);
    let proxy = Proxy::start_kube(&["--admin-addr", "127.61.0.1:9901"], server.client()).await;
    assert_eq!(
        proxy.admin("/healthz").await.0,
        200,
        "alive while not synced"
    );
    assert_eq!(
        proxy.admin("/readyz").await.0,
        503,
        "not ready before the initial lists"
    );
    server.fail_next(0, 500);
    eventually("/readyz turns 200 once synced", || async {
        (proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;

    wait_listening("127.61.0.1:80".parse().unwrap()).await;
    let (a, b) = (b11.addr().to_string(), b12.addr().to_string());
    eventually("both backends get traffic", || async {
        let seen = backends_seen(20).await;
        (seen.contains(&a) && seen.contains(&b)).then_some(())
    })
    .await;

    // 127.61.0.12 turns not ready: it stops getting new connections.
    server.apply_slice(slice(false));
    eventually("only the ready backend gets traffic", || async {
        let seen = backends_seen(20).await;
        (seen.len() == 1 && seen.contains(&a)).then_some(())
    })
    .await;
    // And back.
    server.apply_slice(slice(true));
    eventually("the backend is back", || async {
        backends_seen(20).await.contains(&b).then_some(())
    })
    .await;

    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"svc_proxy_watch_events_total{resource="endpointslices"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "svc_proxy_propagation_lag_seconds_count").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "svc_proxy_synced"), Some(1.0));
    let (_, services) = proxy.admin("/debug/services").await;
    let json: serde_json::Value = serde_json::from_str(&services).unwrap();
    let eps = &json["test/web"]["ports"][0]["endpoints"];
    assert_eq!(json["test/web"]["clusterIPs"][0], "127.61.0.1");
    assert_eq!(eps[0]["address"], "127.61.0.11:8080");
    assert_eq!(eps[1]["ready"], true);
    proxy.stop().await.unwrap();
}
