//! The ClusterRoles edgefleet ships, as data: the standalone hub loads them with its policy and
//! `config/` renders them as manifests for the management cluster.
//!
//! All in group `edgefleet.io`:
//!
//! - `edgefleet-admin` (aggregates into `admin`): every verb on every resource and subresource,
//!   `clusters/proxy` and `clusters/bootstrap` included.
//! - `edgefleet-operator` (into `edit`): read every kind and its status; create, update, patch,
//!   delete and deletecollection clusters, fleets, clusteraddons and placements, but not
//!   environments.
//! - `edgefleet-viewer` (into `view`): get, list and watch every kind and its status, and `get`
//!   on `clusters/proxy` — read-only kubectl into edge clusters (GET, list, watch, logs; an
//!   upgrade such as exec is authorized as `create`); no `bootstrap`.
//!
//! The read rules list subresources explicitly (`clusters/status`) rather than `*/…`, so that a
//! subresource added later (`clusters/proxy`, `clusters/bootstrap`: a shell on an edge cluster,
//! a credential) is never granted to viewers by accident.

use std::collections::BTreeMap;

use edgefleet_api::{ApiKind, Cluster, ClusterAddon, Environment, Fleet, Placement, GROUP};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{rule, AGGREGATE_TO_ADMIN, AGGREGATE_TO_EDIT, AGGREGATE_TO_VIEW};

pub const EDGEFLEET_ADMIN: &str = "edgefleet-admin";
pub const EDGEFLEET_OPERATOR: &str = "edgefleet-operator";
pub const EDGEFLEET_VIEWER: &str = "edgefleet-viewer";

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
/// The verbs a proxied request can carry (from its HTTP method).
const PROXY: [&str; 5] = ["get", "create", "update", "patch", "delete"];
const PROXY_RESOURCE: &str = "clusters/proxy";
const BOOTSTRAP_RESOURCE: &str = "clusters/bootstrap";

fn all_kinds() -> [&'static str; 5] {
    [
        Environment::INFO.plural,
        Cluster::INFO.plural,
        Fleet::INFO.plural,
        ClusterAddon::INFO.plural,
        Placement::INFO.plural,
    ]
}

/// Every kind and its `status`, nothing else.
fn readable() -> Vec<String> {
    all_kinds()
        .into_iter()
        .flat_map(|plural| [plural.to_string(), format!("{plural}/status")])
        .collect()
}

/// Operators manage what runs on the fleet; environments (tenancy boundaries) stay with admins.
fn operable() -> [&'static str; 4] {
    [
        Cluster::INFO.plural,
        Fleet::INFO.plural,
        ClusterAddon::INFO.plural,
        Placement::INFO.plural,
    ]
}

fn cluster_role(
    name: &str,
    aggregate_to: &str,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/part-of".to_string(),
                    "edgefleet".to_string(),
                ),
                (aggregate_to.to_string(), "true".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// `edgefleet-admin`, `edgefleet-operator`, `edgefleet-viewer`.
pub fn default_cluster_roles() -> Vec<ClusterRole> {
    vec![
        cluster_role(
            EDGEFLEET_ADMIN,
            AGGREGATE_TO_ADMIN,
            vec![rule(["*"]).groups([GROUP]).resources(["*"]).build()],
        ),
        cluster_role(
            EDGEFLEET_OPERATOR,
            AGGREGATE_TO_EDIT,
            vec![
                rule(READ).groups([GROUP]).resources(readable()).build(),
                rule(WRITE).groups([GROUP]).resources(operable()).build(),
                // kubectl into edge clusters (their own RBAC applies too), and enrolling agents.
                rule(PROXY)
                    .groups([GROUP])
                    .resources([PROXY_RESOURCE])
                    .build(),
                rule(["get"])
                    .groups([GROUP])
                    .resources([BOOTSTRAP_RESOURCE])
                    .build(),
            ],
        ),
        cluster_role(
            EDGEFLEET_VIEWER,
            AGGREGATE_TO_VIEW,
            vec![
                rule(READ).groups([GROUP]).resources(readable()).build(),
                // Read-only kubectl into edge clusters: GET (list, watch, logs) through the proxy.
                rule(["get"])
                    .groups([GROUP])
                    .resources([PROXY_RESOURCE])
                    .build(),
            ],
        ),
    ]
}

/// [`default_cluster_roles`] as a multi-document YAML manifest.
pub fn default_cluster_roles_yaml() -> String {
    default_cluster_roles()
        .iter()
        .map(|role| serde_yaml_ng::to_string(role).expect("ClusterRole serializes to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
