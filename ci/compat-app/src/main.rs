//! Type-checks svc-core and svc-tower together with an application's own choice of Kubernetes
//! version (k8s-openapi `latest`) and kube client. It is only `cargo check`ed, never run.

use k8s_openapi::api::core::v1::Service;
use kube::Api;

// Fails the check if some crate's version feature, rather than the app's `latest`, won.
k8s_openapi::k8s_if_le_1_36! {
    compile_error!("k8s-openapi is not at the app's `latest` version: a library picked one");
}

#[allow(dead_code)]
async fn app(client: kube::Client) -> Result<(), kube::Error> {
    // The app's own use of kube and k8s-openapi...
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let _first = services.list(&Default::default()).await?;
    // ...and the libraries' API source and balancing on the same client and types.
    let (store, writer) = svc_core::store::store(svc_core::StoreConfig::default());
    let (events, changes) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(writer.run(changes));
    let config = svc_core::source::kube::Config::default();
    tokio::spawn(svc_core::source::kube::run(client, config, store.clone(), events));
    let _connector = svc_tower::connect::SvcConnector::new(store);
    Ok(())
}

fn main() {}

/// What an app's test does with the fake API server; type-checked by `cargo check --tests`, not
/// run (CI only checks this crate).
#[cfg(test)]
#[allow(dead_code)]
async fn app_test_with_the_fake_api_server() {
    let slice = svc_testkit::endpoint_slice("shop", "web-1", "web")
        .port(Some("http"), 8080)
        .endpoint(svc_testkit::EndpointSpec::new("127.0.0.11"))
        .build();
    let server = svc_testkit::FakeApiServer::start().await;
    server.apply(slice);
    app(server.client()).await.unwrap();
}
