//! `Fleet`: a set of clusters chosen by label selector, sharing a lifecycle.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::{kind_accessors, ApiKind, ResourceInfo, Scope};
use crate::table::{self, PrinterColumn};
use crate::validation::{
    validate_int_or_percent, validate_kubernetes_version, validate_label_selector, ErrorList,
    FieldError, IntOrPercentRules, Path,
};

/// Fleet is a set of clusters of one environment, chosen by label selector, that share a
/// lifecycle: Kubernetes version, agent version and how upgrades roll across them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-group-version-kind" = [{"group": "edgefleet.io", "kind": "Fleet", "version": "v1alpha1"}]))]
pub struct Fleet {
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
    /// Desired state of the fleet.
    #[serde(default)]
    pub spec: FleetSpec,
    /// Observed state of the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<FleetStatus>,
}

/// FleetSpec selects clusters and sets the lifecycle they share.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetSpec {
    /// Clusters of the environment whose labels match belong to the fleet. An empty selector
    /// selects every cluster of the environment.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Kubernetes version the fleet's clusters run, e.g. `v1.31.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Version of edgefleet-agent the fleet's clusters run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// How a version change rolls across the fleet.
    #[serde(default)]
    pub strategy: UpgradeStrategy,
    /// Paused holds version changes at the clusters already updated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// UpgradeStrategy bounds how many clusters upgrade at once.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Clusters that may be unavailable (upgrading or failed) at once: a count or a percentage
    /// of the fleet's clusters. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Stop the rollout when a cluster fails to upgrade. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<bool>,
}

/// FleetStatus counts the fleet's clusters.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// Clusters the selector matches.
    #[serde(default)]
    pub matched: i32,
    /// Matched clusters that are connected and ready.
    #[serde(default)]
    pub ready: i32,
    /// Matched clusters running the fleet's Kubernetes version.
    #[serde(default)]
    pub updated: i32,
    /// Clusters per running Kubernetes version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["version"]))]
    pub versions: Vec<VersionCount>,
    /// The spec generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations of the fleet's state (Progressing, Paused, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// VersionCount counts clusters running one Kubernetes version.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    pub version: String,
    pub count: i32,
}

const FLEET_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::NAME,
    PrinterColumn::integer("Clusters", "Clusters the selector matches."),
    PrinterColumn::integer("Ready", "Matched clusters that are connected and ready."),
    PrinterColumn::string("Version", "Kubernetes version of the fleet."),
    PrinterColumn::AGE,
    PrinterColumn::integer("Updated", "Clusters running the fleet's version.").wide(),
    PrinterColumn::string("Selector", "Label selector of the fleet.").wide(),
];

/// Renders a label selector as `kubectl get -o wide` shows selectors (`a=b,c in (d,e)`).
fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            "DoesNotExist" => format!("!{}", req.key),
            other => format!("{} {other} ({values})", req.key),
        });
    }
    parts.join(",")
}

impl ApiKind for Fleet {
    type Spec = FleetSpec;
    type Status = FleetStatus;

    const INFO: ResourceInfo = ResourceInfo {
        kind: "Fleet",
        list_kind: "FleetList",
        plural: "fleets",
        singular: "fleet",
        short_names: &["fl"],
        categories: &[crate::CATEGORY],
        scope: Scope::Namespaced,
        subresources: &["status"],
    };

    kind_accessors!();

    fn default_fields(&mut self) {
        let strategy = &mut self.spec.strategy;
        strategy.max_unavailable.get_or_insert(IntOrString::Int(1));
        strategy.pause_on_failure.get_or_insert(true);
    }

    fn validate(&self) -> ErrorList {
        let spec = Path::new("spec");
        let mut errs = validate_label_selector(&self.spec.selector, &spec.child("selector"));
        if let Some(v) = &self.spec.kubernetes_version {
            errs.extend(validate_kubernetes_version(
                v,
                &spec.child("kubernetesVersion"),
            ));
        }
        if let Some(v) = &self.spec.agent_version {
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                errs.push(FieldError::invalid(
                    &spec.child("agentVersion"),
                    v.as_str(),
                    "must be a non-empty version without spaces",
                ));
            }
        }
        if let Some(max) = &self.spec.strategy.max_unavailable {
            errs.extend(validate_int_or_percent(
                max,
                &spec.child("strategy").child("maxUnavailable"),
                IntOrPercentRules { positive: true },
            ));
        }
        errs
    }

    fn columns() -> &'static [PrinterColumn] {
        FLEET_COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        vec![
            Value::from(self.metadata.name.clone().unwrap_or_default()),
            Value::from(status.matched),
            Value::from(status.ready),
            table::text(self.spec.kubernetes_version.as_deref()),
            table::age(self.metadata.creation_timestamp.as_ref(), now),
            Value::from(status.updated),
            table::text(Some(&selector_string(&self.spec.selector))),
        ]
    }
}
