//! The admin HTTP server (localhost by default): `/healthz`, `/readyz`, `/metrics` and
//! `/debug/services`.
//!
//! - `/readyz` is 200 only when the dataplane is programmed ([`readyz`]); `?verbose` lists
//!   every check the way the kube-apiserver does, failing Services included.
//! - `/debug/services` ([`services`]) takes `?namespace=` and `?service=` (a name, or
//!   `namespace/name`) and streams its JSON one chunk at a time.

pub mod readyz;
pub mod services;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::Context;

/// An admin response body: whole, or streamed.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

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

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()).boxed_unsync())
        .unwrap_or_default()
}

fn route(ctx: &Context, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz::respond(ctx, query.has("verbose")),
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(ctx.metrics.encode())).boxed_unsync())
            .unwrap_or_default(),
        "/debug/services" => services::respond(ctx, &query),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics /debug/services\n",
        ),
    }
}

/// A request's query parameters (`a=b&c`), percent-decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a query string; malformed escapes are kept as they are.
    pub fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present (with or without a value).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_decoded() {
        let q = Query::parse("namespace=shop&service=shop%2Fweb&verbose&bad=%zz&end=%4");
        assert_eq!(q.get("namespace"), Some("shop"));
        assert_eq!(q.get("service"), Some("shop/web"));
        assert!(q.has("verbose") && !q.has("missing"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("end"), Some("%4"));
        assert!(Query::parse("").get("x").is_none());
    }
}
