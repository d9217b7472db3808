//! `BalanceLayer::max_in_flight`: backpressure in `poll_ready`, against a real backend on
//! 127.90.x.y whose `/hold` requests answer only when the test lets them.

mod support;

use futures::future::select_all;
use support::*;
use svc_tower::balance::Pools;
use svc_tower::error::{ConnectFailed, NotReady};
use svc_tower::layer::{BalanceLayer, HttpVersion, NoFallback};
use tokio::task::JoinHandle;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock::Spawn;

type Client = svc_tower::layer::Balance<NoFallback, Body>;
type Held = JoinHandle<
    Result<http::Response<svc_tower::layer::ResponseBody<hyper::body::Incoming>>, BoxError>,
>;
type BoxError = svc_tower::error::BoxError;

fn layer(store: &svc_core::Store) -> BalanceLayer<Body> {
    let pools = Pools::builder(store.clone()).seed(7).build();
    BalanceLayer::<Body>::new(pools).http_version(HttpVersion::Http1)
}

/// `n` requests to `/hold` through clones of `client`, once the backend has them all.
async fn hold(client: &Client, backend: &Backend, n: u64) -> Vec<Held> {
    let before = backend.requests();
    let held = (0..n)
        .map(|_| tokio::spawn(client.clone().oneshot(get("http://web.shop/hold"))))
        .collect();
    eventually("the held requests reach the backend", || {
        backend.requests() == before + n
    })
    .await;
    held
}

/// Lets one held request answer and checks its response.
async fn answer_one(backend: &Backend, held: Vec<Held>) -> Vec<Held> {
    backend.release_one();
    let (done, _, rest) = select_all(held).await;
    let response = done.unwrap().expect("the held request is answered");
    assert_eq!(text(response).await, backend.addr.to_string());
    rest
}

#[tokio::test]
async fn poll_ready_is_pending_while_max_in_flight_requests_are_out() {
    let backend = Backend::start([127, 90, 2, 1]).await;
    let (_writer, store) = store(service([127, 90, 2, 100], None), &[backend.addr]);
    let layer = layer(&store).max_in_flight(Some(2));
    let (first, second) = (layer.layer(NoFallback), layer.layer(NoFallback));

    let held = hold(&first, &backend, 2).await;
    // Another service of the same layer shares the limit.
    let mut waiting = Spawn::new(second.clone());
    assert!(
        waiting.poll_ready().is_pending(),
        "two of two are in flight"
    );
    assert!(!waiting.is_woken());

    // A response head gives its permit back, and wakes the waiting task.
    let held = answer_one(&backend, held).await;
    assert!(waiting.is_woken(), "the freed permit wakes the waiter");
    assert!(waiting.poll_ready().is_ready());
    // The permit `waiting` holds counts: nothing is left for a third.
    let mut third = Spawn::new(first.clone());
    assert!(third.poll_ready().is_pending());

    let response = waiting.call(get("http://web.shop/")).await.unwrap();
    assert_eq!(text(response).await, backend.addr.to_string());
    assert!(third.is_woken());
    assert!(third.poll_ready().is_ready());

    let held = answer_one(&backend, held).await;
    assert!(held.is_empty());
}

#[tokio::test]
async fn without_a_limit_poll_ready_stays_ready_and_call_needs_no_poll_ready() {
    let backend = Backend::start([127, 90, 3, 1]).await;
    let (_writer, store) = store(service([127, 90, 3, 100], None), &[backend.addr]);
    let client = layer(&store).layer(NoFallback);

    let mut held = hold(&client, &backend, 3).await;
    assert!(Spawn::new(client.clone()).poll_ready().is_ready());
    let response = client.clone().call(get("http://web.shop/")).await.unwrap();
    assert_eq!(text(response).await, backend.addr.to_string());
    while !held.is_empty() {
        held = answer_one(&backend, held).await;
    }
}

#[tokio::test]
async fn failed_and_dropped_requests_give_their_permit_back() {
    let dead = dead_addr([127, 90, 4, 1]).await;
    let (_writer, store) = store(service([127, 90, 4, 100], None), &[dead]);
    let client = layer(&store)
        .max_attempts(1)
        .max_in_flight(Some(1))
        .layer(NoFallback);
    let mut a = Spawn::new(client.clone());
    let mut b = Spawn::new(client.clone());

    assert!(a.poll_ready().is_ready());
    assert!(b.poll_ready().is_pending());
    let error = a.call(get("http://web.shop/")).await.unwrap_err();
    assert!(error.is::<ConnectFailed>(), "{error}");
    assert!(b.is_woken());
    assert!(b.poll_ready().is_ready());

    // A response future dropped before it finished releases its permit too.
    drop(b.call(get("http://web.shop/")));
    assert!(a.poll_ready().is_ready());

    // `call` without a permit fails clearly instead of going over the limit (or panicking).
    let mut c = client.clone();
    let error = c.call(get("http://web.shop/")).await.unwrap_err();
    assert!(error.is::<NotReady>(), "{error}");
}

/// tower's `LoadShed` in front fails a request at once while the limit is reached, instead
/// of waiting (as the docs advise for Envoy-like fail-fast).
#[tokio::test]
async fn load_shed_in_front_fails_fast_at_the_limit() {
    let backend = Backend::start([127, 90, 5, 1]).await;
    let (_writer, store) = store(service([127, 90, 5, 100], None), &[backend.addr]);
    let client = layer(&store).max_in_flight(Some(1)).layer(NoFallback);
    let shed = tower::ServiceBuilder::new()
        .load_shed()
        .service(client.clone());

    let held = hold(&client, &backend, 1).await;
    let error = shed
        .clone()
        .oneshot(get("http://web.shop/"))
        .await
        .unwrap_err();
    assert!(error.is::<tower::load_shed::error::Overloaded>(), "{error}");
    assert_eq!(backend.requests(), 1, "the shed request was not sent");

    let held = answer_one(&backend, held).await;
    assert!(held.is_empty());
    let response = shed.oneshot(get("http://web.shop/")).await.unwrap();
    assert_eq!(text(response).await, backend.addr.to_string());
}
