//! The hub's audit trail (DESIGN.md §7): `audit.k8s.io/v1` events of every management and every
//! proxied request, in hash-chained, signed, append-only files that anyone can verify.
//!
//! ```text
//!  request ──► Auditor::begin ──► policy: level ──► RequestReceived ─┐
//!               (Err ⇒ refuse)                                       │   writer thread (group commit)
//!  handler / proxy                                                    ├──► seq, prev, hash ──► segment-N.log
//!     [ResponseStarted for watch/exec/logs/upgrades]                 │        │ (one write(2) per batch,
//!  AuditedRequest::complete ──► ResponseComplete ────────────────────┘        │  fdatasync right behind)
//!     (dropped instead ⇒ Panic)                                               ├──► webhook: EventList POSTs
//!  every 10 s + shutdown: signed checkpoint ──► the trail + storage           │    (best effort, bounded)
//!  exec/attach: SessionRecorder ──► sessions/<auditID>.cast, SHA-256 in the event
//!  `audit verify`: verify_dir ──► INTACT, or the first bad record and what is wrong
//! ```
//!
//! - [`event`]: the `Event` type, exactly as kube-apiserver writes it.
//! - [`policy`]: kube's `Policy` format and semantics, and our [default
//!   policy](policy::DEFAULT_POLICY_YAML): metadata of everything except health probes, request
//!   bodies of writes (hub and proxied), never bodies of Secret-like data.
//! - [`edge`]: the `objectRef` of proxied requests, from the edge path parsed by the shared
//!   `RequestInfo` rules, so that events name the edge object (`pods/web-1/exec` in `default`).
//! - [`segment`]: the file format (records, canonical JSON, hash chain); [`canonical`]: the
//!   precise definition of canonical JSON; [`trail`]: the one reader of the files, shared by
//!   recovery, the stored-checkpoint check and `audit verify`.
//! - [`request`]: what a request's record holds and how its stages are written.
//! - [`auditor`]: the trail's lifecycle (open, begin, checkpoints, health, shutdown).
//! - [`writer`]: group commit, the acknowledgement rule, failure handling (and records owed to
//!   the trail while it cannot be written); [`recovery`]: opening a trail after a crash.
//! - [`checkpoint`]: Ed25519 keys and signed checkpoints kept in the trail and in storage.
//! - [`verify`]: the verifier behind `edgefleet-apiserver audit verify`.
//! - [`session`]: exec/attach recordings; [`webhook`]: the audit webhook sink.
//!
//! None of this knows HTTP (except the webhook client and [`edge`], the request-info parser of
//! proxied paths, until it moves to the shared machinery crate): the hub's audit layer,
//! `http::layers::audit`, describes requests and drives the stages.
//!
//! **Fail closed.** A request whose `RequestReceived` event (or, when the policy omits that
//! stage, a healthy writer) cannot be confirmed is refused: [`Auditor::begin`] returns an
//! [`AuditError`], which converts to kube's answer, 500 "failed to store audit event" (a
//! `metav1.Status` for resource requests). A write acts only once its `RequestReceived` is
//! written; once it has, its outcome reaches the trail even when the trail fails meanwhile (the
//! writer keeps it and writes it when it can, annotated as recorded late). [`Auditor::health`]
//! fails while records cannot be written, and `/readyz` with it.
//!
//! **Durability.** `begin` and `complete` return once the record is in the segment file
//! (`write(2)` done): a SIGKILL of the hub cannot lose it. A separate thread fdatasyncs right
//! behind the writer; [`Durability::AfterSync`] makes acknowledgements wait for it (power-loss
//! durability) at the cost of one fsync latency per request stage — measured by the ignored
//! test `audit::tests::append_latency` (figures in `BENCHMARKS.md`).

pub mod auditor;
pub mod canonical;
pub mod checkpoint;
pub mod edge;
pub mod event;
pub mod policy;
pub mod recovery;
pub mod request;
pub mod segment;
pub mod session;
pub mod trail;
pub mod verify;
pub mod webhook;
pub mod writer;

pub use auditor::{AuditConfig, Auditor, AUDIT_ID_HEADER};
pub use checkpoint::{
    generate_key_files, load_checkpoint, public_key_path, PublicKey, SignedCheckpoint, SigningKey,
};
pub use event::{Event, Level, ResponseStatus, Stage};
pub use policy::{Policy, PolicyEvaluator};
pub use recovery::{OpenError, Recovery};
pub use request::{
    AuditedRequest, ProxyTarget, RequestAttributes, Target, ANNOTATION_CLUSTER,
    ANNOTATION_ENVIRONMENT,
};
pub use segment::SESSIONS_DIR;
pub use session::{Recording, SessionHeader, SessionRecorder, StreamKind};
pub use verify::{
    load_checkpoint_file, verify_command, verify_dir, Problem, ProblemKind, VerifyReport,
};
pub use webhook::WebhookConfig;
pub use writer::{Appended, DiskFaults, Durability, ANNOTATION_RECORDED_LATE};

use crate::errors::ApiError;

pub type Result<T, E = AuditError> = std::result::Result<T, E>;

/// Why auditing failed. Any of these on [`Auditor::begin`] means: refuse the request.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("writing the audit record failed: {0}")]
    Write(#[source] writer::WriteFailure),
    #[error("the audit trail has shut down")]
    Stopped,
    #[error("encoding an audit event: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the audit trail: {0}")]
    Open(#[from] recovery::OpenError),
    #[error("{0} record(s) of applied changes wait to be written to the audit trail")]
    Owed(usize),
    #[error(
        "the audit trail does not match the checkpoint stored for record {seq}: {reason}; \
         the trail was cut or rewritten while the hub was down — inspect it with \
         `edgefleet-apiserver audit verify`"
    )]
    CheckpointMismatch { seq: u64, reason: String },
    #[error("audit checkpoint storage: {0}")]
    CheckpointStore(#[from] checkpoint::CheckpointStoreError),
    #[error("audit signing key: {0}")]
    Key(#[from] checkpoint::KeyError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("invalid replica name {0:?}: lower-case letters, digits, '-' and '.' only")]
    InvalidReplica(String),
}

/// A request that cannot be audited is answered as kube-apiserver answers it.
impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        tracing::error!(error = %err, "audit failed; refusing the request");
        ApiError::AuditUnavailable
    }
}

#[cfg(test)]
mod tests;
