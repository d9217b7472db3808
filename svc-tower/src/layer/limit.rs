//! The layer's limit on requests in flight ([`BalanceLayer::max_in_flight`](super::BalanceLayer::max_in_flight)).
//!
//! One semaphore per layer, shared by every [`Balance`](super::Balance) it makes and their
//! clones; each service holds at most one permit, taken in `poll_ready` and moved into the
//! response future by `call` (as tower's `ConcurrencyLimit`).

use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

/// One service's handle on the layer's semaphore.
#[derive(Debug)]
pub(crate) struct InFlight {
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    pub(crate) fn new(semaphore: Arc<Semaphore>) -> Self {
        Self {
            semaphore: PollSemaphore::new(semaphore),
            permit: None,
        }
    }

    /// Takes a permit unless this service holds one already. `Pending` while none is free;
    /// the task is woken when one is released. Taking a free permit does not allocate (the
    /// waiting future is boxed, once per service, only when it has to wait).
    pub(crate) fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.permit.is_none() {
            // `None` only for a closed semaphore, and the layer never closes it: the call
            // that follows then fails with `NotReady` rather than going over the limit.
            self.permit = ready!(self.semaphore.poll_acquire(cx));
        }
        Poll::Ready(())
    }

    /// The permit `poll_acquire` took, for one call.
    pub(crate) fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }
}

impl Clone for InFlight {
    /// A clone shares the semaphore but not the permit: it must take its own.
    fn clone(&self) -> Self {
        Self {
            semaphore: self.semaphore.clone(),
            permit: None,
        }
    }
}
