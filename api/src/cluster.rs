//! `Cluster`: one registered edge cluster.
//!
//! The spec is what operators want (Kubernetes version, node pools, paused); the status is what
//! the hub last heard from the cluster's agent (connection, version, nodes, GPUs, add-ons).
//! Status is written only through the `status` subresource and only when it changes, never per
//! heartbeat.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::{kind_accessors, ApiKind, ResourceInfo, Scope};
use crate::table::{self, PrinterColumn};
use crate::validation::{
    is_dns1123_label, validate_kubernetes_version, validate_labels, validate_non_negative,
    validate_unique_names, ErrorList, FieldError, Path,
};

/// Cluster is one edge Kubernetes cluster registered with the hub. It lives in the namespace of
/// its Environment; its labels (region, gpu, ...) are what Fleets and Placements select on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-group-version-kind" = [{"group": "edgefleet.io", "kind": "Cluster", "version": "v1alpha1"}]))]
pub struct Cluster {
    /// APIVersion defines the versioned schema of this representation of an object.
    #[serde(default)]
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents.
    #[serde(default)]
    pub kind: String,
    /// Standard object's metadata.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::object_meta_ref")]
    pub metadata: ObjectMeta,
    /// Desired state of the edge cluster.
    #[serde(default)]
    pub spec: ClusterSpec,
    /// Observed state of the edge cluster, reported by its agent through the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
}

/// ClusterSpec is the desired state of an edge cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Desired Kubernetes version, e.g. `v1.31.4` or `v1.31.4+k3s1`. When empty, the version of
    /// the Fleet the cluster belongs to applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Node pools of the cluster, by name. Changes are carried out through the edge cluster's own
    /// mechanisms (Cluster API MachineDeployments, system-upgrade-controller), never by logging
    /// into nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub node_pools: Vec<NodePool>,
    /// Paused stops the hub from pushing new desired state to this cluster. The agent keeps
    /// enforcing the last bundle it received.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// NodePool is a group of identical nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// Name of the pool, unique within the cluster.
    pub name: String,
    /// Desired number of nodes.
    #[serde(default)]
    pub replicas: i32,
    /// Machine class or instance type, as the edge provider names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// Labels applied to the pool's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// ClusterStatus is what the hub knows of the cluster, from its agent.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The agent's tunnel to the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,
    /// Kubernetes version the cluster's API server reports (`/version` gitVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Node counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// GPUs by model, from node capacity and allocatable `nvidia.com/gpu` and the GPU product label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["model"]))]
    pub gpus: Vec<GpuInventory>,
    /// State of each add-on of the cluster's desired bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub addons: Vec<AddonState>,
    /// Latest observations of the cluster's state (Ready, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the hub last heard from the agent (written when other status changes, not per heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// The spec generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// ConnectionStatus describes the agent's tunnel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Connected or Disconnected.
    pub state: ConnectionState,
    /// When the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The hub replica holding the tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_replica: Option<String>,
}

/// Whether the cluster's agent holds a tunnel to the hub.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    Connected,
    Disconnected,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "Connected",
            ConnectionState::Disconnected => "Disconnected",
        }
    }
}

/// NodeCounts counts the cluster's nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Nodes whose Ready condition is True.
    pub ready: i32,
    /// All nodes.
    pub total: i32,
}

/// GpuInventory counts the GPUs of one model.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuInventory {
    /// GPU product, e.g. `NVIDIA-A100-SXM4-80GB` (node label `nvidia.com/gpu.product`).
    pub model: String,
    /// Total GPUs of this model (node capacity).
    pub count: i32,
    /// GPUs schedulable by pods (node allocatable).
    #[serde(default)]
    pub allocatable: i32,
}

/// AddonState is the state of one add-on of the cluster's desired bundle.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonState {
    /// Name of the ClusterAddon.
    pub name: String,
    /// Version the cluster should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pending (not applied at this version yet: being delivered, or the agent is away),
    /// Applied (applied, not all objects ready), Ready, Failed (`message` has the edge's own
    /// words) or Drifted (`drift: Report` and an object differs from the desired state).
    #[serde(default)]
    pub state: String,
    /// Human-readable detail, e.g. the apply error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `state` last changed, as the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// `AddonState.state` of an add-on reported Ready at the content it should run.
pub const ADDON_STATE_READY: &str = "Ready";

/// The STATUS cell of a cluster whose agent has never connected.
pub const CLUSTER_STATE_PENDING: &str = "Pending";

const CLUSTER_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::NAME,
    PrinterColumn::string(
        "Environment",
        "The Environment (namespace) the cluster belongs to.",
    ),
    PrinterColumn::string(
        "Status",
        "Connected, Disconnected, or Pending before the agent's first contact.",
    ),
    PrinterColumn::string("Version", "Kubernetes version the cluster reports."),
    PrinterColumn::string("Nodes", "Ready/total nodes."),
    PrinterColumn::integer("GPUs", "Total GPUs."),
    PrinterColumn::AGE,
    PrinterColumn::string("Addons", "Add-ons Ready, of those the cluster should run."),
    PrinterColumn::string("Desired", "Desired Kubernetes version (spec).").wide(),
    PrinterColumn::string("GPU-Model", "GPU models present.").wide(),
    PrinterColumn::string("Hub", "Hub replica holding the tunnel.").wide(),
];

impl ApiKind for Cluster {
    type Spec = ClusterSpec;
    type Status = ClusterStatus;

    const INFO: ResourceInfo = ResourceInfo {
        kind: "Cluster",
        list_kind: "ClusterList",
        plural: "clusters",
        singular: "cluster",
        short_names: &["ec"],
        categories: &[crate::CATEGORY],
        scope: Scope::Namespaced,
        subresources: &["status", "bootstrap", "proxy"],
    };

    kind_accessors!();

    fn validate(&self) -> ErrorList {
        let spec = Path::new("spec");
        let mut errs = ErrorList::default();
        if let Some(v) = &self.spec.kubernetes_version {
            errs.extend(validate_kubernetes_version(
                v,
                &spec.child("kubernetesVersion"),
            ));
        }
        let pools = spec.child("nodePools");
        errs.extend(validate_unique_names(
            self.spec.node_pools.iter().map(|p| p.name.as_str()),
            &pools,
            "name",
        ));
        for (i, pool) in self.spec.node_pools.iter().enumerate() {
            let p = pools.index(i);
            if pool.name.is_empty() {
                errs.push(FieldError::required(&p.child("name"), ""));
            } else {
                for problem in is_dns1123_label(&pool.name) {
                    errs.push(FieldError::invalid(
                        &p.child("name"),
                        pool.name.as_str(),
                        problem,
                    ));
                }
            }
            errs.extend(validate_non_negative(
                pool.replicas.into(),
                &p.child("replicas"),
            ));
            errs.extend(validate_labels(&pool.labels, &p.child("labels")));
        }
        errs
    }

    fn validate_status(&self) -> ErrorList {
        let mut errs = ErrorList::default();
        let Some(status) = &self.status else {
            return errs;
        };
        let path = Path::new("status");
        if let Some(nodes) = &status.nodes {
            let p = path.child("nodes");
            errs.extend(validate_non_negative(nodes.ready.into(), &p.child("ready")));
            errs.extend(validate_non_negative(nodes.total.into(), &p.child("total")));
            if nodes.ready > nodes.total {
                errs.push(FieldError::invalid(
                    &p.child("ready"),
                    nodes.ready,
                    "must not exceed total",
                ));
            }
        }
        for (i, gpu) in status.gpus.iter().enumerate() {
            let p = path.child("gpus").index(i);
            errs.extend(validate_non_negative(gpu.count.into(), &p.child("count")));
            errs.extend(validate_non_negative(
                gpu.allocatable.into(),
                &p.child("allocatable"),
            ));
        }
        errs
    }

    fn columns() -> &'static [PrinterColumn] {
        CLUSTER_COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let state = status
            .connection
            .as_ref()
            .map_or(CLUSTER_STATE_PENDING, |c| c.state.as_str());
        let nodes = status.nodes.map(|n| format!("{}/{}", n.ready, n.total));
        let gpus: i64 = status.gpus.iter().map(|g| i64::from(g.count)).sum();
        let models: Vec<&str> = status.gpus.iter().map(|g| g.model.as_str()).collect();
        let ready = status
            .addons
            .iter()
            .filter(|a| a.state == ADDON_STATE_READY)
            .count();
        let addons = format!("{ready}/{}", status.addons.len());
        vec![
            Value::from(self.metadata.name.clone().unwrap_or_default()),
            table::text(self.metadata.namespace.as_deref()),
            Value::from(state),
            table::text(status.kubernetes_version.as_deref()),
            table::text(nodes.as_deref()),
            Value::from(gpus),
            table::age(self.metadata.creation_timestamp.as_ref(), now),
            Value::from(addons),
            table::text(self.spec.kubernetes_version.as_deref()),
            table::text(Some(&models.join(","))),
            table::text(
                status
                    .connection
                    .as_ref()
                    .and_then(|c| c.hub_replica.as_deref()),
            ),
        ]
    }
}
