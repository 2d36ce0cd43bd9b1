//! Delivery: each cluster's bundle to its agent, over the tunnel the agent holds, content
//! addressed (the wire contract is [`edgefleet_api::delivery`]).
//!
//! One [`Machine`] per cluster, pure, driven by one task that owns them all and runs at most
//! [`MAX_DELIVERIES_IN_FLIGHT`] requests at once (10,000 agents reconnecting after a hub restart
//! queue up instead of opening 10,000 streams):
//!
//! ```text
//!             wanted bundle + connected + not paused
//!   Idle ────────────────────────────────────────────► Offering ◄──────────────┐
//!    ▲  disconnected / paused / nothing wanted            │ PUT bundle         │
//!    └──────────────── (from any state) ──────────────────┤                    │
//!                                   reply missing: []     │ missing: [h…]      │ uploaded
//!                       ┌─────────────────────────────────┤                    │
//!                       ▼                                 ▼                    │
//!                    Adopted{hash} ──wanted hash ≠ hash─► Offering   Uploading([h…]) ──┘
//!                       │  or the agent reports another hash than at adoption   PUT content/h
//!                       │  (it lost it), or a new session (reconnect) ─► Offering    for each h
//!   any request fails ─► Backoff{until} ──timer──► Offering   (exponential, full jitter)
//! ```
//!
//! Content crosses a tunnel only when the agent says it lacks it, so an add-on's content goes
//! to each cluster once per version, and a reconnecting agent that already holds everything
//! gets one small bundle `PUT`. An agent that still lacks content right after it was uploaded
//! is treated as a failure (backoff), never as a loop.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgefleet_api::delivery::{BundleReply, DesiredBundle, BUNDLE_PATH, CONTENT_PATH_PREFIX};
use edgefleet_tunnel::{body, Backoff, SessionRegistry};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::content::Content;
use crate::agents::observed::{Feed, Observed};
use crate::agents::status::ClusterStatusHandle;

/// Deliveries (bundle offers or uploads) in flight at once, over all agents.
pub const MAX_DELIVERIES_IN_FLIGHT: usize = 256;
/// One request to an agent, from sending to the end of its answer.
pub const DELIVERY_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry backoff after a failed delivery: full jitter up to 1 s · 2ⁿ, at most 60 s.
pub const DELIVERY_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};
/// Largest bundle reply read from an agent.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Content by hash, shared by every cluster's delivery.
pub type Contents = Arc<HashMap<String, Arc<Content>>>;

/// What one cluster should get.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub bundle: Arc<DesiredBundle>,
    pub contents: Contents,
    /// `spec.paused`: send nothing new.
    pub paused: bool,
    /// On which sessions the bundle may be offered.
    pub deliverable: Deliverable,
}

/// Whether a bundle may be offered on the agent's current session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliverable {
    /// Always: nothing in it depends on what the agent runs.
    Any,
    /// Only on this session: the gate held add-ons at what the agent reported on it.
    Session(u64),
    /// Not yet: it holds add-ons and the agent has not reported on a live session.
    NotYet,
}

impl Deliverable {
    fn allows(self, session_id: u64) -> bool {
        match self {
            Deliverable::Any => true,
            Deliverable::Session(s) => s == session_id,
            Deliverable::NotYet => false,
        }
    }
}

/// Where one cluster's delivery stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing to do: no tunnel, paused, or nothing wanted yet.
    Idle,
    /// The bundle is to be offered.
    Offering,
    /// These contents are to be uploaded, then the bundle offered again.
    Uploading(Vec<String>),
    /// The agent adopted the bundle `hash`; its facts reported `reported` then.
    Adopted {
        hash: String,
        reported: Option<String>,
    },
    /// A request failed; offer again at `until`.
    Backoff { until: Instant },
}

/// The agent's side, as the machine needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentView {
    pub connected: bool,
    pub session_id: u64,
    /// The bundle hash its facts report.
    pub reported: Option<String>,
}

impl From<&Observed> for AgentView {
    fn from(o: &Observed) -> Self {
        AgentView {
            connected: o.connected,
            session_id: o.session_id,
            reported: o.facts.as_ref().and_then(|f| f.bundle.clone()),
        }
    }
}

/// A request the machine wants made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    Offer,
    Upload(Vec<String>),
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Adopted(String),
    Missing(Vec<String>),
    Uploaded,
    Failed(String),
}

/// One cluster's delivery state machine. Pure: time comes in as arguments.
#[derive(Clone, Debug)]
pub struct Machine {
    pub phase: Phase,
    failures: u32,
    in_flight: bool,
    session_id: u64,
    /// Hashes uploaded since the last offer (an agent asking for them again is failing).
    uploaded: Vec<String>,
    /// The last error, for logs.
    pub last_error: Option<String>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            phase: Phase::Idle,
            failures: 0,
            in_flight: false,
            session_id: 0,
            uploaded: Vec::new(),
            last_error: None,
        }
    }
}

impl Machine {
    /// Re-evaluates after the wanted bundle or the agent's side changed.
    pub fn sync(&mut self, wanted: Option<&Wanted>, agent: &AgentView) {
        let Some(wanted) = wanted
            .filter(|w| agent.connected && !w.paused && w.deliverable.allows(agent.session_id))
        else {
            self.phase = Phase::Idle;
            self.failures = 0;
            return;
        };
        if agent.session_id != self.session_id {
            // A new session: offer again, whatever we knew of the old one.
            self.session_id = agent.session_id;
            self.failures = 0;
            self.phase = Phase::Offering;
            return;
        }
        match &self.phase {
            Phase::Idle => self.phase = Phase::Offering,
            Phase::Adopted { hash, reported } => {
                let lost = agent.reported.is_some()
                    && agent.reported.as_ref() != Some(hash)
                    && agent.reported != *reported;
                if *hash != wanted.bundle.hash || lost {
                    self.phase = Phase::Offering;
                }
            }
            Phase::Offering | Phase::Uploading(_) | Phase::Backoff { .. } => {}
        }
    }

    /// The request to make now, if any (and none is in flight).
    pub fn work(&self) -> Option<Work> {
        if self.in_flight {
            return None;
        }
        match &self.phase {
            Phase::Offering => Some(Work::Offer),
            Phase::Uploading(hashes) => Some(Work::Upload(hashes.clone())),
            _ => None,
        }
    }

    pub fn started(&mut self) {
        self.in_flight = true;
    }

    /// A request ended with `outcome`; `agent` is the agent's side as known now.
    pub fn done(&mut self, outcome: Outcome, agent: &AgentView, now: Instant, jitter: f64) {
        self.in_flight = false;
        // A result for a phase we have left (disconnected meanwhile) changes nothing.
        if !matches!(self.phase, Phase::Offering | Phase::Uploading(_)) {
            return;
        }
        match outcome {
            Outcome::Adopted(hash) => {
                self.failures = 0;
                self.uploaded.clear();
                self.last_error = None;
                self.phase = Phase::Adopted {
                    hash,
                    reported: agent.reported.clone(),
                };
            }
            Outcome::Missing(hashes) if hashes.iter().any(|h| self.uploaded.contains(h)) => {
                self.fail(
                    "the agent still lacks content it was just sent".into(),
                    now,
                    jitter,
                );
            }
            Outcome::Missing(hashes) => self.phase = Phase::Uploading(hashes),
            Outcome::Uploaded => {
                if let Phase::Uploading(hashes) = &self.phase {
                    self.uploaded = hashes.clone();
                }
                self.phase = Phase::Offering;
            }
            Outcome::Failed(why) => self.fail(why, now, jitter),
        }
    }

    fn fail(&mut self, why: String, now: Instant, jitter: f64) {
        let ceiling = DELIVERY_BACKOFF.ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.uploaded.clear();
        self.last_error = Some(why);
        self.phase = Phase::Backoff {
            until: now + ceiling.mul_f64(jitter.clamp(0.0, 1.0)),
        };
    }

    /// The backoff ended.
    pub fn timer(&mut self, now: Instant) {
        if let Phase::Backoff { until } = self.phase {
            if until <= now {
                self.phase = Phase::Offering;
            }
        }
    }

    /// When the machine wants [`Machine::timer`] called.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { until } => Some(until),
            _ => None,
        }
    }
}

/// The controllers' side of the deliverer.
#[derive(Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<(Arc<str>, Option<Wanted>)>,
}

impl DeliveryHandle {
    /// `identity`'s cluster should now get `wanted` (`None`: the cluster is gone).
    pub fn want(&self, identity: Arc<str>, wanted: Option<Wanted>) {
        let _ = self.tx.send((identity, wanted));
    }
}

struct Entry {
    machine: Machine,
    wanted: Option<Wanted>,
    agent: AgentView,
}

/// Runs every cluster's [`Machine`].
pub struct Deliverer {
    sessions: SessionRegistry,
    feed: Feed,
    /// Told when a cluster's delivery starts or stops failing, for its status.
    status: Option<ClusterStatusHandle>,
    rx: mpsc::UnboundedReceiver<(Arc<str>, Option<Wanted>)>,
    entries: HashMap<Arc<str>, Entry>,
    timers: BTreeSet<(Instant, Arc<str>)>,
    queue: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
}

type InFlight = FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = (Arc<str>, Outcome)> + Send>>,
>;

impl Deliverer {
    pub fn new(
        sessions: SessionRegistry,
        feed: Feed,
        status: Option<ClusterStatusHandle>,
    ) -> (Deliverer, DeliveryHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let deliverer = Deliverer {
            sessions,
            feed,
            status,
            rx,
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
        };
        (deliverer, DeliveryHandle { tx })
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let mut in_flight: InFlight = FuturesUnordered::new();
        loop {
            self.start_work(&mut in_flight);
            let next_timer = self.timers.first().map(|(at, _)| *at);
            tokio::select! {
                () = stop.cancelled() => return,
                update = self.rx.recv() => {
                    let Some((identity, wanted)) = update else { return };
                    self.on_wanted(identity, wanted);
                    // Take whatever else is queued before starting work.
                    while let Ok((identity, wanted)) = self.rx.try_recv() {
                        self.on_wanted(identity, wanted);
                    }
                }
                () = self.feed.changed() => {
                    for identity in self.feed.take() {
                        let agent = self.feed.observations().get(&identity).map(|o| AgentView::from(&o)).unwrap_or_default();
                        if let Some(entry) = self.entries.get_mut(&identity) {
                            entry.agent = agent;
                            entry.machine.sync(entry.wanted.as_ref(), &entry.agent);
                            self.after_change(&identity);
                        }
                    }
                }
                Some((identity, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(entry) = self.entries.get_mut(&identity) {
                        if let Outcome::Failed(why) = &outcome {
                            tracing::debug!(%identity, %why, "delivery failed; backing off");
                        }
                        let jitter = rand::random::<f64>();
                        let error_before = entry.machine.last_error.clone();
                        entry.machine.done(outcome, &entry.agent, Instant::now(), jitter);
                        entry.machine.sync(entry.wanted.as_ref(), &entry.agent);
                        if entry.machine.last_error != error_before {
                            if let Some(status) = &self.status {
                                status.set_delivery_error(identity.clone(), entry.machine.last_error.clone());
                            }
                        }
                        self.after_change(&identity);
                    }
                }
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    while let Some((at, identity)) = self.timers.first().cloned() {
                        if at > now {
                            break;
                        }
                        self.timers.pop_first();
                        if let Some(entry) = self.entries.get_mut(&identity) {
                            entry.machine.timer(now);
                            self.after_change(&identity);
                        }
                    }
                }
            }
        }
    }

    fn on_wanted(&mut self, identity: Arc<str>, wanted: Option<Wanted>) {
        let Some(wanted) = wanted else {
            self.entries.remove(&identity);
            return;
        };
        let agent = self
            .feed
            .observations()
            .get(&identity)
            .map(|o| AgentView::from(&o))
            .unwrap_or_default();
        let entry = self
            .entries
            .entry(identity.clone())
            .or_insert_with(|| Entry {
                machine: Machine::default(),
                wanted: None,
                agent: agent.clone(),
            });
        entry.agent = agent;
        entry.wanted = Some(wanted);
        entry.machine.sync(entry.wanted.as_ref(), &entry.agent);
        self.after_change(&identity);
    }

    /// Queues work and timers after a machine changed.
    fn after_change(&mut self, identity: &Arc<str>) {
        let Some(entry) = self.entries.get(identity) else {
            return;
        };
        if let Some(at) = entry.machine.deadline() {
            self.timers.insert((at, identity.clone()));
        }
        if entry.machine.work().is_some() && self.queued.insert(identity.clone()) {
            self.queue.push_back(identity.clone());
        }
    }

    fn start_work(&mut self, in_flight: &mut InFlight) {
        while in_flight.len() < MAX_DELIVERIES_IN_FLIGHT {
            let Some(identity) = self.queue.pop_front() else {
                return;
            };
            self.queued.remove(&identity);
            let Some(entry) = self.entries.get_mut(&identity) else {
                continue;
            };
            let (Some(work), Some(wanted)) = (entry.machine.work(), entry.wanted.clone()) else {
                continue;
            };
            entry.machine.started();
            let session = self
                .sessions
                .get(&identity)
                .filter(|s| s.id() == entry.agent.session_id);
            let id = identity.clone();
            in_flight.push(Box::pin(async move {
                let Some(session) = session else {
                    return (id, Outcome::Failed("the agent's session ended".into()));
                };
                let outcome = tokio::time::timeout(DELIVERY_REQUEST_TIMEOUT, async {
                    match work {
                        Work::Offer => offer(&session, &wanted.bundle).await,
                        Work::Upload(hashes) => upload(&session, &hashes, &wanted.contents).await,
                    }
                })
                .await
                .unwrap_or_else(|_| Outcome::Failed("the agent did not answer in time".into()));
                (id, outcome)
            }));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `PUT BUNDLE_PATH`: what the agent answers.
async fn offer(session: &edgefleet_tunnel::Session, bundle: &DesiredBundle) -> Outcome {
    let body = match serde_json::to_vec(bundle) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let (status, reply) = match put(session, BUNDLE_PATH, Bytes::from(body)).await {
        Ok(answer) => answer,
        Err(why) => return Outcome::Failed(why),
    };
    if status != StatusCode::OK {
        return Outcome::Failed(format!("the agent answered the bundle with {status}"));
    }
    let reply: BundleReply = match serde_json::from_slice(&reply) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("unreadable bundle reply: {e}")),
    };
    let known: HashSet<&str> = bundle.releases.iter().map(|r| r.content.as_str()).collect();
    let missing: Vec<String> = reply
        .missing
        .into_iter()
        .filter(|h| known.contains(h.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        Outcome::Adopted(bundle.hash.clone())
    } else {
        Outcome::Missing(missing)
    }
}

/// `PUT CONTENT_PATH_PREFIX<h>` of each hash.
async fn upload(
    session: &edgefleet_tunnel::Session,
    hashes: &[String],
    contents: &HashMap<String, Arc<Content>>,
) -> Outcome {
    for hash in hashes {
        let Some(content) = contents.get(hash) else {
            return Outcome::Failed(format!("content {hash} is not known to this hub"));
        };
        let path = format!("{CONTENT_PATH_PREFIX}{hash}");
        match put(session, &path, content.bytes.clone()).await {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, _)) => {
                return Outcome::Failed(format!("the agent answered content {hash} with {status}"))
            }
            Err(why) => return Outcome::Failed(why),
        }
    }
    Outcome::Uploaded
}

async fn put(
    session: &edgefleet_tunnel::Session,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body::full(body))
        .map_err(|e| e.to_string())?;
    let response = session.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_REPLY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the agent's answer: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(hash: &str) -> Wanted {
        Wanted {
            bundle: Arc::new(DesiredBundle {
                hash: hash.into(),
                releases: vec![],
            }),
            contents: Arc::default(),
            paused: false,
            deliverable: Deliverable::Any,
        }
    }

    fn agent(session_id: u64, reported: Option<&str>) -> AgentView {
        AgentView {
            connected: true,
            session_id,
            reported: reported.map(Into::into),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offer_upload_offer_adopt() {
        let mut m = Machine::default();
        let a = agent(1, None);
        m.sync(Some(&wanted("b1")), &a);
        assert_eq!(m.work(), Some(Work::Offer));
        m.started();
        assert_eq!(m.work(), None, "one request at a time");
        m.done(Outcome::Missing(vec!["h1".into()]), &a, Instant::now(), 0.5);
        assert_eq!(m.work(), Some(Work::Upload(vec!["h1".into()])));
        m.started();
        m.done(Outcome::Uploaded, &a, Instant::now(), 0.5);
        assert_eq!(m.work(), Some(Work::Offer));
        m.started();
        m.done(Outcome::Adopted("b1".into()), &a, Instant::now(), 0.5);
        assert_eq!(
            m.phase,
            Phase::Adopted {
                hash: "b1".into(),
                reported: None
            }
        );
        assert_eq!(m.work(), None);
        // The facts catch up: nothing to do.
        m.sync(Some(&wanted("b1")), &agent(1, Some("b1")));
        assert_eq!(m.work(), None);
        // A new desired bundle is offered.
        m.sync(Some(&wanted("b2")), &agent(1, Some("b1")));
        assert_eq!(m.work(), Some(Work::Offer));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_facts_right_after_adoption_do_not_cause_a_reoffer_but_a_lost_bundle_does() {
        let mut m = Machine::default();
        let old = agent(1, Some("b0"));
        m.sync(Some(&wanted("b1")), &old);
        m.started();
        m.done(Outcome::Adopted("b1".into()), &old, Instant::now(), 0.5);
        m.sync(Some(&wanted("b1")), &old);
        assert_eq!(
            m.work(),
            None,
            "facts still say b0, as they did at adoption"
        );
        m.sync(Some(&wanted("b1")), &agent(1, Some("b1")));
        assert_eq!(m.work(), None);
        m.sync(Some(&wanted("b1")), &agent(1, Some("other")));
        assert_eq!(
            m.work(),
            Some(Work::Offer),
            "the agent enforces another bundle"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_reoffers_and_a_disconnect_or_pause_goes_idle() {
        let mut m = Machine::default();
        m.sync(Some(&wanted("b1")), &agent(1, None));
        m.started();
        m.done(
            Outcome::Adopted("b1".into()),
            &agent(1, None),
            Instant::now(),
            0.5,
        );
        m.sync(Some(&wanted("b1")), &AgentView::default());
        assert_eq!(m.phase, Phase::Idle);
        m.sync(Some(&wanted("b1")), &agent(2, Some("b1")));
        assert_eq!(
            m.work(),
            Some(Work::Offer),
            "offered again on the new session"
        );
        let mut paused = wanted("b1");
        paused.paused = true;
        m.sync(Some(&paused), &agent(2, Some("b1")));
        assert_eq!(m.phase, Phase::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bundle_holding_addons_waits_for_the_agents_report_on_this_session() {
        let mut m = Machine::default();
        let mut held = wanted("b1");
        held.deliverable = Deliverable::NotYet;
        m.sync(Some(&held), &agent(2, None));
        assert_eq!(
            m.work(),
            None,
            "computed before the agent said what it runs"
        );
        held.deliverable = Deliverable::Session(1);
        m.sync(Some(&held), &agent(2, None));
        assert_eq!(m.work(), None, "computed from an earlier session's report");
        held.deliverable = Deliverable::Session(2);
        m.sync(Some(&held), &agent(2, Some("b0")));
        assert_eq!(m.work(), Some(Work::Offer));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_retry() {
        let mut m = Machine::default();
        let a = agent(1, None);
        m.sync(Some(&wanted("b1")), &a);
        let mut ceilings = Vec::new();
        for _ in 0..4 {
            let now = Instant::now();
            m.started();
            m.done(Outcome::Failed("502".into()), &a, now, 1.0);
            let until = m.deadline().unwrap();
            ceilings.push(until - now);
            assert_eq!(m.work(), None, "waits out the backoff");
            m.timer(until - Duration::from_millis(1));
            assert_eq!(m.work(), None);
            tokio::time::advance(until - now).await;
            m.timer(Instant::now());
            assert_eq!(m.work(), Some(Work::Offer));
        }
        assert_eq!(
            ceilings,
            [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            "full jitter at its ceiling"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_asking_again_for_what_it_was_sent_is_a_failure_not_a_loop() {
        let mut m = Machine::default();
        let a = agent(1, None);
        m.sync(Some(&wanted("b1")), &a);
        m.started();
        m.done(Outcome::Missing(vec!["h".into()]), &a, Instant::now(), 0.5);
        m.started();
        m.done(Outcome::Uploaded, &a, Instant::now(), 0.5);
        m.started();
        m.done(Outcome::Missing(vec!["h".into()]), &a, Instant::now(), 0.5);
        assert!(matches!(m.phase, Phase::Backoff { .. }), "{:?}", m.phase);
        assert!(m.last_error.is_some());
    }
}
