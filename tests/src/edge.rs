//! Edge clusters behind a hub, for the proxy path end to end:
//!
//! ```text
//! kubectl ──► hub (Hub) ──tunnel──► edgefleet-agent run (EdgeAgent) ──► upstream kube-apiserver
//!                                   --kubeconfig <upstream admin>       (a second edgefleet-apiserver
//!                                   --cluster env/name                   dev, or the pods test double)
//! ```
//!
//! [`EdgeAgent::start`] registers the Cluster on the hub, takes a bootstrap token from its
//! `bootstrap` subresource, runs the agent with it, and waits until the hub shows the cluster
//! Connected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use crate::hub::{binary, Hub};
use edgefleet_api::testing;
use edgefleet_testkit::eventually;

/// Long enough for an agent to enroll and connect on a busy two-core machine.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Creates Environment `environment` (if missing) and Cluster `environment/name` on the hub.
pub fn register_cluster(hub: &Hub, environment: &str, name: &str) {
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "{}---\n{}",
            testing::environment(environment).yaml(),
            testing::cluster(name).env(environment).yaml()
        )),
    );
}

/// The cluster's connection state on the hub (`Pending` before any).
pub fn connection_state(hub: &Hub, environment: &str, name: &str) -> String {
    let out = hub.ok(&["get", "cluster", name, "-n", environment, "-o", "json"]);
    let cluster: Value = serde_json::from_str(&out).expect("a Cluster");
    cluster["status"]["connection"]["state"]
        .as_str()
        .unwrap_or("Pending")
        .to_string()
}

/// One `edgefleet-agent run` process.
pub struct EdgeAgent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl EdgeAgent {
    /// Registers `environment/name` on `hub` and runs its agent in front of the kube-apiserver
    /// that `upstream_kubeconfig` reaches (with that kubeconfig's credentials); returns once the
    /// hub shows the cluster Connected.
    pub fn start(
        hub: &Hub,
        environment: &str,
        name: &str,
        upstream_kubeconfig: &Path,
    ) -> anyhow::Result<EdgeAgent> {
        register_cluster(hub, environment, name);
        let manifest: Value = serde_json::from_str(&hub.ok(&[
            "get",
            "--raw",
            &format!(
                "/apis/edgefleet.io/v1alpha1/namespaces/{environment}/clusters/{name}/bootstrap"
            ),
        ]))?;
        let secret = manifest["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["kind"] == "Secret"))
            .context("the install manifest has a Secret")?;
        let token = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().context("a token")?)?;
        let dir = hub.dir.path().join(format!("agent-{environment}-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), token)?;
        let tunnel = hub
            .tunnel_addr
            .context("the dev hub prints its tunnel address")?;
        let log = dir.join("agent.log");
        let child = Command::new(binary("edgefleet-agent"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(upstream_kubeconfig)
            .arg(format!("--cluster={environment}/{name}"))
            .arg("--bootstrap-token-file")
            .arg(dir.join("token"))
            .arg("--identity-dir")
            .arg(dir.join("identity"))
            .arg(format!("--hub-address={tunnel}"))
            .arg("--hub-ca-file")
            .arg(hub.dir.path().join("data/pki/ca.crt"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting edgefleet-agent run")?;
        let agent = EdgeAgent {
            child: Some(child),
            log,
        };
        eventually!(
            blocking,
            within = CONNECT_DEADLINE,
            (connection_state(hub, environment, name) == "Connected").then_some(()),
            "{environment}/{name} to connect"
        );
        Ok(agent)
    }

    /// SIGKILL: the tunnel's TCP connection goes away with the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}
