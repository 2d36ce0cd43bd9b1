//! `Placement`: binds add-ons to clusters and says how fast they roll out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addon::json_size;
use crate::delivery::MAX_PLACEMENT_VALUES_BYTES;
use crate::environment::validate_addon_names;
use crate::kind::{kind_accessors, ApiKind, ResourceInfo, Scope};
use crate::table::{self, PrinterColumn};
use crate::validation::{
    is_dns1123_label, validate_int_or_percent, validate_label_selector, validate_non_negative,
    validate_unique_names, ErrorList, FieldError, IntOrPercentRules, Path,
};

/// Placement binds ClusterAddons to clusters (by Fleet, label selector or name) and says how
/// fast a change rolls out: all at once, or progressively with canaries, a bound on unavailable
/// clusters, a soak time and health gates.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-group-version-kind" = [{"group": "edgefleet.io", "kind": "Placement", "version": "v1alpha1"}]))]
pub struct Placement {
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
    /// Which add-ons go where, and how fast.
    #[serde(default)]
    pub spec: PlacementSpec,
    /// Per-cluster decisions and rollout state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PlacementStatus>,
}

/// PlacementSpec names add-ons, target clusters and a rollout strategy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// ClusterAddons (in this namespace) to run on the target clusters, each with optional
    /// values of this placement.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub addons: Vec<PlacedAddon>,
    /// Target clusters: the union of the named fleets' clusters, the clusters matching the
    /// selector, and the clusters named.
    #[serde(default)]
    pub clusters: ClusterTargets,
    /// How a change reaches the target clusters.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Paused holds the rollout where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// PlacedAddon names a ClusterAddon in the same namespace and what this placement changes in it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacedAddon {
    /// Name of the ClusterAddon.
    pub name: String,
    /// Values for a Helm add-on on this placement's clusters (an object), merged over the
    /// add-on's `spec.helm.values` as a JSON merge patch (RFC 7386: objects merge key by key,
    /// anything else replaces, `null` removes); nothing is templated. At most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub values: Option<Value>,
}

/// ClusterTargets chooses clusters of the placement's environment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTargets {
    /// Fleets whose clusters are targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub fleets: Vec<String>,
    /// Clusters whose labels match are targeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Clusters targeted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
}

/// RolloutStrategy says how fast a change reaches the target clusters.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// AllAtOnce or Progressive (the default).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<RolloutType>,
    /// Clusters updated first, before the rest proceeds: a count or a percentage of the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<IntOrString>,
    /// Clusters that may be updating or failed at once: a count or a percentage. Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Seconds an updated cluster must stay healthy before it counts as done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_soak_seconds: Option<i32>,
    /// Stop the rollout when a cluster fails. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<bool>,
    /// Conditions an updated cluster must meet to count as healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub health_gates: Vec<HealthGate>,
}

/// How a Placement rolls out.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutType {
    AllAtOnce,
    Progressive,
}

/// HealthGate is a check an updated cluster must pass.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// ClusterConnected, AddonsReady or GPUHealthy.
    #[serde(rename = "type")]
    pub type_: HealthGateType,
    /// For GPUHealthy: the minimum fraction (0–100%) of GPUs that must be allocatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

/// The checks a health gate can make.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthGateType {
    ClusterConnected,
    AddonsReady,
    #[serde(rename = "GPUHealthy")]
    GpuHealthy,
}

impl HealthGateType {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthGateType::ClusterConnected => "ClusterConnected",
            HealthGateType::AddonsReady => "AddonsReady",
            HealthGateType::GpuHealthy => "GPUHealthy",
        }
    }
}

/// PlacementStatus is the rollout's progress.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Clusters targeted.
    #[serde(default)]
    pub total: i32,
    /// Targeted clusters running the current bundle and healthy.
    #[serde(default)]
    pub updated: i32,
    /// Targeted clusters whose update failed.
    #[serde(default)]
    pub failed: i32,
    /// Per-cluster decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub clusters: Vec<ClusterDecision>,
    /// The spec generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations of the rollout (Progressing, Paused, Complete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// ClusterDecision is the rollout state of one targeted cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDecision {
    /// Cluster name.
    pub name: String,
    /// Content hash of the bundle the cluster should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_hash: Option<String>,
    /// Pending, Progressing, Soaking, Updated or Failed.
    #[serde(default)]
    pub state: String,
    /// Detail, e.g. why the cluster failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

const PLACEMENT_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::NAME,
    PrinterColumn::string("Addons", "Add-ons placed."),
    PrinterColumn::integer("Clusters", "Clusters targeted."),
    PrinterColumn::integer("Updated", "Targeted clusters running the current bundle."),
    PrinterColumn::AGE,
    PrinterColumn::string("Strategy", "AllAtOnce or Progressive.").wide(),
    PrinterColumn::integer("Failed", "Targeted clusters whose update failed.").wide(),
];

impl ApiKind for Placement {
    type Spec = PlacementSpec;
    type Status = PlacementStatus;

    const INFO: ResourceInfo = ResourceInfo {
        kind: "Placement",
        list_kind: "PlacementList",
        plural: "placements",
        singular: "placement",
        short_names: &["pl"],
        categories: &[crate::CATEGORY],
        scope: Scope::Namespaced,
        subresources: &["status"],
    };

    kind_accessors!();

    fn default_fields(&mut self) {
        let s = &mut self.spec.strategy;
        let kind = *s.type_.get_or_insert(RolloutType::Progressive);
        if kind == RolloutType::Progressive {
            s.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            s.pause_on_failure.get_or_insert(true);
        }
    }

    fn validate(&self) -> ErrorList {
        let spec = Path::new("spec");
        let mut errs = ErrorList::default();
        if self.spec.addons.is_empty() {
            errs.push(FieldError::required(
                &spec.child("addons"),
                "at least one add-on",
            ));
        }
        let addons = spec.child("addons");
        errs.extend(validate_addon_names(
            self.spec.addons.iter().map(|a| a.name.as_str()),
            &addons,
        ));
        for (i, addon) in self.spec.addons.iter().enumerate() {
            let Some(values) = &addon.values else {
                continue;
            };
            let p = addons.index(i).child("values");
            if !values.is_object() {
                errs.push(FieldError::invalid(&p, values.clone(), "must be an object"));
            } else if json_size(values) > MAX_PLACEMENT_VALUES_BYTES {
                errs.push(FieldError::too_long(&p, MAX_PLACEMENT_VALUES_BYTES));
            }
        }

        let targets = &self.spec.clusters;
        let tp = spec.child("clusters");
        if targets.fleets.is_empty() && targets.names.is_empty() && targets.selector.is_none() {
            errs.push(FieldError::required(
                &tp,
                "one of `fleets`, `selector` or `names`",
            ));
        }
        for (field, list) in [("fleets", &targets.fleets), ("names", &targets.names)] {
            let p = tp.child(field);
            for (i, name) in list.iter().enumerate() {
                for problem in is_dns1123_label(name) {
                    errs.push(FieldError::invalid(&p.index(i), name.as_str(), problem));
                }
            }
            errs.extend(validate_unique_names(
                list.iter().map(String::as_str),
                &p,
                "",
            ));
        }
        if let Some(selector) = &targets.selector {
            errs.extend(validate_label_selector(selector, &tp.child("selector")));
        }

        let s = &self.spec.strategy;
        let sp = spec.child("strategy");
        if let Some(max) = &s.max_unavailable {
            errs.extend(validate_int_or_percent(
                max,
                &sp.child("maxUnavailable"),
                IntOrPercentRules { positive: true },
            ));
        }
        if let Some(canary) = &s.canary {
            errs.extend(validate_int_or_percent(
                canary,
                &sp.child("canary"),
                IntOrPercentRules { positive: false },
            ));
        }
        if let Some(soak) = s.min_soak_seconds {
            errs.extend(validate_non_negative(
                soak.into(),
                &sp.child("minSoakSeconds"),
            ));
        }
        if s.type_ == Some(RolloutType::AllAtOnce) {
            for (field, set) in [
                ("canary", s.canary.is_some()),
                ("minSoakSeconds", s.min_soak_seconds.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(
                        &sp.child(field),
                        "may only be set when `type` is Progressive",
                    ));
                }
            }
        }
        let gates = sp.child("healthGates");
        errs.extend(validate_unique_names(
            s.health_gates.iter().map(|g| g.type_.as_str()),
            &gates,
            "type",
        ));
        for (i, gate) in s.health_gates.iter().enumerate() {
            let p = gates.index(i).child("minAvailable");
            match (gate.type_, &gate.min_available) {
                (HealthGateType::GpuHealthy, Some(min)) => errs.extend(validate_int_or_percent(
                    min,
                    &p,
                    IntOrPercentRules { positive: false },
                )),
                (_, Some(_)) => errs.push(FieldError::forbidden(
                    &p,
                    "only GPUHealthy takes minAvailable",
                )),
                _ => {}
            }
        }
        errs
    }

    fn columns() -> &'static [PrinterColumn] {
        PLACEMENT_COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let addons: Vec<&str> = self.spec.addons.iter().map(|a| a.name.as_str()).collect();
        let strategy = match self.spec.strategy.type_ {
            Some(RolloutType::AllAtOnce) => "AllAtOnce",
            _ => "Progressive",
        };
        vec![
            Value::from(self.metadata.name.clone().unwrap_or_default()),
            table::text(Some(&addons.join(","))),
            Value::from(status.total),
            Value::from(status.updated),
            table::age(self.metadata.creation_timestamp.as_ref(), now),
            Value::from(strategy),
            Value::from(status.failed),
        ]
    }
}
