//! The request layer against real hyper servers on 127.0.0.x, with endpoints changed by
//! applying events to the store's writer.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;
use svc_core::store::Event;
use svc_tower::balance::Pools;
use svc_tower::error::{NoEndpoints, NoEndpointsReason, UnknownService};
use svc_tower::layer::{
    Balance, BalanceHolder, BalanceLayer, Destination, EndpointObserver, HttpVersion, NoFallback,
    ResponseBody,
};
use svc_tower::policy::Scope;
use svc_tower::EndpointPool;
use tower::{Layer, Service, ServiceExt};

type Client = Balance<NoFallback, Body>;

fn client(store: &svc_core::Store, version: HttpVersion) -> (Client, EndpointPool) {
    let pools = Pools::builder(store.clone()).seed(7).build();
    let pool = pools.get(&key(), &http_port(), Scope::Internal);
    let layer = BalanceLayer::<Body>::new(pools).http_version(version);
    (layer.layer(NoFallback), pool)
}

async fn send(client: &mut Client, req: http::Request<Body>) -> String {
    let response = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(response.status(), 200);
    text(response).await
}

/// Sends `n` requests and counts answers per backend.
async fn spread(client: &mut Client, n: usize, uri: &str, h2: bool) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let req = if h2 { get_h2(uri) } else { get(uri) };
        *seen.entry(send(client, req).await).or_default() += 1;
    }
    seen
}

/// Sends requests in concurrent rounds of 16 until every backend answered one (P2C spreads
/// concurrent requests by their in-flight counts; sequential requests may all go to the
/// cheapest endpoint).
async fn reach_all(client: &Client, backends: &[&Backend], uri: &str) {
    for _ in 0..100 {
        if backends.iter().all(|b| b.requests() > 0) {
            return;
        }
        let round: Vec<_> = (0..16).map(|_| client.clone().oneshot(get(uri))).collect();
        for response in futures::future::join_all(round).await {
            assert_eq!(response.unwrap().status(), 200);
        }
    }
    panic!("some backend never got a request");
}

#[tokio::test]
async fn readiness_flip_stops_requests_to_the_endpoint() {
    let backends = [
        Backend::start([127, 0, 1, 1]).await,
        Backend::start([127, 0, 1, 2]).await,
        Backend::start([127, 0, 1, 3]).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let (mut writer, store) = store(service([127, 0, 1, 100], None), &addrs);
    let (mut client, pool) = client(&store, HttpVersion::Http1);

    reach_all(
        &client,
        &backends.iter().collect::<Vec<_>>(),
        "http://web.shop/",
    )
    .await;

    writer.apply(Event::ApplySlice(slice(addrs[1], NOT_READY)));
    until_endpoints(&pool, |a| !a.contains(&addrs[1])).await;
    let before = backends[1].requests();
    let seen = spread(&mut client, 60, "http://web.shop/", false).await;
    let round: Vec<_> = (0..32)
        .map(|_| client.clone().oneshot(get("http://web.shop/")))
        .collect();
    for response in futures::future::join_all(round).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(backends[1].requests(), before, "no request after the flip");
    assert!(!seen.contains_key(&addrs[1].to_string()));
}

#[tokio::test]
async fn new_endpoint_gets_requests_on_an_existing_http2_client_without_reconnects() {
    let b1 = Backend::start([127, 0, 2, 1]).await;
    let b2 = Backend::start([127, 0, 2, 2]).await;
    let (mut writer, store) = store(
        service([127, 0, 2, 100], Some("kubernetes.io/h2c")),
        &[b1.addr, b2.addr],
    );
    let (mut client, pool) = client(&store, HttpVersion::Auto);

    let seen = spread(&mut client, 40, "http://web.shop:80/", false).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (b1.used(), b2.used()),
        (1, 1),
        "one multiplexed connection each"
    );
    // The port's appProtocol says h2c, so each endpoint was first asked on a connection of
    // its own whether it speaks HTTP/2.
    assert_eq!(
        (b1.accepted(), b2.accepted()),
        (2, 2),
        "probe + one connection"
    );

    let b3 = Backend::start([127, 0, 2, 3]).await;
    writer.apply(Event::ApplySlice(slice(b3.addr, READY)));
    until_endpoints(&pool, |a| a.contains(&b3.addr)).await;
    let seen = spread(&mut client, 60, "http://web.shop:80/", false).await;
    assert!(seen.contains_key(&b3.addr.to_string()), "{seen:?}");
    assert_eq!(
        (b1.accepted(), b2.accepted(), b3.accepted()),
        (2, 2, 2),
        "no reconnect to the old endpoints, one probe and one connection to the new"
    );
    assert_eq!((b1.used(), b2.used(), b3.used()), (1, 1, 1));
}

async fn drains(version: HttpVersion) {
    let b1 = Backend::start([127, 0, 3, 1]).await;
    let b2 = Backend::start([127, 0, 3, 2]).await;
    let (mut writer, store) = store(service([127, 0, 3, 100], None), &[b1.addr]);
    let (client, pool) = client(&store, version);
    let h2 = version == HttpVersion::Http2;
    let req = |path: &str| {
        let uri = format!("http://web.shop{path}");
        if h2 {
            get_h2(&uri)
        } else {
            get(&uri)
        }
    };

    // A request in flight on b1 while b1 is removed and b2 added.
    let held = tokio::spawn(client.clone().oneshot(req("/hold")));
    eventually("the held request reached b1", || b1.requests() == 1).await;
    writer.apply(Event::ApplySlice(slice(b2.addr, READY)));
    writer.apply(Event::DeleteSlice(slice(b1.addr, READY).key));
    until_endpoints(&pool, |a| a == [b2.addr]).await;

    // New requests go to b2 only.
    let mut c = client.clone();
    for _ in 0..10 {
        assert_eq!(send(&mut c, req("/")).await, b2.addr.to_string());
    }
    assert_eq!(b1.requests(), 1);
    assert_eq!(
        b1.open(),
        1,
        "b1's connection stays while its request is in flight"
    );

    // The request in flight finishes normally, then b1's connection is closed.
    b1.release();
    let response = held.await.unwrap().expect("the in-flight request succeeds");
    assert_eq!(text(response).await, b1.addr.to_string());
    eventually("b1's connection is closed", || b1.open() == 0).await;
    assert_eq!(b1.accepted(), 1);
}

#[tokio::test]
async fn removed_endpoint_is_drained_http1() {
    drains(HttpVersion::Http1).await;
}

#[tokio::test]
async fn removed_endpoint_is_drained_http2() {
    drains(HttpVersion::Http2).await;
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_endpoint() {
    let live = Backend::start([127, 0, 4, 1]).await;
    let dead = dead_addr([127, 0, 4, 2]).await;
    let (_writer, store) = store(service([127, 0, 4, 100], None), &[live.addr, dead]);
    let (mut client, pool) = client(&store, HttpVersion::Http1);
    for _ in 0..20 {
        assert_eq!(
            send(&mut client, get("http://web.shop/")).await,
            live.addr.to_string()
        );
    }
    let stats = pool.stats();
    let dead_stats = stats.iter().find(|s| s.addr == dead).unwrap();
    assert!(
        dead_stats.failures > 0,
        "the dead endpoint was tried: {stats:?}"
    );
}

#[tokio::test]
async fn no_endpoints_fails_fast() {
    let b = Backend::start([127, 0, 5, 1]).await;
    let (mut writer, store) = store(service([127, 0, 5, 100], None), &[b.addr]);
    writer.apply(Event::ApplySlice(slice(b.addr, NOT_READY)));
    let (client, pool) = client(&store, HttpVersion::Http1);
    until_endpoints(&pool, |a| a.is_empty()).await;
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.clone().oneshot(get("http://web.shop/")),
    )
    .await
    .expect("fails at once instead of waiting")
    .unwrap_err();
    let no = err
        .downcast_ref::<NoEndpoints>()
        .expect("a NoEndpoints error");
    assert_eq!(no.reason(), NoEndpointsReason::NoneEligible);
    assert_eq!(b.requests(), 0);

    let err = client
        .clone()
        .oneshot(get("http://nope.shop.svc.cluster.local/"))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<UnknownService>().is_some(), "{err}");
    let err = client
        .oneshot(get("http://example.invalid/"))
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<UnknownService>().is_some(),
        "NoFallback refuses: {err}"
    );
}

#[tokio::test]
async fn routes_by_cluster_ip_and_host_header_sharing_connections() {
    let b = Backend::start([127, 0, 6, 1]).await;
    let (_writer, store) = store(service([127, 0, 6, 100], None), &[b.addr]);
    let (mut client, _pool) = client(&store, HttpVersion::Http2);
    assert_eq!(
        send(&mut client, get("http://127.0.6.100:80/")).await,
        b.addr.to_string()
    );
    assert_eq!(
        send(&mut client, get("http://web.shop/")).await,
        b.addr.to_string()
    );
    let origin_form = http::Request::get("/x")
        .header(http::header::HOST, "web.shop.svc.cluster.local")
        .body(Body::new())
        .unwrap();
    assert_eq!(send(&mut client, origin_form).await, b.addr.to_string());
    assert_eq!(
        b.accepted(),
        1,
        "every name of the Service shares one HTTP/2 connection"
    );
}

#[derive(Default)]
struct Observed {
    picks: parking_lot::Mutex<HashMap<std::net::SocketAddr, u32>>,
    failures: parking_lot::Mutex<HashMap<std::net::SocketAddr, u32>>,
}

impl EndpointObserver for Observed {
    fn picked(&self, endpoint: std::net::SocketAddr) {
        *self.picks.lock().entry(endpoint).or_default() += 1;
    }
    fn failed(&self, endpoint: std::net::SocketAddr) {
        *self.failures.lock().entry(endpoint).or_default() += 1;
    }
}

/// A proxy's way in: the request names no Service (its authority is not one), yet goes to
/// the destination's pool; every attempt is reported to the observer.
///
/// Sent three ways: as an extension through `tower::Service`, with `send_to`, and with
/// `send_held` through a handle (as svc-proxy sends).
#[tokio::test]
async fn destination_routes_by_pool_and_reports_every_attempt() {
    let b1 = Backend::start([127, 0, 6, 1]).await;
    let b2 = Backend::start([127, 0, 6, 2]).await;
    let dead = dead_addr([127, 0, 6, 3]).await;
    let (_writer, store) = store(service([127, 0, 6, 100], None), &[b1.addr, b2.addr, dead]);
    let (client, pool) = client(&store, HttpVersion::Service);
    let observed = std::sync::Arc::new(Observed::default());
    let destination = Destination::new(pool).observer(observed.clone());

    // Without a destination the authority decides, and it is no Service.
    let refused = client
        .clone()
        .oneshot(get("http://elsewhere.example/"))
        .await;
    assert!(refused.unwrap_err().is::<UnknownService>());

    let mut seen = HashMap::<String, u32>::new();
    let mut sent = 0;
    for _ in 0..20 {
        let round: Vec<_> = (0..18)
            .map(|i| {
                let mut req = get("http://elsewhere.example/");
                let (client, destination) = (client.clone(), destination.clone());
                async move {
                    let sent = match i % 3 {
                        0 => {
                            req.extensions_mut().insert(destination);
                            return client.oneshot(req).await;
                        }
                        1 => client.send_to(req, &destination).await,
                        _ => {
                            let held = Held(std::sync::Arc::new((client, destination)));
                            Client::send_held(held, req).await
                        }
                    };
                    sent.map(|response| response.map(ResponseBody::Endpoint))
                }
            })
            .collect();
        for response in futures::future::join_all(round).await {
            let response = response.expect("a dead endpoint is retried elsewhere");
            assert_eq!(response.status(), 200);
            *seen.entry(text(response).await).or_default() += 1;
            sent += 1;
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let picks: u32 = observed.picks.lock().values().sum();
    let failures = observed.failures.lock().clone();
    let failed: u32 = failures.values().sum();
    assert_eq!(picks, sent + failed, "one pick per attempt");
    assert!(failures.keys().all(|a| *a == dead), "{failures:?}");
}

/// A handle for `send_held`, as a proxy's connection state would be.
struct Held(std::sync::Arc<(Client, Destination)>);

impl BalanceHolder for Held {
    type Fallback = NoFallback;
    type Body = Body;

    fn balance(&self) -> &Client {
        &self.0 .0
    }

    fn destination(&self) -> &Destination {
        &self.0 .1
    }
}
