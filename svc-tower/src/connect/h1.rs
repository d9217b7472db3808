//! Where HTTP/1.1 messages end, observed from the bytes a client writes and reads.
//!
//! [Routed](super::routed) connections send each request to its own endpoint, so they must
//! know where one request/response exchange ends and the next begins. This follows RFC 9112
//! §6 framing without buffering bodies: heads are collected (up to [`MAX_HEAD`]) and parsed
//! with `httparse` (hyper's parser), bodies are only counted (`Content-Length`, chunked with
//! trailers, or until close). Anything it does not understand is reported as [`Invalid`], and
//! the connection then stays on its endpoint, as a plain connection would.

/// The most head bytes collected before giving up (hyper's own limit is larger, but a
/// request or response head over 64 KiB is not one a balancer needs to understand).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per head.
const MAX_HEADERS: usize = 128;

/// The bytes are not an HTTP/1.1 message this module can frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an HTTP/1.1 message body that can be framed")]
pub struct Invalid;

/// Collects a message head up to its empty line.
#[derive(Debug, Default)]
struct HeadReader {
    buf: Vec<u8>,
}

impl HeadReader {
    /// Takes bytes until the head is complete: `Ok(Some(used))` when it is (the head is in
    /// `self.buf`), `Ok(None)` when every byte was taken and more are needed.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Invalid> {
        let before = self.buf.len();
        // The end may straddle two writes: look again at the last three old bytes.
        let from = before.saturating_sub(3);
        self.buf.extend_from_slice(bytes);
        let found = self.buf[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| from + p + 4);
        match found {
            Some(end) => {
                self.buf.truncate(end);
                Ok(Some(end - before))
            }
            None if self.buf.len() > MAX_HEAD => Err(Invalid),
            None => Ok(None),
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Where an HTTP/1.1 message body ends (RFC 9112 §6), found by counting the body's bytes as
/// they pass: a proxy that forwards a body verbatim learns from it when the next message
/// starts, without decoding or buffering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`, trailers included.
    Chunked(Chunk),
    /// Ends when the connection does (a response without length).
    UntilClose,
}

/// Where a chunked body's reader is (see [`Body::chunked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// In a chunk-size line.
    Size {
        /// The size so far.
        size: u64,
        /// Whether a hex digit has been seen.
        digits: bool,
        /// Whether an extension or whitespace started (the rest of the line is skipped).
        tail: bool,
    },
    /// In a chunk's data: this many bytes are left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section.
    Trailer {
        /// The length of the current line.
        line: usize,
    },
}

impl Body {
    /// A chunked body, before its first chunk-size line.
    pub fn chunked() -> Self {
        chunked()
    }

    /// Counts bytes of the body: how many of `bytes` belong to it, and whether it is
    /// complete with them.
    ///
    /// # Errors
    ///
    /// [`Invalid`] for broken chunked framing.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), Invalid> {
        self.feed_with(bytes, |_| {})
    }

    /// [`feed`](Self::feed), which also tells `data` where the body's content is in `bytes`
    /// (without chunk framing and trailers), in order: for a proxy that decodes the body.
    ///
    /// # Errors
    ///
    /// [`Invalid`] for broken chunked framing.
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<(usize, bool), Invalid> {
        match self {
            Body::Length(left) => {
                let used = (*left).min(bytes.len() as u64);
                *left -= used;
                if used > 0 {
                    data(0..used as usize);
                }
                Ok((used as usize, *left == 0))
            }
            Body::UntilClose => {
                if !bytes.is_empty() {
                    data(0..bytes.len());
                }
                Ok((bytes.len(), false))
            }
            Body::Chunked(chunk) => {
                let mut i = 0;
                while i < bytes.len() {
                    let b = bytes[i];
                    match chunk {
                        Chunk::Size { size, digits, tail } => {
                            match (b, *tail) {
                                (b'\n', _) if !*digits => return Err(Invalid),
                                (b'\n', _) if *size == 0 => *chunk = Chunk::Trailer { line: 0 },
                                (b'\n', _) => *chunk = Chunk::Data(*size),
                                (b'\r', _) => {}
                                (_, false) if b.is_ascii_hexdigit() => {
                                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                                    *size = size
                                        .checked_mul(16)
                                        .and_then(|s| s.checked_add(digit))
                                        .ok_or(Invalid)?;
                                    *digits = true;
                                }
                                (b';' | b' ' | b'\t', _) if *digits => *tail = true,
                                (_, true) => {}
                                _ => return Err(Invalid),
                            }
                            i += 1;
                        }
                        Chunk::Data(left) => {
                            let used = (*left).min((bytes.len() - i) as u64);
                            *left -= used;
                            data(i..i + used as usize);
                            i += used as usize;
                            if *left == 0 {
                                *chunk = Chunk::DataEnd;
                            }
                        }
                        Chunk::DataEnd => {
                            match b {
                                b'\r' => {}
                                b'\n' => {
                                    *chunk = Chunk::Size {
                                        size: 0,
                                        digits: false,
                                        tail: false,
                                    }
                                }
                                _ => return Err(Invalid),
                            }
                            i += 1;
                        }
                        Chunk::Trailer { line } => {
                            i += 1;
                            match b {
                                b'\n' if *line == 0 => return Ok((i, true)),
                                b'\n' => *line = 0,
                                b'\r' => {}
                                _ => *line += 1,
                            }
                        }
                    }
                }
                Ok((bytes.len(), false))
            }
        }
    }
}

fn chunked() -> Body {
    Body::Chunked(Chunk::Size {
        size: 0,
        digits: false,
        tail: false,
    })
}

/// What the headers of a message say about its framing.
#[derive(Debug, Default)]
struct Framing {
    length: Option<u64>,
    /// `Some(true)` when `Transfer-Encoding`'s last coding is `chunked`.
    chunked: Option<bool>,
    close: bool,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, Invalid> {
    let mut f = Framing::default();
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(Invalid)?;
            if f.length.is_some_and(|m| m != n) {
                return Err(Invalid);
            }
            f.length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            f.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") && has_token(h.value, "close") {
            f.close = true;
        }
    }
    Ok(f)
}

#[derive(Debug)]
enum Phase {
    Head,
    Body(Body),
    Done,
}

/// One request, as the client writes it.
#[derive(Debug)]
pub(crate) struct RequestFramer {
    head: HeadReader,
    phase: Phase,
    /// The request line's method is HEAD (its response has no body).
    pub(crate) is_head: bool,
    /// The method is CONNECT (a 2xx response turns the connection into a tunnel).
    pub(crate) is_connect: bool,
    /// The request asked to close the connection after it.
    pub(crate) close: bool,
    /// The request starts with the HTTP/2 connection preface.
    pub(crate) is_http2: bool,
}

impl Default for RequestFramer {
    fn default() -> Self {
        Self {
            head: HeadReader::default(),
            phase: Phase::Head,
            is_head: false,
            is_connect: false,
            close: false,
            is_http2: false,
        }
    }
}

/// The HTTP/2 connection preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl RequestFramer {
    /// Starts over for the next request.
    pub(crate) fn reset(&mut self) {
        self.head.clear();
        *self = Self {
            head: std::mem::take(&mut self.head),
            ..Self::default()
        };
    }

    /// Whether no byte of the request has been written yet.
    pub(crate) fn is_untouched(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.head.buf.is_empty()
    }

    /// Whether the request has been written whole.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Follows `bytes` written by the client.
    ///
    /// # Errors
    ///
    /// [`Invalid`] for anything but one HTTP/1.x request (including an HTTP/2 preface, which
    /// also sets `is_http2`).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Invalid> {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Head => {
                    let Some(used) = self.head.feed(bytes)? else {
                        let seen = &self.head.buf;
                        let n = seen.len().min(H2_PREFACE.len());
                        if seen[..n] == H2_PREFACE[..n] && n == H2_PREFACE.len() {
                            self.is_http2 = true;
                            return Err(Invalid);
                        }
                        return Ok(());
                    };
                    bytes = &bytes[used..];
                    self.phase = self.parse_head()?;
                }
                Phase::Body(body) => {
                    let (used, done) = body.feed(bytes)?;
                    bytes = &bytes[used..];
                    if done {
                        self.phase = Phase::Done;
                    }
                }
                // hyper writes one request at a time: nothing may follow it.
                Phase::Done => return Err(Invalid),
            }
        }
        Ok(())
    }

    fn parse_head(&mut self) -> Result<Phase, Invalid> {
        if self.head.buf.starts_with(H2_PREFACE) {
            self.is_http2 = true;
            return Err(Invalid);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.head.buf) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Invalid),
        }
        let method = req.method.ok_or(Invalid)?;
        self.is_head = method.eq_ignore_ascii_case("HEAD");
        self.is_connect = method.eq_ignore_ascii_case("CONNECT");
        let f = framing(req.headers)?;
        self.close = f.close || req.version == Some(0);
        Ok(match (f.chunked, f.length) {
            (Some(true), _) => Phase::Body(chunked()),
            // A request cannot be delimited by closing the connection.
            (Some(false), _) => return Err(Invalid),
            (None, Some(0) | None) => Phase::Done,
            (None, Some(n)) => Phase::Body(Body::Length(n)),
        })
    }
}

/// What a read of response bytes brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes that belong to the response (any after its end do not).
    pub(crate) used: usize,
    /// The final (non-1xx) response head arrived, with this status.
    pub(crate) status: Option<u16>,
    /// The response is complete.
    pub(crate) done: bool,
    /// The connection became a tunnel (`101 Switching Protocols`, or a 2xx to CONNECT).
    pub(crate) tunnel: bool,
}

/// One response, as the client reads it.
#[derive(Debug)]
pub(crate) struct ResponseFramer {
    head: HeadReader,
    phase: Phase,
    /// The server will close the connection after this response (or it is HTTP/1.0).
    pub(crate) close: bool,
}

impl Default for ResponseFramer {
    fn default() -> Self {
        Self {
            head: HeadReader::default(),
            phase: Phase::Head,
            close: false,
        }
    }
}

impl ResponseFramer {
    /// Starts over for the next response.
    pub(crate) fn reset(&mut self) {
        self.head.clear();
        self.phase = Phase::Head;
        self.close = false;
    }

    /// Follows `bytes` read from the server, as the answer to `request`.
    ///
    /// # Errors
    ///
    /// [`Invalid`] for anything but an HTTP/1.x response.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        request: &RequestFramer,
    ) -> Result<Progress, Invalid> {
        let mut progress = Progress::default();
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Head => {
                    let Some(used) = self.head.feed(bytes)? else {
                        progress.used += bytes.len();
                        return Ok(progress);
                    };
                    progress.used += used;
                    bytes = &bytes[used..];
                    match self.parse_head(request)? {
                        Head::Informational => self.head.clear(),
                        Head::Final(status, phase) => {
                            progress.status = Some(status);
                            self.phase = phase;
                        }
                        Head::Tunnel(status) => {
                            progress.status = Some(status);
                            progress.tunnel = true;
                            progress.done = true;
                            self.phase = Phase::Done;
                            return Ok(progress);
                        }
                    }
                }
                Phase::Body(body) => {
                    let (used, done) = body.feed(bytes)?;
                    progress.used += used;
                    bytes = &bytes[used..];
                    if done {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => break,
            }
        }
        progress.done = matches!(self.phase, Phase::Done);
        Ok(progress)
    }

    /// Whether the response has been read whole.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Whether the response ends only when the connection does.
    pub(crate) fn until_close(&self) -> bool {
        matches!(self.phase, Phase::Body(Body::UntilClose))
    }

    fn parse_head(&mut self, request: &RequestFramer) -> Result<Head, Invalid> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&self.head.buf) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Invalid),
        }
        let status = res.code.ok_or(Invalid)?;
        if status == 101 || (request.is_connect && (200..300).contains(&status)) {
            return Ok(Head::Tunnel(status));
        }
        if (100..200).contains(&status) {
            return Ok(Head::Informational);
        }
        let f = framing(res.headers)?;
        self.close = f.close || res.version == Some(0);
        let no_body = request.is_head || status == 204 || status == 304;
        let phase = match (no_body, f.chunked, f.length) {
            (true, _, _) => Phase::Done,
            (false, Some(true), _) => Phase::Body(chunked()),
            (false, Some(false), _) | (false, None, None) => Phase::Body(Body::UntilClose),
            (false, None, Some(0)) => Phase::Done,
            (false, None, Some(n)) => Phase::Body(Body::Length(n)),
        };
        if matches!(phase, Phase::Body(Body::UntilClose)) {
            self.close = true;
        }
        Ok(Head::Final(status, phase))
    }
}

enum Head {
    Informational,
    Final(u16, Phase),
    Tunnel(u16),
}

#[cfg(test)]
mod tests;
