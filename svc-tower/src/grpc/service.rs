//! [`GrpcStatus`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;

use crate::error::BoxError;

/// A service whose svc-tower errors are `Status`es; made by
/// [`GrpcStatusLayer`](super::GrpcStatusLayer).
#[derive(Clone, Debug)]
pub struct GrpcStatus<S> {
    inner: S,
}

impl<S> GrpcStatus<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R> tower::Service<R> for GrpcStatus<S>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = StatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| super::into_status(e.into()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        StatusFuture {
            inner: self.inner.call(req),
        }
    }
}

/// The response future of [`GrpcStatus`].
#[pin_project]
#[derive(Debug)]
pub struct StatusFuture<F> {
    #[pin]
    inner: F,
}

impl<F, T, E> Future for StatusFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(result.map_err(|e| super::into_status(e.into())))
    }
}
