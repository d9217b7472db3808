//! `https://` to a Service through svc-tower: hyper-rustls's `HttpsConnector` wraps
//! `SvcConnector`, which picks a live endpoint of the Service for each new connection; TLS
//! then runs to that pod, with the Service name as the server name.
//!
//! ```text
//! cargo run -p examples --example tower-tls
//! ```
//!
//! Runs standalone: it starts two TLS backends on 127.0.61.1-2 with a self-signed
//! certificate for `web.demo`, describes them in manifests (Service `web` in namespace
//! `demo`, cluster IP 127.0.61.100, port 443), and sends requests. It also shows that the
//! connector on its own refuses `https://` (it would otherwise send the request in
//! cleartext). No cluster needed; it exits when done.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svc_core::source::manifests;
use svc_core::store::StoreConfig;
use svc_testkit::{spawn_tls_backend, tls_client_config, TlsBackend};
use svc_tower::connect::SvcConnector;
use svc_tower::error::TlsRequired;

fn manifests(pods: &[TlsBackend]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n\
         spec: {clusterIP: 127.0.61.100, ports: [{name: https, port: 443}]}\n",
    );
    for (i, pod) in pods.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-{i}, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: https, port: {port}}}]\n\
             endpoints: [{{addresses: ['{ip}']}}]\n",
            port = pod.addr.port(),
            ip = pod.addr.ip(),
        );
    }
    yaml
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut pods = Vec::new();
    for i in 1..=2u8 {
        pods.push(spawn_tls_backend(([127, 0, 61, i], 0).into(), "web.demo").await?);
    }
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in manifests::parse_str(&manifests(&pods))?.into_events() {
        writer.apply(event);
    }

    // The connector alone speaks cleartext, so it refuses https:// before connecting.
    let plain: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::new(store.clone()));
    let refused = plain.get("https://web.demo/".parse()?).await.unwrap_err();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&refused);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<TlsRequired>() {
            println!("without TLS: {tls}");
        }
        cause = e.source();
    }

    // With TLS: trust the pods' certificate (in a cluster: your CA; see
    // `tls_client_config`), let https:// through the connector, and wrap it.
    let tls = tls_client_config(&pods)?;
    let connector = SvcConnector::new(store).enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(connector);
    // No kept-alive connections, so that each request is a new connection and a new pick
    // (inside TLS the connector cannot route requests one by one).
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https);
    for _ in 0..4 {
        let response = client
            .get("https://web.demo/".parse()?)
            .await
            .context("https://web.demo/")?;
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "https://web.demo/ answered by {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
