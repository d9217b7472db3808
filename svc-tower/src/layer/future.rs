//! The future [`Balance`](super::Balance) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;

use crate::error::BoxError;

type BoxResponse = Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, BoxError>> + Send>>;

/// The response future of [`Balance`](super::Balance).
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture(BoxResponse);

impl ResponseFuture {
    pub(crate) fn new(
        f: impl Future<Output = Result<http::Response<Incoming>, BoxError>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(f))
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
