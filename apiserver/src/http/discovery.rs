//! API discovery, in both forms kubectl speaks:
//!
//! - legacy: `/api` (APIVersions), `/apis` (APIGroupList), `/apis/edgefleet.io` (APIGroup),
//!   `/apis/edgefleet.io/v1alpha1` (APIResourceList);
//! - aggregated (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList), which kubectl ≥ 1.30 asks for
//!   first on `/api` and `/apis` and which answers discovery in one round trip.
//!
//! We serve no core (`v1`) resources, but `/api` answers as kube-apiserver's would (version `v1`,
//! an empty resource list) so clients that probe it are not confused.
//! Discovery never depends on storage or on a tunnel.

use serde_json::{json, Value};

use edgefleet_api::{GROUP, VERSION};

use crate::registry::Registry;

/// Verbs of every object resource.
const OBJECT_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of the `status` subresource.
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
/// Content type of an aggregated discovery response.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn group_version() -> String {
    format!("{GROUP}/{VERSION}")
}

/// `/api`: APIVersions.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `/api/v1`: an empty resource list.
pub fn core_resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [super::core::namespaces_resource()],
    })
}

fn group() -> Value {
    let gv = json!({"groupVersion": group_version(), "version": VERSION});
    json!({"name": GROUP, "versions": [gv], "preferredVersion": gv})
}

/// `/apis`: APIGroupList.
pub fn groups() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

/// `/apis/edgefleet.io`: APIGroup.
pub fn api_group() -> Value {
    let mut g = group();
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    g
}

/// `/apis/edgefleet.io/v1alpha1`: APIResourceList.
pub fn resources(registry: &Registry) -> Value {
    let mut list = Vec::new();
    for r in registry.resources() {
        let info = r.strategy.info();
        list.push(json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": r.namespaced(),
            "kind": info.kind,
            "verbs": OBJECT_VERBS,
            "shortNames": info.short_names,
            "categories": info.categories,
        }));
        for sub in info.subresources {
            list.push(json!({
                "name": format!("{}/{sub}", info.plural),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": info.kind,
                "verbs": subresource_verbs(sub),
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version(), "resources": list})
}

fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" => STATUS_VERBS,
        "proxy" => &["create", "delete", "get", "patch", "update"],
        _ => &["get"],
    }
}

/// `/apis` in aggregated form.
pub fn aggregated_groups(registry: &Registry) -> Value {
    let resources: Vec<Value> = registry
        .resources()
        .map(|r| {
            let info = r.strategy.info();
            let kind = json!({"group": GROUP, "version": VERSION, "kind": info.kind});
            let subresources: Vec<Value> = info
                .subresources
                .iter()
                .map(|sub| json!({"subresource": sub, "responseKind": kind, "verbs": subresource_verbs(sub)}))
                .collect();
            json!({
                "resource": info.plural,
                "responseKind": kind,
                "scope": info.scope.as_str(),
                "singularResource": info.singular,
                "verbs": OBJECT_VERBS,
                "shortNames": info.short_names,
                "categories": info.categories,
                "subresources": subresources,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}],
        }],
    })
}

/// `/api` in aggregated form: the core group, with no resources.
pub fn aggregated_core() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {},
            "versions": [{
                "version": "v1",
                "resources": [{
                    "resource": "namespaces",
                    "responseKind": {"group": "", "version": "v1", "kind": "Namespace"},
                    "scope": "Cluster",
                    "singularResource": "namespace",
                    "verbs": ["get", "list"],
                    "shortNames": ["ns"],
                }],
                "freshness": "Current",
            }],
        }],

    })
}
