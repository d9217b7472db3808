//! [`ResponseBody`]: the body of a response from [`Balance`](super::Balance).

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use pin_project::pin_project;

use crate::error::BoxError;

/// The body of a response from [`Balance`](super::Balance): an endpoint's (hyper's
/// [`Incoming`]) when the request went to a Service, or the fallback's own body `F` when it
/// went to the fallback. Frames, `is_end_stream` and `size_hint` are the inner body's; errors
/// are boxed (they downcast to `hyper::Error` or to `F::Error`).
///
/// This is what lets the fallback be any client (hyper-util's, a test double, another tower
/// stack) whatever its body type, as tower-http's and linkerd's wrapper bodies do. A caller
/// that needs the inner body back can match on the variants.
#[pin_project(project = Projected)]
#[derive(Debug)]
#[non_exhaustive]
pub enum ResponseBody<F> {
    /// The response of an endpoint of a Service.
    Endpoint(#[pin] Incoming),
    /// The fallback's response.
    Fallback(#[pin] F),
}

impl<F> Body for ResponseBody<F>
where
    F: Body<Data = Bytes>,
    F::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            Projected::Endpoint(body) => body.poll_frame(cx).map_err(Into::into),
            Projected::Fallback(body) => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Endpoint(body) => body.is_end_stream(),
            Self::Fallback(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Endpoint(body) => body.size_hint(),
            Self::Fallback(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn the_fallbacks_frames_hints_and_errors_come_through() {
        let body = ResponseBody::Fallback(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert!(ResponseBody::Fallback(Full::new(Bytes::new())).is_end_stream());

        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("broken")),
        ];
        let body = ResponseBody::Fallback(StreamBody::new(futures::stream::iter(frames)));
        let error = body
            .collect()
            .await
            .expect_err("the fallback's body failed");
        assert_eq!(
            error.downcast_ref::<std::io::Error>().unwrap().to_string(),
            "broken"
        );
    }
}
