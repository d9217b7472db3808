//! `SvcConnector` with hyper-util's client at its DEFAULT pool settings (the setup users
//! write first): requests are spread over the endpoints one by one, keep-alive is kept, and
//! after a readiness flip no new request reaches the pod.

mod support;

use std::collections::HashMap;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svc_core::store::Event;
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use svc_tower::policy::Scope;

fn pools(store: &svc_core::Store) -> Pools {
    Pools::builder(store.clone()).seed(11).build()
}

type DefaultClient = Client<SvcConnector, Body>;

fn default_client(pools: &Pools) -> DefaultClient {
    Client::builder(TokioExecutor::new()).build(SvcConnector::with_pools(pools.clone()))
}

async fn get(client: &DefaultClient, path: &str) -> String {
    let uri = format!("http://web.shop{path}");
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    text(response).await
}

async fn serial(client: &DefaultClient, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(get(client, "/").await).or_default() += 1;
    }
    seen
}

async fn concurrent(client: &DefaultClient, n: usize) {
    let round: Vec<_> = (0..n).map(|_| get(client, "/")).collect();
    futures::future::join_all(round).await;
}

#[tokio::test]
async fn serial_requests_on_the_default_pool_rotate_over_endpoints_and_keep_alive() {
    let backends = [
        Backend::start([127, 110, 1, 1]).await,
        Backend::start([127, 110, 1, 2]).await,
        Backend::start([127, 110, 1, 3]).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let (_w, store) = store(service([127, 110, 1, 100], None), &addrs);
    let pools = pools(&store);
    let client = default_client(&pools);
    let seen = serial(&client, 300).await;

    // One request at a time over one pooled hyper-util connection: a plain connector sends
    // all 300 to one pod. Here each request is picked for, and equal endpoints rotate (the
    // issue's goal is a share in [0.25, 0.42]; latency noise on a loaded machine may move a
    // few requests, see the fairness table in examples/tests for the bound).
    for b in &backends {
        let share = seen[&b.addr.to_string()] as f64 / 300.0;
        assert!((0.25..=0.42).contains(&share), "{seen:?}");
        // ...over kept-alive connections: one per endpoint, not one per request.
        assert_eq!(b.accepted(), 1, "{}", b.addr);
    }
}

#[tokio::test]
async fn after_a_readiness_flip_no_request_reaches_the_pod_on_the_default_pool() {
    let backends = [
        Backend::start([127, 110, 2, 1]).await,
        Backend::start([127, 110, 2, 2]).await,
        Backend::start([127, 110, 2, 3]).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let (mut w, store) = store(service([127, 110, 2, 100], None), &addrs);
    let pools = pools(&store);
    let pool = pools.get(&key(), &http_port(), Scope::Internal);
    let client = default_client(&pools);
    // hyper-util now pools 16 connections, and every endpoint has kept-alive connections.
    concurrent(&client, 16).await;
    serial(&client, 30).await;
    assert!(backends.iter().all(|b| b.requests() > 0));

    // Six requests are in flight, spread by their count in flight, when the pod stops being
    // ready: all six finish.
    let counts = |bs: &[Backend]| bs.iter().map(|b| b.requests()).collect::<Vec<_>>();
    let warm = counts(&backends);
    let held: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, "/hold").await })
        })
        .collect();
    let new = |bs: &[Backend]| -> Vec<u64> {
        counts(bs)
            .iter()
            .zip(&warm)
            .map(|(now, then)| now - then)
            .collect()
    };
    eventually("six held requests", || {
        new(&backends).iter().sum::<u64>() == 6
    })
    .await;
    assert!(
        new(&backends)[1] > 0,
        "the pod holds one: {:?}",
        new(&backends)
    );
    w.apply(Event::ApplySlice(slice(addrs[1], NOT_READY)));
    until_endpoints(&pool, |a| !a.contains(&addrs[1])).await;
    let before = backends[1].requests();
    for b in &backends {
        b.release();
    }
    for h in held {
        assert!(!h.await.unwrap().is_empty());
    }

    // Every pooled hyper-util connection is used again, serially and 16 at once.
    let seen = serial(&client, 60).await;
    concurrent(&client, 16).await;
    concurrent(&client, 16).await;
    assert_eq!(
        backends[1].requests(),
        before,
        "no new request after the flip"
    );
    assert!(!seen.contains_key(&addrs[1].to_string()));
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Ready again: it gets the very next request.
    w.apply(Event::ApplySlice(slice(addrs[1], READY)));
    until_endpoints(&pool, |a| a.contains(&addrs[1])).await;
    assert_eq!(get(&client, "/").await, addrs[1].to_string());
}

#[tokio::test]
async fn a_refusing_endpoint_costs_no_request() {
    let live = [
        Backend::start([127, 110, 3, 1]).await,
        Backend::start([127, 110, 3, 2]).await,
    ];
    let dead = dead_addr([127, 110, 3, 3]).await;
    let (_w, store) = store(
        service([127, 110, 3, 100], None),
        &[live[0].addr, live[1].addr, dead],
    );
    let pools = pools(&store);
    let client = default_client(&pools);
    // Each request that is picked for the dead endpoint is connected elsewhere: none fails.
    let seen = serial(&client, 90).await;
    assert_eq!(seen.values().sum::<usize>(), 90);
    let stats = pools.get(&key(), &http_port(), Scope::Internal).stats();
    let dead = stats.iter().find(|s| s.addr == dead).unwrap();
    // It loses every comparison after its first failure, is tried again only when passed
    // over for more than 24 picks, and is ejected at the fifth failure in a row.
    assert!((1..=4).contains(&dead.failures), "{stats:?}");
}
