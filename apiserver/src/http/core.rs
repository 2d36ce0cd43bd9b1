//! The core group's `namespaces`, read-only and derived from Environments.
//!
//! Every edgefleet namespace is an Environment's, so `GET /api/v1/namespaces/<env>` answers with
//! a Namespace for each Environment (Active, or Terminating while it is being deleted). kubectl
//! relies on it: after a NotFound it asks whether the namespace exists, to say which is missing.

use std::sync::Arc;

use bytes::Bytes;
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::table::{age, PrinterColumn};
use edgefleet_api::Time;
use edgefleet_apimachinery::request_info::RequestInfo;
use edgefleet_apimachinery::table::{IncludeObject, ListMeta, TableWriter};
use http::header::ACCEPT;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::body::{json_bytes_response, value_response, Body};
use super::params::Query;
use crate::errors::{ApiError, GroupResource};
use crate::negotiation::{negotiate, Offers, Transform};
use crate::registry::cacher::CachedObject;
use crate::registry::{ListOptions, Registry};

/// Discovery entry of the `namespaces` resource we serve.
pub fn namespaces_resource() -> Value {
    json!({
        "name": "namespaces",
        "singularName": "namespace",
        "namespaced": false,
        "kind": "Namespace",
        "verbs": ["get", "list"],
        "shortNames": ["ns"],
    })
}

/// The Namespace of an Environment.
fn namespace_of(env: &CachedObject) -> Result<Value, ApiError> {
    let env: Value =
        serde_json::from_slice(&env.json).map_err(|e| ApiError::Internal(e.to_string()))?;
    let meta = &env["metadata"];
    let phase = if meta.get("deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Active"
    };
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": meta["name"],
            "uid": meta["uid"],
            "creationTimestamp": meta["creationTimestamp"],
            "resourceVersion": meta["resourceVersion"],
            "labels": {"kubernetes.io/metadata.name": meta["name"]},
            "annotations": {"edgefleet.io/environment": meta["name"]},
        },
        "spec": {},
        "status": {"phase": phase},
    }))
}

/// Columns of a Namespace, as kube-apiserver prints them (`NAME STATUS AGE`).
const NAMESPACE_COLUMNS: [PrinterColumn; 3] = [
    PrinterColumn {
        description: "Name of the namespace (and of its Environment).",
        ..PrinterColumn::NAME
    },
    PrinterColumn::string(
        "Status",
        "Active, or Terminating while the Environment is deleted.",
    ),
    PrinterColumn {
        description: "Age of the Environment.",
        ..PrinterColumn::AGE
    },
];

fn table(
    namespaces: &[Value],
    resource_version: &str,
    include: IncludeObject,
) -> Result<Bytes, ApiError> {
    let now = Timestamp::now();
    let meta = ListMeta::at(resource_version);
    let mut out = TableWriter::new(&meta, Some(&NAMESPACE_COLUMNS), include, 0);
    for ns in namespaces {
        let created = ns["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(Time);
        let cells = [
            ns["metadata"]["name"].clone(),
            ns["status"]["phase"].clone(),
            age(created.as_ref(), now),
        ];
        let object = serde_json::to_vec(ns).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.row(&cells, &object)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok(out.finish())
}

/// Serves `GET /api/v1/namespaces[/<name>]`.
pub async fn handle(
    registry: &Registry,
    info: &RequestInfo,
    req: &http::request::Parts,
) -> Result<Response<Body>, ApiError> {
    if info.api_version != "v1" || info.resource != "namespaces" || !info.subresource.is_empty() {
        return Err(ApiError::NoSuchPath);
    }
    let environments: Arc<_> = registry
        .resource("environments")
        .ok_or(ApiError::NoSuchPath)?
        .clone();
    let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
    let rep = negotiate(accept, Offers::OBJECTS)?;
    let query = Query::parse(req.uri.query());
    match info.verb.as_str() {
        "get" => {
            let env = environments
                .get("", &info.name, None)
                .await
                .map_err(|err| match err {
                    ApiError::NotFound { .. } => ApiError::NotFound {
                        resource: GroupResource::new("", "namespaces"),
                        name: info.name.clone(),
                    },
                    other => other,
                })?;
            let ns = namespace_of(&env)?;
            let rv = env.mod_revision.to_string();
            match rep.transform {
                Transform::Table => json_bytes_response(
                    StatusCode::OK,
                    table(&[ns], &rv, query.include_object()?)?,
                    rep.encoding,
                ),
                _ => value_response(StatusCode::OK, &ns, rep.encoding),
            }
        }
        "list" => {
            let opts = ListOptions {
                filter: query.filter()?,
                ..Default::default()
            };
            let list = environments.list(&opts).await?;
            let items = list
                .items
                .iter()
                .map(|e| namespace_of(e))
                .collect::<Result<Vec<_>, _>>()?;
            let rv = list.revision.to_string();
            match rep.transform {
                Transform::Table => json_bytes_response(
                    StatusCode::OK,
                    table(&items, &rv, query.include_object()?)?,
                    rep.encoding,
                ),
                _ => value_response(
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": rv}, "items": items}),
                    rep.encoding,
                ),
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
