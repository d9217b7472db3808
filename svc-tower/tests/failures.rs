//! A pod that starts refusing connections while still ready (killed with SIGKILL, say): it
//! loses every comparison at once, is retried only by the starvation rule, and is ejected at
//! the fifth failure in a row, even with 3 endpoints (Envoy ejects one host whatever
//! `max_ejection_percent` says). No request fails meanwhile: each is retried elsewhere.

mod support;

use support::*;
use svc_tower::balance::Pools;
use svc_tower::layer::{BalanceLayer, HttpVersion, NoFallback};
use svc_tower::policy::Scope;
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn a_pod_that_starts_refusing_gets_one_pick_in_twenty_and_is_ejected() {
    let backends = vec![
        Backend::start([127, 110, 4, 1]).await,
        Backend::start([127, 110, 4, 2]).await,
        Backend::start([127, 110, 4, 3]).await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let (_w, store) = store(service([127, 110, 4, 100], None), &addrs);
    let pools = Pools::builder(store.clone()).seed(5).build();
    let pool = pools.get(&key(), &http_port(), Scope::Internal);
    let client = BalanceLayer::<Body>::new(pools)
        .http_version(HttpVersion::Http1)
        .layer(NoFallback);
    let send = || async {
        let response = client
            .clone()
            .oneshot(get("http://web.shop/"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        text(response).await
    };
    for _ in 0..30 {
        send().await;
    }

    let mut backends = backends;
    let dead = backends.remove(1);
    let dead_addr = dead.addr;
    dead.stop().await;
    wait_refused(dead_addr).await;
    let picks_of_dead = || {
        pool.stats()
            .into_iter()
            .find(|s| s.addr == dead_addr)
            .map_or(0, |s| s.requests)
    };
    let before = picks_of_dead();
    // Which of the next 200 requests tried the dead pod (every one of them is answered).
    let mut tried_at = Vec::new();
    for i in 0..200 {
        let picks = picks_of_dead();
        send().await;
        if picks_of_dead() > picks {
            tried_at.push(i);
        }
    }
    assert!(
        tried_at[0] < 3,
        "the rotation reaches it at once: {tried_at:?}"
    );
    for w in tried_at.windows(2) {
        assert!(w[1] - w[0] >= 20, "at most 1 of every 20: {tried_at:?}");
    }
    let stats = pool.stats();
    let dead = stats.iter().find(|s| s.addr == dead_addr).unwrap();
    assert!(dead.ejected, "{stats:?}");
    assert_eq!(dead.failures, 5, "{stats:?}");
    assert_eq!(picks_of_dead() - before, 5, "{tried_at:?}");
}

/// Waits until nothing accepts connections on `addr`.
async fn wait_refused(addr: std::net::SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections");
}
