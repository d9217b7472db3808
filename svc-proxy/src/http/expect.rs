//! `Expect: 100-continue`, decided by the endpoint.
//!
//! hyper's server sends `100 Continue` the first time a request body is polled, and hyper's
//! client polls the body as soon as it has written the request head, without waiting for the
//! endpoint. Proxied as is, the client is told to go on before the endpoint has even seen the
//! request, and an endpoint that would refuse the body (401, 413, 417) gets it anyway.
//!
//! [`ClientBody`] holds the client's body back instead, and so keeps hyper's server from
//! sending `100 Continue`, until one of:
//! - the endpoint answers `100 Continue` (hyper's client reports 1xx responses through
//!   `hyper::ext::on_informational`): then the body is read, hyper's server sends its own
//!   `100 Continue` to the client, and the body flows;
//! - [`CONTINUE_WAIT`] passes without an answer: an endpoint may wait for the body without
//!   saying so (RFC 9110 §10.1.1 lets servers ignore the expectation), and curl gives up
//!   waiting after as long and sends the body anyway;
//! - the endpoint sends its final answer first ([`Continue::close`]): the body is never read,
//!   the client gets that answer without `100 Continue`, and the upstream request is
//!   abandoned (its connection closed: the endpoint was promised a body it will not get).
//!
//! Only HTTP/1.1 endpoints are held back: hyper's HTTP/2 client reports no 1xx responses.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use http::header::{HeaderMap, EXPECT};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use svc_tower::error::BoxError;

/// How long the body waits for the endpoint's `100 Continue` (curl's default wait).
pub const CONTINUE_WAIT: Duration = Duration::from_secs(1);

const WAITING: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;

/// Whether a request asks for `100 Continue` (HTTP/1.1 and later, with a body to send).
pub fn expects_continue(version: http::Version, headers: &HeaderMap, body: &Incoming) -> bool {
    version >= http::Version::HTTP_11
        && !body.is_end_stream()
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The endpoint's decision, shared by the body and whoever learns it.
#[derive(Debug, Default)]
pub struct Continue {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Continue {
    /// The endpoint asked for the body.
    pub fn open(&self) {
        self.decide(OPEN);
    }

    /// The endpoint answered (or failed) without asking for the body; a no-op once it did.
    pub fn close(&self) {
        self.decide(CLOSED);
    }

    fn decide(&self, to: u8) {
        if self
            .state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }
}

/// A client's request body; see the module docs.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    waiting: Option<Box<Waiting>>,
}

#[derive(Debug)]
struct Waiting {
    decision: Arc<Continue>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The endpoint answered before asking for the body.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint answered before asking for the request body")]
pub struct NotContinued;

impl ClientBody {
    /// `inner`, held back until `decision` (if any) opens it.
    pub fn new(inner: Incoming, decision: Option<Arc<Continue>>) -> Self {
        Self {
            inner,
            waiting: decision.map(|decision| {
                Box::new(Waiting {
                    decision,
                    timer: None,
                })
            }),
        }
    }
}

impl Waiting {
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NotContinued>> {
        let decided = |state| match state {
            OPEN => Some(Ok(())),
            CLOSED => Some(Err(NotContinued)),
            _ => None,
        };
        let d = &self.decision;
        if let Some(done) = decided(d.state.load(Ordering::Acquire)) {
            return Poll::Ready(done);
        }
        d.waker.register(cx.waker());
        // Checked again: the decision may have come between the load and the registration.
        if let Some(done) = decided(d.state.load(Ordering::Acquire)) {
            return Poll::Ready(done);
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CONTINUE_WAIT)));
        if timer.as_mut().poll(cx).is_ready() {
            d.open();
            return Poll::Ready(decided(d.state.load(Ordering::Acquire)).unwrap_or(Ok(())));
        }
        Poll::Pending
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(waiting) = &mut self.waiting {
            match waiting.poll_open(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Ok(())) => self.waiting = None,
            }
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
