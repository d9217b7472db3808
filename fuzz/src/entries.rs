//! Entry points of the fuzz targets, one per input the proxy takes from outside: manifests
//! YAML, API objects, DNS queries and HTTP headers. Each feeds its input through the same code
//! the proxy runs and checks what must hold for any input, beyond not panicking.
//!
//! Compiled twice: by the `svc-fuzz` crate (for `cargo fuzz`, nightly) and by svc-proxy's
//! `tests/fuzz_corpus.rs` (stable), which replays every corpus file through these functions.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol as DnsProtocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Message, MessageType};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use svc_core::model::{EndpointSlice, IpFamily, Service};
use svc_core::source::manifests;
use svc_core::store::StoreConfig;

/// Manifests text: parsed as the manifests source parses a file; whatever parses is applied
/// to a store, and every Service must then be found by its name and each of its addresses.
pub fn manifest_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = manifests::parse_str(text) else {
        return;
    };
    parsed.services.iter().for_each(check_service);
    parsed.slices.iter().for_each(check_slice);
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    for event in parsed.into_events() {
        writer.apply(event);
    }
    for snapshot in store.services() {
        let svc = &snapshot.service;
        let name = format!("{}.{}", svc.key.name, svc.key.namespace);
        assert!(
            store.resolve_name(&name).is_some(),
            "{name} not found by name"
        );
        if svc.is_proxied() {
            for ip in &svc.cluster_ips {
                assert!(store.lookup_cluster_ip(*ip).is_some(), "{ip} not indexed");
                for p in &svc.ports {
                    assert!(
                        store.lookup_vip(*ip, p.port, p.protocol).is_some(),
                        "{ip}:{} not indexed",
                        p.port
                    );
                }
            }
        }
    }
}

/// One API object as JSON, converted as the Kubernetes source converts it: what converts must
/// follow the API server's validation rules.
pub fn model_convert(data: &[u8]) {
    if let Ok(obj) = serde_json::from_slice::<corev1::Service>(data) {
        if let Ok(svc) = Service::try_from(&obj) {
            check_service(&svc);
        }
    }
    if let Ok(obj) = serde_json::from_slice::<discoveryv1::EndpointSlice>(data) {
        if let Ok(slice) = EndpointSlice::try_from(&obj) {
            check_slice(&slice);
        }
    }
}

fn usable(ip: &IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
        v4 => *v4,
    };
    !ip.is_unspecified() && !ip.is_multicast()
}

fn check_service(svc: &Service) {
    let mut pairs = HashSet::new();
    let mut names = HashSet::new();
    for p in &svc.ports {
        assert!(p.port != 0);
        assert!(
            pairs.insert((p.port, p.protocol)),
            "duplicate port/protocol accepted: {svc:?}"
        );
        if let Some(name) = &p.name {
            assert!(names.insert(name.clone()), "duplicate port name accepted");
        } else {
            assert_eq!(svc.ports.len(), 1, "unnamed port among several accepted");
        }
    }
    assert!(svc.cluster_ips.len() <= 2);
    if let [a, b] = svc.cluster_ips.as_slice() {
        assert_ne!(a.is_ipv4(), b.is_ipv4(), "two cluster IPs of one family");
    }
    // ipFamilies name each cluster IP's family, in order, each family once.
    assert!(svc.ip_families.len() <= 2 && svc.ip_families.len() >= svc.cluster_ips.len());
    if let [a, b] = svc.ip_families.as_slice() {
        assert_ne!(a, b, "one family twice in ipFamilies");
    }
    for (ip, family) in svc.cluster_ips.iter().zip(&svc.ip_families) {
        assert_eq!(
            IpFamily::of(*ip),
            *family,
            "ipFamilies disagree with clusterIPs"
        );
    }
    for ip in svc.cluster_ips.iter().chain(&svc.external_ips) {
        assert!(usable(ip), "unusable address accepted: {ip}");
    }
}

fn check_slice(slice: &EndpointSlice) {
    let mut names = HashSet::new();
    for p in &slice.ports {
        assert!(names.insert(p.name.clone()), "duplicate slice port name");
    }
    for e in &slice.endpoints {
        assert!(
            usable(&e.address),
            "unusable endpoint accepted: {}",
            e.address
        );
    }
}

/// The store every DNS query is answered from: a plain, a dual-stack, a headless and an
/// ExternalName Service.
const ZONE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIPs: [10.0.0.7, "fd00::7"], ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: pods, namespace: shop}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pods-1, namespace: shop, labels: {kubernetes.io/service-name: pods}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["10.1.0.1"], hostname: pod-a}
- {addresses: ["10.1.0.2"], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: docs, namespace: shop}
spec: {type: ExternalName, externalName: docs.example.com}
"#;

fn dns_handler() -> &'static svc_proxy::dns::Handler {
    static HANDLER: OnceLock<svc_proxy::dns::Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let (store, mut writer) = svc_core::store::store(StoreConfig::default());
        for event in manifests::parse_str(ZONE)
            .expect("the zone parses")
            .into_events()
        {
            writer.apply(event);
        }
        let metrics = Arc::new(svc_proxy::metrics::Metrics::new(
            store.clone(),
            Arc::default(),
            false,
        ));
        let zone = svc_proxy::dns::answer::Zone::new(store, 5).expect("a valid zone");
        svc_proxy::dns::Handler::new(zone, None, metrics).expect("a handler")
    })
}

/// Keeps the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// One DNS message, as a UDP client would send it, answered by the proxy's handler: every
/// message that parses gets one response, which parses, is a response and carries the query's
/// id; only a question that could not be echoed intact (a compression pointer out of it) is
/// dropped instead.
pub fn dns_answer(data: &[u8]) {
    let src = SocketAddr::from(([127, 0, 0, 1], 5300));
    let Ok(request) = Request::from_bytes(data.to_vec(), src, DnsProtocol::Udp) else {
        return;
    };
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
    }
    let capture = Capture::default();
    RUNTIME.with(|rt| {
        rt.block_on(dns_handler().handle_request::<Capture, TokioTime>(&request, capture.clone()))
    });
    let Some(bytes) = capture.0.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        // Dropped: only a question with a compression pointer (which would not survive being
        // echoed) may be.
        assert!(
            request.queries.as_bytes().iter().any(|b| *b >= 0xC0),
            "a query without an answer"
        );
        return;
    };
    let response = Message::from_vec(&bytes).expect("the response parses");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(response.metadata.id, request.metadata.id);
}

/// The headers that never cross a hop (RFC 9110 §7.6.1), whatever `Connection` says.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Headers as `name: value` lines, stripped as HTTP mode strips every request and response,
/// and compared with the rule: no hop-by-hop header and none that `Connection` names is left
/// (except `te: trailers`, which HTTP/2 and gRPC need), and every other header is left as it
/// was, values and order included.
pub fn hop_by_hop(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let before = headers.clone();
    let named: HashSet<String> = before
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| t != "close")
        .collect();
    svc_proxy::http::headers::strip_hop_by_hop(&mut headers);
    for (name, value) in &headers {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || named.contains(name.as_str());
        assert!(
            !hop || (name == header::TE && value == "trailers"),
            "{name}: {value:?} crossed the hop"
        );
    }
    for name in before.keys() {
        if HOP_BY_HOP.contains(&name.as_str()) || named.contains(name.as_str()) {
            continue;
        }
        let was: Vec<&HeaderValue> = before.get_all(name).iter().collect();
        let is: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        assert_eq!(was, is, "{name} changed");
    }
}

/// Bytes read from a client or an endpoint, parsed as svc-proxy's direct HTTP/1.1 engine parses
/// them (`http::direct::head`). What it forwards must say what it parsed: a rebuilt request
/// head parses again as the same request, without `Connection`; a forwarded response head
/// parses again with the same status and framing and without hop-by-hop headers; a body's
/// content ranges lie inside the bytes given.
pub fn h1_direct(data: &[u8]) {
    use svc_proxy::http::direct::head::{self, Request, Response};
    const MAX_HEAD: usize = 60 * 1024;
    const MAX_MESSAGE: usize = 16 * 1024;
    if let Request::Direct(req) = head::request(data, MAX_HEAD, MAX_MESSAGE) {
        assert!(req.len <= data.len() && req.len + req.body <= MAX_MESSAGE);
        if let Some(rewritten) = &req.rewritten {
            let again = head::request(rewritten, MAX_HEAD, MAX_MESSAGE + rewritten.len());
            let Request::Direct(again) = again else {
                panic!(
                    "the rebuilt head {:?} is not plain",
                    String::from_utf8_lossy(rewritten)
                );
            };
            assert_eq!((again.len, again.body), (rewritten.len(), req.body));
            assert!(!again.close && again.rewritten.is_none());
            assert_eq!(
                (again.is_head, again.idempotent),
                (req.is_head, req.idempotent)
            );
        }
    }
    for (is_head, close) in [(false, false), (true, true)] {
        match head::response(data, is_head, close) {
            Response::Final(resp) => {
                assert!(resp.len <= data.len());
                let forwarded = resp.rewritten.as_deref().unwrap_or(&data[..resp.len]);
                // A head at the parser's header limit that gained `connection: close` is one
                // more than the engine would parse (any client reads it).
                let lines = forwarded.split(|&b| b == b'\n').count();
                if lines > head::MAX_HEADERS + 2 {
                    continue;
                }
                let Response::Final(again) = head::response(forwarded, is_head, false) else {
                    panic!(
                        "the forwarded head {:?} does not parse",
                        String::from_utf8_lossy(forwarded)
                    );
                };
                assert_eq!((again.status, again.body), (resp.status, resp.body));
                if resp.rewritten.is_some() {
                    let text = String::from_utf8_lossy(forwarded).to_ascii_lowercase();
                    for hop in [
                        "\r\nkeep-alive:",
                        "\r\nproxy-connection:",
                        "\r\nupgrade:",
                        "\r\nte:",
                    ] {
                        assert!(!text.contains(hop), "{hop} forwarded in {text:?}");
                    }
                }
                let body = &data[resp.len..];
                let mut framing = resp.body;
                if let Ok((used, _)) = framing.feed_with(body, |r| assert!(r.end <= body.len())) {
                    assert!(used <= body.len());
                }
            }
            Response::Informational(len) => assert!(len <= data.len()),
            Response::Partial | Response::Invalid(_) => {}
        }
    }
}
