//! The one writer of a trail: a dedicated thread that turns concurrent appends into group
//! commits, and a second thread that makes them durable.
//!
//! ```text
//!  begin/complete (many tasks)          writer thread                      syncer thread
//!  ── canonical event bytes ──► channel ──► drain up to MAX_BATCH_RECORDS
//!                                            owed records first, then the batch:
//!                                            assign seq, chain, hash
//!                                            one write(2) of the batch ──► ack (AfterWrite)
//!                                            hand the new length ───────► fdatasync(2)
//!                                                                          ──► ack (AfterSync),
//!                                                                              checkpoint replies
//! ```
//!
//! **Acknowledgement.** With [`Durability::AfterWrite`] (the default) an append returns once its
//! batch is in the file (`write(2)` returned): from then on a crash of the process — SIGKILL,
//! OOM kill, panic — cannot lose it, because the kernel holds it. The syncer `fdatasync`s
//! behind the writer, at most every [`SYNC_INTERVAL`] while nobody waits for a sync, so a
//! power loss or kernel crash loses at most the records of the last few milliseconds. (Syncing
//! after every batch instead made sequential requests wait: a `write(2)` to a page under
//! writeback waits for the disk, and a thousand syncs a second kept pages under writeback.)
//! With [`Durability::AfterSync`] an append returns only once an `fdatasync` covering it has
//! completed, which survives power loss as well. Checkpoint records always wait for the sync:
//! a checkpoint stored outside the trail must never name a record a power loss could take back.
//!
//! `AfterWrite` is the default because it alone keeps the audit overhead of a request under
//! 0.2 ms (`BENCHMARKS.md`, "Audit append latency"); the risk it leaves is losing the last
//! milliseconds of records to a power loss or kernel crash, never to a crash of the hub, and
//! never records a stored checkpoint covers.
//!
//! **Failures.** The chain never has a gap, and the writer is in one of three states:
//!
//! ```text
//!            batch written                 write(2) or segment creation failed
//!  Writing ◄──────────────── Failing ◄──────────────────────────────────────── Writing
//!     │                        │  every RETRY_INTERVAL without traffic: a probe checkpoint
//!     │                        │  (or the owed records) is tried, so readiness comes back
//!     └── failed cut-back, fsync or directory sync ──► Poisoned (until restart)
//! ```
//!
//! - A failed `write(2)` (disk full, I/O error) cuts the file back to the end of the last
//!   written batch; the batch's appends fail (their requests are refused) and the next batch
//!   reuses their sequence numbers, chaining onto the last record in the file. A segment that
//!   cannot be created fails the batch the same way, and is tried again.
//! - While Failing, the trail's health says so ([`Auditor::health`](super::Auditor::health)):
//!   `/readyz` answers not-ready, and requests whose records are not written first (those
//!   whose policy omits `RequestReceived`) are refused.
//! - **Owed records.** An append marked `must_land` — the outcome of a request that may have
//!   changed something (a write, an exec) after its `RequestReceived` was written — is not
//!   forgotten when its batch fails: its requester is told (and answers 500), but the record
//!   is kept, annotated [`ANNOTATION_RECORDED_LATE`] with the failure, and written ahead of
//!   everything else once a batch can be written again. So a change the store has committed
//!   reaches the trail, and the trail says that it could not be recorded at the time. At most
//!   [`MAX_OWED_BYTES`] are kept (a full disk refuses new writes before they act, so only the
//!   writes in flight when it filled can owe anything).
//! - A failed cut-back, `fsync` or directory sync poisons the writer: the state of the file is
//!   unknown (after a failed fsync the kernel may have dropped the dirty pages), so every later
//!   append fails until the process restarts and [`recovery`] reads what the
//!   file really holds. Owed records are then lost; shutdown logs their audit IDs.
//!
//! [`DiskFaults`] fails the writes of this thread as a full disk would, for tests and drills:
//! a full file system cannot be arranged without privileges.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::canonical;
use super::checkpoint::{SignedCheckpoint, SigningKey};
use super::event::MicroTime;
use super::recovery::{self, Head, OpenError, Recovery};
use super::segment::{create_segment, encode_record, segment_file_name, sync_dir, PayloadKind};

/// Most commands one group commit takes from the queue.
const MAX_BATCH_RECORDS: usize = 1024;

/// The longest the syncer leaves written records unsynced when nothing waits for a sync
/// ([`Durability::AfterSync`] appends and checkpoints are synced at once).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// How often a failing writer tries again when nothing else makes it write: readiness must
/// come back once the disk has room, even with no traffic (a not-ready hub gets none).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Most bytes of owed records kept in memory; past it, an owed record is dropped (and logged).
pub const MAX_OWED_BYTES: usize = 64 * 1024 * 1024;

/// Set on an event that could not be written when it happened: the value is the failure. It
/// was kept and written once the trail could be written again. For a `ResponseComplete`, the
/// client was answered 500 "failed to store audit event" although the request took effect.
pub const ANNOTATION_RECORDED_LATE: &str = "edgefleet.io/recorded-late";

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once the record is written to the file (survives a crash of the process); the file is
    /// fsynced right behind.
    #[default]
    AfterWrite,
    /// Once an fsync covering the record completed (survives power loss).
    AfterSync,
}

/// Where an appended record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// Why an append failed. Cheap to clone: one failure answers a whole batch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteFailure {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("the audit writer failed earlier and stays failed until restart: {0}")]
    Poisoned(Arc<WriteFailure>),
    #[error("the audit writer has stopped")]
    Stopped,
}

impl WriteFailure {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        WriteFailure::Io {
            op,
            path: path.display().to_string(),
            source: Arc::new(source),
        }
    }
}

/// Fails the writer's `write(2)`s as a full disk does (`ENOSPC`), from a chosen write on. Cheap
/// to clone; every clone switches the same writer. Healthy by default.
#[derive(Clone, Debug)]
pub struct DiskFaults(Arc<AtomicI64>);

impl Default for DiskFaults {
    fn default() -> Self {
        DiskFaults(Arc::new(AtomicI64::new(-1)))
    }
}

impl DiskFaults {
    /// Every write from now on fails.
    pub fn fill(&self) {
        self.fill_after(0);
    }

    /// The next `writes` batch writes succeed, every later one fails.
    pub fn fill_after(&self, writes: u32) {
        self.0.store(i64::from(writes), Ordering::SeqCst);
    }

    /// Writes succeed again.
    pub fn free(&self) {
        self.0.store(-1, Ordering::SeqCst);
    }

    /// Whether the write about to happen fails (and counts it).
    fn next_write_fails(&self) -> bool {
        let mut left = self.0.load(Ordering::SeqCst);
        loop {
            if left <= 0 {
                return left == 0;
            }
            match self
                .0
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return false,
                Err(now) => left = now,
            }
        }
    }
}

type AckSender = oneshot::Sender<Result<Appended, WriteFailure>>;
type CheckpointReply = oneshot::Sender<Result<Option<SignedCheckpoint>, WriteFailure>>;

pub(crate) enum Command {
    /// Append an event (its canonical JSON). Without `ack` nobody waits (the record of a
    /// dropped request). With `must_land` the record is owed when its batch fails.
    Append {
        payload: Vec<u8>,
        ack: Option<AckSender>,
        must_land: bool,
    },
    /// Sign the head and append the checkpoint; replies `None` when nothing was appended since
    /// the last checkpoint.
    Checkpoint { reply: CheckpointReply },
    /// Sync and stop.
    Stop {
        reply: oneshot::Sender<Result<(), WriteFailure>>,
    },
}

/// A record handed to the syncer, completed once it is durable.
enum Done {
    Ack(AckSender, Appended),
    Checkpoint(CheckpointReply, SignedCheckpoint),
}

impl Done {
    fn finish(self, result: Result<(), WriteFailure>) {
        // A receiver that went away (its request was dropped) needs no answer.
        match self {
            Done::Ack(tx, appended) => drop(tx.send(result.map(|()| appended))),
            Done::Checkpoint(tx, checkpoint) => drop(tx.send(result.map(|()| Some(checkpoint)))),
        }
    }
}

/// The writer's state, readable by everyone (readiness, `begin` of unrecorded requests).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Poisoned: set once, until restart.
    poisoned: Mutex<Option<WriteFailure>>,
    /// Failing: the last batch could not be written, and none has been since.
    failing: Mutex<Option<WriteFailure>>,
    /// Owed records waiting to be written.
    owed: AtomicUsize,
    /// Events the webhook sink could not take (its buffer was full).
    pub(crate) webhook_dropped: AtomicU64,
}

impl Health {
    /// Why every append fails until restart, if it does.
    pub(crate) fn poisoned(&self) -> Option<WriteFailure> {
        lock(&self.poisoned).clone()
    }

    /// Why records cannot be written now (poisoned, or failing), if they cannot.
    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        self.poisoned().or_else(|| lock(&self.failing).clone())
    }

    /// Records of applied changes waiting to be written.
    pub(crate) fn owed(&self) -> usize {
        self.owed.load(Ordering::SeqCst)
    }

    fn poison(&self, failure: WriteFailure) {
        lock(&self.poisoned).get_or_insert(failure);
    }

    fn set_failing(&self, failure: Option<WriteFailure>) {
        *lock(&self.failing) = failure;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct WriterConfig {
    pub dir: PathBuf,
    pub max_segment_bytes: u64,
    pub durability: Durability,
    pub replica: String,
    pub key: SigningKey,
    pub webhook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    pub health: Arc<Health>,
    pub faults: DiskFaults,
}

pub(crate) struct WriterHandle {
    pub tx: mpsc::Sender<Command>,
    pub head: Head,
    pub recovery: Option<Recovery>,
}

/// Recovers the trail in `config.dir` and starts the writer and syncer threads. Blocking.
pub(crate) fn open(config: WriterConfig) -> Result<WriterHandle, OpenError> {
    let recovered = recovery::recover(&config.dir)?;
    let head = recovered.head.clone();
    let file = Arc::new(recovered.file);
    let sync = Arc::new(Syncer {
        state: Mutex::new(SyncState {
            file: file.clone(),
            generation: recovered.segment,
            written: recovered.len,
            synced: recovered.len,
            waiters: Vec::new(),
            failure: None,
            stop: false,
        }),
        cv: Condvar::new(),
        health: config.health.clone(),
    });
    let syncer_thread = {
        let sync = sync.clone();
        std::thread::Builder::new()
            .name("audit-syncer".into())
            .spawn(move || sync.run())
            .map_err(|e| OpenError::io("spawning the audit syncer for", &config.dir, e))?
    };
    let writer = Writer {
        _lock: recovered.lock,
        segment_path: config.dir.join(segment_file_name(recovered.segment)),
        dir: config.dir,
        max_segment_bytes: config.max_segment_bytes,
        durability: config.durability,
        replica: config.replica,
        key: config.key,
        file,
        segment: recovered.segment,
        len: recovered.len,
        head_seq: recovered.head.seq,
        head_hash: recovered.head.hash,
        last_checkpoint_seq: recovered.last_checkpoint_seq,
        poisoned: None,
        failing: None,
        owed: Vec::new(),
        owed_bytes: 0,
        sync,
        syncer_thread: Some(syncer_thread),
        webhook: config.webhook,
        health: config.health,
        faults: config.faults,
    };
    let (tx, rx) = mpsc::channel();
    let dir = writer.dir.clone();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| OpenError::io("spawning the audit writer for", &dir, e))?;
    Ok(WriterHandle {
        tx,
        head,
        recovery: recovered.recovery,
    })
}

struct Writer {
    /// Released when the writer ends.
    _lock: File,
    dir: PathBuf,
    max_segment_bytes: u64,
    durability: Durability,
    replica: String,
    key: SigningKey,
    /// The segment being appended to, opened with `O_APPEND`.
    file: Arc<File>,
    segment: u64,
    segment_path: PathBuf,
    /// Its length: the end of the last written batch.
    len: u64,
    head_seq: u64,
    head_hash: String,
    /// Sequence number of the last checkpoint record (0: none since open).
    last_checkpoint_seq: u64,
    /// Set once the state of the file is unknown: every later append fails.
    poisoned: Option<WriteFailure>,
    /// Set while batches cannot be written.
    failing: Option<WriteFailure>,
    /// Records that must still be written (already marked late), oldest first.
    owed: Vec<Vec<u8>>,
    owed_bytes: usize,
    sync: Arc<Syncer>,
    syncer_thread: Option<std::thread::JoinHandle<()>>,
    webhook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    health: Arc<Health>,
    faults: DiskFaults,
}

/// One record of a batch being assembled: its payload (kept until the write's outcome is
/// known: forwarded to the webhook after, owed on failure when it must land).
struct Pending {
    payload: Vec<u8>,
    must_land: bool,
    /// Already owed (and marked late) from an earlier failed batch.
    owed: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut stop = None;
        while stop.is_none() {
            let first = if self.poisoned.is_none() && self.failing.is_some() {
                match rx.recv_timeout(RETRY_INTERVAL) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // All senders gone: the auditor was dropped without a shutdown.
                match rx.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            let mut batch: Vec<Command> = first.into_iter().collect();
            while batch.len() < MAX_BATCH_RECORDS {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            stop = self.commit(batch);
        }
        let result = self.finish();
        // Release the lock, the file and the webhook feed before answering: once shutdown
        // returns, another writer may open the trail.
        drop(self);
        if let Some(reply) = stop {
            drop(reply.send(result));
        }
        // Commands still queued are dropped with their reply channels: they fail as Stopped.
    }

    /// One group commit: the owed records, then the batch (or a probe checkpoint when failing
    /// and the batch is empty). Returns the reply of a Stop command in the batch.
    fn commit(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<Result<(), WriteFailure>>> {
        if self.poisoned.is_none() {
            if let Some(failure) = self.sync.failure() {
                self.poison(failure);
            }
        }
        let mut stop = None;
        let mut buf = Vec::with_capacity(batch.len() * 1024);
        let mut seq = self.head_seq;
        let mut prev = self.head_hash.clone();
        let mut last_checkpoint = self.last_checkpoint_seq;
        let mut done: Vec<(Done, bool)> = Vec::with_capacity(batch.len());
        let mut pending: Vec<Pending> = Vec::new();

        if self.poisoned.is_none() {
            for payload in std::mem::take(&mut self.owed) {
                seq += 1;
                prev = encode_record(PayloadKind::Event, &payload, &prev, seq, &mut buf);
                pending.push(Pending {
                    payload,
                    must_land: true,
                    owed: true,
                });
            }
        }
        for command in batch {
            match command {
                Command::Stop { reply } => stop = Some(reply),
                Command::Append { ack, .. } if self.poisoned.is_some() => {
                    if let Some(ack) = ack {
                        drop(ack.send(Err(self.poisoned_failure())));
                    }
                }
                Command::Checkpoint { reply } if self.poisoned.is_some() => {
                    drop(reply.send(Err(self.poisoned_failure())));
                }
                Command::Append {
                    payload,
                    ack,
                    must_land,
                } => {
                    seq += 1;
                    let hash = encode_record(PayloadKind::Event, &payload, &prev, seq, &mut buf);
                    prev.clone_from(&hash);
                    pending.push(Pending {
                        payload,
                        must_land,
                        owed: false,
                    });
                    if let Some(ack) = ack {
                        let needs_sync = self.durability == Durability::AfterSync;
                        done.push((Done::Ack(ack, Appended { seq, hash }), needs_sync));
                    }
                }
                Command::Checkpoint { reply } => {
                    if seq == 0 || seq == last_checkpoint {
                        drop(reply.send(Ok(None)));
                        continue;
                    }
                    let checkpoint = self.checkpoint(seq, &prev, &mut buf);
                    seq += 1;
                    prev = checkpoint.1;
                    last_checkpoint = seq;
                    done.push((Done::Checkpoint(reply, checkpoint.0), true));
                }
            }
        }
        if buf.is_empty() && self.failing.is_some() && self.poisoned.is_none() {
            // Nothing to write, but the trail is failing: probe it with a checkpoint, so that
            // readiness returns as soon as records can be written again.
            let (_, hash) = self.checkpoint(seq, &prev, &mut buf);
            seq += 1;
            prev = hash;
            last_checkpoint = seq;
        }
        if buf.is_empty() {
            return stop;
        }

        if self.len > 0 && self.len + buf.len() as u64 > self.max_segment_bytes {
            if let Err(failure) = self.rotate() {
                tracing::error!(error = %failure, "audit segment rotation failed; requests are refused");
                self.failed(failure, done, pending);
                return stop;
            }
        }

        let written = if self.faults.next_write_fails() {
            Err(io::Error::from_raw_os_error(
                rustix::io::Errno::NOSPC.raw_os_error(),
            ))
        } else {
            (&*self.file).write_all(&buf)
        };
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.head_seq = seq;
                self.head_hash = prev;
                self.last_checkpoint_seq = last_checkpoint;
                if let Some(failure) = self.failing.take() {
                    tracing::info!(after = %failure, "the audit trail can be written again");
                    self.health.set_failing(None);
                }
                self.owed_bytes = 0;
                self.health.owed.store(0, Ordering::SeqCst);
                let mut waiters = Vec::new();
                for (d, needs_sync) in done {
                    if needs_sync {
                        waiters.push(Waiter {
                            generation: self.segment,
                            end: self.len,
                            done: d,
                        });
                    } else {
                        d.finish(Ok(()));
                    }
                }
                self.sync.written(self.segment, self.len, waiters);
                self.forward(pending);
            }
            Err(err) => {
                let failure = WriteFailure::io("write", &self.segment_path, err);
                tracing::error!(error = %failure, "audit write failed; the batch's requests are refused");
                // Cut off whatever part of the batch reached the file, so the next batch
                // chains onto the last complete record.
                if let Err(err) = self.file.set_len(self.len) {
                    self.poison(WriteFailure::io("truncate", &self.segment_path, err));
                }
                self.failed(failure, done, pending);
            }
        }
        stop
    }

    /// Appends a checkpoint of record `seq` (hash `prev`) to `buf`; returns it and its hash.
    fn checkpoint(&self, seq: u64, prev: &str, buf: &mut Vec<u8>) -> (SignedCheckpoint, String) {
        let checkpoint = SignedCheckpoint::sign(
            &self.key,
            &self.replica,
            seq,
            prev,
            MicroTime::now().to_string(),
        );
        let hash = encode_record(
            PayloadKind::Checkpoint,
            &checkpoint.to_canonical_json(),
            prev,
            seq + 1,
            buf,
        );
        (checkpoint, hash)
    }

    /// A batch was not written: its waiters fail, the records that must land are owed.
    fn failed(&mut self, failure: WriteFailure, done: Vec<(Done, bool)>, pending: Vec<Pending>) {
        self.health.set_failing(Some(failure.clone()));
        self.failing = Some(failure.clone());
        for (d, _) in done {
            d.finish(Err(failure.clone()));
        }
        for p in pending.into_iter().filter(|p| p.must_land) {
            let payload = if p.owed {
                p.payload
            } else {
                recorded_late(&p.payload, &failure)
            };
            if self.owed_bytes + payload.len() > MAX_OWED_BYTES {
                tracing::error!(
                    audit_id = %audit_id_of(&payload),
                    "an audit record of an applied change cannot be kept until the trail is writable again; it is lost"
                );
                continue;
            }
            self.owed_bytes += payload.len();
            self.owed.push(payload);
        }
        self.health.owed.store(self.owed.len(), Ordering::SeqCst);
    }

    fn rotate(&mut self) -> Result<(), WriteFailure> {
        if let Err(err) = self.file.sync_all() {
            let failure = WriteFailure::io("fsync", &self.segment_path, err);
            self.poison(failure.clone());
            return Err(failure);
        }
        let number = self.segment + 1;
        let path = self.dir.join(segment_file_name(number));
        let file = create_segment(&path).map_err(|e| WriteFailure::io("create", &path, e))?;
        if let Err(err) = sync_dir(&self.dir) {
            let failure = WriteFailure::io("fsync", &self.dir, err);
            self.poison(failure.clone());
            return Err(failure);
        }
        let file = Arc::new(file);
        self.sync.rotated(number, file.clone());
        tracing::info!(segment = %path.display(), first_seq = self.head_seq + 1, "audit segment rotated");
        self.file = file;
        self.segment = number;
        self.segment_path = path;
        self.len = 0;
        Ok(())
    }

    /// Hands the written events to the webhook sink (best effort: never blocks the writer).
    fn forward(&self, written: Vec<Pending>) {
        let Some(webhook) = &self.webhook else { return };
        for p in written {
            if webhook.try_send(Bytes::from(p.payload)).is_err() {
                let dropped = self.health.webhook_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "audit webhook buffer full; events dropped from the webhook (the file trail has them)");
                }
            }
        }
    }

    fn poisoned_failure(&self) -> WriteFailure {
        WriteFailure::Poisoned(Arc::new(
            self.poisoned.clone().unwrap_or(WriteFailure::Stopped),
        ))
    }

    fn poison(&mut self, failure: WriteFailure) {
        if self.poisoned.is_none() {
            tracing::error!(error = %failure, "audit trail failed; every audited request is refused until restart");
            self.health.poison(failure.clone());
            self.sync.fail(failure.clone());
            self.poisoned = Some(failure);
        }
    }

    /// Writes what is owed (one last try), makes everything durable and stops the syncer.
    fn finish(&mut self) -> Result<(), WriteFailure> {
        if !self.owed.is_empty() && self.poisoned.is_none() {
            self.commit(Vec::new());
        }
        for payload in &self.owed {
            tracing::error!(
                audit_id = %audit_id_of(payload),
                "the audit record of an applied change was never written: the trail could not be written until shutdown"
            );
        }
        let result = match &self.poisoned {
            Some(_) => Err(self.poisoned_failure()),
            None => self
                .file
                .sync_all()
                .map_err(|e| WriteFailure::io("fsync", &self.segment_path, e)),
        };
        self.sync.stop(result.clone());
        if let Some(thread) = self.syncer_thread.take() {
            drop(thread.join());
        }
        result
    }
}

/// `payload` (an event's canonical JSON) with [`ANNOTATION_RECORDED_LATE`] set to `failure`.
fn recorded_late(payload: &[u8], failure: &WriteFailure) -> Vec<u8> {
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return payload.to_vec();
    };
    if let Some(object) = event.as_object_mut() {
        let annotations = object
            .entry("annotations")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(ANNOTATION_RECORDED_LATE.into(), failure.to_string().into());
        }
    }
    canonical::to_vec(&event)
}

/// The audit ID of an event's canonical JSON, for logs.
fn audit_id_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|e| e.get("auditID")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

struct Waiter {
    generation: u64,
    end: u64,
    done: Done,
}

/// State shared by the writer and the syncer thread.
struct Syncer {
    state: Mutex<SyncState>,
    cv: Condvar,
    /// Told at once when an fsync fails, so readiness reports it before the next append.
    health: Arc<Health>,
}

struct SyncState {
    file: Arc<File>,
    /// The segment number of `file`.
    generation: u64,
    written: u64,
    synced: u64,
    waiters: Vec<Waiter>,
    failure: Option<WriteFailure>,
    stop: bool,
}

impl Syncer {
    fn run(&self) {
        let mut state = lock(&self.state);
        let mut last_sync = Instant::now();
        loop {
            if state.failure.is_none() && state.written > state.synced {
                // Only AfterWrite records pending: let a few milliseconds of them gather.
                let due = last_sync + SYNC_INTERVAL;
                let now = Instant::now();
                if state.waiters.is_empty() && !state.stop && now < due {
                    state = self
                        .cv
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                last_sync = now;
                let (file, generation, upto) =
                    (state.file.clone(), state.generation, state.written);
                drop(state);
                let result = file.sync_data();
                state = lock(&self.state);
                match result {
                    Ok(()) => {
                        if generation == state.generation {
                            state.synced = state.synced.max(upto);
                        }
                        let (current, synced) = (state.generation, state.synced);
                        let (ready, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiters)
                            .into_iter()
                            .partition(|w| w.generation < current || w.end <= synced);
                        state.waiters = pending;
                        drop(state);
                        for w in ready {
                            w.done.finish(Ok(()));
                        }
                        state = lock(&self.state);
                    }
                    Err(err) => {
                        let failure =
                            WriteFailure::io("fdatasync", Path::new("audit segment"), err);
                        tracing::error!(error = %failure, "audit fsync failed; every audited request is refused until restart");
                        self.health.poison(failure.clone());
                        state.failure = Some(failure.clone());
                        let waiters = std::mem::take(&mut state.waiters);
                        drop(state);
                        for w in waiters {
                            w.done.finish(Err(failure.clone()));
                        }
                        state = lock(&self.state);
                    }
                }
                continue;
            }
            if state.stop {
                return;
            }
            state = self.cv.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn failure(&self) -> Option<WriteFailure> {
        lock(&self.state).failure.clone()
    }

    fn written(&self, generation: u64, len: u64, waiters: Vec<Waiter>) {
        let mut state = lock(&self.state);
        if let Some(failure) = state.failure.clone() {
            drop(state);
            for w in waiters {
                w.done.finish(Err(failure.clone()));
            }
            return;
        }
        debug_assert_eq!(generation, state.generation);
        state.written = len;
        state.waiters.extend(waiters);
        drop(state);
        self.cv.notify_one();
    }

    /// The writer synced the old segment itself and moved on to `file`.
    fn rotated(&self, generation: u64, file: Arc<File>) {
        let mut state = lock(&self.state);
        state.file = file;
        state.generation = generation;
        state.written = 0;
        state.synced = 0;
        let ready = std::mem::take(&mut state.waiters);
        drop(state);
        for w in ready {
            w.done.finish(Ok(()));
        }
    }

    fn fail(&self, failure: WriteFailure) {
        let mut state = lock(&self.state);
        state.failure.get_or_insert(failure.clone());
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        for w in waiters {
            w.done.finish(Err(failure.clone()));
        }
    }

    /// The writer synced everything (or failed): answer the waiters and end the thread.
    fn stop(&self, result: Result<(), WriteFailure>) {
        let mut state = lock(&self.state);
        state.stop = true;
        state.synced = state.written;
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        self.cv.notify_one();
        for w in waiters {
            w.done.finish(result.clone());
        }
    }
}
