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
//! Messages carry the error and its causes, never a credential (the errors never hold one). The
//! Status itself is written by the builder shared with the hub
//! ([`edgefleet_apimachinery::status`]).

use bytes::Bytes;
use edgefleet_apimachinery::status::{self as metav1, reason, StatusBuilder};
use edgefleet_tunnel::{body, error_chain, TunnelBody};
use http::{header, HeaderValue, Response, StatusCode};

use crate::error::UpstreamError;

/// `Content-Type` of JSON responses.
pub const JSON: &str = "application/json";

/// A `Failure` Status response.
pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<TunnelBody> {
    respond(code, metav1::failure(code, reason, message))
}

/// `404 NotFound` for a path nothing serves, worded as kube-apiserver words it.
pub fn path_not_found() -> Response<TunnelBody> {
    failure(
        StatusCode::NOT_FOUND,
        reason::NOT_FOUND,
        metav1::PATH_NOT_FOUND,
    )
}

/// `404 NotFound` for a named object of the core group that does not exist: `nodes "x" not found`.
pub fn object_not_found(resource: &str, name: &str) -> Response<TunnelBody> {
    respond(StatusCode::NOT_FOUND, metav1::not_found("", resource, name))
}

/// `405 MethodNotAllowed`.
pub fn method_not_allowed() -> Response<TunnelBody> {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        reason::METHOD_NOT_ALLOWED,
        metav1::METHOD_NOT_ALLOWED,
    )
}

/// `400 BadRequest`.
pub fn bad_request(message: impl Into<String>) -> Response<TunnelBody> {
    failure(StatusCode::BAD_REQUEST, reason::BAD_REQUEST, message)
}

/// The response for a failed upstream request or upgrade (see the module table).
pub fn upstream_error(error: &UpstreamError) -> Response<TunnelBody> {
    let (code, reason) = match error {
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, reason::TIMEOUT),
        UpstreamError::Unreachable { .. }
        | UpstreamError::NoUpgrade { .. }
        | UpstreamError::WebSocketAccept => (StatusCode::BAD_GATEWAY, reason::SERVICE_UNAVAILABLE),
        UpstreamError::UnsupportedProtocol(_) | UpstreamError::Request(_) => {
            (StatusCode::BAD_REQUEST, reason::BAD_REQUEST)
        }
        UpstreamError::NotImpersonated => (StatusCode::FORBIDDEN, reason::FORBIDDEN),
    };
    failure(code, reason, error_chain(error))
}

fn respond(code: StatusCode, status: StatusBuilder) -> Response<TunnelBody> {
    json_response(
        code,
        HeaderValue::from_static(JSON),
        Bytes::from(status.to_json()),
    )
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
