//! Request routing and the non-streaming handlers.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{json, Value};

use super::discovery::{core_versions, groups, resources, version};
use super::query::{list_options, watch_options, Query};
use super::shared::Shared;
use super::status::{error, full, json_response, status_response, RespBody};
use super::watch;
use crate::faults::Failure;
use crate::kind::Kind;
use crate::store::{ObjKey, StoreError, WriteMode};

/// Largest accepted request body.
const MAX_BODY: usize = 4 << 20;

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `/readyz`, `/livez`, `/healthz`: `ok` while the server is up.
    Health,
    Version,
    CoreVersions,
    Groups,
    Resources(Kind),
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Item {
        kind: Kind,
        namespace: String,
        name: String,
    },
    NotFound,
}

fn group_path(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Service => &["api", "v1"],
        Kind::EndpointSlice => &["apis", "discovery.k8s.io", "v1"],
    }
}

impl Route {
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["version"] => return Route::Version,
            ["readyz" | "livez" | "healthz"] => return Route::Health,
            ["api"] => return Route::CoreVersions,
            ["apis"] => return Route::Groups,
            _ => {}
        }
        for kind in Kind::ALL {
            let Some(rest) = segments.strip_prefix(group_path(kind)) else {
                continue;
            };
            let plural = kind.plural();
            return match rest {
                [] => Route::Resources(kind),
                [p] if *p == plural => Route::Collection {
                    kind,
                    namespace: None,
                },
                ["namespaces", ns, p] if *p == plural => Route::Collection {
                    kind,
                    namespace: Some((*ns).to_owned()),
                },
                ["namespaces", ns, p, name] if *p == plural => Route::Item {
                    kind,
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                },
                _ => Route::NotFound,
            };
        }
        Route::NotFound
    }
}

/// Handles one request: counters, injected latency and failures, then routing.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    shared.counters.count_request();
    let route = Route::parse(req.uri().path());
    let query = Query::parse(req.uri().query());
    if let (&Method::GET, Route::Collection { kind, .. }, Ok(q)) = (req.method(), &route, &query) {
        match q.is_watch() {
            Ok(true) => shared.counters.count_watch(*kind),
            _ => shared.counters.count_list(*kind),
        }
    }
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(failure) = shared.faults.take_failure() {
        return Ok(injected(failure));
    }
    let query = match query {
        Ok(query) => query,
        Err(msg) => return Ok(error(400, &msg)),
    };
    if let Some(denied) = authorize(&shared, req.method(), &route, &query) {
        return Ok(denied);
    }
    Ok(dispatch(&shared, req, route, query).await)
}

/// The RBAC check of a resource request: `Some(403)` when it is denied.
fn authorize(
    shared: &Shared,
    method: &Method,
    route: &Route,
    query: &Query,
) -> Option<Response<RespBody>> {
    let rbac = shared.rbac.read();
    let rbac = rbac.as_ref()?;
    let (verb, kind, namespace) = match (method, route) {
        (&Method::GET, Route::Collection { kind, namespace }) => {
            let verb = if query.is_watch().unwrap_or(false) {
                "watch"
            } else {
                "list"
            };
            (verb, *kind, namespace.as_deref())
        }
        (method, Route::Collection { kind, namespace }) => {
            let verb = if *method == Method::POST {
                "create"
            } else {
                "deletecollection"
            };
            (verb, *kind, namespace.as_deref())
        }
        (
            method,
            Route::Item {
                kind, namespace, ..
            },
        ) => {
            let verb = match *method {
                Method::GET => "get",
                Method::PUT => "update",
                Method::DELETE => "delete",
                _ => "patch",
            };
            (verb, *kind, Some(namespace.as_str()))
        }
        _ => return None,
    };
    if rbac.allows(verb, kind, namespace) {
        return None;
    }
    Some(error(403, &rbac.denial(verb, kind, namespace)))
}

fn injected(failure: Failure) -> Response<RespBody> {
    let message = format!("injected failure ({})", failure.status);
    let mut response = error(failure.status, &message);
    if let Some(secs) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    route: Route,
    q: Query,
) -> Response<RespBody> {
    let method = req.method().clone();
    match (method, route) {
        (Method::GET, Route::Health) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full("ok"))
            .unwrap_or_default(),
        (Method::GET, Route::Version) => json_response(200, &version()),
        (Method::GET, Route::CoreVersions) => json_response(200, &core_versions()),
        (Method::GET, Route::Groups) => json_response(200, &groups()),
        (Method::GET, Route::Resources(kind)) => json_response(200, &resources(kind)),
        (Method::GET, Route::Collection { kind, namespace }) => {
            let ns = namespace.as_deref();
            match q.is_watch() {
                Ok(true) => match watch_options(&q, ns) {
                    Ok(opts) => watch::start(shared, kind, opts),
                    Err(msg) => error(400, &msg),
                },
                Ok(false) => list(shared, kind, &q, ns),
                Err(msg) => error(400, &msg),
            }
        }
        (
            Method::POST,
            Route::Collection {
                kind,
                namespace: Some(ns),
            },
        ) => match read_object(req, kind, &ns, None).await {
            Ok(obj) => write_response(shared, kind, obj, WriteMode::Create, 201),
            Err(response) => response,
        },
        (
            Method::GET,
            Route::Item {
                kind,
                namespace,
                name,
            },
        ) => {
            match shared
                .inner
                .lock()
                .store
                .get(kind, &ObjKey::new(&namespace, &name))
            {
                Some(obj) => json_response(200, &*obj),
                None => not_found(kind, &name),
            }
        }
        (
            Method::PUT,
            Route::Item {
                kind,
                namespace,
                name,
            },
        ) => match read_object(req, kind, &namespace, Some(&name)).await {
            Ok(obj) => write_response(shared, kind, obj, WriteMode::Update, 200),
            Err(response) => response,
        },
        (
            Method::DELETE,
            Route::Item {
                kind,
                namespace,
                name,
            },
        ) => match shared.delete(kind, &ObjKey::new(&namespace, &name)) {
            Some(event) => json_response(200, &*event.object),
            None => not_found(kind, &name),
        },
        (_, Route::NotFound) => error(404, "the server could not find the requested resource"),
        (method, _) => error(405, &format!("method {method} is not supported here")),
    }
}

fn not_found(kind: Kind, name: &str) -> Response<RespBody> {
    error(404, &format!("{} \"{name}\" not found", kind.plural()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_item_count: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<&'a Value>,
}

fn list(shared: &Shared, kind: Kind, q: &Query, namespace: Option<&str>) -> Response<RespBody> {
    let opts = match list_options(q, namespace) {
        Ok(opts) => opts,
        Err(msg) => return error(400, &msg),
    };
    let inner = shared.inner.lock();
    let page = inner.store.list(
        kind,
        &opts.filter,
        opts.at,
        opts.limit,
        opts.continue_.as_deref(),
    );
    let page = match page {
        Ok(page) => page,
        Err(StoreError::Expired {
            requested,
            compacted,
        }) => {
            let message = if opts.continue_.is_some() {
                format!("The provided continue parameter is too old to display a consistent list result (snapshot {requested}, compacted {compacted}). Start a new list without the continue parameter.")
            } else {
                format!("too old resource version: {requested} ({compacted})")
            };
            return status_response(410, "Expired", &message);
        }
        Err(err) => return store_error(kind, err),
    };
    let selective = !opts.filter.labels.is_empty() || !opts.filter.fields.is_empty();
    let body = List {
        api_version: kind.api_version(),
        kind: kind.list_kind(),
        metadata: ListMeta {
            resource_version: page.rv.to_string(),
            remaining_item_count: page
                .continue_
                .as_ref()
                .filter(|_| !selective)
                .map(|_| page.remaining),
            continue_: page.continue_,
        },
        items: page.items.iter().map(|item| &**item).collect(),
    };
    json_response(200, &body)
}

fn store_error(kind: Kind, err: StoreError) -> Response<RespBody> {
    match err {
        StoreError::Expired {
            requested,
            compacted,
        } => status_response(
            410,
            "Expired",
            &format!("too old resource version: {requested} ({compacted})"),
        ),
        StoreError::TooLarge { requested, current } => error(
            504,
            &format!("Too large resource version: {requested}, current: {current}"),
        ),
        StoreError::Invalid(msg) => error(422, &msg),
        StoreError::AlreadyExists => status_response(
            409,
            "AlreadyExists",
            &format!("{} already exists", kind.kind()),
        ),
        StoreError::Conflict(msg) => error(409, &msg),
    }
}

/// Reads a JSON object body for `namespace` (and `name` for PUT).
async fn read_object(
    req: Request<Incoming>,
    kind: Kind,
    namespace: &str,
    name: Option<&str>,
) -> Result<Value, Response<RespBody>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(error(400, &format!("failed to read body: {e}"))),
    };
    let mut obj: Value =
        serde_json::from_slice(&bytes).map_err(|e| error(400, &format!("invalid JSON: {e}")))?;
    let Some(meta) = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
    else {
        return Err(error(400, "body must be a JSON object"));
    };
    let Some(meta) = meta.as_object_mut() else {
        return Err(error(400, "metadata must be a JSON object"));
    };
    for (field, want) in [("namespace", Some(namespace)), ("name", name)] {
        let Some(want) = want else { continue };
        match meta.get(field).and_then(Value::as_str) {
            Some(have) if !have.is_empty() && have != want => {
                return Err(error(
                    400,
                    &format!("metadata.{field} {have:?} does not match the URL ({want:?})"),
                ));
            }
            _ => {
                meta.insert(field.to_owned(), want.into());
            }
        }
    }
    if obj
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != kind.kind())
    {
        return Err(error(400, &format!("expected kind {}", kind.kind())));
    }
    Ok(obj)
}

fn write_response(
    shared: &Shared,
    kind: Kind,
    obj: Value,
    mode: WriteMode,
    code: u16,
) -> Response<RespBody> {
    match shared.write(kind, obj, mode) {
        Ok(event) => json_response(code, &*event.object),
        Err(err) => store_error(kind, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let svc = Kind::Service;
        let eps = Kind::EndpointSlice;
        assert_eq!(
            Route::parse("/api/v1/services"),
            Route::Collection {
                kind: svc,
                namespace: None
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns/services"),
            Route::Collection {
                kind: svc,
                namespace: Some("ns".into())
            }
        );
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/x"),
            Route::Item {
                kind: eps,
                namespace: "ns".into(),
                name: "x".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/discovery.k8s.io/v1"),
            Route::Resources(eps)
        );
        assert_eq!(Route::parse("/version"), Route::Version);
        assert_eq!(Route::parse("/readyz"), Route::Health);
        assert_eq!(Route::parse("/api/v1/pods"), Route::NotFound);
        assert_eq!(Route::parse("/api/v1/endpointslices"), Route::NotFound);
        assert_eq!(Route::parse("/api/v1/services/x"), Route::NotFound);
        assert_eq!(Route::parse("/"), Route::NotFound);
    }
}
