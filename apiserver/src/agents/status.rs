//! `Cluster.status` from the tunnel: connection state, and the facts each agent streams.
//!
//! ```text
//! session events ──┐                        ┌─ per cluster: desired status (watch channel)
//! facts streams  ──┼─► controller loop ─────┤      └─► writer task: PATCH /status when the
//! startup sweep  ──┘   (one owner of state) │          desired status changed (coalesced,
//!                                           │          retried), at most WRITE_CONCURRENCY at once
//! ```
//!
//! Status is written when something a user can see changes — connection state, version, nodes,
//! GPUs — never per heartbeat: heartbeats only refresh the in-memory time that the next real
//! write records as `lastHeartbeatTime`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgefleet_api::agent::{parse_agent_identity, ClusterFacts, FACTS_PATH};
use edgefleet_api::jiff::Timestamp;
use edgefleet_tunnel::{body, Session, SessionEvent, SessionEventKind, SessionRegistry};
use futures::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use crate::errors::ApiError;
use crate::registry::object::time_string;
use crate::registry::{Patch, Registry, Target, WriteOptions};
use crate::tasks::Tasks;

/// The field manager of the hub's status writes.
pub const FIELD_MANAGER: &str = "edgefleet-hub";
/// Status writes in flight at once (a reconnect storm must not flood storage).
const WRITE_CONCURRENCY: usize = 32;
/// Pause before re-opening a facts stream that ended while its session lives on.
const FACTS_RETRY: Duration = Duration::from_secs(2);
/// Pause before retrying a failed status write.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// After start-up, clusters that this replica recorded as connected but whose agent has not
/// come back within this time are marked Disconnected (agents retry within 30 s).
pub const STARTUP_GRACE: Duration = Duration::from_secs(45);
/// Inputs (session events, facts lines) waiting for the controller loop. The loop handles one
/// in microseconds (no I/O: writes are the writers' tasks), so 1,024 is milliseconds of work,
/// about 1 MiB of facts at most. When it is full, senders wait: a facts stream stops being
/// read, so HTTP/2 flow control holds the agent back, and the session-event forwarder falls
/// behind the broadcast, which the loop answers with a resync. Up to 10,000 facts streams feed
/// it; none can make the hub queue without bound.
const INPUT_QUEUE: usize = 1024;

/// What a cluster's status should say.
#[derive(Clone, Debug, PartialEq)]
struct Desired {
    connected: bool,
    since: Timestamp,
    facts: Option<ClusterFacts>,
    /// Not compared: a newer heartbeat alone does not call for a write.
    heartbeat: Timestamp,
}

enum Input {
    Session(SessionEvent),
    Facts {
        identity: Arc<str>,
        session_id: u64,
        facts: ClusterFacts,
    },
    Lagged,
    Sweep,
}

struct Tracked {
    session_id: u64,
    desired: watch::Sender<Desired>,
}

/// Writes cluster status from session events and facts.
pub struct StatusController {
    registry: Registry,
    sessions: SessionRegistry,
    replica: String,
    writes: Arc<Semaphore>,
    /// Where the controller's own tasks run (they stop with the hub).
    tasks: Tasks,
}

fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or_else(|_| Timestamp::now())
}

impl StatusController {
    pub fn new(
        registry: Registry,
        sessions: SessionRegistry,
        replica: String,
        tasks: Tasks,
    ) -> Self {
        StatusController {
            registry,
            sessions,
            replica,
            writes: Arc::new(Semaphore::new(WRITE_CONCURRENCY)),
            tasks,
        }
    }

    /// Runs until the session registry goes away.
    pub async fn run(self) {
        let (tx, mut rx) = input_queue();
        let mut events = self.sessions.subscribe();
        let forward = tx.clone();
        self.tasks.spawn(async move {
            loop {
                let input = match events.recv().await {
                    Ok(event) => Input::Session(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => Input::Lagged,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if forward.send(input).await.is_err() {
                    return;
                }
            }
        });
        let sweep = tx.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(STARTUP_GRACE).await;
            let _ = sweep.send(Input::Sweep).await;
        });
        let mut tracked: HashMap<Arc<str>, Tracked> = HashMap::new();
        // Sessions that connected before we subscribed, handled here rather than queued: the
        // queue is bounded and nothing reads it yet.
        for session in self.sessions.sessions() {
            self.on_session(connected_event(&session), &mut tracked, &tx);
        }
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
                        t.desired.send_if_modified(|d| {
                            d.heartbeat = Timestamp::now();
                            let changed = d.facts.as_ref() != Some(&facts);
                            d.facts = Some(facts);
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
        tx: &mpsc::Sender<Input>,
    ) {
        let at = timestamp(event.at);
        match event.kind {
            SessionEventKind::Connected { .. } => {
                let desired = Desired {
                    connected: true,
                    since: at,
                    facts: None,
                    heartbeat: at,
                };
                match tracked.get_mut(&event.identity) {
                    Some(t) => {
                        t.session_id = event.session_id;
                        t.desired.send_modify(|d| {
                            d.connected = true;
                            d.since = at;
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
                    t.desired.send_modify(|d| {
                        d.connected = false;
                        d.since = at;
                    });
                }
            }
        }
    }

    /// After a lagged broadcast: align with the sessions that exist now.
    fn resync(&self, tracked: &mut HashMap<Arc<str>, Tracked>, tx: &mpsc::Sender<Input>) {
        let live: HashMap<String, _> = self
            .sessions
            .sessions()
            .into_iter()
            .map(|s| (s.identity().to_string(), s))
            .collect();
        for (identity, t) in tracked.iter() {
            if !live.contains_key(identity.as_ref()) {
                t.desired.send_if_modified(|d| {
                    let changed = d.connected;
                    d.connected = false;
                    d.since = Timestamp::now();
                    changed
                });
            }
        }
        for session in live.values() {
            let known = tracked
                .get(session.identity())
                .is_some_and(|t| t.session_id == session.id() && t.desired.borrow().connected);
            if !known {
                self.on_session(connected_event(session), tracked, tx);
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
            if connection["state"] == "Connected"
                && connection["hubReplica"] == self.replica.as_str()
                && !self.sessions.is_connected(&identity)
                && !tracked.contains_key(&identity)
            {
                let now = Timestamp::now();
                let desired = Desired {
                    connected: false,
                    since: now,
                    facts: None,
                    heartbeat: now,
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

    /// Reads the agent's facts stream while its session lives.
    fn follow_facts(&self, identity: Arc<str>, session_id: u64, tx: mpsc::Sender<Input>) {
        let sessions = self.sessions.clone();
        self.tasks.spawn(async move {
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
                                        if tx.send(input).await.is_err() {
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
        self.tasks.spawn(async move {
            let Some((namespace, name)) = parse_agent_identity(&identity) else {
                return;
            };
            while rx.changed().await.is_ok() {
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
            }
        });
        tx
    }
}

/// The event a session's connection would have published (for sessions found, not heard of).
fn connected_event(session: &Session) -> SessionEvent {
    SessionEvent {
        identity: session.identity().into(),
        session_id: session.id(),
        at: session.connected_at(),
        kind: SessionEventKind::Connected {
            peer_addr: session.peer_addr(),
            agent_version: session.agent_version().into(),
        },
    }
}

/// The controller's input queue, bounded at [`INPUT_QUEUE`].
fn input_queue() -> (mpsc::Sender<Input>, mpsc::Receiver<Input>) {
    mpsc::channel(INPUT_QUEUE)
}

/// The status patch for `desired`.
fn status_patch(replica: &str, desired: &Desired) -> Value {
    let since = time_string(desired.since);
    let (state, condition, reason) = if desired.connected {
        ("Connected", "True", "AgentConnected")
    } else {
        ("Disconnected", "False", "AgentDisconnected")
    };
    let mut status = json!({
        "connection": {"state": state, "since": since, "hubReplica": replica},
        "lastHeartbeatTime": time_string(desired.heartbeat),
        "conditions": [{
            "type": "Ready",
            "status": condition,
            "reason": reason,
            "message": format!("The agent's tunnel to hub replica {replica} is {}.", state.to_lowercase()),
            "lastTransitionTime": since,
        }],
    });
    if let Some(facts) = &desired.facts {
        status["kubernetesVersion"] = json!(facts.kubernetes_version);
        status["nodes"] = json!(facts.nodes);
        status["gpus"] = json!(facts.gpus);
    }
    json!({ "status": status })
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
    let patch = Patch::Merge(status_patch(replica, desired));
    clusters
        .patch(registry, namespace, name, Target::Status, patch, &opts)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_input_queue_makes_its_senders_wait_instead_of_growing() {
        let (tx, _rx) = input_queue();
        for _ in 0..INPUT_QUEUE {
            tx.try_send(Input::Lagged).expect("room in the queue");
        }
        assert!(matches!(
            tx.try_send(Input::Lagged),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        let waited = tokio::time::timeout(Duration::from_millis(50), tx.send(Input::Sweep)).await;
        assert!(waited.is_err(), "a sender waits while the loop is behind");
    }
}
