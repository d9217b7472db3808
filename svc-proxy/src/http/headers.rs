//! Header handling shared by requests and responses in HTTP mode (public, so that the fuzz
//! target in `fuzz/` reaches it through the same entry point as the proxy).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one hop (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// What one pass over a message's headers found: which hop-by-hop names it has, whether
/// `Connection` names other headers, and how many `Host` values. The proxy asks these
/// questions of every message; each asked of the map on its own would cost a hash lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Bit `i` set: the message has `HOP_BY_HOP[i]`.
    hop_by_hop: u8,
    /// A `Connection` value other than `keep-alive` or `close` (it may name headers).
    connection_names: bool,
    hosts: usize,
}

impl Scan {
    /// Scans `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut scan = Scan::default();
        // `iter` yields every value, so repeated `Host`s are counted.
        for (name, value) in headers {
            if let Some(i) = hop_by_hop_index(name) {
                scan.hop_by_hop |= 1 << i;
                if i == CONNECTION_INDEX {
                    let v = value.as_bytes();
                    scan.connection_names |=
                        !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close");
                }
            } else if name == header::HOST {
                scan.hosts += 1;
            }
        }
        scan
    }

    /// How many `Host` values the message has.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// Whether the message has an `Upgrade` header.
    pub fn has_upgrade(&self) -> bool {
        self.hop_by_hop & (1 << UPGRADE_INDEX) != 0
    }
}

/// `header::CONNECTION`'s place in [`HOP_BY_HOP`].
const CONNECTION_INDEX: usize = 0;
/// `header::UPGRADE`'s place in [`HOP_BY_HOP`].
const UPGRADE_INDEX: usize = 4;

/// Removes the hop-by-hop headers of a message before it is forwarded: the standard ones and
/// any that `Connection` names. `te: trailers` is the exception, kept (see
/// [`asks_for_trailers`]).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_scanned(headers, Scan::of(headers));
}

/// [`strip_hop_by_hop`] with the message's [`Scan`] already made (it stays true when headers
/// other than hop-by-hop ones were removed since).
pub fn strip_scanned(headers: &mut HeaderMap, scan: Scan) {
    // Most requests carry no hop-by-hop header, most responses `Connection: keep-alive` alone;
    // a removal costs a hash lookup per name.
    let present = scan.hop_by_hop;
    if present == 0 {
        return;
    }
    if scan.connection_names {
        // Headers named by Connection are hop-by-hop too. `close` names none, and the
        // standard ones are handled below; this allocates only for other names.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            let te_trailers = *name == header::TE && asks_for_trailers(headers);
            headers.remove(name);
            if te_trailers {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
        }
    }
}

/// The position of `name` in [`HOP_BY_HOP`], if it is there. Gated on the name's length:
/// a message's headers are compared against the six names twice per proxied request (the
/// request and the response), and a length check turns almost every comparison into one
/// integer compare (this scan was over 1 % of h2c mode's CPU with `HeaderName` equality).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    let i = match name.as_str().len() {
        10 if *name == header::CONNECTION => 0,
        10 if name.as_str() == "keep-alive" => 1,
        16 if name.as_str() == "proxy-connection" => 2,
        17 if *name == header::TRANSFER_ENCODING => 3,
        7 if *name == header::UPGRADE => 4,
        2 if *name == header::TE => 5,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[i], *name);
    Some(i)
}

/// Whether `TE` lists `trailers`: the one TE value that goes end to end. gRPC requires it on
/// every request and HTTP/2 allows exactly that value (RFC 9113 §8.2.2), so Envoy, haproxy
/// and nginx forward `te: trailers` and drop the rest (transfer codings are per hop).
pub fn asks_for_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            // A coding may carry a weight (`trailers;q=0.5` is not valid, but be lenient).
            let token = t.split(';').next().unwrap_or_default().trim();
            token.eq_ignore_ascii_case("trailers")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-end", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end"));
        // A name in a second `Connection` value, after a `keep-alive` one.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("x-end", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end"));
    }

    #[test]
    fn the_scan_counts_hosts_and_sees_upgrade() {
        let mut h = HeaderMap::new();
        assert_eq!(Scan::of(&h), Scan::default());
        h.append(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let one = Scan::of(&h);
        assert_eq!((one.hosts(), one.has_upgrade()), (1, false));
        h.append(header::HOST, HeaderValue::from_static("b"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let two = Scan::of(&h);
        assert_eq!((two.hosts(), two.has_upgrade()), (2, true));
        assert_eq!(HOP_BY_HOP[UPGRADE_INDEX], header::UPGRADE);
        assert_eq!(HOP_BY_HOP[CONNECTION_INDEX], header::CONNECTION);
    }

    #[test]
    fn the_index_finds_each_hop_by_hop_name_and_nothing_else() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
            let upper = HeaderName::from_bytes(name.as_str().to_uppercase().as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&upper), Some(i), "{upper}");
        }
        for other in [
            "tf",
            "upgradz",
            "keep-alivf",
            "connectioN2",
            "content-length",
            "x",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&name), None, "{other}");
        }
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("gzip, deflate"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    /// gRPC needs `te: trailers` end to end; other transfer codings stay on their hop.
    #[test]
    fn te_keeps_only_trailers() {
        let rows: [(&[&str], Option<&str>); 6] = [
            (&["trailers"], Some("trailers")),
            (&["Trailers"], Some("trailers")),
            (&["gzip, trailers"], Some("trailers")),
            (&["gzip", "trailers"], Some("trailers")),
            (&["gzip;q=0.5, deflate"], None),
            (&[""], None),
        ];
        for (values, want) in rows {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TE, HeaderValue::from_str(v).unwrap());
            }
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            strip_hop_by_hop(&mut h);
            let te: Vec<_> = h.get_all(header::TE).iter().collect();
            match want {
                Some(w) => assert_eq!(te, [w], "{values:?}"),
                None => assert!(te.is_empty(), "{values:?} kept {te:?}"),
            }
            assert!(h.contains_key(header::CONTENT_TYPE));
        }
    }
}
