//! Outlier ejection (Envoy's consecutive-failures detector).
//!
//! The list of ejected endpoints is small (at most `max_ejection_percent` of the pool) and
//! lives behind one lock that only failures, expiries and endpoint-set changes take. Picks
//! read two atomics: how many endpoints are ejected, and when the next ejection expires.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::config::BalanceConfig;
use super::endpoint::{EndpointState, Nanos};

#[derive(Debug, Default)]
pub(crate) struct Outlier {
    ejected: Mutex<Vec<Arc<EndpointState>>>,
    count: AtomicUsize,
    next_expiry: AtomicU64,
}

impl Outlier {
    /// How many endpoints are ejected right now (maybe including expired ones not yet swept).
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether an ejection has expired and a sweep is due.
    #[inline]
    pub(crate) fn sweep_due(&self, now: Nanos) -> bool {
        self.count() > 0 && now >= self.next_expiry.load(Ordering::Relaxed)
    }

    fn publish(&self, list: &[Arc<EndpointState>]) {
        self.count.store(list.len(), Ordering::Relaxed);
        let next = list
            .iter()
            .map(|e| e.ejected_until())
            .min()
            .unwrap_or(u64::MAX);
        self.next_expiry.store(next, Ordering::Relaxed);
    }

    /// Returns expired endpoints to the pool. Skips the sweep if another thread holds the
    /// lock (it will sweep, or the next pick will).
    pub(crate) fn sweep(&self, now: Nanos) {
        if let Some(mut list) = self.ejected.try_lock() {
            Self::sweep_locked(&mut list, now);
            self.publish(&list);
        }
    }

    fn sweep_locked(list: &mut Vec<Arc<EndpointState>>, now: Nanos) {
        list.retain(|e| {
            let keep = e.ejected_until() > now;
            if !keep {
                tracing::info!(endpoint = %e.addr, "outlier ejection ended");
                e.uneject();
            }
            keep
        });
    }

    /// Ejects `ep` if the limits allow. `in_set` counts the endpoints of the current eligible
    /// set, and says whether `ep` is one of them.
    pub(crate) fn try_eject(
        &self,
        ep: &Arc<EndpointState>,
        set_len: usize,
        in_set: bool,
        now: Nanos,
        config: &BalanceConfig,
    ) -> bool {
        let mut list = self.ejected.lock();
        Self::sweep_locked(&mut list, now);
        let allowed = in_set && !ep.is_ejected() && {
            let active = list.len();
            // Envoy: 100 * (ejected + 1) / hosts <= max_ejection_percent.
            let percent = 100.0 * (active + 1) as f64 / set_len as f64;
            percent <= f64::from(config.max_ejection_percent)
                || (config.always_eject_one && active == 0)
        };
        if allowed {
            let until = ep.eject(now, config.base_ejection, config.max_ejection);
            tracing::info!(
                endpoint = %ep.addr,
                for_ms = (until - now) / 1_000_000,
                "outlier ejected after consecutive failures"
            );
            list.push(ep.clone());
        }
        self.publish(&list);
        allowed
    }

    /// After the eligible set changed: endpoints that left it are forgotten (and un-ejected,
    /// so that they start fresh if they come back).
    pub(crate) fn retain(&self, mut in_set: impl FnMut(&Arc<EndpointState>) -> bool) {
        let mut list = self.ejected.lock();
        list.retain(|e| {
            let keep = in_set(e);
            if !keep {
                e.uneject();
            }
            keep
        });
        self.publish(&list);
    }
}

/// Whether too few endpoints are un-ejected, so that ejection must be ignored.
#[inline]
pub(crate) fn panicking(total: usize, ejected: usize, threshold_percent: u8) -> bool {
    let healthy = total.saturating_sub(ejected);
    healthy * 100 < total * usize::from(threshold_percent)
}
