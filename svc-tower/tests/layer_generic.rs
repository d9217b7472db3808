//! The layer over a fallback that is not hyper's client: a `tower::service_fn` answering with
//! its own body type (`Full<Bytes>`), beside a real backend on 127.90.x.y.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use svc_tower::balance::Pools;
use svc_tower::layer::{BalanceLayer, ResponseBody};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn a_fallback_with_its_own_body_type_and_a_service_share_one_balance() {
    let backend = Backend::start([127, 90, 1, 1]).await;
    let (_writer, store) = store(service([127, 90, 1, 100], None), &[backend.addr]);
    let pools = Pools::new(store);
    let calls = Arc::new(AtomicUsize::new(0));
    let fallback = tower::service_fn({
        let calls = calls.clone();
        move |req: http::Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer = format!("fallback for {}", req.uri());
            async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(answer)))) }
        }
    });
    let client = BalanceLayer::<Body>::new(pools).layer(fallback);

    // A name outside the cluster, and an address that is no Service's: the fallback answers
    // with its own body.
    for uri in ["http://example.test/a", "http://127.90.1.200:8080/b"] {
        let response = client.clone().oneshot(get(uri)).await.unwrap();
        assert!(matches!(response.body(), ResponseBody::Fallback(_)));
        assert_eq!(text(response).await, format!("fallback for {uri}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A Service, through the same `Balance`: its endpoint answers.
    let response = client
        .clone()
        .oneshot(get("http://web.shop/"))
        .await
        .unwrap();
    assert!(matches!(response.body(), ResponseBody::Endpoint(_)));
    assert_eq!(text(response).await, backend.addr.to_string());
    assert_eq!(backend.requests(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the fallback saw no Service request"
    );
}
