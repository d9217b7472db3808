//! Store benchmarks: lookups with 10k Services loaded, and the cost of one slice change at
//! 100 and at 10,000 Services (it must not grow with the cluster).
//!
//! `cargo bench -p svc-core --bench store`

#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use svc_core::model::*;
use svc_core::store::{Event, Writer};
use svc_core::{Store, StoreConfig};

fn cluster_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        172,
        16 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
}

fn service(i: usize) -> Service {
    Service {
        cluster_ips: vec![cluster_ip(i)],
        ports: vec![ServicePort {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
            app_protocol: None,
        }],
        ..Service::new(ServiceKey::new(
            format!("ns-{}", i % 100),
            format!("svc-{i}"),
        ))
    }
}

fn slice(i: usize, flip: bool) -> EndpointSlice {
    let svc = service(i).key;
    EndpointSlice {
        key: ServiceKey::new(&*svc.namespace, format!("{}-abcde", svc.name)),
        service: svc,
        address_type: AddressType::IPv4,
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        endpoints: (0..10)
            .map(|j| {
                let n = (i * 64 + j) as u32;
                Arc::new(Endpoint {
                    address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)),
                    conditions: Conditions {
                        ready: !(flip && j == 0),
                        serving: true,
                        terminating: false,
                    },
                    zone: Some(["a", "b", "c"][j % 3].into()),
                    node_name: Some(format!("node-{}", j % 50).into()),
                    hints: None,
                    target_ref: None,
                    hostname: None,
                })
            })
            .collect(),
        last_change_trigger_time: None,
    }
}

fn loaded(n: usize) -> (Writer, Store) {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    w.apply(Event::ReplaceServices {
        services: (0..n).map(service).collect(),
        retain: vec![],
    });
    w.apply(Event::ReplaceSlices {
        slices: (0..n).map(|i| slice(i, false)).collect(),
        retain: vec![],
    });
    (w, store)
}

fn lookups(c: &mut Criterion) {
    let (_w, store) = loaded(10_000);
    let mut g = c.benchmark_group("lookup_10k_services");
    g.bench_function("by_fqdn", |b| {
        b.iter(|| store.resolve_name(black_box("svc-4242.ns-42.svc.cluster.local")))
    });
    g.bench_function("by_short_name", |b| {
        b.iter(|| store.resolve_name(black_box("svc-4242.ns-42")))
    });
    let ip = cluster_ip(4242);
    g.bench_function("by_cluster_ip_port", |b| {
        b.iter(|| store.lookup_vip(black_box(ip), black_box(80), Protocol::Tcp))
    });
    g.finish();
}

fn updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("slice_change_to_subscriber");
    for n in [100, 10_000] {
        let (mut w, store) = loaded(n);
        let key = service(7).key;
        let mut rx = store.watch_service(&key);
        let versions = [slice(7, false), slice(7, true)];
        let mut flip = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                flip ^= 1;
                w.apply(Event::ApplySlice(versions[flip].clone()));
                assert!(rx.has_changed().unwrap());
                black_box(rx.borrow_and_update().is_some())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, updates);
criterion_main!(benches);
