//! The one place where a failure becomes what the caller sees: a `metav1.Status` JSON body with
//! the matching HTTP status, as kube-apiserver answers (so kubectl prints
//! `Error from server (<Reason>): <message>`).
//!
//! | cause                                                     | code | reason               |
//! |-----------------------------------------------------------|------|----------------------|
//! | upstream unreachable, TLS failure, broken response        | 502  | `ServiceUnavailable` |
//! | upstream connect or response-headers timeout              | 504  | `Timeout`            |
//! | upgrade answered 2xx-not-101, or a wrong WebSocket accept | 502  | `ServiceUnavailable` |
//! | upgrade `:protocol` neither `websocket` nor `SPDY/3.1`    | 400  | `BadRequest`         |
//! | a request that cannot be rebuilt for the upstream         | 400  | `BadRequest`         |
//! | request from the hub without `Impersonate-User`           | 403  | `Forbidden`          |
//! | unknown path (simulated cluster, `/.well-known/edgefleet`)| 404  | `NotFound`           |
//!
//! Messages carry the error and its causes, never a credential (the errors never hold one).

use bytes::Bytes;
use edgefleet_tunnel::{body, TunnelBody};
use http::{header, HeaderValue, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusDetails};

use crate::upstream::UpstreamError;

/// `Content-Type` of JSON responses.
pub const JSON: &str = "application/json";

/// A `Failure` Status response.
pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<TunnelBody> {
    respond(code, status(code, reason, message.into(), None))
}

/// `404 NotFound` for a path nothing serves, worded as kube-apiserver words it.
pub fn path_not_found() -> Response<TunnelBody> {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// `404 NotFound` for a named object that does not exist: `nodes "x" not found`.
pub fn object_not_found(resource: &str, name: &str) -> Response<TunnelBody> {
    let details = StatusDetails {
        name: Some(name.to_owned()),
        kind: Some(resource.to_owned()),
        ..StatusDetails::default()
    };
    respond(
        StatusCode::NOT_FOUND,
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{resource} {name:?} not found"),
            Some(details),
        ),
    )
}

/// `405 MethodNotAllowed`.
pub fn method_not_allowed() -> Response<TunnelBody> {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

/// `400 BadRequest`.
pub fn bad_request(message: impl Into<String>) -> Response<TunnelBody> {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The response for a failed upstream request or upgrade (see the module table).
pub fn upstream_error(error: &UpstreamError) -> Response<TunnelBody> {
    let (code, reason) = match error {
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        UpstreamError::Unreachable { .. }
        | UpstreamError::NoUpgrade { .. }
        | UpstreamError::WebSocketAccept => (StatusCode::BAD_GATEWAY, "ServiceUnavailable"),
        UpstreamError::UnsupportedProtocol(_) | UpstreamError::Request(_) => {
            (StatusCode::BAD_REQUEST, "BadRequest")
        }
        UpstreamError::NotImpersonated => (StatusCode::FORBIDDEN, "Forbidden"),
    };
    failure(code, reason, error_chain(error))
}

fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<StatusDetails>,
) -> Status {
    Status {
        code: Some(i32::from(code.as_u16())),
        details,
        message: Some(message),
        reason: Some(reason.to_owned()),
        status: Some("Failure".to_owned()),
        ..Status::default()
    }
}

fn respond(code: StatusCode, status: Status) -> Response<TunnelBody> {
    // A Status always serializes; the fallback only keeps this function total.
    let json = serde_json::to_vec(&status).unwrap_or_else(|_| b"{}".to_vec());
    json_response(code, HeaderValue::from_static(JSON), Bytes::from(json))
}

/// A response with a JSON body of the given content type.
pub fn json_response(
    code: StatusCode,
    content_type: HeaderValue,
    json: Bytes,
) -> Response<TunnelBody> {
    let mut response = Response::new(body::full(json));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// `error` and its sources, joined, for one message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and rustls often repeat their cause in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn json(response: Response<TunnelBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_status_is_what_kube_apiserver_sends() {
        let response = object_not_found("nodes", "edge-node-9");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON);
        let status = json(response).await;
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["message"], "nodes \"edge-node-9\" not found");
        assert_eq!(status["details"]["name"], "edge-node-9");
    }

    #[tokio::test]
    async fn upstream_timeouts_are_504_and_other_failures_502() {
        let timeout = UpstreamError::Timeout {
            url: "https://10.0.0.1:6443".into(),
            after: std::time::Duration::from_secs(10),
        };
        let response = upstream_error(&timeout);
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json(response).await["reason"], "Timeout");

        let refused = UpstreamError::Unreachable {
            url: "https://10.0.0.1:6443".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let response = upstream_error(&refused);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let message = json(response).await["message"].as_str().unwrap().to_owned();
        assert!(message.contains("https://10.0.0.1:6443"), "{message}");
        assert!(message.contains("refused"), "{message}");
    }
}
