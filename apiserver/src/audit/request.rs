//! What a request's audit record holds, and how its stages are written.
//!
//! ```text
//!  RequestAttributes (from the hub's audit layer: who, what, from where)
//!        │ Auditor::begin: policy → level
//!        ▼
//!  AuditedRequest ── annotate / set_impersonated_user / set_request_body ── (later stages see them)
//!        │  response_started(status)   long-running requests: ResponseStarted
//!        │  complete(status, body)     ResponseComplete (after ResponseStarted if it never was)
//!        ▼
//!  dropped uncompleted ──► Panic (a handler panic, or the request future dropped)
//! ```
//!
//! A request that may change something (anything but a read: writes, exec, anything whose
//! effect is not known) marks the records written after its `RequestReceived` as records that
//! must land: when the trail cannot take them, the writer keeps them and writes them once it
//! can (see [`writer`](super::writer)), so the trail never shows a change as begun but not
//! finished while the store has it.
//!
//! The request model knows nothing of HTTP: the hub's audit layer (`http::layers::audit`)
//! describes a request in these terms.

use serde_json::Value;

use super::auditor::{wait, AckReceiver, Auditor};
use super::event::{Event, EventUser, Level, MicroTime, ObjectReference, ResponseStatus, Stage};
use super::policy::RequestAuditConfig;
use super::session::Recording;
use super::AuditError;
use crate::auth::{Attributes, UserInfo};

/// Name of the edge cluster a proxied request went to.
pub const ANNOTATION_CLUSTER: &str = "edgefleet.io/cluster";
/// Environment (namespace) of that cluster.
pub const ANNOTATION_ENVIRONMENT: &str = "edgefleet.io/environment";
/// kube's annotation for an event whose bodies were left out for size.
pub const ANNOTATION_TRUNCATED: &str = "audit.k8s.io/truncated";
pub const ANNOTATION_REQUEST_OBJECT_OMITTED: &str = "edgefleet.io/request-object-omitted";
pub const ANNOTATION_RESPONSE_OBJECT_OMITTED: &str = "edgefleet.io/response-object-omitted";
/// Set on the `Panic` event of a request that was dropped rather than panicking.
pub const ANNOTATION_ABANDONED: &str = "edgefleet.io/abandoned";

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Resource(ObjectReference),
    /// A path outside the resource tree (`/healthz`, `/apis`, `/version` of an edge cluster).
    NonResource(String),
}

/// The edge cluster a proxied request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    /// The Environment, i.e. the namespace of the Cluster object.
    pub environment: String,
    pub cluster: String,
    /// The verb the hub authorized on `clusters/proxy` (from the HTTP method).
    pub hub_verb: String,
}

/// What [`Auditor::begin`] needs to know about a request.
#[derive(Clone, Debug)]
pub struct RequestAttributes {
    /// The `Audit-ID` the request came with (kube-apiserver sends its own to aggregated
    /// servers, which correlates the two trails); a new UUID when absent or implausible.
    pub audit_id: Option<String>,
    /// Path and query as received.
    pub request_uri: String,
    pub verb: String,
    /// The authenticated user (the policy is evaluated for this user, as kube does).
    pub user: UserInfo,
    pub impersonated_user: Option<UserInfo>,
    pub source_ips: Vec<String>,
    pub user_agent: String,
    pub target: Target,
    pub proxy: Option<ProxyTarget>,
    /// Watches, exec/attach/port-forward, logs, upgrades: get a `ResponseStarted` event.
    pub long_running: bool,
    /// A read without side effects (get, list, watch; a proxied GET that is not an upgrade):
    /// its `RequestReceived` need not be durable before the request proceeds, only before the
    /// response (or its first byte) goes out — see [`Auditor::begin`].
    pub read_only: bool,
    /// When the request arrived (now if `None`).
    pub received: Option<MicroTime>,
}

impl RequestAttributes {
    pub fn with_impersonated_user(mut self, user: Option<UserInfo>) -> Self {
        self.impersonated_user = user;
        self
    }

    /// The attributes the policy judges: the request itself, and for a proxied request also
    /// the hub's `clusters/proxy` view of it.
    pub fn policy_views(&self) -> Vec<Attributes> {
        let primary = match &self.target {
            Target::Resource(o) => {
                Attributes::resource(self.user.clone(), &self.verb, &o.api_group, &o.resource)
                    .with_api_version(&o.api_version)
                    .with_namespace(&o.namespace)
                    .with_name(&o.name)
                    .with_subresource(&o.subresource)
            }
            Target::NonResource(path) => {
                Attributes::non_resource(self.user.clone(), &self.verb, path)
            }
        };
        let mut views = vec![primary];
        if let Some(proxy) = &self.proxy {
            views.push(
                Attributes::resource(
                    self.user.clone(),
                    &proxy.hub_verb,
                    edgefleet_api::GROUP,
                    "clusters",
                )
                .with_api_version(edgefleet_api::VERSION)
                .with_namespace(&proxy.environment)
                .with_name(&proxy.cluster)
                .with_subresource("proxy"),
            );
        }
        views
    }
}

/// A request being audited. Complete it with [`complete`](Self::complete); dropping it
/// uncompleted records a `Panic` event (never nothing).
pub struct AuditedRequest {
    auditor: Auditor,
    config: RequestAuditConfig,
    event: Box<Event>,
    long_running: bool,
    /// Anything but a read: its records after `RequestReceived` must land.
    mutating: bool,
    started: bool,
    done: bool,
    /// The acknowledgement of a read's `RequestReceived`, awaited before its response.
    received_ack: Option<AckReceiver>,
}

impl std::fmt::Debug for AuditedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedRequest")
            .field("audit_id", &self.event.audit_id)
            .field("level", &self.config.level)
            .finish_non_exhaustive()
    }
}

impl AuditedRequest {
    /// The record of a request whose policy gave it `config`; nothing is written yet.
    pub(super) fn new(
        auditor: Auditor,
        config: RequestAuditConfig,
        audit_id: String,
        attrs: RequestAttributes,
    ) -> Self {
        let received = attrs.received.unwrap_or_else(MicroTime::now);
        let mut event = Event::new(config.level, audit_id, Stage::RequestReceived, received);
        event.request_uri = attrs.request_uri;
        event.verb = attrs.verb;
        event.user = EventUser::from(&attrs.user);
        event.impersonated_user = attrs.impersonated_user.as_ref().map(EventUser::from);
        event.source_ips = attrs.source_ips;
        event.user_agent = attrs.user_agent;
        event.object_ref = match attrs.target {
            Target::Resource(object) => Some(object),
            Target::NonResource(_) => None,
        };
        if let Some(proxy) = attrs.proxy {
            event
                .annotations
                .insert(ANNOTATION_CLUSTER.into(), proxy.cluster);
            event
                .annotations
                .insert(ANNOTATION_ENVIRONMENT.into(), proxy.environment);
        }
        AuditedRequest {
            auditor,
            config,
            event: Box::new(event),
            long_running: attrs.long_running,
            mutating: !attrs.read_only,
            started: false,
            done: false,
            received_ack: None,
        }
    }

    /// Whether the policy records `stage` of this request.
    pub(super) fn records(&self, stage: Stage) -> bool {
        self.config.records(stage)
    }

    /// Queues `RequestReceived`; the acknowledgement comes back.
    pub(super) fn enqueue_received(&mut self) -> Result<Option<AckReceiver>, AuditError> {
        self.enqueue(Stage::RequestReceived, true, false)
    }

    /// A read's `RequestReceived` need only be durable before its response: keep its ack.
    pub(super) fn await_before_response(&mut self, ack: Option<AckReceiver>) {
        self.received_ack = ack;
    }

    /// The request was refused before it began: nothing is left to record.
    pub(super) fn refused(&mut self) {
        self.done = true;
    }

    /// The audit ID (send it back in the `Audit-Id` response header, as kube does).
    pub fn audit_id(&self) -> &str {
        &self.event.audit_id
    }

    pub fn level(&self) -> Level {
        self.config.level
    }

    /// The URI the request was received with.
    pub fn request_uri(&self) -> &str {
        &self.event.request_uri
    }

    /// Whether the request body should be handed to [`set_request_body`](Self::set_request_body)
    /// (at most [`max_object_bytes`](Self::max_object_bytes) of it are used).
    pub fn wants_request_body(&self) -> bool {
        self.config.level.records_request_object()
    }

    /// Whether the response body should be handed to [`complete`](Self::complete).
    pub fn wants_response_body(&self) -> bool {
        self.config.level.records_response_object()
    }

    pub fn max_object_bytes(&self) -> usize {
        self.auditor.max_object_bytes()
    }

    /// Whether the request may change something (its later records must land).
    pub fn is_mutating(&self) -> bool {
        self.mutating
    }

    /// Adds an annotation to the events still to be written (kube's `AddAuditAnnotation`),
    /// e.g. `authorization.k8s.io/decision`.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.event.annotations.insert(key.into(), value.into());
    }

    /// The user the request acts as after impersonation.
    pub fn set_impersonated_user(&mut self, user: &UserInfo) {
        self.event.impersonated_user = Some(EventUser::from(user));
    }

    /// Records the request body (JSON) at levels `Request` and `RequestResponse`.
    pub fn set_request_body(&mut self, body: &[u8]) {
        if !self.wants_request_body() {
            return;
        }
        match self.object_from(body) {
            Ok(object) => {
                self.name_created_object(object.as_ref());
                self.event.request_object = object;
            }
            Err(why) => self.omit(ANNOTATION_REQUEST_OBJECT_OMITTED, why),
        }
    }

    /// A create's URL does not name its object; like kube's `LogRequestObject`, take the name
    /// from the body so that "who created X" is a search on `objectRef.name`.
    fn name_created_object(&mut self, object: Option<&Value>) {
        let Some(target) = self.event.object_ref.as_mut() else {
            return;
        };
        if self.event.verb != "create" || !target.name.is_empty() || !target.subresource.is_empty()
        {
            return;
        }
        if let Some(name) = object
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
        {
            target.name = name.to_string();
        }
    }

    /// Adds a finished session recording's name and SHA-256 to the events still to be
    /// written, so that the recording is covered by the chain.
    pub fn attach_recording(&mut self, recording: &Recording) {
        for (key, value) in recording.annotations() {
            self.annotate(key, value);
        }
    }

    /// Call before a streamed response's first byte: waits for a read's `RequestReceived` to
    /// be durable, and records `ResponseStarted` for a long-running request. An `Err` means
    /// the request could not be recorded: refuse it or end the stream.
    pub async fn response_started(&mut self, status: ResponseStatus) -> Result<(), AuditError> {
        // Before any byte of a response: a read's RequestReceived is durable.
        if let Err(err) = wait(self.received_ack.take()).await {
            self.done = true;
            return Err(err);
        }
        if self.config.level == Level::None || !self.long_running || self.started {
            return Ok(());
        }
        self.started = true;
        self.event.response_status = Some(status);
        if !self.config.records(Stage::ResponseStarted) {
            return self.auditor.health();
        }
        let ack = self.enqueue(Stage::ResponseStarted, true, false)?;
        wait(ack).await.map(drop)
    }

    /// Records `ResponseComplete` (after a `ResponseStarted` for a long-running request that
    /// never had one, as kube does). `response_body` is used at level `RequestResponse`.
    pub async fn complete(
        mut self,
        status: ResponseStatus,
        response_body: Option<&[u8]>,
    ) -> Result<(), AuditError> {
        if self.config.level == Level::None {
            self.done = true;
            return Ok(());
        }
        // A read's RequestReceived first: if it was not written, neither is anything after it
        // (the request is refused; the trail must not show an outcome the client never got).
        if let Err(err) = wait(self.received_ack.take()).await {
            self.done = true;
            return Err(err);
        }
        if let Some(body) = response_body.filter(|_| self.wants_response_body()) {
            match self.object_from(body) {
                Ok(object) => self.event.response_object = object,
                Err(why) => self.omit(ANNOTATION_RESPONSE_OBJECT_OMITTED, why),
            }
        }
        self.event.response_status = Some(status);
        // Both records are queued before anything is awaited, so that dropping this future
        // cannot lose them.
        let mut acks = Vec::with_capacity(2);
        if self.long_running && !self.started && self.config.records(Stage::ResponseStarted) {
            self.started = true;
            acks.push(self.enqueue(Stage::ResponseStarted, true, self.mutating)?);
        }
        if self.config.records(Stage::ResponseComplete) {
            acks.push(self.enqueue(Stage::ResponseComplete, true, self.mutating)?);
        }
        self.done = true;
        if acks.is_empty() {
            return self.auditor.health();
        }
        for ack in acks {
            wait(ack).await?;
        }
        Ok(())
    }

    fn enqueue(
        &mut self,
        stage: Stage,
        ack: bool,
        must_land: bool,
    ) -> Result<Option<AckReceiver>, AuditError> {
        self.event.stage = stage;
        self.event.stage_timestamp = MicroTime::now();
        let payload = super::canonical::to_vec_of(&*self.event).map_err(AuditError::Encode)?;
        self.auditor.send(payload, ack, must_land)
    }

    fn object_from(&self, body: &[u8]) -> Result<Option<Value>, String> {
        if body.is_empty() {
            return Ok(None);
        }
        let max = self.max_object_bytes();
        if body.len() > max {
            return Err(format!("{} bytes exceed the limit of {max}", body.len()));
        }
        let mut object: Value = serde_json::from_slice(body).map_err(|_| "not JSON".to_string())?;
        if self.config.omit_managed_fields {
            strip_managed_fields(&mut object);
        }
        Ok(Some(object))
    }

    fn omit(&mut self, annotation: &str, why: String) {
        if why != "not JSON" {
            self.annotate(ANNOTATION_TRUNCATED, "true");
        }
        self.annotate(annotation, why);
    }
}

impl Drop for AuditedRequest {
    fn drop(&mut self) {
        if self.done || !self.config.records(Stage::Panic) {
            return;
        }
        let message = if std::thread::panicking() {
            "APIServer panic'd: the request handler panicked".to_string()
        } else {
            self.annotate(ANNOTATION_ABANDONED, "true");
            "the request was abandoned before it completed (client gone or server shutting down)"
                .to_string()
        };
        self.event.response_status = Some(ResponseStatus::failure(500, "InternalError", message));
        if let Err(err) = self.enqueue(Stage::Panic, false, self.mutating) {
            tracing::error!(audit_id = %self.event.audit_id, error = %err, "could not record an abandoned request");
        }
    }
}

/// `metadata.managedFields` of an object, or of each item of a list.
fn strip_managed_fields(object: &mut Value) {
    fn strip(object: &mut Value) {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    strip(object);
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
}
