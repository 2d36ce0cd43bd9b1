//! Periodic compaction, the way kube-apiserver does it (`--etcd-compaction-interval`).
//!
//! Each tick compacts to the revision observed at the *previous* tick, so at least one interval
//! of history always stays available to watchers and paginated lists:
//!
//! ```text
//!   tick 0 (t)       tick 1 (t + i)            tick 2 (t + 2i)
//!   observe r0       compact to r0, observe r1  compact to r1, observe r2   …
//! ```
//!
//! With several hub replicas on one etcd, only one should compact per interval. As
//! kube-apiserver does, the replicas take turns through a compare-and-swap on
//! [`COMPACT_REV_KEY`](super::etcd::COMPACT_REV_KEY): each remembers the key's version; a tick
//! swaps version `v` for `v + 1` and, if it won, compacts; a replica that lost adopts the
//! version it saw and the current revision, and tries again next interval. Replicas whose ticks
//! fall in the same interval therefore compact once between them.
//!
//! The compactor is a task: spawn [`Compactor::run`] and abort it to stop. [`Compactor::tick`]
//! is one step, for tests.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::etcd::EtcdStore;
use super::{DynStorage, Result, Revision, Storage};

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Compacts a store every interval; see the module docs.
pub struct Compactor {
    target: Target,
    interval: Duration,
    /// The revision seen at the previous tick: what the next tick compacts to.
    observed: Option<Revision>,
    /// etcd only: the version of `compact_rev_key` this replica expects.
    version: i64,
}

enum Target {
    /// A store only this process compacts (the embedded store).
    Sole(DynStorage),
    /// etcd, possibly shared with other replicas.
    Etcd(Box<EtcdStore>),
}

impl Compactor {
    /// A compactor for a store nobody else compacts.
    pub fn new(storage: DynStorage) -> Self {
        Self::with_target(Target::Sole(storage))
    }

    /// A compactor for an etcd that other hub replicas (or a kube-apiserver) may compact too.
    pub fn for_etcd(store: EtcdStore) -> Self {
        Self::with_target(Target::Etcd(Box::new(store)))
    }

    fn with_target(target: Target) -> Self {
        Compactor {
            target,
            interval: DEFAULT_COMPACTION_INTERVAL,
            observed: None,
            version: 0,
        }
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Ticks every interval, the first after one interval, until the task is aborted. A
    /// failed tick is logged and retried at the next.
    pub async fn run(mut self) {
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.tick().await {
                Ok(Some(revision)) => tracing::info!(revision, "compacted storage"),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "storage compaction failed"),
            }
        }
    }

    /// One step: compacts to the revision observed at the previous step (if this replica's
    /// turn) and observes the current one. Returns the revision compacted to, if any.
    pub async fn tick(&mut self) -> Result<Option<Revision>> {
        let due = self.observed.filter(|revision| *revision > 0);
        match &self.target {
            Target::Sole(storage) => {
                let current = storage.current_revision().await?;
                self.observed = Some(current);
                if let Some(revision) = due {
                    storage.compact(revision).await?;
                }
                Ok(due)
            }
            Target::Etcd(etcd) => {
                let claim = etcd
                    .claim_compaction(self.version, due.unwrap_or(0))
                    .await?;
                self.version = claim.version;
                self.observed = Some(claim.revision);
                match due {
                    Some(revision) if claim.won => {
                        etcd.compact(revision).await?;
                        Ok(Some(revision))
                    }
                    _ => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::{ListOptions, StorageError};

    fn at(revision: Revision) -> ListOptions {
        ListOptions {
            revision: Some(revision),
            ..ListOptions::default()
        }
    }

    #[tokio::test]
    async fn compacts_to_the_revision_seen_one_tick_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStorage = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut compactor = Compactor::new(store.clone());

        let first = store.create("k/a", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(
            compactor.tick().await.unwrap(),
            None,
            "the first tick only observes"
        );
        let second = store
            .update("k/a", first.mod_revision, Bytes::from_static(b"2"))
            .await;
        let second = second.unwrap();
        store.create("k/b", Bytes::from_static(b"3")).await.unwrap();

        assert_eq!(compactor.tick().await.unwrap(), Some(first.mod_revision));
        // History from the first tick on is kept, nothing before it.
        let kept = store.list("k/", at(first.mod_revision)).await.unwrap();
        assert_eq!(kept.items.len(), 1);
        assert!(store.list("k/", at(second.mod_revision)).await.is_ok());
        store.create("k/c", Bytes::from_static(b"4")).await.unwrap();
        assert_eq!(
            compactor.tick().await.unwrap(),
            Some(second.mod_revision + 1)
        );
        assert!(matches!(
            store.list("k/", at(first.mod_revision)).await,
            Err(StorageError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn run_compacts_every_interval() {
        const INTERVAL: Duration = Duration::from_millis(20);
        const DEADLINE: Duration = Duration::from_secs(30);
        let dir = tempfile::tempdir().unwrap();
        let store: DynStorage = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let first = store.create("k/a", Bytes::from_static(b"1")).await.unwrap();
        store
            .update("k/a", first.mod_revision, Bytes::from_static(b"2"))
            .await
            .unwrap();

        let task = tokio::spawn(Compactor::new(store.clone()).with_interval(INTERVAL).run());
        let deadline = Instant::now() + DEADLINE;
        loop {
            match store.list("k/", at(first.mod_revision)).await {
                Err(StorageError::Compacted { .. }) => break,
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "no compaction within {DEADLINE:?}"
                ),
                Err(other) => panic!("unexpected error: {other}"),
            }
            tokio::time::sleep(INTERVAL).await;
        }
        task.abort();
        let latest = store.get("k/a").await.unwrap().unwrap();
        assert_eq!(latest.value, Bytes::from_static(b"2"));
    }
}
