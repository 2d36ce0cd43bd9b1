//! `edgefleet-agent simulate`: many simulated edge clusters in one process, what kwok is to
//! nodes. Each simulated agent is a real agent as far as the hub can tell: its own TLS
//! connection, its own identity (enrolled with its own bootstrap token, then mutual TLS), the
//! same facts stream; only its backend is an in-memory cluster ([`api`]) instead of a
//! kube-apiserver.
//!
//! Bootstrap directory layout (written by the hub's dev command and the benchmarks):
//!
//! ```text
//!   <bootstrap-dir>/
//!     <environment>.<name>/      one per cluster; the first '.' separates environment and name
//!       token                    single-use bootstrap token, one line (may be gone once enrolled)
//!       identity.pem             written by the agent on enrollment (tunnel IdentityStore)
//! ```
//!
//! The cluster directory is the agent's identity directory, so a restarted simulation
//! reconnects with the stored certificates even though the tokens are spent. Clusters are taken
//! in name order; `--count N` takes the first N. Agents start
//! [`SIMULATED_START_SPREAD_PER_AGENT`] apart (1 s per 1,000) so a large simulation does not
//! arrive at the hub all at once.
//!
//! Memory per agent: its tunnel connection (TLS and HTTP/2 state, in the tunnel crate), its
//! name, and `Arc`s to what all agents share: the parsed hub CA ([`crate::hub::PreparedHub`])
//! and the [`World`] (shape, facts line). Nothing is rendered ahead of a request.

pub mod accept;
pub mod api;
pub mod cluster;
pub mod discovery;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_tunnel::{AgentStatus, IdentityStore, TunnelClient};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::api::SimulatedService;
pub use self::cluster::{ClusterShape, SimulatedCluster, World};
use crate::error::{Error, Result};
use crate::hub::{read_token, HubConfig};
use crate::run::ClusterRef;
use crate::service::AgentService;
use crate::timeouts::{SIMULATED_START_SPREAD_PER_AGENT, SIMULATION_REPORT_INTERVAL};

/// Name of the token file in a cluster's bootstrap directory.
pub const TOKEN_FILE: &str = "token";

/// Configuration of `edgefleet-agent simulate`.
#[derive(Clone, Debug)]
pub struct SimulateConfig {
    /// The hub.
    pub hub: HubConfig,
    /// One `<environment>.<name>` subdirectory per cluster (see the module docs).
    pub bootstrap_dir: PathBuf,
    /// Simulate at most this many clusters.
    pub count: Option<usize>,
    /// What every simulated cluster looks like.
    pub shape: ClusterShape,
    /// Delay between two agents' starts.
    pub start_spread: Duration,
}

impl SimulateConfig {
    /// Defaults for everything but the hub and the bootstrap directory.
    pub fn new(hub: HubConfig, bootstrap_dir: impl Into<PathBuf>) -> Self {
        Self {
            hub,
            bootstrap_dir: bootstrap_dir.into(),
            count: None,
            shape: ClusterShape::default(),
            start_spread: SIMULATED_START_SPREAD_PER_AGENT,
        }
    }
}

/// A cluster found in the bootstrap directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapEntry {
    /// Which cluster.
    pub cluster: ClusterRef,
    /// Its directory (token and identity).
    pub dir: PathBuf,
}

/// Lists the clusters of a bootstrap directory, in name order.
pub fn read_bootstrap_dir(dir: &Path) -> Result<Vec<BootstrapEntry>> {
    let io_err = |source| Error::ReadFile {
        what: "bootstrap directory",
        path: dir.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if !entry.file_type().map_err(io_err)?.is_dir() {
            continue;
        }
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        match name.split_once('.') {
            Some((env, cluster)) if !env.is_empty() && !cluster.is_empty() => {
                entries.push(BootstrapEntry {
                    cluster: ClusterRef {
                        environment: env.to_owned(),
                        name: cluster.to_owned(),
                    },
                    dir: entry.path(),
                })
            }
            _ => tracing::debug!(name, "not a <environment>.<name> directory; skipped"),
        }
    }
    entries.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(entries)
}

/// A built simulation, ready to run.
pub struct Simulation {
    agents: Vec<SimulatedAgent>,
    start_spread: Duration,
}

struct SimulatedAgent {
    identity: String,
    client: TunnelClient<AgentService<SimulatedService>>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("agents", &self.agents.len())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Reads the bootstrap directory and prepares one agent per cluster. A cluster with
    /// neither a stored identity nor a token is skipped with a warning (one broken directory
    /// must not stop a benchmark of thousands).
    pub fn build(config: SimulateConfig) -> Result<Self> {
        let hub = config.hub.prepare()?;
        let world = World::new(config.shape.clone(), Timestamp::now())?;
        let mut entries = read_bootstrap_dir(&config.bootstrap_dir)?;
        if let Some(count) = config.count {
            entries.truncate(count);
        }
        if entries.is_empty() {
            return Err(Error::EmptyBootstrapDir(config.bootstrap_dir));
        }

        let mut agents = Vec::with_capacity(entries.len());
        for entry in entries {
            let identity_store = IdentityStore::directory(&entry.dir);
            let enrolled = identity_store.load().map_err(Error::Identity)?.is_some();
            let token = if enrolled {
                None
            } else {
                read_token(&entry.dir.join(TOKEN_FILE))?
            };
            if !enrolled && token.is_none() {
                tracing::warn!(
                    dir = %entry.dir.display(),
                    "no identity and no token: cluster skipped"
                );
                continue;
            }
            let identity = entry.cluster.identity();
            let cluster = SimulatedCluster::new(
                &entry.cluster.environment,
                &entry.cluster.name,
                world.clone(),
            );
            let service =
                AgentService::new(world.facts(), SimulatedService::new(Arc::new(cluster)));
            let tunnel = hub.tunnel_config(identity_store, identity.clone(), token);
            agents.push(SimulatedAgent {
                identity,
                client: TunnelClient::new(tunnel, service),
            });
        }
        tracing::info!(
            clusters = agents.len(),
            nodes_per_cluster = world.shape().nodes,
            "simulation configured"
        );
        Ok(Self {
            agents,
            start_spread: config.start_spread,
        })
    }

    /// The identities of the simulated agents, in start order.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.agents.iter().map(|a| a.identity.as_str())
    }

    /// Each agent's identity and tunnel state.
    pub fn statuses(&self) -> Vec<(String, watch::Receiver<AgentStatus>)> {
        self.agents
            .iter()
            .map(|a| (a.identity.clone(), a.client.status()))
            .collect()
    }

    /// Starts the agents (staggered) and runs them until the future is dropped, which stops
    /// every agent.
    pub async fn run(self) {
        let statuses: Vec<_> = self.agents.iter().map(|a| a.client.status()).collect();
        let mut tasks = JoinSet::new();
        tasks.spawn(report(statuses));
        let start = Instant::now();
        for (i, agent) in self.agents.into_iter().enumerate() {
            let offset = self
                .start_spread
                .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            tokio::time::sleep_until(start + offset).await;
            tasks.spawn(agent.client.run());
        }
        while let Some(ended) = tasks.join_next().await {
            if let Err(error) = ended {
                tracing::error!(%error, "a simulated agent's task failed");
            }
        }
    }
}

/// Logs how many agents are connected whenever that number changed.
async fn report(statuses: Vec<watch::Receiver<AgentStatus>>) {
    let mut last = usize::MAX;
    let mut interval = tokio::time::interval(SIMULATION_REPORT_INTERVAL);
    loop {
        interval.tick().await;
        let connected = statuses
            .iter()
            .filter(|s| matches!(*s.borrow(), AgentStatus::Connected { .. }))
            .count();
        if connected != last {
            tracing::info!(
                connected,
                total = statuses.len(),
                "simulated agents connected"
            );
            last = connected;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_dir_lists_environment_dot_name_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "retail.store-2",
            "retail.store-1",
            "lab.gpu.a100",
            "nodot",
            ".x",
            "y.",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("retail.file"), "not a directory").unwrap();
        let entries = read_bootstrap_dir(dir.path()).unwrap();
        let clusters: Vec<String> = entries.iter().map(|e| e.cluster.to_string()).collect();
        assert_eq!(
            clusters,
            ["lab/gpu.a100", "retail/store-1", "retail/store-2"]
        );
    }

    #[test]
    fn clusters_without_token_or_identity_are_skipped_and_count_caps() {
        let pki = edgefleet_tunnel::CertificateAuthority::generate("ca", Duration::from_secs(3600))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.certificate_pem()).unwrap();
        let clusters = dir.path().join("bootstrap");
        for (name, token) in [
            ("a.one", Some("t1")),
            ("a.two", None),
            ("a.three", Some("t3")),
        ] {
            std::fs::create_dir_all(clusters.join(name)).unwrap();
            if let Some(token) = token {
                std::fs::write(clusters.join(name).join(TOKEN_FILE), token).unwrap();
            }
        }
        let hub = HubConfig::new("127.0.0.1:1", &ca);
        let simulation = Simulation::build(SimulateConfig::new(hub.clone(), &clusters)).unwrap();
        let ids: Vec<&str> = simulation.identities().collect();
        assert_eq!(ids, ["cluster:a/one", "cluster:a/three"]);

        let mut capped = SimulateConfig::new(hub, &clusters);
        capped.count = Some(1);
        let simulation = Simulation::build(capped).unwrap();
        assert_eq!(simulation.identities().count(), 1);
    }
}
