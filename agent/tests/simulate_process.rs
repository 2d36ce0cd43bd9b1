//! `edgefleet-agent simulate` as a real process against a hub side on loopback.

mod support;

use std::process::Stdio;

use edgefleet_api::agent::{ClusterFacts, FACTS_PATH};
use edgefleet_tunnel::body;
use http::Request;
use support::*;

#[tokio::test]
async fn simulate_runs_count_agents_with_the_shape_from_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let hub = Hub::start(&pki, dir.path()).await;
    let root = dir.path().join("bootstrap");
    for i in 0..4 {
        let cluster_dir = root.join(format!("lab.gpu-{i}"));
        std::fs::create_dir_all(&cluster_dir).unwrap();
        std::fs::write(cluster_dir.join("token"), format!("token-{i}\n")).unwrap();
        hub.admission
            .add_token(&format!("token-{i}"), &format!("cluster:lab/gpu-{i}"));
    }

    let _agents = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .arg("simulate")
        .args(["--hub-address", &hub.addr.to_string()])
        .args(["--hub-server-name", HUB_NAME])
        .arg("--hub-ca-file")
        .arg(dir.path().join("ca.pem"))
        .arg("--bootstrap-dir")
        .arg(&root)
        .args(["--count", "3", "--nodes", "2", "--gpus-per-node", "1"])
        .args([
            "--gpu-model",
            "NVIDIA-A100-SXM4-80GB",
            "--kubernetes-version",
            "v1.30.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    for i in 0..3 {
        hub.connected(&format!("cluster:lab/gpu-{i}"), None).await;
    }
    // The first three in name order, and only those.
    assert_eq!(hub.admission.enrolled().len(), 3);
    assert!(!hub.registry().is_connected("cluster:lab/gpu-3"));

    let response = hub
        .send(
            "cluster:lab/gpu-2",
            Request::get(FACTS_PATH).body(body::empty()).unwrap(),
        )
        .await;
    let mut stream = response.into_body();
    let facts: ClusterFacts = serde_json::from_slice(&next_chunk(&mut stream).await).unwrap();
    assert_eq!(facts.kubernetes_version, "v1.30.1");
    assert_eq!((facts.nodes.ready, facts.nodes.total), (2, 2));
    assert_eq!(facts.gpus[0].model, "NVIDIA-A100-SXM4-80GB");
    assert_eq!(facts.gpus[0].count, 2);
}
