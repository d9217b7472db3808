//! svc-tower's request layer: every request is balanced on its own, over one multiplexed
//! HTTP/2 connection per endpoint, and an endpoint added later gets requests at once on the
//! same client, with no reconnect and no MaxConnectionAge.
//!
//! ```text
//! cargo run -p examples --example tower-layer
//! ```
//!
//! Runs standalone: three HTTP/2 backends on 127.0.61.1-3 (a fourth is added half-way), a
//! Service `grpc-ish` in namespace `demo` with `appProtocol: kubernetes.io/h2c`, kept in an
//! in-process store. Hosts that are not Services go to the fallback, a hyper-util client with
//! svc-tower's connector. No cluster needed; it exits when done.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svc_core::model::Protocol;
use svc_core::source::manifests;
use svc_core::store::{PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_testkit::{spawn_http_backend, Backend};
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use svc_tower::layer::BalanceLayer;
use svc_tower::policy::Scope;
use tower::{Layer, ServiceExt};

type Body = Empty<Bytes>;

fn manifests(backends: &[Backend]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: grpc-ish, namespace: demo}\n\
         spec: {clusterIP: 127.0.61.100, ports: [{name: h2, port: 80, targetPort: h2, \
         appProtocol: kubernetes.io/h2c}]}\n",
    );
    for (i, b) in backends.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: grpc-ish-{i}, namespace: demo, labels: {{kubernetes.io/service-name: grpc-ish}}}}\n\
             addressType: IPv4\nports: [{{name: h2, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            b.addr().port(),
            b.addr().ip(),
        );
    }
    yaml
}

/// `S` is the layer over the hyper-util client; its responses' body is a
/// `svc_tower::layer::ResponseBody` (an endpoint's, or the fallback client's).
async fn spread<S, B>(client: &S, n: usize) -> anyhow::Result<BTreeMap<String, usize>>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let req = http::Request::get("http://grpc-ish.demo/").body(Body::new())?;
        let response = client
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| anyhow::anyhow!(e.into()))?;
        let body = response.into_body().collect().await;
        let body = body.map_err(|e| anyhow::anyhow!(e.into()))?.to_bytes();
        *seen
            .entry(String::from_utf8_lossy(&body).into_owned())
            .or_insert(0) += 1;
    }
    Ok(seen)
}

fn connections(backends: &[Backend]) -> Vec<(SocketAddr, u64)> {
    backends
        .iter()
        .map(|b| (b.addr(), b.connections()))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        backends.push(spawn_http_backend(([127, 0, 61, i], 0).into()).await?);
    }
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(&manifests(&backends))?.into_events() {
        writer.apply(event);
    }

    let pools = Pools::new(store);
    let fallback: Client<_, Body> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools.clone()));
    let client = BalanceLayer::<Body>::new(pools.clone()).layer(fallback);

    println!("30 requests: {:?}", spread(&client, 30).await?);
    println!("connections per backend: {:?}", connections(&backends));

    // A new pod: it gets requests at once; the client keeps its other connections.
    backends.push(spawn_http_backend(([127, 0, 61, 4], 0).into()).await?);
    for event in manifests::parse_str(&manifests(&backends))?.into_events() {
        writer.apply(event);
    }
    let pool = pools.get(
        &ServiceKey::new("demo", "grpc-ish"),
        &PortRef::Number(80, Protocol::Tcp),
        Scope::Internal,
    );
    pool.watch_endpoints()
        .wait_for(|eps| eps.len() == 4)
        .await?;
    println!(
        "after adding 127.0.61.4, 40 requests: {:?}",
        spread(&client, 40).await?
    );
    println!("connections per backend: {:?}", connections(&backends));

    // Not a Service: the fallback client connects to it directly.
    let direct = format!("http://{}/", backends[0].addr());
    let response = client
        .clone()
        .oneshot(http::Request::get(direct.as_str()).body(Body::new())?)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("{direct} through the fallback: {}", response.status());
    for b in &backends {
        b.shutdown().await;
    }
    Ok(())
}
