//! `Cluster.status` from the tunnel: connection state, the facts each agent streams, and how
//! the add-ons delivered to it stand.
//!
//! ```text
//! session events ──┐                        ┌─ per cluster: desired status (watch channel)
//! facts streams  ──┤                        │      └─► writer task: PATCH /status when the
//! startup sweep  ──┼─► controller loop ─────┤          desired status changed, after it settled
//! delivered      ──┘   (one owner of state) │          (STATUS_SETTLE), at most once per
//!  bundles (controllers)                    │          STATUS_MIN_INTERVAL, retried, at most
//!                                           │          WRITE_CONCURRENCY at once
//!                                           └─ Observations (in memory): what each agent said,
//!                                              for the controllers
//! ```
//!
//! Status is written when something a user can see changes — connection state, version, nodes,
//! GPUs, an add-on's state — never per heartbeat: heartbeats only refresh the in-memory time
//! that the next real write records as `lastHeartbeatTime`. A cluster whose add-ons go
//! Pending → Applied → Ready within the settle time is written once. `status.addons[]` and the
//! `AddonsReady` condition compare the agent's reports with the bundle the controllers
//! delivered ([`crate::controllers::cluster_status`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgefleet_api::agent::{parse_agent_identity, ClusterFacts, FACTS_PATH};
use edgefleet_api::delivery::DesiredBundle;
use edgefleet_api::jiff::Timestamp;
use edgefleet_tunnel::{body, SessionEvent, SessionEventKind, SessionRegistry};
use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use super::observed::Observations;
use crate::controllers::cluster_status::{addon_states, addons_ready, Presence};
use crate::errors::ApiError;
use crate::registry::object::time_string;
use crate::registry::{Patch, Registry, Target, WriteOptions};

/// The field manager of the hub's status writes.
pub const FIELD_MANAGER: &str = "edgefleet-hub";
/// Status writes in flight at once (a reconnect storm must not flood storage).
const WRITE_CONCURRENCY: usize = 32;
/// Pause before re-opening a facts stream that ended while its session lives on.
const FACTS_RETRY: Duration = Duration::from_secs(2);
/// Pause before retrying a failed status write.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// A change waits this long for the changes that usually follow it (the first facts line after
/// a connection, an add-on going Applied then Ready), so they make one write.
pub const STATUS_SETTLE: Duration = Duration::from_millis(500);
/// Least time between two status writes of one cluster.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The condition the add-ons' state is summarised in.
pub const ADDONS_READY_CONDITION: &str = "AddonsReady";
/// After start-up, clusters that this replica recorded as connected but whose agent has not
/// come back within this time are marked Disconnected (agents retry within 30 s).
pub const STARTUP_GRACE: Duration = Duration::from_secs(45);

/// What a cluster's status should say.
#[derive(Clone, Debug, PartialEq)]
struct Desired {
    /// `None` until this hub knows (the agent connected, or the start-up sweep decided): the
    /// stored connection is then left as it is.
    connection: Option<Connection>,
    facts: Option<ClusterFacts>,
    /// Not compared: a newer heartbeat alone does not call for a write.
    heartbeat: Timestamp,
    /// The bundle delivered to the cluster, once the controllers computed one.
    bundle: Option<Arc<DesiredBundle>>,
    paused: bool,
    /// Why the last delivery of the bundle failed, while it keeps failing.
    delivery_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Connection {
    connected: bool,
    since: Timestamp,
}

impl Desired {
    fn unknown() -> Self {
        Desired {
            connection: None,
            facts: None,
            heartbeat: Timestamp::now(),
            bundle: None,
            paused: false,
            delivery_error: None,
        }
    }
}

/// Hands the cluster status writer the bundles the controllers deliver. Cheap to clone.
#[derive(Clone)]
pub struct ClusterStatusHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl ClusterStatusHandle {
    /// The bundle delivered to `identity`'s cluster is now `bundle`.
    pub fn set_bundle(&self, identity: Arc<str>, bundle: Arc<DesiredBundle>, paused: bool) {
        let _ = self.tx.send(Input::Bundle {
            identity,
            bundle,
            paused,
        });
    }

    /// Delivering to `identity`'s agent fails with `error` (`None`: it succeeded).
    pub fn set_delivery_error(&self, identity: Arc<str>, error: Option<String>) {
        let _ = self.tx.send(Input::DeliveryError { identity, error });
    }
}

enum Input {
    Session(SessionEvent),
    Facts {
        identity: Arc<str>,
        session_id: u64,
        facts: ClusterFacts,
    },
    Bundle {
        identity: Arc<str>,
        bundle: Arc<DesiredBundle>,
        paused: bool,
    },
    DeliveryError {
        identity: Arc<str>,
        error: Option<String>,
    },
    Lagged,
    Sweep,
}

struct Tracked {
    session_id: u64,
    desired: watch::Sender<Desired>,
}

/// Writes cluster status from session events, facts and delivered bundles.
pub struct StatusController {
    registry: Registry,
    sessions: SessionRegistry,
    replica: String,
    writes: Arc<Semaphore>,
    observations: Observations,
    tx: mpsc::UnboundedSender<Input>,
    rx: mpsc::UnboundedReceiver<Input>,
}

fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or_else(|_| Timestamp::now())
}

impl StatusController {
    pub fn new(registry: Registry, sessions: SessionRegistry, replica: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        StatusController {
            registry,
            sessions,
            replica,
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            observations: Observations::new(),
            tx,
            rx,
        }
    }

    /// What agents said, for the controllers.
    pub fn observations(&self) -> Observations {
        self.observations.clone()
    }

    /// Where the controllers hand over delivered bundles.
    pub fn handle(&self) -> ClusterStatusHandle {
        ClusterStatusHandle {
            tx: self.tx.clone(),
        }
    }

    /// Runs until the session registry goes away.
    pub async fn run(mut self) {
        let tx = self.tx.clone();
        let mut rx = std::mem::replace(&mut self.rx, mpsc::unbounded_channel().1);
        let mut events = self.sessions.subscribe();
        let forward = tx.clone();
        tokio::spawn(async move {
            loop {
                let input = match events.recv().await {
                    Ok(event) => Input::Session(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => Input::Lagged,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if forward.send(input).is_err() {
                    return;
                }
            }
        });
        let sweep = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(STARTUP_GRACE).await;
            let _ = sweep.send(Input::Sweep);
        });
        // Sessions that connected before we subscribed.
        for session in self.sessions.sessions() {
            let _ = tx.send(Input::Session(SessionEvent {
                identity: session.identity().into(),
                session_id: session.id(),
                at: session.connected_at(),
                kind: SessionEventKind::Connected {
                    peer_addr: session.peer_addr(),
                    agent_version: session.agent_version().into(),
                },
            }));
        }

        let mut tracked: HashMap<Arc<str>, Tracked> = HashMap::new();
        while let Some(input) = rx.recv().await {
            match input {
                Input::Session(event) => self.on_session(event, &mut tracked, &tx),
                Input::Facts {
                    identity,
                    session_id,
                    facts,
                } => {
                    if let Some(t) = tracked
                        .get(&identity)
                        .filter(|t| t.session_id == session_id)
                    {
                        self.observations.update(&identity, |o| {
                            let changed =
                                o.session_id == session_id && o.facts.as_ref() != Some(&facts);
                            if changed {
                                o.facts = Some(facts.clone());
                            }
                            changed
                        });
                        t.desired.send_if_modified(|d| {
                            d.heartbeat = Timestamp::now();
                            let changed = d.facts.as_ref() != Some(&facts);
                            d.facts = Some(facts);
                            changed
                        });
                    }
                }
                Input::Bundle {
                    identity,
                    bundle,
                    paused,
                } => {
                    let t = tracked.entry(identity.clone()).or_insert_with(|| Tracked {
                        session_id: 0,
                        desired: self.spawn_writer(identity.clone(), Desired::unknown()),
                    });
                    t.desired.send_if_modified(|d| {
                        let changed = d.bundle.as_ref().map(|b| &b.hash) != Some(&bundle.hash)
                            || d.paused != paused;
                        d.bundle = Some(bundle);
                        d.paused = paused;
                        changed
                    });
                }
                Input::DeliveryError { identity, error } => {
                    if let Some(t) = tracked.get(&identity) {
                        t.desired.send_if_modified(|d| {
                            let changed = d.delivery_error != error;
                            d.delivery_error = error;
                            changed
                        });
                    }
                }
                Input::Lagged => self.resync(&mut tracked, &tx),
                Input::Sweep => self.sweep(&mut tracked).await,
            }
        }
    }

    fn on_session(
        &self,
        event: SessionEvent,
        tracked: &mut HashMap<Arc<str>, Tracked>,
        tx: &mpsc::UnboundedSender<Input>,
    ) {
        let at = timestamp(event.at);
        match event.kind {
            SessionEventKind::Connected { .. } => {
                self.observations.update(&event.identity, |o| {
                    *o = super::observed::Observed {
                        connected: true,
                        session_id: event.session_id,
                        facts: None,
                    };
                    true
                });
                let desired = Desired {
                    connection: Some(Connection {
                        connected: true,
                        since: at,
                    }),
                    heartbeat: at,
                    ..Desired::unknown()
                };
                match tracked.get_mut(&event.identity) {
                    Some(t) => {
                        t.session_id = event.session_id;
                        t.desired.send_modify(|d| {
                            d.connection = Some(Connection {
                                connected: true,
                                since: at,
                            });
                            d.heartbeat = at;
                        });
                    }
                    None => {
                        let sender = self.spawn_writer(event.identity.clone(), desired);
                        tracked.insert(
                            event.identity.clone(),
                            Tracked {
                                session_id: event.session_id,
                                desired: sender,
                            },
                        );
                    }
                }
                self.follow_facts(event.identity, event.session_id, tx.clone());
            }
            SessionEventKind::Disconnected { reason } => {
                if let Some(t) = tracked
                    .get(&event.identity)
                    .filter(|t| t.session_id == event.session_id)
                {
                    tracing::info!(identity = %event.identity, ?reason, "agent disconnected");
                    self.observations.update(&event.identity, |o| {
                        let changed = o.connected;
                        o.connected = false;
                        changed
                    });
                    t.desired.send_modify(|d| {
                        d.connection = Some(Connection {
                            connected: false,
                            since: at,
                        });
                    });
                }
            }
        }
    }

    /// After a lagged broadcast: align with the sessions that exist now.
    fn resync(&self, tracked: &mut HashMap<Arc<str>, Tracked>, tx: &mpsc::UnboundedSender<Input>) {
        let live: HashMap<String, _> = self
            .sessions
            .sessions()
            .into_iter()
            .map(|s| (s.identity().to_string(), s))
            .collect();
        for (identity, t) in tracked.iter() {
            if !live.contains_key(identity.as_ref()) {
                self.observations.update(identity, |o| {
                    let changed = o.connected;
                    o.connected = false;
                    changed
                });
                t.desired.send_if_modified(|d| {
                    let changed = d.connection.is_some_and(|c| c.connected);
                    if changed {
                        d.connection = Some(Connection {
                            connected: false,
                            since: Timestamp::now(),
                        });
                    }
                    changed
                });
            }
        }
        for session in live.values() {
            let known = tracked.get(session.identity()).is_some_and(|t| {
                t.session_id == session.id()
                    && t.desired.borrow().connection.is_some_and(|c| c.connected)
            });
            if !known {
                self.on_session(
                    SessionEvent {
                        identity: session.identity().into(),
                        session_id: session.id(),
                        at: session.connected_at(),
                        kind: SessionEventKind::Connected {
                            peer_addr: session.peer_addr(),
                            agent_version: session.agent_version().into(),
                        },
                    },
                    tracked,
                    tx,
                );
            }
        }
    }

    /// Clusters this replica left Connected before a restart, whose agents did not return.
    async fn sweep(&self, tracked: &mut HashMap<Arc<str>, Tracked>) {
        let Some(clusters) = self.registry.resource("clusters") else {
            return;
        };
        let snapshot = clusters.cacher().snapshot(&clusters.key_prefix);
        for obj in snapshot.objects {
            let value: Value = serde_json::from_slice(&obj.json).unwrap_or_default();
            let connection = &value["status"]["connection"];
            let identity: Arc<str> =
                edgefleet_api::agent::agent_identity(&obj.namespace, &obj.name).into();
            let seen_here = tracked
                .get(&identity)
                .is_some_and(|t| t.desired.borrow().connection.is_some());
            if connection["state"] == "Connected"
                && connection["hubReplica"] == self.replica.as_str()
                && !self.sessions.is_connected(&identity)
                && !seen_here
            {
                let now = Timestamp::now();
                let disconnected = Connection {
                    connected: false,
                    since: now,
                };
                match tracked.get(&identity) {
                    Some(t) => t.desired.send_modify(|d| d.connection = Some(disconnected)),
                    None => {
                        let desired = Desired {
                            connection: Some(disconnected),
                            ..Desired::unknown()
                        };
                        let sender = self.spawn_writer(identity.clone(), desired);
                        tracked.insert(
                            identity,
                            Tracked {
                                session_id: 0,
                                desired: sender,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Reads the agent's facts stream while its session lives.
    fn follow_facts(&self, identity: Arc<str>, session_id: u64, tx: mpsc::UnboundedSender<Input>) {
        let sessions = self.sessions.clone();
        tokio::spawn(async move {
            loop {
                let Some(session) = sessions.get(&identity).filter(|s| s.id() == session_id) else {
                    return;
                };
                let request = Request::get(FACTS_PATH)
                    .body(body::empty())
                    .expect("a static request");
                if let Ok(response) = session.send(request).await {
                    if response.status().is_success() {
                        let mut frames = response.into_body().into_data_stream();
                        let mut buf: Vec<u8> = Vec::new();
                        while let Some(Ok(chunk)) = frames.next().await {
                            buf.extend_from_slice(&chunk);
                            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = buf.drain(..=end).collect();
                                match serde_json::from_slice::<ClusterFacts>(&line) {
                                    Ok(facts) => {
                                        let input = Input::Facts {
                                            identity: identity.clone(),
                                            session_id,
                                            facts,
                                        };
                                        if tx.send(input).is_err() {
                                            return;
                                        }
                                    }
                                    Err(err) => {
                                        tracing::debug!(%identity, %err, "unreadable facts line")
                                    }
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(FACTS_RETRY).await;
            }
        });
    }

    /// A task that writes the cluster's status whenever its desired status changes.
    fn spawn_writer(&self, identity: Arc<str>, initial: Desired) -> watch::Sender<Desired> {
        let (tx, mut rx) = watch::channel(initial);
        rx.mark_changed();
        let (registry, replica, writes) = (
            self.registry.clone(),
            self.replica.clone(),
            self.writes.clone(),
        );
        tokio::spawn(async move {
            let Some((namespace, name)) = parse_agent_identity(&identity) else {
                return;
            };
            while rx.changed().await.is_ok() {
                // Let the changes that follow this one arrive, so they make one write.
                tokio::time::sleep(STATUS_SETTLE).await;
                loop {
                    let desired = rx.borrow_and_update().clone();
                    let _permit = writes.acquire().await;
                    match write_status(&registry, namespace, name, &replica, &desired).await {
                        Ok(()) => break,
                        Err(ApiError::NotFound { .. }) => return,
                        Err(err) => {
                            tracing::warn!(%identity, %err, "writing cluster status failed; retrying");
                            tokio::time::sleep(WRITE_RETRY).await;
                        }
                    }
                }
                tokio::time::sleep(STATUS_MIN_INTERVAL.saturating_sub(STATUS_SETTLE)).await;
            }
        });
        tx
    }
}

/// The status patch for `desired`, given the stored status (whose conditions it keeps where it
/// has nothing newer to say, and whose transition times it keeps while a condition holds).
fn status_patch(replica: &str, desired: &Desired, stored: &Value) -> Value {
    let mut status = json!({});
    let mut conditions: Vec<Value> = stored["conditions"].as_array().cloned().unwrap_or_default();
    if let Some(connection) = &desired.connection {
        let since = time_string(connection.since);
        let (state, condition, reason) = if connection.connected {
            ("Connected", "True", "AgentConnected")
        } else {
            ("Disconnected", "False", "AgentDisconnected")
        };
        status["connection"] = json!({"state": state, "since": since, "hubReplica": replica});
        status["lastHeartbeatTime"] = json!(time_string(desired.heartbeat));
        set_condition(
            &mut conditions,
            json!({
                "type": "Ready",
                "status": condition,
                "reason": reason,
                "message": format!("The agent's tunnel to hub replica {replica} is {}.", state.to_lowercase()),
                "lastTransitionTime": since,
            }),
        );
    }
    if let Some(facts) = &desired.facts {
        status["kubernetesVersion"] = json!(facts.kubernetes_version);
        status["nodes"] = json!(facts.nodes);
        status["gpus"] = json!(facts.gpus);
    }
    // An empty bundle on a cluster that never had add-ons says nothing worth a write.
    let had_addons = stored["addons"].as_array().is_some_and(|a| !a.is_empty())
        || conditions
            .iter()
            .any(|c| c["type"] == ADDONS_READY_CONDITION);
    if let Some(bundle) = desired
        .bundle
        .as_ref()
        .filter(|b| !b.releases.is_empty() || had_addons)
    {
        let presence = match desired.connection {
            Some(c) if c.connected => Presence::Connected,
            Some(_) => Presence::Disconnected,
            None => Presence::Unknown,
        };
        let reports = desired
            .facts
            .as_ref()
            .map(|f| f.addons.as_slice())
            .unwrap_or_default();
        let states = addon_states(
            bundle,
            reports,
            presence,
            desired.paused,
            desired.delivery_error.as_deref(),
        );
        let (ready, reason, message) = addons_ready(&states);
        let condition = if ready { "True" } else { "False" };
        let previous = conditions
            .iter()
            .find(|c| c["type"] == ADDONS_READY_CONDITION)
            .filter(|c| c["status"] == condition)
            .and_then(|c| c["lastTransitionTime"].as_str().map(String::from));
        set_condition(
            &mut conditions,
            json!({
                "type": ADDONS_READY_CONDITION,
                "status": condition,
                "reason": reason,
                "message": message,
                "lastTransitionTime": previous.unwrap_or_else(|| time_string(Timestamp::now())),
            }),
        );
        status["addons"] = json!(states);
    }
    status["conditions"] = Value::Array(conditions);
    json!({ "status": status })
}

/// Replaces the condition of the same type, or appends it.
fn set_condition(conditions: &mut Vec<Value>, condition: Value) {
    match conditions
        .iter_mut()
        .find(|c| c["type"] == condition["type"])
    {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

async fn write_status(
    registry: &Registry,
    namespace: &str,
    name: &str,
    replica: &str,
    desired: &Desired,
) -> Result<(), ApiError> {
    let clusters = registry.resource("clusters").ok_or(ApiError::NoSuchPath)?;
    let opts = WriteOptions {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    let (cached, _) = clusters.cacher().get(&clusters.key(namespace, name));
    let stored: Value = cached
        .and_then(|c| serde_json::from_slice::<Value>(&c.json).ok())
        .map(|v| v["status"].clone())
        .unwrap_or(Value::Null);
    let patch = status_patch(replica, desired, &stored);
    if unchanged(&stored, &patch["status"]) {
        return Ok(());
    }
    let patch = Patch::Merge(patch);
    clusters
        .patch(namespace, name, Target::Status, patch, &opts)
        .await
        .map(|_| ())
}

/// Whether writing `status` over `stored` would change nothing a user sees (the heartbeat time
/// alone is not worth a write).
fn unchanged(stored: &Value, status: &Value) -> bool {
    let Some(fields) = status.as_object() else {
        return false;
    };
    fields
        .iter()
        .filter(|(k, _)| k.as_str() != "lastHeartbeatTime")
        .all(|(k, v)| &stored[k] == v)
}
