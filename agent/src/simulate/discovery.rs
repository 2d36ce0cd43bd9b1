//! Discovery documents of the simulated cluster: the core group `v1` with `nodes` and
//! `namespaces`, no other group. Both the legacy documents (`/api` APIVersions, `/apis`
//! APIGroupList, `/api/v1` APIResourceList) and aggregated discovery v2 (what kubectl asks for
//! first) describe the same thing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroupList, APIResource, APIResourceList, APIVersions, ServerAddressByClientCIDR,
};
use kube::core::discovery::v2::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIResourceDiscovery, APIVersionDiscovery,
    GroupVersionKind,
};
use serde::Serialize;

/// A served resource.
struct Served {
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_name: &'static str,
}

const SERVED: [Served; 2] = [
    Served {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        short_name: "ns",
    },
    Served {
        plural: "nodes",
        singular: "node",
        kind: "Node",
        short_name: "no",
    },
];

/// Verbs served for each resource. `watch` is served too (a watch that never sees a change:
/// nothing changes in a simulated cluster), so `kubectl get -w` behaves.
const VERBS: [&str; 3] = ["get", "list", "watch"];

fn verbs() -> Vec<String> {
    VERBS.iter().map(|v| (*v).to_owned()).collect()
}

/// `/api`.
pub fn api_versions() -> APIVersions {
    APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: ":6443".into(),
        }],
    }
}

/// `/apis`: no groups besides the core one.
pub fn api_group_list() -> APIGroupList {
    APIGroupList { groups: Vec::new() }
}

/// `/api/v1`.
pub fn core_v1_resources() -> APIResourceList {
    APIResourceList {
        group_version: "v1".into(),
        resources: SERVED
            .iter()
            .map(|s| APIResource {
                name: s.plural.into(),
                singular_name: s.singular.into(),
                namespaced: false,
                kind: s.kind.into(),
                verbs: verbs(),
                short_names: Some(vec![s.short_name.into()]),
                ..APIResource::default()
            })
            .collect(),
    }
}

/// An `apidiscovery.k8s.io/v2` APIGroupDiscoveryList with its type fields (kube-rs's type
/// leaves them out).
#[derive(Serialize)]
pub struct AggregatedDiscovery {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    list: APIGroupDiscoveryList,
}

fn aggregated(items: Vec<APIGroupDiscovery>) -> AggregatedDiscovery {
    AggregatedDiscovery {
        api_version: "apidiscovery.k8s.io/v2",
        kind: "APIGroupDiscoveryList",
        list: APIGroupDiscoveryList {
            metadata: Some(Default::default()),
            items,
        },
    }
}

/// `/api` in aggregated form: the core group (unnamed) and its resources.
pub fn aggregated_api() -> AggregatedDiscovery {
    let resources = SERVED
        .iter()
        .map(|s| APIResourceDiscovery {
            resource: Some(s.plural.into()),
            response_kind: Some(GroupVersionKind {
                group: Some(String::new()),
                version: Some("v1".into()),
                kind: Some(s.kind.into()),
            }),
            scope: Some("Cluster".into()),
            singular_resource: Some(s.singular.into()),
            verbs: verbs(),
            short_names: vec![s.short_name.into()],
            ..APIResourceDiscovery::default()
        })
        .collect();
    aggregated(vec![APIGroupDiscovery {
        metadata: Some(Default::default()),
        versions: vec![APIVersionDiscovery {
            version: Some("v1".into()),
            resources,
            freshness: Some("Current".into()),
        }],
    }])
}

/// `/apis` in aggregated form: no groups.
pub fn aggregated_apis() -> AggregatedDiscovery {
    aggregated(Vec::new())
}
