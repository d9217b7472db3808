//! Balancer unit tests, on paused time with a fixed RNG seed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use svc_core::model::Protocol;
use svc_core::store::{Event, PortRef, StoreConfig};
use svc_core::Store;

use super::*;
use crate::test_support::*;

mod spread;
mod starvation;

fn pool(store: &Store, config: BalanceConfig) -> EndpointPool {
    EndpointPool::builder(store.clone(), key(), http())
        .config(config)
        .seed(42)
        .build()
}

/// Lets the pool's follower task (on this current-thread runtime) catch up.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

fn counts(pool: &EndpointPool, n: usize) -> HashMap<SocketAddr, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let pick = pool.pick(None).unwrap();
        *seen.entry(pick.addr).or_default() += 1;
    }
    seen
}

fn eps(n: u8) -> Vec<Ep> {
    (1..=n).map(ep).collect()
}

#[tokio::test(start_paused = true)]
async fn picks_only_eligible_endpoints() {
    let (_w, store) = store_with(service(), &[ep(1), ep(2).not_ready(), ep(3)]);
    let pool = pool(&store, BalanceConfig::default());
    assert_eq!(pool.endpoints(), vec![addr(1), addr(3)]);
    let seen = counts(&pool, 200);
    assert_eq!(seen.len(), 2);
    assert!(!seen.contains_key(&addr(2)));
}

#[tokio::test(start_paused = true)]
async fn fails_fast_with_a_reason() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let p = pool(&store, BalanceConfig::default());
    let err = p.pick(None).unwrap_err();
    assert_eq!(err.reason(), NoEndpointsReason::NotSynced);

    w.apply(Event::ReplaceServices {
        services: vec![],
        retain: vec![],
    });
    w.apply(Event::ReplaceSlices {
        slices: vec![],
        retain: vec![],
    });
    p.ready().await;
    let err = p.pick(None).unwrap_err();
    assert_eq!(err.reason(), NoEndpointsReason::NoService);
    assert_eq!(
        err.to_string(),
        "no eligible endpoints for shop/web:http (the service does not exist)"
    );

    w.apply(Event::ApplyService(service()));
    settle().await;
    assert_eq!(
        p.pick(None).unwrap_err().reason(),
        NoEndpointsReason::NoneEligible
    );

    let other =
        EndpointPool::builder(store.clone(), key(), PortRef::Number(81, Protocol::Tcp)).build();
    assert_eq!(
        other.pick(None).unwrap_err().reason(),
        NoEndpointsReason::NoPort
    );
}

#[tokio::test(start_paused = true)]
async fn follows_store_changes() {
    let (mut w, store) = store_with(service(), &[ep(1)]);
    let p = pool(&store, BalanceConfig::default());
    let mut watch = p.watch_endpoints();
    w.apply(Event::ApplySlice(slice(&[ep(1), ep(2)])));
    watch.changed().await.unwrap();
    assert_eq!(&**watch.borrow_and_update(), &[addr(1), addr(2)]);
    assert_eq!(counts(&p, 100).len(), 2);

    // Readiness flip: ep(1) stops being ready, so it is no longer picked.
    w.apply(Event::ApplySlice(slice(&[ep(1).not_ready(), ep(2)])));
    watch.changed().await.unwrap();
    assert_eq!(
        counts(&p, 100).keys().copied().collect::<Vec<_>>(),
        vec![addr(2)]
    );

    // KEP-1669: with no ready endpoint left, serving-and-terminating ones are used.
    w.apply(Event::ApplySlice(slice(&[
        ep(1).not_ready(),
        ep(2).draining(),
    ])));
    settle().await;
    assert_eq!(p.pick(None).unwrap().addr, addr(2));

    w.apply(Event::DeleteService(key()));
    settle().await;
    assert_eq!(
        p.pick(None).unwrap_err().reason(),
        NoEndpointsReason::NoService
    );
}

#[tokio::test(start_paused = true)]
async fn p2c_prefers_the_lower_peak_ewma_cost_outside_the_band() {
    let (_w, store) = store_with(service(), &eps(2));
    let p = pool(&store, BalanceConfig::default());
    // Teach it that 127.0.0.2 is slow: 200 ms against 1 ms is far outside the band (3
    // answers each make a latency worth comparing).
    for _ in 0..6 {
        let pick = p.pick(None).unwrap();
        let rtt = if pick.addr == addr(2) { 200 } else { 1 };
        pick.success(Duration::from_millis(rtt));
    }
    // With two endpoints both are always compared, so the cheaper one wins, except that the
    // slow one is still chosen once it has been passed over for more than 24 picks.
    let seen = counts(&p, 50);
    let slow = seen.get(&addr(2)).copied().unwrap_or(0);
    assert!((1..=2).contains(&slow), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_avoids_endpoints_with_requests_in_flight() {
    let (_w, store) = store_with(service(), &eps(2));
    let p = pool(&store, BalanceConfig::default());
    let held = p.pick(None).unwrap();
    assert_eq!(held.in_flight(), 1);
    let other = p.pick(None).unwrap();
    assert_ne!(
        other.addr, held.addr,
        "the busy endpoint costs twice as much"
    );
    drop(other);
    drop(held);
    let again = p.pick(None).unwrap();
    assert_eq!(
        again.in_flight(),
        1,
        "dropping a pick ends its in-flight count"
    );
}

#[tokio::test(start_paused = true)]
async fn ejects_after_consecutive_failures_and_returns_after_base_time() {
    let (_w, store) = store_with(service(), &eps(10));
    let p = pool(&store, BalanceConfig::default());
    let bad = addr(3);
    let fail_five = || {
        let mut failed = 0;
        while failed < 5 {
            let pick = p.pick(None).unwrap();
            if pick.addr == bad {
                pick.failure();
                failed += 1;
            }
        }
    };
    fail_five();
    assert!(!counts(&p, 500).contains_key(&bad), "ejected");
    assert!(p
        .stats()
        .iter()
        .any(|s| s.addr == bad && s.ejected && s.failures == 5));

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(
        !counts(&p, 500).contains_key(&bad),
        "still ejected before 30 s"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(counts(&p, 500).contains_key(&bad), "back after 30 s");

    // The second ejection lasts twice as long.
    fail_five();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!counts(&p, 500).contains_key(&bad));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(counts(&p, 500).contains_key(&bad));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_failure_streak() {
    let (_w, store) = store_with(service(), &eps(10));
    let p = pool(&store, BalanceConfig::default());
    let bad = addr(3);
    let mut failed = 0;
    while failed < 8 {
        let pick = p.pick(None).unwrap();
        if pick.addr == bad {
            failed += 1;
            if failed == 4 {
                pick.success(Duration::from_millis(1));
            } else {
                pick.failure();
            }
        }
    }
    assert!(p.stats().iter().all(|s| !s.ejected), "never 5 in a row");
}

/// Envoy: `100 × (ejected + 1) / hosts ≤ max_ejection_percent`, except that one host can
/// always be ejected ("if no hosts have been ejected, Envoy will eject the host
/// immediately"): with the default 10% and 3 hosts, the first one is ejected and a second is
/// not. Without `always_eject_one`, nothing is.
#[tokio::test(start_paused = true)]
async fn max_ejection_percent_follows_envoy() {
    for always_one in [true, false] {
        let (_w, store) = store_with(service(), &eps(3));
        let p = pool(
            &store,
            BalanceConfig::default().always_eject_one(always_one),
        );
        for bad in [addr(1), addr(2)] {
            let others: Vec<_> = (1..=3).map(addr).filter(|a| *a != bad).collect();
            for _ in 0..5 {
                let pick = p.pick_excluding(None, &others).unwrap();
                assert_eq!(pick.addr, bad);
                pick.failure();
            }
        }
        let ejected: Vec<_> = p
            .stats()
            .into_iter()
            .filter(|s| s.ejected)
            .map(|s| s.addr)
            .collect();
        let want = if always_one { vec![addr(1)] } else { vec![] };
        assert_eq!(ejected, want, "always_eject_one={always_one}");
    }
}

#[tokio::test(start_paused = true)]
async fn panic_threshold_ignores_ejection() {
    let (_w, store) = store_with(service(), &eps(4));
    let p = pool(&store, BalanceConfig::default().max_ejection_percent(100));
    let eject = |a: SocketAddr| {
        let others: Vec<_> = (1..=4).map(addr).filter(|x| *x != a).collect();
        for _ in 0..5 {
            let pick = p.pick_excluding(None, &others).unwrap();
            assert_eq!(pick.addr, a);
            pick.failure();
        }
    };
    eject(addr(1));
    eject(addr(2));
    // 2 of 4 healthy = 50%: not below the threshold, ejection holds.
    assert_eq!(counts(&p, 200).len(), 2);
    // Panic: 1 of 4 healthy is below 50%, so all four are used again.
    eject(addr(3));
    assert_eq!(p.stats().iter().filter(|s| s.ejected).count(), 3);
    assert_eq!(counts(&p, 400).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn pick_excluding_avoids_addresses_unless_nothing_else_is_left() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    for _ in 0..50 {
        assert_eq!(
            p.pick_excluding(None, &[addr(1), addr(2)]).unwrap().addr,
            addr(3)
        );
    }
    let all = [addr(1), addr(2), addr(3)];
    assert!(p.pick_excluding(None, &all).is_ok());
}

#[tokio::test(start_paused = true)]
async fn session_affinity_sticks_until_timeout_or_ineligible() {
    let svc = service().affinity(Duration::from_secs(10));
    let (mut w, store) = store_with(svc, &eps(5));
    let p = pool(&store, BalanceConfig::default());
    let client = "10.1.2.3".parse().unwrap();
    let first = p.pick(Some(client)).unwrap().addr;
    for _ in 0..50 {
        assert_eq!(p.pick(Some(client)).unwrap().addr, first);
    }
    // Use extends the entry: 9 s idle, use, 9 s idle is still within the timeout.
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(p.pick(Some(client)).unwrap().addr, first);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(p.pick(Some(client)).unwrap().addr, first);
    // Without a client address there is no affinity.
    assert!(counts(&p, 100).len() > 1);

    // The endpoint stops being ready: the client is balanced again, and sticks to the new one.
    let eps: Vec<Ep> = (1..=5u8)
        .map(|i| {
            if addr(i) == first {
                ep(i).not_ready()
            } else {
                ep(i)
            }
        })
        .collect();
    w.apply(Event::ApplySlice(slice(&eps)));
    settle().await;
    let second = p.pick(Some(client)).unwrap().addr;
    assert_ne!(second, first);
    for _ in 0..20 {
        assert_eq!(p.pick(Some(client)).unwrap().addr, second);
    }

    // After the timeout with no use, the entry is gone: over many clients, expiry re-balances.
    let clients: Vec<std::net::IpAddr> = (0..40u8).map(|i| [10, 0, 0, i].into()).collect();
    let before: Vec<_> = clients
        .iter()
        .map(|c| p.pick(Some(*c)).unwrap().addr)
        .collect();
    tokio::time::advance(Duration::from_secs(10)).await;
    // Shift the rotation by one, so that fresh choices differ from the old entries.
    drop(p.pick(None).unwrap());
    let after: Vec<_> = clients
        .iter()
        .map(|c| p.pick(Some(*c)).unwrap().addr)
        .collect();
    assert_ne!(before, after, "expired entries are balanced afresh");
}

#[tokio::test(start_paused = true)]
async fn ready_waits_for_the_service_or_the_sync() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let p = pool(&store, BalanceConfig::default());
    let ready = tokio::spawn({
        let p = p.clone();
        async move { p.ready().await }
    });
    settle().await;
    assert!(!ready.is_finished());
    w.apply(Event::ApplyService(service()));
    w.apply(Event::ApplySlice(slice(&[ep(1)])));
    ready.await.unwrap();
    assert_eq!(p.pick(None).unwrap().addr, addr(1));
}

#[tokio::test(start_paused = true)]
async fn stats_count_requests_failures_and_latency() {
    let (_w, store) = store_with(service(), &[ep(1)]);
    let p = pool(&store, BalanceConfig::default());
    p.pick(None).unwrap().success(Duration::from_millis(10));
    p.pick(None).unwrap().success(Duration::from_millis(30));
    p.pick(None).unwrap().failure();
    drop(p.pick(None).unwrap());
    let s = &p.stats()[0];
    assert_eq!((s.requests, s.successes, s.failures), (4, 2, 1));
    assert_eq!(s.latency_total, Duration::from_millis(40));
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.rtt_estimate, Duration::from_millis(30), "peak");
}

#[test]
fn pool_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<EndpointPool>();
    fn assert_send<T: Send>() {}
    assert_send::<Pick>();
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_starts_at_the_pools_median_rtt_and_gets_the_next_pick() {
    let (mut w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    // Warm up: two answer in 1 ms, far below the 30 ms default, one in 20 ms; the EWMA moves
    // with time.
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(2)).await;
        let pick = p.pick(None).unwrap();
        let ms = if pick.addr == addr(3) { 20 } else { 1 };
        pick.success(Duration::from_millis(ms));
    }
    let mut old: Vec<Duration> = p.stats().iter().map(|s| s.rtt_estimate).collect();
    old.sort();
    assert!(old[1] < Duration::from_millis(10), "{old:?}");
    w.apply(Event::ApplySlice(slice(&eps(4))));
    settle().await;
    let new = p.stats().into_iter().find(|s| s.addr == addr(4)).unwrap();
    // The median, not the mean, which the slow endpoint would pull out of the band.
    assert!(
        new.rtt_estimate.abs_diff(old[1]) < Duration::from_micros(1),
        "{new:?} vs {old:?}"
    );
    assert_eq!(p.pick(None).unwrap().addr, addr(4), "the very next pick");
}

#[tokio::test(start_paused = true)]
async fn discover_follows_the_eligible_set_and_drives_towers_balancer() {
    use futures::StreamExt;
    use tower::discover::Change;
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    let (mut w, store) = store_with(service(), &eps(2));
    let p = pool(&store, BalanceConfig::default());
    let mut handles = HashMap::new();
    let mut discover = Discover::new(&p, |addr| {
        let (svc, handle) = mock::pair::<(), SocketAddr>();
        handles.insert(addr, handle);
        svc
    });
    let mut inserted = Vec::new();
    for _ in 0..2 {
        match discover.next().await.unwrap().unwrap() {
            Change::Insert(addr, _) => inserted.push(addr),
            Change::Remove(addr) => panic!("unexpected remove of {addr}"),
        }
    }
    assert_eq!(inserted, vec![addr(1), addr(2)]);
    w.apply(Event::ApplySlice(slice(&[ep(1).not_ready(), ep(2), ep(3)])));
    let changes: Vec<_> = [discover.next().await, discover.next().await]
        .into_iter()
        .map(|c| match c.unwrap().unwrap() {
            Change::Insert(a, _) => format!("+{a}"),
            Change::Remove(a) => format!("-{a}"),
        })
        .collect();
    assert_eq!(
        changes,
        vec![format!("-{}", addr(1)), format!("+{}", addr(3))]
    );

    // tower's p2c balancer over the same discovery, with tower-test mocks as endpoints.
    let mut handles = HashMap::new();
    let discover = Discover::new(&p, |addr| {
        let (svc, mut handle) = mock::pair::<(), SocketAddr>();
        handle.allow(1);
        handles.insert(addr, ());
        tokio::spawn(async move {
            while let Some(((), respond)) = handle.next_request().await {
                respond.send_response(addr);
                handle.allow(1);
            }
        });
        tower::load::Constant::new(svc, 1)
    });
    let mut balance = tower::balance::p2c::Balance::new(discover);
    let mut answered = std::collections::HashSet::new();
    for _ in 0..50 {
        let addr = balance.ready().await.unwrap().call(()).await.unwrap();
        answered.insert(addr);
    }
    let want: std::collections::HashSet<_> = [addr(2), addr(3)].into();
    assert_eq!(answered, want, "only eligible endpoints answer");
}
