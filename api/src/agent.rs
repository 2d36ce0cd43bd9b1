//! What crosses the tunnel between an agent and the hub besides proxied requests.
//!
//! The hub opens one long-lived `GET` [`FACTS_PATH`] on each agent's tunnel; the agent answers
//! with newline-delimited JSON [`ClusterFacts`]: one line at once, another whenever a fact
//! changes, and the same line again at least every [`FACTS_HEARTBEAT_SECONDS`] so the hub knows
//! the agent is alive. The hub writes `Cluster.status` only when the facts (or the connection)
//! change; heartbeats stay in the hub's memory. Each line also carries the state of the desired
//! bundle the agent enforces (see [`crate::delivery`]).

use serde::{Deserialize, Serialize};

use crate::{GpuInventory, NodeCounts};

/// Path of the facts stream on the agent (answered by the agent itself, never forwarded to the
/// edge kube-apiserver).
pub const FACTS_PATH: &str = "/.well-known/edgefleet/facts";

/// Longest silence on the facts stream: the agent repeats its facts at least this often.
pub const FACTS_HEARTBEAT_SECONDS: u64 = 30;

/// The facts an agent reports about its cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFacts {
    /// `gitVersion` of the edge kube-apiserver's `/version`.
    pub kubernetes_version: String,
    /// Nodes, and how many are Ready.
    pub nodes: NodeCounts,
    /// GPUs by model: node capacity and allocatable `nvidia.com/gpu`, model from the node label
    /// `nvidia.com/gpu.product`.
    #[serde(default)]
    pub gpus: Vec<GpuInventory>,
    /// Version of the agent.
    pub agent_version: String,
    /// Hash of the [`crate::delivery::DesiredBundle`] the agent enforces; none before its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// The latest report of each release of that bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<crate::delivery::AddonReport>,
}

/// The identity a cluster's agent holds: `cluster:<environment>/<name>`.
pub fn agent_identity(environment: &str, name: &str) -> String {
    format!("cluster:{environment}/{name}")
}

/// The environment and name in an agent identity, if it is one.
pub fn parse_agent_identity(identity: &str) -> Option<(&str, &str)> {
    let rest = identity.strip_prefix("cluster:")?;
    let (env, name) = rest.split_once('/')?;
    (!env.is_empty() && !name.is_empty() && !name.contains('/')).then_some((env, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        let id = agent_identity("retail", "store-1");
        assert_eq!(id, "cluster:retail/store-1");
        assert_eq!(parse_agent_identity(&id), Some(("retail", "store-1")));
        for bad in [
            "retail/store-1",
            "cluster:retail",
            "cluster:/x",
            "cluster:a/",
            "cluster:a/b/c",
        ] {
            assert_eq!(parse_agent_identity(bad), None, "{bad}");
        }
    }

    #[test]
    fn facts_are_camel_case_json() {
        let facts = ClusterFacts {
            kubernetes_version: "v1.31.4".into(),
            nodes: NodeCounts { ready: 2, total: 3 },
            gpus: vec![GpuInventory {
                model: "NVIDIA-L4".into(),
                count: 4,
                allocatable: 3,
            }],
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(json["kubernetesVersion"], "v1.31.4");
        assert_eq!(json["gpus"][0]["allocatable"], 3);
        assert_eq!(serde_json::from_value::<ClusterFacts>(json).unwrap(), facts);
    }
}
