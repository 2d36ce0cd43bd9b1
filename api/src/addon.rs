//! `ClusterAddon`: a versioned piece of software for edge clusters.
//!
//! Exactly one source: inline `manifests`, or a `helm` chart reference with values. Changing
//! `spec.version` (or the source) is what Placements roll out. A source is at most
//! [`MAX_ADDON_SOURCE_BYTES`] of compact JSON, refused when written (422 naming the field): an
//! add-on that validates is one the hub can deliver.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delivery::{DriftMode, MAX_ADDON_SOURCE_BYTES};
use crate::fleet::VersionCount;
use crate::kind::{kind_accessors, ApiKind, ResourceInfo, Scope};
use crate::table::{self, PrinterColumn};
use crate::validation::{is_dns1123_label, ErrorList, FieldError, Path};

/// ClusterAddon is a versioned piece of software for edge clusters: the NVIDIA GPU operator, a
/// policy bundle, an application. Placements and Environments decide which clusters run it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-group-version-kind" = [{"group": "edgefleet.io", "kind": "ClusterAddon", "version": "v1alpha1"}]))]
pub struct ClusterAddon {
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
    /// What the add-on installs.
    #[serde(default)]
    pub spec: ClusterAddonSpec,
    /// Observed state of the add-on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterAddonStatus>,
}

/// ClusterAddonSpec is one version of an add-on and where its content comes from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonSpec {
    /// Version of the add-on, e.g. `v25.3.0`. Changing it rolls the new version out.
    #[serde(default)]
    pub version: String,
    /// What the add-on is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Namespace on the edge cluster to install into (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Inline Kubernetes manifests, applied with server-side apply. Exclusive with `helm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    #[schemars(schema_with = "crate::schema::embedded_objects")]
    pub manifests: Vec<Value>,
    /// A Helm chart to render and apply. Exclusive with `manifests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmChart>,
    /// What the agent does when an object of this add-on changes on an edge cluster: `Correct`
    /// (the default) re-applies it within seconds; `Report` leaves it and reports the changed
    /// field paths in the cluster's status. Add-ons an Environment requires are always corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMode>,
}

/// HelmChart references a chart in a repository.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChart {
    /// Repository URL (`https://...` or `oci://...`).
    #[serde(default)]
    pub repository: String,
    /// Chart name.
    #[serde(default)]
    pub chart: String,
    /// Chart version.
    #[serde(default)]
    pub version: String,
    /// Release name; defaults to the add-on name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values passed to the chart (an object). A Placement's `spec.addons[].values` are merged
    /// over them as a JSON merge patch (RFC 7386: objects merge key by key, anything else
    /// replaces, `null` removes); nothing is templated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub values: Option<Value>,
}

/// ClusterAddonStatus summarises where the add-on runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonStatus {
    /// Clusters whose desired bundle contains this add-on (targeted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<i32>,
    /// Of those, clusters reporting it Ready at the version they should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
    /// Of those, clusters reporting it Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// Targeted clusters per version they report running (`unknown` before a first report).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["version"]))]
    pub versions: Vec<VersionCount>,
    /// The spec generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Latest observations of the add-on's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

const ADDON_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn::NAME,
    PrinterColumn::string("Version", "Version of the add-on."),
    PrinterColumn::string("Source", "helm or manifests."),
    PrinterColumn::integer("Clusters", "Clusters that should run the add-on."),
    PrinterColumn::string("Ready", "Clusters running it Ready, of those that should."),
    PrinterColumn::AGE,
    PrinterColumn::string("Chart", "Helm chart and version.").wide(),
    PrinterColumn::integer("Failed", "Clusters reporting it Failed.").wide(),
    PrinterColumn::string("Drift", "Correct or Report.").wide(),
];

impl ApiKind for ClusterAddon {
    type Spec = ClusterAddonSpec;
    type Status = ClusterAddonStatus;

    const INFO: ResourceInfo = ResourceInfo {
        kind: "ClusterAddon",
        list_kind: "ClusterAddonList",
        plural: "clusteraddons",
        singular: "clusteraddon",
        short_names: &["ca"],
        categories: &[crate::CATEGORY],
        scope: Scope::Namespaced,
        subresources: &["status"],
    };

    kind_accessors!();

    fn default_fields(&mut self) {
        self.spec.drift.get_or_insert(DriftMode::Correct);
    }

    fn validate(&self) -> ErrorList {
        let spec = Path::new("spec");
        let mut errs = ErrorList::default();
        let version = &self.spec.version;
        if version.is_empty() {
            errs.push(FieldError::required(&spec.child("version"), ""));
        } else if version.len() > 128 || version.chars().any(char::is_whitespace) {
            errs.push(FieldError::invalid(
                &spec.child("version"),
                version.as_str(),
                "must be at most 128 characters without spaces",
            ));
        }
        if let Some(ns) = &self.spec.target_namespace {
            for p in is_dns1123_label(ns) {
                errs.push(FieldError::invalid(
                    &spec.child("targetNamespace"),
                    ns.as_str(),
                    p,
                ));
            }
        }
        match (&self.spec.helm, self.spec.manifests.is_empty()) {
            (None, true) => errs.push(FieldError::required(
                &spec,
                "exactly one of `manifests` or `helm` must be set",
            )),
            (Some(_), false) => errs.push(FieldError::forbidden(
                &spec.child("helm"),
                "may not be set together with `manifests`",
            )),
            _ => {}
        }
        for (i, m) in self.spec.manifests.iter().enumerate() {
            errs.extend(validate_manifest(m, &spec.child("manifests").index(i)));
        }
        if json_size(&self.spec.manifests) > MAX_ADDON_SOURCE_BYTES {
            errs.push(FieldError::too_long(
                &spec.child("manifests"),
                MAX_ADDON_SOURCE_BYTES,
            ));
        }
        if let Some(helm) = &self.spec.helm {
            let p = spec.child("helm");
            for (field, value) in [
                ("repository", &helm.repository),
                ("chart", &helm.chart),
                ("version", &helm.version),
            ] {
                if value.is_empty() {
                    errs.push(FieldError::required(&p.child(field), ""));
                }
            }
            let repo = &helm.repository;
            if !repo.is_empty()
                && !["https://", "http://", "oci://"]
                    .iter()
                    .any(|s| repo.starts_with(s))
            {
                errs.push(FieldError::invalid(
                    &p.child("repository"),
                    repo.as_str(),
                    "must be an https://, http:// or oci:// URL",
                ));
            }
            if let Some(values) = &helm.values {
                if !values.is_object() {
                    errs.push(FieldError::invalid(
                        &p.child("values"),
                        values.clone(),
                        "must be an object",
                    ));
                } else if json_size(values) > MAX_ADDON_SOURCE_BYTES {
                    errs.push(FieldError::too_long(
                        &p.child("values"),
                        MAX_ADDON_SOURCE_BYTES,
                    ));
                }
            }
        }
        errs
    }

    fn columns() -> &'static [PrinterColumn] {
        ADDON_COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        let source = if self.spec.helm.is_some() {
            "helm"
        } else {
            "manifests"
        };
        let chart = self
            .spec
            .helm
            .as_ref()
            .map(|h| format!("{}:{}", h.chart, h.version));
        let status = self.status.clone().unwrap_or_default();
        let ready = status
            .clusters
            .map(|n| format!("{}/{n}", status.ready.unwrap_or(0)));
        let drift = match self.spec.drift.unwrap_or_default() {
            DriftMode::Correct => "Correct",
            DriftMode::Report => "Report",
        };
        vec![
            Value::from(self.metadata.name.clone().unwrap_or_default()),
            table::text(Some(&self.spec.version)),
            Value::from(source),
            status.clusters.map_or(Value::Null, Value::from),
            table::text(ready.as_deref()),
            table::age(self.metadata.creation_timestamp.as_ref(), now),
            table::text(chart.as_deref()),
            status.failed.map_or(Value::Null, Value::from),
            Value::from(drift),
        ]
    }
}

/// Bytes of `value` as compact JSON (what the size limits count).
pub(crate) fn json_size(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising a JSON value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// An inline manifest is a Kubernetes object: an object with `apiVersion`, `kind` and a name.
fn validate_manifest(manifest: &Value, path: &Path) -> ErrorList {
    let mut errs = ErrorList::default();
    let Some(obj) = manifest.as_object() else {
        errs.push(FieldError::invalid(
            path,
            manifest.clone(),
            "must be a Kubernetes object",
        ));
        return errs;
    };
    for field in ["apiVersion", "kind"] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(&path.child(field), ""));
        }
    }
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    if name.is_none_or(str::is_empty) {
        errs.push(FieldError::required(
            &path.child("metadata").child("name"),
            "",
        ));
    }
    errs
}
