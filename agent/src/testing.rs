//! Fixtures shared by the unit tests: builders, not JSON blobs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::facts::{GPU_PRODUCT_LABEL, GPU_RESOURCE};

/// `node("edge-1").not_ready().gpus(Some("NVIDIA-L4"), 4, 3).build()`.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        name: name.to_owned(),
        ready: Some(true),
        labels: BTreeMap::new(),
        capacity: BTreeMap::new(),
        allocatable: BTreeMap::new(),
    }
}

pub struct NodeBuilder {
    name: String,
    ready: Option<bool>,
    labels: BTreeMap<String, String>,
    capacity: BTreeMap<String, Quantity>,
    allocatable: BTreeMap<String, Quantity>,
}

impl NodeBuilder {
    pub fn not_ready(mut self) -> Self {
        self.ready = Some(false);
        self
    }

    /// No Ready condition at all (a node that never reported).
    pub fn without_ready_condition(mut self) -> Self {
        self.ready = None;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// GPUs of `model` (no product label when `None`).
    pub fn gpus(mut self, model: Option<&str>, capacity: i32, allocatable: i32) -> Self {
        if let Some(model) = model {
            self = self.label(GPU_PRODUCT_LABEL, model);
        }
        self.capacity
            .insert(GPU_RESOURCE.to_owned(), Quantity(capacity.to_string()));
        self.allocatable
            .insert(GPU_RESOURCE.to_owned(), Quantity(allocatable.to_string()));
        self
    }

    pub fn build(self) -> Node {
        let mut conditions = vec![NodeCondition {
            type_: "MemoryPressure".into(),
            status: "False".into(),
            ..NodeCondition::default()
        }];
        if let Some(ready) = self.ready {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..NodeCondition::default()
            });
        }
        Node {
            metadata: ObjectMeta {
                name: Some(self.name),
                labels: Some(self.labels),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(conditions),
                capacity: Some(self.capacity),
                allocatable: Some(self.allocatable),
                ..NodeStatus::default()
            }),
        }
    }
}
