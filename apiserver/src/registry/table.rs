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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use serde_json::json;

    use super::super::cacher::CachedObject;
    use super::super::{DynStorage, Registry, RegistryConfig};
    use super::*;
    use crate::storage::embedded::EmbeddedStore;

    /// Renders a 10,000-row Table of Clusters (with their metadata) and prints the median of 15
    /// renderings. A timing measured by hand, not a check (it depends on the machine):
    /// `cargo test --release -p edgefleet-apiserver table_of_10k -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a timing to run by hand"]
    async fn table_of_10k_clusters_timing() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStorage = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let registry = Registry::new(store, RegistryConfig::default());
        let clusters = registry.resource("clusters").unwrap().clone();
        let items: Vec<Arc<CachedObject>> = (0..10_000)
            .map(|i| {
                let name = format!("edge-{i}");
                let object = json!({
                    "apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster",
                    "metadata": {"name": name, "namespace": "retail", "uid": format!("uid-{i}"),
                        "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
                        "labels": {"region": "eu", "gpu": "l4"}},
                    "spec": {"kubernetesVersion": "v1.31.4"},
                    "status": {"connection": {"state": "Connected"}, "kubernetesVersion": "v1.31.4",
                        "nodes": {"ready": 3, "total": 3}},
                });
                Arc::new(CachedObject {
                    key: format!("/registry/edgefleet.io/clusters/retail/{name}"),
                    mod_revision: 7,
                    name,
                    namespace: "retail".into(),
                    labels: Default::default(),
                    json: Bytes::from(serde_json::to_vec(&object).unwrap()),
                })
            })
            .collect();
        let meta = ListMeta {
            resource_version: "7".into(),
            ..ListMeta::default()
        };
        let mut times: Vec<Duration> = (0..15)
            .map(|_| {
                let started = Instant::now();
                let table = clusters
                    .table(&items, &meta, IncludeObject::Metadata, true)
                    .unwrap();
                let took = started.elapsed();
                assert!(table.len() > 10_000 * 100);
                took
            })
            .collect();
        times.sort();
        println!(
            "10k-row Table: median {:?} (min {:?}, max {:?})",
            times[7], times[0], times[14]
        );
    }
}
