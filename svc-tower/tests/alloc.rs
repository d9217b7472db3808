//! `EndpointPool::pick` allocates nothing (counted with dhat's global allocator).

use std::time::Duration;

use svc_core::model::{Conditions, Endpoint, EndpointPort, EndpointSlice, Protocol, ServicePort};
use svc_core::store::{Event, PortRef, StoreConfig};
use svc_core::ServiceKey;
use svc_tower::balance::{BalanceConfig, EndpointPool};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

mod support;

fn many_endpoints(n: u32) -> EndpointSlice {
    let endpoints = (0..n)
        .map(|i| {
            std::sync::Arc::new(Endpoint {
                address: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                conditions: Conditions::default(),
                zone: None,
                node_name: None,
                hints: None,
                target_ref: None,
                hostname: None,
            })
        })
        .collect();
    EndpointSlice {
        key: ServiceKey::new("shop", "web-1"),
        service: support::key(),
        address_type: svc_core::model::AddressType::IPv4,
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        endpoints,
        last_change_trigger_time: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pick_and_report_allocate_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut svc = support::service([127, 0, 50, 100], None);
    svc.ports = vec![ServicePort {
        target_port: svc_core::model::TargetPort::Number(8080),
        ..svc.ports[0].clone()
    }];
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    writer.apply(Event::ApplyService(svc));
    writer.apply(Event::ApplySlice(many_endpoints(100)));
    let pool = EndpointPool::builder(store, support::key(), PortRef::Number(80, Protocol::Tcp))
        .config(BalanceConfig::default())
        .seed(1)
        .build();
    assert_eq!(pool.endpoints().len(), 100);
    // Warm up (lazy statics, the clock).
    for _ in 0..10 {
        pool.pick(None).unwrap().success(Duration::from_micros(50));
    }

    let before = dhat::HeapStats::get();
    for i in 0..10_000u32 {
        let pick = pool.pick(None).unwrap();
        match i % 3 {
            0 => pick.success(Duration::from_micros(100)),
            1 => drop(pick),
            _ => pick.failure(),
        }
    }
    let after = dhat::HeapStats::get();
    // Failures may eject (that allocates, rarely); successes, drops and picks must not.
    let blocks = after.total_blocks - before.total_blocks;
    dhat::assert!(blocks <= 10, "{blocks} allocations in 10 000 picks");

    let before = dhat::HeapStats::get();
    for _ in 0..10_000 {
        pool.pick(None).unwrap().success(Duration::from_micros(100));
    }
    let after = dhat::HeapStats::get();
    dhat::assert_eq!(
        after.total_blocks,
        before.total_blocks,
        "pick + success allocate nothing"
    );

    // The counter does see allocations (so the checks above are not vacuous).
    let v = std::hint::black_box(vec![1u8; 16]);
    let now = dhat::HeapStats::get().total_blocks;
    drop(v);
    assert!(now > after.total_blocks, "{now} vs {}", after.total_blocks);
}
