//! What one release carries, byte for byte, and the hashes that name it.
//!
//! ```text
//! ClusterAddon.spec ──┐
//!                     ├─► AddonContent { targetNamespace, objects | helm{…, values} }
//! Placement values ───┘        │ canonical JSON (keys sorted, no whitespace)
//!   (JSON merge patch           ▼
//!    over helm.values)     content bytes ──SHA-256──► AddonRelease.content
//!
//! [AddonRelease, …] ──canonical JSON──SHA-256──► DesiredBundle.hash
//! ```
//!
//! Canonical JSON is the audit trail's ([`crate::audit::canonical`]): equal content has one
//! encoding whatever the key order of the stored objects, so it has one hash, and an agent that
//! holds a hash holds exactly these bytes.

use std::sync::Arc;

use bytes::Bytes;
use edgefleet_api::delivery::{AddonContent, AddonRelease, HelmRelease, MAX_CONTENT_BYTES};
use edgefleet_api::ClusterAddon;
use serde_json::Value;

use crate::audit::canonical;

/// One release's content, encoded once and shared by every cluster that runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// SHA-256 of `bytes`, lowercase hex.
    pub hash: String,
    /// The canonical JSON of the [`AddonContent`]: exactly what goes over the tunnel.
    pub bytes: Bytes,
}

/// Why content could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The merged content exceeds what an agent accepts.
    #[error(
        "its content would be {size} bytes, more than the {MAX_CONTENT_BYTES} an agent accepts"
    )]
    TooLarge { size: usize },
}

/// The content of `addon` with a placement's `values` merged over its Helm values.
/// Values given to a manifests add-on are ignored (there is nothing to template); the caller
/// reports that.
pub fn addon_content(
    addon: &ClusterAddon,
    values: Option<&Value>,
) -> Result<Arc<Content>, ContentError> {
    let spec = &addon.spec;
    let helm = spec.helm.as_ref().map(|h| HelmRelease {
        repository: h.repository.clone(),
        chart: h.chart.clone(),
        version: h.version.clone(),
        release_name: h
            .release_name
            .clone()
            .unwrap_or_else(|| addon.metadata.name.clone().unwrap_or_default()),
        values: merge_values(h.values.as_ref(), values),
    });
    let content = AddonContent {
        target_namespace: spec.target_namespace.clone(),
        objects: if helm.is_some() {
            Vec::new()
        } else {
            spec.manifests.clone()
        },
        helm,
    };
    let bytes = canonical::to_vec_of(&content).expect("add-on content serialises");
    if bytes.len() > MAX_CONTENT_BYTES {
        return Err(ContentError::TooLarge { size: bytes.len() });
    }
    Ok(Arc::new(Content {
        hash: canonical::sha256_hex(&bytes),
        bytes: Bytes::from(bytes),
    }))
}

/// The add-on's values with the placement's merged over them as a JSON merge patch
/// (RFC 7386); an empty object when neither sets any.
pub fn merge_values(base: Option<&Value>, overrides: Option<&Value>) -> Value {
    let mut merged = base
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(overrides) = overrides {
        json_patch::merge(&mut merged, overrides);
    }
    merged
}

/// The hash of a bundle: SHA-256 of the canonical JSON of its releases.
pub fn bundle_hash(releases: &[AddonRelease]) -> String {
    canonical::sha256_hex(&canonical::to_vec_of(&releases).expect("releases serialise"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::{HelmChart, ObjectMeta};
    use proptest::prelude::*;
    use serde_json::json;

    fn manifests_addon(objects: Vec<Value>) -> ClusterAddon {
        let mut a = ClusterAddon {
            metadata: ObjectMeta {
                name: Some("policies".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        a.spec.version = "1".into();
        a.spec.manifests = objects;
        a
    }

    fn helm_addon(values: Value) -> ClusterAddon {
        let mut a = manifests_addon(vec![]);
        a.spec.helm = Some(HelmChart {
            repository: "https://helm.ngc.nvidia.com/nvidia".into(),
            chart: "gpu-operator".into(),
            version: "v25.3.0".into(),
            release_name: None,
            values: Some(values),
        });
        a
    }

    #[test]
    fn placement_values_merge_over_the_addons_as_a_merge_patch() {
        let base =
            json!({"driver": {"enabled": false, "version": "550"}, "toolkit": {"enabled": true}});
        let over = json!({"driver": {"enabled": true}, "toolkit": null, "extra": [1]});
        assert_eq!(
            merge_values(Some(&base), Some(&over)),
            json!({"driver": {"enabled": true, "version": "550"}, "extra": [1]})
        );
        assert_eq!(merge_values(None, None), json!({}));
        let content = addon_content(&helm_addon(base), Some(&over)).unwrap();
        let sent: AddonContent = serde_json::from_slice(&content.bytes).unwrap();
        let helm = sent.helm.unwrap();
        assert_eq!(helm.values["driver"]["enabled"], true);
        assert_eq!(
            helm.release_name, "policies",
            "defaults to the add-on's name"
        );
        assert!(sent.objects.is_empty());
    }

    #[test]
    fn the_hash_names_exactly_the_bytes_sent() {
        let content = addon_content(
            &manifests_addon(vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(content.hash, canonical::sha256_hex(&content.bytes));
        assert!(canonical::is_sha256_hex(&content.hash));
        let sent: AddonContent = serde_json::from_slice(&content.bytes).unwrap();
        assert_eq!(sent.objects.len(), 1);
    }

    /// A JSON object with keys in the order given.
    fn object(pairs: &[(String, Value)]) -> Value {
        Value::Object(pairs.iter().cloned().collect())
    }

    proptest! {
        /// Stored objects may come back with their keys in any order (apply, patch, another
        /// client): the hash does not move, so nothing is re-sent.
        #[test]
        fn the_hash_is_stable_under_key_order(
            pairs in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 1..8),
            seed in any::<u64>(),
        ) {
            let pairs: Vec<(String, Value)> = pairs.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            let mut shuffled = pairs.clone();
            // A deterministic shuffle from the seed.
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed as usize).wrapping_add(i * 7) % n;
                shuffled.swap(i, j);
            }
            let cm = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
            let a = addon_content(&manifests_addon(vec![cm(object(&pairs))]), None).unwrap();
            let b = addon_content(&manifests_addon(vec![cm(object(&shuffled))]), None).unwrap();
            prop_assert_eq!(&a.hash, &b.hash);
            let h1 = addon_content(&helm_addon(object(&pairs)), Some(&object(&shuffled))).unwrap();
            let h2 = addon_content(&helm_addon(object(&shuffled)), Some(&object(&pairs))).unwrap();
            prop_assert_eq!(&h1.hash, &h2.hash);
        }

        /// Any change of content is a new hash.
        #[test]
        fn different_content_has_a_different_hash(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            prop_assume!(a != b);
            let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
            let x = addon_content(&manifests_addon(vec![cm(&a)]), None).unwrap();
            let y = addon_content(&manifests_addon(vec![cm(&b)]), None).unwrap();
            prop_assert_ne!(&x.hash, &y.hash);
        }
    }
}
