//! The one writer of a trail: a dedicated thread that turns concurrent appends into group
//! commits, and a second thread that makes them durable.
//!
//! ```text
//!  begin/complete (many tasks)          writer thread                      syncer thread
//!  ── canonical event bytes ──► channel ──► drain up to MAX_BATCH_RECORDS
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
//! writeback waits for the disk, and a thousand syncs a second kept pages under writeback.) With [`Durability::AfterSync`] an append returns only once an
//! `fdatasync` covering it has completed, which survives power loss as well. Checkpoint records
//! always wait for the sync: a checkpoint stored outside the trail must never name a record a
//! power loss could take back.
//!
//! Why `AfterWrite` is the default — `audit::tests::append_latency`, debug build, ext4 on a shared
//! two-core VM under load from other builds (three runs; p50 / p99):
//!
//! | durability   | one append             | a request (begin + complete) | 64 concurrent requests |
//! |--------------|------------------------|------------------------------|------------------------|
//! | `AfterWrite` | 28–32 µs / 0.07–1.2 ms | 54–63 µs / 0.13–3.6 ms       | 21 000–44 000 records/s |
//! | `AfterSync`  | 0.18–2.2 ms / 6–12 ms  | 0.37–4.0 ms / 11–17 ms       | 11 000–24 000 records/s |
//!
//! Only `AfterWrite` keeps the audit overhead of a request under 0.2 ms; the risk it leaves is
//! losing the last milliseconds of records to a power loss or kernel crash, never to a crash of
//! the hub, and never records a stored checkpoint covers.
//!
//! **Failures.** The chain never has a gap:
//! - a failed `write(2)` (disk full, I/O error) cuts the file back to the end of the last
//!   written batch; the batch's appends fail (their requests are refused) and the next batch
//!   reuses their sequence numbers, chaining onto the last record in the file;
//! - a segment that cannot be created fails the batch the same way, and is tried again;
//! - a failed cut-back, `fsync` or directory sync poisons the writer: the state of the file is
//!   unknown (after a failed fsync the kernel may have dropped the dirty pages), so every later
//!   append fails until the process restarts and recovery reads what the file really holds.
//!
//! **Recovery** (at open): the last segment is read and checked record by record. Bytes after
//! the last line end are a torn write — part of a line (a kill during `write(2)`), or NUL bytes
//! (a power loss after the size grew but before the data landed) — and are cut off, copied to
//! `recovered/` first and reported. Anything else (a complete line that is not a sound record, a
//! broken chain) is damage or tampering: the trail refuses to open, and `audit verify` tells
//! what is wrong.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::checkpoint::{SignedCheckpoint, SigningKey};
use super::event::MicroTime;
use super::segment::{
    encode_record, list_segments, parse_record, segment_file_name, split_lines, ParsedRecord,
    PayloadKind, GENESIS_HASH, LOCK_FILE, RECOVERED_DIR,
};

/// Most commands one group commit takes from the queue.
const MAX_BATCH_RECORDS: usize = 1024;

/// The longest the syncer leaves written records unsynced when nothing waits for a sync
/// ([`Durability::AfterSync`] appends and checkpoints are synced at once).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);

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

/// Why a trail could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is locked: another process is writing this audit trail")]
    Locked { path: String },
    #[error("{path} line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
}

impl OpenError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        OpenError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

type AckSender = oneshot::Sender<Result<Appended, WriteFailure>>;
type CheckpointReply = oneshot::Sender<Result<Option<SignedCheckpoint>, WriteFailure>>;

pub(crate) enum Command {
    /// Append an event (its canonical JSON). Without `ack` nobody waits (the record of a
    /// dropped request).
    Append {
        payload: Vec<u8>,
        ack: Option<AckSender>,
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

/// The writer's failure, readable by everyone (readiness, `begin` of unrecorded requests).
#[derive(Debug, Default)]
pub(crate) struct Health {
    failure: Mutex<Option<WriteFailure>>,
    /// Events the webhook sink could not take (its buffer was full).
    pub(crate) webhook_dropped: AtomicU64,
}

impl Health {
    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        lock(&self.failure).clone()
    }

    fn set(&self, failure: WriteFailure) {
        lock(&self.failure).get_or_insert(failure);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the trail stood when it was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// What start-up recovery cut off the end of the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that ended in a torn write.
    pub segment: PathBuf,
    /// The length it was cut back to (the end of its last sound record).
    pub offset: u64,
    pub discarded_bytes: u64,
    /// Where the discarded bytes were kept.
    pub saved_to: PathBuf,
    /// The sequence number of the last sound record (0: none).
    pub last_seq: u64,
}

pub(crate) struct WriterConfig {
    pub dir: PathBuf,
    pub max_segment_bytes: u64,
    pub durability: Durability,
    pub replica: String,
    pub key: SigningKey,
    pub webhook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    pub health: Arc<Health>,
}

pub(crate) struct WriterHandle {
    pub tx: mpsc::Sender<Command>,
    pub head: Head,
    pub recovery: Option<Recovery>,
}

/// Recovers the trail in `config.dir` and starts the writer and syncer threads. Blocking.
pub(crate) fn open(config: WriterConfig) -> Result<WriterHandle, OpenError> {
    let recovered = recover(&config.dir)?;
    let head = Head {
        seq: recovered.head_seq,
        hash: recovered.head_hash.clone(),
    };
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
        head_seq: recovered.head_seq,
        head_hash: recovered.head_hash,
        last_checkpoint_seq: recovered.last_checkpoint_seq,
        failure: None,
        sync,
        syncer_thread: Some(syncer_thread),
        webhook: config.webhook,
        health: config.health,
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
    failure: Option<WriteFailure>,
    sync: Arc<Syncer>,
    syncer_thread: Option<std::thread::JoinHandle<()>>,
    webhook: Option<tokio::sync::mpsc::Sender<Bytes>>,
    health: Arc<Health>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut stop = None;
        while stop.is_none() {
            // All senders gone: the auditor was dropped without a shutdown.
            let Ok(first) = rx.recv() else { break };
            let mut batch = vec![first];
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

    /// One group commit; returns the reply of a Stop command in the batch.
    fn commit(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<Result<(), WriteFailure>>> {
        if self.failure.is_none() {
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
        let mut forward = Vec::new();

        for command in batch {
            match command {
                Command::Stop { reply } => stop = Some(reply),
                Command::Append { ack, .. } if self.failure.is_some() => {
                    if let Some(ack) = ack {
                        drop(ack.send(Err(self.poisoned())));
                    }
                }
                Command::Checkpoint { reply } if self.failure.is_some() => {
                    drop(reply.send(Err(self.poisoned())));
                }
                Command::Append { payload, ack } => {
                    seq += 1;
                    let hash = encode_record(PayloadKind::Event, &payload, &prev, seq, &mut buf);
                    prev.clone_from(&hash);
                    if self.webhook.is_some() {
                        forward.push(Bytes::from(payload));
                    }
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
                    let checkpoint = SignedCheckpoint::sign(
                        &self.key,
                        &self.replica,
                        seq,
                        &prev,
                        MicroTime::now().to_string(),
                    );
                    seq += 1;
                    prev = encode_record(
                        PayloadKind::Checkpoint,
                        &checkpoint.to_canonical_json(),
                        &prev,
                        seq,
                        &mut buf,
                    );
                    last_checkpoint = seq;
                    done.push((Done::Checkpoint(reply, checkpoint), true));
                }
            }
        }
        if buf.is_empty() {
            return stop;
        }

        if self.len > 0 && self.len + buf.len() as u64 > self.max_segment_bytes {
            if let Err(failure) = self.rotate() {
                tracing::error!(error = %failure, "audit segment rotation failed; requests are refused");
                for (d, _) in done {
                    d.finish(Err(failure.clone()));
                }
                return stop;
            }
        }

        match (&*self.file).write_all(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.head_seq = seq;
                self.head_hash = prev;
                self.last_checkpoint_seq = last_checkpoint;
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
                self.forward(forward);
            }
            Err(err) => {
                let failure = WriteFailure::io("write", &self.segment_path, err);
                tracing::error!(error = %failure, "audit write failed; the batch's requests are refused");
                // Cut off whatever part of the batch reached the file, so the next batch
                // chains onto the last complete record.
                if let Err(err) = self.file.set_len(self.len) {
                    self.poison(WriteFailure::io("truncate", &self.segment_path, err));
                }
                for (d, _) in done {
                    d.finish(Err(failure.clone()));
                }
            }
        }
        stop
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

    fn forward(&self, events: Vec<Bytes>) {
        let Some(webhook) = &self.webhook else { return };
        for event in events {
            if webhook.try_send(event).is_err() {
                let dropped = self.health.webhook_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "audit webhook buffer full; events dropped from the webhook (the file trail has them)");
                }
            }
        }
    }

    fn poisoned(&self) -> WriteFailure {
        WriteFailure::Poisoned(Arc::new(
            self.failure.clone().unwrap_or(WriteFailure::Stopped),
        ))
    }

    fn poison(&mut self, failure: WriteFailure) {
        if self.failure.is_none() {
            tracing::error!(error = %failure, "audit trail failed; every audited request is refused until restart");
            self.health.set(failure.clone());
            self.sync.fail(failure.clone());
            self.failure = Some(failure);
        }
    }

    /// Makes everything durable and stops the syncer.
    fn finish(&mut self) -> Result<(), WriteFailure> {
        let result = match &self.failure {
            Some(_) => Err(self.poisoned()),
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
                        self.health.set(failure.clone());
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

fn create_segment(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // `create_new`: a segment is never reopened for writing by accident, nor through a link
    // someone left at its name.
    std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Takes the trail's exclusive lock: two writers would interleave their chains.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| OpenError::io("opening", &path, e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(OpenError::Locked {
            path: path.display().to_string(),
        }),
        Err(e) => Err(OpenError::io("locking", &path, e.into())),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Recovered {
    /// Holds the directory's exclusive lock while open.
    lock: File,
    file: File,
    segment: u64,
    len: u64,
    head_seq: u64,
    head_hash: String,
    last_checkpoint_seq: u64,
    recovery: Option<Recovery>,
}

/// Opens the trail in `dir` for appending (creating it if needed), cutting off a torn tail.
fn recover(dir: &Path) -> Result<Recovered, OpenError> {
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpenError::io("creating", dir, e))?;
    }
    let lock = lock_dir(dir)?;
    let segments = list_segments(dir).map_err(|e| OpenError::io("listing", dir, e))?;
    let Some((last_number, last_path)) = segments.last().cloned() else {
        let path = dir.join(segment_file_name(1));
        let file = create_segment(&path).map_err(|e| OpenError::io("creating", &path, e))?;
        sync_dir(dir).map_err(|e| OpenError::io("fsync", dir, e))?;
        return Ok(Recovered {
            lock,
            file,
            segment: 1,
            len: 0,
            head_seq: 0,
            head_hash: GENESIS_HASH.to_string(),
            last_checkpoint_seq: 0,
            recovery: None,
        });
    };

    let bytes = std::fs::read(&last_path).map_err(|e| OpenError::io("reading", &last_path, e))?;
    let (lines, tail) = split_lines(&bytes);
    let mut head: Option<ParsedRecord> = None;
    for (number, _, line) in lines {
        let record = match parse_record(line) {
            Ok(r) if r.is_sound() => r,
            Ok(r) => return Err(corrupt(&last_path, number, r.defect.unwrap_or_default())),
            Err(reason) => return Err(corrupt(&last_path, number, reason)),
        };
        if let Some(h) = &head {
            if record.seq != h.seq + 1 || record.prev != h.hash {
                return Err(corrupt(
                    &last_path,
                    number,
                    format!(
                        "record {} does not follow record {} (run `audit verify` for details)",
                        record.seq, h.seq
                    ),
                ));
            }
        }
        head = Some(record);
    }

    // Every complete line is a sound record, so what follows the last line end is a torn
    // write: a kill during write(2), or a power loss that left the file longer than its data
    // (NULs). It was never acknowledged.
    let mut recovery = None;
    if !tail.is_empty() {
        let end = bytes.len() - tail.len();
        let saved_to = save_torn_tail(dir, &last_path, end, tail)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&last_path)
            .map_err(|e| OpenError::io("opening", &last_path, e))?;
        file.set_len(end as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| OpenError::io("truncating", &last_path, e))?;
        let r = Recovery {
            segment: last_path.clone(),
            offset: end as u64,
            discarded_bytes: tail.len() as u64,
            saved_to,
            last_seq: head.as_ref().map_or(0, |h| h.seq),
        };
        tracing::warn!(
            segment = %r.segment.display(),
            offset = r.offset,
            discarded_bytes = r.discarded_bytes,
            saved_to = %r.saved_to.display(),
            "audit trail ended in a torn write (the process was killed while writing); cut it off"
        );
        recovery = Some(r);
    }

    // An empty last segment (rotated just before a crash): the head is in an earlier one.
    if head.is_none() {
        for (_, path) in segments.iter().rev().skip(1) {
            if let Some(record) = last_record(path)? {
                head = Some(record);
                break;
            }
        }
    }

    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last_path)
        .map_err(|e| OpenError::io("opening", &last_path, e))?;
    let len = file
        .metadata()
        .map_err(|e| OpenError::io("reading", &last_path, e))?
        .len();
    let (head_seq, head_hash, last_checkpoint_seq) = match head {
        Some(h) => {
            let cp = if h.kind == PayloadKind::Checkpoint {
                h.seq
            } else {
                0
            };
            (h.seq, h.hash, cp)
        }
        None => (0, GENESIS_HASH.to_string(), 0),
    };
    Ok(Recovered {
        lock,
        file,
        segment: last_number,
        len,
        head_seq,
        head_hash,
        last_checkpoint_seq,
        recovery,
    })
}

fn save_torn_tail(
    dir: &Path,
    segment: &Path,
    offset: usize,
    tail: &[u8],
) -> Result<PathBuf, OpenError> {
    let recovered = dir.join(RECOVERED_DIR);
    std::fs::create_dir_all(&recovered).map_err(|e| OpenError::io("creating", &recovered, e))?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = recovered.join(format!("{name}.{offset}.torn"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| OpenError::io("creating", &path, e))?;
    file.write_all(tail)
        .and_then(|()| file.sync_all())
        .map_err(|e| OpenError::io("writing", &path, e))?;
    sync_dir(&recovered).map_err(|e| OpenError::io("fsync", &recovered, e))?;
    Ok(path)
}

fn corrupt(path: &Path, line: usize, reason: String) -> OpenError {
    OpenError::Corrupt {
        path: path.display().to_string(),
        line,
        reason,
    }
}

/// The last complete record of a closed segment.
fn last_record(path: &Path) -> Result<Option<ParsedRecord>, OpenError> {
    let bytes = std::fs::read(path).map_err(|e| OpenError::io("reading", path, e))?;
    let (lines, _) = split_lines(&bytes);
    let Some((number, _, line)) = lines.last() else {
        return Ok(None);
    };
    match parse_record(line) {
        Ok(r) if r.is_sound() => Ok(Some(r)),
        Ok(r) => Err(corrupt(path, *number, r.defect.unwrap_or_default())),
        Err(reason) => Err(corrupt(path, *number, reason)),
    }
}

/// The record with sequence number `seq`, if the trail has it. Blocking.
pub(crate) fn find_record(dir: &Path, seq: u64) -> Result<Option<ParsedRecord>, OpenError> {
    let segments = list_segments(dir).map_err(|e| OpenError::io("listing", dir, e))?;
    for (_, path) in segments.iter().rev() {
        let bytes = std::fs::read(path).map_err(|e| OpenError::io("reading", path, e))?;
        let (lines, _) = split_lines(&bytes);
        let Some((_, _, first)) = lines.first() else {
            continue;
        };
        let first_seq = parse_record(first).map(|r| r.seq).unwrap_or(u64::MAX);
        if first_seq > seq {
            continue;
        }
        for (_, _, line) in lines {
            if let Ok(record) = parse_record(line) {
                if record.seq == seq {
                    return Ok(Some(record));
                }
            }
        }
        return Ok(None);
    }
    Ok(None)
}
