//! Every way a request can fail, and the one place that turns a failure into the
//! `metav1.Status` a client sees.
//!
//! Handlers and the registry return [`ApiError`]; the HTTP layer calls [`ApiError::status`] and
//! writes it with [`ApiError::code`]. The Status itself is written by the builder shared with the
//! agent ([`edgefleet_apimachinery::status`]); which failure gets which code, reason and details
//! is decided here. Messages follow kube-apiserver's wording so that kubectl
//! prints what users already know (`Error from server (NotFound): clusters.edgefleet.io "x" not
//! found`), and `details` carry the name, group, kind and field causes that clients act upon.

use std::fmt;

use edgefleet_api::validation::ErrorList;
use edgefleet_apimachinery::status::{self, Status, StatusBuilder};
use http::StatusCode;

use crate::storage::StorageError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// `clusters.edgefleet.io`, as Kubernetes names a resource in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResource {
    pub group: &'static str,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &'static str, resource: impl Into<String>) -> Self {
        Self {
            group,
            resource: resource.into(),
        }
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} {name:?} not found")]
    NotFound {
        resource: GroupResource,
        name: String,
    },

    /// Not found with a message of its own (e.g. the Environment of a namespace is missing).
    #[error("{message}")]
    NotFoundMessage {
        resource: GroupResource,
        name: String,
        message: String,
    },

    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        resource: GroupResource,
        name: String,
    },

    /// Optimistic concurrency failed, or the request conflicts with the object's state.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {reason}")]
    Conflict {
        resource: GroupResource,
        name: String,
        reason: String,
    },

    /// Server-side apply found fields owned by other managers.
    #[error("{message}")]
    ApplyConflict {
        resource: GroupResource,
        name: String,
        message: String,
        fields: Vec<(String, String)>,
    },

    /// The object fails validation (422), one cause per field error.
    #[error("{kind}.{group} {name:?} is invalid: {errors}")]
    Invalid {
        kind: &'static str,
        group: &'static str,
        name: String,
        errors: ErrorList,
    },

    #[error("{0}")]
    BadRequest(String),

    #[error("Unauthorized")]
    Unauthorized,

    /// The authorizer said no; the message names user, verb and resource.
    #[error("{message}")]
    Forbidden {
        message: String,
        resource: Option<GroupResource>,
        name: String,
    },

    /// A resource version or continue token older than the retained history.
    #[error("{0}")]
    Expired(String),

    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,

    #[error("{0}")]
    UnsupportedMediaType(String),

    #[error("{0}")]
    NotAcceptable(String),

    #[error("the request is too large: {0}")]
    RequestEntityTooLarge(String),

    /// The path names nothing this server serves.
    #[error("the server could not find the requested resource")]
    NoSuchPath,

    #[error("{0}")]
    ServiceUnavailable(String),

    /// A read at a revision the store has not reached (kube answers 504 and asks to retry).
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: i64, current: i64 },

    #[error("Internal error occurred: {0}")]
    Internal(String),

    /// The request could not be recorded in the audit trail and is refused (fail closed), with
    /// kube-apiserver's words. A `metav1.Status` like every error of a resource request (kube
    /// answers plain text); non-resource requests — discovery, OpenAPI, which client-go reads
    /// raw and would show as "unknown" — get the message as plain text
    /// (`http::layers::audit::refusal`). The cause (which file, which errno) stays in the
    /// hub's log: it names server paths.
    #[error("Internal Server Error: failed to store audit event")]
    AuditUnavailable,
}

impl ApiError {
    /// HTTP status of the failure.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NotFoundMessage { .. } | ApiError::NoSuchPath => {
                StatusCode::NOT_FOUND
            }
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Expired(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::RequestEntityTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLargeResourceVersion { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) | ApiError::AuditUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `metav1.StatusReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NotFoundMessage { .. } | ApiError::NoSuchPath => {
                "NotFound"
            }
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Expired(_) => "Expired",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::Internal(_) | ApiError::AuditUnavailable => "InternalError",
        }
    }

    /// The `metav1.Status` body for this failure, written with the shared builder.
    pub fn status(&self) -> Status {
        let status = status::failure(self.code(), self.reason(), self.to_string());
        let named = |b: StatusBuilder, resource: &GroupResource, name: &str| {
            b.object(resource.group, &resource.resource, name)
        };
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::NotFoundMessage { resource, name, .. }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. }
            | ApiError::Forbidden {
                resource: Some(resource),
                name,
                ..
            } => named(status, resource, name),
            ApiError::ApplyConflict {
                resource,
                name,
                fields,
                ..
            } => fields
                .iter()
                .fold(named(status, resource, name), |b, (field, message)| {
                    b.cause(status::cause(
                        Some("FieldManagerConflict"),
                        message.clone(),
                        Some(field),
                    ))
                }),
            ApiError::Invalid {
                kind,
                group,
                name,
                errors,
            } => errors
                .iter()
                .fold(status.object(group, kind, name), |b, e| {
                    b.cause(status::cause(
                        Some(e.kind.reason()),
                        e.body(),
                        Some(&e.field),
                    ))
                }),
            ApiError::TooLargeResourceVersion { .. } => status
                .cause(status::cause(
                    Some("ResourceVersionTooLarge"),
                    "Too large resource version",
                    None,
                ))
                .retry_after(1),
            ApiError::Internal(message) => status.cause(status::cause(None, message.clone(), None)),
            _ => status,
        }
        .build()
    }

    /// A storage failure while working on `resource`/`name`.
    pub fn from_storage(err: StorageError, resource: &GroupResource, name: &str) -> Self {
        match err {
            StorageError::NotFound { .. } => ApiError::NotFound {
                resource: resource.clone(),
                name: name.into(),
            },
            StorageError::AlreadyExists { .. } => ApiError::AlreadyExists {
                resource: resource.clone(),
                name: name.into(),
            },
            StorageError::Conflict { .. } => ApiError::Conflict {
                resource: resource.clone(),
                name: name.into(),
                reason: OBJECT_MODIFIED.into(),
            },
            other => other.into(),
        }
    }
}

/// kube-apiserver's reason for an optimistic-concurrency conflict.
pub const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Compacted {
                requested,
                compacted,
            } => ApiError::Expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StorageError::FutureRevision { requested, current } => {
                ApiError::TooLargeResourceVersion { requested, current }
            }
            StorageError::Unavailable(e) => {
                ApiError::ServiceUnavailable(format!("storage is unavailable: {e}"))
            }
            StorageError::TooLarge { size, .. } => ApiError::RequestEntityTooLarge(format!(
                "the object is {size} bytes as stored, more than storage takes"
            )),
            // What the key names: a `?` on a storage call answers 404/409 as kube does, never
            // 500, even where the caller did not name the object (`from_storage` does).
            StorageError::NotFound { ref key }
            | StorageError::AlreadyExists { ref key }
            | StorageError::Conflict { ref key, .. } => {
                let (resource, name) = object_of_key(key);
                ApiError::from_storage(err, &resource, &name)
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The resource and name a storage key is of (`edgefleet.io/<resource>/[<namespace>/]<name>`,
/// `registry::keys`); a key of another shape is named as a whole.
fn object_of_key(key: &str) -> (GroupResource, String) {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [group, resource, .., name] if *group == edgefleet_api::GROUP && parts.len() >= 3 => (
            GroupResource::new(edgefleet_api::GROUP, *resource),
            (*name).to_string(),
        ),
        _ => (GroupResource::new("", ""), key.to_string()),
    }
}

#[cfg(test)]
mod tests;
