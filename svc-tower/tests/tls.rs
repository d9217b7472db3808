//! `https://` never leaves in cleartext: the connector refuses it unless a TLS connector wraps
//! it, and the layer (cleartext HTTP/1.1 and h2c only) always refuses it. With hyper-rustls
//! around the connector, requests reach a TLS pod.

mod support;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use svc_tower::error::TlsRequired;
use svc_tower::layer::{BalanceLayer, NoFallback};
use tower::{Layer, ServiceExt};

fn pools(store: &svc_core::Store) -> Pools {
    Pools::builder(store.clone()).seed(5).build()
}

#[tokio::test]
async fn https_through_the_connector_alone_is_refused_before_any_connect() {
    let b = Backend::start([127, 0, 90, 1]).await;
    let (_w, store) = store(service([127, 0, 90, 100], None), &[b.addr]);
    let client: Client<_, Body> =
        Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools(&store)));
    for uri in [
        "https://web.shop/",
        "https://web.shop:80/",
        "https://127.0.90.100:80/",
    ] {
        let err = client.get(uri.parse().unwrap()).await.unwrap_err();
        let tls = cause::<TlsRequired>(&err).unwrap_or_else(|| panic!("{uri}: {err:?}"));
        assert_eq!(tls.scheme, "https");
    }
    assert_eq!(b.accepted(), 0, "no cleartext connection was made");
    // Plain http still works on the same connector.
    let response = client.get("http://web.shop/".parse().unwrap()).await;
    assert_eq!(response.unwrap().status(), 200);
}

#[tokio::test]
async fn https_through_the_layer_is_refused_before_any_connect() {
    let b = Backend::start([127, 0, 90, 11]).await;
    let (_w, store) = store(service([127, 0, 90, 110], None), &[b.addr]);
    let client = BalanceLayer::<Body>::new(pools(&store)).layer(NoFallback);
    let err = client
        .clone()
        .oneshot(get("https://web.shop:80/"))
        .await
        .unwrap_err();
    assert!(cause::<TlsRequired>(&*err).is_some(), "{err:?}");
    assert_eq!(b.accepted(), 0, "no cleartext connection was made");
    let response = client.oneshot(get("http://web.shop/")).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn hyper_rustls_around_the_connector_reaches_a_tls_pod() {
    let pod = svc_testkit::spawn_tls_backend("127.0.90.21:0".parse().unwrap(), "web.shop")
        .await
        .unwrap();
    let (_w, store) = store(service([127, 0, 90, 120], None), &[pod.addr]);
    let tls = svc_testkit::tls_client_config([&pod]).unwrap();
    let connector = SvcConnector::with_pools(pools(&store)).enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(connector);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    for _ in 0..3 {
        let response = client
            .get("https://web.shop:80/".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(text(response).await, pod.addr.to_string());
    }
    assert_eq!(pod.requests(), 3);
    assert_eq!(pod.handshakes_failed(), 0);
}
