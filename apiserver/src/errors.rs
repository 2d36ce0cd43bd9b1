//! Every way a request can fail, and the one place that turns a failure into the
//! `metav1.Status` a client sees.
//!
//! Handlers and the registry return [`ApiError`]; the HTTP layer calls [`ApiError::status`] and
//! writes it with [`ApiError::code`]. Messages follow kube-apiserver's wording so that kubectl
//! prints what users already know (`Error from server (NotFound): clusters.edgefleet.io "x" not
//! found`), and `details` carry the name, group, kind and field causes that clients act upon.

use std::fmt;

use edgefleet_api::validation::ErrorList;
use http::StatusCode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

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

    /// The `metav1.Status` body for this failure.
    pub fn status(&self) -> Status {
        Status {
            status: Some("Failure".into()),
            message: Some(self.to_string()),
            reason: Some(self.reason().into()),
            details: self.details(),
            code: Some(i32::from(self.code().as_u16())),
            ..Default::default()
        }
    }

    fn details(&self) -> Option<StatusDetails> {
        let named = |resource: &GroupResource, name: &str| StatusDetails {
            name: (!name.is_empty()).then(|| name.to_string()),
            group: Some(resource.group.to_string()),
            kind: Some(resource.resource.clone()),
            ..Default::default()
        };
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::NotFoundMessage { resource, name, .. }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => Some(named(resource, name)),
            ApiError::Forbidden {
                resource: Some(resource),
                name,
                ..
            } => Some(named(resource, name)),
            ApiError::ApplyConflict {
                resource,
                name,
                fields,
                ..
            } => Some(StatusDetails {
                causes: Some(
                    fields
                        .iter()
                        .map(|(field, message)| StatusCause {
                            reason: Some("FieldManagerConflict".into()),
                            message: Some(message.clone()),
                            field: Some(field.clone()),
                        })
                        .collect(),
                ),
                ..named(resource, name)
            }),
            ApiError::Invalid {
                kind,
                group,
                name,
                errors,
            } => Some(StatusDetails {
                name: Some(name.clone()),
                group: Some((*group).to_string()),
                kind: Some((*kind).to_string()),
                causes: Some(
                    errors
                        .iter()
                        .map(|e| StatusCause {
                            reason: Some(e.kind.reason().into()),
                            message: Some(e.body()),
                            field: Some(e.field.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ApiError::TooLargeResourceVersion { .. } => Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ResourceVersionTooLarge".into()),
                    message: Some("Too large resource version".into()),
                    field: None,
                }]),
                retry_after_seconds: Some(1),
                ..Default::default()
            }),
            ApiError::Internal(message) => Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    message: Some(message.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            _ => None,
        }
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
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
