//! `metadata.managedFields`: decoding, encoding, and the bookkeeping kube-apiserver does
//! around the set algebra (manager identity, timestamps, the cap on update entries).
//!
//! An entry is identified by *who* did *what* *where*: `(manager, operation, apiVersion,
//! subresource)`, except that appliers are identified without the apiVersion, so that one
//! applier keeps one entry across versions (kube's `BuildManagerIdentifier`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use serde_json::Value;

use super::fieldpath::FieldSet;

/// The manager name kube-apiserver records when a client names none.
const UNKNOWN_MANAGER: &str = "unknown";
/// Update entries beyond this many are merged, oldest first, into `ancient-changes`.
pub(crate) const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES_MANAGER: &str = "ancient-changes";
const FIELDS_V1: &str = "FieldsV1";

/// The two kinds of writes field management tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write: create, update, JSON or merge patch.
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Identity of a managedFields entry. The derived order (manager, operation, apiVersion,
/// subresource) is also the order conflict messages group managers in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ManagerKey {
    pub manager: String,
    pub operation: Operation,
    /// Empty for appliers.
    pub api_version: String,
    /// Empty for the main resource.
    pub subresource: String,
}

impl ManagerKey {
    pub fn new(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> Self {
        let manager = if manager.is_empty() {
            UNKNOWN_MANAGER
        } else {
            manager
        };
        ManagerKey {
            manager: manager.to_owned(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => api_version.to_owned(),
            },
            subresource: subresource.to_owned(),
        }
    }

    /// kube's identifier string (the JSON of the entry's identifying fields), which is what
    /// kube sorts managers by when it has to pick the oldest among equally old ones.
    fn identifier(&self) -> String {
        let mut id = serde_json::Map::new();
        id.insert("manager".into(), self.manager.clone().into());
        id.insert("operation".into(), self.operation.as_str().into());
        if !self.api_version.is_empty() {
            id.insert("apiVersion".into(), self.api_version.clone().into());
        }
        if !self.subresource.is_empty() {
            id.insert("subresource".into(), self.subresource.clone().into());
        }
        Value::Object(id).to_string()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub set: FieldSet,
    /// The version the set is expressed in (kept for appliers too).
    pub api_version: String,
    pub time: Option<Time>,
}

/// All entries of one object, by identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ManagedFields {
    pub entries: BTreeMap<ManagerKey, Entry>,
}

impl ManagedFields {
    /// Decodes `metadata.managedFields` as found in an object (`value` is the list).
    pub fn decode(value: &Value) -> Result<Self, String> {
        let Some(list) = value.as_array() else {
            return Err("metadata.managedFields must be a list".to_owned());
        };
        let mut entries = BTreeMap::new();
        for (i, raw) in list.iter().enumerate() {
            let entry: ManagedFieldsEntry =
                serde_json::from_value(raw.clone()).map_err(|e| format!("entry {i}: {e}"))?;
            let operation = match entry.operation.as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                _ => return Err(format!("entry {i}: operation must be `Apply` or `Update`")),
            };
            let api_version = entry.api_version.unwrap_or_default();
            if api_version.is_empty() {
                return Err(format!("entry {i}: apiVersion must not be empty"));
            }
            match entry.fields_type.as_deref() {
                Some(FIELDS_V1) => {}
                None | Some("") => return Err(format!("entry {i}: missing fieldsType")),
                Some(other) => return Err(format!("entry {i}: invalid fieldsType {other:?}")),
            }
            let set = match &entry.fields_v1 {
                Some(FieldsV1(fields)) if !fields.is_null() => FieldSet::from_fields_v1(fields)
                    .map_err(|e| format!("entry {i}: fieldsV1: {e}"))?,
                _ => FieldSet::new(),
            };
            // Decoding keeps the recorded name as is (an empty name stays empty).
            let key = ManagerKey {
                manager: entry.manager.unwrap_or_default(),
                operation,
                api_version: match operation {
                    Operation::Apply => String::new(),
                    Operation::Update => api_version.clone(),
                },
                subresource: entry.subresource.unwrap_or_default(),
            };
            entries.insert(
                key,
                Entry {
                    set,
                    api_version,
                    time: entry.time,
                },
            );
        }
        Ok(ManagedFields { entries })
    }

    /// Whether a client-sent list asks to clear field management: `[]`, or `[{}]` (one entry
    /// with nothing set), kube-apiserver's reset markers.
    pub fn is_reset(value: &Value) -> bool {
        match value.as_array().map(Vec::as_slice) {
            Some([]) => true,
            Some([only]) => {
                serde_json::from_value::<ManagedFieldsEntry>(only.clone()).is_ok_and(|e| {
                    let blank = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
                    blank(&e.api_version)
                        && blank(&e.fields_type)
                        && blank(&e.manager)
                        && blank(&e.operation)
                        && blank(&e.subresource)
                        && e.time.is_none()
                        && e.fields_v1.is_none_or(|f| f.0.is_null())
                })
            }
            _ => false,
        }
    }

    /// The list to store, sorted as kube-apiserver sorts it: appliers first, then by time
    /// (whole seconds), manager, apiVersion, subresource. `None` when there is no entry.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut list: Vec<(&ManagerKey, &Entry)> = self.entries.iter().collect();
        list.sort_by(|(ka, ea), (kb, eb)| {
            ka.operation
                .cmp(&kb.operation)
                .then_with(|| seconds(&ea.time).cmp(&seconds(&eb.time)))
                .then_with(|| ka.manager.cmp(&kb.manager))
                .then_with(|| ea.api_version.cmp(&eb.api_version))
                .then_with(|| ka.subresource.cmp(&kb.subresource))
        });
        let encoded: Vec<ManagedFieldsEntry> = list
            .into_iter()
            .map(|(key, entry)| ManagedFieldsEntry {
                api_version: Some(entry.api_version.clone()),
                fields_type: Some(FIELDS_V1.to_owned()),
                fields_v1: Some(FieldsV1(entry.set.to_fields_v1())),
                manager: Some(key.manager.clone()),
                operation: Some(key.operation.as_str().to_owned()),
                subresource: (!key.subresource.is_empty()).then(|| key.subresource.clone()),
                time: entry.time.clone(),
            })
            .collect();
        // Serializing these plain structs cannot fail.
        serde_json::to_value(encoded).ok()
    }

    /// Drops entries that own nothing.
    pub fn drop_empty(&mut self) {
        self.entries.retain(|_, e| !e.set.is_empty());
    }

    /// Keeps at most [`MAX_UPDATE_MANAGERS`] update entries by merging the oldest into one
    /// `ancient-changes` entry per apiVersion (kube's `capManagersManager`), so that a stream of
    /// writers with distinct names cannot grow an object without bound.
    pub fn cap_update_managers(&mut self) {
        let mut updaters: Vec<ManagerKey> = self
            .entries
            .keys()
            .filter(|k| k.operation == Operation::Update)
            .cloned()
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort_by_cached_key(|k| (seconds(&self.entries[k].time), k.identifier()));
        let mut count = updaters.len();
        let mut first_of_version: BTreeMap<String, ManagerKey> = BTreeMap::new();
        for key in updaters {
            if count <= MAX_UPDATE_MANAGERS {
                break;
            }
            let version = self.entries[&key].api_version.clone();
            let bucket = ManagerKey::new(ANCIENT_CHANGES_MANAGER, Operation::Update, &version, "");
            if key == bucket {
                continue;
            }
            if !self.entries.contains_key(&bucket) {
                // The oldest entry of a version waits to see whether a second one joins it.
                let Some(first) = first_of_version.get(&version).cloned() else {
                    first_of_version.insert(version, key);
                    continue;
                };
                if let Some(first_entry) = self.entries.remove(&first) {
                    self.entries.insert(bucket.clone(), first_entry);
                }
            }
            if let Some(entry) = self.entries.remove(&key) {
                if let Some(bucket_entry) = self.entries.get_mut(&bucket) {
                    bucket_entry.set = bucket_entry.set.union(&entry.set);
                    // The merged entry is more recent than what the bucket held.
                    bucket_entry.time = entry.time;
                }
                count -= 1;
            }
        }
    }
}

fn seconds(time: &Option<Time>) -> i64 {
    time.as_ref().map_or(0, |t| t.0.as_second())
}
