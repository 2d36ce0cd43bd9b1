//! Desired state from the hub to an agent, and what the agent reports back (DESIGN.md §8).
//!
//! The hub is the HTTP/2 client of every tunnel, so it *pushes*. What a cluster must run is a
//! [`DesiredBundle`]: the ordered list of add-on releases, each naming its content by hash. The
//! content itself ([`AddonContent`]) crosses the tunnel separately and only when the agent does
//! not hold it yet, so a change to one add-on resends that add-on only, and a cluster that was
//! away gets only what changed meanwhile:
//!
//! ```text
//!   hub                                                   agent
//!    │ PUT BUNDLE_PATH  DesiredBundle (hashes, no content)   │
//!    │ ◄──────────── 200 BundleReply { missing: [h1, …] }     │ content it does not hold
//!    │ PUT CONTENT_PATH_PREFIX<h1>  AddonContent              │ sha256(body) must be h1
//!    │ ◄──────────── 204                                      │ stored (persisted)
//!    │ PUT BUNDLE_PATH  (same bundle)                         │
//!    │ ◄──────────── 200 BundleReply { missing: [] }          │ adopted: persisted, enforced
//!    │                                                        │
//!    │ facts stream (GET FACTS_PATH, see [`crate::agent`])    │
//!    │ ◄──── ClusterFacts { bundle, addons: [AddonReport] } ─ │ one report per release,
//!    │                                                        │ latest state wins
//! ```
//!
//! * Hashes are lowercase hex SHA-256: a release's `content` is the hash of the exact bytes of
//!   its [`AddonContent`] body as the hub sends it (the hub serialises canonically, so equal
//!   content has one hash); a bundle's `hash` is the hash of its canonical `releases` JSON.
//! * A bundle the agent has adopted is enforced (applied, drift handled) until another one is
//!   adopted, across hub outages and agent restarts: the agent persists bundle and content.
//! * An empty bundle (no releases) is a real desired state: prune everything edgefleet applied.
//! * Reports are state, not events: the agent keeps the latest [`AddonReport`] per release and
//!   sends them all on each facts line that changes, so what happened while disconnected arrives
//!   on reconnect, compacted.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The hub `PUT`s the cluster's [`DesiredBundle`] here; the agent answers a [`BundleReply`].
pub const BUNDLE_PATH: &str = "/.well-known/edgefleet/bundle";

/// The hub `PUT`s an [`AddonContent`] at this prefix followed by its hash; the agent answers
/// `204` once stored, `400` when the body's hash is not the one in the path.
pub const CONTENT_PATH_PREFIX: &str = "/.well-known/edgefleet/content/";

/// Field manager of everything the agent applies on the edge (server-side apply).
pub const FIELD_MANAGER: &str = "edgefleet-agent";

/// Label on every object the agent applied: the ClusterAddon it belongs to. Prune selects by it;
/// what lacks it was not created by edgefleet and is never touched.
pub const ADDON_LABEL: &str = "edgefleet.io/addon";

/// Prefix of every path the agent answers itself (bundle, content, facts). The hub never proxies
/// a caller's request to one of them (see [`is_agent_path`]).
pub const AGENT_PATH_PREFIX: &str = "/.well-known/edgefleet";

/// Whether `path` is one of the agent's own paths: [`AGENT_PATH_PREFIX`] itself or below it.
/// A literal test, the same on both sides, so hub and agent agree on what is reserved.
pub fn is_agent_path(path: &str) -> bool {
    path.strip_prefix(AGENT_PATH_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Largest source of one ClusterAddon: its `spec.manifests`, or its `spec.helm.values`, as
/// compact JSON. Enforced when the add-on is written (422 naming the field), never discovered
/// at delivery.
pub const MAX_ADDON_SOURCE_BYTES: usize = 1024 * 1024;

/// Largest `values` a Placement may set for one add-on, as compact JSON.
pub const MAX_PLACEMENT_VALUES_BYTES: usize = 64 * 1024;

/// Largest [`AddonContent`] body the hub sends: a source at its limit, placement values at
/// theirs, and room for the envelope. An agent accepts content bodies up to this size.
pub const MAX_CONTENT_BYTES: usize =
    MAX_ADDON_SOURCE_BYTES + MAX_PLACEMENT_VALUES_BYTES + 64 * 1024;

/// Most drifted objects an [`AddonReport`] lists, and most field paths per object.
pub const MAX_DRIFTED_OBJECTS: usize = 20;
pub const MAX_DRIFT_PATHS: usize = 20;

/// What one cluster must run, in apply order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DesiredBundle {
    /// SHA-256 of the canonical JSON of `releases`.
    pub hash: String,
    #[serde(default)]
    pub releases: Vec<AddonRelease>,
}

/// One add-on, at one version, as one cluster must run it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddonRelease {
    /// Name of the ClusterAddon (in the cluster's environment namespace).
    pub name: String,
    /// `spec.version` of the ClusterAddon.
    pub version: String,
    /// SHA-256 of the release's [`AddonContent`] bytes.
    pub content: String,
    /// What to do when an applied object changes on the edge.
    #[serde(default)]
    pub drift: DriftMode,
}

/// What the agent does when an object it applied changes on the edge: `Correct` re-applies the
/// desired state (the default), `Report` leaves the change and reports the changed field paths.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DriftMode {
    // Variants carry no doc comments: those would turn the schema's `enum` into a `oneOf`.
    #[default]
    Correct,
    Report,
}

/// The content of a release: exactly one of `objects` or `helm`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonContent {
    /// Namespace for namespaced objects that name none; created first when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Objects to apply with server-side apply (the agent orders CRDs and Namespaces first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Value>,
    /// A chart for the edge's Helm controller: the agent writes a `helm.cattle.io/v1` HelmChart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmRelease>,
}

/// A Helm chart with its values already merged on the hub (add-on values, then the placement's).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmRelease {
    pub repository: String,
    pub chart: String,
    pub version: String,
    /// Release name (the HelmChart's name).
    pub release_name: String,
    /// Merged values (a JSON object; empty when none).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub values: Value,
}

/// The agent's answer to a bundle `PUT`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleReply {
    /// Content hashes of the bundle the agent does not hold; empty = adopted.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// Where one release stands on the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddonPhase {
    /// Adopted, not applied yet (e.g. waiting for a CRD to be Established).
    #[default]
    Pending,
    /// Every object applied; not all ready yet.
    Applied,
    /// Every object applied and ready (kstatus rules).
    Ready,
    /// An object could not be applied, or the add-on cannot run here; `message` says why.
    Failed,
    /// `drift: Report` and an object differs from the desired state; `drift` says where.
    Drifted,
}

/// The latest state of one release on the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonReport {
    pub name: String,
    pub version: String,
    /// The release's content hash: the report is about exactly this content.
    pub content: String,
    pub phase: AddonPhase,
    /// The edge's own words for a failure (e.g. a 422 naming the object and field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `phase` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Objects that drifted, at most [`MAX_DRIFTED_OBJECTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftedObject>,
}

/// An applied object that no longer matches the desired state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// Deleted on the edge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Changed fields we own, as JSON paths (`.data.key`, `.spec.replicas`), at most
    /// [`MAX_DRIFT_PATHS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bundle_is_camel_case_json_and_round_trips() {
        let bundle = DesiredBundle {
            hash: "ab".into(),
            releases: vec![AddonRelease {
                name: "gpu-operator".into(),
                version: "v25.3.0".into(),
                content: "cd".into(),
                drift: DriftMode::Report,
            }],
        };
        let v = serde_json::to_value(&bundle).unwrap();
        assert_eq!(v["releases"][0]["drift"], "Report");
        assert_eq!(serde_json::from_value::<DesiredBundle>(v).unwrap(), bundle);
        let defaulted: AddonRelease =
            serde_json::from_value(json!({"name": "a", "version": "1", "content": "x"})).unwrap();
        assert_eq!(defaulted.drift, DriftMode::Correct);
    }

    #[test]
    fn agent_paths_are_the_prefix_and_below_it_literally() {
        for path in [
            AGENT_PATH_PREFIX,
            BUNDLE_PATH,
            "/.well-known/edgefleet/content/ab",
        ] {
            assert!(is_agent_path(path), "{path}");
        }
        for path in [
            "/.well-known/edgefleetx",
            "/.well-known/edgefleet-tunnel/csr",
            "//.well-known/edgefleet/bundle",
            "/api/v1/namespaces",
        ] {
            assert!(!is_agent_path(path), "{path}");
        }
    }

    #[test]
    fn reports_leave_out_what_is_empty() {
        let report = AddonReport {
            name: "a".into(),
            version: "1".into(),
            content: "x".into(),
            phase: AddonPhase::Ready,
            ..Default::default()
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(
            v,
            json!({"name": "a", "version": "1", "content": "x", "phase": "Ready"})
        );
        assert_eq!(serde_json::from_value::<AddonReport>(v).unwrap(), report);
    }
}
