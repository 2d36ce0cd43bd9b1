//! The watch cache: one storage watch per resource, fanned out to any number of watchers.
//!
//! One reflector task (the only writer) lists the resource, then follows a storage watch and
//! applies every event to an in-memory copy of the objects and to a bounded window of recent
//! events. Watchers and lists read from it through short critical sections; they never touch
//! storage, so thousands of agents and controllers cost one etcd watch.
//!
//! ```text
//!                 ┌──────────── reflector (writer) ────────────┐
//!   storage ──────► Listing ──► Watching ──(stream ends)──► Listing ...
//!                 └───────┬────────────────────────────────────┘
//!                         ▼ applies under a write lock, then bumps `revision_tx`
//!        State { objects: key → object, events: [horizon+1 ..= revision], revision }
//!                         ▲ read locks
//!        watchers: events_after(position) → (events, revision); wait on revision_tx
//! ```
//!
//! Invariant: every event under the prefix with a revision in `(horizon, revision]` is in
//! `events`, in order. A watcher whose position falls below `horizon` can no longer be served
//! from memory ([`CacheError::TooOld`]); the caller falls back to a storage watch or answers 410.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::storage::{
    DynStorage, EventKind, KeyValue, ListOptions, Revision, StorageError, WatchItem,
};

/// Events kept in memory for watchers that resume (kube's watch cache keeps a similar window).
pub const DEFAULT_EVENT_WINDOW: usize = 10_000;
/// Page size of the reflector's list, to keep each storage response small.
const LIST_PAGE: usize = 500;
/// Wait after a failed list or a broken watch before listing again.
const RELIST_BACKOFF: Duration = Duration::from_millis(500);
const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// An object as stored, decoded once for all readers.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub mod_revision: Revision,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The object's JSON with `metadata.resourceVersion` set.
    pub json: Bytes,
}

/// A change to one object.
#[derive(Debug)]
pub struct CachedEvent {
    pub kind: EventKind,
    pub revision: Revision,
    /// The object after the change; for `Deleted`, its last state.
    pub object: Arc<CachedObject>,
    /// For `Updated`, the object before the change.
    pub prev: Option<Arc<CachedObject>>,
}

/// Turns a stored key-value into a [`CachedObject`].
pub type Decoder = Arc<dyn Fn(&KeyValue) -> Result<CachedObject, String> + Send + Sync>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    /// The events after the position have left the window.
    #[error("too old resource version: {requested} ({horizon})")]
    TooOld {
        requested: Revision,
        horizon: Revision,
    },
    /// The cache did not reach the revision in time.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooNew {
        requested: Revision,
        current: Revision,
    },
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    events: VecDeque<Arc<CachedEvent>>,
    revision: Revision,
    horizon: Revision,
    ready: bool,
}

/// A consistent view of the objects at one revision.
pub struct Snapshot {
    pub objects: Vec<Arc<CachedObject>>,
    pub revision: Revision,
}

/// The watch cache of one resource. Cheap to clone.
#[derive(Clone)]
pub struct Cacher {
    state: Arc<RwLock<State>>,
    revision_rx: watch::Receiver<Revision>,
}

/// The single writer of a [`Cacher`].
struct Reflector {
    state: Arc<RwLock<State>>,
    revision_tx: watch::Sender<Revision>,
    store: DynStorage,
    prefix: String,
    decode: Decoder,
    window: usize,
}

/// The reflector's state machine.
enum Phase {
    /// Read everything under the prefix at one revision and replace the cache with it.
    Listing,
    /// Follow storage events from this revision.
    Watching(Revision),
    /// Wait before listing again.
    Backoff(Duration),
}

impl Cacher {
    /// Starts the reflector for `prefix` on the current runtime.
    pub fn start(store: DynStorage, prefix: String, decode: Decoder, window: usize) -> Self {
        let (revision_tx, revision_rx) = watch::channel(0);
        let state = Arc::new(RwLock::new(State::default()));
        let reflector = Reflector {
            state: state.clone(),
            revision_tx,
            store,
            prefix,
            decode,
            window,
        };
        tokio::spawn(reflector.run());
        Cacher { state, revision_rx }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.read().revision
    }

    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// A receiver that changes whenever the cache advances.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.revision_rx.clone()
    }

    /// Waits until the cache reflects at least `revision`, for at most `timeout`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> Result<(), CacheError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            {
                let st = self.read();
                if st.ready && st.revision >= revision {
                    return Ok(());
                }
            }
            let current = self.revision();
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(CacheError::TooNew {
                        requested: revision,
                        current,
                    })
                }
            }
        }
    }

    /// The objects whose key starts with `prefix`, at the cache's revision.
    pub fn snapshot(&self, prefix: &str) -> Snapshot {
        let st = self.read();
        let objects = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect();
        Snapshot {
            objects,
            revision: st.revision,
        }
    }

    /// One object by key.
    pub fn get(&self, key: &str) -> (Option<Arc<CachedObject>>, Revision) {
        let st = self.read();
        (st.objects.get(key).cloned(), st.revision)
    }

    /// The events after `position`, and the revision up to which the answer is complete: when no
    /// events are returned, nothing happened under the prefix in `(position, revision]`.
    pub fn events_after(
        &self,
        position: Revision,
    ) -> Result<(Vec<Arc<CachedEvent>>, Revision), CacheError> {
        let st = self.read();
        if !st.ready || position < st.horizon {
            return Err(CacheError::TooOld {
                requested: position,
                horizon: st.horizon,
            });
        }
        let start = st.events.partition_point(|e| e.revision <= position);
        Ok((st.events.range(start..).cloned().collect(), st.revision))
    }
}

impl Reflector {
    async fn run(self) {
        let mut phase = Phase::Listing;
        let mut backoff = RELIST_BACKOFF;
        loop {
            phase = match phase {
                Phase::Listing => match self.list().await {
                    Ok(revision) => {
                        backoff = RELIST_BACKOFF;
                        Phase::Watching(revision)
                    }
                    Err(err) => {
                        tracing::warn!(prefix = %self.prefix, %err, "watch cache: list failed");
                        Phase::Backoff(backoff)
                    }
                },
                Phase::Watching(revision) => {
                    if let Err(err) = self.watch(revision).await {
                        tracing::warn!(prefix = %self.prefix, %err, "watch cache: watch ended; relisting");
                    }
                    Phase::Backoff(backoff)
                }
                Phase::Backoff(delay) => {
                    if self.revision_tx.is_closed() && Arc::strong_count(&self.state) == 1 {
                        return; // every Cacher handle is gone
                    }
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
                    Phase::Listing
                }
            };
        }
    }

    /// Lists in pages at one revision and replaces the cached state.
    async fn list(&self) -> Result<Revision, StorageError> {
        let mut objects = BTreeMap::new();
        let mut opts = ListOptions {
            limit: LIST_PAGE,
            ..Default::default()
        };
        let revision = loop {
            let page = self.store.list(&self.prefix, opts.clone()).await?;
            for kv in &page.items {
                match (self.decode)(kv) {
                    Ok(obj) => {
                        objects.insert(kv.key.clone(), Arc::new(obj));
                    }
                    Err(err) => {
                        tracing::error!(key = %kv.key, %err, "watch cache: undecodable object skipped")
                    }
                }
            }
            match (page.more, page.items.last()) {
                (true, Some(last)) => {
                    opts.revision = Some(page.revision);
                    opts.start = Some(format!("{}\u{0}", last.key));
                }
                _ => break page.revision,
            }
        };
        {
            let mut st = self
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.objects = objects;
            st.events.clear();
            st.revision = revision;
            st.horizon = revision;
            st.ready = true;
        }
        self.revision_tx.send_replace(revision);
        Ok(revision)
    }

    async fn watch(&self, from: Revision) -> Result<(), StorageError> {
        let mut stream = self.store.watch(&self.prefix, from).await?;
        while let Some(item) = stream.next().await {
            let revision = match item? {
                WatchItem::Event(event) => {
                    let revision = event.revision();
                    let object = match (self.decode)(&event.kv) {
                        Ok(obj) => Arc::new(obj),
                        Err(err) => {
                            tracing::error!(key = %event.kv.key, %err, "watch cache: undecodable event skipped");
                            continue;
                        }
                    };
                    self.apply(event.kind, revision, object);
                    revision
                }
                WatchItem::Progress(revision) => {
                    let mut st = self
                        .state
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    st.revision = st.revision.max(revision);
                    st.revision
                }
            };
            self.revision_tx.send_replace(revision);
        }
        Err(StorageError::Unavailable("watch stream ended".into()))
    }

    fn apply(&self, kind: EventKind, revision: Revision, object: Arc<CachedObject>) {
        let mut st = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prev = match kind {
            EventKind::Deleted => st.objects.remove(&object.key),
            EventKind::Created | EventKind::Updated => {
                st.objects.insert(object.key.clone(), object.clone())
            }
        };
        let prev = if kind == EventKind::Updated {
            prev
        } else {
            None
        };
        st.events.push_back(Arc::new(CachedEvent {
            kind,
            revision,
            object,
            prev,
        }));
        while st.events.len() > self.window {
            if let Some(evicted) = st.events.pop_front() {
                st.horizon = evicted.revision;
            }
        }
        st.revision = revision;
    }
}
