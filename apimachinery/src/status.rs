//! `metav1.Status`: how a Kubernetes API server says a request failed, and the one builder the
//! hub and the agent both write it with.
//!
//! ```json
//! {"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
//!  "message":"clusters.edgefleet.io \"edge-9\" not found","reason":"NotFound",
//!  "details":{"name":"edge-9","group":"edgefleet.io","kind":"clusters"},"code":404}
//! ```
//!
//! kubectl prints `Error from server (<reason>): <message>`; clients branch on `reason` and
//! `code`, and act on `details` (the object's name, group and resource; field causes of a 422;
//! `retryAfterSeconds`). Empty detail fields are left out, as Go's `omitempty` leaves them out.
//! Which failure gets which code and reason is each component's decision, made in one module
//! there (`apiserver/src/errors.rs`, `agent/src/status.rs`); this module only writes it down.

use http::StatusCode;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

/// kube's `metav1.StatusReason` values that this project answers with.
pub mod reason {
    pub const BAD_REQUEST: &str = "BadRequest";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const NOT_FOUND: &str = "NotFound";
    pub const ALREADY_EXISTS: &str = "AlreadyExists";
    pub const CONFLICT: &str = "Conflict";
    pub const GONE: &str = "Gone";
    pub const INVALID: &str = "Invalid";
    pub const EXPIRED: &str = "Expired";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const NOT_ACCEPTABLE: &str = "NotAcceptable";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UnsupportedMediaType";
    pub const REQUEST_ENTITY_TOO_LARGE: &str = "RequestEntityTooLarge";
    pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";
    pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
    pub const TIMEOUT: &str = "Timeout";
    pub const INTERNAL_ERROR: &str = "InternalError";
}

/// kube-apiserver's message for a path nothing serves (404).
pub const PATH_NOT_FOUND: &str = "the server could not find the requested resource";
/// kube-apiserver's message for a method a resource does not take (405).
pub const METHOD_NOT_ALLOWED: &str =
    "the server does not allow this method on the requested resource";

/// A `Failure` Status being built.
#[derive(Clone, Debug)]
#[must_use]
pub struct StatusBuilder(Status);

/// A `Failure` with its HTTP code, reason and message.
pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> StatusBuilder {
    StatusBuilder(Status {
        status: Some("Failure".to_owned()),
        code: Some(i32::from(code.as_u16())),
        reason: Some(reason.to_owned()),
        message: Some(message.into()),
        ..Status::default()
    })
}

/// `404 NotFound` for object `name` of `resource` in `group` (core: `""`), worded as kube words
/// it: `clusters.edgefleet.io "edge-9" not found`, `nodes "n1" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> StatusBuilder {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    failure(
        StatusCode::NOT_FOUND,
        reason::NOT_FOUND,
        format!("{qualified} {name:?} not found"),
    )
    .object(group, resource, name)
}

impl StatusBuilder {
    fn details(&mut self) -> &mut StatusDetails {
        self.0.details.get_or_insert_with(StatusDetails::default)
    }

    /// The object the failure is about: its group, its resource (kube puts the resource in
    /// `details.kind`) and its name; empty parts are left out.
    pub fn object(mut self, group: &str, resource: &str, name: &str) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let details = self.details();
        details.group = non_empty(group);
        details.kind = non_empty(resource);
        details.name = non_empty(name);
        self
    }

    /// One more cause (`details.causes[]`).
    pub fn cause(mut self, cause: StatusCause) -> Self {
        self.details()
            .causes
            .get_or_insert_with(Vec::new)
            .push(cause);
        self
    }

    /// `details.retryAfterSeconds`.
    pub fn retry_after(mut self, seconds: i32) -> Self {
        self.details().retry_after_seconds = Some(seconds);
        self
    }

    pub fn build(self) -> Status {
        self.0
    }

    /// The Status as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(&self.0)
    }
}

/// A cause: its reason (`FieldValueInvalid`, `FieldManagerConflict`, ...), message and field;
/// `None` or empty parts are left out.
pub fn cause(reason: Option<&str>, message: impl Into<String>, field: Option<&str>) -> StatusCause {
    let message = message.into();
    StatusCause {
        reason: reason.map(str::to_owned),
        message: (!message.is_empty()).then_some(message),
        field: field.map(str::to_owned),
    }
}

/// `status` as JSON (`kind: Status`, `apiVersion: v1`).
pub fn to_json(status: &Status) -> Vec<u8> {
    // A Status is plain data: serializing it cannot fail. The fallback keeps this total.
    serde_json::to_vec(status)
        .unwrap_or_else(|_| br#"{"kind":"Status","apiVersion":"v1"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn value(b: StatusBuilder) -> Value {
        serde_json::from_slice(&b.to_json()).unwrap()
    }

    #[test]
    fn a_not_found_is_what_kube_apiserver_sends() {
        assert_eq!(
            value(not_found("edgefleet.io", "clusters", "edge-9")),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "clusters.edgefleet.io \"edge-9\" not found", "reason": "NotFound",
                   "details": {"name": "edge-9", "group": "edgefleet.io", "kind": "clusters"},
                   "code": 404})
        );
        let core = value(not_found("", "nodes", "n1"));
        assert_eq!(core["message"], "nodes \"n1\" not found");
        assert_eq!(core["details"], json!({"name": "n1", "kind": "nodes"}));
    }

    #[test]
    fn causes_and_retry_after_go_in_the_details() {
        let status = value(
            failure(
                StatusCode::CONFLICT,
                reason::CONFLICT,
                "Apply failed with 1 conflict",
            )
            .object("edgefleet.io", "clusters", "")
            .cause(cause(
                Some("FieldManagerConflict"),
                "conflict with \"a\"",
                Some(".spec.x"),
            ))
            .cause(cause(None, "", None))
            .retry_after(1),
        );
        assert_eq!(status["code"], 409);
        assert_eq!(
            status["details"],
            json!({"group": "edgefleet.io", "kind": "clusters", "retryAfterSeconds": 1,
                   "causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"a\"",
                               "field": ".spec.x"}, {}]})
        );
        let bare = value(failure(StatusCode::BAD_REQUEST, reason::BAD_REQUEST, "no"));
        assert!(bare.get("details").is_none());
    }
}
