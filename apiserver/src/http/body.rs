//! Response bodies and the helpers that build responses.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WARNING};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

use crate::errors::ApiError;
use crate::negotiation::Encoding;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response: a whole buffer or a stream (watch, proxy). An error
/// aborts the stream (a proxied stream that broke must not look complete to the client); the
/// error type is concrete because generic `Into<BoxError>` bounds trip up the compiler's
/// `Send` checks of async code.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Largest request body accepted (kube-apiserver allows 3 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A response with `bytes` as `content_type`.
pub fn bytes_response(
    status: StatusCode,
    content_type: &str,
    bytes: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

/// Serializes `value` in `encoding`.
pub fn encode<T: Serialize>(value: &T, encoding: Encoding) -> Result<Bytes, ApiError> {
    match encoding {
        Encoding::Json => serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(e.to_string())),
        Encoding::Yaml => serde_yaml_ng::to_string(value)
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(e.to_string())),
    }
}

/// A serialized value as a response.
pub fn value_response<T: Serialize>(
    status: StatusCode,
    value: &T,
    encoding: Encoding,
) -> Result<Response<Body>, ApiError> {
    Ok(bytes_response(
        status,
        encoding.content_type(),
        encode(value, encoding)?,
    ))
}

/// JSON bytes re-encoded when YAML was asked for.
pub fn json_bytes_response(
    status: StatusCode,
    json: Bytes,
    encoding: Encoding,
) -> Result<Response<Body>, ApiError> {
    match encoding {
        Encoding::Json => Ok(bytes_response(status, "application/json", json)),
        Encoding::Yaml => {
            let value: serde_json::Value =
                serde_json::from_slice(&json).map_err(|e| ApiError::Internal(e.to_string()))?;
            value_response(status, &value, encoding)
        }
    }
}

/// The `metav1.Status` of a response that reports an error, in its extensions: what the audit
/// layer records, without reading the body back.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorStatus(pub Status);

/// Marks a response whose body is relayed from elsewhere (an edge cluster), as opposed to one
/// the hub built in memory: the audit layer does not read it ahead of its client.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// The `metav1.Status` response for an error, carrying the Status in its extensions.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let status = err.status();
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let mut resp = bytes_response(err.code(), "application/json", body);
    if matches!(err, ApiError::TooLargeResourceVersion { .. }) {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp.extensions_mut().insert(ErrorStatus(status));
    resp
}

/// Adds `Warning: 299 - "<text>"` headers, as kube-apiserver does for warnings.
pub fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(WARNING, v);
        }
    }
}

/// Reads a request body, refusing more than [`MAX_REQUEST_BODY_BYTES`].
pub async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(
            ApiError::RequestEntityTooLarge(format!("limit is {MAX_REQUEST_BODY_BYTES} bytes")),
        ),
        Err(e) => Err(ApiError::BadRequest(format!(
            "reading the request body failed: {e}"
        ))),
    }
}
