//! [`Discover`]: the eligible endpoints of a pool as a `tower::discover::Discover` stream,
//! for `tower::balance::p2c::Balance` or any other tower balancer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::Stream;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use super::EndpointPool;

/// A `tower::discover::Discover` over the eligible endpoints of an [`EndpointPool`]: it
/// inserts a service (made by `make`) for each endpoint that becomes eligible and removes
/// it when the endpoint stops being eligible.
///
/// The pool's own [`pick`](EndpointPool::pick) is cheaper than tower's balancer and adds
/// outlier ejection and session affinity (see `benches/pick.rs`); this is for stacks built
/// on tower's `Balance`.
pub struct Discover<M, S> {
    updates: WatchStream<Arc<[SocketAddr]>>,
    current: Arc<[SocketAddr]>,
    pending: VecDeque<Change<SocketAddr, S>>,
    make: M,
}

impl<M, S> Discover<M, S>
where
    M: FnMut(SocketAddr) -> S,
{
    /// Follows `pool`, making a service for each new endpoint with `make`.
    pub fn new(pool: &EndpointPool, make: M) -> Self {
        Self {
            updates: WatchStream::new(pool.watch_endpoints()),
            current: Arc::from([]),
            pending: VecDeque::new(),
            make,
        }
    }

    fn diff(&mut self, next: Arc<[SocketAddr]>) {
        // Both lists are sorted by address.
        let (prev, mut i, mut j) = (self.current.clone(), 0, 0);
        while i < prev.len() || j < next.len() {
            match (prev.get(i), next.get(j)) {
                (Some(p), Some(n)) if p == n => {
                    i += 1;
                    j += 1;
                }
                (Some(p), Some(n)) if p < n => {
                    self.pending.push_back(Change::Remove(*p));
                    i += 1;
                }
                (Some(p), None) => {
                    self.pending.push_back(Change::Remove(*p));
                    i += 1;
                }
                (_, Some(n)) => {
                    self.pending.push_back(Change::Insert(*n, (self.make)(*n)));
                    j += 1;
                }
                (None, None) => break,
            }
        }
        self.current = next;
    }
}

impl<M, S> Stream for Discover<M, S>
where
    M: FnMut(SocketAddr) -> S + Unpin,
    S: Unpin,
{
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match ready!(Pin::new(&mut self.updates).poll_next(cx)) {
                Some(next) => self.diff(next),
                None => return Poll::Ready(None),
            }
        }
    }
}
