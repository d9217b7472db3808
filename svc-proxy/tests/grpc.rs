//! gRPC through HTTP mode against grpcio (gRPC C-core), the implementation most users run.
//! Unlike tonic it resets any request without `te: trailers`, which the proxy used to strip:
//! every call failed with UNAVAILABLE (502). Every call must succeed on the first try.

mod common;

use std::collections::HashSet;

use common::*;
use svc_testkit::grpcio::{grpcio_calls, spawn_grpcio_server, CallResult, Channels};

async fn grpc_through_proxy(test: &str, net: u8, app_protocol: &str) {
    let mut servers = Vec::new();
    for i in 11..=13 {
        let addr = format!("127.100.{net}.{i}:50051").parse().unwrap();
        servers.push(spawn_grpcio_server(addr).await);
    }
    let m = Manifests::new(test);
    let port =
        format!("{{name: grpc, port: 50051, targetPort: 50051, appProtocol: {app_protocol}}}");
    let vip = format!("127.100.{net}.1");
    m.write("svc.yaml", &service("greeter", &vip, &[&port], ""));
    let ips: Vec<String> = (11..=13).map(|i| format!("127.100.{net}.{i}")).collect();
    let eps: Vec<(&str, bool, &str)> = ips.iter().map(|a| (a.as_str(), true, "")).collect();
    m.write(
        "slice.yaml",
        &slice("greeter-1", "greeter", ("grpc", 50051, "TCP"), &eps),
    );
    let admin = format!("{vip}:9901");
    let _proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        &admin,
    ])
    .await;
    let target = format!("{vip}:50051").parse().unwrap();
    wait_listening(target).await;

    let backends: HashSet<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    for channels in [Channels::One, Channels::PerCall] {
        let results = grpcio_calls(target, 30, channels).await;
        assert_eq!(results.len(), 30);
        for (i, r) in results.iter().enumerate() {
            match r {
                CallResult::Ok(from) => {
                    assert!(backends.contains(from), "call {i}: reply {from:?}")
                }
                CallResult::Err(e) => panic!("call {i} ({channels:?}) failed: {e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_succeed_through_h2c_mode() {
    grpc_through_proxy("grpc-h2c", 1, "kubernetes.io/h2c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_succeed_with_app_protocol_grpc() {
    grpc_through_proxy("grpc-grpc", 2, "grpc").await;
}
