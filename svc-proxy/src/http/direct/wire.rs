//! The bytes of one exchange: a request written and its response head read from the
//! endpoint, the response forwarded to the client, and a client's bytes read.

use std::io;

use svc_tower::connect::BodyFraming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::{self, Response, ResponseHead};
use super::{BUF, BULK_BUF, HEAD_BUF};
use crate::http::io::ResetOnCut;
use crate::tcp::buffers::Buffer;

/// Writes the request and reads the final response's head into `rbuf`.
pub(super) async fn send(
    up: &mut TcpStream,
    out: &[u8],
    rbuf: &mut Buffer,
    is_head: bool,
    close_client: &impl Fn() -> bool,
) -> Result<ResponseHead, Upstream> {
    up.write_all(out).await.map_err(Upstream::Stale)?;
    let mut seen = false;
    loop {
        if rbuf.len() == rbuf.capacity() {
            if rbuf.capacity() >= HEAD_BUF {
                return Err(Upstream::Invalid("response head too large"));
            }
            let mut larger = Buffer::take(HEAD_BUF);
            larger.extend_from_slice(rbuf);
            *rbuf = larger;
        }
        let n = match up.read_buf(&mut **rbuf).await {
            Ok(n) => n,
            Err(e) if !seen => return Err(Upstream::Stale(e)),
            Err(e) => return Err(Upstream::Io(e)),
        };
        if n == 0 {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response");
            return Err(if seen {
                Upstream::Io(e)
            } else {
                Upstream::Stale(e)
            });
        }
        seen = true;
        loop {
            match head::response(rbuf, is_head, close_client()) {
                Response::Partial => break,
                Response::Informational(len) => {
                    rbuf.drain(..len);
                }
                Response::Final(resp) => return Ok(resp),
                Response::Invalid(why) => return Err(Upstream::Invalid(why)),
            }
        }
    }
}

/// How sending a request to an endpoint failed.
pub(super) enum Upstream {
    /// Nothing came back: on a kept-alive connection, the endpoint had closed it.
    Stale(io::Error),
    /// The connection failed after part of the response.
    Io(io::Error),
    /// The response could not be forwarded.
    Invalid(&'static str),
    /// No response head within the response timeout.
    Timeout,
}

/// What forwarding a response's body found.
pub(super) struct Forwarded {
    /// The response ended where its framing said, with nothing after it.
    pub(super) endpoint_reusable: bool,
    pub(super) body_bytes: u64,
}

/// Writes the response (its head is at the start of `rbuf`) to the client and forwards its
/// body as it comes. An error is the client's connection's or a broken endpoint's: the
/// client connection then closes (its response is cut short, as hyper's would be).
pub(super) async fn forward_response(
    client_io: &mut ResetOnCut,
    up: &mut TcpStream,
    mut rbuf: Buffer,
    resp: &ResponseHead,
) -> io::Result<Forwarded> {
    let mut framing = resp.body;
    // The content's bytes, not the chunk framing's: what the hyper engine counts.
    let mut body_bytes = 0u64;
    let mut count = |r: std::ops::Range<usize>| body_bytes += r.len() as u64;
    let (used, mut done) = framing
        .feed_with(&rbuf[resp.len..], &mut count)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut clean = resp.len + used == rbuf.len();
    match &resp.rewritten {
        None => client_io.write_all(&rbuf[..resp.len + used]).await?,
        Some(head) => {
            let both = [head.as_slice(), &rbuf[resp.len..resp.len + used]].concat();
            client_io.write_all(&both).await?;
        }
    }
    while !done {
        rbuf.clear();
        let n = up.read_buf(&mut *rbuf).await?;
        if n == 0 {
            if framing == BodyFraming::UntilClose {
                break;
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the endpoint closed before the response's end",
            ));
        }
        let (used, end) = framing
            .feed_with(&rbuf[..n], &mut count)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        done = end;
        clean = used == n;
        client_io.write_all(&rbuf[..used]).await?;
        if n == rbuf.capacity() && rbuf.capacity() < BULK_BUF {
            rbuf = Buffer::take(BULK_BUF);
        }
    }
    Ok(Forwarded {
        endpoint_reusable: done && clean,
        body_bytes,
    })
}

/// Reads more of a client's bytes into `buf` (taken from the worker's pool once the socket
/// has some): how many, 0 at the end of the stream.
pub(super) async fn read_client(
    io: &mut ResetOnCut,
    buf: &mut Option<Buffer>,
) -> io::Result<usize> {
    if buf.is_none() {
        io.stream_mut().readable().await?;
    }
    let b = buf.get_or_insert_with(|| Buffer::take(BUF));
    if b.len() == b.capacity() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request larger than the buffer",
        ));
    }
    io.read_buf(&mut **b).await
}
