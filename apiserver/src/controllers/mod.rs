//! The hub's controllers: what every cluster must run, getting it there, and the statuses that
//! say how it stands (DESIGN.md §8). They run on one replica at a time ([`leader`]).
//!
//! ```text
//!  watch caches (5 kinds) ──► SnapshotBuilder ──► Snapshot ──targets::compute──► Targets
//!   (registry/cacher.rs)        [snapshot]                        [targets]     per cluster: releases
//!                                                                               + who placed them
//!  agents' facts ─────────────────────────────────────┐                            │
//!   (agents/observed.rs)                               ▼                            ▼
//!                                       gate::gate(target, what the agent runs)  [gate]
//!                                                      │ per cluster: DesiredBundle (hash)
//!                            ┌─────────────────────────┼──────────────────────────┐
//!                            ▼                         ▼                          ▼
//!                 Deliverer [delivery]      agents::status (Cluster.status   aggregate [aggregate]
//!                 PUT bundle / content      .addons[], AddonsReady)          Placement, ClusterAddon,
//!                 over each tunnel                                           Environment, Fleet status
//!                                                                              └─► StatusWriter [writer]
//! ```
//!
//! Everything derived lives in memory, rebuilt from the caches after a restart or a change of
//! leader; nothing is stored per cluster per add-on. The loop ([`run`]) wakes on any cache
//! change or any agent report, waits [`PLAN_DEBOUNCE`] for the burst to end, recomputes the
//! targets only when something they depend on changed (specs and labels, not statuses), the
//! gate only for the clusters affected, and the aggregated statuses at most every
//! [`AGGREGATE_INTERVAL`].

pub mod aggregate;
pub mod cluster_status;
pub mod content;
pub mod delivery;
pub mod gate;
pub mod leader;
pub mod snapshot;
pub mod targets;
pub mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_api::agent::agent_identity;
use edgefleet_api::delivery::DesiredBundle;
use edgefleet_api::jiff::Timestamp;
use edgefleet_tunnel::SessionRegistry;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agents::observed::{Feed, Observations};
use crate::agents::status::ClusterStatusHandle;
use crate::registry::Registry;
use delivery::{Contents, Deliverable, Deliverer, DeliveryHandle, Wanted};
use leader::{candidate_identity, run_while_leading, ElectionTiming, Elector};
use snapshot::{ObjectKey, Snapshot, SnapshotBuilder};
use targets::Targets;
use writer::{merge_diff, StatusWriter, StatusWriterHandle};

/// A burst of changes (an apply of many objects, a reconnect storm) is waited out this long
/// before the controllers recompute.
pub const PLAN_DEBOUNCE: Duration = Duration::from_millis(100);
/// Aggregated statuses are recomputed at most this often.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(1);
/// The lease the controllers' leader holds.
pub const LEASE_NAME: &str = "controllers";

/// What the controllers reach of the agents' side, when the hub has a tunnel port.
#[derive(Clone)]
pub struct AgentLink {
    pub sessions: SessionRegistry,
    pub observations: Observations,
    pub cluster_status: ClusterStatusHandle,
}

/// The running election and controllers.
pub struct Controllers {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Controllers {
    /// Campaigns for the lease as `replica`, and runs the controllers while this replica leads.
    pub fn spawn(
        registry: Registry,
        agents: Option<AgentLink>,
        replica: &str,
        timing: ElectionTiming,
    ) -> Controllers {
        let elector = Elector::new(
            registry.storage().clone(),
            LEASE_NAME,
            candidate_identity(replica),
            timing,
        );
        let leading = elector.leading();
        let stop = CancellationToken::new();
        let election = tokio::spawn(elector.run(stop.clone()));
        let controllers = tokio::spawn(run_while_leading(
            leading.clone(),
            stop.clone(),
            move |term| run(registry.clone(), agents.clone(), term),
        ));
        Controllers {
            leading,
            stop,
            tasks: vec![election, controllers],
        }
    }

    /// Whether this replica leads now.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops the controllers and releases the lease, so another replica takes over at once.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// What the controllers derived last.
#[derive(Default)]
struct State {
    targets: Targets,
    contents: Contents,
    /// The bundle delivered to each cluster, whether it was paused, and on which sessions.
    delivered: BTreeMap<ObjectKey, (Arc<DesiredBundle>, bool, Deliverable)>,
}

/// The controllers' loop, until `term` is cancelled (leadership lost, or shutdown).
pub async fn run(registry: Registry, agents: Option<AgentLink>, term: CancellationToken) {
    let (writer, statuses) = StatusWriter::new(registry.clone());
    tokio::spawn(writer.run(term.clone()));
    let delivery = agents.as_ref().map(|a| {
        let (deliverer, handle) = Deliverer::new(
            a.sessions.clone(),
            a.observations.subscribe(),
            Some(a.cluster_status.clone()),
        );
        tokio::spawn(deliverer.run(term.clone()));
        handle
    });
    let feed: Option<Feed> = agents.as_ref().map(|a| a.observations.subscribe());
    let mut builder = SnapshotBuilder::new(registry);
    let wake = Arc::new(Notify::new());
    for cacher in builder.cachers() {
        let (wake, term) = (wake.clone(), term.clone());
        let mut revisions = cacher.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = term.cancelled() => return,
                    changed = revisions.changed() => {
                        if changed.is_err() { return }
                        wake.notify_one();
                    }
                }
            }
        });
    }

    let mut state = State::default();
    let mut first = true;
    let mut aggregate_due = true;
    let mut last_aggregate: Option<Instant> = None;
    tracing::info!("controllers started");
    loop {
        if !first {
            let aggregate_wait = async {
                match (aggregate_due, last_aggregate) {
                    (true, Some(at)) => tokio::time::sleep_until(at + AGGREGATE_INTERVAL).await,
                    (true, None) => {}
                    (false, _) => std::future::pending().await,
                }
            };
            tokio::select! {
                () = term.cancelled() => break,
                () = wake.notified() => {}
                () = changed(feed.as_ref()) => {}
                () = aggregate_wait => {}
            }
            tokio::time::sleep(PLAN_DEBOUNCE).await;
        }
        if term.is_cancelled() {
            break;
        }
        if !builder.is_ready() {
            // A partial snapshot would look like mass deletion: wait for the first lists.
            tokio::time::sleep(PLAN_DEBOUNCE).await;
            wake.notify_one();
            continue;
        }
        let (snapshot, changes) = builder.build();
        let reported = feed.as_ref().map(Feed::take).unwrap_or_default();
        let mut delivered_changed = false;
        if changes.targets || first {
            state.targets = targets::compute(&snapshot);
            state.contents = Arc::new(state.targets.contents.clone());
            let keys: Vec<ObjectKey> = state.targets.clusters.keys().cloned().collect();
            for key in keys {
                delivered_changed |= deliver(&mut state, &key, agents.as_ref(), delivery.as_ref());
            }
            let gone: Vec<ObjectKey> = state
                .delivered
                .keys()
                .filter(|k| !state.targets.clusters.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                state.delivered.remove(&key);
                if let Some(d) = &delivery {
                    d.want(agent_identity(&key.0, &key.1).into(), None);
                }
                delivered_changed = true;
            }
        } else {
            for identity in reported {
                let Some((ns, name)) = edgefleet_api::agent::parse_agent_identity(&identity) else {
                    continue;
                };
                let key = (ns.to_string(), name.to_string());
                if state
                    .targets
                    .clusters
                    .get(&key)
                    .is_some_and(gate::depends_on_reports)
                {
                    delivered_changed |=
                        deliver(&mut state, &key, agents.as_ref(), delivery.as_ref());
                }
            }
        }
        first = false;
        aggregate_due |= changes.any || delivered_changed;
        let now = Instant::now();
        if aggregate_due && last_aggregate.is_none_or(|at| now >= at + AGGREGATE_INTERVAL) {
            aggregate(&snapshot, &state, &statuses, Timestamp::now());
            aggregate_due = false;
            last_aggregate = Some(now);
        }
    }
    tracing::info!("controllers stopped");
}

async fn changed(feed: Option<&Feed>) {
    match feed {
        Some(feed) => feed.changed().await,
        None => std::future::pending().await,
    }
}

/// Gates one cluster's target and hands a changed bundle to delivery and to its status.
fn deliver(
    state: &mut State,
    key: &ObjectKey,
    agents: Option<&AgentLink>,
    delivery: Option<&DeliveryHandle>,
) -> bool {
    let Some(target) = state.targets.clusters.get(key) else {
        return false;
    };
    let identity: Arc<str> = agent_identity(&key.0, &key.1).into();
    let observed = agents.and_then(|a| a.observations.get(&identity));
    // A hold keeps what the agent runs; a bundle computed without its report on the live
    // session would leave out, and so prune, what the hold is meant to keep.
    let deliverable = match &observed {
        _ if !gate::depends_on_reports(target) => Deliverable::Any,
        Some(o) if o.connected && o.facts.is_some() => Deliverable::Session(o.session_id),
        _ => Deliverable::NotYet,
    };
    let running = observed
        .and_then(|o| o.facts)
        .map(|f| f.addons)
        .unwrap_or_default();
    let bundle = Arc::new(gate::bundle(gate::gate(target, &running)));
    let paused = target.paused;
    if state
        .delivered
        .get(key)
        .is_some_and(|(b, p, d)| b.hash == bundle.hash && *p == paused && *d == deliverable)
    {
        return false;
    }
    state
        .delivered
        .insert(key.clone(), (bundle.clone(), paused, deliverable));
    if let Some(d) = delivery {
        d.want(
            identity.clone(),
            Some(Wanted {
                bundle: bundle.clone(),
                contents: state.contents.clone(),
                paused,
                deliverable,
            }),
        );
    }
    if let Some(a) = agents {
        a.cluster_status.set_bundle(identity, bundle, paused);
    }
    true
}

/// Submits every aggregated status that differs from the stored one.
fn aggregate(snapshot: &Snapshot, state: &State, statuses: &StatusWriterHandle, now: Timestamp) {
    let delivered: BTreeMap<ObjectKey, String> = state
        .delivered
        .iter()
        .map(|(k, (b, _, _))| (k.clone(), b.hash.clone()))
        .collect();
    for (key, placement) in &snapshot.placements {
        let Some(resolution) = state.targets.placements.get(key) else {
            continue;
        };
        let status = aggregate::placement_status(
            key,
            placement,
            resolution,
            snapshot,
            &state.targets,
            &delivered,
            now,
        );
        submit(
            statuses,
            "placements",
            key,
            placement.status.as_ref(),
            &status,
        );
    }
    for (key, addon) in &snapshot.addons {
        let status = aggregate::addon_status(key, addon, snapshot, &state.targets, now);
        submit(
            statuses,
            "clusteraddons",
            key,
            addon.status.as_ref(),
            &status,
        );
    }
    for (key, env) in &snapshot.environments {
        let status = aggregate::environment_status(&key.1, env, snapshot, &state.targets, now);
        submit(statuses, "environments", key, env.status.as_ref(), &status);
    }
    for (key, fleet) in &snapshot.fleets {
        let status = aggregate::fleet_status(key, fleet, snapshot);
        submit(statuses, "fleets", key, fleet.status.as_ref(), &status);
    }
}

fn submit<S: Serialize + PartialEq + Default>(
    statuses: &StatusWriterHandle,
    plural: &'static str,
    key: &ObjectKey,
    stored: Option<&S>,
    computed: &S,
) {
    let default = S::default();
    let stored = stored.unwrap_or(&default);
    if stored == computed {
        return;
    }
    let (Ok(old), Ok(new)) = (serde_json::to_value(stored), serde_json::to_value(computed)) else {
        return;
    };
    if let Some(patch) = merge_diff(&old, &new) {
        statuses.submit((plural, key.0.clone(), key.1.clone()), patch);
    }
}
