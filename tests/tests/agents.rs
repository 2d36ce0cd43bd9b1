//! Edge agents through the tunnel, end to end with real processes: the dev hub with simulated
//! agents (`edgefleet-apiserver dev --agents N` starts `edgefleet-agent simulate`), enrollment
//! with a token from the `bootstrap` subresource, revocation, and liveness.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgefleet_api::testing::{cluster, environment};
use edgefleet_e2e::hub::{binary, Hub};
use edgefleet_testkit::eventually;
use serde_json::Value;

/// Long enough for agents to enroll and report on a busy two-core machine.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

fn clusters(hub: &Hub, namespace: &str) -> Vec<Value> {
    let out = hub.ok(&["get", "clusters", "-n", namespace, "-o", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state(cluster: &Value) -> &str {
    cluster["status"]["connection"]["state"]
        .as_str()
        .unwrap_or("Pending")
}

/// The `edgefleet-agent simulate` process the dev hub started.
fn simulator_pid(hub: &Hub) -> u32 {
    let out = Command::new("pgrep")
        .args([
            "-P",
            &hub.pid().unwrap().to_string(),
            "-f",
            "edgefleet-agent",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("a simulator process")
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn dev_hub_agents_connect_report_and_disconnect() {
    let hub = Hub::dev_with_agents(3).expect("dev hub starts");
    let reported = eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            let items = clusters(&hub, "dev");
            let ready = items.len() == 3
                && items.iter().all(|c| {
                    state(c) == "Connected"
                        && c["status"]["nodes"]["total"].as_i64().unwrap_or(0) > 0
                });
            ready.then_some(items)
        },
        "3 connected clusters with facts"
    );
    for c in &reported {
        assert!(
            c["status"]["kubernetesVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with('v')),
            "{c}"
        );
        assert!(!c["status"]["gpus"].as_array().unwrap().is_empty(), "{c}");
        assert_eq!(c["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(c["status"]["conditions"][0]["status"], "True");
    }
    let table = hub.ok(&["get", "clusters", "-A"]);
    let connected_rows = table
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("Connected"))
        .count();
    assert_eq!(connected_rows, 3, "{table}");

    // Freeze the agents (their sockets stay open): the hub notices by keepalive alone.
    let simulator = simulator_pid(&hub);
    signal(simulator, "-STOP");
    eventually!(
        blocking,
        within = Duration::from_secs(30),
        {
            clusters(&hub, "dev")
                .iter()
                .all(|c| state(c) == "Disconnected")
                .then_some(())
        },
        "the frozen clusters to turn Disconnected"
    );
    signal(simulator, "-CONT");
    eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            clusters(&hub, "dev")
                .iter()
                .all(|c| state(c) == "Connected")
                .then_some(())
        },
        "the agents to come back"
    );
}

/// One `edgefleet-agent simulate` for a single cluster whose token is in `dir`.
fn simulate(hub: &Hub, bootstrap_dir: &Path, log: &Path) -> Child {
    let tunnel = hub
        .tunnel_addr
        .expect("the dev hub prints its tunnel address");
    Command::new(binary("edgefleet-agent"))
        .arg("simulate")
        .arg(format!("--hub-address={tunnel}"))
        .arg(format!("--hub-server-name={}", tunnel.ip()))
        .arg("--hub-ca-file")
        .arg(hub.dir.path().join("data/pki/ca.crt"))
        .arg("--bootstrap-dir")
        .arg(bootstrap_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("edgefleet-agent runs")
}

#[test]
fn bootstrap_token_enrolls_once_and_rotation_or_deletion_revokes() {
    let hub = Hub::dev().expect("dev hub starts");
    hub.ok_stdin(&["apply", "-f", "-"], Some(&environment("lab").yaml()));
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&cluster("edge-1").env("lab").yaml()),
    );

    let manifest: Value = serde_json::from_str(&hub.ok(&[
        "get",
        "--raw",
        "/apis/edgefleet.io/v1alpha1/namespaces/lab/clusters/edge-1/bootstrap",
    ]))
    .unwrap();
    let secret = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Secret")
        .expect("a Secret");
    let token =
        String::from_utf8(base64_decode(secret["data"]["token"].as_str().unwrap())).unwrap();
    let deployment = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Deployment")
        .expect("a Deployment");
    assert!(deployment.to_string().contains("--cluster=lab/edge-1"));

    let dir = hub.dir.path().join("agent");
    let first = dir.join("first/lab.edge-1");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("token"), &token).unwrap();
    let mut agent = simulate(&hub, &dir.join("first"), &dir.join("first.log"));
    eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            clusters(&hub, "lab")
                .iter()
                .all(|c| state(c) == "Connected")
                .then_some(())
        },
        "the enrolled cluster to connect"
    );
    assert!(
        first.join("identity.pem").exists(),
        "the agent keeps its certificate"
    );

    // The same token again, from an agent without an identity: refused, and it says why.
    let second = dir.join("second/lab.edge-1");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("token"), &token).unwrap();
    let log = dir.join("second.log");
    let mut reuser = simulate(&hub, &dir.join("second"), &log);
    let logged = eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("already used").then_some(text)
        },
        "the reused token to be refused"
    );
    assert!(!logged.contains(&token), "the agent never logs its token");
    let _ = reuser.kill();
    let _ = reuser.wait();

    // Rotating the credentials revokes the certificate: the tunnel closes and stays refused.
    let log = dir.join("first.log");
    hub.ok(&[
        "annotate",
        "cluster",
        "edge-1",
        "-n",
        "lab",
        "edgefleet.io/rotate-credentials=2026-11-21",
    ]);
    eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("is revoked")
                .then_some(())
        },
        "the rotated cluster's certificate to be refused"
    );
    eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            clusters(&hub, "lab")
                .iter()
                .all(|c| state(c) == "Disconnected")
                .then_some(())
        },
        "the rotated cluster to turn Disconnected"
    );

    // Deleting the Cluster: the agent's certificate is refused because the cluster is gone.
    hub.ok(&["delete", "cluster", "edge-1", "-n", "lab"]);
    eventually!(
        blocking,
        within = CONNECT_DEADLINE,
        {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("no longer exists")
                .then_some(())
        },
        "the deleted cluster's agent to be refused"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
