//! `Status` bodies and response helpers.

use std::io;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{json, Value};

/// The body type of every response.
pub(crate) type RespBody = BoxBody<Bytes, io::Error>;

/// The `reason` the API server uses for an HTTP status.
pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// A `metav1.Status` failure object.
pub(crate) fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A failure response with a `Status` body.
pub(crate) fn status_response(code: u16, reason: &str, message: &str) -> Response<RespBody> {
    json_response(code, &status_json(code, reason, message))
}

/// A failure response whose reason follows from its code.
pub(crate) fn error(code: u16, message: &str) -> Response<RespBody> {
    status_response(code, reason_for(code), message)
}

/// A JSON response. Invalid codes become 500.
pub(crate) fn json_response(code: u16, body: &impl Serialize) -> Response<RespBody> {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(e) => return error(500, &format!("failed to encode response: {e}")),
    };
    let mut response = Response::new(full(bytes));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A complete in-memory body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
