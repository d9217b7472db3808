//! hyper-util's client through svc-tower's connector: Service names and cluster IPs resolve to
//! a live endpoint at connect time, with the Service port mapped to the endpoint's port.
//!
//! ```text
//! cargo run -p examples --example tower-hyper-client
//! ```
//!
//! Runs standalone: it starts three HTTP backends on 127.0.60.1-3, describes them in
//! manifests (a Service `web` in namespace `demo` on cluster IP 127.0.60.100, port 80, one
//! EndpointSlice per backend), loads those into an in-process store and sends requests by
//! name and by cluster IP. Then it marks one backend not ready and shows that new connections
//! avoid it. No cluster needed; it exits when done.

use std::collections::BTreeMap;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svc_core::model::Protocol;
use svc_core::source::manifests;
use svc_core::store::{PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_testkit::{spawn_http_backend, Backend};
use svc_tower::connect::SvcConnector;
use svc_tower::policy::Scope;

fn manifests(backends: &[Backend], not_ready: Option<usize>) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n\
         spec: {clusterIP: 127.0.60.100, ports: [{name: http, port: 80, targetPort: web}]}\n",
    );
    for (i, b) in backends.iter().enumerate() {
        let ready = not_ready != Some(i);
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-{i}, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: ['{ip}'], conditions: {{ready: {ready}}}}}]\n",
            port = b.addr().port(),
            ip = b.addr().ip(),
        );
    }
    yaml
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        backends.push(spawn_http_backend(([127, 0, 60, i], 0).into()).await?);
    }
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(&manifests(&backends, None))?.into_events() {
        writer.apply(event);
    }

    let connector = SvcConnector::new(store).max_attempts(3);
    let pools = connector.pools().clone();
    // No kept-alive connections, so that every request is a new connect (and a new pick):
    // with keep-alive, hyper-util reuses a connection per authority.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);

    let get = |uri: &'static str| {
        let client = client.clone();
        async move {
            let response = client.get(uri.parse()?).await.context(uri)?;
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
        }
    };
    for uri in [
        "http://web.demo.svc.cluster.local/",
        "http://web.demo:80/",
        "http://127.0.60.100/",
    ] {
        println!("{uri:<40} -> {}", get(uri).await?);
    }

    let mut spread = BTreeMap::new();
    for _ in 0..30 {
        *spread.entry(get("http://web.demo/").await?).or_insert(0) += 1;
    }
    println!("30 connections to web.demo: {spread:?}");

    // 127.0.60.2 stops being ready: new connections go to the other two.
    for event in manifests::parse_str(&manifests(&backends, Some(1)))?.into_events() {
        writer.apply(event);
    }
    // The pool follows the store in a task of its own: wait until it has seen the change.
    let pool = pools.get(
        &ServiceKey::new("demo", "web"),
        &PortRef::Number(80, Protocol::Tcp),
        Scope::Internal,
    );
    pool.watch_endpoints()
        .wait_for(|eps| eps.len() == 2)
        .await?;
    let mut spread = BTreeMap::new();
    for _ in 0..30 {
        *spread.entry(get("http://web.demo/").await?).or_insert(0) += 1;
    }
    println!("after 127.0.60.2 turned not ready: {spread:?}");

    match client
        .get("http://nope.demo.svc.cluster.local/".parse()?)
        .await
    {
        Ok(_) => println!("unexpected answer from an unknown service"),
        Err(e) => println!(
            "unknown service fails fast: {:?}",
            std::error::Error::source(&e).map(|s| s.to_string())
        ),
    }
    for b in &backends {
        b.shutdown().await;
    }
    Ok(())
}
