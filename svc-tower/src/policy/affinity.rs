//! `sessionAffinity: ClientIP`: connections from one client IP stick to one endpoint.
//!
//! kube-proxy's semantics (iptables `recent` match, IPVS persistence): the first connection
//! from a client IP is balanced normally and remembered; later ones go to the same endpoint
//! while it is still eligible, and each use extends the stickiness. An entry expires
//! `timeout` after its *last* use (`sessionAffinityConfig.clientIP.timeoutSeconds`, default
//! 10800 s). When the remembered endpoint is no longer eligible, the client is balanced
//! again and the new choice remembered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Sticky {
    addr: SocketAddr,
    last_used: Instant,
}

/// Remembered client → endpoint choices. Time is passed in, so that the table is a pure
/// data structure (the pool passes `tokio::time::Instant::now()`).
#[derive(Debug)]
pub struct AffinityTable {
    timeout: Duration,
    entries: HashMap<IpAddr, Sticky>,
    /// Sweep expired entries when the table reaches this size (doubles as it grows).
    sweep_at: usize,
}

impl AffinityTable {
    /// A table whose entries expire `timeout` after their last use.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            entries: HashMap::new(),
            sweep_at: 1024,
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout of a live table (the Service's `timeoutSeconds` changed); existing
    /// entries keep their last-use time. Not a setting but an update of state the pool owns,
    /// so crate-private: settings are by-value builder methods.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The endpoint `client` sticks to, if its entry has not expired and `still_ok` accepts
    /// the endpoint. A hit counts as a use and extends the entry.
    pub fn get(
        &mut self,
        client: IpAddr,
        now: Instant,
        still_ok: impl FnOnce(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let entry = self.entries.get_mut(&client)?;
        if now.saturating_duration_since(entry.last_used) >= self.timeout || !still_ok(entry.addr) {
            self.entries.remove(&client);
            return None;
        }
        entry.last_used = now;
        Some(entry.addr)
    }

    /// Remembers that `client` was sent to `addr`.
    pub fn insert(&mut self, client: IpAddr, addr: SocketAddr, now: Instant) {
        if self.entries.len() >= self.sweep_at {
            self.sweep(now);
            self.sweep_at = (self.entries.len() * 2).max(1024);
        }
        self.entries.insert(
            client,
            Sticky {
                addr,
                last_used: now,
            },
        );
    }

    /// Forgets entries that point at endpoints `keep` rejects (e.g. removed ones).
    pub fn retain_endpoints(&mut self, mut keep: impl FnMut(SocketAddr) -> bool) {
        self.entries.retain(|_, s| keep(s.addr));
    }

    /// Drops expired entries.
    pub fn sweep(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.entries
            .retain(|_, s| now.saturating_duration_since(s.last_used) < timeout);
    }

    /// The number of remembered clients (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
