//! The `audit.k8s.io/v1` `Event`, field for field as kube-apiserver writes it, so that tools
//! reading kube audit logs read ours.
//!
//! Field order, names, `omitempty` behaviour and the timestamp format (`metav1.MicroTime`: RFC
//! 3339 in UTC with exactly six fractional digits) follow the Go types in
//! `k8s.io/apiserver/pkg/apis/audit/v1` and `k8s.io/api/authentication/v1`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::auth::UserInfo;

/// `apiVersion` of events, event lists and policies.
pub const API_VERSION: &str = "audit.k8s.io/v1";
/// `kind` of one event.
pub const EVENT_KIND: &str = "Event";
/// `kind` of the batches the webhook sink sends.
pub const EVENT_LIST_KIND: &str = "EventList";
/// kube-apiserver cuts longer `User-Agent`s and appends [`USER_AGENT_TRUNCATED_SUFFIX`].
pub const MAX_USER_AGENT_BYTES: usize = 1024;
pub const USER_AGENT_TRUNCATED_SUFFIX: &str = "...TRUNCATED";

/// How much of a request is recorded. Ordered: each level records what the previous one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Nothing is recorded.
    None,
    /// Who, what, when, outcome — no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, request and response bodies.
    RequestResponse,
}

impl Level {
    pub fn records_request_object(self) -> bool {
        self >= Level::Request
    }

    pub fn records_response_object(self) -> bool {
        self >= Level::RequestResponse
    }
}

/// When in a request's life an event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// As soon as the request is received, before it is handled.
    RequestReceived,
    /// Response headers are sent, the body is not (long-running requests only: watch, exec…).
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// The handler panicked — or, here, was dropped before completing (see `AuditedRequest`).
    Panic,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// `metav1.MicroTime`: a wall-clock instant printed with microsecond precision, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroTime(pub jiff::Timestamp);

impl MicroTime {
    pub fn now() -> Self {
        MicroTime(jiff::Timestamp::now())
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff truncates to the precision, as Go's time.Format does.
        write!(f, "{:.6}", self.0)
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map(MicroTime).map_err(serde::de::Error::custom)
    }
}

/// `authentication/v1.UserInfo` as it appears in events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventUser {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&UserInfo> for EventUser {
    fn from(user: &UserInfo) -> Self {
        EventUser {
            username: user.name.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
        }
    }
}

/// The object a request is about (`audit/v1.ObjectReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// An always-empty `metav1.ListMeta`: Go prints a zero struct as `{}` despite `omitempty`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyMeta {}

/// The outcome (`metav1.Status` with the fields kube copies into events).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    #[serde(default)]
    pub metadata: EmptyMeta,
    /// `Success` or `Failure`; kube leaves it empty for responses that were not a Status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

fn is_zero(code: &i32) -> bool {
    *code == 0
}

impl ResponseStatus {
    /// Just an HTTP status code, as kube records a response that is not a `Status` object.
    pub fn code(code: u16) -> Self {
        ResponseStatus {
            code: i32::from(code),
            ..ResponseStatus::default()
        }
    }

    /// From the `metav1.Status` the client was sent (an error), as kube copies it: status,
    /// message, reason, details and the HTTP code.
    pub fn from_status(
        status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
        code: u16,
    ) -> Self {
        ResponseStatus {
            metadata: EmptyMeta {},
            status: status.status.clone().unwrap_or_default(),
            message: status.message.clone().unwrap_or_default(),
            reason: status.reason.clone().unwrap_or_default(),
            details: status.details.as_ref().map(details_value),
            code: i32::from(code),
        }
    }

    /// A failure with a reason and message.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ResponseStatus {
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code: i32::from(code),
            ..ResponseStatus::default()
        }
    }
}

/// `metav1.StatusDetails` with Go's member order (k8s-openapi sorts them).
fn details_value(details: &k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails) -> Value {
    let mut map = serde_json::Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.to_string(), value);
        }
    };
    let string = |s: &Option<String>| s.clone().filter(|s| !s.is_empty()).map(Value::String);
    put("name", string(&details.name));
    put("group", string(&details.group));
    put("kind", string(&details.kind));
    put("uid", string(&details.uid));
    put(
        "causes",
        details
            .causes
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|causes| {
                Value::Array(
                    causes
                        .iter()
                        .map(|c| {
                            let mut cause = serde_json::Map::new();
                            for (key, value) in [
                                ("reason", &c.reason),
                                ("message", &c.message),
                                ("field", &c.field),
                            ] {
                                if let Some(v) = value.clone().filter(|v| !v.is_empty()) {
                                    cause.insert(key.to_string(), Value::String(v));
                                }
                            }
                            Value::Object(cause)
                        })
                        .collect(),
                )
            }),
    );
    put(
        "retryAfterSeconds",
        details
            .retry_after_seconds
            .filter(|s| *s != 0)
            .map(Value::from),
    );
    Value::Object(map)
}

/// One audit event (`audit.k8s.io/v1` `Event`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: EventUser,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<EventUser>,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Value>,
    pub request_received_timestamp: MicroTime,
    pub stage_timestamp: MicroTime,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Event {
    /// An event with the identifying fields set and nothing else.
    pub fn new(
        level: Level,
        audit_id: impl Into<String>,
        stage: Stage,
        received: MicroTime,
    ) -> Self {
        Event {
            kind: EVENT_KIND.into(),
            api_version: API_VERSION.into(),
            level,
            audit_id: audit_id.into(),
            stage,
            request_uri: String::new(),
            verb: String::new(),
            user: EventUser::default(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: received,
            stage_timestamp: received,
            annotations: BTreeMap::new(),
        }
    }
}

/// A batch of events, as the audit webhook receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub kind: String,
    pub api_version: String,
    #[serde(default)]
    pub metadata: EmptyMeta,
    pub items: Vec<Event>,
}
