//! The storage conformance suite: what every [`Storage`] backend must do, as seen through the
//! trait. Each case is an async function taking a fresh, empty store; backends run all of them
//! with [`storage_conformance!`](crate::storage_conformance):
//!
//! ```ignore
//! async fn embedded() -> anyhow::Result<Backend> { … }
//! mod embedded_store {
//!     edgefleet_e2e::storage_conformance!(super::embedded);
//! }
//! ```
//!
//! Cases may rely on the store being empty and written by nobody else (revisions are checked
//! exactly), and never on timing: a watch is read until the expected events arrived, with a
//! deadline only so that a missing event fails the test instead of hanging it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use edgefleet_apiserver::storage::{
    update_with, DynStorage, Event, EventKind, Guard, KeyValue, ListOptions, Revision,
    StorageError, Update, WatchItem, WatchStream,
};
use futures::StreamExt;

/// How long a watch may take to deliver an event that is due.
const WATCH_DEADLINE: Duration = Duration::from_secs(30);

/// A store under test and whatever must live as long as it (a directory, an etcd process).
pub struct Backend {
    pub store: DynStorage,
    _resources: Box<dyn Send + Sync>,
}

impl Backend {
    pub fn new(store: DynStorage, resources: impl Send + Sync + 'static) -> Self {
        Backend {
            store,
            _resources: Box::new(resources),
        }
    }

    /// A fresh embedded store in a temporary directory.
    pub async fn embedded() -> anyhow::Result<Backend> {
        let dir = tempfile::tempdir()?;
        let store = edgefleet_apiserver::storage::embedded::EmbeddedStore::open(dir.path())?;
        Ok(Backend::new(Arc::new(store), dir))
    }

    /// A fresh etcd process and a store on it.
    pub async fn etcd() -> anyhow::Result<Backend> {
        let etcd = crate::EtcdProcess::start().await?;
        let store = edgefleet_apiserver::storage::etcd::EtcdStore::connect(etcd.config()).await?;
        Ok(Backend::new(Arc::new(store), etcd))
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each calling `$backend()` (an async
/// fn returning `anyhow::Result<Backend>`) for a fresh store.
#[macro_export]
macro_rules! storage_conformance {
    ($backend:path) => {
        $crate::storage_conformance!(@cases $backend;
            create_then_get,
            update_is_compare_and_swap,
            delete_with_and_without_precondition,
            revisions_are_global_and_monotonic,
            prefixes_are_isolated,
            list_is_in_key_order,
            list_paginates,
            list_at_a_past_revision_is_a_snapshot,
            list_at_a_compacted_revision_fails,
            list_at_a_future_revision_fails,
            watch_from_zero_replays_everything,
            watch_from_a_middle_revision,
            watch_carries_previous_values_and_deletions,
            watch_filters_by_prefix,
            watch_replay_then_live_with_concurrent_writers_is_exact,
            watch_before_the_compacted_revision_fails,
            watch_at_the_current_revision_sees_only_new_events,
            slow_watcher_gets_every_event,
            slow_watcher_behind_compaction_gets_every_event_or_compacted,
            concurrent_update_with_loses_no_increment,
            compaction_keeps_the_latest_values,
            guarded_create_holds_while_the_guard_is_unchanged,
            guarded_create_conflicts_after_the_guard_changed,
            guarded_create_needs_the_guard_key,
            guarded_create_reports_an_existing_key_first,
            guarded_creates_racing_a_guard_update_never_follow_it,
        );
    };
    (@cases $backend:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> ::anyhow::Result<()> {
                let backend = $backend().await?;
                $crate::conformance::$case(backend.store.clone()).await
            }
        )+
    };
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision: Some(revision),
        ..ListOptions::default()
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Reads a watch stream, checking on every item that events come in strictly increasing
/// revision order and that progress never claims a revision an event then goes below.
pub struct Watcher {
    stream: WatchStream,
    floor: Revision,
}

impl Watcher {
    pub async fn open(store: &DynStorage, prefix: &str, after: Revision) -> anyhow::Result<Self> {
        let stream = store.watch(prefix, after).await.context("opening watch")?;
        Ok(Watcher {
            stream,
            floor: after,
        })
    }

    /// The next item, `None` if the stream ended.
    pub async fn next_item(&mut self) -> anyhow::Result<Option<Result<WatchItem, StorageError>>> {
        let item = tokio::time::timeout(WATCH_DEADLINE, self.stream.next())
            .await
            .with_context(|| format!("no watch item within {WATCH_DEADLINE:?}"))?;
        match &item {
            Some(Ok(WatchItem::Event(event))) => {
                ensure!(
                    event.revision() > self.floor,
                    "event at revision {} after revision {} was already passed",
                    event.revision(),
                    self.floor
                );
                self.floor = event.revision();
            }
            Some(Ok(WatchItem::Progress(revision))) => {
                ensure!(*revision >= self.floor, "progress went back to {revision}");
                self.floor = *revision;
            }
            _ => {}
        }
        Ok(item)
    }

    /// The next event, skipping progress; fails on an error or the end of the stream.
    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        loop {
            match self.next_item().await? {
                Some(Ok(WatchItem::Event(event))) => return Ok(event),
                Some(Ok(WatchItem::Progress(_))) => continue,
                Some(Err(error)) => bail!("watch failed: {error}"),
                None => bail!("watch ended"),
            }
        }
    }

    pub async fn events(&mut self, n: usize) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            events.push(self.next_event().await?);
        }
        Ok(events)
    }
}

fn is_compacted<T>(result: &Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::Compacted { .. }))
}

/// A watch that must fail with `Compacted`: when opened, or as its first item.
async fn expect_compacted_watch(
    store: &DynStorage,
    prefix: &str,
    after: Revision,
) -> anyhow::Result<()> {
    let mut stream = match store.watch(prefix, after).await {
        Err(StorageError::Compacted { .. }) => return Ok(()),
        Err(other) => bail!("watch after {after} failed with {other}, not Compacted"),
        Ok(stream) => stream,
    };
    loop {
        let item = tokio::time::timeout(WATCH_DEADLINE, stream.next())
            .await
            .context("compacted watch neither failed nor sent anything")?;
        match item {
            Some(Err(StorageError::Compacted { .. })) => return Ok(()),
            Some(Ok(WatchItem::Progress(_))) => continue,
            other => bail!("watch after compacted revision {after} yielded {other:?}"),
        }
    }
}

pub async fn create_then_get(store: DynStorage) -> anyhow::Result<()> {
    let key = "edgefleet.io/clusters/retail/edge-1";
    let created = store.create(key, v("one")).await?;
    assert_eq!(created.key, key);
    assert_eq!(created.value, v("one"));
    assert!(created.mod_revision > 0);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(store.get(key).await?, Some(created.clone()));

    match store.create(key, v("two")).await {
        Err(StorageError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => bail!("second create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get(key).await?,
        Some(created),
        "a refused create changes nothing"
    );
    assert_eq!(
        store.get("edgefleet.io/clusters/retail/edge-2").await?,
        None
    );
    Ok(())
}

pub async fn update_is_compare_and_swap(store: DynStorage) -> anyhow::Result<()> {
    let key = "edgefleet.io/fleets/retail/stores";
    let created = store.create(key, v("v1")).await?;
    let updated = store.update(key, created.mod_revision, v("v2")).await?;
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value, v("v2"));
    assert_eq!(store.get(key).await?, Some(updated.clone()));

    match store.update(key, created.mod_revision, v("v3")).await {
        Err(StorageError::Conflict {
            key: k,
            expected,
            current,
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, created.mod_revision);
            assert_eq!(*current, updated, "the conflict carries the current value");
        }
        other => bail!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(key).await?, Some(updated));

    let missing = "edgefleet.io/fleets/retail/missing";
    for expected in [created.mod_revision, 0] {
        match store.update(missing, expected, v("x")).await {
            Err(StorageError::NotFound { key: k }) => assert_eq!(k, missing),
            other => bail!("update of a missing key at {expected}: got {other:?}"),
        }
    }
    assert_eq!(store.get(missing).await?, None, "an update never creates");
    Ok(())
}

pub async fn delete_with_and_without_precondition(store: DynStorage) -> anyhow::Result<()> {
    let (a, b) = (
        "edgefleet.io/placements/retail/a",
        "edgefleet.io/placements/retail/b",
    );
    let a1 = store.create(a, v("a1")).await?;
    let b1 = store.create(b, v("b1")).await?;

    let deleted = store.delete(a, None).await?;
    assert_eq!(deleted.key, a);
    assert_eq!(deleted.value, v("a1"), "the deleted value is returned");
    assert_eq!(deleted.create_revision, a1.create_revision);
    assert!(
        deleted.mod_revision > b1.mod_revision,
        "the deletion has its own revision"
    );
    assert_eq!(store.current_revision().await?, deleted.mod_revision);
    assert_eq!(store.get(a).await?, None);
    assert!(matches!(
        store.delete(a, None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(a, Some(deleted.mod_revision)).await,
        Err(StorageError::NotFound { .. })
    ));

    let b2 = store.update(b, b1.mod_revision, v("b2")).await?;
    match store.delete(b, Some(b1.mod_revision)).await {
        Err(StorageError::Conflict {
            expected, current, ..
        }) => {
            assert_eq!(expected, b1.mod_revision);
            assert_eq!(*current, b2);
        }
        other => bail!("stale delete: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(b).await?,
        Some(b2.clone()),
        "a refused delete changes nothing"
    );
    let deleted = store.delete(b, Some(b2.mod_revision)).await?;
    assert_eq!(deleted.value, v("b2"));
    assert!(deleted.mod_revision > b2.mod_revision);

    let again = store.create(a, v("a2")).await?;
    assert!(
        again.create_revision > deleted.mod_revision,
        "a re-created key starts a new life"
    );
    Ok(())
}

pub async fn revisions_are_global_and_monotonic(store: DynStorage) -> anyhow::Result<()> {
    let start = store.current_revision().await?;
    let mut last = start;
    for i in 0..5 {
        let kv = store
            .create(&format!("edgefleet.io/clusters/env-{i}/c"), v("x"))
            .await?;
        assert!(
            kv.mod_revision > last,
            "revision {} after {last}",
            kv.mod_revision
        );
        last = kv.mod_revision;
        assert_eq!(store.current_revision().await?, last);
    }
    let kv = store
        .get("edgefleet.io/clusters/env-0/c")
        .await?
        .context("env-0")?;
    let updated = store.update(&kv.key, kv.mod_revision, v("y")).await?;
    assert!(updated.mod_revision > last);
    assert_eq!(updated.create_revision, kv.create_revision);
    last = updated.mod_revision;

    // Refused writes leave no trace in the revision.
    let _ = store.create(&kv.key, v("z")).await.unwrap_err();
    let _ = store
        .update(&kv.key, kv.mod_revision, v("z"))
        .await
        .unwrap_err();
    let _ = store
        .delete("edgefleet.io/clusters/none/c", None)
        .await
        .unwrap_err();
    assert_eq!(store.current_revision().await?, last);
    Ok(())
}

pub async fn prefixes_are_isolated(store: DynStorage) -> anyhow::Result<()> {
    for key in ["a/b/1", "a/b/2", "a/bc/1", "a/b", "a/a/1", "a/b0"] {
        store.create(key, v(key)).await?;
    }
    assert_eq!(
        keys(&store.list("a/b/", ListOptions::default()).await?.items),
        ["a/b/1", "a/b/2"]
    );
    assert_eq!(
        keys(&store.list("a/bc/", ListOptions::default()).await?.items),
        ["a/bc/1"]
    );
    assert_eq!(
        keys(&store.list("a/c/", ListOptions::default()).await?.items),
        Vec::<&str>::new()
    );
    // A start outside the prefix does not widen the list.
    let from_before = ListOptions {
        start: Some("a/a".into()),
        ..ListOptions::default()
    };
    assert_eq!(
        keys(&store.list("a/b/", from_before).await?.items),
        ["a/b/1", "a/b/2"]
    );
    Ok(())
}

pub async fn list_is_in_key_order(store: DynStorage) -> anyhow::Result<()> {
    let mut written = vec![
        "o/b", "o/a", "o/ab", "o/a/b", "o/B", "o/0", "o/a-", "o/é", "o/z",
    ];
    for key in &written {
        store.create(key, v(key)).await?;
    }
    written.sort(); // byte order, as etcd orders keys
    let listed = store.list("o/", ListOptions::default()).await?;
    assert_eq!(keys(&listed.items), written);
    assert!(!listed.more);
    Ok(())
}

pub async fn list_paginates(store: DynStorage) -> anyhow::Result<()> {
    const KEYS: usize = 10;
    const LIMIT: usize = 3;
    for i in 0..KEYS {
        store
            .create(&format!("p/{i:02}"), v(&i.to_string()))
            .await?;
    }
    store.create("p0", v("neighbour")).await?;
    store.create("q/00", v("neighbour")).await?;

    let everything = store.list("p/", ListOptions::default()).await?;
    assert_eq!(everything.items.len(), KEYS);
    assert!(!everything.more);
    let first = store
        .list(
            "p/",
            ListOptions {
                limit: LIMIT,
                ..ListOptions::default()
            },
        )
        .await?;
    let revision = first.revision;
    assert_eq!(first.items, everything.items[..LIMIT]);

    // Writes between pages do not show: every page reads at the first page's revision.
    store.create("p/05a", v("late")).await?;
    store.delete("p/01", None).await?;

    let mut seen = first.items.clone();
    let mut page = first;
    loop {
        let left = KEYS - seen.len();
        assert_eq!(page.more, left > 0, "more, with {left} keys left");
        if let Some(remaining) = page.remaining {
            assert_eq!(remaining, left as i64);
        }
        if !page.more {
            break;
        }
        let last = &page.items.last().context("a page with more has items")?.key;
        let next = ListOptions {
            revision: Some(revision),
            start: Some(format!("{last}\0")),
            limit: LIMIT,
        };
        page = store.list("p/", next).await?;
        assert_eq!(page.revision, revision);
        assert!(page.items.len() <= LIMIT);
        seen.extend(page.items.iter().cloned());
    }
    assert_eq!(
        seen, everything.items,
        "the pages make up the whole list, once each"
    );
    Ok(())
}

pub async fn list_at_a_past_revision_is_a_snapshot(store: DynStorage) -> anyhow::Result<()> {
    const KEYS: usize = 20;
    const WRITES: usize = 200;
    for i in 0..KEYS {
        store.create(&format!("s/{i:02}"), v("0")).await?;
    }
    let snapshot = store.list("s/", ListOptions::default()).await?;
    let revision = snapshot.revision;

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..WRITES {
                let key = format!("s/{:02}", n % KEYS);
                match n % 10 {
                    9 => {
                        let _ = store.delete(&key, None).await;
                    }
                    8 => {
                        let _ = store.create(&key, v("again")).await;
                        store.create(&format!("s/new-{n}"), v("new")).await?;
                    }
                    _ => {
                        if store.get(&key).await?.is_some() {
                            update_with(store.as_ref(), &key, |kv| {
                                Ok::<_, StorageError>(Update::Put(v(&format!(
                                    "{}+",
                                    String::from_utf8_lossy(&kv.value)
                                ))))
                            })
                            .await?;
                        }
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let past = store.list("s/", at(revision)).await?;
        assert_eq!(
            past.items, snapshot.items,
            "read {reads} at {revision} changed"
        );
        assert_eq!(past.revision, revision);
        reads += 1;
    }
    writer.await??;
    let past = store.list("s/", at(revision)).await?;
    assert_eq!(past.items, snapshot.items);
    let now = store.list("s/", ListOptions::default()).await?;
    assert_ne!(now.items, snapshot.items);
    Ok(())
}

pub async fn list_at_a_compacted_revision_fails(store: DynStorage) -> anyhow::Result<()> {
    let key = "c/key";
    let first = store.create(key, v("1")).await?;
    let second = store.update(key, first.mod_revision, v("2")).await?;
    let third = store.update(key, second.mod_revision, v("3")).await?;
    store.compact(third.mod_revision).await?;

    match store.list("c/", at(first.mod_revision)).await {
        Err(StorageError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, first.mod_revision);
            assert!(compacted > requested);
        }
        other => bail!("list at a compacted revision: got {other:?}"),
    }
    assert!(is_compacted(
        &store.list("c/", at(second.mod_revision)).await
    ));
    let kept = store.list("c/", at(third.mod_revision)).await?;
    assert_eq!(kept.items, vec![third]);
    Ok(())
}

pub async fn list_at_a_future_revision_fails(store: DynStorage) -> anyhow::Result<()> {
    store.create("f/key", v("1")).await?;
    let current = store.current_revision().await?;
    match store.list("f/", at(current + 100)).await {
        Err(StorageError::FutureRevision {
            requested,
            current: reported,
        }) => {
            assert_eq!(requested, current + 100);
            assert!(reported >= current && reported < requested);
        }
        other => bail!("list at a future revision: got {other:?}"),
    }
    Ok(())
}

/// create a, update a, create b, delete a: the writes most watch cases replay.
async fn four_writes(store: &DynStorage, prefix: &str) -> anyhow::Result<[KeyValue; 4]> {
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let a1 = store.create(&a, v("a1")).await?;
    let a2 = store.update(&a, a1.mod_revision, v("a2")).await?;
    let b1 = store.create(&b, v("b1")).await?;
    let gone = store.delete(&a, None).await?;
    Ok([a1, a2, b1, gone])
}

pub async fn watch_from_zero_replays_everything(store: DynStorage) -> anyhow::Result<()> {
    let writes = four_writes(&store, "w/").await?;
    let events = Watcher::open(&store, "w/", 0).await?.events(4).await?;
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Updated,
            EventKind::Created,
            EventKind::Deleted
        ]
    );
    let revisions: Vec<_> = events.iter().map(Event::revision).collect();
    assert_eq!(revisions, writes.map(|kv| kv.mod_revision));
    Ok(())
}

pub async fn watch_from_a_middle_revision(store: DynStorage) -> anyhow::Result<()> {
    let [_, a2, b1, gone] = four_writes(&store, "w/").await?;
    let events = Watcher::open(&store, "w/", a2.mod_revision)
        .await?
        .events(2)
        .await?;
    assert_eq!(events[0].kind, EventKind::Created);
    assert_eq!(events[0].kv, b1);
    assert_eq!(events[1].kind, EventKind::Deleted);
    assert_eq!(events[1].kv, gone);
    Ok(())
}

pub async fn watch_carries_previous_values_and_deletions(store: DynStorage) -> anyhow::Result<()> {
    let mut watcher = Watcher::open(&store, "w/", store.current_revision().await?).await?;
    let created = store.create("w/k", v("1")).await?;
    let updated = store.update("w/k", created.mod_revision, v("2")).await?;
    let deleted = store.delete("w/k", None).await?;
    let events = watcher.events(3).await?;

    assert_eq!(
        events[0],
        Event {
            kind: EventKind::Created,
            kv: created.clone(),
            prev: None
        }
    );
    assert_eq!(
        events[1],
        Event {
            kind: EventKind::Updated,
            kv: updated.clone(),
            prev: Some(created)
        }
    );
    // A deletion shows the last value, at the deletion's revision.
    assert_eq!(
        deleted,
        KeyValue {
            mod_revision: deleted.mod_revision,
            ..updated
        }
    );
    assert_eq!(
        events[2],
        Event {
            kind: EventKind::Deleted,
            kv: deleted,
            prev: None
        }
    );
    Ok(())
}

pub async fn watch_filters_by_prefix(store: DynStorage) -> anyhow::Result<()> {
    let mut watcher = Watcher::open(&store, "f/a/", 0).await?;
    for key in [
        "f/a/1", "f/ab/1", "f/b/1", "f/a", "f/a/2", "f/ab/2", "f/a/3",
    ] {
        store.create(key, v(key)).await?;
    }
    let events = watcher.events(3).await?;
    assert_eq!(
        events.iter().map(|e| e.kv.key.as_str()).collect::<Vec<_>>(),
        ["f/a/1", "f/a/2", "f/a/3"]
    );
    Ok(())
}

pub async fn watch_replay_then_live_with_concurrent_writers_is_exact(
    store: DynStorage,
) -> anyhow::Result<()> {
    const WRITERS: usize = 4;
    const WRITES_EACH: usize = 60;
    /// Every this many writes a writer deletes and re-creates its key instead of updating it.
    const RECREATE_EVERY: usize = 20;
    const ACKED_BEFORE_WATCH: usize = 40;
    let total = WRITERS * (WRITES_EACH + (WRITES_EACH - 1) / RECREATE_EVERY);
    // Every acknowledged write: revision → (key, kind).
    let acked: Arc<Mutex<BTreeMap<Revision, (String, EventKind)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, acked) = (store.clone(), acked.clone());
            tokio::spawn(async move {
                let key = format!("r/writer-{w}");
                let record = |kv: &KeyValue, kind| {
                    acked
                        .lock()
                        .unwrap()
                        .insert(kv.mod_revision, (kv.key.clone(), kind));
                };
                let mut kv = store.create(&key, v("0")).await?;
                record(&kv, EventKind::Created);
                for n in 1..WRITES_EACH {
                    let value = v(&n.to_string());
                    kv = if n % RECREATE_EVERY == 0 {
                        record(&store.delete(&key, None).await?, EventKind::Deleted);
                        let kv = store.create(&key, value).await?;
                        record(&kv, EventKind::Created);
                        kv
                    } else {
                        let kv = store.update(&key, kv.mod_revision, value).await?;
                        record(&kv, EventKind::Updated);
                        kv
                    };
                }
                anyhow::Ok(())
            })
        })
        .collect();

    // Open the watch mid-burst and read while the writers go on: the start is replayed from
    // history, the rest arrives live, and the switch happens under load.
    while acked.lock().unwrap().len() < ACKED_BEFORE_WATCH
        && !writers.iter().all(|writer| writer.is_finished())
    {
        tokio::task::yield_now().await;
    }
    let mut watcher = Watcher::open(&store, "r/", 0).await?;
    let mut seen = BTreeMap::new();
    let mut overlapped = false;
    while seen.len() < total {
        let event = watcher.next_event().await?;
        overlapped |= !writers.iter().all(|writer| writer.is_finished());
        // The watcher already refuses a revision that is not above the last one.
        seen.insert(event.revision(), (event.kv.key, event.kind));
    }
    for writer in writers {
        writer.await??;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(acked.len(), total);
    assert_eq!(seen, acked, "exactly the acknowledged writes");
    if !overlapped {
        eprintln!("note: the writers finished before the watcher read its first event");
    }
    Ok(())
}

pub async fn watch_before_the_compacted_revision_fails(store: DynStorage) -> anyhow::Result<()> {
    let first = store.create("x/key", v("1")).await?;
    let second = store.update("x/key", first.mod_revision, v("2")).await?;
    let third = store.update("x/key", second.mod_revision, v("3")).await?;
    store.compact(third.mod_revision).await?;

    expect_compacted_watch(&store, "x/", 0).await?;
    expect_compacted_watch(&store, "x/", first.mod_revision).await?;
    // Right below the compacted revision nothing is missing.
    let mut watcher = Watcher::open(&store, "x/", third.mod_revision - 1).await?;
    assert_eq!(watcher.next_event().await?.kv, third);
    Ok(())
}

pub async fn watch_at_the_current_revision_sees_only_new_events(
    store: DynStorage,
) -> anyhow::Result<()> {
    four_writes(&store, "n/").await?;
    let current = store.current_revision().await?;
    let mut watcher = Watcher::open(&store, "n/", current).await?;
    // Written after the watch opened but before it is read: a backend may have these both in
    // its history and among its live events; each must still come once.
    let early = [
        store.create("n/x", v("1")).await?,
        store.create("n/y", v("1")).await?,
    ];
    assert_eq!(watcher.next_event().await?.kv, early[0]);
    assert_eq!(early[0].mod_revision, current + 1);
    let late = store.create("n/z", v("1")).await?;
    assert_eq!(watcher.next_event().await?.kv, early[1]);
    assert_eq!(watcher.next_event().await?.kv, late);
    Ok(())
}

/// Sequential writes, each its own commit: more than any backend buffers for a watcher.
const SLOW_WATCHER_WRITES: usize = 300;

/// A watcher that has caught up and follows live events, then stops reading while a burst of
/// updates is written. Returns the watcher and what the burst wrote.
async fn slow_watcher_and_burst(
    store: &DynStorage,
    key: &str,
) -> anyhow::Result<(Watcher, Vec<KeyValue>)> {
    let mut watcher = Watcher::open(store, "slow/", store.current_revision().await?).await?;
    let created = store.create(key, v("0")).await?;
    ensure!(
        watcher.next_event().await?.kv == created,
        "the first event is the create"
    );
    let mut written = vec![created];
    for n in 1..SLOW_WATCHER_WRITES {
        let last = written.last().expect("created").mod_revision;
        written.push(store.update(key, last, v(&n.to_string())).await?);
    }
    written.remove(0);
    Ok((watcher, written))
}

pub async fn slow_watcher_gets_every_event(store: DynStorage) -> anyhow::Result<()> {
    let (mut watcher, written) = slow_watcher_and_burst(&store, "slow/counter").await?;
    let events = watcher.events(written.len()).await?;
    let seen: Vec<_> = events.into_iter().map(|e| e.kv).collect();
    assert_eq!(seen, written);
    Ok(())
}

pub async fn slow_watcher_behind_compaction_gets_every_event_or_compacted(
    store: DynStorage,
) -> anyhow::Result<()> {
    let (mut watcher, written) = slow_watcher_and_burst(&store, "slow/counter").await?;
    store
        .compact(written.last().expect("written").mod_revision)
        .await?;

    // Either everything, in order, or a gap-free beginning and then an explicit Compacted.
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match watcher.next_item().await? {
            Some(Ok(WatchItem::Event(event))) => seen.push(event.kv),
            Some(Ok(WatchItem::Progress(_))) => {}
            Some(Err(StorageError::Compacted { .. })) => {
                assert!(
                    watcher.next_item().await?.is_none(),
                    "the stream ends after Compacted"
                );
                break;
            }
            Some(Err(other)) => bail!("watch failed with {other}"),
            None => bail!(
                "watch ended silently after {} of {} events",
                seen.len(),
                written.len()
            ),
        }
    }
    assert_eq!(seen, written[..seen.len()], "no gap before the end");
    Ok(())
}

pub async fn concurrent_update_with_loses_no_increment(store: DynStorage) -> anyhow::Result<()> {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 10;
    let key = "u/counter";
    let created = store.create(key, v("0")).await?;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    update_with(store.as_ref(), key, |kv| {
                        let n: usize = std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| StorageError::Corrupt("counter".into()))?;
                        Ok::<_, StorageError>(Update::Put(v(&(n + 1).to_string())))
                    })
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let last = store.get(key).await?.context("counter")?;
    assert_eq!(last.value, v(&(TASKS * INCREMENTS).to_string()));
    assert_eq!(
        last.mod_revision,
        created.mod_revision + (TASKS * INCREMENTS) as Revision
    );

    // `Unchanged` writes nothing.
    let same = update_with(store.as_ref(), key, |_| {
        Ok::<_, StorageError>(Update::Unchanged)
    })
    .await?;
    assert_eq!(same, last);
    assert_eq!(store.current_revision().await?, last.mod_revision);
    Ok(())
}

pub async fn compaction_keeps_the_latest_values(store: DynStorage) -> anyhow::Result<()> {
    for i in 0..5 {
        let key = format!("k/{i}");
        let mut kv = store.create(&key, v("0")).await?;
        for n in 1..3 {
            kv = store
                .update(&key, kv.mod_revision, v(&n.to_string()))
                .await?;
        }
    }
    store.delete("k/4", None).await?;
    let before = store.list("k/", ListOptions::default()).await?;
    let revision = before.revision;
    store.compact(revision).await?;

    let after = store.list("k/", ListOptions::default()).await?;
    assert_eq!(after.items, before.items);
    assert_eq!(after.items.len(), 4);
    assert!(after.items.iter().all(|kv| kv.value == v("2")));
    assert_eq!(store.list("k/", at(revision)).await?.items, before.items);
    for kv in &before.items {
        assert_eq!(store.get(&kv.key).await?.as_ref(), Some(kv));
    }
    assert_eq!(store.get("k/4").await?, None);

    // Compacting again, or lower, is a no-op; compacting the future is refused.
    store.compact(revision).await?;
    store.compact(revision - 1).await?;
    assert!(matches!(
        store.compact(store.current_revision().await? + 100).await,
        Err(StorageError::FutureRevision { .. })
    ));

    let mut watcher = Watcher::open(&store, "k/", revision).await?;
    let next = store
        .update("k/0", before.items[0].mod_revision, v("3"))
        .await?;
    assert!(next.mod_revision > revision);
    assert_eq!(watcher.next_event().await?.kv, next);
    Ok(())
}

fn guard(kv: &KeyValue) -> Option<Guard> {
    Some(Guard {
        key: kv.key.clone(),
        mod_revision: kv.mod_revision,
    })
}

/// A refused write at revision `before` left no trace: the revision did not move, `key` is
/// absent, and a watch from `before` sees a later write first.
async fn assert_wrote_nothing(
    store: &DynStorage,
    before: Revision,
    key: &str,
) -> anyhow::Result<()> {
    assert_eq!(store.current_revision().await?, before, "no revision used");
    assert_eq!(store.get(key).await?, None, "{key} was not created");
    let mut watcher = Watcher::open(store, "", before).await?;
    let marker = store
        .create(&format!("marker/after-{before}"), v("m"))
        .await?;
    assert_eq!(watcher.next_event().await?.kv, marker, "no event before it");
    Ok(())
}

pub async fn guarded_create_holds_while_the_guard_is_unchanged(
    store: DynStorage,
) -> anyhow::Result<()> {
    let env = store
        .create("edgefleet.io/environments/retail", v("env"))
        .await?;
    let key = "edgefleet.io/clusters/retail/edge-1";
    let created = store.create_guarded(key, v("c1"), guard(&env)).await?;
    assert_eq!(created.key, key);
    assert_eq!(created.value, v("c1"));
    assert!(created.mod_revision > env.mod_revision);
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(store.get(key).await?, Some(created.clone()));
    assert_eq!(
        store.get(&env.key).await?,
        Some(env.clone()),
        "the guard key is only read"
    );

    // The same guard admits further creates: it holds as long as the guard key is unchanged.
    let second = store
        .create_guarded("edgefleet.io/clusters/retail/edge-2", v("c2"), guard(&env))
        .await?;
    assert!(second.mod_revision > created.mod_revision);

    // Without a guard it is a plain create.
    let plain = store
        .create_guarded("edgefleet.io/environments/lab", v("env"), None)
        .await?;
    assert_eq!(plain.create_revision, plain.mod_revision);
    match store.create_guarded(&plain.key, v("again"), None).await {
        Err(StorageError::AlreadyExists { key: k }) => assert_eq!(k, plain.key),
        other => bail!("unguarded create of an existing key: got {other:?}"),
    }
    Ok(())
}

pub async fn guarded_create_conflicts_after_the_guard_changed(
    store: DynStorage,
) -> anyhow::Result<()> {
    let env = store
        .create("edgefleet.io/environments/retail", v("env"))
        .await?;
    let marked = store
        .update(&env.key, env.mod_revision, v("terminating"))
        .await?;
    let key = "edgefleet.io/clusters/retail/edge-1";
    let before = store.current_revision().await?;
    match store.create_guarded(key, v("c"), guard(&env)).await {
        Err(StorageError::Conflict {
            key: k,
            expected,
            current,
        }) => {
            assert_eq!(k, env.key, "the conflict names the guard key");
            assert_eq!(expected, env.mod_revision);
            assert_eq!(
                *current, marked,
                "the conflict carries the guard's current value"
            );
        }
        other => bail!("create under a stale guard: expected Conflict, got {other:?}"),
    }
    assert_wrote_nothing(&store, before, key).await?;

    // The current guard admits it.
    store.create_guarded(key, v("c"), guard(&marked)).await?;
    Ok(())
}

pub async fn guarded_create_needs_the_guard_key(store: DynStorage) -> anyhow::Result<()> {
    let key = "edgefleet.io/clusters/retail/edge-1";
    let never = "edgefleet.io/environments/never";
    // 0 is how a missing key's revisions compare: it must not pass for the guard holding.
    for mod_revision in [0, 1] {
        let before = store.current_revision().await?;
        let missing = Some(Guard {
            key: never.into(),
            mod_revision,
        });
        match store.create_guarded(key, v("c"), missing).await {
            Err(StorageError::NotFound { key: k }) => assert_eq!(k, never, "names the guard key"),
            other => bail!("guard on a key never written, at {mod_revision}: got {other:?}"),
        }
        assert_wrote_nothing(&store, before, key).await?;
    }

    let env = store
        .create("edgefleet.io/environments/retail", v("env"))
        .await?;
    let deleted = store.delete(&env.key, None).await?;
    let before = store.current_revision().await?;
    assert_eq!(before, deleted.mod_revision);
    match store.create_guarded(key, v("c"), guard(&env)).await {
        Err(StorageError::NotFound { key: k }) => assert_eq!(k, env.key, "names the guard key"),
        other => bail!("guard on a deleted key: expected NotFound, got {other:?}"),
    }
    assert_wrote_nothing(&store, before, key).await?;

    // A re-created guard key is a new life: the old guard does not hold on it.
    let again = store.create(&env.key, v("env")).await?;
    match store.create_guarded(key, v("c"), guard(&env)).await {
        Err(StorageError::Conflict { current, .. }) => assert_eq!(*current, again),
        other => bail!("guard on a re-created key: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(key).await?, None);
    Ok(())
}

pub async fn guarded_create_reports_an_existing_key_first(store: DynStorage) -> anyhow::Result<()> {
    let env = store
        .create("edgefleet.io/environments/retail", v("env"))
        .await?;
    let key = "edgefleet.io/clusters/retail/edge-1";
    let existing = store.create_guarded(key, v("c1"), guard(&env)).await?;

    let marked = store
        .update(&env.key, env.mod_revision, v("terminating"))
        .await?;
    let absent = Some(Guard {
        key: "edgefleet.io/environments/never".into(),
        mod_revision: env.mod_revision,
    });
    // A fresher guard could not make these succeed, so the key's existence is what is reported.
    for (what, g) in [
        ("a holding guard", guard(&marked)),
        ("a stale guard", guard(&env)),
        ("a missing guard key", absent),
    ] {
        let before = store.current_revision().await?;
        match store.create_guarded(key, v("c2"), g).await {
            Err(StorageError::AlreadyExists { key: k }) => assert_eq!(k, key),
            other => bail!("create of an existing key under {what}: got {other:?}"),
        }
        assert_eq!(store.current_revision().await?, before);
        assert_eq!(store.get(key).await?, Some(existing.clone()), "{what}");
    }
    Ok(())
}

pub async fn guarded_creates_racing_a_guard_update_never_follow_it(
    store: DynStorage,
) -> anyhow::Result<()> {
    const CREATORS: usize = 8;
    /// A creator stops at its first refusal, or after this many creates.
    const CREATES_EACH: usize = 50;
    /// The guard key is updated once this many creates succeeded (or all creators finished).
    const CREATED_BEFORE_UPDATE: usize = 2 * CREATORS;
    /// Creates issued with the old guard once the update returned.
    const LATE_CREATES: usize = 8;

    let env = store.create("g/environment", v("env")).await?;
    let created = Arc::new(AtomicUsize::new(0));
    let updated = Arc::new(AtomicBool::new(false));
    // Each create: (key, issued after the update returned, result).
    type Outcome = (String, bool, Result<KeyValue, StorageError>);
    let creators: Vec<_> = (0..CREATORS)
        .map(|c| {
            let (store, env) = (store.clone(), env.clone());
            let (created, updated) = (created.clone(), updated.clone());
            tokio::spawn(async move {
                let mut outcomes: Vec<Outcome> = Vec::new();
                for n in 0..CREATES_EACH {
                    let key = format!("g/objects/{c}-{n}");
                    let late = updated.load(Ordering::SeqCst);
                    let result = store.create_guarded(&key, v("o"), guard(&env)).await;
                    let refused = result.is_err();
                    if !refused {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    outcomes.push((key, late, result));
                    if refused {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();

    while created.load(Ordering::SeqCst) < CREATED_BEFORE_UPDATE
        && !creators.iter().all(|creator| creator.is_finished())
    {
        tokio::task::yield_now().await;
    }
    let marked = store
        .update(&env.key, env.mod_revision, v("terminating"))
        .await?;
    updated.store(true, Ordering::SeqCst);
    let late: Vec<_> = (0..LATE_CREATES)
        .map(|n| {
            let (store, env) = (store.clone(), env.clone());
            tokio::spawn(async move {
                let key = format!("g/objects/late-{n}");
                let result = store.create_guarded(&key, v("o"), guard(&env)).await;
                (key, true, result)
            })
        })
        .collect();

    let mut outcomes = Vec::new();
    for creator in creators {
        outcomes.extend(creator.await?);
    }
    for create in late {
        outcomes.push(create.await?);
    }
    let mut succeeded = Vec::new();
    for (key, late, result) in outcomes {
        match result {
            Ok(kv) => {
                ensure!(
                    !late,
                    "{key}: created with the old guard after the update returned"
                );
                ensure!(
                    kv.mod_revision < marked.mod_revision,
                    "{key}: created at {} after the guard changed at {}",
                    kv.mod_revision,
                    marked.mod_revision
                );
                succeeded.push(kv);
            }
            Err(StorageError::Conflict {
                key: k, current, ..
            }) => {
                assert_eq!(k, env.key);
                assert_eq!(*current, marked);
            }
            Err(other) => bail!("{key}: expected success or Conflict, got {other}"),
        }
    }
    ensure!(
        !succeeded.is_empty(),
        "no create succeeded before the update"
    );

    // Refused creates wrote nothing: the store holds exactly the successes, and besides them
    // only the update used a revision.
    succeeded.sort_by(|a, b| a.key.cmp(&b.key));
    let listed = store.list("g/objects/", ListOptions::default()).await?;
    assert_eq!(listed.items, succeeded);
    assert_eq!(
        store.current_revision().await?,
        env.mod_revision + succeeded.len() as Revision + 1
    );
    Ok(())
}
