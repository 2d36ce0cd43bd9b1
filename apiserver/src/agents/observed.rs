//! What the hub last heard from each agent, in memory, for the controllers.
//!
//! The status controller ([`super::status`]) is the only writer: on every session event and
//! every facts line that differs from the previous one (heartbeats are not changes). Any number
//! of readers subscribe; each has its own set of identities changed since it last looked, so a
//! reader that is busy (or not leading, and not looking) costs one entry per cluster, never a
//! queue per change.
//!
//! ```text
//!   status controller ──update(identity)──► map: identity → Observed
//!                                           └─► every feed: dirty += identity; notify
//!   feed.take() ──► the identities changed since the last take (then read them with get())
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use edgefleet_api::agent::ClusterFacts;
use tokio::sync::Notify;

/// One agent, as last heard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Whether its tunnel is up now.
    pub connected: bool,
    /// The session the facts came over (0 before the first).
    pub session_id: u64,
    /// Its latest facts on that session; `None` until the first line arrives.
    pub facts: Option<ClusterFacts>,
}

/// The shared observations. Cheap to clone.
#[derive(Clone, Default)]
pub struct Observations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    map: Mutex<HashMap<Arc<str>, Observed>>,
    feeds: Mutex<Vec<Arc<FeedState>>>,
}

#[derive(Default)]
struct FeedState {
    dirty: Mutex<HashSet<Arc<str>>>,
    notify: Notify,
}

/// One reader's view of what changed.
pub struct Feed {
    state: Arc<FeedState>,
    observations: Observations,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Observations {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest observation of `identity`.
    pub fn get(&self, identity: &str) -> Option<Observed> {
        lock(&self.inner.map).get(identity).cloned()
    }

    /// Changes `identity`'s observation with `f`; readers hear of it when `f` says it changed.
    pub fn update(&self, identity: &Arc<str>, f: impl FnOnce(&mut Observed) -> bool) {
        let changed = {
            let mut map = lock(&self.inner.map);
            f(map.entry(identity.clone()).or_default())
        };
        if changed {
            for feed in lock(&self.inner.feeds).iter() {
                lock(&feed.dirty).insert(identity.clone());
                feed.notify.notify_one();
            }
        }
    }

    /// A new reader; every identity known now counts as changed for it.
    pub fn subscribe(&self) -> Feed {
        let state = Arc::new(FeedState::default());
        lock(&state.dirty).extend(lock(&self.inner.map).keys().cloned());
        state.notify.notify_one();
        lock(&self.inner.feeds).push(state.clone());
        Feed {
            state,
            observations: self.clone(),
        }
    }
}

impl Feed {
    /// The identities changed since the last call.
    pub fn take(&self) -> Vec<Arc<str>> {
        lock(&self.state.dirty).drain().collect()
    }

    /// Waits until something changed since the last [`Feed::take`].
    pub async fn changed(&self) {
        if !lock(&self.state.dirty).is_empty() {
            return;
        }
        self.state.notify.notified().await;
    }

    pub fn observations(&self) -> &Observations {
        &self.observations
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        lock(&self.observations.inner.feeds).retain(|f| !Arc::ptr_eq(f, &self.state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_reader_sees_each_change_once_and_unchanged_updates_not_at_all() {
        let obs = Observations::new();
        let a: Arc<str> = "cluster:e/a".into();
        obs.update(&a, |o| {
            o.connected = true;
            true
        });
        let feed = obs.subscribe();
        feed.changed().await;
        assert_eq!(feed.take(), vec![a.clone()], "known before subscribing");
        obs.update(&a, |_| false);
        assert!(feed.take().is_empty());
        let other = obs.subscribe();
        other.take();
        obs.update(&a, |o| {
            o.session_id = 2;
            true
        });
        obs.update(&a, |o| {
            o.session_id = 3;
            true
        });
        assert_eq!(feed.take(), vec![a.clone()], "coalesced");
        assert_eq!(other.take(), vec![a.clone()]);
        assert_eq!(obs.get(&a).unwrap().session_id, 3);
        drop(other);
        assert_eq!(lock(&obs.inner.feeds).len(), 1);
    }
}
