//! The contract between a kind and the generic registry that serves it.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};

use crate::table::PrinterColumn;
use crate::validation::ErrorList;

/// Whether objects of a kind live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaced,
}

impl Scope {
    /// The spelling discovery uses (`APIResource.namespaced` is the bool form).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Cluster => "Cluster",
            Scope::Namespaced => "Namespaced",
        }
    }
}

/// Everything discovery says about a resource.
#[derive(Clone, Copy, Debug)]
pub struct ResourceInfo {
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The URL segment: `clusters`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub scope: Scope,
    /// Subresources beyond the object itself (`status`, later `proxy`, `bootstrap`).
    pub subresources: &'static [&'static str],
}

/// A kind of the `edgefleet.io` group.
///
/// Implementors are plain serde structs with `apiVersion`, `kind`, `metadata`, `spec` and an
/// optional `status`. The registry stores them as JSON; it decodes into the typed form to default
/// and validate, which also drops fields the schema does not know (pruning).
pub trait ApiKind:
    Serialize
    + DeserializeOwned
    + JsonSchema
    + Clone
    + Debug
    + Default
    + PartialEq
    + Send
    + Sync
    + 'static
{
    type Spec: Serialize + DeserializeOwned + Clone + Debug + Default + PartialEq;
    type Status: Serialize + DeserializeOwned + Clone + Debug + Default + PartialEq;

    const INFO: ResourceInfo;

    /// A new object of this kind named `name`: `apiVersion`, `kind` and `metadata.name` set,
    /// everything else default.
    fn named(name: &str) -> Self;

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn spec(&self) -> &Self::Spec;
    fn status(&self) -> Option<&Self::Status>;

    /// Fills unset fields with their defaults. Idempotent.
    fn default_fields(&mut self) {}

    /// Validates the spec (metadata is validated generically by the registry).
    fn validate(&self) -> ErrorList;

    /// Validates the status when it is written through `/status`.
    fn validate_status(&self) -> ErrorList {
        ErrorList::default()
    }

    /// Table columns in display order, `Name` first; `priority > 0` only with `-o wide`.
    fn columns() -> &'static [PrinterColumn];

    /// One cell per column of [`ApiKind::columns`], `now` being the server's clock (for ages).
    fn cells(&self, now: Timestamp) -> Vec<serde_json::Value>;
}

/// Implements the accessor half of [`ApiKind`] for a struct with the standard layout.
macro_rules! kind_accessors {
    () => {
        fn named(name: &str) -> Self {
            Self {
                api_version: $crate::API_VERSION.into(),
                kind: <Self as $crate::ApiKind>::INFO.kind.into(),
                metadata: $crate::ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                ..Default::default()
            }
        }
        fn metadata(&self) -> &$crate::ObjectMeta {
            &self.metadata
        }
        fn metadata_mut(&mut self) -> &mut $crate::ObjectMeta {
            &mut self.metadata
        }
        fn spec(&self) -> &Self::Spec {
            &self.spec
        }
        fn status(&self) -> Option<&Self::Status> {
            self.status.as_ref()
        }
    };
}
pub(crate) use kind_accessors;
