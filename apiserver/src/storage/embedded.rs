//! The embedded backend: an on-disk, single-node store inside the apiserver process, with
//! etcd's revision, watch and compaction semantics (see [`crate::storage`]).
//!
//! It is a [redb] database (one file, copy-on-write B-trees, MVCC) laid out as described in
//! [`schema`]. Writes go through one writer thread ([`writer`]) that commits whatever is queued
//! as one transaction with one fsync, so concurrent writers share the cost of durability; a
//! write is acknowledged only after its transaction committed. Reads open their own read
//! transaction on a blocking thread and never wait for the writer. Watches ([`watch`]) replay
//! the on-disk log, then follow the writer's broadcast of committed batches.
//!
//! ```text
//!   create/update/delete/compact ─► writer thread ─► redb (fsync) ─► broadcast ─► watch streams
//!   get/list ─────────────────────► read txn ◄──────────────────────── catch-up ──┘
//! ```
//!
//! Crash safety is redb's: a commit is atomic and durable once `commit` returns, and a database
//! left by a killed process is repaired when it is next opened. The current revision is stored
//! in the same transaction as the changes it numbers, so revisions never repeat across crashes.

mod schema;
mod watch;
mod writer;

use std::fmt;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase};
use tokio::sync::{broadcast, mpsc, oneshot};

use self::schema::{db_error, kv_at, meta, LIVE, LOG, META, META_COMPACTED, META_CURRENT};
use self::schema::{META_SWEPT, PUT, VERSIONS};
use self::writer::{Done, Op, Request, Writer, MAX_BATCH};
use super::{
    check_value_size, Event, Guard, KeyValue, ListOptions, ListResult, Result, Revision, Storage,
    StorageError, WatchStream,
};

/// The database file inside the store's directory.
const DB_FILE: &str = "edgefleet.redb";

/// Requests queued for the writer before callers wait for room.
const REQUEST_QUEUE: usize = 4 * MAX_BATCH;

/// Modes of the store's directory and database file: owner only.
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Memory redb may keep of the database's pages (its default is 1 GiB, which a store of large
/// objects fills with pages nobody reads again: the watch cache holds what is recent). Reads
/// beyond it go to the file, which the kernel's page cache holds as long as memory allows.
const PAGE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Committed batches kept in memory for watchers. A watcher that falls further behind reads
/// the difference back from disk, so this bounds memory, not correctness.
const WATCH_BUFFER_COMMITS: usize = 64;

/// Bytes of values (new and previous) a committed batch may carry in the broadcast. A larger
/// batch is announced without its events and watchers read them from the log, so the ring
/// holds at most `WATCH_BUFFER_COMMITS` times this (16 MiB), however large the objects: with
/// 1 MB objects it would otherwise keep 64 batches of 2 MB alive after writes stop.
const WATCH_BUFFER_COMMIT_BYTES: usize = 256 * 1024;

/// The embedded store. Dropping it stops the writer and, once its watch streams are gone too,
/// closes the database file.
pub struct EmbeddedStore {
    path: PathBuf,
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    commits: broadcast::Sender<Arc<Commit>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What readers, watchers and the writer share.
struct Shared {
    db: Database,
    /// The revision of the last commit.
    revision: AtomicI64,
    /// The revision of the last committed compaction.
    compacted: AtomicI64,
}

/// A committed batch, as broadcast to watchers.
struct Commit {
    /// The revision of the last event.
    revision: Revision,
    /// The batch's events; empty when they were too large to broadcast (`spilled`).
    events: Vec<Event>,
    /// The events are in the log only: a watcher reads them from there.
    spilled: bool,
}

impl Commit {
    /// The batch ending at `revision`, its events left out when they exceed
    /// [`WATCH_BUFFER_COMMIT_BYTES`].
    fn new(revision: Revision, events: Vec<Event>) -> Self {
        let bytes: usize = events
            .iter()
            .map(|e| e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()))
            .sum();
        if bytes > WATCH_BUFFER_COMMIT_BYTES {
            Commit {
                revision,
                events: Vec::new(),
                spilled: true,
            }
        } else {
            Commit {
                revision,
                events,
                spilled: false,
            }
        }
    }
}

/// The store was dropped while a request or watch was using it.
#[derive(Debug, thiserror::Error)]
#[error("the embedded store is closed")]
struct StoreClosed;

/// A blocking read task failed.
#[derive(Debug, thiserror::Error)]
#[error("embedded store read task failed")]
struct ReadTaskFailed(#[source] tokio::task::JoinError);

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the directory and the database if missing. A store
    /// left by a crashed process is repaired first, which reads the whole file.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        let unavailable = |e: std::io::Error| StorageError::Unavailable(Box::new(e));
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        // Every object is in there, token hashes and audit checkpoints too: owner only, as the
        // PKI and the audit trail are (a store made before this is tightened on open).
        std::fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))
            .map_err(unavailable)?;
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(&path)
            .map_err(db_error)?;
        std::fs::set_permissions(&path, Permissions::from_mode(PRIVATE_FILE_MODE))
            .map_err(unavailable)?;
        // The file may have just been created: make its directory entry durable too.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;

        let txn = db.begin_write().map_err(db_error)?;
        let (current, compacted, swept) = {
            // Opening creates the tables of a new database, so readers can rely on them.
            txn.open_table(LOG).map_err(db_error)?;
            txn.open_table(VERSIONS).map_err(db_error)?;
            txn.open_table(LIVE).map_err(db_error)?;
            let meta_table = txn.open_table(META).map_err(db_error)?;
            (
                meta(&meta_table, META_CURRENT)?,
                meta(&meta_table, META_COMPACTED)?,
                meta(&meta_table, META_SWEPT)?,
            )
        };
        txn.commit().map_err(db_error)?;

        let shared = Arc::new(Shared {
            db,
            revision: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
        });
        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let (commits, _) = broadcast::channel(WATCH_BUFFER_COMMITS);
        let writer = Writer::new(
            shared.clone(),
            requests_rx,
            commits.clone(),
            compacted,
            swept,
        );
        let writer = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        tracing::info!(path = %path.display(), revision = current, compacted, "opened embedded store");
        Ok(EmbeddedStore {
            path,
            shared,
            requests: Some(requests),
            commits,
            writer: Some(writer),
        })
    }

    async fn submit(&self, op: Op) -> Result<Done> {
        let closed = || StorageError::Unavailable(Box::new(StoreClosed));
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        let (reply, done) = oneshot::channel();
        requests
            .send(Request { op, reply })
            .await
            .map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        match self.submit(op).await? {
            Done::Written(kv) => Ok(kv),
            Done::Compacted => unreachable!("a key write is answered with the written value"),
        }
    }

    /// Runs `read` on a blocking thread with its own read transaction.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        blocking(move || read(&shared)).await
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered what is queued; waiting for
        // it releases the database file, so the directory can be opened again right away.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "embedded store writer panicked");
            }
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Unavailable(Box::new(ReadTaskFailed(e))))?
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.create_guarded(key, value, None).await
    }

    async fn create_guarded(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<Guard>,
    ) -> Result<KeyValue> {
        check_value_size(key, &value)?;
        self.write(Op::Create {
            key: key.to_string(),
            value,
            guard,
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |shared| {
            let txn = shared.db.begin_read().map_err(db_error)?;
            let live = txn.open_table(LIVE).map_err(db_error)?;
            let Some(revision) = live.get(key.as_str()).map_err(db_error)?.map(|r| r.value())
            else {
                return Ok(None);
            };
            let log = txn.open_table(LOG).map_err(db_error)?;
            kv_at(&log, &key, revision).map(Some)
        })
        .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.read(move |shared| list(shared, &prefix, &opts)).await
    }

    async fn update(&self, key: &str, expected: Revision, value: Bytes) -> Result<KeyValue> {
        check_value_size(key, &value)?;
        self.write(Op::Update {
            key: key.to_string(),
            expected,
            value,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribed before anything is read, so no commit falls between what the watcher
        // reads from disk and what it receives.
        let commits = self.commits.subscribe();
        // Refuse a compacted start right away rather than as the stream's first item.
        self.read(move |shared| {
            let txn = shared.db.begin_read().map_err(db_error)?;
            watch::check_compacted(&txn.open_table(META).map_err(db_error)?, after)
        })
        .await?;
        Ok(watch::stream(
            self.shared.clone(),
            prefix.to_string(),
            after,
            commits,
        ))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.submit(Op::Compact { revision }).await? {
            Done::Compacted => Ok(()),
            Done::Written(_) => unreachable!("compaction is answered without a value"),
        }
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }
}

/// A page of keys under `prefix`, read in one snapshot.
fn list(shared: &Shared, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let txn = shared.db.begin_read().map_err(db_error)?;
    let meta_table = txn.open_table(META).map_err(db_error)?;
    let current = meta(&meta_table, META_CURRENT)?;
    let compacted = meta(&meta_table, META_COMPACTED)?;
    // Like etcd, a revision of 0 (or less) reads the current state.
    let revision = match opts.revision {
        Some(revision) if revision > 0 => revision,
        _ => current,
    };
    if revision > current {
        return Err(StorageError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(StorageError::Compacted {
            requested: revision,
            compacted,
        });
    }
    let from = match &opts.start {
        Some(start) if start.as_str() > prefix => start.as_str(),
        _ => prefix,
    };
    let log = txn.open_table(LOG).map_err(db_error)?;
    let mut page = Page::new(opts.limit);
    if revision == current {
        // The live index has exactly the keys that exist now.
        let live = txn.open_table(LIVE).map_err(db_error)?;
        for entry in live.range(from..).map_err(db_error)? {
            let (key, mod_revision) = entry.map_err(db_error)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            page.offer(|| kv_at(&log, key, mod_revision.value()))?;
        }
    } else {
        // Every version of every key: for each key the last version at or before `revision`,
        // if that one is not a deletion.
        let versions = txn.open_table(VERSIONS).map_err(db_error)?;
        let mut key_seen: Option<String> = None;
        let mut visible: Option<(Revision, u8)> = None;
        let flush = |key: &Option<String>, visible: Option<(Revision, u8)>, page: &mut Page| match (
            key, visible,
        ) {
            (Some(key), Some((mod_revision, PUT))) => page.offer(|| kv_at(&log, key, mod_revision)),
            _ => Ok(()),
        };
        for entry in versions.range((from, 0_i64)..).map_err(db_error)? {
            let (version, kind) = entry.map_err(db_error)?;
            let (key, mod_revision) = version.value();
            if !key.starts_with(prefix) {
                break;
            }
            if key_seen.as_deref() != Some(key) {
                flush(&key_seen, visible.take(), &mut page)?;
                key_seen = Some(key.to_string());
            }
            if mod_revision <= revision {
                visible = Some((mod_revision, kind.value()));
            }
        }
        flush(&key_seen, visible, &mut page)?;
    }
    Ok(page.finish(revision))
}

/// Collects up to `limit` items and counts the keys after them.
struct Page {
    limit: usize,
    items: Vec<KeyValue>,
    remaining: i64,
}

impl Page {
    fn new(limit: usize) -> Self {
        Page {
            limit,
            items: Vec::new(),
            remaining: 0,
        }
    }

    /// Takes the item if the page has room (reading its value only then), else counts it.
    fn offer(&mut self, read: impl FnOnce() -> Result<KeyValue>) -> Result<()> {
        if self.limit == 0 || self.items.len() < self.limit {
            self.items.push(read()?);
        } else {
            self.remaining += 1;
        }
        Ok(())
    }

    fn finish(self, revision: Revision) -> ListResult {
        ListResult {
            items: self.items,
            revision,
            more: self.remaining > 0,
            remaining: Some(self.remaining),
        }
    }
}

#[cfg(test)]
mod tests;
