//! The request layer's timeouts against real hyper servers on 127.168.x.y: a silent endpoint's
//! response timeout, and the idle timeout of pooled HTTP/1.1 connections.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use svc_tower::balance::Pools;
use svc_tower::error::ResponseTimeout;
use svc_tower::layer::{BalanceLayer, Destination, EndpointObserver, HttpVersion, NoFallback};
use svc_tower::policy::Scope;
use tower::Layer;

#[derive(Default)]
struct Failures(parking_lot::Mutex<HashMap<SocketAddr, u32>>);

impl EndpointObserver for Failures {
    fn picked(&self, _: SocketAddr) {}
    fn failed(&self, endpoint: SocketAddr) {
        *self.0.lock().entry(endpoint).or_default() += 1;
    }
}

fn layer(store: &svc_core::Store) -> (BalanceLayer<Body>, Destination, Arc<Failures>) {
    let pools = Pools::builder(store.clone()).seed(7).build();
    let pool = pools.get(&key(), &http_port(), Scope::Internal);
    let failures = Arc::new(Failures::default());
    let destination = Destination::new(pool).observer(failures.clone());
    let layer = BalanceLayer::<Body>::new(pools).http_version(HttpVersion::Http1);
    (layer, destination, failures)
}

/// An endpoint that accepts the request and never answers fails it with `ResponseTimeout`,
/// is reported as failed, and the abandoned connection is closed.
#[tokio::test]
async fn a_silent_endpoint_times_out_is_reported_and_its_connection_closed() {
    let b = Backend::start([127, 168, 1, 1]).await;
    let (_writer, store) = store(service([127, 168, 1, 100], None), &[b.addr]);
    let (layer, destination, failures) = layer(&store);
    let client = layer
        .response_timeout(Some(Duration::from_millis(200)))
        .layer(NoFallback);
    // `/hold` waits until released, which this test never does.
    let error = client
        .send_to(get("http://web.shop/hold"), &destination)
        .await
        .expect_err("no answer");
    let timeout = error
        .downcast_ref::<ResponseTimeout>()
        .unwrap_or_else(|| panic!("a ResponseTimeout, not {error}"));
    assert_eq!(timeout.endpoint, b.addr);
    assert_eq!(failures.0.lock().get(&b.addr), Some(&1));
    eventually("the abandoned connection is closed", || b.open() == 0).await;
}

/// The response timeout is each request's own: requests answered in time on one kept-alive
/// connection never time out, though together they outlast the timeout many times over (the
/// connection keeps one deadline for all of them), and the next one left unanswered does.
#[tokio::test]
async fn each_request_on_a_kept_alive_connection_gets_the_whole_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let b = Arc::new(Backend::start([127, 168, 3, 1]).await);
    let (_writer, store) = store(service([127, 168, 3, 100], None), &[b.addr]);
    let (layer, destination, failures) = layer(&store);
    let client = layer.response_timeout(Some(TIMEOUT)).layer(NoFallback);
    for _ in 0..3 {
        // Held for half the timeout, then answered.
        let backend = b.clone();
        let release = tokio::spawn(async move {
            tokio::time::sleep(TIMEOUT / 2).await;
            backend.release_one();
        });
        let response = client
            .send_to(get("http://web.shop/hold"), &destination)
            .await
            .expect("answered within the timeout");
        assert_eq!(text(response).await, b.addr.to_string());
        release.await.unwrap();
    }
    // A request without the wait: the clock does not carry over from the held ones.
    let response = client
        .send_to(get("http://web.shop/"), &destination)
        .await
        .unwrap();
    assert_eq!(text(response).await, b.addr.to_string());
    assert_eq!(b.accepted(), 1, "all on one kept-alive connection");
    assert_eq!(failures.0.lock().get(&b.addr), None);
    let error = client
        .send_to(get("http://web.shop/hold"), &destination)
        .await
        .expect_err("no answer");
    assert!(error.downcast_ref::<ResponseTimeout>().is_some(), "{error}");
    assert_eq!(failures.0.lock().get(&b.addr), Some(&1));
    eventually("the timed-out connection is closed", || b.open() == 0).await;
}

/// A kept-alive HTTP/1.1 connection unused for the pool idle timeout is closed; the next
/// request opens a new one.
#[tokio::test]
async fn idle_http1_connections_are_closed_after_the_pool_idle_timeout() {
    let b = Backend::start([127, 168, 2, 1]).await;
    let (_writer, store) = store(service([127, 168, 2, 100], None), &[b.addr]);
    let (layer, destination, _) = layer(&store);
    let client = layer
        .pool_idle_timeout(Some(Duration::from_millis(300)))
        .layer(NoFallback);
    let response = client
        .send_to(get("http://web.shop/"), &destination)
        .await
        .unwrap();
    assert_eq!(text(response).await, b.addr.to_string());
    // (The backend closes nothing by itself.)
    eventually("the idle connection is closed", || b.open() == 0).await;
    let response = client
        .send_to(get("http://web.shop/"), &destination)
        .await
        .unwrap();
    assert_eq!(text(response).await, b.addr.to_string());
    assert_eq!(b.accepted(), 2);
}
