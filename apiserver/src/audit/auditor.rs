//! The auditor: decides a request's level, writes its events, and refuses what it cannot record.
//!
//! ```text
//!            begin(attrs)                 response_started(status)        complete(status, body)
//!  ──────────────┬──────────────────────────────┬─────────────────────────────┬──────────►
//!   policy → level; RequestReceived      ResponseStarted (long-running     [ResponseStarted if it
//!   written and durable, or Err:         requests only: watch, exec,        never was] ResponseComplete
//!   the caller refuses the request       logs, upgrades)
//!
//!   dropped before complete ──► Panic (a handler panic, or the request future dropped)
//! ```
//!
//! Every write is acknowledged by the writer before the call returns (see
//! [`writer`](super::writer) for what "acknowledged" means), so a request whose
//! `RequestReceived` could not be recorded never reaches a handler.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use edgefleet_api::validation::is_dns1123_subdomain;
use edgefleet_apimachinery::request_info::{self, RequestInfo};
use http::{HeaderMap, Method};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::canonical;
use super::checkpoint::{self, PublicKey, SignedCheckpoint, SigningKey};
use super::edge;
use super::event::{
    self, Event, EventUser, Level, MicroTime, ObjectReference, ResponseStatus, Stage,
};
use super::policy::{PolicyEvaluator, RequestAuditConfig};
use super::session::{SessionHeader, SessionRecorder};
use super::webhook::{self, WebhookConfig};
use super::writer::{self, Appended, Command, Durability, Health, Recovery, WriterConfig};
use super::{AuditError, SESSIONS_DIR};
use crate::auth::{Attributes, UserInfo};
use crate::storage::DynStorage;

/// How often the chain head is signed and checkpointed.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Segments rotate once they reach this size.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Request and response bodies larger than this are left out of events (and the event says so).
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 64 * 1024;
/// Exec/attach recordings stop growing at this size (and say so).
pub const DEFAULT_SESSION_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// How long shutdown waits for the webhook sink to send what it holds.
pub const WEBHOOK_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The request header kube-apiserver sends an aggregated server its audit ID in, and the
/// response header the ID is returned in.
pub const AUDIT_ID_HEADER: &str = "audit-id";
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

/// Everything an [`Auditor`] needs.
pub struct AuditConfig {
    /// Directory of the trail (segments, recordings).
    pub dir: PathBuf,
    /// This hub replica's name: in checkpoints and their storage key.
    pub replica: String,
    pub signing_key: SigningKey,
    pub policy: PolicyEvaluator,
    pub durability: Durability,
    pub max_segment_bytes: u64,
    pub max_object_bytes: usize,
    pub session_max_bytes: u64,
    /// Zero: only explicit [`Auditor::checkpoint`] calls and shutdown take checkpoints.
    pub checkpoint_interval: Duration,
    /// Where checkpoints are kept outside the trail; `None` keeps them in the trail only.
    pub checkpoint_storage: Option<DynStorage>,
    pub webhook: Option<WebhookConfig>,
}

impl AuditConfig {
    /// Defaults: the default policy, ack after write, 64 MiB segments, 64 KiB bodies, 16 MiB
    /// recordings, checkpoints every 10 s, no storage, no webhook.
    pub fn new(
        dir: impl Into<PathBuf>,
        replica: impl Into<String>,
        signing_key: SigningKey,
    ) -> Self {
        AuditConfig {
            dir: dir.into(),
            replica: replica.into(),
            signing_key,
            policy: PolicyEvaluator::default_policy(),
            durability: Durability::default(),
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            session_max_bytes: DEFAULT_SESSION_MAX_BYTES,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            checkpoint_storage: None,
            webhook: None,
        }
    }
}

/// The hub's audit trail. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    tx: std::sync::mpsc::Sender<Command>,
    policy: PolicyEvaluator,
    dir: PathBuf,
    replica: String,
    public_key: PublicKey,
    max_object_bytes: usize,
    session_max_bytes: u64,
    storage: Option<DynStorage>,
    health: Arc<Health>,
    recovery: Option<Recovery>,
    /// A checkpoint written to the trail but not yet to storage.
    unstored: Mutex<Option<SignedCheckpoint>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    webhook: Mutex<Option<JoinHandle<()>>>,
    /// Set by [`Auditor::shutdown`]: from then on every request is refused at once.
    stopped: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.checkpointer).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Auditor {
    /// Opens (or creates) the trail: recovers a torn tail, checks the trail against the
    /// checkpoint in storage, starts the writer, the checkpointer and the webhook sink.
    ///
    /// Fails when the trail is damaged, or does not contain the checkpoint stored for this
    /// replica (records were cut off or rewritten while the hub was down): the hub must not
    /// start over evidence of tampering. `audit verify` tells what is wrong.
    pub async fn open(config: AuditConfig) -> Result<Auditor, AuditError> {
        if !is_valid_replica(&config.replica) {
            return Err(AuditError::InvalidReplica(config.replica));
        }
        let public_key = config.signing_key.public_key().clone();
        let health = Arc::new(Health::default());
        let (webhook_tx, webhook_task) = match config.webhook {
            Some(webhook) => {
                let (tx, task) = webhook::start(webhook)?;
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let writer_config = WriterConfig {
            dir: config.dir.clone(),
            max_segment_bytes: config.max_segment_bytes,
            durability: config.durability,
            replica: config.replica.clone(),
            key: config.signing_key,
            webhook: webhook_tx,
            health: health.clone(),
        };
        let handle = tokio::task::spawn_blocking(move || writer::open(writer_config))
            .await
            .map_err(|_| AuditError::Stopped)??;

        if let Some(storage) = &config.checkpoint_storage {
            let stored = checkpoint::load_checkpoint(&**storage, &config.replica).await?;
            if let Some(stored) = stored {
                // Dropping `handle` on error stops the writer.
                check_stored_checkpoint(&config.dir, &public_key, &handle.head, &stored).await?;
            }
        }

        let inner = Arc::new(Inner {
            tx: handle.tx,
            policy: config.policy,
            dir: config.dir,
            replica: config.replica,
            public_key,
            max_object_bytes: config.max_object_bytes,
            session_max_bytes: config.session_max_bytes,
            storage: config.checkpoint_storage,
            health,
            recovery: handle.recovery,
            unstored: Mutex::new(None),
            checkpointer: Mutex::new(None),
            webhook: Mutex::new(webhook_task),
            stopped: AtomicBool::new(false),
        });
        if !config.checkpoint_interval.is_zero() {
            let task = tokio::spawn(run_checkpointer(
                Arc::downgrade(&inner),
                config.checkpoint_interval,
            ));
            *lock(&inner.checkpointer) = Some(task);
        }
        Ok(Auditor { inner })
    }

    /// Starts auditing a request: evaluates the policy and writes `RequestReceived`.
    ///
    /// An `Err` means the request could not be recorded and **must be refused** (kube answers
    /// 500 "failed to store audit event"; `ApiError::from(AuditError)` does the same).
    pub async fn begin(&self, attrs: RequestAttributes) -> Result<AuditedRequest, AuditError> {
        let views = attrs.policy_views();
        let view_refs: Vec<&Attributes> = views.iter().collect();
        let config = self.inner.policy.evaluate_any(&view_refs);

        let audit_id = attrs
            .audit_id
            .filter(|id| is_valid_audit_id(id))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
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

        let mut request = AuditedRequest {
            auditor: self.clone(),
            config,
            event: Box::new(event),
            long_running: attrs.long_running,
            started: false,
            done: false,
            received_ack: None,
        };
        if request.config.level == Level::None {
            return Ok(request);
        }
        // A write waits for its RequestReceived to be durable before it acts. A read proceeds
        // at once and waits before its response (or first byte) goes out: nothing leaves the
        // hub unrecorded, and the record's write overlaps the read.
        let result = if request.config.records(Stage::RequestReceived) {
            match request.enqueue(Stage::RequestReceived, true) {
                Ok(ack) if attrs.read_only => {
                    request.received_ack = ack;
                    self.health()
                }
                Ok(ack) => wait(ack).await.map(drop),
                Err(err) => Err(err),
            }
        } else {
            self.health()
        };
        if let Err(err) = result {
            // The request is refused; there is nothing to complete.
            request.done = true;
            return Err(err);
        }
        Ok(request)
    }

    /// Signs the chain head, appends the checkpoint to the trail and stores it. `None` when
    /// nothing was recorded since the last checkpoint. Runs every checkpoint interval and at
    /// [`shutdown`](Self::shutdown).
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Checkpoint { reply: tx })
            .map_err(|_| AuditError::Stopped)?;
        let written = rx
            .await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)?;
        let Some(storage) = &self.inner.storage else {
            return Ok(written);
        };
        let pending = {
            let mut unstored = lock(&self.inner.unstored);
            if let Some(cp) = &written {
                *unstored = Some(cp.clone());
            }
            unstored.clone()
        };
        if let Some(cp) = pending {
            checkpoint::store_checkpoint(&**storage, &cp).await?;
            let mut unstored = lock(&self.inner.unstored);
            if unstored.as_ref().is_some_and(|u| u.seq <= cp.seq) {
                *unstored = None;
            }
        }
        Ok(written)
    }

    /// Takes a last checkpoint, makes everything durable and stops the writer; later requests
    /// are refused. Waits (bounded) for the webhook sink to send what it holds.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        if let Some(task) = lock(&self.inner.checkpointer).take() {
            task.abort();
        }
        let checkpointed = self.checkpoint().await.map(drop);
        if let Err(err) = &checkpointed {
            tracing::error!(error = %err, "final audit checkpoint failed");
        }
        let (tx, rx) = oneshot::channel();
        let stopped = match self.inner.tx.send(Command::Stop { reply: tx }) {
            Ok(()) => match rx.await {
                Ok(result) => result.map_err(AuditError::Write),
                Err(_) => Err(AuditError::Stopped),
            },
            Err(_) => Err(AuditError::Stopped),
        };
        let webhook = lock(&self.inner.webhook).take();
        if let Some(task) = webhook {
            if tokio::time::timeout(WEBHOOK_FLUSH_TIMEOUT, task)
                .await
                .is_err()
            {
                tracing::warn!("audit webhook did not drain before shutdown");
            }
        }
        checkpointed.and(stopped)
    }

    /// `Err` when the trail has failed and audited requests are being refused (for readiness).
    pub fn health(&self) -> Result<(), AuditError> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(AuditError::Stopped);
        }
        match self.inner.health.failure() {
            Some(failure) => Err(AuditError::Write(failure)),
            None => Ok(()),
        }
    }

    /// What start-up recovery cut off the trail, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.inner.recovery.as_ref()
    }

    /// The key that verifies this trail's checkpoints.
    pub fn public_key(&self) -> &PublicKey {
        &self.inner.public_key
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// Events the webhook sink dropped because its buffer was full.
    pub fn webhook_dropped(&self) -> u64 {
        self.inner
            .health
            .webhook_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts recording the streams of an exec/attach request to
    /// `<dir>/sessions/<auditID>.cast`. Hand the finished [`Recording`](super::Recording) to
    /// [`AuditedRequest::attach_recording`] before completing the request.
    pub async fn record_session(
        &self,
        request: &AuditedRequest,
        header: SessionHeader,
    ) -> Result<SessionRecorder, AuditError> {
        SessionRecorder::create(
            &self.inner.dir,
            SESSIONS_DIR,
            request.audit_id(),
            self.inner.session_max_bytes,
            header,
        )
        .await
        .map_err(|source| AuditError::Io {
            op: "creating a session recording in",
            path: self.inner.dir.join(SESSIONS_DIR).display().to_string(),
            source,
        })
    }

    fn send(&self, payload: Vec<u8>, ack: bool) -> Result<Option<AckReceiver>, AuditError> {
        let (tx, rx) = if ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.inner
            .tx
            .send(Command::Append { payload, ack: tx })
            .map_err(|_| AuditError::Stopped)?;
        Ok(rx)
    }
}

type AckReceiver = oneshot::Receiver<Result<Appended, writer::WriteFailure>>;

async fn wait(ack: Option<AckReceiver>) -> Result<Option<Appended>, AuditError> {
    match ack {
        None => Ok(None),
        Some(rx) => match rx.await {
            Ok(Ok(appended)) => Ok(Some(appended)),
            Ok(Err(failure)) => Err(AuditError::Write(failure)),
            Err(_) => Err(AuditError::Stopped),
        },
    }
}

async fn run_checkpointer(inner: Weak<Inner>, period: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let auditor = Auditor { inner };
        match auditor.checkpoint().await {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "audit checkpoint"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "audit checkpoint failed"),
        }
    }
}

/// The trail must still hold the record a stored checkpoint names, with the same hash.
async fn check_stored_checkpoint(
    dir: &Path,
    key: &PublicKey,
    head: &writer::Head,
    stored: &SignedCheckpoint,
) -> Result<(), AuditError> {
    let mismatch = |reason: String| AuditError::CheckpointMismatch {
        seq: stored.seq,
        reason,
    };
    stored.verify(key).map_err(|e| {
        mismatch(format!(
            "the stored checkpoint does not verify with this hub's key: {e}"
        ))
    })?;
    if head.seq < stored.seq {
        return Err(mismatch(format!(
            "the trail ends at record {}: records {}..={} are missing",
            head.seq,
            head.seq + 1,
            stored.seq
        )));
    }
    let dir = dir.to_path_buf();
    let seq = stored.seq;
    let record = tokio::task::spawn_blocking(move || writer::find_record(&dir, seq))
        .await
        .map_err(|_| AuditError::Stopped)??;
    match record {
        Some(r) if r.is_sound() && r.hash == stored.hash => Ok(()),
        Some(r) => Err(mismatch(match r.defect {
            Some(defect) => format!("record {}: {defect}", r.seq),
            None => format!(
                "record {} has hash {}, the checkpoint says {}",
                r.seq, r.hash, stored.hash
            ),
        })),
        None => Err(mismatch(format!(
            "record {} is not in the trail",
            stored.seq
        ))),
    }
}

/// A replica name is a DNS-1123 subdomain (a host name): it names files and checkpoints.
fn is_valid_replica(name: &str) -> bool {
    is_dns1123_subdomain(name).is_empty()
}

/// An incoming `Audit-ID` is used when it is a plausible ID (it names a recording file).
fn is_valid_audit_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

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
    /// A request to the hub's own API, described by its parsed request info.
    pub fn hub(info: &RequestInfo, user: UserInfo, request_uri: impl Into<String>) -> Self {
        let target = match edge::object_ref(info) {
            Some(object) => Target::Resource(object),
            None => Target::NonResource(info.path.clone()),
        };
        RequestAttributes {
            audit_id: None,
            request_uri: request_uri.into(),
            verb: info.verb.clone(),
            user,
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            target,
            proxy: None,
            long_running: info.is_long_running(),
            // Subresources other than status may act on a GET (bootstrap mints a token).
            read_only: if info.is_resource_request {
                matches!(info.verb.as_str(), "get" | "list" | "watch")
                    && matches!(info.subresource.as_str(), "" | "status")
            } else {
                matches!(info.verb.as_str(), "get" | "head")
            },
            received: None,
        }
    }

    /// A request to `clusters/{name}/proxy/{rest}`: `hub` is its parsed request info,
    /// `method` and `query` those of the request. The event describes the edge request —
    /// verb, `objectRef` parsed from `/{rest}` by kube's rules — and is annotated with the
    /// cluster and its environment; `requestURI` stays the URI the hub received.
    pub fn proxied(
        hub: &RequestInfo,
        method: &Method,
        query: Option<&str>,
        user: UserInfo,
        request_uri: impl Into<String>,
    ) -> Self {
        let edge_path = format!("/{}", hub.rest);
        let edge_info = request_info::parse(method, &edge_path, query);
        let target = match edge::object_ref(&edge_info) {
            Some(object) => Target::Resource(object),
            None => Target::NonResource(edge_path),
        };
        RequestAttributes {
            audit_id: None,
            request_uri: request_uri.into(),
            verb: edge_info.verb.clone(),
            user,
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            target,
            proxy: Some(ProxyTarget {
                environment: hub.namespace.clone(),
                cluster: hub.name.clone(),
                hub_verb: hub.verb.clone(),
            }),
            long_running: edge_info.is_long_running(),
            read_only: *method == Method::GET || *method == Method::HEAD,
            received: None,
        }
    }

    /// Takes the audit ID, source IPs and user agent from the request head; an upgrade
    /// request (WebSocket, SPDY) is long-running.
    pub fn with_headers(mut self, headers: &HeaderMap, peer: Option<IpAddr>) -> Self {
        self.audit_id = headers
            .get(AUDIT_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.source_ips = event::source_ips(headers, peer);
        self.user_agent = event::user_agent(headers);
        if headers.contains_key(http::header::UPGRADE) {
            // exec, attach, port-forward: a shell or a socket on the edge, whatever the method.
            self.long_running = true;
            self.read_only = false;
        }
        self
    }

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
    /// The audit ID (send it back in the `Audit-Id` response header, as kube does).
    pub fn audit_id(&self) -> &str {
        &self.event.audit_id
    }

    pub fn level(&self) -> Level {
        self.config.level
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
        self.auditor.inner.max_object_bytes
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
    pub fn attach_recording(&mut self, recording: &super::Recording) {
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
        let ack = self.enqueue(Stage::ResponseStarted, true)?;
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
            acks.push(self.enqueue(Stage::ResponseStarted, true)?);
        }
        if self.config.records(Stage::ResponseComplete) {
            acks.push(self.enqueue(Stage::ResponseComplete, true)?);
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

    fn enqueue(&mut self, stage: Stage, ack: bool) -> Result<Option<AckReceiver>, AuditError> {
        self.event.stage = stage;
        self.event.stage_timestamp = MicroTime::now();
        let payload = canonical::to_vec_of(&*self.event).map_err(AuditError::Encode)?;
        self.auditor.send(payload, ack)
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
        if let Err(err) = self.enqueue(Stage::Panic, false) {
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
