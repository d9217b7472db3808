//! Requests that hyper's server read (HTTP/2 clients on `http` ports) sent over the direct
//! engine's upstream connections instead of hyper's HTTP/1.1 client.
//!
//! hyper's client hands each request to its connection's task over a channel and the answer
//! back over a oneshot, and builds a header map from the response head; with 50 clients × 10
//! streams that is ~500 upstream connection tasks. Here the stream's own task writes the
//! request head to a kept-alive connection and reads the answer (`l7-floor hyper-raw`
//! measures the difference, BENCHMARKS.md). Only requests without a body go this way; the
//! rest stay with hyper's client.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, COOKIE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use svc_tower::connect::BodyFraming;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Answer, Direct, Failure, Shape};
use crate::http::headers::strip_hop_by_hop;
use crate::tcp::buffers::Buffer;

/// The HTTP/1.1 head of `req`, a request without a body that hyper's server read, as the
/// endpoint should get it (origin form, `Host` from the authority); `None` when it has no
/// authority (hyper's path answers that) or is not one to send this way.
pub fn http1_head<B>(req: &Request<B>) -> Option<(Vec<u8>, Shape)> {
    let method = req.method();
    let host = match req.uri().authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => req.headers().get(HOST)?.as_bytes(),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(256);
    for part in [
        method.as_str().as_bytes(),
        b" ",
        path.as_bytes(),
        b" HTTP/1.1\r\nhost: ",
        host,
        b"\r\n",
    ] {
        head.extend_from_slice(part);
    }
    let mut length = false;
    let mut cookies = 0;
    for (name, value) in req.headers() {
        if name == HOST {
            continue;
        }
        if name == COOKIE {
            cookies += 1;
            continue;
        }
        length |= name == http::header::CONTENT_LENGTH;
        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    // RFC 9113 §8.2.3: HTTP/2 may split `cookie` into crumbs, which HTTP/1.1 gets as one line.
    if cookies > 0 {
        head.extend_from_slice(b"cookie: ");
        for (i, crumb) in req.headers().get_all(COOKIE).iter().enumerate() {
            if i > 0 {
                head.extend_from_slice(b"; ");
            }
            head.extend_from_slice(crumb.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §8.6: a method that defines a body says that it has none.
    let bodiless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !length && !bodiless {
        head.extend_from_slice(b"content-length: 0\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let shape = Shape {
        is_head: method == Method::HEAD,
        idempotent: matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        ),
    };
    Some((head, shape))
}

impl Direct {
    /// Sends `head` (from [`http1_head`]) to an endpoint and makes its answer a response for
    /// hyper's server.
    pub async fn relay(
        self: Arc<Self>,
        head: Vec<u8>,
        shape: Shape,
        client: IpAddr,
    ) -> Result<Response<RelayedBody>, Failure> {
        let Answer {
            up,
            rbuf,
            head: resp,
            addr,
            at,
        } = self.dispatch(&head, shape, client, &|| false).await?;
        drop(head);
        let bytes = Bytes::copy_from_slice(&rbuf[..resp.len]);
        let Some(mut response) = response_of(&bytes) else {
            tracing::debug!(endpoint = %addr, "response head not representable in HTTP/2");
            return Err(Failure::Request);
        };
        strip_hop_by_hop(response.headers_mut());
        let mut body = RelayedBody {
            first: None,
            up: Some(up),
            rbuf,
            pos: resp.len,
            framing: resp.body,
            done: false,
            reusable: resp.reusable,
            direct: self.clone(),
            addr,
        };
        // Most bodies came with the head: take them now, and give the connection back.
        body.first = body.decode_buffered(at).map_err(|_| Failure::Request)?;
        Ok(response.map(|()| body))
    }
}

/// A response (without its body) from an HTTP/1.1 head, its header values sharing `head`.
fn response_of(head: &Bytes) -> Option<Response<()>> {
    let mut headers = super::head::uninit_headers();
    let mut parsed = httparse::Response::new(&mut []);
    httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut parsed, head, &mut headers)
        .ok()?;
    let status = StatusCode::from_u16(parsed.code?).ok()?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let base = head.as_ptr() as usize;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let at = h.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + h.value.len())).ok()?;
        map.append(name, value);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = map;
    Some(resp)
}

/// A relayed response's body: what came with the head, then the rest read from the
/// endpoint's connection as hyper asks for it (chunked framing removed). The connection
/// goes back to the engine's idle set when the body has ended where its framing said.
pub struct RelayedBody {
    /// Content that came with the head, not yet handed to hyper.
    first: Option<Bytes>,
    up: Option<TcpStream>,
    rbuf: Buffer,
    /// Where in `rbuf` the body's undecoded bytes start.
    pos: usize,
    framing: BodyFraming,
    done: bool,
    reusable: bool,
    direct: Arc<Direct>,
    addr: SocketAddr,
}

impl RelayedBody {
    /// Decodes the bytes in `rbuf` from `pos`; at the body's end, gives the connection back
    /// (if nothing followed the body).
    fn decode_buffered(&mut self, now: Instant) -> io::Result<Option<Bytes>> {
        let bytes = &self.rbuf[self.pos..];
        let mut content = BytesMut::new();
        let (used, done) = self
            .framing
            .feed_with(bytes, |r| content.extend_from_slice(&bytes[r]))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos += used;
        if done {
            self.done = true;
            let clean = self.pos == self.rbuf.len();
            if let (true, true, Some(up)) = (clean, self.reusable, self.up.take()) {
                self.direct.upstreams.checkin(self.addr, up, now);
            }
            self.up = None;
        }
        Ok((!content.is_empty()).then(|| content.freeze()))
    }
}

impl hyper::body::Body for RelayedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(up) = this.up.as_mut() else {
                return Poll::Ready(None);
            };
            this.rbuf.clear();
            this.pos = 0;
            match up.try_read_buf(&mut *this.rbuf) {
                Ok(0) if this.framing == BodyFraming::UntilClose => {
                    this.done = true;
                    this.up = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the endpoint closed before the response's end",
                    ))));
                }
                Ok(_) => match this.decode_buffered(Instant::now()) {
                    Ok(Some(content)) => return Poll::Ready(Some(Ok(Frame::data(content)))),
                    Ok(None) => continue,
                    Err(e) => {
                        this.up = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = ready!(up.poll_read_ready(cx)) {
                        this.up = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Err(e) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.done
    }

    fn size_hint(&self) -> SizeHint {
        match (self.framing, &self.first) {
            (BodyFraming::Length(left), first) => {
                SizeHint::with_exact(left + first.as_ref().map_or(0, |b| b.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}
