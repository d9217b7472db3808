//! Pick cost: `EndpointPool::pick` + `Pick::success` against tower's
//! `p2c::Balance<PeakEwmaDiscover<ServiceList<..>>>` `poll_ready` + `call` + completion, on
//! the same number of endpoints (10, 100, 1000). Both are P2C over PeakEWMA.
//!
//! ```text
//! cargo bench -p svc-tower --bench pick
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use svc_core::model::{
    AddressType, Conditions, Endpoint, EndpointPort, EndpointSlice, Protocol, Service, ServicePort,
    TargetPort,
};
use svc_core::store::{Event, PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_tower::balance::{BalanceConfig, EndpointPool};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::Service as _;

const SIZES: [u32; 3] = [10, 100, 1000];

fn service() -> Service {
    Service {
        cluster_ips: vec![[10, 96, 0, 1].into()],
        ports: vec![ServicePort {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
            app_protocol: None,
        }],
        ..Service::new(ServiceKey::new("shop", "web"))
    }
}

fn slice(n: u32) -> EndpointSlice {
    EndpointSlice {
        key: ServiceKey::new("shop", "web-1"),
        service: ServiceKey::new("shop", "web"),
        address_type: AddressType::IPv4,
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        endpoints: (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    address: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                    conditions: Conditions::default(),
                    zone: None,
                    node_name: None,
                    hints: None,
                    target_ref: None,
                    hostname: None,
                })
            })
            .collect(),
        last_change_trigger_time: None,
    }
}

fn ours(rt: &tokio::runtime::Runtime, n: u32) -> EndpointPool {
    let _guard = rt.enter();
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    writer.apply(Event::ApplyService(service()));
    writer.apply(Event::ApplySlice(slice(n)));
    let pool = EndpointPool::builder(
        store,
        ServiceKey::new("shop", "web"),
        PortRef::Name(Some("http".into())),
    )
    .config(BalanceConfig::default())
    .seed(1)
    .build();
    assert_eq!(pool.endpoints().len(), n as usize);
    // Keep the writer (and so the store's watch) alive for the pool's lifetime.
    std::mem::forget(writer);
    pool
}

fn bench_pick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("pick");
    let rtt = Duration::from_micros(200);
    for n in SIZES {
        let pool = ours(&rt, n);
        group.bench_with_input(BenchmarkId::new("svc-tower", n), &n, |b, _| {
            b.iter(|| {
                let pick = pool.pick(None).unwrap();
                black_box(pick.addr);
                pick.success(rtt);
            })
        });

        let _guard = rt.enter();
        let services = (0..n).map(|_| tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
        let discover = PeakEwmaDiscover::new::<()>(
            ServiceList::new(services.collect::<Vec<_>>()),
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        let mut balance = Balance::new(discover);
        let mut cx = Context::from_waker(Waker::noop());
        // Discover every endpoint before measuring.
        assert!(balance.poll_ready(&mut cx).is_ready());
        group.bench_with_input(BenchmarkId::new("tower-p2c", n), &n, |b, _| {
            b.iter(|| {
                match balance.poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    other => panic!("not ready: {:?}", other.map(|r| r.is_ok())),
                }
                let fut = pin!(balance.call(()));
                match fut.poll(&mut cx) {
                    Poll::Ready(r) => black_box(r.is_ok()),
                    Poll::Pending => panic!("service_fn answers at once"),
                };
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
