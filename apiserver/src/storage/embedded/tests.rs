//! What the conformance suite cannot see: what compaction physically removes, and that a sweep
//! cut short resumes. The trait's behaviour is tested in `tests/src/conformance.rs`.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::time::Instant;

use super::schema::{LOG, META, META_COMPACTED, META_SWEPT, VERSIONS};
use super::{EmbeddedStore, DB_FILE};
use crate::storage::{EventKind, ListOptions, Revision, Storage, StorageError, WatchItem};

const DEADLINE: Duration = Duration::from_secs(30);

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision: Some(revision),
        ..ListOptions::default()
    }
}

/// The `(key, revision)` entries of the version index and the revisions of the log.
fn history(db: &Database) -> (Vec<(String, Revision)>, Vec<Revision>) {
    let txn = db.begin_read().unwrap();
    let versions = txn.open_table(VERSIONS).unwrap();
    let versions = versions
        .iter()
        .unwrap()
        .map(|entry| {
            let (k, _) = entry.unwrap();
            let (key, revision) = k.value();
            (key.to_string(), revision)
        })
        .collect();
    let log = txn.open_table(LOG).unwrap();
    let log = log
        .iter()
        .unwrap()
        .map(|entry| entry.unwrap().0.value())
        .collect();
    (versions, log)
}

fn swept(db: &Database) -> Revision {
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get(META_SWEPT).unwrap().map_or(0, |v| v.value())
}

#[tokio::test]
async fn compaction_removes_superseded_history_but_keeps_what_reads_and_watches_need() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let a1 = store.create("a", value("a1")).await.unwrap(); // 1
    let a2 = store
        .update("a", a1.mod_revision, value("a2"))
        .await
        .unwrap(); // 2
    store.create("b", value("b1")).await.unwrap(); // 3
    store.delete("b", None).await.unwrap(); // 4
    let c1 = store.create("c", value("c1")).await.unwrap(); // 5
    let a3 = store
        .update("a", a2.mod_revision, value("a3"))
        .await
        .unwrap(); // 6
    let c2 = store
        .update("c", c1.mod_revision, value("c2"))
        .await
        .unwrap(); // 7
    assert_eq!(c2.mod_revision, 7);

    store.compact(a3.mod_revision).await.unwrap();

    // `a`: the version read at 6 and its predecessor (the `prev` of the event at 6); `b`:
    // deleted before 6, nothing; `c`: the version read at 6 and the one after.
    let (versions, log) = history(&store.shared.db);
    let expected = [("a", 2), ("a", 6), ("c", 5), ("c", 7)];
    assert_eq!(versions, expected.map(|(k, r)| (k.to_string(), r)).to_vec());
    assert_eq!(log, vec![2, 5, 6, 7]);

    let page = store.list("", at(6)).await.unwrap();
    let seen: Vec<_> = page
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.mod_revision))
        .collect();
    assert_eq!(seen, vec![("a", 6), ("c", 5)]);
    assert!(matches!(
        store.list("", at(5)).await,
        Err(StorageError::Compacted { .. })
    ));

    let events: Vec<_> = store
        .watch("", 5)
        .await
        .unwrap()
        .try_filter_map(|item| async move {
            Ok(match item {
                WatchItem::Event(event) => Some(event),
                WatchItem::Progress(_) => None,
            })
        })
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events[0].kind, EventKind::Updated);
    assert_eq!(events[0].prev.as_ref(), Some(&a2));
    assert_eq!(events[1].kind, EventKind::Updated);
    assert_eq!(events[1].prev.as_ref(), Some(&c1));
}

#[tokio::test]
async fn a_sweep_cut_short_resumes_when_the_store_is_reopened() {
    const KEYS: usize = 1500;
    const VERSIONS_PER_KEY: usize = 3; // more entries than one sweep chunk
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k/{i:05}")).collect();
    futures::future::try_join_all(keys.iter().map(|k| store.create(k, value("0"))))
        .await
        .unwrap();
    for round in 1..VERSIONS_PER_KEY {
        futures::future::try_join_all(keys.iter().map(|k| async {
            let current = store.get(k).await?.unwrap();
            store
                .update(k, current.mod_revision, value(&round.to_string()))
                .await
        }))
        .await
        .unwrap();
    }
    let compact_to = store.current_revision().await.unwrap();
    drop(store);

    // As if the process died right after recording the compaction.
    {
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_COMPACTED, compact_to)
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(history(&db).0.len(), KEYS * VERSIONS_PER_KEY);
    }

    let store = EmbeddedStore::open(dir.path()).unwrap();
    // Writers are served while the sweep goes on, and what they write is kept.
    let fresh = store.create("k/fresh", value("new")).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while swept(&store.shared.db) < compact_to {
        assert!(
            Instant::now() < deadline,
            "sweep not finished within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One version per key, plus the one before the version written at `compact_to` (the
    // `prev` of that event).
    let (versions, log) = history(&store.shared.db);
    assert_eq!(versions.len(), KEYS + 2);
    assert_eq!(log.len(), KEYS + 2);

    let all = store.list("k/", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), KEYS + 1);
    let last_round = (VERSIONS_PER_KEY - 1).to_string();
    assert!(all.items[..KEYS]
        .iter()
        .all(|kv| kv.value == value(&last_round)));
    assert_eq!(all.items[KEYS], fresh);
    assert!(matches!(
        store.list("k/", at(compact_to - 1)).await,
        Err(StorageError::Compacted { .. })
    ));
}

#[tokio::test]
async fn a_watcher_that_stops_reading_catches_up_from_disk() {
    // Many more commits than the in-memory buffer holds.
    const WRITES: i64 = 4 * super::WATCH_BUFFER_COMMITS as i64;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut watch = store.watch("w/", 0).await.unwrap();
    let mut kv = store.create("w/counter", value("0")).await.unwrap();
    // Caught up and following the broadcast: from here on only a lag sends it back to disk.
    let first = watch.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchItem::Event(event) if event.kv == kv));
    for i in 1..WRITES {
        kv = store
            .update("w/counter", kv.mod_revision, value(&i.to_string()))
            .await
            .unwrap();
    }
    let mut revision = 1;
    while revision < WRITES {
        match watch.next().await.unwrap().unwrap() {
            WatchItem::Event(event) => {
                assert_eq!(
                    event.revision(),
                    revision + 1,
                    "events in order, none missing"
                );
                assert_eq!(event.kv.value, value(&revision.to_string()));
                revision = event.revision();
            }
            WatchItem::Progress(progress) => assert!(progress <= revision),
        }
    }
}

#[tokio::test]
async fn the_store_is_readable_by_its_owner_only_even_one_made_before() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("store");
    drop(EmbeddedStore::open(&dir).unwrap());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);

    // A store left world-readable by an earlier version is tightened when opened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    store.create("k", value("v")).await.unwrap();
}

#[tokio::test]
async fn values_over_etcds_limit_are_refused_as_etcd_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let limit = crate::storage::MAX_VALUE_BYTES;
    let big = Bytes::from(vec![b'x'; limit + 1]);
    assert!(matches!(
        store.create("k", big.clone()).await,
        Err(StorageError::TooLarge { size, .. }) if size == limit + 1
    ));
    let kv = store
        .create("k", Bytes::from(vec![b'x'; limit]))
        .await
        .expect("a value at the limit is stored");
    assert!(matches!(
        store.update("k", kv.mod_revision, big).await,
        Err(StorageError::TooLarge { .. })
    ));
    assert_eq!(
        store.get("k").await.unwrap().unwrap().mod_revision,
        kv.mod_revision
    );
}

#[tokio::test]
async fn the_compacted_revision_is_known_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.compacted_revision(), 0);
    store.create("a", value("1")).await.unwrap();
    let b = store.create("b", value("2")).await.unwrap();
    store.compact(b.mod_revision).await.unwrap();
    assert_eq!(store.compacted_revision(), b.mod_revision);
    store.compact(1).await.unwrap();
    assert_eq!(
        store.compacted_revision(),
        b.mod_revision,
        "never goes back"
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.compacted_revision(), b.mod_revision);
}

#[tokio::test]
async fn large_values_are_not_held_by_the_broadcast_and_watchers_still_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut ring = store.commits.subscribe();
    let mut watch = store.watch("k/", 0).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut next_event = async || loop {
        let item = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        if let WatchItem::Event(event) = item {
            return event.kv;
        }
    };
    let small = store.create("k/small", value("s")).await.unwrap();
    // The watcher has caught up with the log and follows the broadcast from here.
    assert_eq!(next_event().await, small);

    let big = Bytes::from(vec![b'x'; super::WATCH_BUFFER_COMMIT_BYTES + 1]);
    let large = store.create("k/large", big.clone()).await.unwrap();
    let first = ring.recv().await.unwrap();
    assert!(!first.spilled && first.events.len() == 1);
    let second = ring.recv().await.unwrap();
    assert!(
        second.spilled && second.events.is_empty(),
        "no large value in memory"
    );
    let seen = next_event().await;
    assert_eq!(seen, large);
    assert_eq!(seen.value, big, "read back from the log whole");
}
