//! Deletes: of one object (honouring preconditions and finalizers) and of a collection.
//!
//! An object with finalizers is not removed: its `deletionTimestamp` is set and it stays until
//! the finalizers are gone (the update that removes the last one completes the deletion).

use std::sync::Arc;

use edgefleet_api::jiff::Timestamp;
use serde_json::Value;

use super::cacher::CachedObject;
use super::object::{self, set_meta};
use super::read::ListOptions;
use super::{decode_object, encode_object, Registry, Resource};
use crate::errors::ApiError;

/// A lost compare-and-swap is retried this many times.
const MAX_CONFLICT_RETRIES: usize = 16;

/// `metav1.DeleteOptions`, as far as this server acts on them.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

impl Resource {
    /// Deletes `name`; returns the object as it was last (or as it now is, terminating).
    pub async fn delete(
        &self,
        registry: &Registry,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Arc<CachedObject>, ApiError> {
        let key = self.key(namespace, name);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| self.not_found(name))?;
            let obj = decode_object(&current)?;
            self.check_preconditions(&obj, current.mod_revision, opts, name)?;

            let result = if self.plural() == "environments" {
                registry.delete_environment(&current, opts.dry_run).await
            } else if !object::finalizers(&obj).is_empty() {
                self.mark_deleting(&current, obj, opts.dry_run).await
            } else if opts.dry_run {
                Ok(obj)
            } else {
                self.store
                    .delete(&key, Some(current.mod_revision))
                    .await
                    .map_err(|e| ApiError::from_storage(e, &self.group_resource, name))
                    .and_then(|kv| decode_object(&kv))
            };
            match result {
                Err(ApiError::Conflict { reason, .. })
                    if reason == crate::errors::OBJECT_MODIFIED =>
                {
                    continue
                }
                Err(e) => return Err(e),
                Ok(obj) => return self.as_cached(&obj),
            }
        }
        Err(ApiError::Conflict {
            resource: self.group_resource.clone(),
            name: name.into(),
            reason: crate::errors::OBJECT_MODIFIED.into(),
        })
    }

    /// Deletes every object of the list; returns those deleted or terminating.
    pub async fn delete_collection(
        &self,
        registry: &Registry,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Arc<CachedObject>>, ApiError> {
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

    fn check_preconditions(
        &self,
        obj: &Value,
        revision: i64,
        opts: &DeleteOptions,
        name: &str,
    ) -> Result<(), ApiError> {
        let failed = |what: &str, want: &str, have: &str| {
            ApiError::Conflict {
            resource: self.group_resource.clone(),
            name: name.into(),
            reason: format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"),
        }
        };
        if let Some(uid) = &opts.precondition_uid {
            let have = object::meta_str(obj, "uid").unwrap_or_default();
            if uid != have {
                return Err(failed("UID", uid, have));
            }
        }
        if let Some(rv) = &opts.precondition_resource_version {
            if *rv != revision.to_string() {
                return Err(failed("ResourceVersion", rv, &revision.to_string()));
            }
        }
        Ok(())
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
