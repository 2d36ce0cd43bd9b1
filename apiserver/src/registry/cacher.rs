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
//!        State { objects: key → object, window: events (horizon ..= revision], revision }
//!                         ▲ read locks
//!        watchers: events_after(position) → (events, revision); wait on revision_tx
//! ```
//!
//! Invariant: every event under the prefix with a revision in `(horizon, revision]` is in
//! `events`, in order. A watcher whose position falls below `horizon` can no longer be served
//! ([`CacheError::TooOld`]) and is answered `410 Gone`, as kube's watch cache answers it; the
//! client lists again.
//!
//! The window of events is bounded four ways ([`WindowLimits`] and storage), and the oldest
//! events leave first, moving `horizon` up to the revision of the last one that left:
//!
//! | bound | checked | why |
//! |---|---|---|
//! | `max_bytes` of objects the events hold (event and previous state, counted apart even when shared) | on every event | objects run up to 1.5 MiB: a count alone lets a few writers hold gigabytes |
//! | `max_age` since the event arrived | on every event, and every [`WINDOW_SWEEP_INTERVAL`] | memory goes back when writes stop |
//! | revisions below storage's compaction | likewise | a watch never resumes from history storage no longer has, and that memory is let go |
//! | `max_events` | on every event | bounds the bookkeeping of tiny objects |
//!
//! The byte bound never drops the newest event, whatever its size, so that a watcher that is
//! keeping up is not sent away because one object is large.

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

/// How much history the cache keeps for watchers that resume; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimits {
    pub max_events: usize,
    /// What the events' objects may hold in memory, in bytes ([`CachedEvent::retained_bytes`]).
    pub max_bytes: usize,
    /// How long an event is kept after it arrived.
    pub max_age: Duration,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            max_events: DEFAULT_WINDOW_EVENTS,
            max_bytes: DEFAULT_WINDOW_BYTES,
            max_age: DEFAULT_WINDOW_AGE,
        }
    }
}

/// Events kept per resource at most (kube's watch cache grows to a similar count).
pub const DEFAULT_WINDOW_EVENTS: usize = 10_000;
/// Bytes of objects kept per resource at most: about 20 revisions of objects at the 1.5 MiB
/// storage limit, thousands of ordinary ones.
pub const DEFAULT_WINDOW_BYTES: usize = 32 * 1024 * 1024;
/// Age of the oldest event kept: the default compaction interval, so that the cache does not
/// promise more history than storage keeps by default.
pub const DEFAULT_WINDOW_AGE: Duration = crate::storage::compactor::DEFAULT_COMPACTION_INTERVAL;
/// How often the reflector lets go of events that aged out or were compacted while no new
/// event came.
pub const WINDOW_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// What an object costs beyond its JSON and strings (allocations, the struct, its `Arc`), and
/// each label beyond its two strings (a map node), as counted against `max_bytes`.
const OBJECT_OVERHEAD_BYTES: usize = 160;
const LABEL_OVERHEAD_BYTES: usize = 64;
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

impl CachedObject {
    /// What holding this object costs in memory, roughly.
    pub fn retained_bytes(&self) -> usize {
        let labels: usize = self
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + LABEL_OVERHEAD_BYTES)
            .sum();
        self.json.len()
            + self.key.len()
            + self.name.len()
            + self.namespace.len()
            + labels
            + OBJECT_OVERHEAD_BYTES
    }
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

impl CachedEvent {
    /// What the event holds in memory: the object and its previous state, each counted in
    /// full (the previous state is often the object of the event before, so this is an upper
    /// bound, which is what a limit needs).
    pub fn retained_bytes(&self) -> usize {
        self.object.retained_bytes() + self.prev.as_ref().map_or(0, |p| p.retained_bytes())
    }
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
    window: Window,
    revision: Revision,
    ready: bool,
}

/// The events kept for resuming watchers, oldest first; see the module docs.
#[derive(Default)]
struct Window {
    events: VecDeque<Held>,
    /// Every event with a revision above this is in `events`.
    horizon: Revision,
    /// Sum of the events' `bytes`.
    bytes: usize,
}

/// One event of the window, with what its bounds are checked against.
struct Held {
    event: Arc<CachedEvent>,
    arrived: Instant,
    bytes: usize,
}

impl Window {
    /// A window that starts empty after `revision` (a fresh list).
    fn after(revision: Revision) -> Self {
        Window {
            horizon: revision,
            ..Window::default()
        }
    }

    /// Adds the newest event, then lets go of what the bounds no longer allow.
    fn push(
        &mut self,
        event: Arc<CachedEvent>,
        now: Instant,
        compacted: Revision,
        limits: &WindowLimits,
    ) {
        let bytes = event.retained_bytes();
        self.bytes += bytes;
        self.events.push_back(Held {
            event,
            arrived: now,
            bytes,
        });
        while self.events.len() > limits.max_events
            || (self.bytes > limits.max_bytes && self.events.len() > 1)
        {
            self.pop();
        }
        self.expire(now, compacted, limits);
    }

    /// Lets go of events older than `max_age` and of those below `compacted`.
    fn expire(&mut self, now: Instant, compacted: Revision, limits: &WindowLimits) {
        while let Some(oldest) = self.events.front() {
            let aged = now.saturating_duration_since(oldest.arrived) > limits.max_age;
            if !aged && oldest.event.revision >= compacted {
                break;
            }
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(held) = self.events.pop_front() {
            self.horizon = held.event.revision;
            self.bytes -= held.bytes;
        }
        if self.events.is_empty() {
            // Give back the ring's buffer too after a burst.
            self.events.shrink_to_fit();
        }
    }

    /// The events after `position`; `None` when some of them have left the window.
    fn after_position(&self, position: Revision) -> Option<Vec<Arc<CachedEvent>>> {
        if position < self.horizon {
            return None;
        }
        let start = self
            .events
            .partition_point(|h| h.event.revision <= position);
        Some(
            self.events
                .range(start..)
                .map(|h| h.event.clone())
                .collect(),
        )
    }
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
    limits: WindowLimits,
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
    pub fn start(store: DynStorage, prefix: String, decode: Decoder, limits: WindowLimits) -> Self {
        let (revision_tx, revision_rx) = watch::channel(0);
        let state = Arc::new(RwLock::new(State::default()));
        let reflector = Reflector {
            state: state.clone(),
            revision_tx,
            store,
            prefix,
            decode,
            limits,
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
        match st.window.after_position(position).filter(|_| st.ready) {
            Some(events) => Ok((events, st.revision)),
            None => Err(CacheError::TooOld {
                requested: position,
                horizon: st.window.horizon,
            }),
        }
    }

    /// Bytes and number of the events held for resuming watchers.
    pub fn window_usage(&self) -> (usize, usize) {
        let st = self.read();
        (st.window.bytes, st.window.events.len())
    }
}

#[cfg(test)]
mod tests;

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
            st.window = Window::after(revision);
            st.revision = revision;
            st.ready = true;
        }
        self.revision_tx.send_replace(revision);
        Ok(revision)
    }

    async fn watch(&self, from: Revision) -> Result<(), StorageError> {
        let mut stream = self.store.watch(&self.prefix, from).await?;
        let mut sweep = tokio::time::interval(WINDOW_SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                item = stream.next() => match item {
                    Some(item) => item,
                    None => break,
                },
                _ = sweep.tick() => {
                    let compacted = self.store.compacted_revision();
                    self.write().window.expire(Instant::now(), compacted, &self.limits);
                    continue;
                }
            };
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
                    let mut st = self.write();
                    st.revision = st.revision.max(revision);
                    st.revision
                }
            };
            self.revision_tx.send_replace(revision);
        }
        Err(StorageError::Unavailable("watch stream ended".into()))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, kind: EventKind, revision: Revision, object: Arc<CachedObject>) {
        let compacted = self.store.compacted_revision();
        let mut st = self.write();
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
        let event = Arc::new(CachedEvent {
            kind,
            revision,
            object,
            prev,
        });
        st.window
            .push(event, Instant::now(), compacted, &self.limits);
        st.revision = revision;
    }
}
