//! OpenAPI documents: v3 per group version (what `kubectl explain` and kubectl's field-validation
//! probe read) and a v2 document (JSON) for older clients.
//!
//! Built once at start-up from the kinds' schemas. kubectl decides whether the server validates
//! fields itself (`--validate=strict` → `fieldValidation=Strict`) by finding, in the v3 document,
//! the PATCH operation carrying the kind's `x-kubernetes-group-version-kind` and a
//! `fieldValidation` query parameter; so every write operation declares its parameters inline.

use bytes::Bytes;
use edgefleet_api::{GROUP, VERSION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ListMeta, Status};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::registry::Registry;

/// The group-version path segment of the v3 document.
pub const GROUP_VERSION_PATH: &str = "apis/edgefleet.io/v1alpha1";

/// The documents, serialized.
pub struct OpenApi {
    pub v3_group_version: Bytes,
    pub v3_hash: String,
    pub v2: Bytes,
}

impl OpenApi {
    pub fn build(registry: &Registry) -> Self {
        let v3 = v3_document(registry);
        let v3_bytes = Bytes::from(serde_json::to_vec(&v3).unwrap_or_default());
        let digest = ring::digest::digest(&ring::digest::SHA256, &v3_bytes);
        let v3_hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let v2 = Bytes::from(serde_json::to_vec(&v2_document(&v3)).unwrap_or_default());
        OpenApi {
            v3_group_version: v3_bytes,
            v3_hash,
            v2,
        }
    }

    /// `/openapi/v3`: where each group version's document is.
    pub fn v3_root(&self) -> Value {
        json!({"paths": {GROUP_VERSION_PATH: {"serverRelativeURL": format!("/openapi/v3/{GROUP_VERSION_PATH}?hash={}", self.v3_hash)}}})
    }
}

fn schema_name(kind: &str) -> String {
    format!("io.edgefleet.{VERSION}.{kind}")
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn gvk(kind: &str) -> Value {
    json!({"group": GROUP, "version": VERSION, "kind": kind})
}

/// Meta types the operations refer to (ListMeta, Status, DeleteOptions, ObjectMeta and parts).
fn meta_components() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| {
            s.meta_schema = None;
            s.transforms = vec![];
        })
        .into_generator();
    generator.subschema_for::<ListMeta>();
    generator.subschema_for::<Status>();
    generator.subschema_for::<DeleteOptions>();
    let mut defs = generator.take_definitions(true);
    defs.extend(edgefleet_api::schema::components());
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
    );
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent".into(),
        json!({
            "type": "object",
            "required": ["type", "object"],
            "properties": {
                "type": {"type": "string"},
                "object": {"type": "object", "description": "Object is the object of the event: the kind for ADDED, MODIFIED, DELETED, BOOKMARK; a Status for ERROR."},
            },
        }),
    );
    defs
}

fn query_param(name: &str, description: &str, type_: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted. The only valid value is All.", "string"),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes.", "string"),
        query_param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown fields: Ignore, Warn (the default) or Strict.", "string"),
    ];
    if patch {
        p.push(query_param("force", "Force is going to \"force\" Apply requests: the request re-acquires conflicting fields owned by other people. Must be unset for non-apply patch requests.", "boolean"));
    }
    p
}

fn list_params() -> Vec<Value> {
    vec![
        query_param("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        query_param("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        query_param("fieldSelector", "A selector to restrict the list of returned objects by their fields (metadata.name, metadata.namespace).", "string"),
        query_param("labelSelector", "A selector to restrict the list of returned objects by their labels.", "string"),
        query_param("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        query_param("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        query_param("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        query_param("sendInitialEvents", "`sendInitialEvents=true` may be set together with `watch=true`.", "boolean"),
        query_param("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        query_param("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

fn op(
    id: &str,
    action: &str,
    kind: &str,
    params: Vec<Value>,
    response: Value,
    body: Option<(Vec<&str>, Value)>,
) -> Value {
    let mut o = json!({
        "operationId": id,
        "tags": ["edgefleetIo_v1alpha1"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(kind),
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": json_content(response.clone())},
            "401": {"description": "Unauthorized"},
        },
    });
    if matches!(action, "post" | "put" | "patch") {
        o["responses"]["201"] =
            json!({"description": "Created", "content": json_content(response)});
    }
    if let Some((types, schema)) = body {
        let content: Map<String, Value> = types
            .into_iter()
            .map(|t| (t.to_string(), json!({"schema": schema})))
            .collect();
        o["requestBody"] = json!({"required": true, "content": content});
    }
    o
}

/// The `edgefleet.io/v1alpha1` OpenAPI v3 document.
fn v3_document(registry: &Registry) -> Value {
    let mut schemas = meta_components();
    let mut paths = Map::new();
    let status = reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status");
    let patch_types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    for r in registry.resources() {
        let info = r.strategy.info();
        let kind = info.kind;
        let (obj_name, list_name) = (schema_name(kind), schema_name(info.list_kind));
        schemas.insert(obj_name.clone(), r.schema.clone());
        schemas.insert(
            list_name.clone(),
            json!({
                "description": format!("{} is a list of {kind}", info.list_kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "metadata": {"allOf": [reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")], "description": "Standard list metadata."},
                    "items": {"type": "array", "items": reference(&obj_name), "description": format!("List of {}.", info.plural)},
                },
                "x-kubernetes-group-version-kind": [gvk(info.list_kind)],
            }),
        );
        let object = reference(&obj_name);
        let list = reference(&list_name);
        let (base, id_scope) = if r.namespaced() {
            (
                format!(
                    "/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{}",
                    info.plural
                ),
                "Namespaced",
            )
        } else {
            (format!("/apis/{GROUP}/{VERSION}/{}", info.plural), "")
        };
        let path_params = |with_name: bool| {
            let mut p = Vec::new();
            if with_name {
                p.push(json!({"name": "name", "in": "path", "required": true, "description": format!("name of the {kind}"), "schema": {"type": "string", "uniqueItems": true}}));
            }
            if r.namespaced() {
                p.push(json!({"name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": {"type": "string", "uniqueItems": true}}));
            }
            p.push(query_param(
                "pretty",
                "If 'true', then the output is pretty printed.",
                "string",
            ));
            Value::Array(p)
        };
        let id =
            |verb: &str, suffix: &str| format!("{verb}EdgefleetIoV1alpha1{id_scope}{kind}{suffix}");

        let mut collection = Map::new();
        collection.insert(
            "get".into(),
            op(
                &id("list", ""),
                "list",
                kind,
                list_params(),
                list.clone(),
                None,
            ),
        );
        collection.insert(
            "post".into(),
            op(
                &id("create", ""),
                "post",
                kind,
                write_params(false),
                object.clone(),
                Some((vec!["application/json", "application/yaml"], object.clone())),
            ),
        );
        let mut dc_params = list_params();
        dc_params.push(query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
            "string",
        ));
        collection.insert(
            "delete".into(),
            op(
                &id("deletecollection", ""),
                "deletecollection",
                kind,
                dc_params,
                status.clone(),
                None,
            ),
        );
        collection.insert("parameters".into(), path_params(false));
        paths.insert(base.clone(), Value::Object(collection));

        let mut item = Map::new();
        item.insert(
            "get".into(),
            op(&id("read", ""), "get", kind, vec![], object.clone(), None),
        );
        item.insert(
            "put".into(),
            op(
                &id("replace", ""),
                "put",
                kind,
                write_params(false),
                object.clone(),
                Some((vec!["application/json", "application/yaml"], object.clone())),
            ),
        );
        item.insert(
            "patch".into(),
            op(
                &id("patch", ""),
                "patch",
                kind,
                write_params(true),
                object.clone(),
                Some((
                    patch_types.clone(),
                    reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch"),
                )),
            ),
        );
        item.insert(
            "delete".into(),
            op(
                &id("delete", ""),
                "delete",
                kind,
                vec![query_param(
                    "dryRun",
                    "When present, indicates that modifications should not be persisted.",
                    "string",
                )],
                object.clone(),
                Some((
                    vec!["application/json"],
                    reference("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
                )),
            ),
        );
        item.insert("parameters".into(), path_params(true));
        paths.insert(format!("{base}/{{name}}"), Value::Object(item));

        let mut status_path = Map::new();
        status_path.insert(
            "get".into(),
            op(
                &id("read", "Status"),
                "get",
                kind,
                vec![],
                object.clone(),
                None,
            ),
        );
        status_path.insert(
            "put".into(),
            op(
                &id("replace", "Status"),
                "put",
                kind,
                write_params(false),
                object.clone(),
                Some((vec!["application/json", "application/yaml"], object.clone())),
            ),
        );
        status_path.insert(
            "patch".into(),
            op(
                &id("patch", "Status"),
                "patch",
                kind,
                write_params(true),
                object.clone(),
                Some((
                    patch_types.clone(),
                    reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch"),
                )),
            ),
        );
        status_path.insert("parameters".into(), path_params(true));
        paths.insert(
            format!("{base}/{{name}}/status"),
            Value::Object(status_path),
        );

        if r.namespaced() {
            let mut all = Map::new();
            all.insert(
                "get".into(),
                op(
                    &format!("list{kind}ForAllNamespaces"),
                    "list",
                    kind,
                    list_params(),
                    list.clone(),
                    None,
                ),
            );
            paths.insert(
                format!("/apis/{GROUP}/{VERSION}/{}", info.plural),
                Value::Object(all),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("edgefleet {}", env!("CARGO_PKG_VERSION"))},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
    })
}

/// Swagger 2.0 rendering of the v3 document.
fn v2_document(v3: &Value) -> Value {
    let mut definitions = v3["components"]["schemas"].clone();
    rewrite_refs(&mut definitions);
    let mut paths = Map::new();
    for (path, item) in v3["paths"].as_object().into_iter().flatten() {
        let mut out = Map::new();
        for (method, operation) in item.as_object().into_iter().flatten() {
            if method == "parameters" {
                out.insert(
                    method.clone(),
                    Value::Array(
                        operation
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(v2_param)
                            .collect(),
                    ),
                );
                continue;
            }
            let mut o = operation.clone();
            let mut params: Vec<Value> = o["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(v2_param)
                .collect();
            if let Some(body) = o.as_object_mut().and_then(|m| m.remove("requestBody")) {
                let content = body["content"].as_object().cloned().unwrap_or_default();
                let schema = content
                    .values()
                    .next()
                    .map(|c| c["schema"].clone())
                    .unwrap_or(Value::Null);
                o["consumes"] =
                    Value::Array(content.keys().map(|k| Value::from(k.as_str())).collect());
                params.push(
                    json!({"name": "body", "in": "body", "required": true, "schema": schema}),
                );
            }
            o["parameters"] = Value::Array(params);
            o["produces"] = json!(["application/json", "application/yaml"]);
            o["schemes"] = json!(["https"]);
            if let Some(responses) = o["responses"].as_object_mut() {
                for response in responses.values_mut() {
                    if let Some(schema) = response
                        .get("content")
                        .and_then(|c| c.get("application/json"))
                        .and_then(|c| c.get("schema"))
                        .cloned()
                    {
                        *response =
                            json!({"description": response["description"], "schema": schema});
                    }
                }
            }
            rewrite_refs(&mut o);
            out.insert(method.clone(), o);
        }
        paths.insert(path.clone(), Value::Object(out));
    }
    json!({
        "swagger": "2.0",
        "info": v3["info"],
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

fn v2_param(mut p: Value) -> Value {
    if let Some(schema) = p.as_object_mut().and_then(|m| m.remove("schema")) {
        for (k, v) in schema.as_object().into_iter().flatten() {
            p[k] = v.clone();
        }
    }
    p
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/components/schemas/", "#/definitions/");
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
