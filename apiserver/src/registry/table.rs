//! Response bodies for a resource's objects: `<Kind>List`, `meta.k8s.io/v1` Tables and
//! PartialObjectMetadata, assembled by [`edgefleet_apimachinery::table`] from each object's
//! cached JSON bytes (never re-encoded: a 10,000-object list stays cheap) with the kind's
//! printer columns and cells.

use std::sync::Arc;

use bytes::Bytes;
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::API_VERSION;
use edgefleet_apimachinery::table::{self, IncludeObject, ListMeta, TableError, TableWriter};

use super::cacher::CachedObject;
use super::Resource;
use crate::errors::ApiError;

fn internal(err: TableError) -> ApiError {
    ApiError::Internal(format!("cached object: {err}"))
}

fn bytes_of(items: &[Arc<CachedObject>]) -> impl ExactSizeIterator<Item = &[u8]> + Clone {
    items.iter().map(|o| &o.json[..])
}

impl Resource {
    /// `<Kind>List` JSON, splicing the items' bytes.
    pub fn list_json(&self, items: &[Arc<CachedObject>], meta: &ListMeta) -> Bytes {
        table::list(
            API_VERSION,
            self.strategy.info().list_kind,
            meta,
            bytes_of(items),
        )
    }

    /// A Table of `items` (one object is a one-row table), as JSON. Each object is decoded
    /// once, into its type, for its cells; the row's object (its metadata, or all of it) is
    /// spliced in as stored.
    pub fn table(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
        include: IncludeObject,
        headers: bool,
    ) -> Result<Bytes, ApiError> {
        let now = Timestamp::now();
        let stored: usize = items.iter().map(|o| o.json.len()).sum();
        let columns = headers.then(|| self.strategy.columns());
        let mut out = TableWriter::new(meta, columns, include, stored + 128 * items.len());
        for obj in items {
            out.row(&self.strategy.cells(&obj.json, now), &obj.json)
                .map_err(internal)?;
        }
        Ok(out.finish())
    }

    /// `PartialObjectMetadataList` of `items`, as JSON.
    pub fn partial_list(
        &self,
        items: &[Arc<CachedObject>],
        meta: &ListMeta,
    ) -> Result<Bytes, ApiError> {
        table::partial_object_metadata_list(meta, bytes_of(items)).map_err(internal)
    }

    /// `PartialObjectMetadata` of one object, as JSON.
    pub fn partial(&self, obj: &CachedObject) -> Result<Bytes, ApiError> {
        table::partial_object_metadata(&obj.json).map_err(internal)
    }
}
