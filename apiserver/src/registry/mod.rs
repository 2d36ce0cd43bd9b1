//! The generic registry: one store implementation that serves every kind, parameterised by the
//! kind's [`KindStrategy`] (as `k8s.io/apiserver`'s generic registry is by per-kind strategies).
//!
//! ```text
//!   handler ──► Registry::resource("clusters") ──► Resource
//!                                                   ├─ reads:  get / list ─► storage (consistent) or cacher (rv=0)
//!                                                   ├─ watch:  cacher (window) ─► storage watch (older)
//!                                                   └─ writes: decode → structural check → strategy
//!                                                              → admission → storage CAS
//! ```
//!
//! Objects are JSON values throughout. They are stored without `metadata.resourceVersion`; it is
//! set from the storage revision whenever an object is read.

mod admission;
pub mod cacher;
mod delete;
mod fields;
pub mod keys;
pub mod kind;
pub mod object;
mod read;
pub mod table;
mod update;
pub mod watch;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use edgefleet_apimachinery::apply::ObjectSchema;
use edgefleet_apimachinery::selectors::{FieldSelectorExpr, LabelSelectorExpr};
use serde_json::{Map, Value};

use crate::errors::{ApiError, GroupResource};
use crate::storage::{DynStorage, KeyValue, MAX_VALUE_BYTES};
use cacher::{CachedObject, Cacher, Decoder};
use kind::{KindStrategy, Typed};

pub use delete::{invalid_delete_options, DeleteOptions};
pub use read::{parse_revision, ListOptions, ListResult, ResourceVersionMatch};
pub use update::{Preconditions, GUARANTEED_UPDATE_TIMEOUT};
pub use write::{FieldValidation, Patch, Target, WriteOptions, WriteOutcome};

/// The group every resource of this registry belongs to.
pub const GROUP: &str = edgefleet_api::GROUP;

/// One resource (one kind) of the registry.
pub struct Resource {
    pub strategy: Arc<dyn KindStrategy>,
    pub group_resource: GroupResource,
    /// The kind's OpenAPI schema and the components it refers to.
    pub schema: Value,
    pub components: Arc<Map<String, Value>>,
    /// The schema compiled for managedFields and server-side apply.
    pub object_schema: Arc<ObjectSchema>,
    /// `edgefleet.io/<resource>/`
    pub key_prefix: String,
    store: DynStorage,
    cacher: Cacher,
}

/// All resources, by plural name.
#[derive(Clone)]
pub struct Registry {
    resources: Arc<BTreeMap<&'static str, Arc<Resource>>>,
    store: DynStorage,
}

/// Registry settings.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// History each resource's watch cache keeps for resuming watchers.
    pub watch_cache: cacher::WindowLimits,
}

impl Registry {
    /// The registry of the five edgefleet kinds over `store`. Starts one watch cache per
    /// resource, so it must run inside a tokio runtime.
    pub fn new(store: DynStorage, config: RegistryConfig) -> Self {
        let components = Arc::new(edgefleet_api::schema::components());
        let strategies: Vec<Arc<dyn KindStrategy>> = vec![
            Arc::new(Typed::<edgefleet_api::Environment>::new()),
            Arc::new(Typed::<edgefleet_api::Cluster>::new()),
            Arc::new(Typed::<edgefleet_api::Fleet>::new()),
            Arc::new(Typed::<edgefleet_api::ClusterAddon>::new()),
            Arc::new(Typed::<edgefleet_api::Placement>::new()),
        ];
        let resources = strategies
            .into_iter()
            .map(|strategy| {
                let info = strategy.info();
                let key_prefix = keys::prefix(GROUP, info.plural, None);
                let cacher = Cacher::start(
                    store.clone(),
                    key_prefix.clone(),
                    decoder(),
                    config.watch_cache,
                );
                let schema = strategy.schema();
                let object_schema = ObjectSchema::new(&schema, &components)
                    .map(Arc::new)
                    .expect("the built-in schemas compile");
                let resource = Resource {
                    object_schema,
                    schema,
                    group_resource: GroupResource::new(GROUP, info.plural),
                    components: components.clone(),
                    key_prefix,
                    store: store.clone(),
                    cacher,
                    strategy,
                };
                (info.plural, Arc::new(resource))
            })
            .collect();
        Registry {
            resources: Arc::new(resources),
            store,
        }
    }

    /// The resource served under `plural`.
    pub fn resource(&self, plural: &str) -> Option<&Arc<Resource>> {
        self.resources.get(plural)
    }

    pub fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    pub fn storage(&self) -> &DynStorage {
        &self.store
    }

    /// Whether every watch cache has completed its first list.
    pub fn is_ready(&self) -> bool {
        self.resources.values().all(|r| r.cacher.is_ready())
    }
}

impl Resource {
    pub fn plural(&self) -> &'static str {
        self.strategy.info().plural
    }

    pub fn kind(&self) -> &'static str {
        self.strategy.info().kind
    }

    pub fn namespaced(&self) -> bool {
        self.strategy.namespaced()
    }

    pub fn key(&self, namespace: &str, name: &str) -> String {
        keys::object(GROUP, self.plural(), namespace, name)
    }

    /// Key prefix of a list, narrowed to a namespace when one is given.
    pub fn list_prefix(&self, namespace: &str) -> String {
        keys::prefix(
            GROUP,
            self.plural(),
            Some(namespace).filter(|_| self.namespaced()),
        )
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::NotFound {
            resource: self.group_resource.clone(),
            name: name.into(),
        }
    }

    /// An object held as a value (not read from storage), in the form responses use.
    pub(crate) fn as_cached(&self, obj: &Value) -> Result<Arc<CachedObject>, ApiError> {
        let json = serde_json::to_vec(obj).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Arc::new(CachedObject {
            key: self.key(object::namespace(obj), object::name(obj)),
            mod_revision: object::meta_str(obj, "resourceVersion")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            name: object::name(obj).to_string(),
            namespace: object::namespace(obj).to_string(),
            labels: object::labels(obj),
            json: json.into(),
        }))
    }

    /// The watch cache of this resource.
    pub fn cacher(&self) -> &Cacher {
        &self.cacher
    }
}

/// Decodes a stored value into an object with `resourceVersion` set.
pub fn decode_object(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    object::set_meta(&mut obj, "resourceVersion", kv.mod_revision.to_string());
    Ok(obj)
}

/// Encodes an object for storage (without `resourceVersion`). An object larger than storage
/// takes ([`MAX_VALUE_BYTES`]) is refused with `413`, naming its size: kube-apiserver passes
/// etcd's "request is too large" on as a 500, which tells the client nothing it can act on.
pub fn encode_object(obj: &Value) -> Result<Bytes, ApiError> {
    let mut obj = obj.clone();
    object::remove_meta(&mut obj, "resourceVersion");
    let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::Internal(e.to_string()))?;
    if bytes.len() > MAX_VALUE_BYTES {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::RequestEntityTooLarge(format!(
            "{kind} {:?} is {} bytes as stored, more than the {MAX_VALUE_BYTES} bytes storage takes",
            object::name(&obj),
            bytes.len()
        )));
    }
    Ok(Bytes::from(bytes))
}

/// The watch cache's decoder: parse once, keep the JSON bytes for every reader.
fn decoder() -> Decoder {
    Arc::new(|kv: &KeyValue| {
        let obj = decode_object(kv).map_err(|e| e.to_string())?;
        Ok(CachedObject {
            key: kv.key.clone(),
            mod_revision: kv.mod_revision,
            name: object::name(&obj).to_string(),
            namespace: object::namespace(&obj).to_string(),
            labels: object::labels(&obj),
            json: Bytes::from(serde_json::to_vec(&obj).map_err(|e| e.to_string())?),
        })
    })
}

/// Which objects a list or watch selects.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub labels: LabelSelectorExpr,
    pub fields: FieldSelectorExpr,
}

impl Filter {
    pub fn matches(&self, obj: &CachedObject) -> bool {
        self.labels.matches(&obj.labels)
            && self.fields.matches(&|f: &str| match f {
                "metadata.name" => Some(obj.name.clone()),
                "metadata.namespace" => Some(obj.namespace.clone()),
                _ => None,
            })
    }

    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}
