//! `Environment`: a logically isolated group of clusters, paired with the namespace of its name.
//!
//! Every namespaced edgefleet object lives in an Environment's namespace; RBAC separation of
//! duties is ordinary RoleBindings in that namespace. The apiserver refuses objects in a namespace
//! without an Environment, and refuses to delete an Environment that still holds objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::{kind_accessors, ApiKind, ResourceInfo, Scope};
use crate::table::{self, PrinterColumn};
use crate::validation::{is_dns1123_subdomain, validate_unique_names, ErrorList, FieldError, Path};

/// Environment is a logically isolated group of edge clusters (e.g. `retail-prod`). It is paired
/// with the namespace of the same name, which holds its Clusters, Fleets, ClusterAddons and
/// Placements.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-group-version-kind" = [{"group": "edgefleet.io", "kind": "Environment", "version": "v1alpha1"}]))]
pub struct Environment {
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
    /// Desired state of the environment.
    #[serde(default)]
    pub spec: EnvironmentSpec,
    /// Observed state of the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EnvironmentStatus>,
}

/// EnvironmentSpec describes an environment and the policies all of its clusters share.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// What the environment is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Add-ons every cluster of the environment must run (policies, agents), by ClusterAddon name
    /// in the environment's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub addons: Vec<AddonRef>,
}

/// AddonRef names a ClusterAddon in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddonRef {
    /// Name of the ClusterAddon.
    pub name: String,
}

/// EnvironmentStatus summarises the environment's clusters.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// Clusters registered in the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<i32>,
    /// Clusters whose agent is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<i32>,
    /// Add-on releases across the environment's clusters (one per cluster and add-on it should
    /// run), and how they stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<ReleaseCounts>,
    /// Latest observations of the environment's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// ReleaseCounts counts add-on releases (one per cluster and add-on it should run).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCounts {
    /// Releases the clusters should run.
    #[serde(default)]
    pub desired: i32,
    /// Of those, reported Ready at the content they should run.
    #[serde(default)]
    pub ready: i32,
    /// Of those, reported Failed.
    #[serde(default)]
    pub failed: i32,
}

/// Validates the names of a list of add-on references at `path`: present, well-formed, unique.
pub(crate) fn validate_addon_names<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    path: &Path,
) -> ErrorList {
    let mut errs = validate_unique_names(names.clone(), path, "name");
    for (i, name) in names.enumerate() {
        let p = path.index(i).child("name");
        if name.is_empty() {
            errs.push(FieldError::required(&p, ""));
        }
        for problem in is_dns1123_subdomain(name)
            .into_iter()
            .filter(|_| !name.is_empty())
        {
            errs.push(FieldError::invalid(&p, name, problem));
        }
    }
    errs
}

const ENVIRONMENT_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::NAME,
    PrinterColumn::integer("Clusters", "Clusters registered in the environment."),
    PrinterColumn::integer("Connected", "Clusters whose agent is connected."),
    PrinterColumn::integer("Addons", "Add-ons every cluster of the environment runs."),
    PrinterColumn::string(
        "Releases",
        "Add-on releases Ready across the clusters, of those desired.",
    ),
    PrinterColumn::AGE,
    PrinterColumn::string("Description", "What the environment is for.").wide(),
];

impl ApiKind for Environment {
    type Spec = EnvironmentSpec;
    type Status = EnvironmentStatus;

    const INFO: ResourceInfo = ResourceInfo {
        kind: "Environment",
        list_kind: "EnvironmentList",
        plural: "environments",
        singular: "environment",
        short_names: &["env"],
        categories: &[crate::CATEGORY],
        scope: Scope::Cluster,
        subresources: &["status"],
    };

    kind_accessors!();

    fn validate(&self) -> ErrorList {
        validate_addon_names(
            self.spec.addons.iter().map(|a| a.name.as_str()),
            &Path::new("spec").child("addons"),
        )
    }

    fn columns() -> &'static [PrinterColumn] {
        ENVIRONMENT_COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        vec![
            Value::from(self.metadata.name.clone().unwrap_or_default()),
            status.clusters.map_or(Value::Null, Value::from),
            status.connected.map_or(Value::Null, Value::from),
            Value::from(self.spec.addons.len()),
            table::text(
                status
                    .addons
                    .as_ref()
                    .map(|a| format!("{}/{}", a.ready, a.desired))
                    .as_deref(),
            ),
            table::age(self.metadata.creation_timestamp.as_ref(), now),
            table::text(self.spec.description.as_deref()),
        ]
    }
}
