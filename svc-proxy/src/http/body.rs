//! A body that counts the bytes it carries into a Service's byte counter.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

/// Wraps a body and adds the bytes of its data frames to `counter` when it is dropped (one
/// atomic add per body rather than one per frame: the counter is shared by every connection
/// of the Service).
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    bytes: u64,
    /// `None` for a body that is empty from the start: nothing to count, and no reference
    /// taken on a counter that every worker's requests share.
    counter: Option<Counter>,
}

impl<B: Body> Counted<B> {
    /// Counts `inner` into `counter`.
    pub fn new(inner: B, counter: &Counter) -> Self {
        let counter = (!inner.is_end_stream()).then(|| counter.clone());
        Self {
            inner,
            bytes: 0,
            counter,
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(counter) = self.counter.as_ref().filter(|_| self.bytes > 0) {
            counter.inc_by(self.bytes);
        }
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.bytes += data_bytes(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The bytes a polled frame carries: its data's length, or 0 (no frame, trailers, an error).
pub(super) fn data_bytes<D: Buf, E>(polled: &Poll<Option<Result<Frame<D>, E>>>) -> u64 {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(0, |d| d.remaining() as u64),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn counts_data_frames_once_dropped() {
        let counter = Counter::default();
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::data(Bytes::from_static(b", world"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ];
        let body = Counted::new(StreamBody::new(futures::stream::iter(frames)), &counter);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello, world");
        assert_eq!(counter.get(), 12);
    }

    #[test]
    fn an_empty_body_holds_no_counter() {
        let counter = Counter::default();
        let body = Counted::new(http_body_util::Empty::<Bytes>::new(), &counter);
        assert!(body.counter.is_none());
        drop(body);
        assert_eq!(counter.get(), 0);
    }
}
