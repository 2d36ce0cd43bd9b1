//! The core group's `namespaces`, read-only and derived from Environments.
//!
//! Every edgefleet namespace is an Environment's, so `GET /api/v1/namespaces/<env>` answers with
//! a Namespace for each Environment (Active, or Terminating while it is being deleted). kubectl
//! relies on it: after a NotFound it asks whether the namespace exists, to say which is missing.

use std::sync::Arc;

use http::header::ACCEPT;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::body::{value_response, Body};
use super::params::Query;
use crate::errors::{ApiError, GroupResource};
use crate::negotiation::{negotiate, Offers, Transform};
use crate::registry::cacher::CachedObject;
use crate::registry::{ListOptions, Registry};
use crate::request_info::RequestInfo;

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

fn table(namespaces: &[Value], resource_version: &str) -> Value {
    let now = edgefleet_api::jiff::Timestamp::now();
    let rows: Vec<Value> = namespaces
        .iter()
        .map(|ns| {
            let created = ns["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<edgefleet_api::jiff::Timestamp>().ok());
            let age = created.map(|t| edgefleet_api::table::human_duration(now.as_second() - t.as_second()));
            json!({
                "cells": [ns["metadata"]["name"], ns["status"]["phase"], age.unwrap_or_else(|| "<unknown>".into())],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": ns["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name of the namespace (and of its Environment).", "priority": 0},
            {"name": "Status", "type": "string", "format": "", "description": "Active, or Terminating while the Environment is deleted.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "Age of the Environment.", "priority": 0},
        ],
        "rows": rows,
    })
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
                Transform::Table => {
                    value_response(StatusCode::OK, &table(&[ns], &rv), rep.encoding)
                }
                _ => value_response(StatusCode::OK, &ns, rep.encoding),
            }
        }
        "list" => {
            let query = Query::parse(req.uri.query());
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
                Transform::Table => {
                    value_response(StatusCode::OK, &table(&items, &rv), rep.encoding)
                }
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
