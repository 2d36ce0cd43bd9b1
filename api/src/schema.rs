//! OpenAPI v3 schemas of the kinds, derived from the Rust types (doc comments become
//! descriptions) and shaped as Kubernetes *structural* schemas:
//!
//! - every type is inlined except `metadata`, which refers to
//!   `#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta` (see [`components`]);
//! - optional fields are simply absent from `required` (no `nullable`, no `null` types);
//! - lists carry `x-kubernetes-list-type` (and `-map-keys`), which server-side apply reads;
//! - free-form fields carry `x-kubernetes-preserve-unknown-fields`;
//! - the root carries `x-kubernetes-group-version-kind`, which kubectl uses to find the kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use schemars::transform::{RecursiveTransform, ReplaceBoolSchemas, Transform};
use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::ApiKind;

/// Where `$ref`s point, as in kube-apiserver's OpenAPI v3 documents.
pub const COMPONENTS_PREFIX: &str = "#/components/schemas/";
/// The component name of `ObjectMeta`.
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The structural schema of kind `K`.
pub fn kind_schema<K: ApiKind>() -> Value {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
        let mut no_bool_schemas = ReplaceBoolSchemas::default();
        no_bool_schemas.skip_additional_properties = true;
        s.transforms = vec![Box::new(no_bool_schemas)];
    });
    let schema = settings.into_generator().into_root_schema_for::<K>();
    let mut value = schema.to_value();
    structural(&mut value);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("title");
    }
    value
}

/// `ObjectMeta` and the types it refers to, keyed by component name.
pub fn components() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            s.meta_schema = None;
            s.transforms = vec![];
        })
        .into_generator();
    generator.subschema_for::<ObjectMeta>();
    let mut defs = generator.take_definitions(true);
    for schema in defs.values_mut() {
        structural(schema);
    }
    // Kubernetes declares these list semantics on ObjectMeta; server-side apply relies on them.
    if let Some(props) = defs
        .get_mut(OBJECT_META)
        .and_then(|m| m.get_mut("properties"))
        .and_then(Value::as_object_mut)
    {
        if let Some(f) = props.get_mut("finalizers").and_then(Value::as_object_mut) {
            f.insert("x-kubernetes-list-type".into(), "set".into());
        }
        if let Some(o) = props
            .get_mut("ownerReferences")
            .and_then(Value::as_object_mut)
        {
            o.insert("x-kubernetes-list-type".into(), "map".into());
            o.insert(
                "x-kubernetes-list-map-keys".into(),
                serde_json::json!(["uid"]),
            );
        }
        if let Some(m) = props
            .get_mut("managedFields")
            .and_then(Value::as_object_mut)
        {
            m.insert("x-kubernetes-list-type".into(), "atomic".into());
        }
    }
    defs
}

/// `schema_with` for `metadata`: a reference to the shared `ObjectMeta` component.
pub fn object_meta_ref(_: &mut SchemaGenerator) -> Schema {
    // `allOf` around the `$ref`, as kube-apiserver publishes it, so that siblings such as
    // `description` stay meaningful under OpenAPI 3.0 (which ignores siblings of `$ref`).
    json_schema!({ "allOf": [{ "$ref": format!("{COMPONENTS_PREFIX}{OBJECT_META}") }] })
}

/// `schema_with` for a list of whole Kubernetes objects of any kind.
pub fn embedded_objects(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-embedded-resource": true,
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// `schema_with` for a free-form object (Helm values).
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Rewrites a generated schema into structural form, recursively.
fn structural(value: &mut Value) {
    let mut schema: Schema = match Schema::try_from(value.take()) {
        Ok(s) => s,
        Err(_) => return,
    };
    RecursiveTransform(kubernetes_style).transform(&mut schema);
    *value = schema.to_value();
}

/// - Optional fields: Kubernetes expresses optionality by `required`, never by `null`.
/// - Defaults: ours are applied by code, and a schema default would contradict it.
/// - Descriptions: doc comments wrap lines; single line breaks become spaces so that kubectl
///   explain can re-flow the text, paragraph breaks stay.
fn kubernetes_style(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("default");
    obj.remove("nullable");
    if let Some(Value::String(d)) = obj.get_mut("description") {
        *d = d
            .split("\n\n")
            .map(|p| p.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            obj.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(variants)) = obj.get_mut(key) else {
            continue;
        };
        variants.retain(|v| v.get("type").is_none_or(|t| t != "null"));
        if variants.len() == 1 {
            let Some(Value::Object(only)) = variants.pop() else {
                continue;
            };
            obj.remove(key);
            for (k, v) in only {
                obj.entry(k).or_insert(v);
            }
        }
    }
}
