//! Storage: a revisioned key-value store with watch, the contract every backend meets.
//!
//! The data model is etcd's. Every successful write advances one global **revision** (a
//! positive `i64`, starting after 0). A key's value carries the revision that created it and the
//! revision that last modified it; an object's `resourceVersion` is its `mod_revision`.
//!
//! ```text
//!  rev:   1        2          3          4
//!        create a  create b   update a   delete b
//!  list at 2 → {a@1, b@2}    list at 4 → {a@3}
//!  watch after 1 → [b created @2, a updated @3 (prev a@1), b deleted @4 (last b@2)]
//! ```
//!
//! History is kept until it is **compacted**: after `compact(c)`, reads at revisions `< c` and
//! watches that would have to replay events before `c` fail with [`StorageError::Compacted`],
//! which the apiserver reports as `410 Gone`. Keys handed to a backend are logical
//! (`edgefleet.io/clusters/retail/edge-1`); a backend may prepend its own prefix.
//!
//! Two backends implement [`Storage`] and pass one conformance suite
//! (`tests/src/conformance.rs`): [`etcd`] and [`embedded`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod compactor;
pub mod embedded;
pub mod etcd;

/// The largest value a backend stores: etcd's default `--max-request-bytes` (1.5 MiB), which
/// is also what kube-apiserver's objects are held to. An etcd request carries the key and some
/// framing besides, so etcd refuses values a little smaller; either way the write fails with
/// [`StorageError::TooLarge`].
pub const MAX_VALUE_BYTES: usize = 3 * 512 * 1024;

/// Refuses a value over [`MAX_VALUE_BYTES`] before it is written (both backends: etcd would
/// refuse it too, and the embedded store keeps etcd's limit so a hub behaves alike on both).
pub(crate) fn check_value_size(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StorageError::TooLarge {
            key: key.to_string(),
            size: value.len(),
        });
    }
    Ok(())
}

/// A store revision; `0` means "before anything was written".
pub type Revision = i64;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One key at one revision.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What a list reads.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Read at this revision; `None` reads the current state (a linearizable read).
    pub revision: Option<Revision>,
    /// First key to return (inclusive), for continuing a paginated list; must lie under the prefix.
    pub start: Option<String>,
    /// At most this many items; `0` means no limit.
    pub limit: usize,
}

/// A page of keys, in ascending key order.
#[derive(Clone, Debug)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at (the current revision when none was asked for).
    pub revision: Revision,
    /// Whether keys after the last item exist at that revision.
    pub more: bool,
    /// How many keys after the last item exist, when the backend knows it cheaply.
    pub remaining: Option<i64>,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// A change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// Created/Updated: the new key-value. Deleted: the last value the key held, with
    /// `mod_revision` set to the revision of the deletion.
    pub kv: KeyValue,
    /// Updated: the value before the update. Otherwise `None`.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// An item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// The store has reached this revision and every event under the prefix up to it has been
    /// delivered. Backends send it when they know (embedded: after each commit that touched
    /// other keys; etcd: progress notifications); a consumer must not depend on its timing.
    Progress(Revision),
}

/// Events under a prefix, in revision order, without gaps or duplicates. The stream ends with an
/// `Err` if it cannot go on (e.g. [`StorageError::Compacted`] when a slow watcher fell behind
/// compaction); the consumer then re-lists.
pub type WatchStream = BoxStream<'static, Result<WatchItem>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    /// A compare-and-swap precondition failed; `current` is the key's present value.
    #[error("key {key:?} has mod revision {}, not the expected {expected}", current.mod_revision)]
    Conflict {
        key: String,
        expected: Revision,
        current: Box<KeyValue>,
    },
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The value is larger than the backend takes ([`MAX_VALUE_BYTES`], or etcd's own limit).
    #[error("the value of key {key:?} is too large to store ({size} bytes)")]
    TooLarge { key: String, size: usize },
    #[error("storage is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage data is corrupt: {0}")]
    Corrupt(String),
}

/// The storage contract. Every method is atomic; every write is durable when it returns `Ok`.
/// A write of a value larger than [`MAX_VALUE_BYTES`] fails with [`StorageError::TooLarge`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates `key`. Fails with `AlreadyExists` if it exists. The same as
    /// [`create_guarded`](Storage::create_guarded) without a guard.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Creates `key` only while `guard` holds, atomically: no write to the guard key can fall
    /// between the check and the create. This is how an object is created only in an
    /// Environment that was not changed (marked for deletion, deleted) meanwhile.
    ///
    /// The create fails, writing nothing, with the first of these that applies:
    /// 1. `AlreadyExists` (naming `key`) when `key` exists — whatever the guard says, since no
    ///    fresher guard would make that create succeed;
    /// 2. `NotFound` naming the guard key when it is absent;
    /// 3. `Conflict` naming the guard key, carrying its current value, when its `mod_revision`
    ///    is not the guard's.
    async fn create_guarded(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<Guard>,
    ) -> Result<KeyValue>;

    /// The current value of `key`, if any (a linearizable read).
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` (a plain string prefix), in key order. Fails with `Compacted` for a
    /// revision older than the compacted one, `FutureRevision` for one not reached yet.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Compare-and-swap: replaces the value of `key` if its `mod_revision` is `expected`.
    /// Fails with `Conflict` (carrying the current value) if it is not, `NotFound` if the key is
    /// absent.
    async fn update(&self, key: &str, expected: Revision, value: Bytes) -> Result<KeyValue>;

    /// Deletes `key`, only if its `mod_revision` is `expected` when given. Returns the deleted
    /// value with `mod_revision` set to the deletion's revision. Fails like `update`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Every event under `prefix` with a revision greater than `after`, then live events.
    /// Fails with `Compacted` if events after `after` are no longer all available
    /// (`after + 1 < compacted revision`).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards history older than `revision`: afterwards reads at revisions `>= revision` still
    /// work. Compacting to a revision at or below the last compaction is a no-op.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision history was last compacted to (`0`: never), as far as this process knows:
    /// reads below it fail with `Compacted`. The watch cache lets go of what it holds below it.
    /// The embedded store always knows; etcd knows the compactions made through this process
    /// and those a response reported (another replica's show up there first).
    fn compacted_revision(&self) -> Revision;
}

/// A precondition on another key: it exists with this `mod_revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub key: String,
    pub mod_revision: Revision,
}

/// What `update_with` should do with the current value.
pub enum Update {
    /// Write this value (compare-and-swap against the value read).
    Put(Bytes),
    /// Leave the key as it is.
    Unchanged,
}

/// A read-modify-write that retries on `Conflict` (Kubernetes' `GuaranteedUpdate`): `f` sees
/// the current value and decides; a conflicting concurrent write makes it run again on the newer
/// value. Errors of `f` end the loop and are returned as they are.
pub async fn update_with<E, F>(store: &dyn Storage, key: &str, mut f: F) -> Result<KeyValue, E>
where
    E: From<StorageError>,
    F: FnMut(&KeyValue) -> Result<Update, E>,
{
    let mut current = store
        .get(key)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            key: key.to_string(),
        })?;
    loop {
        match f(&current)? {
            Update::Unchanged => return Ok(current),
            Update::Put(value) => match store.update(key, current.mod_revision, value).await {
                Ok(kv) => return Ok(kv),
                Err(StorageError::Conflict { current: newer, .. }) => current = *newer,
                Err(other) => return Err(other.into()),
            },
        }
    }
}

/// A shared, type-erased backend.
pub type DynStorage = Arc<dyn Storage>;
