//! Dual stack: a URI whose host is one of a dual-stack Service's cluster IPs reaches only
//! that family's endpoints (as kube-proxy would take the connection); a URI by name reaches
//! every family. Through the request layer and through the connector, against real servers
//! on 127.220.1.x and `::1`.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svc_core::model::{AddressType, EndpointSlice};
use svc_core::store::{Event, StoreConfig, Writer};
use svc_core::Store;
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use svc_tower::layer::{BalanceLayer, NoFallback};
use tower::{Layer, ServiceExt};

const V4_VIP: &str = "127.220.1.100";
/// Never bound: the client resolves it from the store and connects to endpoints.
const V6_VIP: &str = "[fd00:220:1::100]";

/// Rounds of concurrent requests: P2C spreads concurrent requests by their in-flight
/// counts, so every endpoint a URI can reach gets some (sequential ones may all go to the
/// cheapest endpoint, which would hide a mix).
const ROUNDS: usize = 8;
const PER_ROUND: usize = 16;

struct Backends {
    v4: Vec<Backend>,
    v6: Vec<Backend>,
}

impl Backends {
    async fn start() -> Self {
        let v4 = vec![
            Backend::start([127, 220, 1, 1]).await,
            Backend::start([127, 220, 1, 2]).await,
        ];
        let mut v6 = Vec::new();
        for _ in 0..2 {
            v6.push(Backend::start_on("[::1]:0".parse().unwrap()).await);
        }
        Self { v4, v6 }
    }

    fn requests(backends: &[Backend]) -> u64 {
        backends.iter().map(Backend::requests).sum()
    }
}

/// `shop/web` with an IPv4 and an IPv6 cluster IP, one slice per backend of its family.
fn dual_stack_store(backends: &Backends) -> (Writer, Store) {
    let vip = |s: &str| {
        s.trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .expect("a cluster IP")
    };
    let svc = svc_core::model::Service {
        cluster_ips: vec![vip(V4_VIP), vip(V6_VIP)],
        ..service([127, 220, 1, 100], None)
    };
    let v6_slice = |addr: SocketAddr| EndpointSlice {
        address_type: AddressType::IPv6,
        ..slice(addr, READY)
    };
    let slices = backends
        .v4
        .iter()
        .map(|b| slice(b.addr, READY))
        .chain(backends.v6.iter().map(|b| v6_slice(b.addr)))
        .collect();
    let config = StoreConfig::default().default_namespace("shop");
    let (store, mut writer) = svc_core::store::store(config);
    writer.apply(Event::ReplaceServices {
        services: vec![svc],
        retain: vec![],
    });
    writer.apply(Event::ReplaceSlices {
        slices,
        retain: vec![],
    });
    (writer, store)
}

fn pools(store: &Store) -> Pools {
    Pools::builder(store.clone()).seed(11).build()
}

/// Sends `ROUNDS` rounds of `PER_ROUND` concurrent GETs with `send`, each answered 200.
async fn rounds<F, Fut>(send: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    for _ in 0..ROUNDS {
        let round: Vec<_> = (0..PER_ROUND).map(|_| send()).collect();
        for status in futures::future::join_all(round).await {
            assert_eq!(status, 200);
        }
    }
}

/// After `send`ing to each cluster IP, what reached the other family (empty when right).
async fn strays<F, Fut>(backends: &Backends, send: F) -> Vec<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut strays = Vec::new();
    for (vip, own, other) in [
        (V4_VIP, &backends.v4, &backends.v6),
        (V6_VIP, &backends.v6, &backends.v4),
    ] {
        let uri = format!("http://{vip}:80/");
        let (own_before, other_before) = (Backends::requests(own), Backends::requests(other));
        rounds(|| send(uri.clone())).await;
        let (to_own, to_other) = (
            Backends::requests(own) - own_before,
            Backends::requests(other) - other_before,
        );
        assert_eq!(to_own + to_other, (ROUNDS * PER_ROUND) as u64, "{uri}");
        if to_other > 0 {
            strays.push(format!(
                "{to_other} of {} requests to {uri} reached the other family",
                ROUNDS * PER_ROUND
            ));
        }
    }
    strays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_keeps_each_cluster_ip_on_its_family() {
    let backends = Backends::start().await;
    let (_writer, store) = dual_stack_store(&backends);
    let client = BalanceLayer::<Body>::new(pools(&store)).layer(NoFallback);
    let send = |uri: String| {
        let client = client.clone();
        async move { client.oneshot(get(&uri)).await.unwrap().status().as_u16() }
    };
    let strays = strays(&backends, send).await;
    assert!(strays.is_empty(), "{strays:#?}");

    // By name: every family (each family's cluster IP is one DNS answer away).
    let all: Vec<&Backend> = backends.v4.iter().chain(&backends.v6).collect();
    for _ in 0..100 {
        if all.iter().all(|b| b.requests() > 0) {
            break;
        }
        rounds(|| send("http://web.shop/".into())).await;
    }
    let idle: Vec<_> = all
        .iter()
        .filter(|b| b.requests() == 0)
        .map(|b| b.addr)
        .collect();
    assert!(idle.is_empty(), "never reached by name: {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_keeps_each_cluster_ip_on_its_family() {
    let backends = Backends::start().await;
    let (_writer, store) = dual_stack_store(&backends);
    // No idle connections kept: every request connects, and so picks, anew.
    let client: Arc<Client<_, Body>> = Arc::new(
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(SvcConnector::with_pools(pools(&store))),
    );
    let send = |uri: String| {
        let client = client.clone();
        async move { client.request(get(&uri)).await.unwrap().status().as_u16() }
    };
    let strays = strays(&backends, send).await;
    assert!(strays.is_empty(), "{strays:#?}");
}
