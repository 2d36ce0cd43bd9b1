//! Watch streams of the embedded store.
//!
//! A watcher subscribes to the writer's broadcast of committed batches *before* it reads
//! anything, then catches up from the on-disk log and switches to the broadcast:
//!
//! ```text
//!            ┌────────────── lagged: the broadcast dropped batches ──────────────┐
//!            ▼                                                                    │
//!   CatchUp: read LOG (delivered, head] in chunks ──at head──► Live: recv batches ┘
//!            │ delivered + 1 < compacted                        │ store dropped
//!            ▼                                                  ▼
//!        Err(Compacted), end                             Err(Unavailable), end
//! ```
//!
//! `delivered` is the revision up to which every event under the prefix has been handed out;
//! anything at or below it that arrives again (a batch both on disk and in the broadcast) is
//! skipped, so a watcher sees each event exactly once and in order. A consumer that stops
//! reading costs no memory: the broadcast ring overwrites what it did not take, and it reads
//! that part back from disk when it resumes. A batch of large values is broadcast without them
//! (`spilled`), and is read from disk the same way: the ring's memory is bounded in bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::broadcast;

use super::schema::{
    db_error, event_from_log, meta, Change, LOG, META, META_COMPACTED, META_CURRENT, VERSIONS,
};
use super::{blocking, Commit, Shared, StoreClosed};
use crate::storage::{Event, Result, Revision, StorageError, WatchItem, WatchStream};

/// How many log entries one catch-up read transaction goes through.
const CATCH_UP_CHUNK_ENTRIES: usize = 1024;

pub(super) fn stream(
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
    commits: broadcast::Receiver<Arc<Commit>>,
) -> WatchStream {
    let watcher = Watcher {
        shared,
        prefix,
        commits,
        delivered: after,
        pending: VecDeque::new(),
        catching_up: true,
        ended: false,
    };
    futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    })
    .boxed()
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: String,
    commits: broadcast::Receiver<Arc<Commit>>,
    /// Every event under the prefix up to this revision has been queued or handed out.
    delivered: Revision,
    /// Items decided but not yet handed out.
    pending: VecDeque<WatchItem>,
    /// Whether the log on disk holds events the watcher has not seen yet.
    catching_up: bool,
    /// The stream ended with an error; nothing follows.
    ended: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.ended {
                return None;
            }
            if self.catching_up {
                if let Err(error) = self.catch_up().await {
                    self.ended = true;
                    return Some(Err(error));
                }
                continue;
            }
            match self.commits.recv().await {
                Ok(commit) => self.take(&commit),
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return Some(Err(StorageError::Unavailable(Box::new(StoreClosed))));
                }
            }
        }
    }

    /// Queues the events of one committed batch that are new and under the prefix.
    fn take(&mut self, commit: &Commit) {
        if commit.revision <= self.delivered {
            return;
        }
        if commit.spilled {
            // Too large for the broadcast: the log has them.
            self.catching_up = true;
            return;
        }
        let mut last = None;
        for event in &commit.events {
            if event.revision() > self.delivered && event.kv.key.starts_with(&self.prefix) {
                last = Some(event.revision());
                self.pending.push_back(WatchItem::Event(event.clone()));
            }
        }
        if last != Some(commit.revision) {
            self.pending.push_back(WatchItem::Progress(commit.revision));
        }
        self.delivered = commit.revision;
    }

    /// Reads the next chunk of the log from disk.
    async fn catch_up(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let prefix = self.prefix.clone();
        let after = self.delivered;
        let chunk = blocking(move || read_chunk(&shared, &prefix, after)).await?;
        let last = chunk.events.last().map(Event::revision);
        self.pending
            .extend(chunk.events.into_iter().map(WatchItem::Event));
        if chunk.at_head {
            if chunk.upto > after && last != Some(chunk.upto) {
                self.pending.push_back(WatchItem::Progress(chunk.upto));
            }
            self.catching_up = false;
        }
        self.delivered = chunk.upto;
        Ok(())
    }
}

struct Chunk {
    events: Vec<Event>,
    /// The last revision looked at.
    upto: Revision,
    /// Whether `upto` was the head of the log when read.
    at_head: bool,
}

/// Fails with `Compacted` if events right after `after` are gone.
pub(super) fn check_compacted(
    table: &impl ReadableTable<&'static str, i64>,
    after: Revision,
) -> Result<()> {
    let compacted = meta(table, META_COMPACTED)?;
    if after + 1 < compacted {
        return Err(StorageError::Compacted {
            requested: after,
            compacted,
        });
    }
    Ok(())
}

fn read_chunk(shared: &Shared, prefix: &str, after: Revision) -> Result<Chunk> {
    let txn = shared.db.begin_read().map_err(db_error)?;
    let meta_table = txn.open_table(META).map_err(db_error)?;
    let head = meta(&meta_table, META_CURRENT)?;
    // Checked in the same snapshot as the log is read: the sweep removes log entries only
    // below a compacted revision that a snapshot showing the removal also shows.
    check_compacted(&meta_table, after)?;
    if after >= head {
        return Ok(Chunk {
            events: Vec::new(),
            upto: after,
            at_head: true,
        });
    }
    let log = txn.open_table(LOG).map_err(db_error)?;
    let versions = txn.open_table(VERSIONS).map_err(db_error)?;
    let mut events = Vec::new();
    let mut upto = head;
    for (scanned, entry) in log.range(after + 1..=head).map_err(db_error)?.enumerate() {
        let (revision, record) = entry.map_err(db_error)?;
        let revision = revision.value();
        if scanned == CATCH_UP_CHUNK_ENTRIES {
            upto = revision - 1;
            break;
        }
        if record.value().2.starts_with(prefix) {
            let change = Change::from_record(record.value());
            events.push(event_from_log(&versions, &log, revision, change)?);
        }
    }
    Ok(Chunk {
        events,
        upto,
        at_head: upto == head,
    })
}
