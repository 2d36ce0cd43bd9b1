//! Response bodies for objects and lists: the objects themselves, `meta.k8s.io/v1` Tables, and
//! PartialObjectMetadata.
//!
//! Lists are assembled from each object's cached JSON bytes without re-encoding them, which keeps
//! a 10,000-object list cheap.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::API_VERSION;
use serde_json::{json, Map, Value};

use super::cacher::CachedObject;
use super::Resource;
use crate::errors::ApiError;

/// `includeObject` of a Table request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// `metadata` of a list.
#[derive(Clone, Debug, Default)]
pub struct ListMeta {
    pub resource_version: String,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

impl ListMeta {
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "resourceVersion".into(),
            self.resource_version.clone().into(),
        );
        if let Some(c) = &self.continue_token {
            m.insert("continue".into(), c.clone().into());
        }
        if let Some(r) = self.remaining {
            m.insert("remainingItemCount".into(), r.into());
        }
        Value::Object(m)
    }
}

fn parse(obj: &CachedObject) -> Result<Value, ApiError> {
    serde_json::from_slice(&obj.json)
        .map_err(|e| ApiError::Internal(format!("cached object is not JSON: {e}")))
}

impl Resource {
    /// `<Kind>List` JSON, splicing the items' bytes.
    pub fn list_json(&self, items: &[Arc<CachedObject>], meta: &ListMeta) -> Bytes {
        let head = json!({"apiVersion": API_VERSION, "kind": self.strategy.info().list_kind, "metadata": meta.to_value()});
        let head = serde_json::to_vec(&head).unwrap_or_default();
        let size: usize = items.iter().map(|o| o.json.len() + 1).sum();
        let mut out = BytesMut::with_capacity(head.len() + size + 16);
        // `{...}` → `{..., "items":[a,b]}`
        out.put_slice(&head[..head.len() - 1]);
        out.put_slice(b",\"items\":[");
        for (i, obj) in items.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(&obj.json);
        }
        out.put_slice(b"]}");
        out.freeze()
    }

    /// A Table of `items` (one object is a one-row table).
    pub fn table(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
        include: IncludeObject,
        headers: bool,
    ) -> Result<Value, ApiError> {
        let now = Timestamp::now();
        let columns: Vec<Value> = self
            .strategy
            .columns()
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
            })
            .collect();
        let mut rows = Vec::with_capacity(items.len());
        for obj in items {
            let value = parse(obj)?;
            let cells = self.strategy.cells(&value, now);
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = partial(&value);
                }
                IncludeObject::Object => {
                    row["object"] = value;
                }
            }
            rows.push(row);
        }
        Ok(json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta.to_value(),
            "columnDefinitions": if headers { Value::Array(columns) } else { Value::Null },
            "rows": rows,
        }))
    }

    /// `PartialObjectMetadataList` of `items`.
    pub fn partial_list(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
    ) -> Result<Value, ApiError> {
        let items: Result<Vec<Value>, ApiError> = items
            .iter()
            .map(|o| parse(o).map(|v| partial(&v)))
            .collect();
        Ok(json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta.to_value(),
            "items": items?,
        }))
    }

    /// `PartialObjectMetadata` of one object.
    pub fn partial(&self, obj: &CachedObject) -> Result<Value, ApiError> {
        parse(obj).map(|v| partial(&v))
    }
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}
