//! Writes: create, update (PUT), patch (JSON, merge, apply), on the object or its `status`.
//!
//! Every write runs the same stages, in kube-apiserver's order:
//!
//! ```text
//! body ─► type meta check ─► structural check (unknown fields, types) ─► merge with the stored
//! object (patch/apply) ─► strategy (reset fields, generation) ─► defaulting ─► managedFields
//! ─► validation (422) ─► admission (environment) ─► storage CAS (409 on a lost race)
//! ```
//!
//! Patches and applies without a `resourceVersion` precondition are retried on conflict against
//! the newer object ([`super::update`], kube's `GuaranteedUpdate`); a PUT carries its
//! precondition and fails fast.

use std::sync::Arc;

use edgefleet_api::jiff::Timestamp;
use edgefleet_api::validation::{ErrorList, FieldError, Path};
use edgefleet_api::API_VERSION;
use rand::Rng;
use serde_json::Value;

use super::cacher::CachedObject;
use super::object::{self, meta_str, set_meta};
use super::update::{Preconditions, Retry};
use super::{decode_object, encode_object, Registry, Resource};
use crate::errors::{ApiError, OBJECT_MODIFIED};
use crate::storage::{KeyValue, StorageError};
use crate::structural;

/// How many generated names a create tries before giving up (kube: 8).
const GENERATE_NAME_ATTEMPTS: usize = 8;
/// Characters of generated name suffixes (kube's: no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const NAME_SUFFIX_LEN: usize = 5;

/// `fieldValidation`: what to do about fields the schema does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Which part of the object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: String,
    pub field_validation: FieldValidation,
    /// Apply only: take over fields other managers own.
    pub force: bool,
}

/// A patch document (server-side apply is not a patch of the stored object: see
/// [`Resource::apply`]).
pub enum Patch {
    Json(json_patch::Patch),
    Merge(Value),
}

/// What a write did.
#[derive(Debug)]
pub struct WriteOutcome {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Arc<CachedObject>,
    pub created: bool,
    /// `Warning` headers for the client.
    pub warnings: Vec<String>,
}

impl Resource {
    /// Checks `apiVersion` and `kind` of a request body.
    fn check_type_meta(&self, obj: &Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the body of the request is not a {} object",
                self.kind()
            )));
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() {
            return Err(ApiError::BadRequest(
                "Object 'Kind' is missing in the request body".into(),
            ));
        }
        if kind != self.kind() || api_version != API_VERSION {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({api_version}) or the kind ({kind}) does not match the \
                 expected {API_VERSION} {}",
                self.kind()
            )));
        }
        Ok(())
    }

    /// The structural check: prunes unknown fields (reporting them as `fieldValidation` says)
    /// and fails with 422 on type errors.
    fn check_structure(
        &self,
        obj: &mut Value,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<Vec<String>, ApiError> {
        let findings = structural::Schema::new(&self.schema, &self.components).check(obj);
        if !findings.errors.is_empty() {
            return Err(self.invalid(name, findings.errors));
        }
        let unknown: Vec<String> = findings
            .unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        match opts.field_validation {
            FieldValidation::Strict if !unknown.is_empty() => Err(ApiError::BadRequest(format!(
                "strict decoding error: {}",
                unknown.join(", ")
            ))),
            FieldValidation::Warn => Ok(unknown),
            _ => Ok(Vec::new()),
        }
    }

    pub(crate) fn invalid(&self, name: &str, errors: ErrorList) -> ApiError {
        ApiError::Invalid {
            kind: self.kind(),
            group: super::GROUP,
            name: name.to_string(),
            errors,
        }
    }

    /// Decode-default-encode, mapping a decode failure to kube's 400.
    fn canonicalize(&self, obj: Value) -> Result<Value, ApiError> {
        self.strategy.canonicalize(obj).map_err(|e| {
            ApiError::BadRequest(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
                kind = self.kind(),
                v = edgefleet_api::VERSION
            ))
        })
    }

    fn validate(&self, obj: &Value, target: Target) -> Result<(), ApiError> {
        let errors = match target {
            Target::Main => self.strategy.validate(obj),
            Target::Status => {
                let mut errors = self.strategy.validate(obj);
                errors.extend(self.strategy.validate_status(obj));
                errors
            }
        };
        if errors.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(object::name(obj), errors))
        }
    }

    /// Fills in namespace and name from the URL, checking what the body says.
    fn bind_identity(
        &self,
        obj: &mut Value,
        namespace: &str,
        url_name: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.namespaced() {
            match meta_str(obj, "namespace") {
                None | Some("") => set_meta(obj, "namespace", namespace),
                Some(ns) if ns != namespace => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request"
                            .into(),
                    ))
                }
                Some(_) => {}
            }
        } else {
            object::remove_meta(obj, "namespace");
        }
        if let Some(url_name) = url_name {
            match meta_str(obj, "name") {
                None | Some("") => set_meta(obj, "name", url_name),
                Some(n) if n != url_name => {
                    return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `POST` to the collection.
    pub async fn create(
        &self,
        registry: &Registry,
        namespace: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_type_meta(&body)?;
        let mut obj = body;
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let warnings = self.check_structure(&mut obj, &name, opts)?;
        self.bind_identity(&mut obj, namespace, None)?;
        let generate = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => None,
            _ => match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => Some(prefix.to_string()),
                _ => {
                    let errors = ErrorList(vec![FieldError::required(
                        &Path::new("metadata").child("name"),
                        "name or generateName is required",
                    )]);
                    return Err(self.invalid("", errors));
                }
            },
        };
        for attempt in 0.. {
            let mut candidate = obj.clone();
            if let Some(prefix) = &generate {
                set_meta(&mut candidate, "name", generated_name(prefix));
            }
            match self
                .create_prepared(registry, namespace, candidate, opts, None)
                .await
            {
                Err(ApiError::AlreadyExists { .. })
                    if generate.is_some() && attempt + 1 < GENERATE_NAME_ATTEMPTS =>
                {
                    continue
                }
                Err(e) => return Err(e),
                Ok(mut outcome) => {
                    outcome.warnings.splice(0..0, warnings);
                    return Ok(outcome);
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Create of a named object whose body passed the checks above (shared with apply).
    async fn create_prepared(
        &self,
        registry: &Registry,
        namespace: &str,
        mut obj: Value,
        opts: &WriteOptions,
        managed: Option<Value>,
    ) -> Result<WriteOutcome, ApiError> {
        let now = Timestamp::now();
        prepare_for_create(&mut obj, now);
        let mut obj = self.canonicalize(obj)?;
        match managed {
            Some(fields) => set_meta(&mut obj, "managedFields", fields),
            None => self.record_update(None, &mut obj, &opts.field_manager, Target::Main, now)?,
        }
        self.validate(&obj, Target::Main)?;
        let name = object::name(&obj).to_string();
        let key = self.key(namespace, &name);
        let bytes = encode_object(&obj)?;
        // Admission reads the Environment from the watch cache; if that view was stale the
        // guard fails, and the second attempt reads storage.
        for fresh in [false, true] {
            let guard = registry.admit_create(self, namespace, fresh).await?;
            if opts.dry_run {
                return Ok(WriteOutcome {
                    object: self.as_cached(&obj)?,
                    created: true,
                    warnings: vec![],
                });
            }
            match self.store.create_guarded(&key, bytes.clone(), guard).await {
                Ok(kv) => {
                    return Ok(WriteOutcome {
                        object: self.cached(&kv)?,
                        created: true,
                        warnings: vec![],
                    })
                }
                Err(StorageError::Conflict { .. } | StorageError::NotFound { .. }) if !fresh => {
                    continue
                }
                Err(e) => return Err(registry.create_failed(e, self, namespace, &name)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// `PUT` of the object or its status. It carries its own precondition (the
    /// `resourceVersion` it was based on, and a `uid` when it names one), so a lost race is a
    /// `409` for the client to resolve, not a retry.
    pub async fn replace(
        &self,
        namespace: &str,
        name: &str,
        target: Target,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        self.check_type_meta(&body)?;
        let mut obj = body;
        let warnings = self.check_structure(&mut obj, name, opts)?;
        self.bind_identity(&mut obj, namespace, Some(name))?;
        let expected = match meta_str(&obj, "resourceVersion").filter(|rv| !rv.is_empty()) {
            Some(rv) => super::read::parse_revision(rv)?,
            None => {
                let errors = ErrorList(vec![FieldError::invalid(
                    &Path::new("metadata").child("resourceVersion"),
                    "0x0",
                    "must be specified for an update",
                )]);
                return Err(self.invalid(name, errors));
            }
        };
        let key = self.key(namespace, name);
        let current = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        // kube takes a uid in the body as a precondition, checked before the revision.
        let preconditions = Preconditions {
            uid: meta_str(&obj, "uid")
                .filter(|uid| !uid.is_empty())
                .map(String::from),
            resource_version: None,
        };
        preconditions.check(self, &decode_object(&current)?, current.mod_revision, name)?;
        if current.mod_revision != expected {
            return Err(self.conflict(name));
        }
        let mut outcome = self.write_update(&current, obj, target, opts, None).await?;
        outcome.warnings.splice(0..0, warnings);
        Ok(outcome)
    }

    /// `PATCH` (JSON or merge patch) of the object or its status, retried on the newer object
    /// when it loses a race, unless the patch names the `resourceVersion` it expects.
    pub async fn patch(
        &self,
        namespace: &str,
        name: &str,
        target: Target,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        let key = self.key(namespace, name);
        let patch = &patch;
        self.guaranteed_update(&key, name, move |current| {
            Box::pin(async move {
                let current = current.ok_or_else(|| self.not_found(name))?;
                let mut doc = self.patched(&current, patch, name)?;
                // The patch's own precondition: a resourceVersion it set (the object read
                // carries the current one, which always matches).
                if let Some(rv) = meta_str(&doc, "resourceVersion").filter(|rv| !rv.is_empty()) {
                    if super::read::parse_revision(rv)? != current.mod_revision {
                        return Err(Retry::Fail(self.conflict(name)));
                    }
                }
                let warnings = self.check_structure(&mut doc, name, opts)?;
                self.bind_identity(&mut doc, namespace, Some(name))?;
                let mut outcome = self.write_update(&current, doc, target, opts, None).await?;
                outcome.warnings.splice(0..0, warnings);
                Ok(outcome)
            })
        })
        .await
    }

    /// The stored object with `patch` applied, checked for what a patch may not do: change the
    /// kind or apiVersion (422, as kube validates a custom resource's type meta) or the name,
    /// including by removing `metadata` (400, kube's name check).
    fn patched(&self, current: &KeyValue, patch: &Patch, name: &str) -> Result<Value, ApiError> {
        let mut doc = decode_object(current)?;
        match patch {
            Patch::Json(p) => json_patch::patch(&mut doc, p).map_err(|e| {
                self.invalid(
                    name,
                    ErrorList(vec![FieldError::invalid(
                        &Path::new(""),
                        Value::Null,
                        e.to_string(),
                    )]),
                )
            })?,
            Patch::Merge(p) => json_patch::merge(&mut doc, p),
        }
        let mut errors = ErrorList::default();
        let kind = doc.get("kind").cloned().unwrap_or_else(|| "".into());
        if kind != self.kind() {
            errors.push(FieldError::invalid(
                &Path::new("kind"),
                kind,
                format!("must be {}", self.kind()),
            ));
        }
        let api_version = doc.get("apiVersion").cloned().unwrap_or_else(|| "".into());
        if api_version != API_VERSION {
            errors.push(FieldError::invalid(
                &Path::new("apiVersion"),
                api_version,
                format!("must be {API_VERSION}"),
            ));
        }
        if !errors.is_empty() {
            return Err(self.invalid(name, errors));
        }
        let patched_name = meta_str(&doc, "name").unwrap_or_default();
        if patched_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({patched_name}) does not match the name on the URL ({name})"
            )));
        }
        Ok(doc)
    }

    /// Server-side apply (`PATCH` with `application/apply-patch+yaml`): merges `config` into the
    /// object (creating it if absent), retried on the newer object when it loses a race.
    pub async fn apply(
        &self,
        registry: &Registry,
        namespace: &str,
        name: &str,
        target: Target,
        mut config: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        if opts.field_manager.is_empty() {
            // kube's PatchOptions validation: controllers must name themselves.
            return Err(ApiError::Invalid {
                kind: "PatchOptions",
                group: "meta.k8s.io",
                name: String::new(),
                errors: ErrorList(vec![FieldError::required(
                    &Path::new("fieldManager"),
                    "is required for apply patch",
                )]),
            });
        }
        self.check_type_meta(&config)?;
        let warnings = self.check_structure(&mut config, name, opts)?;
        self.bind_identity(&mut config, namespace, Some(name))?;
        let key = self.key(namespace, name);
        let config = &config;
        let mut outcome = self
            .guaranteed_update(&key, name, move |current| {
                Box::pin(async move {
                    let live = current.as_ref().map(decode_object).transpose()?;
                    let merged = self.merge_apply(live.as_ref(), config, target, opts)?;
                    let managed = merged
                        .get("metadata")
                        .and_then(|m| m.get("managedFields"))
                        .cloned();
                    match &current {
                        None if target == Target::Status => Err(self.not_found(name).into()),
                        None => {
                            match self
                                .create_prepared(registry, namespace, merged, opts, managed)
                                .await
                            {
                                // Created by someone else since the read: merge into theirs.
                                Err(ApiError::AlreadyExists { .. }) => Err(Retry::Stale),
                                created => Ok(created?),
                            }
                        }
                        Some(current) => Ok(self
                            .write_update(current, merged, target, opts, managed)
                            .await?),
                    }
                })
            })
            .await?;
        outcome.warnings.splice(0..0, warnings);
        Ok(outcome)
    }

    /// Turns `candidate` into the next version of `current` and writes it (CAS on `current`).
    async fn write_update(
        &self,
        current: &KeyValue,
        candidate: Value,
        target: Target,
        opts: &WriteOptions,
        managed: Option<Value>,
    ) -> Result<WriteOutcome, ApiError> {
        let old = decode_object(current)?;
        let now = Timestamp::now();
        if target == Target::Main {
            check_uid_unchanged(&old, &candidate, self)?;
        }
        let mut new = prepare_for_update(&old, candidate, target)?;
        new = self.canonicalize(new)?;
        if target == Target::Main && old.get("spec") != new.get("spec") {
            let generation = object::meta_i64(&old, "generation").unwrap_or(0);
            set_meta(&mut new, "generation", generation + 1);
        }
        match managed {
            Some(fields) => set_meta(&mut new, "managedFields", fields),
            None => self.record_update(Some(&old), &mut new, &opts.field_manager, target, now)?,
        }
        self.validate(&new, target)?;
        check_finalizers(&old, &new, self, object::name(&old))?;

        let unchanged = strip_rv(&old) == strip_rv(&new);
        if unchanged {
            return Ok(WriteOutcome {
                object: self.cached(current)?,
                created: false,
                warnings: vec![],
            });
        }
        // Encoding checks the stored size, so a dry run answers as the write would.
        let encoded = encode_object(&new)?;
        if opts.dry_run {
            return Ok(WriteOutcome {
                object: self.as_cached(&new)?,
                created: false,
                warnings: vec![],
            });
        }
        let name = object::name(&old).to_string();
        // Removing the last finalizer of an object being deleted completes the deletion.
        if object::is_deleting(&new) && object::finalizers(&new).is_empty() {
            let deleted = self
                .store
                .delete(&current.key, Some(current.mod_revision))
                .await
                .map_err(|e| ApiError::from_storage(e, &self.group_resource, &name))?;
            let mut gone = new;
            set_meta(
                &mut gone,
                "resourceVersion",
                deleted.mod_revision.to_string(),
            );
            return Ok(WriteOutcome {
                object: self.as_cached(&gone)?,
                created: false,
                warnings: vec![],
            });
        }
        let kv = self
            .store
            .update(&current.key, current.mod_revision, encoded)
            .await
            .map_err(|e| ApiError::from_storage(e, &self.group_resource, &name))?;
        Ok(WriteOutcome {
            object: self.cached(&kv)?,
            created: false,
            warnings: vec![],
        })
    }

    /// kube's `409` for a write that lost to a concurrent one.
    pub(super) fn conflict(&self, name: &str) -> ApiError {
        ApiError::Conflict {
            resource: self.group_resource.clone(),
            name: name.into(),
            reason: OBJECT_MODIFIED.into(),
        }
    }
}

impl Registry {
    /// Maps a failed create, naming the object.
    fn create_failed(
        &self,
        err: StorageError,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> ApiError {
        match err {
            // The Environment changed between admission and the write: re-run admission.
            StorageError::Conflict { .. } => ApiError::Conflict {
                resource: resource.group_resource.clone(),
                name: name.into(),
                reason: format!("the Environment {namespace:?} changed while the object was being created; try again"),
            },
            // The guard key vanished: the Environment was deleted meanwhile.
            StorageError::NotFound { .. } => super::admission::missing_environment(namespace),
            other => ApiError::from_storage(other, &resource.group_resource, name),
        }
    }
}

/// Server-owned metadata of a new object; status is never set by a create.
fn prepare_for_create(obj: &mut Value, now: Timestamp) {
    if let Value::Object(map) = obj {
        map.remove("status");
    }
    let meta = object::meta_mut(obj);
    for field in [
        "resourceVersion",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(field);
    }
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert("creationTimestamp".into(), object::time_string(now).into());
    meta.insert("generation".into(), 1.into());
}

/// Resets what this write may not change: for the object, its status and the server-owned
/// metadata; for `/status`, everything but the status (and managedFields).
fn prepare_for_update(old: &Value, candidate: Value, target: Target) -> Result<Value, ApiError> {
    let mut new = match target {
        Target::Main => {
            let mut new = candidate;
            if let Value::Object(map) = &mut new {
                match old.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            new
        }
        Target::Status => {
            let mut new = old.clone();
            if let Value::Object(map) = &mut new {
                match candidate.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            if let Some(fields) = candidate
                .get("metadata")
                .and_then(|m| m.get("managedFields"))
            {
                set_meta(&mut new, "managedFields", fields.clone());
            }
            new
        }
    };
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = object::meta_mut(&mut new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    Ok(new)
}

/// A write through the object may leave `metadata.uid` out (the stored one is kept) but not
/// change it: kube's `ValidateObjectMetaUpdate` answers `field is immutable`.
fn check_uid_unchanged(
    old: &Value,
    candidate: &Value,
    resource: &Resource,
) -> Result<(), ApiError> {
    let have = meta_str(old, "uid").unwrap_or_default();
    match meta_str(candidate, "uid") {
        Some(uid) if !uid.is_empty() && uid != have => {
            let errors = ErrorList(vec![FieldError::invalid(
                &Path::new("metadata").child("uid"),
                uid,
                "field is immutable",
            )]);
            Err(resource.invalid(object::name(old), errors))
        }
        _ => Ok(()),
    }
}

/// No finalizer may be added to an object that is being deleted.
fn check_finalizers(
    old: &Value,
    new: &Value,
    resource: &Resource,
    name: &str,
) -> Result<(), ApiError> {
    if !object::is_deleting(old) {
        return Ok(());
    }
    let before = object::finalizers(old);
    let added: Vec<String> = object::finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let errors = ErrorList(vec![FieldError::forbidden(
        &Path::new("metadata").child("finalizers"),
        format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
    )]);
    Err(resource.invalid(name, errors))
}

fn strip_rv(obj: &Value) -> Value {
    let mut obj = obj.clone();
    object::remove_meta(&mut obj, "resourceVersion");
    obj
}

/// `prefix` plus five random characters, as kube generates names.
fn generated_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..NAME_SUFFIX_LEN)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    // Keep the result a valid name length (kube truncates the prefix the same way).
    let max_prefix = 63 - NAME_SUFFIX_LEN;
    let prefix: String = prefix.chars().take(max_prefix).collect();
    format!("{prefix}{suffix}")
}
