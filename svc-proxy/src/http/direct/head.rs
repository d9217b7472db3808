//! Request and response heads as the direct engine sees them: parsed in place with
//! `httparse` (hyper's own parser), forwarded as they came when nothing in them belongs to the
//! hop, and rebuilt without those headers otherwise.
//!
//! A request the engine does not handle itself is [`Request::Hyper`]: the connection then goes
//! to hyper, which answers it exactly as HTTP mode always has (a 400 or 431 included).

use std::mem::MaybeUninit;

use svc_tower::connect::BodyFraming;

/// Headers parsed per head: hyper's default limit (more go to hyper, which answers 431).
pub const MAX_HEADERS: usize = 100;

/// Room for a head's headers, left uninitialized: `httparse` writes those it finds, and
/// setting all 100 first (3.2 KB) cost as much as parsing a short head.
pub fn uninit_headers<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The largest response head read from an endpoint (hyper's client reads up to ~400 KB,
/// but a response head past 64 KiB is an endpoint's bug, answered with 502).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What the start of a client's bytes is.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Not a whole head yet.
    Partial,
    /// A request this engine forwards itself.
    Direct(RequestHead),
    /// Anything else (HTTP/2, HTTP/1.0, a body that is chunked or too large, `Expect`,
    /// `Upgrade`, an absolute URI, a head hyper would reject): hyper's to serve.
    Hyper,
}

/// A request the direct engine forwards.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, up to and including its empty line.
    pub len: usize,
    /// Bytes of the body (its `Content-Length`), which follow the head.
    pub body: usize,
    /// The client asked for the connection to close after this request.
    pub close: bool,
    /// The method is HEAD: the response has no body, whatever its headers say.
    pub is_head: bool,
    /// Sending the request twice is harmless (RFC 9110 §9.2.2), so it may be sent again
    /// when a kept-alive connection turns out closed before anything came back.
    pub idempotent: bool,
    /// The head as forwarded, when it is not the client's bytes as they came (a `Connection`
    /// header removed, bare-LF line ends made CRLF).
    pub rewritten: Option<Vec<u8>>,
}

/// Parses the request at the start of `buf`. A head longer than `max_head`, or a head and
/// body longer than `max_message`, is hyper's.
pub fn request(buf: &[u8], max_head: usize, max_message: usize) -> Request {
    let mut headers = uninit_headers();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Request::Partial,
        _ => return Request::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Request::Hyper;
    };
    // Origin form only: an absolute URI (or `*`, or CONNECT's authority form) needs hyper's
    // rewriting into what the endpoint expects.
    if !path.starts_with('/') {
        return Request::Hyper;
    }
    let mut hosts = 0;
    let mut body: Option<usize> = None;
    let mut close = false;
    let mut connection = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match (body, content_length(h.value)) {
                (None, Some(n)) => body = Some(n),
                _ => return Request::Hyper,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection = true;
            let v = h.value.trim_ascii();
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !v.eq_ignore_ascii_case(b"keep-alive") {
                // It may name headers to drop: hyper's path does that.
                return Request::Hyper;
            }
        } else if is_hyper_only(name) {
            return Request::Hyper;
        }
    }
    let body = body.unwrap_or(0);
    if hosts != 1 || len.saturating_add(body) > max_message {
        return Request::Hyper;
    }
    let head = &buf[..len];
    let rewritten = (connection || !crlf_only(head)).then(|| {
        let mut out = Vec::with_capacity(len);
        for part in [method.as_bytes(), b" ", path.as_bytes(), b" HTTP/1.1\r\n"] {
            out.extend_from_slice(part);
        }
        let kept = req
            .headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("connection"));
        for h in kept {
            header_line(&mut out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"\r\n");
        out
    });
    Request::Direct(RequestHead {
        len,
        body,
        close,
        is_head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        rewritten,
    })
}

/// Request headers that only hyper's path handles: framing other than `Content-Length`,
/// `Expect: 100-continue`, upgrades, and the other hop-by-hop headers.
fn is_hyper_only(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 7] = [
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"te",
        b"keep-alive",
        b"proxy-connection",
        b"http2-settings",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// A `Content-Length` value as hyper reads it: digits only.
fn content_length(value: &[u8]) -> Option<usize> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether every line of `head` ends in CRLF (`httparse` also takes a bare LF, which an
/// endpoint might read otherwise; hyper would re-encode the head).
fn crlf_only(head: &[u8]) -> bool {
    let mut prev = 0u8;
    head.iter().all(|&b| {
        let ok = b != b'\n' || prev == b'\r';
        prev = b;
        ok
    })
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What an endpoint's bytes start with.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Not a whole head yet.
    Partial,
    /// A 1xx other than 101, of this many bytes: not forwarded (hyper's client does not
    /// forward them either), the final response follows.
    Informational(usize),
    /// The final response.
    Final(ResponseHead),
    /// Not a response this engine can forward (malformed, a 101 nobody asked for, framing it
    /// cannot follow, a head over [`MAX_RESPONSE_HEAD`]): the client gets 502.
    Invalid(&'static str),
}

/// A final response head.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// Where the body ends.
    pub body: BodyFraming,
    /// The endpoint keeps the connection open after this response.
    pub reusable: bool,
    /// The head as forwarded, when it is not the endpoint's bytes as they came.
    pub rewritten: Option<Vec<u8>>,
    /// The forwarded head tells the client that the connection closes after it.
    told_close: bool,
}

impl ResponseHead {
    /// The forwarded head says `connection: close`: the client connection must close after
    /// this response.
    pub fn told_close(&self) -> bool {
        self.told_close
    }
}

/// Parses the response at the start of `buf`, the answer to a HEAD request if `is_head`.
/// `close_client`: the client connection closes after this response, which the forwarded
/// head then says.
pub fn response(buf: &[u8], is_head: bool, close_client: bool) -> Response {
    let mut headers = uninit_headers();
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Response::Partial,
        Ok(httparse::Status::Partial) => return Response::Invalid("response head too large"),
        Err(httparse::Error::TooManyHeaders) => return Response::Invalid("too many headers"),
        Err(_) => return Response::Invalid("malformed response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Response::Invalid("malformed response head");
    };
    match status {
        // Three digits, but not a status (hyper's client refuses them too).
        0..=99 => return Response::Invalid("invalid status code"),
        101 => return Response::Invalid("101 Switching Protocols to a request without Upgrade"),
        100..=199 => return Response::Informational(len),
        _ => {}
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut endpoint_closes = version == 0;
    // Headers that belong to the endpoint's hop: dropped when forwarding.
    let mut hop = false;
    let mut named: Vec<&str> = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (length, content_length(h.value)) {
                (None, Some(n)) => length = Some(n as u64),
                (Some(m), Some(n)) if m == n as u64 => {}
                _ => return Response::Invalid("invalid Content-Length"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Forwarded as it came, with the body's bytes; anything but one plain `chunked`
            // would have to be decoded.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Response::Invalid("unsupported Transfer-Encoding");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            hop = true;
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    endpoint_closes = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    endpoint_closes &= version != 0;
                } else if let Ok(token) = std::str::from_utf8(token) {
                    named.push(token);
                }
            }
        } else if is_hop_by_hop(name) {
            hop = true;
        }
    }
    if chunked && length.is_some() {
        // RFC 9112 §6.3: a message with both is a smuggling attempt as often as not.
        return Response::Invalid("both Transfer-Encoding and Content-Length");
    }
    let no_body = is_head || status == 204 || status == 304;
    let body = match (no_body, chunked, length) {
        (true, _, _) => BodyFraming::Length(0),
        (false, true, _) => BodyFraming::chunked(),
        (false, false, Some(n)) => BodyFraming::Length(n),
        (false, false, None) => BodyFraming::UntilClose,
    };
    let until_close = body == BodyFraming::UntilClose;
    let reusable = !endpoint_closes && !until_close;
    let head = &buf[..len];
    let verbatim = version == 1 && !hop && !until_close && !close_client && crlf_only(head);
    let rewritten = (!verbatim).then(|| {
        let mut out = Vec::with_capacity(len + 24);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        // The body is forwarded in the framing it came in, so the headers that frame it stay
        // whatever `Connection` names.
        let frames = |name: &str| {
            name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
        };
        let dropped = |name: &str| {
            name.eq_ignore_ascii_case("connection")
                || is_hop_by_hop(name.as_bytes())
                || (named.iter().any(|n| n.eq_ignore_ascii_case(name)) && !frames(name))
        };
        for h in resp.headers.iter().filter(|h| !dropped(h.name)) {
            header_line(&mut out, h.name.as_bytes(), h.value);
        }
        if until_close || close_client {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    });
    Response::Final(ResponseHead {
        len,
        status,
        body,
        reusable,
        rewritten,
        told_close: until_close || close_client,
    })
}

/// Response headers of one hop, never forwarded (RFC 9110 §7.6.1). `Transfer-Encoding` is
/// not among them here: the body is forwarded with the framing it came in.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 4] = [b"keep-alive", b"proxy-connection", b"upgrade", b"te"];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 60 * 1024;

    fn direct(bytes: &[u8]) -> RequestHead {
        match request(bytes, MAX, 64 * 1024) {
            Request::Direct(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn fin(bytes: &[u8], is_head: bool, close: bool) -> ResponseHead {
        match response(bytes, is_head, close) {
            Response::Final(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_request_is_forwarded_as_it_came() {
        let bytes = b"GET /a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\nGET";
        let h = direct(bytes);
        assert_eq!(h.len, bytes.len() - 3);
        assert_eq!(
            (h.body, h.close, h.is_head, h.idempotent),
            (0, false, false, true)
        );
        assert_eq!(h.rewritten, None);
        let h = direct(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((h.body, h.idempotent), (5, false));
    }

    #[test]
    fn connection_is_dropped_and_close_remembered() {
        let h = direct(b"HEAD / HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n");
        assert!(h.close && h.is_head);
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"[..])
        );
        let h = direct(b"GET / HTTP/1.1\nHost: x\n\n");
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..])
        );
    }

    #[test]
    fn everything_unusual_is_hyper_s() {
        let hyper = |b: &[u8]| request(b, MAX, 64 * 1024) == Request::Hyper;
        assert!(hyper(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(hyper(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"));
        assert!(hyper(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(hyper(b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(hyper(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(hyper(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"));
        assert!(hyper(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(hyper(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(hyper(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n"
        ));
        assert!(hyper(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
        ));
        assert!(hyper(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(hyper(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(hyper(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-A\r\n\r\n"
        ));
        assert!(hyper(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"));
        assert!(hyper(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"));
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nHost", MAX, MAX),
            Request::Partial
        );
        assert!(hyper(
            &[b"GET / HTTP/1.1\r\nHost: x\r\nA: ".as_slice(), &[b'a'; MAX]].concat()
        ));
    }

    #[test]
    fn response_framing() {
        let h = fin(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            false,
        );
        assert_eq!((h.len, h.status, h.body), (38, 200, BodyFraming::Length(2)));
        assert!(h.reusable && h.rewritten.is_none() && !h.told_close());
        let h = fin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true, false);
        assert_eq!(h.body, BodyFraming::Length(0));
        let h = fin(b"HTTP/1.1 204 No Content\r\n\r\n", false, false);
        assert_eq!(h.body, BodyFraming::Length(0));
        let h = fin(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        );
        assert_eq!(h.body, BodyFraming::chunked());
        assert!(h.rewritten.is_none());
        let h = fin(b"HTTP/1.1 200 OK\r\nServer: s\r\n\r\n", false, false);
        assert!(h.told_close() && !h.reusable);
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"HTTP/1.1 200 OK\r\nServer: s\r\nconnection: close\r\n\r\n"[..])
        );
    }

    #[test]
    fn hop_by_hop_response_headers_are_dropped() {
        let h = fin(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\nContent-Length: 0\r\nX-End: 2\r\n\r\n",
            false,
            false,
        );
        assert!(!h.reusable && !h.told_close());
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-End: 2\r\n\r\n"[..])
        );
        let h = fin(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n",
            false,
            false,
        );
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"[..]),
            "the body's framing is kept whatever Connection names"
        );
        let h = fin(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, true);
        assert!(!h.reusable);
        assert_eq!(
            h.rewritten.as_deref(),
            Some(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"[..])
        );
        let h = fin(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(h.reusable);
    }

    #[test]
    fn odd_responses() {
        assert_eq!(
            response(
                b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1",
                false,
                false
            ),
            Response::Informational(39)
        );
        assert!(matches!(
            response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false, false),
            Response::Invalid(_)
        ));
        assert!(matches!(
            response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                false
            ),
            Response::Invalid(_)
        ));
        assert!(matches!(
            response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false
            ),
            Response::Invalid(_)
        ));
        assert!(matches!(
            response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                false
            ),
            Response::Invalid(_)
        ));
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\n", false, false),
            Response::Partial
        );
    }
}
