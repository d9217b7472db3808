//! `/debug/services`: every Service with its cluster IPs, ports, endpoints and failing
//! listeners, as one JSON object keyed by `namespace/name`.
//!
//! The body is streamed, a few dozen Services per chunk, so that 10,000 Services never become
//! one 25 MB string (and its `serde_json::Value` tree) in memory. `?namespace=` and
//! `?service=` (a name, or `namespace/name`) narrow it down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use svc_core::model::{ServiceKey, ServiceType};
use svc_core::store::ServiceSnapshot;
use tokio::time::Instant;

use super::{Body, Query};
use crate::listeners::FailingListener;
use crate::Context;

/// Bytes per chunk of the streamed body, roughly.
const CHUNK: usize = 32 * 1024;

/// Which Services a request asks for.
struct Filter {
    namespace: Option<String>,
    service: Option<String>,
}

impl Filter {
    fn matches(&self, key: &ServiceKey) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| *key.namespace == *ns)
            && self
                .service
                .as_deref()
                .is_none_or(|s| match s.split_once('/') {
                    Some((ns, name)) => *key.namespace == *ns && *key.name == *name,
                    None => *key.name == *s,
                })
    }
}

/// The `/debug/services` response.
pub fn respond(ctx: &Context, query: &Query) -> Response<Body> {
    let filter = Filter {
        namespace: query.get("namespace").map(String::from),
        service: query.get("service").map(String::from),
    };
    let mut failing: HashMap<ServiceKey, Vec<FailingListener>> = HashMap::new();
    for f in ctx.dataplane.failing().iter() {
        failing
            .entry(f.service.clone())
            .or_default()
            .push(f.clone());
    }
    let mut services: Vec<Arc<ServiceSnapshot>> = ctx.store.services();
    services.retain(|s| filter.matches(&s.service.key));
    let dump = Dump {
        services: services.into_iter(),
        failing,
        written: 0,
        done: false,
    };
    let chunks = futures::stream::unfold(dump, |mut dump| async move {
        let chunk = dump.next_chunk()?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), dump))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap_or_default()
}

struct Dump {
    services: std::vec::IntoIter<Arc<ServiceSnapshot>>,
    failing: HashMap<ServiceKey, Vec<FailingListener>>,
    written: usize,
    done: bool,
}

impl Dump {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 4);
        if self.written == 0 {
            out.extend_from_slice(b"{");
        }
        while out.len() < CHUNK {
            let Some(snap) = self.services.next() else {
                out.extend_from_slice(if self.written == 0 { b"}\n" } else { b"\n}\n" });
                self.done = true;
                break;
            };
            out.extend_from_slice(if self.written == 0 { b"\n" } else { b",\n" });
            let key = &snap.service.key;
            let failing = self.failing.get(key).map_or(&[][..], Vec::as_slice);
            // Serializing a string and a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &key.to_string());
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, &service_json(&snap, failing));
            self.written += 1;
        }
        Some(Bytes::from(out))
    }
}

/// One Service: type, cluster IPs, ports with their endpoints and conditions, and the
/// listeners that fail, if any.
pub fn service_json(snap: &ServiceSnapshot, failing: &[FailingListener]) -> Value {
    let svc = &snap.service;
    let kind = match svc.service_type {
        ServiceType::ClusterIp => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::ExternalName => "ExternalName",
        _ => "unknown",
    };
    let ports: Vec<Value> = snap
        .ports
        .iter()
        .map(|p| {
            let endpoints: Vec<Value> = p
                .endpoints
                .iter()
                .map(|e| {
                    let ep = &e.endpoint;
                    json!({
                        "address": e.addr.to_string(),
                        "ready": ep.conditions.ready,
                        "serving": ep.conditions.serving,
                        "terminating": ep.conditions.terminating,
                        "nodeName": ep.node_name.as_deref(),
                        "zone": ep.zone.as_deref(),
                    })
                })
                .collect();
            json!({
                "name": p.port.name.as_deref(),
                "port": p.port.port,
                "protocol": p.port.protocol.as_str(),
                "appProtocol": p.port.app_protocol.as_deref(),
                "nodePort": p.port.node_port,
                "endpoints": endpoints,
            })
        })
        .collect();
    let mut out = json!({
        "type": kind,
        "clusterIPs": svc.cluster_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "headless": svc.headless,
        "externalName": svc.external_name.as_deref(),
        "ports": ports,
    });
    if !failing.is_empty() {
        let now = Instant::now();
        out["listenerErrors"] = failing
            .iter()
            .map(|f| {
                json!({
                    "listen": f.addr.to_string(),
                    "protocol": f.protocol.as_str(),
                    "cause": f.cause.as_str(),
                    "error": f.error,
                    "attempts": f.attempts,
                    "retryInMs": f.retry_at.saturating_duration_since(now).as_millis() as u64,
                })
            })
            .collect();
    }
    out
}
