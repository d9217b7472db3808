//! The admin HTTP server (localhost by default): `/healthz`, `/readyz`, `/metrics` and
//! `/debug/services`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use svc_core::model::ServiceType;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::Context;

/// Binds the admin server; serve it with [`serve`].
///
/// # Errors
/// [`Error::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves admin requests until shutdown completes (it keeps answering while flows drain, with
/// `/readyz` reporting 503).
pub async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    let never = tokio_util::sync::CancellationToken::new();
    crate::tcp::accept_loop(&listener, &never, |stream, _| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    })
    .await
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

fn route(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (status, body) =
                crate::health::readyz(ctx, crate::health::wants_verbose(req.uri().query()));
            text(status, body)
        }
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(ctx.metrics.encode())))
            .unwrap_or_default(),
        "/debug/services" => {
            let body = serde_json::to_vec_pretty(&services(ctx)).unwrap_or_default();
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics /debug/services\n",
        ),
    }
}

/// `namespace/name` → cluster IPs, ports and endpoints with their conditions.
pub fn services(ctx: &Context) -> Value {
    let mut out = Map::new();
    for snap in ctx.store.services() {
        let svc = &snap.service;
        let kind = match svc.service_type {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
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
        out.insert(
            svc.key.to_string(),
            json!({
                "type": kind,
                "clusterIPs": svc.cluster_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
                "headless": svc.headless,
                "externalName": svc.external_name.as_deref(),
                "ports": ports,
            }),
        );
    }
    Value::Object(out)
}
