//! Kept-alive endpoint connections between requests, shared by a connector's clones.
//!
//! A routed connection (see [`routed`](super::routed)) takes one for each request from the
//! picked endpoint's list and gives it back when the exchange is over. Connections to an
//! endpoint that left the eligible set are closed, not kept: on give-back, and as soon as the
//! pool reports the change.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::EndpointPool;

/// How long a connection may stay idle (hyper-util's pool default).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Key = (usize, SocketAddr);

#[derive(Debug)]
pub(crate) struct IdleConns {
    conns: Mutex<HashMap<Key, Vec<(TcpStream, Instant)>>>,
    /// Pools whose eligible set is followed, to close what leaves it.
    followed: Mutex<HashSet<usize>>,
    pub(super) max_per_endpoint: usize,
}

/// Whether a kept-alive connection is still open and quiet: a closed one reads EOF at once,
/// and one with unread bytes is out of step with the protocol.
fn is_usable(io: &TcpStream) -> bool {
    matches!(io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl IdleConns {
    pub(crate) fn new(max_per_endpoint: usize) -> Arc<Self> {
        Arc::new(Self {
            conns: Mutex::default(),
            followed: Mutex::default(),
            max_per_endpoint,
        })
    }

    /// A usable kept-alive connection to `addr`, the most recently used first.
    pub(crate) fn take(&self, pool: &EndpointPool, addr: SocketAddr) -> Option<TcpStream> {
        let mut conns = self.conns.lock();
        let list = conns.get_mut(&(pool.id(), addr))?;
        let now = Instant::now();
        while let Some((io, since)) = list.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && is_usable(&io) {
                return Some(io);
            }
        }
        None
    }

    /// Keeps `io` for the next request to `addr`, if `addr` is still eligible.
    pub(crate) fn put(self: &Arc<Self>, pool: &EndpointPool, addr: SocketAddr, io: TcpStream) {
        if !pool.is_eligible(addr) {
            return;
        }
        self.follow(pool);
        let mut conns = self.conns.lock();
        let list = conns.entry((pool.id(), addr)).or_default();
        let now = Instant::now();
        list.retain(|(_, since)| now.saturating_duration_since(*since) < IDLE_TIMEOUT);
        if list.len() < self.max_per_endpoint {
            list.push((io, now));
        }
    }

    /// Starts closing `pool`'s kept-alive connections to endpoints that leave its eligible set.
    fn follow(self: &Arc<Self>, pool: &EndpointPool) {
        if !self.followed.lock().insert(pool.id()) {
            return;
        }
        let (id, mut eligible) = (pool.id(), pool.watch_endpoints());
        let this: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while eligible.changed().await.is_ok() {
                let Some(this) = this.upgrade() else { return };
                let now = eligible.borrow_and_update().clone();
                this.conns
                    .lock()
                    .retain(|(pool, addr), _| *pool != id || now.binary_search(addr).is_ok());
            }
        });
    }
}
