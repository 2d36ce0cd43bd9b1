//! Server-side apply and field management (`metadata.managedFields`), with the semantics of
//! Kubernetes' structured-merge-diff (SMD) and kube-apiserver's field manager.
//!
//! Every write records who owns which fields of the object. A field set is a set of paths
//! ([`FieldSet`], stored as fieldsV1) per *manager entry* `(manager, operation, apiVersion,
//! subresource)`:
//!
//! ```text
//!  PATCH application/apply-patch ──► apply()          operation Apply: the manager owns exactly
//!                                                      the fields of its configuration
//!  POST / PUT / JSON or merge PATCH ──► record_update() operation Update: the manager gains the
//!                                                      fields whose values it changed
//! ```
//!
//! **Apply** (`manager`, `config`):
//! 1. merge `config` into the live object by schema (structs and maps by key, map-lists by
//!    item key, sets by value; scalars and atomic lists are replaced);
//! 2. the manager's new set is the set of fields in `config`;
//! 3. fields the manager applied last time but not now are removed from the object, unless
//!    another manager (applier or updater) owns them;
//! 4. fields whose value changed and that another manager owns are *conflicts*: the apply
//!    fails with all of them (409), or, with `force`, the other managers lose them;
//! 5. fields that disappeared leave every set; empty entries are dropped.
//!
//! **Update** (`manager`, old → new): every manager loses the fields that changed or
//! disappeared; the writer gains the fields that changed or appeared. No conflicts.
//!
//! A `null` in a configuration owns the field and leaves it unset, as kube-apiserver's pruning
//! of nulls makes it for structural schemas (free-form values keep their nulls).
//!
//! Both honour a [`Scope`] (kube's "reset fields"): the main resource never touches `status`,
//! the `status` subresource touches nothing else. Neither ever tracks `apiVersion`, `kind`,
//! or the metadata the server owns (`name`, `uid`, `resourceVersion`, ...).
//!
//! Pure logic: no I/O, no clock (callers pass `now`), no async. Build one [`ObjectSchema`]
//! per kind at startup and share it.
//!
//! Deliberate differences from kube-apiserver, each toward a stricter or more predictable
//! result: managedFields that a client sends and that cannot be parsed are an error (kube
//! silently keeps the stored ones); an apply that changes nothing in the object but changes
//! the applier's set stamps the applier's entry with `now` (kube leaves the time alone); the
//! `kubectl.kubernetes.io/last-applied-configuration` hand-over of client-side apply is not
//! implemented.

mod fieldpath;
mod fields_v1;
mod managed;
mod schema;
mod typed;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

pub use fieldpath::{FieldSet, Path, PathElement};
pub use fields_v1::FieldsV1Error;
pub use managed::Operation;
pub use schema::{GroupVersionKind, ObjectSchema, SchemaError};

use managed::{Entry, ManagedFields, ManagerKey};
use typed::Comparison;

pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// Fields that belong to the server or to the request, never to a manager (kube's
/// `stripMetaManager`, plus the deletion fields the registry alone sets).
const STRIPPED_TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata"];
const STRIPPED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "clusterName",
];

/// Which part of the object an operation may touch (kube's reset fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The resource itself: everything except `status`.
    Main,
    /// The `status` subresource: only `status`.
    Status,
}

impl Scope {
    /// The `subresource` recorded in managedFields entries.
    pub fn subresource(self) -> &'static str {
        match self {
            Scope::Main => "",
            Scope::Status => "status",
        }
    }

    /// The part of a field set this scope may touch.
    fn filter(self, set: &FieldSet) -> FieldSet {
        match self {
            Scope::Main => set.recursive_difference(&STATUS),
            Scope::Status => set.only_field("status"),
        }
    }

    /// The part of an applied configuration this scope merges.
    fn restrict(self, config: &Map<String, Value>) -> Value {
        let mut out = Map::new();
        for (key, value) in config {
            let keep = match self {
                Scope::Main => key != "status",
                Scope::Status => key == "status",
            };
            if keep {
                out.insert(key.clone(), value.clone());
            }
        }
        Value::Object(out)
    }
}

/// `status`, and everything below it.
static STATUS: LazyLock<FieldSet> =
    LazyLock::new(|| std::iter::once(Path::fields(["status"])).collect());

/// The paths no manager ever owns, as a set to subtract (not recursively: owning
/// `metadata.labels` is fine, owning `metadata` itself is not).
static STRIPPED: LazyLock<FieldSet> = LazyLock::new(|| {
    let mut set: FieldSet = STRIPPED_TOP_LEVEL
        .iter()
        .map(|f| Path::fields([*f]))
        .collect();
    for field in STRIPPED_METADATA {
        set.insert(&Path::fields(["metadata", field]).0);
    }
    set
});

/// A server-side apply request.
#[derive(Clone, Debug)]
pub struct ApplyRequest<'a> {
    pub schema: &'a ObjectSchema,
    /// The stored object; `None` when it does not exist yet (the apply creates it).
    pub live: Option<&'a Value>,
    /// The applied configuration, already parsed from YAML or JSON.
    pub config: &'a Value,
    /// The field manager (`?fieldManager=`); required.
    pub manager: &'a str,
    /// `?force=true`: take conflicting fields from their owners instead of failing.
    pub force: bool,
    pub scope: Scope,
    /// The version being served (`edgefleet.io/v1alpha1`), recorded in managedFields.
    pub api_version: &'a str,
    pub now: Time,
}

/// One field another manager owns and the apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The owner's apiVersion (meaningful for `Update` owners).
    pub api_version: String,
    /// The owner's subresource, empty for the main resource.
    pub subresource: String,
    /// The field, as Kubernetes prints it: `.spec.nodePools[name="gpu"].replicas`.
    pub field: String,
}

impl Conflict {
    /// The owner as kube-apiserver names it: `"mgr"`, or for an updater
    /// `"kubectl-edit" using edgefleet.io/v1alpha1`.
    pub fn owner(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            let _ = write!(out, " with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update.as_str() {
            let _ = write!(out, " using {}", self.api_version);
        }
        out
    }

    /// The `message` of this conflict's `metav1.StatusCause` (type `FieldManagerConflict`,
    /// `field` = [`Conflict::field`]).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.owner())
    }
}

/// Why an apply or an update could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change; `409 Conflict`, reason `Conflict`, one
    /// cause per field.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The request is not acceptable: no field manager, or a configuration without apiVersion
    /// or kind, of another kind or version, with a field the schema does not declare, a list
    /// item without its key, duplicate items, or managedFields set; `400 Bad Request`.
    #[error("{0}")]
    InvalidConfig(String),
    /// managedFields (stored, or sent with an update) cannot be parsed; `400 Bad Request`
    /// when sent by the client.
    #[error("invalid metadata.managedFields: {0}")]
    InvalidManagedFields(String),
}

impl ApplyError {
    /// The message kube-apiserver uses, e.g.
    /// `Apply failed with 1 conflict: conflict with "mgr-a": .spec.kubernetesVersion`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.owner(),
            only.field
        );
    }
    // Grouped by owner; `conflicts` is already sorted by owner identity.
    let mut out = format!("Apply failed with {} conflicts: ", conflicts.len());
    let mut previous: Option<String> = None;
    for (i, conflict) in conflicts.iter().enumerate() {
        let owner = conflict.owner();
        if previous.as_ref() != Some(&owner) {
            if i > 0 {
                out.push('\n');
            }
            let _ = write!(out, "conflicts with {owner}:");
            previous = Some(owner);
        }
        let _ = write!(out, "\n- {}", conflict.field);
    }
    out
}

/// Applies `req.config` as `req.manager` and returns the resulting object with
/// `metadata.managedFields` updated. Applying the same configuration again returns the same
/// object, managedFields (and their times) included.
pub fn apply(req: ApplyRequest<'_>) -> Result<Value> {
    let schema = req.schema;
    let config = check_config(&req)?;
    let live = match req.live {
        Some(live) => live.clone(),
        None => skeleton(config),
    };
    let (mut live, stored) = split_managed_fields(live);
    let mut managed = match stored {
        Some(list) => ManagedFields::decode(&list).map_err(ApplyError::InvalidManagedFields)?,
        None => ManagedFields::default(),
    };
    reconcile_with_schema(schema, &mut managed);
    if live.is_null() {
        live = Value::Object(Map::new());
    }

    let scoped = req.scope.restrict(config);
    let key = ManagerKey::new(
        req.manager,
        Operation::Apply,
        req.api_version,
        req.scope.subresource(),
    );
    let previous = managed.entries.get(&key).cloned();

    let merged = schema.merge(&live, &scoped);
    // The set keeps apiVersion, kind and metadata.name while pruning runs (as in kube, where
    // they are stripped afterwards): they keep `metadata` from looking unowned.
    let applied = req.scope.filter(&schema.field_set(&scoped));
    managed.entries.insert(
        key.clone(),
        Entry {
            set: applied.clone(),
            api_version: req.api_version.to_owned(),
            time: None,
        },
    );
    let last = previous
        .as_ref()
        .map(|e| req.scope.filter(&e.set))
        .unwrap_or_default();
    let mut merged = prune(schema, merged, &managed, &last);

    let changes = schema.compare(&live, &merged).map(|s| req.scope.filter(s));
    let conflicts = take_from_others(&mut managed, &key, &changes, req.force);
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }

    schema.drop_nulls(&mut merged);
    let changed = !fieldpath::values_equal(&live, &merged);
    let set = applied.difference(&STRIPPED);
    if set.is_empty() {
        managed.entries.remove(&key);
    } else {
        let set_changed = previous.as_ref().is_none_or(|p| p.set != set);
        let time = match &previous {
            Some(p) if !changed && !set_changed => p.time.clone(),
            _ => Some(req.now.clone()),
        };
        managed.entries.insert(
            key,
            Entry {
                set,
                api_version: req.api_version.to_owned(),
                time,
            },
        );
    }
    managed.drop_empty();

    let object = if changed { merged } else { live };
    Ok(with_managed_fields(object, &managed))
}

/// Records an `Update` by `manager` that turned `old` into `new` (`old` is `None` for a
/// create) and returns `new` with `metadata.managedFields` updated.
///
/// managedFields in `new` follow kube-apiserver's rules for the main resource: absent (or
/// unchanged from `old`) keeps the stored entries; `[]` or `[{}]` clears them; any other list
/// replaces them. For the status subresource the stored entries always win.
pub fn record_update(
    schema: &ObjectSchema,
    old: Option<&Value>,
    new: Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
    now: Time,
) -> Result<Value> {
    let old = old.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let (old, stored) = split_managed_fields(old);
    let (new, sent) = split_managed_fields(new);
    // Stored entries that cannot be read are dropped, as kube-apiserver does, so that a
    // damaged list never blocks writes to the object.
    let decode_stored = || {
        stored
            .as_ref()
            .and_then(|list| ManagedFields::decode(list).ok())
            .unwrap_or_default()
    };
    let mut managed = match (scope, sent) {
        (Scope::Main, Some(sent)) if ManagedFields::is_reset(&sent) => ManagedFields::default(),
        (Scope::Main, Some(sent)) => {
            let sent = ManagedFields::decode(&sent).map_err(ApplyError::InvalidManagedFields)?;
            if sent.entries.is_empty() {
                decode_stored()
            } else {
                sent
            }
        }
        _ => decode_stored(),
    };
    reconcile_with_schema(schema, &mut managed);

    let changes = schema.compare(&old, &new).map(|s| scope.filter(s));
    let changed = changes.modified.union(&changes.added);
    // Every owner loses what changed or disappeared. The writer's own earlier entry is no
    // exception: it gets back below what it owned and what it changed (kube's
    // "current-operation" manager).
    for entry in managed.entries.values_mut() {
        entry.set = entry.set.difference(&changed).difference(&changes.removed);
    }
    let writer = ManagerKey::new(manager, Operation::Update, api_version, scope.subresource());
    let taken = changed.difference(&STRIPPED);
    if !taken.is_empty() {
        let set = match managed.entries.get(&writer) {
            Some(previous) => taken.union(&previous.set),
            None => taken,
        };
        let entry = Entry {
            set,
            api_version: api_version.to_owned(),
            time: Some(now),
        };
        managed.entries.insert(writer, entry);
    }
    managed.drop_empty();
    managed.cap_update_managers();
    Ok(with_managed_fields(new, &managed))
}

/// Validates the applied configuration and returns it as an object.
fn check_config<'a>(req: &ApplyRequest<'a>) -> Result<&'a Map<String, Value>> {
    let invalid = |m: String| ApplyError::InvalidConfig(m);
    if req.manager.is_empty() {
        return Err(invalid(
            "fieldManager is required for apply requests".into(),
        ));
    }
    let Some(config) = req.config.as_object() else {
        return Err(invalid("the apply configuration must be an object".into()));
    };
    let field = |name: &str| {
        config
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let Some(api_version) = field("apiVersion") else {
        return Err(invalid(
            "apiVersion must be set in the apply configuration".into(),
        ));
    };
    let Some(kind) = field("kind") else {
        return Err(invalid(
            "kind must be set in the apply configuration".into(),
        ));
    };
    if api_version != req.api_version {
        return Err(invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {}",
            req.api_version
        )));
    }
    if let Some(gvk) = req.schema.group_version_kind() {
        if gvk.kind != kind {
            return Err(invalid(format!(
                "invalid object type: {api_version}, Kind={kind}"
            )));
        }
    }
    let sent_managed_fields = config.get("metadata").and_then(|m| m.get("managedFields"));
    if sent_managed_fields.is_some_and(|m| !m.is_null()) {
        return Err(invalid("metadata.managedFields must be nil".into()));
    }
    req.schema.validate(req.config).map_err(invalid)?;
    Ok(config)
}

/// What an object that does not exist yet looks like to an apply: its identity only.
fn skeleton(config: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = config.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut meta = Map::new();
    if let Some(config_meta) = config.get("metadata").and_then(Value::as_object) {
        for key in ["name", "namespace"] {
            if let Some(v) = config_meta.get(key) {
                meta.insert(key.into(), v.clone());
            }
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

/// Separates `metadata.managedFields` from the object. The list is `None` when absent or
/// null (Go's nil).
fn split_managed_fields(mut object: Value) -> (Value, Option<Value>) {
    let list = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|meta| meta.shift_remove("managedFields"))
        .filter(|list| !list.is_null());
    (object, list)
}

fn with_managed_fields(mut object: Value, managed: &ManagedFields) -> Value {
    let Some(obj) = object.as_object_mut() else {
        return object;
    };
    match managed.encode() {
        Some(list) => {
            let meta = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("managedFields".into(), list);
            }
        }
        None => {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.shift_remove("managedFields");
            }
        }
    }
    object
}

fn reconcile_with_schema(schema: &ObjectSchema, managed: &mut ManagedFields) {
    for entry in managed.entries.values_mut() {
        if let Some(set) = schema.reconcile(&entry.set) {
            entry.set = set;
        }
    }
}

/// Removes from `merged` what the applier applied last time (`last`) and no longer applies,
/// unless someone (the applier's new configuration included) still owns it. Containers the
/// applier owned go too once nothing owned is left in them. (SMD's `prune`, with its "add
/// back owned" and "add back dangling" passes, for a single version.)
fn prune(schema: &ObjectSchema, merged: Value, managed: &ManagedFields, last: &FieldSet) -> Value {
    if last.is_empty() {
        return merged;
    }
    let ensure = |set: &FieldSet| schema.ensure_named_fields_are_members(set);
    let last = ensure(last);
    let mut owned = managed
        .entries
        .values()
        .fold(FieldSet::new(), |acc, e| acc.union(&e.set));
    // The server's own fields are never in a set but must never be pruned either.
    owned = owned.union(&STRIPPED);
    let owned = ensure(&owned);

    let merged_set = ensure(&schema.field_set(&merged));
    let without_last = schema.remove_items(&merged, &last);
    let without_last_set = ensure(&schema.field_set(&without_last));
    let unowned_gone = merged_set.difference(&without_last_set.union(&owned));
    let pruned = schema.remove_items(&merged, &unowned_gone);
    // Only what the applier itself had applied may go; anything else removed above (fields
    // nobody owns that merely sat in a removed container) comes back.
    let pruned_set = ensure(&schema.field_set(&pruned));
    schema.remove_items(
        &merged,
        &merged_set.difference(&pruned_set).intersection(&last),
    )
}

/// The other managers' side of a write by `writer`: they lose fields that changed (or, for an
/// apply without `force`, those are returned as conflicts and nothing changes) and fields
/// that disappeared. Entries left empty are dropped.
fn take_from_others(
    managed: &mut ManagedFields,
    writer: &ManagerKey,
    changes: &Comparison,
    force: bool,
) -> Vec<Conflict> {
    let changed = changes.modified.union(&changes.added);
    if !force {
        let mut conflicts = Vec::new();
        for (key, entry) in managed.entries.iter().filter(|(k, _)| *k != writer) {
            for path in entry.set.intersection(&changed).leaves().paths() {
                conflicts.push(Conflict {
                    manager: key.manager.clone(),
                    operation: key.operation.as_str().to_owned(),
                    api_version: entry.api_version.clone(),
                    subresource: key.subresource.clone(),
                    field: path.to_string(),
                });
            }
        }
        if !conflicts.is_empty() {
            return conflicts;
        }
    }
    for (key, entry) in managed.entries.iter_mut() {
        if key != writer {
            entry.set = entry.set.difference(&changed).difference(&changes.removed);
        }
    }
    managed.drop_empty();
    Vec::new()
}
