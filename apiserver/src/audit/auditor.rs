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
//!
//! This module is the trail's lifecycle — open (recovery, the stored-checkpoint check), begin,
//! checkpoints, health, shutdown. What a request's record holds and how its stages are written
//! is [`request`](super::request); how a request is described from HTTP is the hub's audit
//! layer (`http::layers::audit`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use edgefleet_api::validation::is_dns1123_subdomain;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::checkpoint::{self, PublicKey, SignedCheckpoint, SigningKey};
use super::event::{Level, Stage};
use super::policy::PolicyEvaluator;
use super::recovery::{Head, Recovery};
use super::request::{AuditedRequest, RequestAttributes};
use super::session::{SessionHeader, SessionRecorder};
use super::trail::Trail;
use super::webhook::{self, WebhookConfig};
use super::writer::{self, Appended, Command, DiskFaults, Durability, Health, WriterConfig};
use super::{AuditError, SESSIONS_DIR};
use crate::auth::Attributes;
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
    /// Fails the trail's writes as a full disk would (healthy unless switched).
    pub faults: DiskFaults,
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
            faults: DiskFaults::default(),
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
    faults: DiskFaults,
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
            faults: config.faults.clone(),
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
            faults: config.faults,
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
            .clone()
            .filter(|id| is_valid_audit_id(id))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let read_only = attrs.read_only;
        let mut request = AuditedRequest::new(self.clone(), config, audit_id, attrs);
        if request.level() == Level::None {
            return Ok(request);
        }
        // A write waits for its RequestReceived to be durable before it acts. A read proceeds
        // at once and waits before its response (or first byte) goes out: nothing leaves the
        // hub unrecorded, and the record's write overlaps the read.
        let result = if request.records(Stage::RequestReceived) {
            match request.enqueue_received() {
                Ok(ack) if read_only => {
                    request.await_before_response(ack);
                    self.accepting()
                }
                Ok(ack) => wait(ack).await.map(drop),
                Err(err) => Err(err),
            }
        } else {
            // Nothing is written first: go ahead only while the trail is known to work.
            self.health()
        };
        if let Err(err) = result {
            // The request is refused; there is nothing to complete.
            request.refused();
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

    /// `Err` while records cannot be written — the writer failed (until a batch is written
    /// again, or until restart if the file's state is unknown), it owes records of applied
    /// changes, or the trail was shut down. Readiness reports this.
    pub fn health(&self) -> Result<(), AuditError> {
        self.accepting()?;
        if let Some(failure) = self.inner.health.failure() {
            return Err(AuditError::Write(failure));
        }
        match self.inner.health.owed() {
            0 => Ok(()),
            owed => Err(AuditError::Owed(owed)),
        }
    }

    /// `Err` when no record can be written before a restart: the writer is poisoned or the
    /// trail was shut down.
    fn accepting(&self) -> Result<(), AuditError> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(AuditError::Stopped);
        }
        match self.inner.health.poisoned() {
            Some(failure) => Err(AuditError::Write(failure)),
            None => Ok(()),
        }
    }

    /// The switch that makes this trail's writes fail as a full disk would.
    pub fn faults(&self) -> &DiskFaults {
        &self.inner.faults
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

    /// Hands one event to the writer. `ack`: reply when it is written; `must_land`: keep it
    /// when its batch fails, to write it once the trail works again (see
    /// [`writer`](super::writer)).
    pub(super) fn send(
        &self,
        payload: Vec<u8>,
        ack: bool,
        must_land: bool,
    ) -> Result<Option<AckReceiver>, AuditError> {
        let (tx, rx) = if ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.inner
            .tx
            .send(Command::Append {
                payload,
                ack: tx,
                must_land,
            })
            .map_err(|_| AuditError::Stopped)?;
        Ok(rx)
    }

    pub(super) fn max_object_bytes(&self) -> usize {
        self.inner.max_object_bytes
    }
}

/// The writer's answer to one append.
pub(super) type AckReceiver = oneshot::Receiver<Result<Appended, writer::WriteFailure>>;

/// Waits for an append's acknowledgement (nothing to wait for: `None`).
pub(super) async fn wait(ack: Option<AckReceiver>) -> Result<Option<Appended>, AuditError> {
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
    head: &Head,
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
    let stored_dir = dir.clone();
    let seq = stored.seq;
    let record = tokio::task::spawn_blocking(move || Trail::open(&dir)?.find_record(seq))
        .await
        .map_err(|_| AuditError::Stopped)?
        .map_err(|source| AuditError::Io {
            op: "reading the audit trail in",
            path: stored_dir.display().to_string(),
            source,
        })?;
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
