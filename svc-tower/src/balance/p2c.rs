//! Power of two choices over PeakEWMA cost.
//!
//! Two distinct endpoints are drawn at random and the cheaper one wins (Mitzenmacher, "The
//! Power of Two Choices in Randomized Load Balancing", 2001). Endpoints that are ejected (when
//! not in panic) or excluded by the caller are skipped. Nothing here allocates.

use std::net::SocketAddr;
use std::sync::Arc;

use super::endpoint::{EndpointState, Nanos};
use super::rng::{below, SplitMix};

/// What to skip.
#[derive(Clone, Copy)]
pub(crate) struct Skip<'a> {
    /// Skip ejected endpoints.
    pub(crate) ejected: bool,
    /// Skip these addresses.
    pub(crate) exclude: &'a [SocketAddr],
}

impl Skip<'_> {
    #[inline]
    fn is_usable(&self, ep: &EndpointState) -> bool {
        let ejected = self.ejected && ep.is_ejected();
        !ejected && !self.exclude.contains(&ep.addr)
    }

    #[inline]
    fn is_trivial(&self) -> bool {
        !self.ejected && self.exclude.is_empty()
    }
}

/// Random draws tried before a linear scan for a usable endpoint.
const DRAWS: usize = 4;

/// A usable index other than `not`: a few random draws, then a scan from a random start.
fn draw(
    eps: &[Arc<EndpointState>],
    rng: &SplitMix,
    skip: Skip<'_>,
    not: Option<usize>,
) -> Option<usize> {
    let n = eps.len();
    let ok = |i: usize| Some(i) != not && skip.is_usable(&eps[i]);
    let mut start = 0;
    for _ in 0..DRAWS {
        start = below(rng.next_u64() as u32, n);
        if ok(start) {
            return Some(start);
        }
    }
    (1..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

/// Picks an endpoint, or `None` when `skip` rules out every one.
#[inline]
pub(crate) fn choose<'a>(
    eps: &'a [Arc<EndpointState>],
    rng: &SplitMix,
    now: Nanos,
    decay_ns: f64,
    skip: Skip<'_>,
) -> Option<&'a Arc<EndpointState>> {
    let n = eps.len();
    let (a, b) = if skip.is_trivial() {
        match n {
            0 => return None,
            1 => return Some(&eps[0]),
            _ => {
                let r = rng.next_u64();
                let a = below(r as u32, n);
                let b = (a + 1 + below((r >> 32) as u32, n - 1)) % n;
                (a, b)
            }
        }
    } else {
        let a = draw(eps, rng, skip, None)?;
        match draw(eps, rng, skip, Some(a)) {
            Some(b) => (a, b),
            None => return Some(&eps[a]),
        }
    };
    let (ea, eb) = (&eps[a], &eps[b]);
    // Ties (e.g. two fresh endpoints) go to the first draw, which is itself random.
    if eb.cost(now, decay_ns) < ea.cost(now, decay_ns) {
        Some(eb)
    } else {
        Some(ea)
    }
}
