//! Response bodies for objects and lists: the objects themselves, `meta.k8s.io/v1` Tables, and
//! PartialObjectMetadata.
//!
//! Lists, Tables and partial metadata are assembled from each object's cached JSON bytes
//! without re-encoding them, which keeps a 10,000-object list cheap.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::API_VERSION;
use serde_json::value::RawValue;
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

/// The `metadata` of a stored object, as the bytes it was stored with.
#[derive(serde::Deserialize)]
struct MetadataOf<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

fn raw_metadata(obj: &CachedObject) -> Result<&RawValue, ApiError> {
    let parsed: MetadataOf<'_> = serde_json::from_slice(&obj.json)
        .map_err(|e| ApiError::Internal(format!("cached object is not JSON: {e}")))?;
    parsed
        .metadata
        .ok_or_else(|| ApiError::Internal("cached object has no metadata".into()))
}

/// `{"kind":"PartialObjectMetadata",…,"metadata":<the object's metadata>}` appended to `out`.
fn put_partial(out: &mut BytesMut, obj: &CachedObject) -> Result<(), ApiError> {
    out.put_slice(br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#);
    out.put_slice(raw_metadata(obj)?.get().as_bytes());
    out.put_u8(b'}');
    Ok(())
}

fn put_json<T: serde::Serialize>(out: &mut BytesMut, value: &T) -> Result<(), ApiError> {
    serde_json::to_writer(out.writer(), value).map_err(|e| ApiError::Internal(e.to_string()))
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

    /// A Table of `items` (one object is a one-row table), as JSON. Written straight from the
    /// stored bytes: each object is decoded once, into its type, for its cells; the row's
    /// object (its metadata, or all of it) is spliced in as stored.
    pub fn table(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
        include: IncludeObject,
        headers: bool,
    ) -> Result<Bytes, ApiError> {
        let now = Timestamp::now();
        let stored: usize = items.iter().map(|o| o.json.len()).sum();
        let mut out = BytesMut::with_capacity(stored + 128 * items.len() + 1024);
        out.put_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
        put_json(&mut out, &meta.to_value())?;
        out.put_slice(br#","columnDefinitions":"#);
        if headers {
            let columns: Vec<Value> = self
                .strategy
                .columns()
                .iter()
                .map(|c| {
                    json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
                })
                .collect();
            put_json(&mut out, &columns)?;
        } else {
            out.put_slice(b"null");
        }
        out.put_slice(br#","rows":["#);
        for (i, obj) in items.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(br#"{"cells":"#);
            put_json(&mut out, &self.strategy.cells(&obj.json, now))?;
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    out.put_slice(br#","object":"#);
                    put_partial(&mut out, obj)?;
                }
                IncludeObject::Object => {
                    out.put_slice(br#","object":"#);
                    out.put_slice(&obj.json);
                }
            }
            out.put_u8(b'}');
        }
        out.put_slice(b"]}");
        Ok(out.freeze())
    }

    /// `PartialObjectMetadataList` of `items`, as JSON.
    pub fn partial_list(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
    ) -> Result<Bytes, ApiError> {
        let mut out = BytesMut::with_capacity(256 * items.len() + 256);
        out.put_slice(
            br#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":"#,
        );
        put_json(&mut out, &meta.to_value())?;
        out.put_slice(br#","items":["#);
        for (i, obj) in items.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            put_partial(&mut out, obj)?;
        }
        out.put_slice(b"]}");
        Ok(out.freeze())
    }

    /// `PartialObjectMetadata` of one object, as JSON.
    pub fn partial(&self, obj: &CachedObject) -> Result<Bytes, ApiError> {
        let mut out = BytesMut::with_capacity(obj.json.len() + 96);
        put_partial(&mut out, obj)?;
        Ok(out.freeze())
    }
}
