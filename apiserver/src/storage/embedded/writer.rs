//! The single writer: every change to the embedded store goes through one thread that batches
//! whatever requests are queued into one redb write transaction and one fsync (group commit).
//!
//! ```text
//!  create/update/delete/compact ──► requests (mpsc) ──► writer thread
//!                                                          │ take up to MAX_BATCH queued requests
//!                                                          │ apply each in order, one revision each
//!                                                          │ sweep a chunk of compacted history
//!                                                          │ commit (fsync)
//!                                                          ├─► publish the revision, broadcast events
//!                                                          └─► reply to each request
//! ```
//!
//! A request whose precondition fails (exists, missing, conflict, a create's guard) is answered
//! with that error and changes nothing; the rest of its batch still commits. If the transaction
//! itself fails, every request of the batch fails with `Unavailable` and nothing of it is
//! visible. Replies are sent only after the commit returned, so `Ok` means durable.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::schema::{
    db_error, kv_at, meta, LogRecord, LIVE, LOG, META, META_COMPACTED, META_CURRENT, META_SWEPT,
    PUT, TOMBSTONE, VERSIONS,
};
use super::{Commit, Shared};
use crate::storage::{Event, EventKind, Guard, KeyValue, Result, Revision, StorageError};

/// The most requests committed in one transaction. Bounds the latency a request can add to the
/// others of its batch and the size of one broadcast message.
pub(super) const MAX_BATCH: usize = 256;

/// How many `VERSIONS` entries one transaction examines while sweeping compacted history, so a
/// large sweep never stalls writers for long.
const SWEEP_CHUNK_ENTRIES: usize = 4096;

pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
        /// Checked in the same transaction, after the key's own absence.
        guard: Option<Guard>,
    },
    Update {
        key: String,
        expected: Revision,
        value: Bytes,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

pub(super) enum Done {
    Written(KeyValue),
    Compacted,
}

pub(super) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done>>,
}

/// Physical removal of history below `target` still to do.
#[derive(Clone)]
struct Sweep {
    target: Revision,
    /// Where the next chunk starts in `VERSIONS`.
    resume: Bound<(String, Revision)>,
}

impl Sweep {
    fn new(target: Revision) -> Self {
        Sweep {
            target,
            resume: Bound::Unbounded,
        }
    }
}

/// The transaction failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("embedded store commit failed")]
struct CommitFailed(#[source] Arc<StorageError>);

pub(super) struct Writer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<Commit>>,
    sweep: Option<Sweep>,
}

impl Writer {
    /// `swept < compacted` means a sweep was cut short (a crash); it resumes from the start.
    pub fn new(
        shared: Arc<Shared>,
        requests: mpsc::Receiver<Request>,
        events: broadcast::Sender<Arc<Commit>>,
        compacted: Revision,
        swept: Revision,
    ) -> Self {
        let sweep = (swept < compacted).then(|| Sweep::new(compacted));
        Writer {
            shared,
            requests,
            events,
            sweep,
        }
    }

    /// Runs until every sender is gone, i.e. the store was dropped.
    pub fn run(mut self) {
        loop {
            let mut batch = Vec::new();
            if self.sweep.is_none() {
                // Nothing to do until a request arrives.
                match self.requests.blocking_recv() {
                    Some(request) => batch.push(request),
                    None => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    // A pending sweep resumes on the next open.
                    Err(mpsc::error::TryRecvError::Disconnected) if batch.is_empty() => return,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch
            .into_iter()
            .map(|request| (request.op, request.reply))
            .unzip();
        match self.apply(&ops) {
            Ok((results, commit)) => {
                if let Some(commit) = commit {
                    self.shared
                        .revision
                        .store(commit.revision, Ordering::Release);
                    // No receivers is fine: nobody is watching.
                    let _ = self.events.send(Arc::new(commit));
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have gone away; its write is committed regardless.
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = replies.len(), "embedded store commit failed");
                if replies.is_empty() && self.sweep.take().is_some() {
                    // Retrying at once would spin on a failing disk; the sweep resumes at the
                    // next compaction or the next open.
                    tracing::warn!("suspended sweeping compacted history");
                }
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Unavailable(Box::new(CommitFailed(
                        error.clone(),
                    )))));
                }
            }
        }
    }

    /// Applies `ops` in one transaction and commits it. Returns each op's result and, if the
    /// revision advanced, what to broadcast.
    fn apply(&mut self, ops: &[Op]) -> Result<(Vec<Result<Done>>, Option<Commit>)> {
        let txn = self.shared.db.begin_write().map_err(db_error)?;
        let mut tables = Tables::open(&txn)?;
        let start = meta(&tables.meta, META_CURRENT)?;
        let mut revision = start;
        let mut compacted = meta(&tables.meta, META_COMPACTED)?;
        // Sweep progress becomes ours only once the transaction that made it has committed.
        let mut sweep = self.sweep.clone();
        let mut dirty = false;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = match op {
                Op::Compact { revision: target } if *target > revision => {
                    Err(StorageError::FutureRevision {
                        requested: *target,
                        current: revision,
                    })
                }
                Op::Compact { revision: target } => {
                    if *target > compacted {
                        compacted = *target;
                        tables
                            .meta
                            .insert(META_COMPACTED, compacted)
                            .map_err(db_error)?;
                        // A sweep in progress starts over with the newer target.
                        sweep = Some(Sweep::new(compacted));
                        dirty = true;
                    }
                    Ok(Done::Compacted)
                }
                write => match tables.write(write, revision + 1) {
                    Ok(event) => {
                        revision += 1;
                        dirty = true;
                        let kv = event.kv.clone();
                        events.push(event);
                        Ok(Done::Written(kv))
                    }
                    // The transaction may be half-changed: give up on all of it.
                    Err(fault @ StorageError::Unavailable(_)) => return Err(fault),
                    // A refused precondition is checked before anything is written.
                    Err(refused) => Err(refused),
                },
            };
            results.push(result);
        }
        if revision != start {
            tables
                .meta
                .insert(META_CURRENT, revision)
                .map_err(db_error)?;
        }
        if let Some(pending) = &mut sweep {
            dirty = true;
            if tables.sweep(pending)? {
                sweep = None;
            }
        }
        drop(tables);
        if dirty {
            txn.commit().map_err(db_error)?;
            self.shared.compacted.fetch_max(compacted, Ordering::AcqRel);
        } else {
            // Every request was refused or a no-op: nothing to make durable.
            txn.abort().map_err(db_error)?;
        }
        self.sweep = sweep;
        let commit = (revision != start).then(|| Commit::new(revision, events));
        Ok((results, commit))
    }
}

/// The tables of one write transaction.
struct Tables<'txn> {
    log: Table<'txn, i64, LogRecord>,
    versions: Table<'txn, (&'static str, i64), u8>,
    live: Table<'txn, &'static str, i64>,
    meta: Table<'txn, &'static str, i64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Tables {
            log: txn.open_table(LOG).map_err(db_error)?,
            versions: txn.open_table(VERSIONS).map_err(db_error)?,
            live: txn.open_table(LIVE).map_err(db_error)?,
            meta: txn.open_table(META).map_err(db_error)?,
        })
    }

    /// The live value of `key`.
    fn current(&self, key: &str) -> Result<Option<KeyValue>> {
        let revision = self.live.get(key).map_err(db_error)?.map(|r| r.value());
        revision.map(|r| kv_at(&self.log, key, r)).transpose()
    }

    /// Checks `op`'s precondition and, if it holds, records it at `revision`.
    fn write(&mut self, op: &Op, revision: Revision) -> Result<Event> {
        match op {
            Op::Create { key, value, guard } => {
                if self.live.get(key.as_str()).map_err(db_error)?.is_some() {
                    return Err(StorageError::AlreadyExists { key: key.clone() });
                }
                if let Some(guard) = guard {
                    // Read in this transaction, after every earlier op of the batch: no write
                    // to the guard key can fall between this check and the create.
                    self.expect(&guard.key, Some(guard.mod_revision))?;
                }
                self.record(key, revision, PUT, revision, value)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                };
                Ok(Event {
                    kind: EventKind::Created,
                    kv,
                    prev: None,
                })
            }
            Op::Update {
                key,
                expected,
                value,
            } => {
                let prev = self.expect(key, Some(*expected))?;
                self.record(key, revision, PUT, prev.create_revision, value)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                Ok(Event {
                    kind: EventKind::Updated,
                    kv,
                    prev: Some(prev),
                })
            }
            Op::Delete { key, expected } => {
                let last = self.expect(key, *expected)?;
                self.record(
                    key,
                    revision,
                    TOMBSTONE,
                    last.create_revision,
                    &Bytes::new(),
                )?;
                let kv = KeyValue {
                    mod_revision: revision,
                    ..last
                };
                Ok(Event {
                    kind: EventKind::Deleted,
                    kv,
                    prev: None,
                })
            }
            Op::Compact { .. } => unreachable!("compaction is not a key write"),
        }
    }

    /// The live value of `key`, if its mod revision is `expected` (when given).
    fn expect(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let current = self.current(key)?.ok_or_else(|| StorageError::NotFound {
            key: key.to_string(),
        })?;
        match expected {
            Some(expected) if expected != current.mod_revision => Err(StorageError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(current),
            }),
            _ => Ok(current),
        }
    }

    fn record(
        &mut self,
        key: &str,
        revision: Revision,
        kind: u8,
        create_revision: Revision,
        value: &[u8],
    ) -> Result<()> {
        self.log
            .insert(revision, (kind, create_revision, key, value))
            .map_err(db_error)?;
        self.versions
            .insert((key, revision), kind)
            .map_err(db_error)?;
        if kind == PUT {
            self.live.insert(key, revision).map_err(db_error)?;
        } else {
            self.live.remove(key).map_err(db_error)?;
        }
        Ok(())
    }

    /// Removes one chunk of history below `sweep.target` (see the schema docs for what is
    /// kept). Returns whether the sweep is finished.
    fn sweep(&mut self, sweep: &mut Sweep) -> Result<bool> {
        let target = sweep.target;
        let mut doomed: Vec<(String, Revision)> = Vec::new();
        // The newest version below `target` of the key being walked: kept unless a newer one
        // below `target` turns up, or it is a tombstone.
        let mut candidate: Option<(String, Revision, u8)> = None;
        let mut seen = 0;
        let mut finished = true;
        {
            let resume = match &sweep.resume {
                Bound::Included((k, r)) => Bound::Included((k.as_str(), *r)),
                Bound::Excluded((k, r)) => Bound::Excluded((k.as_str(), *r)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let range = self
                .versions
                .range::<(&str, i64)>((resume, Bound::Unbounded))
                .map_err(db_error)?;
            let mut last_seen = None;
            for entry in range {
                if seen == SWEEP_CHUNK_ENTRIES {
                    finished = false;
                    break;
                }
                seen += 1;
                let (k, kind) = entry.map_err(db_error)?;
                let (key, revision) = k.value();
                let kind = kind.value();
                let same_key = candidate.as_ref().is_some_and(|(c, _, _)| c == key);
                if let Some((c_key, c_rev, c_kind)) = candidate.take() {
                    if same_key && revision < target || c_kind == TOMBSTONE {
                        doomed.push((c_key, c_rev));
                    }
                }
                if revision < target {
                    candidate = Some((key.to_string(), revision, kind));
                }
                last_seen = Some((key.to_string(), revision));
            }
            if finished {
                if let Some((c_key, c_rev, TOMBSTONE)) = candidate.take() {
                    doomed.push((c_key, c_rev));
                }
            } else {
                // Resume at the undecided candidate, or after the last entry looked at.
                sweep.resume = match (candidate, last_seen) {
                    (Some((key, revision, _)), _) => Bound::Included((key, revision)),
                    (None, Some(last)) => Bound::Excluded(last),
                    (None, None) => Bound::Unbounded,
                };
            }
        }
        for (key, revision) in &doomed {
            self.versions
                .remove((key.as_str(), *revision))
                .map_err(db_error)?;
            self.log.remove(*revision).map_err(db_error)?;
        }
        if finished {
            self.meta.insert(META_SWEPT, target).map_err(db_error)?;
        }
        Ok(finished)
    }
}
