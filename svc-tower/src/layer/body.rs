//! The request body as the layer sends it: it tells the request when it has been sent whole
//! (the response timeout counts from then) and whether reading it failed (then the caller's
//! body is at fault, not the endpoint).

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

const SENDING: u8 = 0;
const ENDED: u8 = 1;
const FAILED: u8 = 2;

/// What became of a request body, shared between the body and the request's future.
#[derive(Debug, Default)]
pub(crate) struct BodyProgress {
    state: AtomicU8,
    ended: Notify,
}

impl BodyProgress {
    /// Resolves once the body has ended, failed or been dropped: nothing more will be sent.
    pub(crate) async fn ended(&self) {
        // Registered before the check, so that an end between the two is not missed.
        let notified = self.ended.notified();
        if self.state.load(Ordering::Acquire) != SENDING {
            return;
        }
        notified.await;
    }

    /// Whether reading the body failed.
    pub(crate) fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    fn finish(&self, state: u8) {
        if self
            .state
            .compare_exchange(SENDING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // A waiter that comes later sees the state.
            self.ended.notify_waiters();
        }
    }
}

/// A request body that reports its progress to a [`BodyProgress`] (none for bodies that are
/// empty from the start: they cost nothing).
#[derive(Debug)]
pub(crate) struct Watched<B> {
    inner: B,
    progress: Option<Arc<BodyProgress>>,
}

impl<B: Body> Watched<B> {
    /// Wraps `inner`; the progress to follow, unless the body is empty.
    pub(crate) fn new(inner: B) -> (Self, Option<Arc<BodyProgress>>) {
        let progress = (!inner.is_end_stream()).then(Arc::default);
        let body = Self {
            inner,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.finish(ENDED);
        }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(frame), Some(p)) = (&polled, &self.progress) {
            match frame {
                None => p.finish(ENDED),
                Some(Err(_)) => p.finish(FAILED),
                // hyper stops polling once the body says it has ended.
                Some(Ok(_)) if self.inner.is_end_stream() => p.finish(ENDED),
                Some(Ok(_)) => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};

    #[tokio::test]
    async fn empty_bodies_are_not_followed() {
        let (_, progress) = Watched::new(Empty::<Bytes>::new());
        assert!(progress.is_none());
    }

    #[tokio::test]
    async fn the_end_and_failures_are_reported() {
        let frames = vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("bad chunk")),
        ];
        let (body, progress) = Watched::new(StreamBody::new(futures::stream::iter(frames)));
        let progress = progress.unwrap();
        let waiter = tokio::spawn({
            let p = progress.clone();
            async move { p.ended().await }
        });
        assert!(body.collect().await.is_err());
        waiter.await.unwrap();
        assert!(progress.failed());
        // Later waiters return at once.
        progress.ended().await;
    }
}
