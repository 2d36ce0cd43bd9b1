//! Add-on delivery end to end, in process: a real hub (the registry over the embedded store,
//! the tunnel port with real TLS on loopback, the leader-elected controllers) and TEST AGENTS.
//!
//! The test agent is a **double for the real agent** (`edgefleet-agent`, built at the same time
//! by another engineer): a real tunnel client that serves the delivery contract of
//! `edgefleet_api::delivery` exactly — `PUT BUNDLE_PATH` answered with the content hashes it
//! lacks, `PUT CONTENT_PATH_PREFIX<hash>` checked against the SHA-256 of the body, and the
//! NDJSON facts stream with the adopted bundle's hash and one report per release — and that
//! "applies" an adopted bundle by reporting each release Applied, then Ready (or Failed for a
//! release whose objects it was told to refuse). It records every bundle and content upload it
//! receives, which is what these tests assert on, along with the storage writes of the hub
//! (counted by a storage wrapper).

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use edgefleet_api::agent::{agent_identity, ClusterFacts, FACTS_PATH};
use edgefleet_api::delivery::{
    AddonContent, AddonPhase, AddonReport, BundleReply, DesiredBundle, BUNDLE_PATH,
    CONTENT_PATH_PREFIX,
};
use edgefleet_api::NodeCounts;
use edgefleet_apiserver::agents::{AgentHub, AgentsConfig};
use edgefleet_apiserver::audit::canonical;
use edgefleet_apiserver::controllers::leader::ElectionTiming;
use edgefleet_apiserver::controllers::{AgentLink, Controllers};
use edgefleet_apiserver::errors::ApiError;
use edgefleet_apiserver::registry::{
    DeleteOptions, Patch, Registry, RegistryConfig, Target, WriteOptions,
};
use edgefleet_apiserver::storage::embedded::EmbeddedStore;
use edgefleet_apiserver::storage::{
    DynStorage, Guard, KeyValue, ListOptions, ListResult, Result as StorageResult, Revision,
    Storage, WatchStream,
};
use edgefleet_tunnel::{
    body, BootstrapToken, CertificateAuthority, IdentityStore, LeafSpec, TunnelBody, TunnelClient,
    TunnelClientConfig,
};
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

const ENV: &str = "retail";
/// Generous for a busy two-core machine; everything here is loopback.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Storage that counts writes per key

struct CountingStore {
    inner: DynStorage,
    writes: Mutex<HashMap<String, usize>>,
}

impl CountingStore {
    fn count(&self, key: &str) {
        *self
            .writes
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default() += 1;
    }

    /// Writes so far to API objects (not the controllers' lease or credentials), by key.
    fn object_writes(&self) -> HashMap<String, usize> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.starts_with("edgefleet.io/internal/"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[async_trait]
impl Storage for CountingStore {
    async fn create(&self, key: &str, value: Bytes) -> StorageResult<KeyValue> {
        self.count(key);
        self.inner.create(key, value).await
    }
    async fn create_guarded(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<Guard>,
    ) -> StorageResult<KeyValue> {
        self.count(key);
        self.inner.create_guarded(key, value, guard).await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str, opts: ListOptions) -> StorageResult<ListResult> {
        self.inner.list(prefix, opts).await
    }
    async fn update(&self, key: &str, expected: Revision, value: Bytes) -> StorageResult<KeyValue> {
        self.count(key);
        self.inner.update(key, expected, value).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> StorageResult<KeyValue> {
        self.count(key);
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> StorageResult<WatchStream> {
        self.inner.watch(prefix, after).await
    }
    async fn current_revision(&self) -> StorageResult<Revision> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> StorageResult<()> {
        self.inner.compact(revision).await
    }
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
}

// ---------------------------------------------------------------------------------------------
// The test agent (a double for the real agent; see the module docs)

#[derive(Default)]
struct AgentState {
    contents: HashMap<String, AddonContent>,
    adopted: Option<DesiredBundle>,
    /// Every bundle PUT, in order.
    offers: Vec<DesiredBundle>,
    /// Every content PUT's hash, in order.
    uploads: Vec<String>,
    /// Object names whose apply "fails" like an edge 422.
    reject: BTreeSet<String>,
    /// Answer bundles 404, as an agent that predates delivery does.
    no_delivery: bool,
}

#[derive(Clone)]
struct TestAgent {
    state: Arc<Mutex<AgentState>>,
    facts: Arc<watch::Sender<ClusterFacts>>,
}

impl TestAgent {
    fn new() -> Self {
        let (facts, _) = watch::channel(ClusterFacts {
            kubernetes_version: "v1.31.4".into(),
            nodes: NodeCounts { ready: 1, total: 1 },
            agent_version: "test-agent".into(),
            ..Default::default()
        });
        TestAgent {
            state: Arc::default(),
            facts: Arc::new(facts),
        }
    }

    fn uploads(&self) -> Vec<String> {
        self.state.lock().unwrap().uploads.clone()
    }

    fn adopted(&self) -> Option<DesiredBundle> {
        self.state.lock().unwrap().adopted.clone()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<TunnelBody> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, FACTS_PATH) => {
                let rx = self.facts.subscribe();
                let lines = tokio_stream::wrappers::WatchStream::new(rx).map(|facts| {
                    let mut line = serde_json::to_vec(&facts).unwrap();
                    line.push(b'\n');
                    Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
                });
                Response::new(body::boxed(StreamBody::new(lines)))
            }
            (Method::PUT, BUNDLE_PATH) if self.state.lock().unwrap().no_delivery => {
                status(StatusCode::NOT_FOUND)
            }
            (Method::PUT, BUNDLE_PATH) => {
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                let bundle: DesiredBundle = serde_json::from_slice(&bytes).unwrap();
                // The contract: the hash is SHA-256 of the canonical JSON of the releases.
                let hash = canonical::sha256_hex(&canonical::to_vec_of(&bundle.releases).unwrap());
                if hash != bundle.hash {
                    return status(StatusCode::BAD_REQUEST);
                }
                let missing = {
                    let mut st = self.state.lock().unwrap();
                    st.offers.push(bundle.clone());
                    let missing: Vec<String> = bundle
                        .releases
                        .iter()
                        .map(|r| r.content.clone())
                        .filter(|h| !st.contents.contains_key(h))
                        .collect();
                    if missing.is_empty() {
                        st.adopted = Some(bundle.clone());
                    }
                    missing
                };
                if missing.is_empty() {
                    self.apply(bundle);
                }
                let reply = serde_json::to_vec(&BundleReply { missing }).unwrap();
                Response::new(body::full(reply))
            }
            (Method::PUT, p) if p.starts_with(CONTENT_PATH_PREFIX) => {
                let hash = p[CONTENT_PATH_PREFIX.len()..].to_string();
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                if canonical::sha256_hex(&bytes) != hash {
                    return status(StatusCode::BAD_REQUEST);
                }
                let content: AddonContent = serde_json::from_slice(&bytes).unwrap();
                let mut st = self.state.lock().unwrap();
                st.uploads.push(hash.clone());
                st.contents.insert(hash, content);
                status(StatusCode::NO_CONTENT)
            }
            _ => status(StatusCode::NOT_FOUND),
        }
    }

    /// Reports every release Applied, then Ready (or Failed), as an agent applying it would.
    fn apply(&self, bundle: DesiredBundle) {
        let agent = self.clone();
        tokio::spawn(async move {
            let report = |phase: AddonPhase| {
                let st = agent.state.lock().unwrap();
                bundle
                    .releases
                    .iter()
                    .map(|r| {
                        let content = &st.contents[&r.content];
                        let refused = content.objects.iter().find_map(|o| {
                            let name = o["metadata"]["name"].as_str().unwrap_or_default();
                            st.reject.contains(name).then(|| name.to_string())
                        });
                        let (phase, message) = match refused {
                            Some(name) if phase == AddonPhase::Ready => (
                                AddonPhase::Failed,
                                Some(format!(
                                    "ConfigMap \"{name}\" is invalid: data: Invalid value"
                                )),
                            ),
                            _ => (phase, None),
                        };
                        AddonReport {
                            name: r.name.clone(),
                            version: r.version.clone(),
                            content: r.content.clone(),
                            phase,
                            message,
                            since: Some("2026-01-01T00:00:00Z".into()),
                            drift: vec![],
                        }
                    })
                    .collect::<Vec<_>>()
            };
            for (phase, pause) in [(AddonPhase::Applied, 20), (AddonPhase::Ready, 60)] {
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let reports = report(phase);
                let hash = bundle.hash.clone();
                agent.facts.send_modify(|f| {
                    f.bundle = Some(hash);
                    f.addons = reports;
                });
            }
        });
    }
}

fn status(code: StatusCode) -> Response<TunnelBody> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = code;
    r
}

/// One test agent's tunnel: stoppable and restartable with the same identity and state.
struct Edge {
    name: String,
    agent: TestAgent,
    config: TunnelClientConfig,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Edge {
    fn start(&mut self) {
        let agent = self.agent.clone();
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let agent = agent.clone();
            async move { Ok::<_, Infallible>(agent.handle(req).await) }
        });
        let client = TunnelClient::new(self.config.clone(), service);
        self.task = Some(tokio::spawn(client.run()));
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hub

struct Hub {
    registry: Registry,
    store: Arc<CountingStore>,
    agents: Arc<AgentHub>,
    ca: Arc<CertificateAuthority>,
    _controllers: Controllers,
    _dir: tempfile::TempDir,
}

fn opts() -> WriteOptions {
    WriteOptions {
        field_manager: "test".into(),
        ..Default::default()
    }
}

impl Hub {
    async fn start() -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CountingStore {
            inner: Arc::new(EmbeddedStore::open(dir.path()).unwrap()),
            writes: Mutex::default(),
        });
        let registry = Registry::new(store.clone(), RegistryConfig::default());
        let ca = Arc::new(
            CertificateAuthority::generate("tunnel-ca", Duration::from_secs(3600)).unwrap(),
        );
        let serving = ca
            .issue_leaf(&LeafSpec::server("hub", &["hub.test"], &[]))
            .unwrap();
        let config = AgentsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert_pem: serving.certificate_chain_pem.clone(),
            tls_key_pem: serving.key_pem().to_string(),
            serving_ca_pem: ca.certificate_pem().to_string(),
            agent_ca: ca.clone(),
            replica: "hub-0".into(),
            advertise_address: None,
            agent_image: "test".into(),
            keepalive: Default::default(),
        };
        let agents = AgentHub::start(config, registry.clone()).await.unwrap();
        let controllers = Controllers::spawn(
            registry.clone(),
            Some(AgentLink {
                sessions: agents.sessions().clone(),
                observations: agents.observations().clone(),
                cluster_status: agents.cluster_status().clone(),
            }),
            "hub-0",
            ElectionTiming::default(),
        );
        let hub = Hub {
            registry,
            store,
            agents,
            ca,
            _controllers: controllers,
            _dir: dir,
        };
        hub.create("environments", "", json!({"metadata": {"name": ENV}}))
            .await
            .unwrap();
        hub
    }

    async fn create(&self, plural: &str, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let resource = self.registry.resource(plural).unwrap();
        obj["apiVersion"] = json!(edgefleet_api::API_VERSION);
        obj["kind"] = json!(resource.kind());
        let out = resource.create(&self.registry, ns, obj, &opts()).await?;
        Ok(serde_json::from_slice(&out.object.json).unwrap())
    }

    /// Creates the three-object add-on `name`.
    async fn addon(&self, name: &str, version: &str, value: &str) {
        self.create(
            "clusteraddons",
            ENV,
            three_object_addon(name, version, value),
        )
        .await
        .unwrap();
    }

    /// Creates an AllAtOnce placement of `addons` on the clusters named.
    async fn place(&self, name: &str, addons: &[&str], clusters: &[&str]) {
        self.create("placements", ENV, all_at_once(name, addons, clusters))
            .await
            .unwrap();
    }

    async fn patch(&self, plural: &str, name: &str, patch: Value) {
        let resource = self.registry.resource(plural).unwrap();
        resource
            .patch(ENV, name, Target::Main, Patch::Merge(patch), &opts())
            .await
            .unwrap();
    }

    async fn get(&self, plural: &str, ns: &str, name: &str) -> Value {
        let resource = self.registry.resource(plural).unwrap();
        let obj = resource.get(ns, name, None).await.unwrap();
        serde_json::from_slice(&obj.json).unwrap()
    }

    /// Registers cluster `name` and connects a test agent for it.
    async fn edge(&self, name: &str) -> Edge {
        self.create("clusters", ENV, json!({"metadata": {"name": name}}))
            .await
            .unwrap();
        let token = self.agents.mint_token(ENV, name).await.unwrap();
        let mut config = TunnelClientConfig::new(
            self.agents.address().to_string(),
            ServerName::try_from("hub.test").unwrap().to_owned(),
            edgefleet_tunnel::tls::root_store_from_pem(self.ca.certificate_pem()).unwrap(),
            IdentityStore::in_memory(),
        );
        config.identity_claim = Some(agent_identity(ENV, name));
        config.bootstrap_token = Some(BootstrapToken::new(token));
        config.backoff = edgefleet_tunnel::Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
        };
        let mut edge = Edge {
            name: name.into(),
            agent: TestAgent::new(),
            config,
            task: None,
        };
        edge.start();
        edge
    }
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn three_object_addon(name: &str, version: &str, value: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "version": version,
            "targetNamespace": name,
            "manifests": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{name}-config")},
                 "data": {"greeting": value}},
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                          "template": {"metadata": {"labels": {"app": name}},
                                       "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}
            ]
        }
    })
}

fn all_at_once(name: &str, addons: &[&str], clusters: &[&str]) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "addons": addons.iter().map(|a| json!({"name": a})).collect::<Vec<_>>(),
            "clusters": {"names": clusters},
            "strategy": {"type": "AllAtOnce"}
        }
    })
}

/// The add-ons of `cluster`'s status, as (name, version, state).
async fn cluster_addons(hub: &Hub, cluster: &str) -> Vec<(String, String, String)> {
    let c = hub.get("clusters", ENV, cluster).await;
    c["status"]["addons"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["version"].as_str().unwrap_or_default().to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn all_ready(hub: &Hub, clusters: &[&str], want: &[(&str, &str)]) -> bool {
    for c in clusters {
        let got = cluster_addons(hub, c).await;
        let expected: Vec<(String, String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string(), "Ready".to_string()))
            .collect();
        if got != expected {
            return false;
        }
    }
    true
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn cluster_writes(
    before: &HashMap<String, usize>,
    after: &HashMap<String, usize>,
    name: &str,
) -> usize {
    let key = format!("edgefleet.io/clusters/{ENV}/{name}");
    after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_at_once_placement_reaches_every_cluster_a_change_resends_only_what_changed_and_deleting_it_empties_the_bundle(
) {
    let hub = Hub::start().await;
    let mut edges = Vec::new();
    for name in ["edge-1", "edge-2", "edge-3", "bystander"] {
        edges.push(hub.edge(name).await);
    }
    let targeted = ["edge-1", "edge-2", "edge-3"];
    hub.addon("app", "1.0.0", "hello").await;
    hub.addon("other", "1.0.0", "x").await;
    hub.place("apps", &["app", "other"], &targeted).await;

    eventually("every targeted cluster runs both add-ons Ready", || async {
        all_ready(&hub, &targeted, &[("app", "1.0.0"), ("other", "1.0.0")])
            .await
            .then_some(())
    })
    .await;
    for edge in &edges[..3] {
        let bundle = edge.agent.adopted().unwrap();
        let names: Vec<&str> = bundle.releases.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app", "other"], "{}", edge.name);
        let st = edge.agent.state.lock().unwrap();
        let app = &st.contents[&bundle.releases[0].content];
        assert_eq!(app.objects.len(), 3, "Namespace, ConfigMap, Deployment");
        assert_eq!(app.target_namespace.as_deref(), Some("app"));
        assert_eq!(st.uploads.len(), 2, "each content crossed the tunnel once");
    }
    let bystander = &edges[3];
    eventually("the untargeted cluster adopts an empty bundle", || async {
        bystander.agent.adopted().filter(|b| b.releases.is_empty())
    })
    .await;

    let placement = eventually("the Placement reports 3 of 3 updated", || async {
        let p = hub.get("placements", ENV, "apps").await;
        (p["status"]["updated"] == 3 && condition(&p, "Ready")["status"] == "True").then_some(p)
    })
    .await;
    assert_eq!(placement["status"]["total"], 3);
    assert_eq!(placement["status"]["failed"], 0);
    assert_eq!(condition(&placement, "Progressing")["reason"], "AllAtOnce");
    let addon = eventually("the ClusterAddon reports 3 Ready", || async {
        let a = hub.get("clusteraddons", ENV, "app").await;
        (a["status"]["ready"] == 3).then_some(a)
    })
    .await;
    assert_eq!(addon["status"]["clusters"], 3);
    assert_eq!(
        addon["status"]["versions"],
        json!([{"version": "1.0.0", "count": 3}])
    );
    let env = eventually("the Environment counts 6 releases Ready", || async {
        let e = hub.get("environments", "", ENV).await;
        (e["status"]["addons"]["ready"] == 6).then_some(e)
    })
    .await;
    assert_eq!(env["status"]["clusters"], 4);
    assert_eq!(env["status"]["connected"], 4);
    let c = hub.get("clusters", ENV, "edge-1").await;
    assert_eq!(condition(&c, "AddonsReady")["status"], "True");
    assert_eq!(
        condition(&c, "Ready")["status"],
        "True",
        "the connection condition stays"
    );

    // Converged: the hub writes nothing more (leases aside).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = hub.store.object_writes();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = hub.store.object_writes();
    assert_eq!(settled, idle, "no object writes once converged");

    // A new version of one add-on: only its content crosses each tunnel.
    let uploads_before: Vec<usize> = edges.iter().map(|e| e.agent.uploads().len()).collect();
    hub.patch(
        "clusteraddons",
        "app",
        json!({"spec": {"version": "1.1.0", "manifests": three_object_addon("app", "1.1.0", "bonjour")["spec"]["manifests"]}}),
    )
    .await;
    eventually("every targeted cluster runs app 1.1.0 Ready", || async {
        all_ready(&hub, &targeted, &[("app", "1.1.0"), ("other", "1.0.0")])
            .await
            .then_some(())
    })
    .await;
    for (i, edge) in edges[..3].iter().enumerate() {
        let uploads = edge.agent.uploads();
        assert_eq!(
            uploads.len(),
            uploads_before[i] + 1,
            "{}: only app's new content",
            edge.name
        );
        let new = uploads.last().unwrap();
        assert_eq!(
            Some(new),
            edge.agent
                .adopted()
                .map(|b| b.releases[0].content.clone())
                .as_ref()
        );
        let st = edge.agent.state.lock().unwrap();
        assert_eq!(st.contents[new].objects[1]["data"]["greeting"], "bonjour");
    }
    assert_eq!(
        bystander.agent.uploads().len(),
        uploads_before[3],
        "nothing for the bystander"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_change = hub.store.object_writes();
    for name in targeted {
        let writes = cluster_writes(&idle, &after_change, name);
        println!("{name}: {writes} status write(s) for one add-on change");
        // Pending → Applied → Ready and the new bundle hash arrive within the settle time: one
        // write, two when the machine is slow enough to split the burst.
        assert!((1..=2).contains(&writes), "{name}: {writes} writes");
    }
    assert_eq!(cluster_writes(&idle, &after_change, "bystander"), 0);

    // Deleting the Placement delivers an empty bundle: the agent prunes everything.
    hub.registry
        .resource("placements")
        .unwrap()
        .delete(&hub.registry, ENV, "apps", &DeleteOptions::default())
        .await
        .unwrap();
    for edge in &edges[..3] {
        eventually("an empty bundle adopted", || async {
            edge.agent.adopted().filter(|b| b.releases.is_empty())
        })
        .await;
    }
    eventually("the clusters show no add-ons", || async {
        for c in targeted {
            if !cluster_addons(&hub, c).await.is_empty() {
                return None;
            }
        }
        Some(())
    })
    .await;
    for mut edge in edges {
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_agent_gets_only_what_changed_while_it_was_away() {
    let hub = Hub::start().await;
    let mut edge = hub.edge("edge-1").await;
    hub.addon("app", "1.0.0", "a").await;
    hub.addon("other", "1.0.0", "b").await;
    hub.place("apps", &["app", "other"], &["edge-1"]).await;
    eventually("both add-ons Ready", || async {
        all_ready(&hub, &["edge-1"], &[("app", "1.0.0"), ("other", "1.0.0")])
            .await
            .then_some(())
    })
    .await;

    edge.stop().await;
    eventually("the hub sees the agent gone", || async {
        let c = hub.get("clusters", ENV, "edge-1").await;
        (c["status"]["connection"]["state"] == "Disconnected").then_some(())
    })
    .await;
    hub.patch(
        "clusteraddons",
        "app",
        json!({"spec": {"version": "2.0.0", "manifests": three_object_addon("app", "2.0.0", "changed")["spec"]["manifests"]}}),
    )
    .await;
    let pending = eventually(
        "the cluster's status says the new version waits for the agent",
        || async {
            let c = hub.get("clusters", ENV, "edge-1").await;
            let app = c["status"]["addons"][0].clone();
            (app["version"] == "2.0.0" && app["state"] == "Pending").then_some(app)
        },
    )
    .await;
    assert!(
        pending["message"]
            .as_str()
            .unwrap()
            .contains("disconnected"),
        "{pending}"
    );

    let (offers, uploads) = {
        let st = edge.agent.state.lock().unwrap();
        (st.offers.len(), st.uploads.clone())
    };
    edge.start();
    eventually("app 2.0.0 Ready after the reconnect", || async {
        all_ready(&hub, &["edge-1"], &[("app", "2.0.0"), ("other", "1.0.0")])
            .await
            .then_some(())
    })
    .await;
    {
        let st = edge.agent.state.lock().unwrap();
        let new_uploads = &st.uploads[uploads.len()..];
        assert_eq!(
            new_uploads.len(),
            1,
            "only the changed add-on's content: {new_uploads:?}"
        );
        assert_eq!(
            Some(&new_uploads[0]),
            st.adopted.as_ref().map(|b| &b.releases[0].content)
        );
        assert!(st.offers.len() > offers, "offered again on the new session");
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_or_a_condition_and_the_hub_keeps_serving() {
    let hub = Hub::start().await;
    let mut edge = hub.edge("edge-1").await;

    // A manifest that is not a Kubernetes object: 422 naming it.
    let mut bad = three_object_addon("bad", "1", "x");
    bad["spec"]["manifests"][1] = json!("kind: ConfigMap");
    let err = hub.create("clusteraddons", ENV, bad).await.unwrap_err();
    assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err.to_string().contains("spec.manifests[1]"), "{err}");

    // An oversized add-on: 422 naming spec.manifests, at create — never found at delivery.
    let mut big = three_object_addon("big", "1", "x");
    big["spec"]["manifests"][1]["data"]["greeting"] =
        json!("x".repeat(edgefleet_api::delivery::MAX_ADDON_SOURCE_BYTES));
    let err = hub.create("clusteraddons", ENV, big).await.unwrap_err();
    assert_eq!(err.code(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err.to_string().contains("spec.manifests"), "{err}");
    assert!(err.to_string().contains("Too long"), "{err}");

    // A Placement naming a missing add-on: accepted, a condition names it, the rest is
    // delivered. One edge refusing an object fails that add-on there, with the edge's words.
    edge.agent
        .state
        .lock()
        .unwrap()
        .reject
        .insert("app-config".into());
    hub.addon("app", "1.0.0", "a").await;
    hub.place("apps", &["app", "ghost"], &["edge-1"]).await;
    let p = eventually("the Placement says what is missing", || async {
        let p = hub.get("placements", ENV, "apps").await;
        (condition(&p, "Resolved")["reason"] == "AddonNotFound").then_some(p)
    })
    .await;
    let message = condition(&p, "Resolved")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("\"ghost\"") && message.contains("spec.addons"),
        "{message}"
    );
    let failed = eventually("app Failed with the edge's message", || async {
        let c = hub.get("clusters", ENV, "edge-1").await;
        let app = c["status"]["addons"][0].clone();
        (app["state"] == "Failed").then_some(c)
    })
    .await;
    assert!(failed["status"]["addons"][0]["message"]
        .as_str()
        .unwrap()
        .contains("app-config"));
    assert_eq!(condition(&failed, "AddonsReady")["reason"], "AddonsFailed");
    eventually("the Placement counts the failure", || async {
        let p = hub.get("placements", ENV, "apps").await;
        (p["status"]["failed"] == 1 && p["status"]["clusters"][0]["state"] == "Failed")
            .then_some(())
    })
    .await;

    // A Progressive placement is not delivered, and says so.
    hub.addon("canary", "1.0.0", "c").await;
    hub.create(
        "placements",
        ENV,
        json!({"metadata": {"name": "careful"},
               "spec": {"addons": [{"name": "canary"}], "clusters": {"names": ["edge-1"]},
                        "strategy": {"type": "Progressive", "canary": 1}}}),
    )
    .await
    .unwrap();
    let p = eventually("the Progressive placement explains it is held", || async {
        let p = hub.get("placements", ENV, "careful").await;
        (condition(&p, "Progressing")["reason"] == "ProgressiveRolloutNotDelivered").then_some(p)
    })
    .await;
    assert_eq!(p["status"]["updated"], 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bundle = edge.agent.adopted().unwrap();
    assert!(
        bundle.releases.iter().all(|r| r.name != "canary"),
        "a canary was asked for: nothing goes out at once"
    );

    // An agent that cannot take bundles: the cluster's status says why, and delivery retries.
    let mut old = hub.edge("old-agent").await;
    old.agent.state.lock().unwrap().no_delivery = true;
    hub.place("to-old", &["fine-for-old"], &["old-agent"]).await;
    hub.addon("fine-for-old", "1", "x").await;
    let message = eventually("the delivery failure is in the status", || async {
        let c = hub.get("clusters", ENV, "old-agent").await;
        c["status"]["addons"][0]["message"]
            .as_str()
            .filter(|m| m.contains("404"))
            .map(String::from)
    })
    .await;
    assert!(
        message.contains("not delivered") && message.contains("retrying"),
        "{message}"
    );

    // The hub still serves.
    hub.addon("fine", "1", "x").await;
    old.stop().await;
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progressive_placement_holds_clusters_at_what_they_run_across_a_reconnect() {
    let hub = Hub::start().await;
    let mut edge = hub.edge("edge-1").await;
    hub.addon("app", "1.0.0", "one").await;
    hub.place("apps", &["app"], &["edge-1"]).await;
    eventually("app 1.0.0 Ready", || async {
        all_ready(&hub, &["edge-1"], &[("app", "1.0.0")])
            .await
            .then_some(())
    })
    .await;

    // The user asks for a canary from now on, and releases 2.0.0: nothing goes out at once.
    hub.patch(
        "placements",
        "apps",
        json!({"spec": {"strategy": {"type": "Progressive", "canary": 1}}}),
    )
    .await;
    hub.patch(
        "clusteraddons",
        "app",
        json!({"spec": {"version": "2.0.0", "manifests": three_object_addon("app", "2.0.0", "two")["spec"]["manifests"]}}),
    )
    .await;
    let p = eventually("the placement says it holds", || async {
        let p = hub.get("placements", ENV, "apps").await;
        (condition(&p, "Progressing")["reason"] == "ProgressiveRolloutNotDelivered"
            && p["metadata"]["generation"] == p["status"]["observedGeneration"])
            .then_some(p)
    })
    .await;
    assert_eq!(p["status"]["updated"], 0, "it does not run 2.0.0");
    assert_eq!(p["status"]["clusters"][0]["state"], "Pending");

    // Across a reconnect (a new session, before and after the agent reports), every bundle
    // offered keeps app at 1.0.0: none prunes it, none upgrades it.
    edge.stop().await;
    let offered_before = edge.agent.state.lock().unwrap().offers.len();
    edge.start();
    eventually("offered again on the new session", || async {
        (edge.agent.state.lock().unwrap().offers.len() > offered_before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let offers = edge.agent.state.lock().unwrap().offers.clone();
    for offer in &offers[offered_before..] {
        let versions: Vec<(&str, &str)> = offer
            .releases
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        assert_eq!(versions, [("app", "1.0.0")], "{offer:?}");
    }
    assert!(all_ready(&hub, &["edge-1"], &[("app", "1.0.0")]).await);
    edge.stop().await;
}
