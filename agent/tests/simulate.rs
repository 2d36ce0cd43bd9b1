//! Simulated agents against a hub side built from the tunnel's server, over loopback TLS.

mod support;

use edgefleet_agent::facts::stream::NDJSON;
use edgefleet_agent::{SimulateConfig, Simulation};
use edgefleet_api::agent::{ClusterFacts, FACTS_PATH};
use edgefleet_tunnel::body;
use http::{Request, StatusCode};
use serde_json::Value;
use support::*;

const STORE_1: &str = "cluster:retail/store-1";
const STORE_2: &str = "cluster:retail/store-2";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn bootstrap(
    dir: &std::path::Path,
    hub: &Hub,
    clusters: &[(&str, &str, &str)],
) -> std::path::PathBuf {
    let root = dir.join("bootstrap");
    for (dir_name, identity, token) in clusters {
        let cluster_dir = root.join(dir_name);
        std::fs::create_dir_all(&cluster_dir).unwrap();
        std::fs::write(cluster_dir.join("token"), format!("{token}\n")).unwrap();
        hub.admission.add_token(token, identity);
    }
    root
}

fn start(config: SimulateConfig) -> tokio::task::JoinHandle<()> {
    let simulation = Simulation::build(config).unwrap();
    tokio::spawn(simulation.run())
}

#[tokio::test]
async fn a_simulated_agent_enrolls_serves_kubectls_core_and_its_facts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let hub = Hub::start(&pki, dir.path()).await;
    let root = bootstrap(
        dir.path(),
        &hub,
        &[
            ("retail.store-1", STORE_1, "token-1"),
            ("retail.store-2", STORE_2, "token-2"),
        ],
    );
    let _simulation = start(SimulateConfig::new(hub.agent_config(), &root));
    hub.connected(STORE_1, None).await;
    hub.connected(STORE_2, None).await;
    assert_eq!(hub.admission.enrolled().len(), 2);

    let (status, _, bytes) = hub.get(STORE_1, "/version", "application/json").await;
    assert_eq!(status, StatusCode::OK);
    let version: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(version["gitVersion"], "v1.31.4+k3s1");

    let (status, headers, bytes) = hub
        .get(STORE_1, "/api/v1/nodes?limit=500", "application/json")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list["kind"], "NodeList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["store-1-node-0", "store-1-node-1", "store-1-node-2"]
    );

    // Each agent serves its own cluster.
    let (_, _, bytes) = hub.get(STORE_2, "/api/v1/nodes?limit=500", TABLE).await;
    let table: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(table["kind"], "Table");
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["cells"][0], "store-2-node-0");
    assert_eq!(rows[0]["cells"][1], "Ready");

    // The facts stream: one line at once, computed from the simulated nodes.
    let response = hub
        .send(
            STORE_1,
            Request::get(FACTS_PATH).body(body::empty()).unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], NDJSON);
    let mut stream = response.into_body();
    let line = next_chunk(&mut stream).await;
    assert_eq!(line.last(), Some(&b'\n'));
    let facts: ClusterFacts = serde_json::from_slice(&line).unwrap();
    assert_eq!(facts.kubernetes_version, "v1.31.4+k3s1");
    assert_eq!((facts.nodes.ready, facts.nodes.total), (3, 3));
    assert_eq!(facts.gpus.len(), 1);
    assert_eq!(
        (
            facts.gpus[0].model.as_str(),
            facts.gpus[0].count,
            facts.gpus[0].allocatable
        ),
        ("NVIDIA-L4", 6, 6)
    );
    assert_eq!(facts.agent_version, edgefleet_agent::AGENT_VERSION);

    // Paths of the agent's own that it does not know are 404 and never reach the cluster.
    let (status, _, _) = hub
        .get(
            STORE_1,
            "/.well-known/edgefleet/metrics",
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_restarted_simulation_reconnects_with_its_stored_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let hub = Hub::start(&pki, dir.path()).await;
    let root = bootstrap(dir.path(), &hub, &[("retail.store-1", STORE_1, "token-1")]);

    let simulation = start(SimulateConfig::new(hub.agent_config(), &root));
    let first = hub.connected(STORE_1, None).await;
    assert_eq!(hub.admission.enrolled(), [STORE_1]);
    assert!(
        root.join("retail.store-1").join("identity.pem").exists(),
        "the certificate was not stored in the cluster's directory"
    );

    simulation.abort();
    let _ = simulation.await;
    eventually!(
        hub.registry().get(STORE_1).map(|s| s.id()) != Some(first),
        "the first session to end"
    );

    // The token file is still there but spent: only the stored certificate can get it in.
    let _simulation = start(SimulateConfig::new(hub.agent_config(), &root));
    hub.connected(STORE_1, Some(first)).await;
    assert_eq!(hub.admission.by_certificate(), [STORE_1]);
    assert_eq!(hub.admission.enrolled().len(), 1);
    assert!(hub.admission.refusals().is_empty());
    let (status, _, _) = hub
        .get(STORE_1, "/api/v1/namespaces", "application/json")
        .await;
    assert_eq!(status, StatusCode::OK);
}
