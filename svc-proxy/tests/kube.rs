//! The Kubernetes source end to end, against svc-testkit's fake API server: `/readyz` before
//! and after sync, and readiness flips taking effect.

mod common;

use std::collections::{HashMap, HashSet};

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

fn chaos_slice(ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    endpoint_slice("test", "web-1", "web")
        .port(Some("http"), 8080)
        .endpoints(ips.iter().map(|ip| EndpointSpec::new(ip)))
        .build()
}

/// The endpoints the admin server lists for `test/web`, sorted.
async fn listed_endpoints(proxy: &Proxy) -> Vec<String> {
    let (_, services) = proxy.admin("/debug/services").await;
    let json: serde_json::Value = serde_json::from_str(&services).unwrap();
    let mut eps: Vec<String> = json["test/web"]["ports"][0]["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    eps.sort();
    eps
}

/// `curl` through the ClusterIP `n` times: every request must succeed; returns the backends
/// that answered.
async fn all_answered(n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for i in 0..n {
        let body = curl("http://127.176.0.1/")
            .await
            .unwrap_or_else(|| panic!("request {i} failed"));
        seen.insert(body);
    }
    seen
}

/// Chaos for the kube source: svc-testkit's API server restarted mid-watch (every connection
/// dropped, same state), then taken away while the state changes (a newer resourceVersion),
/// then taken away past a compaction (410, relist). Traffic keeps flowing on the last known
/// state during each outage, `/readyz?verbose` and the metrics say the watches are down, and
/// the proxy converges to the new state with no stale endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restarts_and_outages_keep_traffic_and_converge() {
    let mut backends = HashMap::new();
    for i in 11..=14 {
        let a: std::net::SocketAddr = format!("127.176.0.{i}:8080").parse().unwrap();
        let b = svc_testkit::spawn_http_backend(a).await.unwrap();
        backends.insert(i, b);
    }
    let name = |i: u8| format!("127.176.0.{i}:8080");
    let server = FakeApiServer::start().await;
    server.apply_service(
        service("test", "web")
            .cluster_ip("127.176.0.1")
            .port("http", 80, 8080)
            .build(),
    );
    server.apply_slice(chaos_slice(&["127.176.0.11", "127.176.0.12"]));
    let proxy = Proxy::start_kube(&["--admin-addr", "127.176.0.1:9901"], server.client()).await;
    eventually("synced and serving", || async {
        (proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;
    wait_listening("127.176.0.1:80".parse().unwrap()).await;
    let (code, body) = proxy.admin("/readyz?verbose").await;
    assert_eq!(code, 200, "{body}");
    for line in ["[+]watch-services ok", "[+]watch-endpointslices ok"] {
        assert!(body.contains(line), "{body}");
    }

    // 1. A restart mid-watch, same state: nothing changes for clients, the watches come back.
    server.restart().await.unwrap();
    assert!(all_answered(10)
        .await
        .is_subset(&[name(11), name(12)].into()));
    eventually("both watches back after the restart", || async {
        (server.open_watches() == 2 && proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;

    // 2. An outage during which the endpoints change.
    server.stop().await;
    let (code, body) = eventually("readyz says the watches are down", || async {
        let (code, body) = proxy.admin("/readyz?verbose").await;
        body.contains("[-]watch-endpointslices failed")
            .then_some((code, body))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    let metrics = proxy.admin("/metrics").await.1;
    assert_eq!(
        metric(&metrics, "svc_proxy_apiserver_up"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"svc_proxy_watch_connected{resource="endpointslices"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    // Traffic continues on the last known state.
    let seen = all_answered(20).await;
    assert!(seen.is_subset(&[name(11), name(12)].into()), "{seen:?}");
    server.apply_slice(chaos_slice(&["127.176.0.11", "127.176.0.13"]));
    server.start_again().await.unwrap();
    eventually("converged: .12 gone, .13 added", || async {
        (listed_endpoints(&proxy).await == [name(11), name(13)]).then_some(())
    })
    .await;
    let seen = all_answered(20).await;
    assert!(
        !seen.contains(&name(12)),
        "a stale endpoint got traffic: {seen:?}"
    );
    eventually("readyz passes again", || async {
        (proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;

    // 3. An outage past a compaction: the watches' resourceVersion is gone (410), so they
    // relist, and a deletion made meanwhile is not missed.
    server.stop().await;
    server.apply_slice(chaos_slice(&["127.176.0.14"]));
    server.compact();
    assert!(all_answered(10)
        .await
        .is_subset(&[name(11), name(13)].into()));
    server.start_again().await.unwrap();
    eventually("converged after the relist", || async {
        (listed_endpoints(&proxy).await == [name(14)]).then_some(())
    })
    .await;
    assert_eq!(all_answered(10).await, [name(14)].into());
    let metrics = proxy.admin("/metrics").await.1;
    assert!(
        metric(
            &metrics,
            r#"svc_proxy_watch_relists_total{resource="endpointslices"}"#
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{metrics}"
    );
    proxy.stop().await.unwrap();
}
