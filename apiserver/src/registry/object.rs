//! Accessors on objects held as JSON (`{"apiVersion", "kind", "metadata", "spec", "status"}`).
//!
//! The registry keeps objects as `serde_json::Value` so that patches, apply and storage all work
//! on one representation; these helpers read and write the metadata fields it needs.

use std::collections::BTreeMap;

use edgefleet_api::jiff::Timestamp;
use serde_json::{Map, Value};

/// `metadata.<field>` as a string.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.<field>` as an integer.
pub fn meta_i64(obj: &Value, field: &str) -> Option<i64> {
    obj.get("metadata")?.get(field)?.as_i64()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace").unwrap_or_default()
}

/// The object's `metadata`, created if missing (the object must be a JSON object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else {
        unreachable!("just made an object")
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

pub fn set_meta(obj: &mut Value, field: &str, value: impl Into<Value>) {
    meta_mut(obj).insert(field.to_string(), value.into());
}

pub fn remove_meta(obj: &mut Value, field: &str) -> Option<Value> {
    meta_mut(obj).remove(field)
}

/// Labels as a map (empty when absent).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// `metav1.Time` text for `t` (RFC 3339, seconds, UTC).
pub fn time_string(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The field values a field selector may test.
pub fn selectable_field(obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(name(obj).to_string()),
        "metadata.namespace" => Some(namespace(obj).to_string()),
        _ => None,
    }
}

/// The fields field selectors accept, as kube-apiserver allows them for custom resources.
pub const SELECTABLE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
