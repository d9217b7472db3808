use super::*;

/// Feeds `bytes` in pieces of `step` bytes.
fn request(bytes: &[u8], step: usize) -> Result<RequestFramer, Invalid> {
    let mut r = RequestFramer::default();
    for piece in bytes.chunks(step) {
        r.feed(piece)?;
    }
    Ok(r)
}

fn response(req: &RequestFramer, bytes: &[u8], step: usize) -> Result<Progress, Invalid> {
    let mut r = ResponseFramer::default();
    let mut total = Progress::default();
    for piece in bytes.chunks(step) {
        let p = r.feed(piece, req)?;
        total.used += p.used;
        total.status = total.status.or(p.status);
        total.done = p.done;
        total.tunnel |= p.tunnel;
    }
    if r.close {
        total.status = total.status.map(|s| s + 1000);
    }
    Ok(total)
}

#[test]
fn requests_end_where_their_framing_says() {
    let rows: [(&[u8], bool); 6] = [
        (b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", true),
        (b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhell", false),
        (b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello", true),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nt: 1\r\n\r\n", true),
        (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", false),
    ];
    for (bytes, done) in rows {
        for step in [1, 3, 7, bytes.len()] {
            let r = request(bytes, step).unwrap();
            assert_eq!(
                r.is_done(),
                done,
                "{:?} in steps of {step}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[test]
fn what_cannot_be_framed_is_invalid() {
    let rows: [&[u8]; 5] = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"not http at all\r\n\r\n",
    ];
    for bytes in rows {
        assert_eq!(
            request(bytes, 5).err(),
            Some(Invalid),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut r = RequestFramer::default();
    assert!(r.feed(b"PRI * HTTP/2.0\r\n").is_err());
    assert!(r.is_http2);
}

#[test]
fn responses_end_where_their_framing_says() {
    let get = request(b"GET / HTTP/1.1\r\n\r\n", 100).unwrap();
    let head = request(b"HEAD / HTTP/1.1\r\n\r\n", 100).unwrap();
    let connect = request(b"CONNECT a:1 HTTP/1.1\r\n\r\n", 100).unwrap();
    // (request, response, status (+1000 when the connection closes after), done, tunnel)
    let rows: [(&RequestFramer, &[u8], u16, bool, bool); 10] = [
        (
            &get,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            200,
            true,
            false,
        ),
        (
            &get,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nh",
            200,
            false,
            false,
        ),
        (
            &head,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            200,
            true,
            false,
        ),
        (&get, b"HTTP/1.1 204 No Content\r\n\r\n", 204, true, false),
        (
            &get,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            &get,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            200,
            true,
            false,
        ),
        (
            &get,
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            1200,
            false,
            false,
        ),
        (
            &get,
            b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            1503,
            true,
            false,
        ),
        (
            &get,
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            101,
            true,
            true,
        ),
        (&connect, b"HTTP/1.1 200 OK\r\n\r\n", 200, true, true),
    ];
    for (req, bytes, status, done, tunnel) in rows {
        for step in [1, 4, bytes.len()] {
            let p = response(req, bytes, step).unwrap();
            let what = format!("{:?} in steps of {step}", String::from_utf8_lossy(bytes));
            assert_eq!(p.status, Some(status), "{what}");
            assert_eq!((p.done, p.tunnel), (done, tunnel), "{what}");
        }
    }
}

#[test]
fn bytes_after_a_response_are_not_its_own() {
    let get = request(b"GET / HTTP/1.1\r\n\r\n", 100).unwrap();
    let mut r = ResponseFramer::default();
    let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiEXTRA";
    let p = r.feed(bytes, &get).unwrap();
    assert!(p.done);
    assert_eq!(p.used, bytes.len() - 5);
}

#[test]
fn feed_with_finds_the_content_of_a_chunked_body_in_any_split() {
    let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\nNEXT";
    for step in 1..wire.len() {
        let mut body = Body::chunked();
        let (mut content, mut at, mut done) = (Vec::new(), 0, false);
        while !done {
            let end = (at + step).min(wire.len());
            let bytes = &wire[at..end];
            let (used, complete) = body
                .feed_with(bytes, |r| content.extend_from_slice(&bytes[r]))
                .unwrap();
            at += used;
            done = complete;
        }
        assert_eq!(content, b"hello, world", "step {step}");
        assert_eq!(&wire[at..], b"NEXT", "step {step}");
    }
    let mut body = Body::Length(3);
    let mut content = Vec::new();
    let bytes = b"abcdef";
    assert_eq!(
        body.feed_with(bytes, |r| content.extend_from_slice(&bytes[r])),
        Ok((3, true))
    );
    assert_eq!(content, b"abc");
}
