//! tonic over svc-tower's layer against grpcio servers (gRPC C-core), which reset any request
//! that lacks `te: trailers` or is otherwise off-spec. Every call must succeed.

use std::collections::HashSet;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use svc_core::source::manifests;
use svc_core::store::StoreConfig;
use svc_testkit::grpcio::spawn_grpcio_server;
use svc_tower::balance::Pools;
use svc_tower::layer::{Balance, BalanceLayer, NoFallback};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tower::Layer;

/// Messages as raw bytes: the servers are generic handlers, no protobuf involved.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_over_the_layer_calls_grpcio_servers() {
    let mut servers = Vec::new();
    for i in 11..=13 {
        let addr = format!("127.100.3.{i}:50051").parse().unwrap();
        servers.push(spawn_grpcio_server(addr).await);
    }
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: test}\n\
         spec: {clusterIP: 127.100.3.1, ports: [{name: grpc, port: 50051, appProtocol: grpc}]}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: greeter-1, namespace: test, labels: {kubernetes.io/service-name: greeter}}\n\
         addressType: IPv4\nports: [{name: grpc, port: 50051}]\nendpoints:\n",
    );
    for s in &servers {
        yaml += &format!("- {{addresses: ['{}']}}\n", s.addr().ip());
    }
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(&yaml).unwrap().into_events() {
        writer.apply(event);
    }
    let pools = Pools::new(store);
    let channel: Balance<NoFallback, tonic::body::Body> =
        BalanceLayer::new(pools).layer(NoFallback);
    let origin = "http://greeter.test:50051".parse().unwrap();
    let mut grpc = tonic::client::Grpc::with_origin(channel, origin);

    let backends: HashSet<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    for i in 0..30 {
        grpc.ready().await.unwrap();
        let reply = grpc
            .unary(
                tonic::Request::new(Bytes::from_static(b"svc")),
                PathAndQuery::from_static("/svc.test.Echo/Say"),
                Raw,
            )
            .await
            .unwrap_or_else(|status| panic!("call {i} failed: {status}"));
        let from = String::from_utf8_lossy(reply.get_ref()).into_owned();
        assert!(backends.contains(&from), "call {i}: reply {from:?}");
    }
}

/// With no ready endpoint, a tonic call fails with `Unavailable` (what gRPC clients retry on)
/// through `GrpcStatusLayer`, on the first call; without it tonic can only say `Unknown`.
#[cfg(feature = "tonic")]
#[tokio::test]
async fn no_ready_endpoint_reaches_tonic_as_unavailable() {
    use svc_tower::grpc::GrpcStatusLayer;
    use tonic::Code;
    use tower::ServiceBuilder;

    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: test}\n\
         spec: {clusterIP: 127.100.3.2, ports: [{name: grpc, port: 50051, appProtocol: grpc}]}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: greeter-1, namespace: test, labels: {kubernetes.io/service-name: greeter}}\n\
         addressType: IPv4\nports: [{name: grpc, port: 50051}]\n\
         endpoints: [{addresses: ['127.100.3.21'], conditions: {ready: false}}]\n";
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(yaml).unwrap().into_events() {
        writer.apply(event);
    }
    let pools = Pools::new(store);
    // One call through `channel`, which must fail.
    macro_rules! call {
        ($channel:expr) => {{
            let origin = "http://greeter.test:50051".parse().unwrap();
            let mut grpc = tonic::client::Grpc::with_origin($channel, origin);
            grpc.ready().await.unwrap();
            let request = tonic::Request::new(Bytes::from_static(b"svc"));
            let path = PathAndQuery::from_static("/svc.test.Echo/Say");
            grpc.unary(request, path, Raw).await.unwrap_err()
        }};
    }
    let mapped = ServiceBuilder::new()
        .layer(GrpcStatusLayer)
        .layer(BalanceLayer::<tonic::body::Body>::new(pools.clone()))
        .service(NoFallback);
    let status = call!(mapped);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no eligible endpoints"),
        "{status:?}"
    );

    let plain = BalanceLayer::<tonic::body::Body>::new(pools).layer(NoFallback);
    assert_eq!(call!(plain).code(), Code::Unknown);
}
