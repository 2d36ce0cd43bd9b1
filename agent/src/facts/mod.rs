//! Cluster facts: what the agent reports to the hub on [`FACTS_PATH`](edgefleet_api::agent::FACTS_PATH).
//!
//! ```text
//!  Node ──NodeFacts::from_node──► NodeFacts {ready, gpu model, capacity, allocatable}
//!                                    │  (one small summary per node: a watch keeps these,
//!                                    │   not whole Node objects)
//!  /version gitVersion ─────────────►├─► cluster_facts() ─► ClusterFacts ─► facts_line() ─► NDJSON
//! ```
//!
//! * Nodes: `total` counts every node, `ready` those whose `Ready` condition is `True`.
//! * GPUs are grouped by the node label `nvidia.com/gpu.product` (`unknown` when a node has GPUs
//!   but no label): `count` sums capacity `nvidia.com/gpu`, `allocatable` sums allocatable. A
//!   node counts towards a model if it has the label or any GPU; a labelled node whose device
//!   plugin reports none yet shows its model with 0, which is what an operator wants to see.
//!
//! [`stream`] serves the facts as a long-lived NDJSON body; [`watch`] keeps them current from a
//! real cluster; the simulated backend computes them from its in-memory nodes.

pub mod stream;
pub mod watch;

use std::collections::BTreeMap;

use bytes::Bytes;
use edgefleet_api::agent::ClusterFacts;
use edgefleet_api::{GpuInventory, NodeCounts};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::AGENT_VERSION;

/// Extended resource name of NVIDIA GPUs (device plugin).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Node label with the GPU product (GPU feature discovery).
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// Model reported for GPUs on a node without [`GPU_PRODUCT_LABEL`].
pub const UNKNOWN_GPU_MODEL: &str = "unknown";

/// What the facts need to know about one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// [`GPU_PRODUCT_LABEL`], if set.
    pub gpu_model: Option<String>,
    /// Capacity [`GPU_RESOURCE`].
    pub gpu_capacity: i32,
    /// Allocatable [`GPU_RESOURCE`].
    pub gpu_allocatable: i32,
}

impl NodeFacts {
    /// Summarises a node.
    pub fn from_node(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let gpus = |list: Option<&BTreeMap<String, Quantity>>| {
            list.and_then(|l| l.get(GPU_RESOURCE))
                .map_or(0, quantity_count)
        };
        Self {
            ready,
            gpu_model: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GPU_PRODUCT_LABEL))
                .cloned(),
            gpu_capacity: gpus(status.and_then(|s| s.capacity.as_ref())),
            gpu_allocatable: gpus(status.and_then(|s| s.allocatable.as_ref())),
        }
    }

    fn has_gpus(&self) -> bool {
        self.gpu_model.is_some() || self.gpu_capacity > 0 || self.gpu_allocatable > 0
    }
}

/// The facts of a cluster running `kubernetes_version` with `nodes`.
pub fn cluster_facts<'a>(
    kubernetes_version: &str,
    nodes: impl IntoIterator<Item = &'a NodeFacts>,
) -> ClusterFacts {
    let mut counts = NodeCounts::default();
    // BTreeMap: models in a stable order, so equal facts serialize to equal lines.
    let mut gpus: BTreeMap<&str, GpuInventory> = BTreeMap::new();
    for node in nodes {
        counts.total = counts.total.saturating_add(1);
        if node.ready {
            counts.ready = counts.ready.saturating_add(1);
        }
        if node.has_gpus() {
            let model = node.gpu_model.as_deref().unwrap_or(UNKNOWN_GPU_MODEL);
            let entry = gpus.entry(model).or_insert_with(|| GpuInventory {
                model: model.to_owned(),
                count: 0,
                allocatable: 0,
            });
            entry.count = entry.count.saturating_add(node.gpu_capacity);
            entry.allocatable = entry.allocatable.saturating_add(node.gpu_allocatable);
        }
    }
    ClusterFacts {
        kubernetes_version: kubernetes_version.to_owned(),
        nodes: counts,
        gpus: gpus.into_values().collect(),
        agent_version: AGENT_VERSION.to_owned(),
        ..Default::default()
    }
}

/// One NDJSON line of `facts` (JSON and a trailing newline).
pub fn facts_line(facts: &ClusterFacts) -> Bytes {
    // ClusterFacts has only strings and integers: serializing cannot fail.
    let mut line = serde_json::to_vec(facts).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A count from a quantity (`"4"`); device plugins publish plain integers. Anything else (a
/// fraction, a suffix) counts as 0 rather than as a guess.
fn quantity_count(quantity: &Quantity) -> i32 {
    quantity.0.trim().parse::<i32>().unwrap_or(0).max(0)
}

#[cfg(test)]
pub(crate) mod tests;
