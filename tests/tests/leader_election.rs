//! Leader election over a lease record in the storage, against both backends (the embedded
//! store and a real etcd): one leader at a time, a released lease is taken over at once, and a
//! leader whose lease another replica took stops leading.

use std::time::Duration;

use bytes::Bytes;
use edgefleet_apiserver::controllers::leader::{
    ElectionTiming, Elector, LeaseRecord, LEASES_PREFIX,
};
use edgefleet_apiserver::storage::DynStorage;
use edgefleet_e2e::conformance::Backend;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Short timings so the test takes seconds; the ratios are kube's (15 / 10 / 2).
const TIMING: ElectionTiming = ElectionTiming {
    lease_duration: Duration::from_millis(1500),
    renew_deadline: Duration::from_millis(1000),
    retry_period: Duration::from_millis(200),
};
/// Generous bound for anything that should happen within a few retry periods.
const DEADLINE: Duration = Duration::from_secs(15);

struct Candidate {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn candidate(store: &DynStorage, identity: &str) -> Candidate {
    let elector = Elector::new(store.clone(), "test", identity.into(), TIMING);
    let leading = elector.leading();
    let stop = CancellationToken::new();
    let task = tokio::spawn(elector.run(stop.clone()));
    Candidate {
        leading,
        stop,
        task,
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_leader_at_a_time_and_handover(store: DynStorage) -> anyhow::Result<()> {
    let a = candidate(&store, "a");
    let b = candidate(&store, "b");
    until("a leader", || *a.leading.borrow() || *b.leading.borrow()).await;
    // For several lease durations, never both.
    let watch_until = Instant::now() + TIMING.lease_duration * 3;
    while Instant::now() < watch_until {
        assert!(
            !(*a.leading.borrow() && *b.leading.borrow()),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (leader, follower) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    assert!(!*follower.leading.borrow());

    // A leader that stops releases the lease: the follower takes over within a few retries,
    // well before a lease duration would have run out.
    let stopped = Instant::now();
    leader.stop.cancel();
    leader.task.await?;
    until("the follower leads", || *follower.leading.borrow()).await;
    assert!(
        stopped.elapsed() < TIMING.lease_duration,
        "took over after {:?}",
        stopped.elapsed()
    );

    // Someone else writes the lease (another replica that won it): the leader stops leading.
    let key = format!("{LEASES_PREFIX}test");
    let current = store.get(&key).await?.expect("the lease record exists");
    let intruder = LeaseRecord {
        holder_identity: "intruder".into(),
        lease_duration_seconds: 1,
        ..Default::default()
    };
    store
        .update(
            &key,
            current.mod_revision,
            Bytes::from(serde_json::to_vec(&intruder)?),
        )
        .await?;
    until("the leader steps down", || !*follower.leading.borrow()).await;
    // The intruder never renews: after a lease duration without change, it is taken over.
    until("leading again after the intruder's lease expired", || {
        *follower.leading.borrow()
    })
    .await;
    let record: LeaseRecord = serde_json::from_slice(&store.get(&key).await?.unwrap().value)?;
    assert_ne!(record.holder_identity, "intruder");
    assert_eq!(
        record.lease_transitions,
        intruder.lease_transitions + 1,
        "a takeover is a transition"
    );
    follower.stop.cancel();
    follower.task.await?;
    let released: LeaseRecord = serde_json::from_slice(&store.get(&key).await?.unwrap().value)?;
    assert_eq!(released.holder_identity, "", "released on shutdown");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_elects_one_leader_at_a_time() -> anyhow::Result<()> {
    let backend = Backend::embedded().await?;
    one_leader_at_a_time_and_handover(backend.store.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_elects_one_leader_at_a_time() -> anyhow::Result<()> {
    let backend = Backend::etcd().await?;
    one_leader_at_a_time_and_handover(backend.store.clone()).await
}
