//! Listener failures that clear up by themselves, and what `/metrics` and `/debug/services`
//! show at scale: bounded series, gone with their Services, filters.

mod common;

use std::net::SocketAddr;

use common::*;

fn web(net: u8, name: &str, backend: SocketAddr) -> (String, String) {
    (
        service(
            name,
            &format!("127.{net}.0.1"),
            &[&format!(
                "{{name: http, port: 80, targetPort: {}}}",
                backend.port()
            )],
            "",
        ),
        slice(
            &format!("{name}-1"),
            name,
            ("http", backend.port(), "TCP"),
            &[(&backend.ip().to_string(), true, "")],
        ),
    )
}

/// Two proxies on the same addresses (a surge rollout, or a restart while the old process is
/// still draining): the second cannot bind, says so in `/readyz` and its metrics, and binds on
/// its own once the first is gone, with no change to the Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_taken_by_another_proxy_is_retried_until_it_is_free() {
    let backend = svc_testkit::spawn_http_backend("127.133.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("address-in-use");
    let (svc, slc) = web(133, "web", backend.addr());
    m.write("svc.yaml", &svc);
    m.write("slice.yaml", &slc);
    let flags = |admin: &'static str| {
        [
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            admin,
            "--threads",
            "2",
        ]
        .map(String::from)
    };
    let first = Proxy::start(&flags("127.133.0.2:9901").each_ref().map(String::as_str)).await;
    eventually("the first proxy is ready", || async {
        (first.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let second = Proxy::start(&flags("127.133.0.3:9901").each_ref().map(String::as_str)).await;
    let verbose = eventually("the second proxy reports the taken address", || async {
        let (status, body) = second.admin("/readyz?verbose").await;
        (status == 503 && body.contains("[-]service/test/web failed")).then_some(body)
    })
    .await;
    assert!(verbose.contains("127.133.0.1:80/TCP"), "{verbose}");
    assert!(verbose.contains("address_in_use"), "{verbose}");
    assert!(verbose.contains("[+]dataplane-programmed ok"), "{verbose}");
    let (_, metrics) = second.admin("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"svc_proxy_listener_errors_total{cause="address_in_use"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    let (_, debug) = second.admin("/debug/services").await;
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    assert_eq!(
        debug["test/web"]["listenerErrors"][0]["cause"], "address_in_use",
        "{debug}"
    );

    first.stop().await.unwrap();
    eventually("the second proxy takes the address over", || async {
        (second.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        curl("http://127.133.0.1/").await.as_deref(),
        Some(backend.addr().to_string().as_str())
    );
    let (_, metrics) = second.admin("/metrics").await;
    assert_eq!(
        metric(&metrics, r#"svc_proxy_listeners{state="failing"}"#),
        Some(0.0)
    );
    second.stop().await.unwrap();
}

/// By default `/metrics` has series per Service port only, and only for ports that had a
/// connection; `--metrics-endpoints` adds the per endpoint ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_metrics_have_no_per_endpoint_series() {
    let mut backends = Vec::new();
    for i in 11..16 {
        let addr = format!("127.134.0.{i}:8080").parse().unwrap();
        backends.push(svc_testkit::spawn_http_backend(addr).await.unwrap());
    }
    let backend = backends[0].addr();
    let m = Manifests::new("cardinality");
    let ips: Vec<String> = backends.iter().map(|b| b.addr().ip().to_string()).collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|ip| (ip.as_str(), true, "")).collect();
    m.write(
        "busy.yaml",
        &format!(
            "{}---\n{}",
            service(
                "busy",
                "127.134.0.1",
                &["{name: http, port: 80, targetPort: 8080}"],
                ""
            ),
            slice("busy-1", "busy", ("http", 8080, "TCP"), &eps)
        ),
    );
    for i in 2..12 {
        let (svc, slc) = web(134, &format!("idle-{i}"), backend);
        let svc = svc.replace("127.134.0.1\n", &format!("127.134.1.{i}\n"));
        m.write(&format!("idle-{i}.yaml"), &format!("{svc}---\n{slc}"));
    }
    // (The admin server of a stopped in-process proxy keeps its address: one each.)
    let runs = [
        (None, false, "127.134.0.2:9901"),
        (Some("--metrics-endpoints"), true, "127.134.0.3:9901"),
    ];
    for (flag, per_endpoint, admin) in runs {
        let mut flags = vec![
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            admin,
        ];
        flags.extend(flag);
        let proxy = Proxy::start(&flags).await;
        wait_listening("127.134.1.11:80".parse().unwrap()).await;
        wait_listening("127.134.0.1:80".parse().unwrap()).await;
        for _ in 0..20 {
            assert!(curl("http://127.134.0.1/").await.is_some());
        }
        let (_, metrics) = proxy.admin("/metrics").await;
        let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
        let per_endpoint_series: Vec<&&str> = samples
            .iter()
            .filter(|l| l.contains("endpoint=") || l.starts_with("svc_proxy_endpoint_"))
            .collect();
        if per_endpoint {
            assert!(
                per_endpoint_series
                    .iter()
                    .any(|l| l.contains(r#"endpoint="127.134.0.11:8080""#)),
                "{metrics}"
            );
        } else {
            assert!(per_endpoint_series.is_empty(), "{per_endpoint_series:?}");
        }
        // 21: the curls plus wait_listening's probe.
        assert_eq!(
            metric(
                &metrics,
                r#"svc_proxy_connections_total{service="test/busy",port="80",protocol="TCP"}"#
            ),
            Some(21.0),
            "{metrics}"
        );
        // The idle Services had only the probe of wait_listening, on idle-11; the others none.
        let idle: Vec<&&str> = samples
            .iter()
            .filter(|l| l.contains("test/idle-"))
            .collect();
        assert!(
            idle.iter().all(|l| l.contains("test/idle-11")),
            "series for idle Services: {idle:?}"
        );
        proxy.stop().await.unwrap();
    }
}

/// Series of deleted Services go with them: rounds of adding and deleting Services leave
/// `/metrics` as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_deleted_services_are_removed() {
    let backend = svc_testkit::spawn_tcp_echo("127.135.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("stale-metrics");
    let (svc, slc) = web(135, "stays", backend.addr());
    m.write("stays.yaml", &format!("{svc}---\n{slc}"));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.135.0.2:9901",
    ])
    .await;
    wait_listening("127.135.0.1:80".parse().unwrap()).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("service="))
            .count()
    };
    let baseline = series(&proxy.admin("/metrics").await.1);
    assert!(baseline > 0);
    for round in 0..3 {
        let mut yaml = String::new();
        for i in 0..20 {
            let (svc, slc) = web(135, &format!("churn-{i}"), backend.addr());
            let svc = svc.replace(
                "127.135.0.1\n",
                &format!("127.135.{}.{}\n", 10 + round, i + 1),
            );
            yaml.push_str(&format!("{svc}---\n{slc}---\n"));
        }
        m.write("churn.yaml", &yaml);
        for i in 0..20 {
            let vip: SocketAddr = format!("127.135.{}.{}:80", 10 + round, i + 1)
                .parse()
                .unwrap();
            wait_listening(vip).await;
        }
        let (_, metrics) = proxy.admin("/metrics").await;
        assert!(series(&metrics) >= baseline + 20 * 4, "{metrics}");
        m.remove("churn.yaml");
        eventually("the deleted Services' series are gone", || async {
            let (_, metrics) = proxy.admin("/metrics").await;
            (!metrics.contains("test/churn-") && series(&metrics) == baseline).then_some(())
        })
        .await;
    }
    proxy.stop().await.unwrap();
}

/// `/debug/services` filters by namespace and Service, and streams the whole dump as one JSON
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_services_filters_and_streams() {
    let backend = svc_testkit::spawn_tcp_echo("127.136.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("debug-services");
    let mut yaml = String::new();
    for i in 0..300 {
        let (svc, slc) = web(136, &format!("svc-{i}"), backend.addr());
        let svc = svc.replace(
            "127.136.0.1\n",
            &format!("127.136.{}.{}\n", 1 + i / 200, 1 + i % 200),
        );
        let (svc, slc) = if i % 2 == 1 {
            (
                svc.replace("namespace: test", "namespace: other"),
                slc.replace("namespace: test", "namespace: other"),
            )
        } else {
            (svc, slc)
        };
        yaml.push_str(&format!("{svc}---\n{slc}---\n"));
    }
    m.write("services.yaml", &yaml);
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.136.0.2:9901",
    ])
    .await;
    eventually("ready", || async {
        (proxy.admin("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let get = |path: &'static str| {
        let proxy = &proxy;
        async move {
            let (status, body) = proxy.admin(path).await;
            assert_eq!(status, 200, "{path}");
            let json: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
            json.as_object().unwrap().clone()
        }
    };
    let all = get("/debug/services").await;
    assert_eq!(all.len(), 300);
    assert_eq!(all["other/svc-1"]["clusterIPs"][0], "127.136.1.2");
    let other = get("/debug/services?namespace=other").await;
    assert_eq!(other.len(), 150);
    assert!(other.keys().all(|k| k.starts_with("other/")));
    let named = get("/debug/services?service=svc-7").await;
    assert_eq!(named.keys().collect::<Vec<_>>(), ["other/svc-7"]);
    let full = get("/debug/services?service=test%2Fsvc-8").await;
    assert_eq!(full.keys().collect::<Vec<_>>(), ["test/svc-8"]);
    assert!(get("/debug/services?namespace=none").await.is_empty());
    let verbose = proxy.admin("/readyz?verbose").await.1;
    assert_eq!(
        verbose,
        "[+]shutdown ok\n[+]store-synced ok\n[+]manifests ok\n[+]dataplane-programmed ok\n[+]listeners ok\nreadyz check passed\n"
    );
    proxy.stop().await.unwrap();
}
