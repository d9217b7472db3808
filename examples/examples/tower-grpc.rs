//! A tonic gRPC client balanced per request across pods by svc-tower's layer.
//!
//! ```text
//! cargo run -p examples --example tower-grpc
//! ```
//!
//! Runs standalone: three gRPC servers (tonic's server-side `Grpc` handler on hyper, h2c) on
//! 127.0.63.1-3, a Service `greeter` in namespace `demo` with `appProtocol: grpc`, kept in an
//! in-process store. A single `tonic::client::Grpc` over the layer sends unary calls; each
//! call is balanced on its own over one HTTP/2 connection per pod, so one long-lived client
//! spreads over every pod and picks up a new pod at once. To stay free of protoc, messages
//! are raw bytes (a 20-line codec) instead of protobuf; the transport is what matters here.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use svc_core::model::Protocol;
use svc_core::source::manifests;
use svc_core::store::{PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_tower::balance::Pools;
use svc_tower::grpc::GrpcStatusLayer;
use svc_tower::layer::{BalanceLayer, NoFallback};
use svc_tower::policy::Scope;
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{server::UnaryService, Status};

/// Messages as raw bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `demo.Greeter/SayHello`: answers `hello <name> from <pod address>`.
#[derive(Clone, Copy)]
struct SayHello(SocketAddr);

impl UnaryService<Bytes> for SayHello {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, Status>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let name = String::from_utf8_lossy(request.get_ref()).into_owned();
        let reply = Bytes::from(format!("hello {name} from {}", self.0));
        std::future::ready(Ok(tonic::Response::new(reply)))
    }
}

/// A gRPC server on `ip`, serving until the process ends.
async fn grpc_server(ip: [u8; 4]) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let mut grpc = tonic::server::Grpc::new(RawCodec);
                        Ok::<_, Infallible>(grpc.unary(SayHello(addr), req).await)
                    },
                );
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(io), svc).await;
            });
        }
    });
    Ok(addr)
}

fn manifests(pods: &[SocketAddr]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: greeter, namespace: demo}\n\
         spec: {clusterIP: 127.0.63.100, ports: [{name: grpc, port: 50051, targetPort: grpc, \
         appProtocol: grpc}]}\n",
    );
    for (i, a) in pods.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: greeter-{i}, namespace: demo, labels: {{kubernetes.io/service-name: greeter}}}}\n\
             addressType: IPv4\nports: [{{name: grpc, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            a.port(),
            a.ip()
        );
    }
    yaml
}

/// The balancing layer, with svc-tower's errors turned into gRPC codes (no ready pod:
/// `Unavailable`, which gRPC clients retry on, instead of `Unknown`).
type Channel =
    svc_tower::grpc::GrpcStatus<svc_tower::layer::Balance<NoFallback, tonic::body::Body>>;

async fn calls(
    grpc: &mut tonic::client::Grpc<Channel>,
    n: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        grpc.ready().await.map_err(|e| anyhow::anyhow!(e))?;
        let reply = grpc
            .unary(
                tonic::Request::new(Bytes::from_static(b"svc")),
                PathAndQuery::from_static("/demo.Greeter/SayHello"),
                RawCodec,
            )
            .await?;
        let text = String::from_utf8_lossy(reply.get_ref()).into_owned();
        let pod = text.rsplit(' ').next().unwrap_or_default().to_string();
        *seen.entry(pod).or_insert(0) += 1;
    }
    Ok(seen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut pods = Vec::new();
    for i in 1..=3u8 {
        pods.push(grpc_server([127, 0, 63, i]).await?);
    }
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(&manifests(&pods))?.into_events() {
        writer.apply(event);
    }
    let pools = Pools::new(store);
    let channel: Channel = tower::ServiceBuilder::new()
        .layer(GrpcStatusLayer)
        .layer(BalanceLayer::new(pools.clone()))
        .service(NoFallback);
    let mut grpc = tonic::client::Grpc::with_origin(channel, "http://greeter.demo:50051".parse()?);

    println!(
        "30 unary calls on one client: {:?}",
        calls(&mut grpc, 30).await?
    );

    pods.push(grpc_server([127, 0, 63, 4]).await?);
    for event in manifests::parse_str(&manifests(&pods))?.into_events() {
        writer.apply(event);
    }
    let pool = pools.get(
        &ServiceKey::new("demo", "greeter"),
        &PortRef::Number(50051, Protocol::Tcp),
        Scope::Internal,
    );
    pool.watch_endpoints()
        .wait_for(|eps| eps.len() == 4)
        .await?;
    println!(
        "after a 4th pod, 40 calls on the same client: {:?}",
        calls(&mut grpc, 40).await?
    );
    Ok(())
}
