//! The connector and resolver with hyper-util's client, against real hyper servers.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svc_core::model::ServiceType;
use svc_core::store::Event;
use svc_tower::balance::Pools;
use svc_tower::connect::{SvcConnector, SvcResolver};
use svc_tower::error::{ConnectFailed, NoEndpoints, UnknownService};
use svc_tower::policy::Scope;

fn pools(store: &svc_core::Store) -> Pools {
    Pools::builder(store.clone()).seed(3).build()
}

async fn get_text<C>(client: &Client<C, Body>, uri: &str) -> String
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    text(response).await
}

#[tokio::test]
async fn every_service_name_form_and_the_cluster_ip_reach_the_target_port() {
    let b = Backend::start([127, 0, 10, 1]).await;
    let (_w, store) = store(service([127, 0, 10, 100], None), &[b.addr]);
    let client: Client<_, Body> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools(&store)));
    for uri in [
        "http://web.shop.svc.cluster.local:80/",
        "http://web.shop.svc.cluster.local./",
        "http://web.shop:80/",
        "http://web/",
        "http://127.0.10.100:80/",
    ] {
        assert_eq!(get_text(&client, uri).await, b.addr.to_string(), "{uri}");
    }
}

#[tokio::test]
async fn connects_are_balanced_and_a_dead_endpoint_is_retried_elsewhere() {
    let live = [
        Backend::start([127, 0, 11, 1]).await,
        Backend::start([127, 0, 11, 2]).await,
    ];
    let dead = dead_addr([127, 0, 11, 3]).await;
    let (_w, store) = store(
        service([127, 0, 11, 100], None),
        &[live[0].addr, live[1].addr, dead],
    );
    let pools = pools(&store);
    // No keep-alive: every request makes a new connection, so every request is a pick.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(SvcConnector::with_pools(pools.clone()));
    for _ in 0..30 {
        get_text(&client, "http://web.shop/").await;
    }
    assert!(live[0].accepted() > 0 && live[1].accepted() > 0);
    let stats = pools.get(&key(), &http_port(), Scope::Internal).stats();
    let dead = stats.iter().find(|s| s.addr == dead).unwrap();
    assert!(
        dead.failures > 0,
        "the dead endpoint was tried and reported: {stats:?}"
    );
}

#[tokio::test]
async fn typed_errors_surface_through_the_client() {
    let dead = dead_addr([127, 0, 12, 1]).await;
    let b = Backend::start([127, 0, 12, 2]).await;
    let (mut w, store) = store(service([127, 0, 12, 100], None), &[dead]);
    let client: Client<_, Body> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools(&store)));

    let err = client
        .get("http://web.shop/".parse().unwrap())
        .await
        .unwrap_err();
    let failed = cause::<ConnectFailed>(&err).expect("ConnectFailed");
    assert_eq!(failed.addr, dead);

    w.apply(Event::ApplySlice(slice(dead, NOT_READY)));
    let pool = pools(&store).get(&key(), &http_port(), Scope::Internal);
    until_endpoints(&pool, |a| a.is_empty()).await;
    let err = client
        .get("http://web.shop/".parse().unwrap())
        .await
        .unwrap_err();
    assert!(cause::<NoEndpoints>(&err).is_some(), "{err:?}");

    let err = client
        .get("http://other.shop.svc/".parse().unwrap())
        .await
        .unwrap_err();
    assert!(cause::<UnknownService>(&err).is_some(), "{err:?}");
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn resolver_works_with_hyper_utils_http_connector() {
    let b = Backend::start([127, 0, 13, 1]).await;
    let (_w, store) = store(service([127, 0, 13, 100], None), &[b.addr]);
    let resolver = SvcResolver::with_pools(pools(&store)).disable_dns();
    let connector = HttpConnector::new_with_resolver(resolver);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    // Without an explicit port the resolver's target port is used.
    let response = client
        .get("http://web.shop/".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(text(response).await, b.addr.to_string());
}

#[tokio::test]
async fn external_name_and_outside_names_go_through_hickory() {
    // "localhost" is answered by hickory from the hosts file (no DNS traffic leaves the host).
    let b = Backend::start([127, 0, 0, 1]).await;
    let mut external = service([127, 0, 14, 100], None);
    external.key = svc_core::ServiceKey::new("shop", "ext");
    external.service_type = ServiceType::ExternalName;
    external.cluster_ips.clear();
    external.external_name = Some(Arc::from("localhost"));
    let (mut w, store) = store(service([127, 0, 14, 101], None), &[]);
    w.apply(Event::ApplyService(external));
    let client: Client<_, Body> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools(&store)));
    let port = b.addr.port();
    assert_eq!(
        get_text(&client, &format!("http://ext.shop:{port}/")).await,
        b.addr.to_string()
    );
    assert_eq!(
        get_text(&client, &format!("http://localhost:{port}/")).await,
        b.addr.to_string()
    );
    // A plain IP that is no Service address is connected to as is.
    let direct: SocketAddr = b.addr;
    assert_eq!(
        get_text(&client, &format!("http://{direct}/")).await,
        b.addr.to_string()
    );
}
