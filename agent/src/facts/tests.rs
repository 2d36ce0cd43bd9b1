use edgefleet_api::agent::ClusterFacts;
use edgefleet_api::{GpuInventory, NodeCounts};

use super::*;
use crate::testing::node;

fn facts_of(nodes: &[Node]) -> ClusterFacts {
    let summaries: Vec<NodeFacts> = nodes.iter().map(NodeFacts::from_node).collect();
    cluster_facts("v1.31.4+k3s1", &summaries)
}

#[test]
fn nodes_are_counted_and_ready_means_condition_ready_true() {
    let facts = facts_of(&[
        node("a").build(),
        node("b").not_ready().build(),
        node("c").without_ready_condition().build(),
        node("d").build(),
    ]);
    assert_eq!(facts.nodes, NodeCounts { ready: 2, total: 4 });
    assert_eq!(facts.kubernetes_version, "v1.31.4+k3s1");
    assert_eq!(facts.agent_version, AGENT_VERSION);
    assert!(facts.gpus.is_empty(), "{:?}", facts.gpus);
}

#[test]
fn gpus_are_grouped_by_product_label_with_capacity_and_allocatable_summed() {
    let facts = facts_of(&[
        node("a").gpus(Some("NVIDIA-L4"), 2, 2).build(),
        node("b").gpus(Some("NVIDIA-L4"), 2, 1).build(),
        node("c").gpus(Some("NVIDIA-A100-SXM4-80GB"), 8, 8).build(),
        node("d").gpus(None, 1, 1).build(),
        // A labelled GPU node whose device plugin is not up yet.
        node("e").label(GPU_PRODUCT_LABEL, "NVIDIA-H100").build(),
        // A CPU node.
        node("f").build(),
    ]);
    let gpu = |model: &str, count, allocatable| GpuInventory {
        model: model.into(),
        count,
        allocatable,
    };
    assert_eq!(
        facts.gpus,
        vec![
            gpu("NVIDIA-A100-SXM4-80GB", 8, 8),
            gpu("NVIDIA-H100", 0, 0),
            gpu("NVIDIA-L4", 4, 3),
            gpu(UNKNOWN_GPU_MODEL, 1, 1),
        ]
    );
    assert_eq!(facts.nodes, NodeCounts { ready: 6, total: 6 });
}

#[test]
fn a_quantity_that_is_not_a_plain_count_counts_as_zero() {
    assert_eq!(quantity_count(&Quantity("4".into())), 4);
    assert_eq!(quantity_count(&Quantity("500m".into())), 0);
    assert_eq!(quantity_count(&Quantity("-1".into())), 0);
}

#[test]
fn a_facts_line_is_one_json_document_and_a_newline() {
    let facts = facts_of(&[node("a").gpus(Some("NVIDIA-L4"), 2, 2).build()]);
    let line = facts_line(&facts);
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    let parsed: ClusterFacts = serde_json::from_slice(&line).unwrap();
    assert_eq!(parsed, facts);
}
