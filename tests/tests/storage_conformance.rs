//! The storage conformance suite against every backend — the embedded store, a real etcd, and
//! etcd over TLS with client certificates — plus what only one backend promises: the embedded
//! store survives reopening and SIGKILL; etcd holds keys under its prefix, and hub replicas
//! sharing it take turns compacting.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use edgefleet_apiserver::storage::compactor::Compactor;
use edgefleet_apiserver::storage::embedded::EmbeddedStore;
use edgefleet_apiserver::storage::etcd::{EtcdConfig, EtcdStore};
use edgefleet_apiserver::storage::{
    DynStorage, ListOptions, Revision, Storage, StorageError, WatchItem,
};
use edgefleet_e2e::conformance::{Backend, Watcher};
use edgefleet_e2e::EtcdProcess;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

async fn embedded() -> anyhow::Result<Backend> {
    Backend::embedded().await
}

async fn etcd() -> anyhow::Result<Backend> {
    Backend::etcd().await
}

async fn etcd_tls() -> anyhow::Result<Backend> {
    let etcd = EtcdProcess::start_tls().await?;
    let store = EtcdStore::connect(etcd.config()).await?;
    Ok(Backend::new(Arc::new(store), etcd))
}

mod embedded_store {
    edgefleet_e2e::storage_conformance!(super::embedded);
}

mod etcd_store {
    edgefleet_e2e::storage_conformance!(super::etcd);
}

mod etcd_tls_store {
    edgefleet_e2e::storage_conformance!(super::etcd_tls);
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

#[tokio::test]
async fn embedded_data_and_revisions_survive_reopening() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (kept, compacted_at, last) = {
        let store = EmbeddedStore::open(dir.path())?;
        let a = store.create("r/a", v("a1")).await?;
        let a = store.update("r/a", a.mod_revision, v("a2")).await?;
        store.create("r/b", v("b1")).await?;
        store.delete("r/b", None).await?;
        store.compact(a.mod_revision).await?;
        let c = store.create("r/c", v("c1")).await?;
        let (compacted_at, last) = (a.mod_revision, c.mod_revision);
        (vec![a, c], compacted_at, last)
    };

    let store = EmbeddedStore::open(dir.path())?;
    assert_eq!(store.current_revision().await?, last);
    assert_eq!(store.list("r/", ListOptions::default()).await?.items, kept);
    assert_eq!(store.get("r/b").await?, None);
    assert!(matches!(
        store.list("r/", at(compacted_at - 1)).await,
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(store.list("r/", at(compacted_at)).await?.items, kept[..1]);
    // Revisions go on from where they were, and history since the compaction is watchable.
    let d = store.create("r/d", v("d1")).await?;
    assert_eq!(d.mod_revision, last + 1);
    let dynamic: DynStorage = Arc::new(store);
    let mut watcher = Watcher::open(&dynamic, "r/", compacted_at).await?;
    let replayed = watcher.events(4).await?;
    let revisions: Vec<_> = replayed.iter().map(|e| e.revision()).collect();
    assert_eq!(
        revisions,
        [compacted_at + 1, compacted_at + 2, last, last + 1]
    );
    Ok(())
}

/// How many acknowledged creates to wait for before killing the writer.
const ACKS_BEFORE_KILL: usize = 400;
/// How long the writer may take to acknowledge that many.
const ACK_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the crash writer against `backend` at `location` and SIGKILLs it mid-burst. Returns
/// every create it acknowledged: key → mod revision.
async fn crash_writer(
    backend: &str,
    location: &str,
    prefix: &str,
) -> anyhow::Result<BTreeMap<String, Revision>> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_storage-crash-writer"))
        .args([backend, location, prefix])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting storage-crash-writer")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut acked = BTreeMap::new();
    let mut record = |line: String| -> anyhow::Result<()> {
        let (key, revision) = line
            .split_once(' ')
            .with_context(|| format!("line {line:?}"))?;
        acked.insert(key.to_string(), revision.parse()?);
        Ok(())
    };
    let deadline = Instant::now() + ACK_DEADLINE;
    for _ in 0..ACKS_BEFORE_KILL {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => record(line)?,
            Ok(Ok(None)) => bail!("the writer exited early: {:?}", child.wait().await?),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("fewer than {ACKS_BEFORE_KILL} creates within {ACK_DEADLINE:?}"),
        }
    }
    // SIGKILL: no destructor, no flush, the writers stopped wherever they were.
    child.kill().await?;
    // Whatever it printed before dying was acknowledged too.
    while let Some(line) = lines.next_line().await? {
        record(line)?;
    }
    Ok(acked)
}

/// Every acknowledged create is stored with its revision; the store is consistent.
async fn check_after_crash(
    store: &DynStorage,
    prefix: &str,
    acked: &BTreeMap<String, Revision>,
) -> anyhow::Result<()> {
    let listed = store.list(prefix, ListOptions::default()).await?;
    let stored: BTreeMap<_, _> = listed
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    for (key, revision) in acked {
        ensure!(
            stored.get(key) == Some(revision),
            "acknowledged {key} at {revision} is stored as {:?}",
            stored.get(key)
        );
    }
    let current = store.current_revision().await?;
    ensure!(
        stored.values().all(|r| *r <= current),
        "a key above the current revision"
    );
    let mut revisions: Vec<_> = stored.values().collect();
    revisions.sort();
    revisions.dedup();
    ensure!(revisions.len() == stored.len(), "two keys share a revision");
    for kv in &listed.items {
        ensure!(
            kv.value == kv.key.as_bytes(),
            "{} holds a wrong value",
            kv.key
        );
    }
    Ok(())
}

#[tokio::test]
async fn embedded_store_loses_no_acknowledged_write_when_killed() -> anyhow::Result<()> {
    const ROUNDS: usize = 3;
    let dir = tempfile::tempdir()?;
    let location = dir.path().to_str().context("utf-8 path")?;
    let mut acked = BTreeMap::new();
    let mut last_revision = 0;
    for round in 0..ROUNDS {
        acked.extend(crash_writer("embedded", location, &format!("crash/{round}/")).await?);
        let store: DynStorage = Arc::new(EmbeddedStore::open(Path::new(location))?);
        check_after_crash(&store, "crash/", &acked).await?;

        // The log on disk agrees with the index: replaying it yields exactly the stored keys.
        let listed = store.list("crash/", ListOptions::default()).await?;
        let mut watcher = Watcher::open(&store, "crash/", 0).await?;
        let mut replayed: Vec<_> = watcher
            .events(listed.items.len())
            .await?
            .into_iter()
            .map(|e| e.kv)
            .collect();
        replayed.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(replayed, listed.items);

        // Revisions never go back, even for writes the crash cut off.
        let current = store.current_revision().await?;
        assert!(current >= last_revision);
        let next = store.create(&format!("after/{round}"), v("x")).await?;
        assert_eq!(next.mod_revision, current + 1);
        last_revision = next.mod_revision;
    }
    Ok(())
}

#[tokio::test]
async fn etcd_loses_no_acknowledged_write_when_the_client_is_killed() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start().await?;
    let acked = crash_writer("etcd", etcd.endpoint(), "crash/").await?;
    let store: DynStorage = Arc::new(EtcdStore::connect(etcd.config()).await?);
    check_after_crash(&store, "crash/", &acked).await
}

#[tokio::test]
async fn etcd_holds_keys_under_the_prefix() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start().await?;
    let store = EtcdStore::connect(etcd.config()).await?;
    let mut raw = etcd.client().await?;
    let kv = store
        .create("edgefleet.io/clusters/retail/edge-1", v("{}"))
        .await?;

    let stored = raw
        .get("/registry/edgefleet.io/clusters/retail/edge-1", None)
        .await?;
    let stored = stored.kvs().first().context("stored under /registry/")?;
    assert_eq!(stored.value(), b"{}");
    assert_eq!(stored.mod_revision(), kv.mod_revision);
    assert_eq!(
        store
            .list("edgefleet.io/", ListOptions::default())
            .await?
            .items,
        vec![kv]
    );

    // Another prefix (given without its trailing slash) is another keyspace on the same etcd.
    let config = EtcdConfig {
        prefix: "/other".into(),
        ..etcd.config()
    };
    let other = EtcdStore::connect(config).await?;
    assert_eq!(other.prefix(), "/other/");
    assert!(other
        .list("", ListOptions::default())
        .await?
        .items
        .is_empty());
    other
        .create("edgefleet.io/clusters/retail/edge-1", v("[]"))
        .await?;
    assert!(
        raw.get("/other/edgefleet.io/clusters/retail/edge-1", None)
            .await?
            .count()
            == 1
    );
    assert_eq!(
        store
            .get("edgefleet.io/clusters/retail/edge-1")
            .await?
            .context("kept")?
            .value,
        v("{}")
    );
    Ok(())
}

#[tokio::test]
async fn etcd_over_tls_refuses_a_client_without_a_certificate() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start_tls().await?;
    let config = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..etcd.config()
    };
    match EtcdStore::connect(config).await {
        Err(StorageError::Unavailable(_)) => Ok(()),
        other => bail!("connecting without a client certificate: {other:?}"),
    }
}

#[tokio::test]
async fn etcd_that_stops_answering_is_unavailable() -> anyhow::Result<()> {
    let etcd = EtcdProcess::start().await?;
    let store: DynStorage = Arc::new(EtcdStore::connect(etcd.config()).await?);
    let mut watcher = Watcher::open(&store, "w/", 0).await?;
    drop(etcd);
    match store.create("k", v("x")).await {
        Err(StorageError::Unavailable(_)) => {}
        other => bail!("create against a dead etcd: {other:?}"),
    }
    // The watch ends with an error, not silently.
    loop {
        match watcher.next_item().await? {
            Some(Ok(WatchItem::Progress(_))) => continue,
            Some(Err(StorageError::Unavailable(_))) => break,
            other => bail!("watch of a dead etcd yielded {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn etcd_replicas_take_turns_compacting() -> anyhow::Result<()> {
    const ROUNDS: usize = 4;
    let etcd = EtcdProcess::start().await?;
    let store = EtcdStore::connect(etcd.config()).await?;
    // Two hub replicas, each with its own connection.
    let mut replicas = [
        Compactor::for_etcd(EtcdStore::connect(etcd.config()).await?),
        Compactor::for_etcd(EtcdStore::connect(etcd.config()).await?),
    ];
    let mut compactions = Vec::new();
    for round in 0..ROUNDS {
        store.create(&format!("t/{round}"), v("x")).await?;
        // Both tick in the same interval; the order alternates like unsynchronised clocks.
        let (first, second) = replicas.split_at_mut(1);
        let (a, b) = if round % 2 == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        let outcomes = [a.tick().await?, b.tick().await?];
        let compacted: Vec<_> = outcomes.into_iter().flatten().collect();
        assert!(
            compacted.len() <= 1,
            "round {round}: both replicas compacted: {compacted:?}"
        );
        compactions.extend(compacted);
    }
    // The first round only observes; every later round compacts once.
    assert_eq!(compactions.len(), ROUNDS - 1);
    assert!(compactions.windows(2).all(|w| w[0] < w[1]));
    let last = *compactions.last().expect("compacted");
    assert!(matches!(
        store.list("t/", at(last - 1)).await,
        Err(StorageError::Compacted { .. })
    ));
    store.list("t/", at(last)).await?;
    Ok(())
}
