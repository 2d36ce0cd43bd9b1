//! The real hub, `edgefleet-apiserver dev`, on fixed ports so that it can be killed and started
//! again on the same data directory and addresses (agents redial the same port).
//!
//! Its tunnel server logs `agent connected identity=<id>` right after it registers a session;
//! the driver stamps those lines as they arrive, which gives each agent's (re)connection time
//! from the hub's point of view at sub-millisecond resolution (Cluster status only records
//! whole seconds). The hub is back for agents when it logs `tunnel port serving agents` (its
//! tunnel port is bound), and for API clients when it prints `serving on https://…`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::client::HubClient;
use crate::hub::binary;
use crate::procs::{wait_line, Line, Lines, Proc};

/// How long the hub may take to serve after a start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// What the hub logs when an agent's session is about to be registered.
const SESSION_LINE: &str = "edgefleet_tunnel::server: agent connected identity=";
/// What the hub prints once it serves its API.
const SERVING_LINE: &str = "serving on https://";
/// What the hub logs once its tunnel port is bound: agents can connect from then on.
const TUNNEL_LINE: &str = "tunnel port serving agents";

/// A running (or killed) dev hub.
pub struct DevHub {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub tunnel: SocketAddr,
    log: PathBuf,
    proc: Option<Proc>,
    lines: Option<Lines>,
    /// Lines read while waiting for the hub to serve, not yet handed out.
    early: Vec<Line>,
}

/// When a (re)started hub was ready.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    /// Its tunnel port was bound: agents can connect.
    pub tunnel: Instant,
    /// It served its API.
    pub serving: Instant,
}

/// A session registration seen in the hub's log.
#[derive(Clone, Debug)]
pub struct SessionLine {
    pub at: Instant,
    pub identity: String,
}

impl DevHub {
    /// Starts a hub with no simulated agents of its own; returns when it serves.
    pub async fn start(
        data_dir: &Path,
        listen: SocketAddr,
        tunnel: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<(DevHub, Started)> {
        let mut hub = DevHub {
            data_dir: data_dir.to_path_buf(),
            listen,
            tunnel,
            log: log.to_path_buf(),
            proc: None,
            lines: None,
            early: Vec::new(),
        };
        let back = hub.start_again().await?;
        Ok((hub, back))
    }

    /// Starts the process (after [`DevHub::kill`]); returns when it serves its API. Agents'
    /// sessions logged meanwhile are kept for [`DevHub::sessions_until`].
    pub async fn start_again(&mut self) -> anyhow::Result<Started> {
        let mut cmd = Command::new(binary("edgefleet-apiserver"));
        cmd.args(["dev", "--agents", "0", "--listen"])
            .arg(self.listen.to_string())
            .arg("--tunnel-listen")
            .arg(self.tunnel.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info");
        let (proc, mut lines) = Proc::spawn("edgefleet-apiserver dev", cmd, &self.log, |l| {
            l.contains(SESSION_LINE) || l.contains(SERVING_LINE) || l.contains(TUNNEL_LINE)
        })?;
        self.proc = Some(proc);
        self.early.clear();
        let mut tunnel = None;
        let deadline = Instant::now() + START_TIMEOUT;
        let serving = loop {
            let line = wait_line(
                &mut lines,
                deadline - Instant::now(),
                "the hub to serve",
                |_| true,
            )
            .await
            .with_context(|| self.log_tail())?;
            if line.text.contains(SERVING_LINE) {
                break line.at;
            } else if line.text.contains(TUNNEL_LINE) {
                tunnel = Some(line.at);
            } else {
                self.early.push(line);
            }
        };
        self.lines = Some(lines);
        Ok(Started {
            tunnel: tunnel.unwrap_or(serving),
            serving,
        })
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
        self.lines = None;
        self.early.clear();
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// The CA of the hub's serving (and tunnel) certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// An admin client with `connections` HTTP/2 connections.
    pub async fn client(&self, connections: usize) -> anyhow::Result<HubClient> {
        HubClient::connect(&self.kubeconfig(), connections).await
    }

    /// The next session registrations logged (including those logged while the hub started)
    /// until `deadline` or until `stop` says enough.
    pub async fn sessions_until(
        &mut self,
        deadline: Instant,
        mut stop: impl FnMut(&SessionLine) -> bool,
    ) -> Vec<SessionLine> {
        let mut seen = Vec::new();
        let early = std::mem::take(&mut self.early);
        let Some(lines) = self.lines.as_mut() else {
            return seen;
        };
        let mut early = early.into_iter();
        loop {
            let Line { at, text } = match early.next() {
                Some(line) => line,
                None => match tokio::time::timeout_at(deadline, lines.recv()).await {
                    Ok(Some(line)) => line,
                    _ => break,
                },
            };
            let Some(identity) = session_identity(&text) else {
                continue;
            };
            let line = SessionLine { at, identity };
            let done = stop(&line);
            seen.push(line);
            if done {
                break;
            }
        }
        // Whatever `stop` cut short stays for the next call.
        self.early.extend(early);
        seen
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// `identity=<id>` of a session line.
fn session_identity(text: &str) -> Option<String> {
    if !text.contains(SESSION_LINE) {
        return None;
    }
    let at = text.find("identity=")? + "identity=".len();
    Some(
        text[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// Creates the Environment `env` if it does not exist.
pub async fn create_environment(client: &HubClient, env: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Environment", "metadata": {"name": env}});
    let (status, text) = client
        .call(
            Method::POST,
            "/apis/edgefleet.io/v1alpha1/environments",
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED || status == StatusCode::CONFLICT,
        "creating environment {env}: {status} {}",
        String::from_utf8_lossy(&text)
    );
    Ok(())
}

/// Creates the Cluster `env/name` and returns a bootstrap token from its `bootstrap`
/// subresource (the install manifest's Secret), as an operator enrolling a site would.
pub async fn create_cluster_with_token(
    client: &HubClient,
    env: &str,
    name: &str,
) -> anyhow::Result<String> {
    let base = format!("/apis/edgefleet.io/v1alpha1/namespaces/{env}/clusters");
    let body = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster",
                      "metadata": {"name": name, "labels": {"bench": "tunnel"}},
                      "spec": {"kubernetesVersion": "v1.31.4"}});
    let (status, text) = client
        .call(
            Method::POST,
            &base,
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED || status == StatusCode::CONFLICT,
        "creating cluster {env}/{name}: {status} {}",
        String::from_utf8_lossy(&text)
    );
    let (status, manifest) = client
        .call(
            Method::GET,
            &format!("{base}/{name}/bootstrap"),
            None,
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "bootstrap of {env}/{name}: {status}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let token = manifest["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["kind"] == "Secret" && item["data"]["token"].is_string())
        .and_then(|secret| secret["data"]["token"].as_str())
        .context("the install manifest has no bootstrap token Secret")?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(token)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_of_a_session_line() {
        let line = "2026-11-21T09:05:59.655905Z  INFO tunnel{peer=127.0.0.1:55308}: edgefleet_tunnel::server: agent connected identity=cluster:fleet/site-00042";
        assert_eq!(
            session_identity(line).as_deref(),
            Some("cluster:fleet/site-00042")
        );
        let gone = "2026-11-21T09:05:59.657947Z  INFO tunnel{peer=127.0.0.1:55308}: edgefleet_tunnel::server: agent disconnected identity=cluster:fleet/site-00042 reason=PeerClosed";
        assert_eq!(session_identity(gone), None);
    }
}
