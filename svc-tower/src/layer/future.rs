//! The future [`Balance`](super::Balance) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::ResponseBody;
use crate::error::BoxError;

type BoxResponse<F> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<F>>, BoxError>> + Send>>;

/// The response future of [`Balance`](super::Balance). With a
/// [`max_in_flight`](super::BalanceLayer::max_in_flight) limit it holds the request's permit
/// until it resolves (the response head arrived, or the request failed) or is dropped.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<F> {
    inner: BoxResponse<F>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        f: impl Future<Output = Result<Response<ResponseBody<F>>, BoxError>> + Send + 'static,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner: Box::pin(f),
            permit,
        }
    }
}

impl<F> Future for ResponseFuture<F> {
    type Output = Result<Response<ResponseBody<F>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.inner.as_mut().poll(cx));
        // Released with the head, not the body: see `BalanceLayer::max_in_flight`. Not left
        // to the drop, since a caller may keep a finished future around.
        self.permit = None;
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}
