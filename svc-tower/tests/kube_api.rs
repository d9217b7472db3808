//! HTTP-level tier: endpoints change through svc-testkit's fake API server, watched by
//! `kube::Client` and svc-core's Kubernetes source, while the layer sends real requests.

mod support;

use support::{get, text, until_endpoints, Backend, Body};
use svc_core::store::{PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer};
use svc_tower::balance::Pools;
use svc_tower::layer::{BalanceLayer, NoFallback};
use svc_tower::policy::Scope;
use tower::{Layer, ServiceExt};

fn slice(name: &str, b: &Backend, ready: bool) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    endpoint_slice("shop", name, "web")
        .port(Some("http"), i32::from(b.addr.port()))
        .endpoint(EndpointSpec::new(&b.addr.ip().to_string()).ready(ready))
        .build()
}

/// A store fed by svc-core's Kubernetes source watching `api`, cluster-wide.
fn watch_api(api: &FakeApiServer) -> svc_core::Store {
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(writer.run(rx));
    tokio::spawn(svc_core::source::kube::run(
        api.client(),
        Default::default(),
        store.clone(),
        tx,
    ));
    store
}

#[tokio::test]
async fn readiness_flip_and_new_pod_through_the_api_server() {
    let api = FakeApiServer::start().await;
    let b1 = Backend::start([127, 0, 20, 1]).await;
    let b2 = Backend::start([127, 0, 20, 2]).await;
    api.apply_service(
        service("shop", "web")
            .cluster_ip("127.0.20.100")
            .port_named_target("http", 80, "web")
            .build(),
    );
    api.apply_slice(slice("web-a", &b1, true));

    let store = watch_api(&api);
    store.wait_until_ready().await;

    let pools = Pools::new(store.clone());
    let pool = pools.get(
        &ServiceKey::new("shop", "web"),
        &PortRef::Number(80, svc_core::model::Protocol::Tcp),
        Scope::Internal,
    );
    let client = BalanceLayer::<Body>::new(pools).layer(NoFallback);
    let response = client
        .clone()
        .oneshot(get("http://web.shop/"))
        .await
        .unwrap();
    assert_eq!(text(response).await, b1.addr.to_string());

    // A new pod becomes ready in its own slice; the old one stops being ready.
    api.apply_slice(slice("web-b", &b2, true));
    api.apply_slice(slice("web-a", &b1, false));
    until_endpoints(&pool, |a| a == [b2.addr]).await;
    let before = b1.requests();
    for _ in 0..20 {
        let response = client
            .clone()
            .oneshot(get("http://web.shop/"))
            .await
            .unwrap();
        assert_eq!(text(response).await, b2.addr.to_string());
    }
    assert_eq!(b1.requests(), before);
}

/// A store that cannot sync (RBAC forbids the list) fails the request quickly with
/// `NoEndpoints`/`NotSynced` carrying the source's 403, not a 5 s wait then `UnknownService`.
#[tokio::test]
async fn forbidden_source_surfaces_as_not_synced_with_the_403() {
    let api = FakeApiServer::start().await;
    api.set_rbac(Some(svc_testkit::Rbac::new(
        "system:serviceaccount:shop:app",
    )));
    let store = watch_api(&api);
    let pools = Pools::new(store.clone());
    // A sync timeout far above the error grace: reaching it would give a timeout, not the 403.
    let client = BalanceLayer::<Body>::new(pools)
        .sync_timeout(std::time::Duration::from_secs(60))
        .layer(NoFallback);
    let error = client
        .oneshot(get("http://web.shop.svc.cluster.local/"))
        .await
        .expect_err("not synced");
    let no_endpoints = error
        .downcast_ref::<svc_tower::error::NoEndpoints>()
        .unwrap_or_else(|| panic!("NoEndpoints, got {error}"));
    assert_eq!(
        no_endpoints.reason(),
        svc_tower::error::NoEndpointsReason::NotSynced
    );
    let cause = no_endpoints.not_synced_cause().expect("the cause");
    let source = cause.source_error().expect("the source's error");
    match source
        .error()
        .downcast_ref::<svc_core::source::kube::Error>()
    {
        Some(svc_core::source::kube::Error::Forbidden { verb, .. }) => assert_eq!(*verb, "list"),
        other => panic!("expected a 403, got {other:?}"),
    }
    assert!(error.to_string().contains("403 Forbidden"), "{error}");
}
