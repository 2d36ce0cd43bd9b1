//! `meta.k8s.io/v1` Tables of nodes and namespaces, with kube-apiserver's columns, so
//! `kubectl get nodes` (and `-o wide`) prints what it prints against a real cluster:
//!
//! ```text
//! NAME              STATUS   ROLES                  AGE   VERSION         INTERNAL-IP   EXTERNAL-IP   OS-IMAGE   KERNEL-VERSION   CONTAINER-RUNTIME
//! store-1-node-0    Ready    control-plane,master   5d    v1.31.4+k3s1    10.7.0.4      <none>        Ubuntu…    6.8.0-51-generic containerd://…
//! ```
//! (the columns after VERSION only with `-o wide`: priority 1). Namespaces: `NAME STATUS AGE`.
//! The columns and cells are defined here; the Table is assembled by the writer the hub uses
//! ([`edgefleet_apimachinery::table`]).

use bytes::Bytes;
use edgefleet_api::table::{age, PrinterColumn};
use edgefleet_apimachinery::table::{IncludeObject, ListMeta, TableError, TableWriter};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::{json, Value};

use super::cluster::RESOURCE_VERSION;

const NODE_COLUMNS: [PrinterColumn; 10] = [
    PrinterColumn::NAME,
    PrinterColumn::string("Status", "The status of the node"),
    PrinterColumn::string("Roles", "The roles of the node"),
    PrinterColumn::AGE,
    PrinterColumn::string("Version", "Kubelet Version reported by the node."),
    PrinterColumn::string("Internal-IP", "List of internal IPs for the node.").wide(),
    PrinterColumn::string("External-IP", "List of external IPs for this node.").wide(),
    PrinterColumn::string("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
    PrinterColumn::string("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
    PrinterColumn::string("Container-Runtime", "Container Runtime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
];

const NAMESPACE_COLUMNS: [PrinterColumn; 3] = [
    PrinterColumn::NAME,
    PrinterColumn::string("Status", "The status of the namespace"),
    PrinterColumn::AGE,
];

/// The Table of `nodes`.
pub fn node_table(
    nodes: &[Node],
    now: Timestamp,
    include: IncludeObject,
) -> Result<Bytes, TableError> {
    table(&NODE_COLUMNS, nodes, include, |node| node_cells(node, now))
}

/// The Table of `namespaces`.
pub fn namespace_table(
    namespaces: &[Namespace],
    now: Timestamp,
    include: IncludeObject,
) -> Result<Bytes, TableError> {
    table(&NAMESPACE_COLUMNS, namespaces, include, |ns| {
        vec![
            json!(ns.metadata.name),
            json!(ns
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("")),
            age(ns.metadata.creation_timestamp.as_ref(), now),
        ]
    })
}

fn node_cells(node: &Node, now: Timestamp) -> Vec<Value> {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let mut state = match ready {
        Some(c) if c.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_owned();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        state.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|role| !role.is_empty())
        .collect();
    let address = |type_: &str| {
        status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == type_))
            .map_or("<none>", |a| a.address.as_str())
            .to_owned()
    };
    let info = status.and_then(|s| s.node_info.as_ref());
    let info_field = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| {
        info.map(f).cloned().unwrap_or_default()
    };
    vec![
        json!(node.metadata.name),
        json!(state),
        json!(if roles.is_empty() {
            "<none>".to_owned()
        } else {
            roles.join(",")
        }),
        age(node.metadata.creation_timestamp.as_ref(), now),
        json!(info_field(|i| &i.kubelet_version)),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info_field(|i| &i.os_image)),
        json!(info_field(|i| &i.kernel_version)),
        json!(info_field(|i| &i.container_runtime_version)),
    ]
}

/// A Table of `objects` with `columns`, each row's cells from `cells`, written by the shared
/// Table writer.
fn table<T: Serialize>(
    columns: &[PrinterColumn],
    objects: &[T],
    include: IncludeObject,
    cells: impl Fn(&T) -> Vec<Value>,
) -> Result<Bytes, TableError> {
    let mut out = TableWriter::new(&ListMeta::at(RESOURCE_VERSION), Some(columns), include, 0);
    for object in objects {
        let json = serde_json::to_vec(object).map_err(TableError::NotJson)?;
        out.row(&cells(object), &json)?;
    }
    Ok(out.finish())
}
