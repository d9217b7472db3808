//! The balancer's spread: rotation among equals, latency only outside the band, joins, slow
//! start, failures, L4 connections and the starvation bound. Paused time, fixed seeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use svc_core::store::Event;

use super::{eps, pool, settle};
use crate::balance::{BalanceConfig, EndpointPool, SlowStart};
use crate::test_support::*;

/// Serial traffic: each pick is reported, `rtt(addr)` later on the paused clock, before the
/// next one.
async fn serial(
    p: &EndpointPool,
    n: usize,
    mut rtt: impl FnMut(SocketAddr) -> Duration,
) -> HashMap<SocketAddr, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let pick = p.pick(None).unwrap();
        *seen.entry(pick.addr).or_default() += 1;
        let sample = rtt(pick.addr);
        tokio::time::advance(sample).await;
        pick.success(sample);
    }
    seen
}

/// Loopback-like noise: 0.1–0.5 ms.
fn noisy(rng: &mut SmallRng) -> Duration {
    Duration::from_micros(rng.random_range(100..=500))
}

#[tokio::test(start_paused = true)]
async fn serial_picks_rotate_exactly_over_equal_endpoints() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let mut rng = SmallRng::seed_from_u64(1);
    // Without the band, PeakEWMA's strict preference would follow the noise.
    let seen = serial(&p, 300, |_| noisy(&mut rng)).await;
    for i in 1..=3 {
        assert_eq!(seen[&addr(i)], 100, "{seen:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_picks_go_to_the_fewest_in_flight() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let held: Vec<_> = (0..20).map(|_| p.pick(None).unwrap()).collect();
    let mut per: HashMap<SocketAddr, usize> = HashMap::new();
    for pick in &held {
        *per.entry(pick.addr).or_default() += 1;
    }
    let mut loads: Vec<usize> = per.values().copied().collect();
    loads.sort();
    assert_eq!(loads, vec![6, 7, 7], "{per:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slower_endpoint_gets_only_its_starvation_share() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let mut rng = SmallRng::seed_from_u64(2);
    let slow = addr(2);
    // 5 ms slower: outside the band (more than 1 ms and more than 2× apart).
    let mut rtt = |a: SocketAddr| {
        let extra = if a == slow { ms(5) } else { Duration::ZERO };
        noisy(&mut rng) + extra
    };
    serial(&p, 30, &mut rtt).await;
    let seen = serial(&p, 300, &mut rtt).await;
    // Passed over for more than 24 picks, it wins its next comparison: 1 in 25 at most,
    // and at least 1 in 27 (the rotation reaches it within 3 picks).
    let got = seen.get(&slow).copied().unwrap_or(0);
    assert!((300 / 27..=300 / 25 + 1).contains(&got), "{seen:?}");
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_loses_at_once_and_is_ejected() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let bad = addr(3);
    let mut picked_at = Vec::new();
    for i in 0..400 {
        let pick = p.pick(None).unwrap();
        if pick.addr == bad {
            picked_at.push(i);
            pick.failure();
        } else {
            pick.success(ms(1) / 2);
        }
    }
    // Within the first 3 picks the rotation reaches it; after its first failure it loses
    // every comparison and is tried again only when passed over for more than 24 picks.
    assert!(picked_at[0] < 3, "{picked_at:?}");
    for w in picked_at.windows(2) {
        assert!(
            w[1] - w[0] > 20,
            "at most 1 of every 20 picks: {picked_at:?}"
        );
    }
    // The fifth failure in a row ejects it (one host may always be ejected), and nothing
    // more reaches it.
    assert_eq!(picked_at.len(), 5, "{picked_at:?}");
    assert!(p.stats().iter().any(|s| s.addr == bad && s.ejected));
}

#[tokio::test(start_paused = true)]
async fn a_rejoining_endpoint_gets_the_next_pick_and_its_share() {
    let (mut w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let mut rng = SmallRng::seed_from_u64(3);
    serial(&p, 90, |_| noisy(&mut rng)).await;
    // It fails once, then stops being ready for 20 s; its state is kept meanwhile.
    loop {
        let pick = p.pick(None).unwrap();
        if pick.addr == addr(3) {
            pick.failure();
            break;
        }
        pick.success(noisy(&mut rng));
    }
    w.apply(Event::ApplySlice(slice(&[ep(1), ep(2), ep(3).not_ready()])));
    settle().await;
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        serial(&p, 10, |_| noisy(&mut rng)).await;
    }
    // Ready again: the failure is forgiven, and the rotation moves to it.
    w.apply(Event::ApplySlice(slice(&eps(3))));
    settle().await;
    let first = p.pick(None).unwrap();
    assert_eq!(first.addr, addr(3), "the very next pick");
    first.success(noisy(&mut rng));
    let seen = serial(&p, 150, |_| noisy(&mut rng)).await;
    assert_eq!(seen[&addr(3)], 50, "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoints_share_over_the_window() {
    let (mut w, store) = store_with(service(), &eps(3));
    let config = BalanceConfig::default().slow_start(SlowStart::new(Duration::from_secs(10)));
    let p = pool(&store, config);
    let mut rng = SmallRng::seed_from_u64(4);
    serial(&p, 30, |_| noisy(&mut rng)).await;
    w.apply(Event::ApplySlice(slice(&eps(4))));
    settle().await;
    let joined = tokio::time::Instant::now();
    // Envoy's weight, max(10 %, t / window), decides whether it takes the rotation's turn
    // (1 in 4); its starvation picks (1 in 25 at most) come on top.
    let mut shares = Vec::new();
    for second in [0, 3, 6, 10] {
        let at = joined + Duration::from_secs(second);
        tokio::time::advance(at.saturating_duration_since(tokio::time::Instant::now())).await;
        let seen = serial(&p, 2000, |_| noisy(&mut rng)).await;
        shares.push(seen.get(&addr(4)).copied().unwrap_or(0) as f64 / 2000.0);
    }
    assert!(shares[0] < 0.08, "{shares:?}");
    assert!(shares.windows(2).all(|s| s[0] < s[1]), "{shares:?}");
    assert_eq!(shares[3], 0.25, "a full share after the window: {shares:?}");
}

/// A proxy holds a pick for a whole TCP flow: picks in flight are then open connections.
#[tokio::test(start_paused = true)]
async fn held_picks_balance_open_connections() {
    let (_w, store) = store_with(service(), &eps(3));
    let p = pool(&store, BalanceConfig::default());
    let mut rng = SmallRng::seed_from_u64(5);
    serial(&p, 30, |_| noisy(&mut rng)).await;
    // Long flows: 9 open connections spread 3/3/3.
    let mut flows: Vec<_> = (0..9).map(|_| p.pick(None).unwrap()).collect();
    let mut open: HashMap<SocketAddr, usize> = HashMap::new();
    for f in &flows {
        *open.entry(f.addr).or_default() += 1;
    }
    assert!(open.values().all(|&n| n == 3), "{open:?}");
    // Two flows to endpoint 1 close: it has the fewest open connections, and wins every
    // comparison it takes part in (the rotation puts it in one of every 3) until it catches up.
    for _ in 0..2 {
        let i = flows.iter().position(|f| f.addr == addr(1)).unwrap();
        drop(flows.swap_remove(i));
    }
    let more: Vec<_> = (0..6).map(|_| p.pick(None).unwrap()).collect();
    assert!(more.iter().filter(|f| f.addr == addr(1)).count() >= 2);
    flows.extend(more);
    let mut open: HashMap<SocketAddr, usize> = HashMap::new();
    for f in &flows {
        *open.entry(f.addr).or_default() += 1;
    }
    let (lo, hi) = (open.values().min().unwrap(), open.values().max().unwrap());
    assert!(hi - lo <= 2, "{open:?}");
}
