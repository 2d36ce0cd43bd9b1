//! Leader election: controllers run on one hub replica at a time.
//!
//! The replicas share one **lease record** in the storage, beside the objects (not an API
//! object), shaped like `coordination.k8s.io/v1` `LeaseSpec`:
//!
//! ```text
//! edgefleet.io/internal/leases/<name>   {holderIdentity, leaseDurationSeconds, acquireTime,
//!                                        renewTime, leaseTransitions}
//! ```
//!
//! Every write is a compare-and-swap on the record's `mod_revision` ([`Storage::update`]), or a
//! create that fails when the record exists, so of two replicas racing for it exactly one wins.
//! As in client-go's leaderelection, expiry is judged on the **observer's own monotonic clock**,
//! never by comparing wall clocks across machines: a follower notes when it last saw the record
//! change and takes over once it has seen no change for `lease_duration`.
//!
//! ```text
//!            ┌──────────── retry_period ────────────┐
//!            ▼                                      │ held by another, seen changing
//!   ┌──► Following ── record absent, expired, or ours ──► CAS write ── won ──► Leading
//!   │                                                      └─ lost the race ──┘ (Following)
//!   │   Leading ── every retry_period: CAS renew ── ok ──► Leading
//!   │        │                                   └─ fails ─► still within renew_deadline
//!   │        │                                               of the last renewal? retry
//!   └────────┴── renew_deadline passed without a renewal, or the record names another holder
//!                 (controllers stop at once) ─► Following
//! ```
//!
//! `renew_deadline < lease_duration`, so a leader that cannot renew stops its controllers before
//! any follower may take over. On shutdown the leader releases the lease (empty holder), so a
//! follower takes over at its next retry instead of after a full lease duration.
//!
//! The defaults are kube-controller-manager's: 15 s lease, 10 s renew deadline, 2 s retry.

use std::time::Duration;

use bytes::Bytes;
use edgefleet_api::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::storage::{DynStorage, KeyValue, StorageError};

/// How long a lease is valid without renewal (kube's `--leader-elect-lease-duration`).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps trying to renew before it gives up (`--leader-elect-renew-deadline`).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between attempts to acquire or renew (`--leader-elect-retry-period`).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Storage prefix of lease records.
pub const LEASES_PREFIX: &str = "edgefleet.io/internal/leases/";

/// Timing of an election; [`Default`] is kube's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTiming {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for ElectionTiming {
    fn default() -> Self {
        ElectionTiming {
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

/// The stored lease (`coordination.k8s.io/v1` `LeaseSpec`'s fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// Who holds the lease; empty when released.
    #[serde(default)]
    pub holder_identity: String,
    pub lease_duration_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Timestamp>,
    #[serde(default)]
    pub lease_transitions: u64,
}

/// What the lease record looked like when this replica last saw it change.
#[derive(Clone, Debug)]
pub struct Observation {
    pub record: Option<LeaseRecord>,
    pub mod_revision: i64,
    /// This replica's monotonic time when the record was first seen in this form.
    pub at: Instant,
}

/// What to do about the lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it: create the record.
    Create,
    /// It is ours: renew it (compare-and-swap).
    Renew,
    /// It is free or expired: take it over (compare-and-swap).
    TakeOver,
    /// Another replica holds a live lease.
    Wait,
}

/// The pure decision of one attempt, given what was observed and when.
pub fn decide(
    me: &str,
    observed: &Observation,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    match &observed.record {
        None => Decision::Create,
        Some(r) if r.holder_identity == me => Decision::Renew,
        Some(r) if r.holder_identity.is_empty() => Decision::TakeOver,
        Some(_) if now.duration_since(observed.at) >= lease_duration => Decision::TakeOver,
        Some(_) => Decision::Wait,
    }
}

/// Whether a leader whose last successful renewal was at `last_renewed` must step down.
pub fn must_step_down(last_renewed: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.duration_since(last_renewed) >= renew_deadline
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("lease record {0} is not readable")]
    Corrupt(String),
}

/// One replica's candidacy for the lease `name`.
pub struct Elector {
    store: DynStorage,
    key: String,
    identity: String,
    timing: ElectionTiming,
    leading: watch::Sender<bool>,
}

/// The elector's states.
enum Phase {
    /// Someone else may hold the lease; try again every retry period.
    Following,
    /// We hold the lease; renewed at `renewed`.
    Leading { renewed: Instant },
}

impl Elector {
    /// A candidate named `identity` (unique per process) for the lease `name`.
    pub fn new(store: DynStorage, name: &str, identity: String, timing: ElectionTiming) -> Self {
        let (leading, _) = watch::channel(false);
        Elector {
            store,
            key: format!("{LEASES_PREFIX}{name}"),
            identity,
            timing,
            leading,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica leads now; changes as leadership is won and lost.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Campaigns until `stop` is cancelled, then releases the lease if held.
    pub async fn run(self, stop: CancellationToken) {
        let mut phase = Phase::Following;
        let mut observed: Option<Observation> = None;
        loop {
            phase = match phase {
                Phase::Following => match self.attempt(&mut observed).await {
                    Ok(true) => {
                        tracing::info!(identity = %self.identity, lease = %self.key, "became the leader");
                        self.leading.send_replace(true);
                        Phase::Leading {
                            renewed: Instant::now(),
                        }
                    }
                    Ok(false) => Phase::Following,
                    Err(err) => {
                        tracing::warn!(%err, lease = %self.key, "leader election attempt failed");
                        Phase::Following
                    }
                },
                Phase::Leading { renewed } => {
                    let outcome = self.attempt(&mut observed).await;
                    let now = Instant::now();
                    match outcome {
                        Ok(true) => Phase::Leading { renewed: now },
                        // The record names someone else: step down at once.
                        Ok(false) => self.step_down("another replica holds the lease"),
                        Err(err) if !must_step_down(renewed, now, self.timing.renew_deadline) => {
                            tracing::warn!(%err, lease = %self.key, "renewing the lease failed; retrying");
                            Phase::Leading { renewed }
                        }
                        Err(_) => self.step_down("the lease could not be renewed in time"),
                    }
                }
            };
            let pause = match phase {
                Phase::Following => jittered(self.timing.retry_period),
                Phase::Leading { .. } => self.timing.retry_period,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
            if let Phase::Leading { renewed } = phase {
                if must_step_down(renewed, Instant::now(), self.timing.renew_deadline) {
                    phase = self.step_down("the lease could not be renewed in time");
                }
            }
        }
        if *self.leading.borrow() {
            self.leading.send_replace(false);
            if let Err(err) = self.release(observed.as_ref()).await {
                tracing::warn!(%err, lease = %self.key, "releasing the lease failed");
            }
        }
    }

    fn step_down(&self, why: &str) -> Phase {
        tracing::warn!(identity = %self.identity, lease = %self.key, why, "lost the leadership");
        self.leading.send_replace(false);
        Phase::Following
    }

    /// One acquire-or-renew; whether we hold the lease afterwards.
    async fn attempt(&self, observed: &mut Option<Observation>) -> Result<bool, ElectionError> {
        let current = self.store.get(&self.key).await?;
        let now = Instant::now();
        let seen = self.observe(observed.take(), current.as_ref(), now)?;
        let decision = decide(&self.identity, &seen, now, self.timing.lease_duration);
        let result = match decision {
            Decision::Wait => Ok(false),
            Decision::Create => {
                let record = self.record(None);
                match self.store.create(&self.key, encode(&record)).await {
                    Ok(kv) => {
                        *observed = Some(self.observation(Some(record), &kv, now));
                        return Ok(true);
                    }
                    Err(StorageError::AlreadyExists { .. }) => Ok(false),
                    Err(err) => Err(err.into()),
                }
            }
            Decision::Renew | Decision::TakeOver => {
                let record = self.record(seen.record.as_ref());
                match self
                    .store
                    .update(&self.key, seen.mod_revision, encode(&record))
                    .await
                {
                    Ok(kv) => {
                        *observed = Some(self.observation(Some(record), &kv, now));
                        return Ok(true);
                    }
                    Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) => Ok(false),
                    Err(err) => Err(err.into()),
                }
            }
        };
        *observed = Some(seen);
        result
    }

    /// Updates the observation with what storage holds now, keeping the time of the last change.
    fn observe(
        &self,
        previous: Option<Observation>,
        current: Option<&KeyValue>,
        now: Instant,
    ) -> Result<Observation, ElectionError> {
        let revision = current.map_or(0, |kv| kv.mod_revision);
        if let Some(prev) = previous.filter(|p| p.mod_revision == revision) {
            return Ok(prev);
        }
        let record = current
            .map(|kv| {
                serde_json::from_slice::<LeaseRecord>(&kv.value)
                    .map_err(|_| ElectionError::Corrupt(self.key.clone()))
            })
            .transpose()?;
        Ok(Observation {
            record,
            mod_revision: revision,
            at: now,
        })
    }

    fn observation(&self, record: Option<LeaseRecord>, kv: &KeyValue, now: Instant) -> Observation {
        Observation {
            record,
            mod_revision: kv.mod_revision,
            at: now,
        }
    }

    /// The record this replica writes, given the one it replaces.
    fn record(&self, previous: Option<&LeaseRecord>) -> LeaseRecord {
        let now = Timestamp::now();
        let ours = previous.is_some_and(|p| p.holder_identity == self.identity);
        LeaseRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.timing.lease_duration.as_secs().max(1),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time)
            } else {
                Some(now)
            },
            renew_time: Some(now),
            lease_transitions: match previous {
                Some(p) if ours => p.lease_transitions,
                Some(p) => p.lease_transitions + 1,
                None => 0,
            },
        }
    }

    /// Gives the lease up (empty holder), only if it is still ours.
    async fn release(&self, observed: Option<&Observation>) -> Result<(), ElectionError> {
        let Some(seen) = observed.filter(|o| {
            o.record
                .as_ref()
                .is_some_and(|r| r.holder_identity == self.identity)
        }) else {
            return Ok(());
        };
        let mut record = seen.record.clone().unwrap_or_default();
        record.holder_identity.clear();
        record.renew_time = Some(Timestamp::now());
        match self
            .store
            .update(&self.key, seen.mod_revision, encode(&record))
            .await
        {
            Ok(_) | Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

fn encode(record: &LeaseRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("a lease record serialises"))
}

/// client-go's `wait.Jitter(retryPeriod, 1.2)`: followers spread their attempts.
fn jittered(period: Duration) -> Duration {
    use rand::Rng;
    period + period.mul_f64(rand::rng().random_range(0.0..1.2))
}

/// Runs `start` whenever this replica becomes the leader, with a token that is cancelled the
/// moment leadership is lost (or `stop` is), and waits for it to end before campaigning on.
pub async fn run_while_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
    start: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
        let term = stop.child_token();
        let watcher = {
            let term = term.clone();
            let mut leading = leading.clone();
            async move {
                while *leading.borrow_and_update() {
                    if leading.changed().await.is_err() {
                        break;
                    }
                }
                term.cancel();
            }
        };
        let run = start(term.clone());
        tokio::pin!(run);
        tokio::pin!(watcher);
        tokio::select! {
            () = &mut run => {}
            () = &mut watcher => run.await,
        }
        term.cancel();
        if stop.is_cancelled() {
            return;
        }
    }
}

/// A process-unique candidate identity for this replica.
pub fn candidate_identity(replica: &str) -> String {
    format!("{replica}_{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(holder: Option<&str>, at: Instant) -> Observation {
        Observation {
            record: holder.map(|h| LeaseRecord {
                holder_identity: h.into(),
                lease_duration_seconds: 15,
                ..Default::default()
            }),
            mod_revision: 7,
            at,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_lease_of_another_is_waited_for_until_it_stops_changing_for_a_lease_duration() {
        let t0 = Instant::now();
        let observed = seen(Some("b"), t0);
        assert_eq!(decide("a", &observed, t0, LEASE_DURATION), Decision::Wait);
        tokio::time::advance(LEASE_DURATION - Duration::from_millis(1)).await;
        assert_eq!(
            decide("a", &observed, Instant::now(), LEASE_DURATION),
            Decision::Wait
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            decide("a", &observed, Instant::now(), LEASE_DURATION),
            Decision::TakeOver
        );
    }

    #[test]
    fn absent_released_and_own_leases_are_taken_at_once() {
        let now = Instant::now();
        assert_eq!(
            decide("a", &seen(None, now), now, LEASE_DURATION),
            Decision::Create
        );
        assert_eq!(
            decide("a", &seen(Some(""), now), now, LEASE_DURATION),
            Decision::TakeOver
        );
        assert_eq!(
            decide("a", &seen(Some("a"), now), now, LEASE_DURATION),
            Decision::Renew
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_steps_down_after_the_renew_deadline_before_the_lease_expires() {
        let renewed = Instant::now();
        tokio::time::advance(RENEW_DEADLINE - Duration::from_millis(1)).await;
        assert!(!must_step_down(renewed, Instant::now(), RENEW_DEADLINE));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(must_step_down(renewed, Instant::now(), RENEW_DEADLINE));
        // Followers wait a full lease duration from their last observation of a change, which
        // is no earlier than the leader's last renewal: they cannot take over before it stopped.
        let timing = ElectionTiming::default();
        assert!(timing.renew_deadline < timing.lease_duration);
        assert!(timing.retry_period < timing.renew_deadline);
    }

    #[test]
    fn records_are_coordination_lease_shaped() {
        let record = LeaseRecord {
            holder_identity: "hub-0_x".into(),
            lease_duration_seconds: 15,
            acquire_time: None,
            renew_time: Some(Timestamp::from_second(1).unwrap()),
            lease_transitions: 2,
        };
        let v = serde_json::to_value(&record).unwrap();
        assert_eq!(v["holderIdentity"], "hub-0_x");
        assert_eq!(v["leaseDurationSeconds"], 15);
        assert_eq!(v["leaseTransitions"], 2);
        assert_eq!(serde_json::from_value::<LeaseRecord>(v).unwrap(), record);
    }

    #[tokio::test(start_paused = true)]
    async fn controllers_stop_the_moment_leadership_is_lost_and_start_again_when_won() {
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let runner = tokio::spawn(run_while_leading(rx, stop.clone(), move |term| {
            let events = events.clone();
            async move {
                let _ = events.send("started");
                term.cancelled().await;
                let _ = events.send("stopped");
            }
        }));
        tx.send_replace(true);
        assert_eq!(seen.recv().await, Some("started"));
        tx.send_replace(false);
        assert_eq!(seen.recv().await, Some("stopped"));
        tx.send_replace(true);
        assert_eq!(seen.recv().await, Some("started"));
        stop.cancel();
        assert_eq!(seen.recv().await, Some("stopped"));
        runner.await.unwrap();
    }
}
