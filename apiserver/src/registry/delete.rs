//! Deletes: of one object (honouring preconditions and finalizers) and of a collection.
//!
//! An object with finalizers is not removed: its `deletionTimestamp` is set and it stays until
//! the finalizers are gone (the update that removes the last one completes the deletion).

use std::sync::Arc;

use edgefleet_api::jiff::Timestamp;
use edgefleet_api::validation::{ErrorList, FieldError, Path};
use serde_json::Value;

use super::cacher::CachedObject;
use super::object::{self, set_meta};
use super::read::ListOptions;
use super::update::Preconditions;
use super::{decode_object, encode_object, Registry, Resource};
use crate::errors::ApiError;

/// `propagationPolicy` values kube accepts.
const PROPAGATION_POLICIES: &[&str] = &["Foreground", "Background", "Orphan"];

/// `metav1.DeleteOptions`. Nothing here owns dependents (no kind sets `ownerReferences` for
/// garbage collection), so `propagationPolicy`, `orphanDependents` and `gracePeriodSeconds`
/// change nothing; they are still validated as kube validates them, so that a mistyped option
/// is refused rather than silently taken for another.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub preconditions: Preconditions,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    /// kube's `ValidateDeleteOptions`: `422` for an unknown propagation policy, or one given
    /// together with the deprecated `orphanDependents`.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut errors = ErrorList::default();
        let path = Path::new("propagationPolicy");
        if let Some(policy) = &self.propagation_policy {
            if self.orphan_dependents.is_some() {
                errors.push(FieldError::invalid(
                    &path,
                    policy.as_str(),
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            if !PROPAGATION_POLICIES.contains(&policy.as_str()) {
                let mut supported = PROPAGATION_POLICIES.to_vec();
                supported.push("nil");
                errors.push(FieldError::not_supported(
                    &path,
                    policy.as_str(),
                    &supported,
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(invalid_delete_options(errors))
        }
    }
}

/// `422 DeleteOptions.meta.k8s.io "" is invalid: …`, as kube answers options it refuses.
pub fn invalid_delete_options(errors: ErrorList) -> ApiError {
    ApiError::Invalid {
        kind: "DeleteOptions",
        group: "meta.k8s.io",
        name: String::new(),
        errors,
    }
}

impl Resource {
    /// Deletes `name`; returns the object as it was last (or as it now is, terminating). A
    /// lost race is retried on the newer object ([`super::update`]); preconditions that no
    /// longer hold are a `409`.
    pub async fn delete(
        &self,
        registry: &Registry,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Arc<CachedObject>, ApiError> {
        opts.validate()?;
        let key = self.key(namespace, name);
        let key = &key;
        let obj = self
            .guaranteed_update(key, name, move |current| {
                Box::pin(async move {
                    let current = current.ok_or_else(|| self.not_found(name))?;
                    let obj = decode_object(&current)?;
                    opts.preconditions
                        .check(self, &obj, current.mod_revision, name)?;
                    let deleted = if self.plural() == "environments" {
                        registry.delete_environment(&current, opts.dry_run).await?
                    } else if !object::finalizers(&obj).is_empty() {
                        self.mark_deleting(&current, obj, opts.dry_run).await?
                    } else if opts.dry_run {
                        obj
                    } else {
                        let kv = self
                            .store
                            .delete(key, Some(current.mod_revision))
                            .await
                            .map_err(|e| ApiError::from_storage(e, &self.group_resource, name))?;
                        decode_object(&kv)?
                    };
                    Ok(deleted)
                })
            })
            .await?;
        self.as_cached(&obj)
    }

    /// Deletes every object of the list; returns those deleted or terminating.
    pub async fn delete_collection(
        &self,
        registry: &Registry,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Arc<CachedObject>>, ApiError> {
        opts.validate()?;
        let mut done = Vec::new();
        let mut page = ListOptions {
            limit: 500,
            ..list.clone()
        };
        loop {
            let result = self.list(&page).await?;
            for obj in &result.items {
                match self.delete(registry, &obj.namespace, &obj.name, opts).await {
                    Ok(deleted) => done.push(deleted),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match result.continue_token {
                Some(token) => page.continue_token = Some(token),
                None => return Ok(done),
            }
        }
    }

    /// Sets `deletionTimestamp` once; the finalizers' owners finish the deletion.
    async fn mark_deleting(
        &self,
        current: &crate::storage::KeyValue,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if object::is_deleting(&obj) {
            return Ok(obj);
        }
        set_meta(
            &mut obj,
            "deletionTimestamp",
            object::time_string(Timestamp::now()),
        );
        set_meta(&mut obj, "deletionGracePeriodSeconds", 0);
        if dry_run {
            return Ok(obj);
        }
        let kv = self
            .store
            .update(&current.key, current.mod_revision, encode_object(&obj)?)
            .await
            .map_err(|e| ApiError::from_storage(e, &self.group_resource, object::name(&obj)))?;
        decode_object(&kv)
    }
}
