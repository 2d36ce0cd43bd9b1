//! One watch request: a task that turns cache events into the frames a client sees.
//!
//! ```text
//!           ┌── rv unset ──► initial ADDED events from a consistent storage list ─┐
//!  start ───┼── rv = 0   ──► initial ADDED events from the cache ─────────────────┼─► follow
//!           └── rv = N   ──► no initial events ───────────────────────────────────┘
//!
//!  follow: events after `position` from the cache window; when the window has moved past
//!          `position`, an ERROR 410 Expired (as kube's watch cache answers; the client lists
//!          again); BOOKMARKs while idle; ends at the timeout or when the client goes away.
//! ```
//!
//! A watch never reads history from storage: how far back it can resume is the cache
//! window's bound (see [`super::cacher`]), so one viewer cannot make the hub replay a long
//! history, and thousands of watchers cost one storage watch.
//!
//! Filtering follows kube's cacher: an update that makes an object match is an `ADDED`, one that
//! makes it stop matching is a `DELETED` (of its previous state, at the event's revision).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cacher::{CacheError, CachedEvent, CachedObject};
use super::object::set_meta;
use super::{Filter, Resource};
use crate::errors::ApiError;
use crate::storage::{EventKind, Revision};

/// Interval between bookmarks to an idle watcher (kube sends them about once a minute).
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);
/// Frames buffered per watcher before the watcher waits for its client.
const FRAME_BUFFER: usize = 64;

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// `resourceVersion` unset: initial events from a consistent read, then changes.
    Consistent,
    /// `resourceVersion=0`: initial events from the cache's current state, then changes.
    Any,
    /// `resourceVersion=N`: changes after N only.
    After(Revision),
}

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub namespace: String,
    pub filter: Filter,
    pub start: WatchStart,
    /// Send the initial state as ADDED events (false with `sendInitialEvents=false`).
    pub initial_events: bool,
    /// After the initial events, send a bookmark annotated `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// What a watcher sends to its client.
#[derive(Debug)]
pub enum Frame {
    Event {
        kind: &'static str,
        object: Arc<CachedObject>,
    },
    Bookmark {
        revision: Revision,
        initial_events_end: bool,
    },
    /// Ends the stream (e.g. 410 Expired).
    Error(ApiError),
}

struct Watcher {
    resource: Arc<Resource>,
    opts: WatchOptions,
    prefix: String,
    tx: mpsc::Sender<Frame>,
}

/// The client went away.
struct Closed;

impl Resource {
    /// Starts a watch; frames arrive on the returned channel until it closes.
    pub async fn watch(
        self: &Arc<Self>,
        opts: WatchOptions,
    ) -> Result<mpsc::Receiver<Frame>, ApiError> {
        let prefix = self.list_prefix(&opts.namespace);
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        let watcher = Watcher {
            resource: self.clone(),
            prefix,
            opts,
            tx,
        };
        let (position, initial) = watcher.initial_state().await?;
        tokio::spawn(async move {
            let _ = watcher.run(position, initial).await;
        });
        Ok(rx)
    }
}

impl Watcher {
    /// The starting position and the objects to send as ADDED first.
    async fn initial_state(&self) -> Result<(Revision, Vec<Arc<CachedObject>>), ApiError> {
        let cacher = self.resource.cacher();
        match self.opts.start {
            WatchStart::After(revision) => {
                cacher
                    .wait_for(revision, Duration::from_secs(3))
                    .await
                    .map_err(super::read::cache_error)?;
                Ok((revision, Vec::new()))
            }
            WatchStart::Any => {
                cacher
                    .wait_for(0, Duration::from_secs(3))
                    .await
                    .map_err(super::read::cache_error)?;
                let snapshot = cacher.snapshot(&self.prefix);
                let objects = if self.opts.initial_events {
                    snapshot.objects
                } else {
                    Vec::new()
                };
                Ok((snapshot.revision, objects))
            }
            WatchStart::Consistent => {
                let list = self
                    .resource
                    .list(&super::ListOptions {
                        namespace: self.opts.namespace.clone(),
                        ..Default::default()
                    })
                    .await?;
                let objects = if self.opts.initial_events {
                    list.items
                } else {
                    Vec::new()
                };
                Ok((list.revision, objects))
            }
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), Closed> {
        self.tx.send(frame).await.map_err(|_| Closed)
    }

    async fn run(
        self,
        mut position: Revision,
        initial: Vec<Arc<CachedObject>>,
    ) -> Result<(), Closed> {
        for object in initial.into_iter().filter(|o| self.opts.filter.matches(o)) {
            self.send(Frame::Event {
                kind: "ADDED",
                object,
            })
            .await?;
        }
        if self.opts.initial_events_end {
            self.send(Frame::Bookmark {
                revision: position,
                initial_events_end: true,
            })
            .await?;
        }
        let deadline = Instant::now() + self.opts.timeout;
        let mut next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
        let cacher = self.resource.cacher().clone();
        let mut changed = cacher.subscribe();
        loop {
            match cacher.events_after(position) {
                Err(err @ CacheError::TooOld { .. }) => {
                    return self.send(Frame::Error(super::read::cache_error(err))).await
                }
                Err(CacheError::TooNew { .. }) => unreachable!("events_after never reports TooNew"),
                Ok((events, revision)) if events.is_empty() => {
                    let caught_up = revision.max(position);
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = tokio::time::sleep_until(next_bookmark) => {
                            next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                            if self.opts.bookmarks {
                                position = caught_up;
                                self.send(Frame::Bookmark { revision: position, initial_events_end: false }).await?;
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => return Ok(()),
                        _ = self.tx.closed() => return Err(Closed),
                    }
                }
                Ok((events, _)) => {
                    for event in events {
                        if let Some(frame) = self.frame_for(&event) {
                            self.send(frame).await?;
                        }
                        position = event.revision;
                    }
                }
            }
        }
    }

    /// The frame a watcher with this filter sees for `event`, if any.
    fn frame_for(&self, event: &CachedEvent) -> Option<Frame> {
        if !event.object.key.starts_with(&self.prefix) {
            return None;
        }
        let filter = &self.opts.filter;
        let now = filter.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| filter.matches(p));
        let (kind, object) = match event.kind {
            EventKind::Created if now => ("ADDED", event.object.clone()),
            EventKind::Deleted if now => ("DELETED", event.object.clone()),
            EventKind::Updated if now && before => ("MODIFIED", event.object.clone()),
            EventKind::Updated if now => ("ADDED", event.object.clone()),
            EventKind::Updated if before => (
                "DELETED",
                self.at_revision(event.prev.as_ref()?, event.revision)?,
            ),
            _ => return None,
        };
        Some(Frame::Event { kind, object })
    }

    /// The previous state of an object, stamped with the revision of the event that removed it
    /// from this watcher's view.
    fn at_revision(&self, obj: &CachedObject, revision: Revision) -> Option<Arc<CachedObject>> {
        let mut value: serde_json::Value = serde_json::from_slice(&obj.json).ok()?;
        set_meta(&mut value, "resourceVersion", revision.to_string());
        self.resource.as_cached(&value).ok()
    }
}
