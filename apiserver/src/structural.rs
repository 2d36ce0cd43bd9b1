//! Checks a JSON object against its kind's structural schema before it is decoded, the way
//! kube-apiserver treats custom resources:
//!
//! - **unknown fields** are found (for `fieldValidation=Strict|Warn`) and **pruned**;
//! - **types**, **required** fields and **enums** are validated, each problem a field error with
//!   its path, so a wrong type is a `422 Invalid` naming the field rather than a decode failure;
//! - `null` in a field that is not nullable is dropped, as if absent.
//!
//! The schema is the OpenAPI v3 schema from `edgefleet_api::schema` (inlined types, `$ref`s into
//! `components` only for ObjectMeta and its parts).

use edgefleet_api::validation::{ErrorList, FieldError, Path};
use serde_json::{Map, Value};

/// A schema and the components its `$ref`s point into.
#[derive(Clone, Copy)]
pub struct Schema<'a> {
    node: &'a Value,
    components: &'a Map<String, Value>,
}

/// What checking an object found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Paths of fields the schema does not know (already removed from the object).
    pub unknown: Vec<String>,
    /// Type, required and enum violations.
    pub errors: ErrorList,
}

impl<'a> Schema<'a> {
    pub fn new(root: &'a Value, components: &'a Map<String, Value>) -> Self {
        Schema {
            node: root,
            components,
        }
        .resolve()
    }

    /// Follows `$ref` and single-element `allOf` wrappers.
    fn resolve(self) -> Self {
        let mut node = self.node;
        for _ in 0..8 {
            if let Some(r) = node.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or_default();
                match self.components.get(name) {
                    Some(target) => node = target,
                    None => break,
                }
            } else if let Some([only]) = node
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                node = only;
            } else {
                break;
            }
        }
        Schema {
            node,
            components: self.components,
        }
    }

    fn child(self, node: &'a Value) -> Self {
        Schema {
            node,
            components: self.components,
        }
        .resolve()
    }

    fn flag(self, name: &str) -> bool {
        self.node
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn type_name(self) -> Option<&'a str> {
        self.node.get("type").and_then(Value::as_str)
    }

    /// Schema of property `name`, if declared.
    pub fn property(self, name: &str) -> Option<Self> {
        self.node
            .get("properties")
            .and_then(|p| p.get(name))
            .map(|n| self.child(n))
    }

    /// Schema of the values of a map (`additionalProperties`).
    fn additional(self) -> Option<Self> {
        match self.node.get("additionalProperties") {
            Some(Value::Object(_)) => self.node.get("additionalProperties").map(|n| self.child(n)),
            _ => None,
        }
    }

    /// Schema of list items.
    fn items(self) -> Option<Self> {
        self.node.get("items").map(|n| self.child(n))
    }

    /// Walks `value`, pruning unknown fields and nulls and collecting findings.
    pub fn check(self, value: &mut Value) -> Findings {
        let mut findings = Findings::default();
        self.walk(value, &Path::new(""), &mut findings);
        findings
    }

    fn walk(self, value: &mut Value, path: &Path, out: &mut Findings) {
        if self.flag("x-kubernetes-int-or-string") {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                out.errors
                    .push(type_error(path, value, "integer or string"));
            }
            return;
        }
        let preserve = self.flag("x-kubernetes-preserve-unknown-fields");
        match self.type_name() {
            Some("object") => {
                let Value::Object(map) = value else {
                    out.errors.push(type_error(path, value, "object"));
                    return;
                };
                let props = self.node.get("properties").and_then(Value::as_object);
                let additional = self.additional();
                if props.is_none() && additional.is_none() {
                    // An object schema that declares nothing (FieldsV1, RawExtension) holds
                    // anything: it is opaque to the schema, not empty.
                    return;
                }
                let mut unknown = Vec::new();

                for (key, field) in map.iter_mut() {
                    let field_path = if props.is_some() {
                        path.child(key)
                    } else {
                        path.key(key)
                    };
                    let schema = props
                        .and_then(|p| p.get(key))
                        .map(|n| self.child(n))
                        .or(additional);
                    match schema {
                        _ if field.is_null() => unknown.push((key.clone(), false)),
                        Some(s) => s.walk(field, &field_path, out),
                        None if preserve => {}
                        None => unknown.push((key.clone(), true)),
                    }
                }
                for (key, report) in unknown {
                    map.remove(&key);
                    if report {
                        out.unknown.push(path.child(&key).to_string());
                    }
                }
                for required in self
                    .node
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = required.as_str() {
                        if !map.contains_key(name) {
                            out.errors.push(FieldError::required(&path.child(name), ""));
                        }
                    }
                }
            }
            Some("array") => {
                let Value::Array(items) = value else {
                    out.errors.push(type_error(path, value, "array"));
                    return;
                };
                if let Some(item_schema) = self.items() {
                    items.retain(|v| !v.is_null());
                    for (i, item) in items.iter_mut().enumerate() {
                        item_schema.walk(item, &path.index(i), out);
                    }
                }
            }
            Some("string") => {
                if !value.is_string() {
                    out.errors.push(type_error(path, value, "string"));
                } else if let Some(allowed) = self.node.get("enum").and_then(Value::as_array) {
                    if !allowed.contains(value) {
                        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                        out.errors
                            .push(FieldError::not_supported(path, value.clone(), &names));
                    }
                }
            }
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                out.errors.push(type_error(path, value, "integer"));
            }
            Some("number") if !value.is_number() => {
                out.errors.push(type_error(path, value, "number"));
            }
            Some("boolean") if !value.is_boolean() => {
                out.errors.push(type_error(path, value, "boolean"));
            }
            _ => {}
        }
    }
}

/// kube's wording: `spec.replicas in body must be of type integer: "string"`.
fn type_error(path: &Path, value: &Value, want: &str) -> FieldError {
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    FieldError::invalid(
        path,
        actual,
        format!("{path} in body must be of type {want}: {actual:?}"),
    )
}

#[cfg(test)]
mod tests {
    use edgefleet_api::schema::{components, kind_schema};
    use edgefleet_api::{Cluster, Placement};
    use serde_json::json;

    use super::*;

    fn check<K: edgefleet_api::ApiKind>(mut obj: Value) -> (Value, Findings) {
        let root = kind_schema::<K>();
        let comps = components();
        let findings = Schema::new(&root, &comps).check(&mut obj);
        (obj, findings)
    }

    #[test]
    fn unknown_fields_are_reported_and_pruned() {
        let (obj, f) = check::<Cluster>(json!({
            "apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "edge-1", "labels": {"gpu": "a100"}, "bogus": 1},
            "spec": {"kubernetesVersion": "v1.31.4", "replicas": 3, "nodePools": [{"name": "a", "extra": true}]},
        }));
        assert_eq!(
            f.unknown,
            ["metadata.bogus", "spec.nodePools[0].extra", "spec.replicas"]
        );
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(
            obj["spec"],
            json!({"kubernetesVersion": "v1.31.4", "nodePools": [{"name": "a"}]})
        );
        assert_eq!(obj["metadata"]["labels"], json!({"gpu": "a100"}));
    }

    #[test]
    fn wrong_types_required_and_enums_are_field_errors() {
        let (_, f) = check::<Placement>(json!({
            "metadata": {"name": "p", "labels": {"a": 1}},
            "spec": {
                "addons": [{"version": "x"}],
                "strategy": {"type": "Fast", "maxUnavailable": true, "minSoakSeconds": "10"},
                "paused": "yes"
            },
        }));
        let fields: Vec<(&str, &str)> = f
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.kind.reason()))
            .collect();
        assert_eq!(
            fields,
            [
                ("metadata.labels[a]", "FieldValueInvalid"),
                ("spec.addons[0].name", "FieldValueRequired"),
                ("spec.strategy.type", "FieldValueNotSupported"),
                ("spec.strategy.maxUnavailable", "FieldValueInvalid"),
                ("spec.strategy.minSoakSeconds", "FieldValueInvalid"),
                ("spec.paused", "FieldValueInvalid"),
            ]
        );
        assert_eq!(f.unknown, ["spec.addons[0].version"]);
        assert_eq!(
            f.errors.0[4].to_string(),
            "spec.strategy.minSoakSeconds: Invalid value: \"string\": spec.strategy.minSoakSeconds in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn preserved_fields_and_nulls() {
        let (obj, f) = check::<edgefleet_api::ClusterAddon>(json!({
            "metadata": {"name": "a", "annotations": null},
            "spec": {"version": "v1", "description": null, "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "anything": {"goes": [1]}}],
                     "helm": {"repository": "oci://r", "chart": "c", "version": "1", "values": {"deep": {"x": null}}}},
        }));
        assert!(f.unknown.is_empty() && f.errors.is_empty(), "{f:?}");
        assert!(obj["metadata"].get("annotations").is_none());
        assert!(obj["spec"].get("description").is_none());
        assert_eq!(
            obj["spec"]["manifests"][0]["anything"],
            json!({"goes": [1]})
        );
    }
}
