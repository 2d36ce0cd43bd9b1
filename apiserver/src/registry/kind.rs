//! A kind as the generic store sees it: JSON in, JSON out.
//!
//! [`KindStrategy`] is the object-safe face of `edgefleet_api::ApiKind`; [`Typed<K>`] implements
//! it for every kind by round-tripping through the Rust type, which applies defaults and drops
//! fields the type does not have (pruning).

use std::marker::PhantomData;

use edgefleet_api::jiff::Timestamp;
use edgefleet_api::table::PrinterColumn;
use edgefleet_api::validation::{validate_object_meta, ErrorList, MetaRules};
use edgefleet_api::{ApiKind, ResourceInfo, Scope};
use serde_json::{Map, Value};

/// Per-kind behaviour of the generic store.
pub trait KindStrategy: Send + Sync + 'static {
    fn info(&self) -> &'static ResourceInfo;

    /// The kind's OpenAPI v3 schema.
    fn schema(&self) -> Value;

    /// Decodes, defaults and re-encodes. Fails with the decoder's message when the JSON does not
    /// fit the type (the structural check normally reports such problems first, with paths).
    fn canonicalize(&self, obj: Value) -> Result<Value, String>;

    /// Metadata and spec validation of a canonical object.
    fn validate(&self, obj: &Value) -> ErrorList;

    /// Status validation of a canonical object, for writes through `/status`.
    fn validate_status(&self, obj: &Value) -> ErrorList;

    fn columns(&self) -> &'static [PrinterColumn];

    /// Table cells of a canonical object, given as its stored JSON.
    fn cells(&self, json: &[u8], now: Timestamp) -> Vec<Value>;

    fn namespaced(&self) -> bool {
        self.info().scope == Scope::Namespaced
    }
}

/// [`KindStrategy`] for an [`ApiKind`].
pub struct Typed<K>(PhantomData<fn() -> K>);

impl<K> Typed<K> {
    pub fn new() -> Self {
        Typed(PhantomData)
    }
}

impl<K> Default for Typed<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: ApiKind> Typed<K> {
    fn decode(obj: &Value) -> Option<K> {
        serde_json::from_value(obj.clone()).ok()
    }
}

/// Names that end up in namespaces, DNS names or certificate subjects must be DNS labels.
fn meta_rules(info: &ResourceInfo) -> MetaRules {
    MetaRules {
        namespaced: info.scope == Scope::Namespaced,
        name_is_label: matches!(info.plural, "environments" | "clusters"),
    }
}

impl<K: ApiKind> KindStrategy for Typed<K> {
    fn info(&self) -> &'static ResourceInfo {
        &K::INFO
    }

    fn schema(&self) -> Value {
        edgefleet_api::schema::kind_schema::<K>()
    }

    fn canonicalize(&self, obj: Value) -> Result<Value, String> {
        let mut typed: K = serde_path_to_error::deserialize(obj.clone()).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        typed.default_fields();
        let defaulted = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        // Defaults only fill what is absent: values the client set stay exactly as set (an
        // explicit `paused: false` is kept), as for custom resources, so that applying the same
        // configuration twice is a no-op.
        let mut out = obj;
        fill_absent(&mut out, &defaulted);
        if let Value::Object(map) = &mut out {
            drop_empty(map, "status");
        }
        Ok(out)
    }

    fn validate(&self, obj: &Value) -> ErrorList {
        let Some(typed) = Self::decode(obj) else {
            return ErrorList::default();
        };
        let mut errs = validate_object_meta(typed.metadata(), meta_rules(&K::INFO));
        errs.extend(typed.validate());
        errs
    }

    fn validate_status(&self, obj: &Value) -> ErrorList {
        Self::decode(obj)
            .map(|t| t.validate_status())
            .unwrap_or_default()
    }

    fn columns(&self) -> &'static [PrinterColumn] {
        K::columns()
    }

    fn cells(&self, json: &[u8], now: Timestamp) -> Vec<Value> {
        match serde_json::from_slice::<K>(json).ok() {
            Some(typed) => typed.cells(now),
            None => vec![Value::Null; K::columns().len()],
        }
    }
}

/// Copies into `target` every field of `defaults` that `target` lacks, recursively (lists
/// element by element: decoding never changes their length).
fn fill_absent(target: &mut Value, defaults: &Value) {
    match (target, defaults) {
        (Value::Object(t), Value::Object(d)) => {
            for (key, value) in d {
                match t.get_mut(key) {
                    Some(existing) => fill_absent(existing, value),
                    None => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(d)) if t.len() == d.len() => {
            for (item, default) in t.iter_mut().zip(d) {
                fill_absent(item, default);
            }
        }
        _ => {}
    }
}

/// Removes `key` when it holds an empty object (an all-default status).
fn drop_empty(map: &mut Map<String, Value>, key: &str) {
    if map
        .get(key)
        .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        map.remove(key);
    }
}
