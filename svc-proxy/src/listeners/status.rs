//! What the dataplane looks like now, for `/readyz`, `/debug/services` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use svc_core::model::{Protocol, ServiceKey};
use tokio::time::Instant;

use super::failure::Cause;

/// A listener that could not be created and is being retried.
#[derive(Clone, Debug)]
pub struct FailingListener {
    /// The Service it serves.
    pub service: ServiceKey,
    /// Its address.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Why it failed.
    pub cause: Cause,
    /// The error of the last attempt.
    pub error: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub retry_at: Instant,
}

/// The reconciler's published state. Written by the reconciler only, read by anyone.
#[derive(Debug, Default)]
pub struct Status {
    programmed: AtomicBool,
    listening: AtomicUsize,
    /// Sorted by Service, then address.
    failing: Mutex<Arc<[FailingListener]>>,
}

impl Status {
    /// Whether every Service of the initial sync has been through the reconciler (each of its
    /// listeners is up or failing, none still to be created).
    pub fn is_programmed(&self) -> bool {
        self.programmed.load(Ordering::Acquire)
    }

    /// Listening sockets.
    pub fn listening(&self) -> usize {
        self.listening.load(Ordering::Relaxed)
    }

    /// The failing listeners, sorted by Service.
    pub fn failing(&self) -> Arc<[FailingListener]> {
        self.failing.lock().clone()
    }

    pub(super) fn set_programmed(&self) {
        self.programmed.store(true, Ordering::Release);
    }

    pub(super) fn publish(&self, listening: usize, mut failing: Vec<FailingListener>) {
        failing.sort_unstable_by(|a, b| (&a.service, a.addr).cmp(&(&b.service, b.addr)));
        *self.failing.lock() = failing.into();
        self.listening.store(listening, Ordering::Relaxed);
    }
}
