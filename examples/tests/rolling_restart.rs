//! The rolling-restart scenario: no request through svc-tower fails, while the resolve-once
//! client does fail (which is the point of the comparison).

use std::time::Duration;

use examples::rolling::{run, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_has_zero_failures_through_svc_tower() {
    let summary = run(Options {
        interval: Duration::from_millis(2),
        phase: Duration::from_millis(200),
        net: [127, 0, 41],
        ..Options::default()
    })
    .await
    .unwrap();
    println!("{summary}");
    assert!(summary.requests > 100, "{summary}");
    assert_eq!(summary.svc_failed, 0, "{summary}");
    assert!(summary.dns_cached_failed > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_has_zero_failures_over_http2_too() {
    let summary = run(Options {
        interval: Duration::from_millis(2),
        phase: Duration::from_millis(200),
        net: [127, 0, 42],
        http_version: svc_tower::layer::HttpVersion::Http2,
    })
    .await
    .unwrap();
    println!("{summary}");
    assert!(summary.requests > 100, "{summary}");
    assert_eq!(summary.svc_failed, 0, "{summary}");
}
