//! Environment admission: namespaced objects live only in an Environment's namespace, and an
//! Environment that still holds objects cannot be deleted.
//!
//! Both rules hold under concurrency without a multi-key lock:
//!
//! ```text
//! create in ns:   read Environment ns (must exist, not terminating) ── create object
//!                 GUARDED on the Environment's mod_revision (one storage transaction)
//! delete env ns:  mark the Environment terminating (its mod_revision changes) ── list the
//!                 namespace ── empty: delete (CAS) │ not empty: unmark, refuse with the holders
//! ```
//! A create racing a delete either commits before the mark (and the list sees it) or fails its
//! guard (the mark changed the revision) and, retried, meets a terminating Environment.

use edgefleet_api::jiff::Timestamp;
use serde_json::Value;

use super::object::{self, set_meta};
use super::{decode_object, encode_object, Registry, Resource, GROUP};
use crate::errors::{ApiError, GroupResource};
use crate::storage::{self, Guard, KeyValue};

/// Holders named in a refusal, per resource.
const HOLDERS_SHOWN: usize = 5;

impl Registry {
    fn environments(&self) -> Result<&Resource, ApiError> {
        self.resource("environments")
            .map(AsRef::as_ref)
            .ok_or_else(|| ApiError::Internal("environments are not registered".into()))
    }

    /// Admits a create in `namespace`; returns the guard the write must hold. The Environment
    /// is read from the watch cache unless `fresh`; the guard makes a stale read harmless.
    pub(crate) async fn admit_create(
        &self,
        resource: &Resource,
        namespace: &str,
        fresh: bool,
    ) -> Result<Option<Guard>, ApiError> {
        if !resource.namespaced() {
            return Ok(None);
        }
        let environments = self.environments()?;
        let key = environments.key("", namespace);
        let cached = if fresh {
            None
        } else {
            environments.cacher().get(&key).0
        };
        let (env_obj, mod_revision) = match cached {
            Some(env) => (
                serde_json::from_slice::<Value>(&env.json)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
                env.mod_revision,
            ),
            // Not in the cache: it may not have caught up with a new Environment yet.
            None => match self.storage().get(&key).await? {
                Some(env) => (decode_object(&env)?, env.mod_revision),
                None => return Err(missing_environment(namespace)),
            },
        };
        if object::is_deleting(&env_obj) {
            return Err(ApiError::Forbidden {
                message: format!(
                    "unable to create new content in namespace {namespace} because its Environment is being deleted"
                ),
                resource: Some(resource.group_resource.clone()),
                name: String::new(),
            });
        }
        Ok(Some(Guard { key, mod_revision }))
    }

    /// Deletes an Environment if its namespace holds nothing; see the module docs.
    pub(crate) async fn delete_environment(
        &self,
        current: &KeyValue,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let environments = self.environments()?;
        let mut env = decode_object(current)?;
        let name = object::name(&env).to_string();
        let was_deleting = object::is_deleting(&env);

        let marked = if was_deleting || dry_run {
            current.clone()
        } else {
            set_meta(
                &mut env,
                "deletionTimestamp",
                object::time_string(Timestamp::now()),
            );
            set_meta(&mut env, "deletionGracePeriodSeconds", 0);
            self.storage()
                .update(&current.key, current.mod_revision, encode_object(&env)?)
                .await
                .map_err(|e| ApiError::from_storage(e, &environments.group_resource, &name))?
        };

        let holders = self.holders(&name).await?;
        if !holders.is_empty() {
            if !was_deleting && !dry_run {
                let mut unmarked = decode_object(&marked)?;
                object::remove_meta(&mut unmarked, "deletionTimestamp");
                object::remove_meta(&mut unmarked, "deletionGracePeriodSeconds");
                // Best effort: if someone changed the Environment meanwhile, their write stands.
                let _ = self
                    .storage()
                    .update(&marked.key, marked.mod_revision, encode_object(&unmarked)?)
                    .await;
            }
            return Err(ApiError::Conflict {
                resource: environments.group_resource.clone(),
                name: name.clone(),
                reason: format!(
                    "the Environment still holds objects in namespace {name:?}: {}; delete them first",
                    holders.join("; ")
                ),
            });
        }
        if dry_run {
            return decode_object(current);
        }
        if !object::finalizers(&decode_object(&marked)?).is_empty() {
            // Finalizers keep it terminating until their owners remove them.
            return decode_object(&marked);
        }
        let deleted = self
            .storage()
            .delete(&marked.key, Some(marked.mod_revision))
            .await
            .map_err(|e| ApiError::from_storage(e, &environments.group_resource, &name))?;
        decode_object(&deleted)
    }

    /// `clusters edge-1, edge-2 (and 3 more)` for every namespaced resource with objects in `ns`.
    async fn holders(&self, ns: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for resource in self.resources().filter(|r| r.namespaced()) {
            let prefix = resource.list_prefix(ns);
            let page = self
                .storage()
                .list(
                    &prefix,
                    storage::ListOptions {
                        limit: HOLDERS_SHOWN,
                        ..Default::default()
                    },
                )
                .await?;
            if page.items.is_empty() {
                continue;
            }
            let names: Vec<&str> = page
                .items
                .iter()
                .map(|kv| kv.key.rsplit('/').next().unwrap_or_default())
                .collect();
            let more = page.remaining.unwrap_or(if page.more { 1 } else { 0 });
            let tail = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            out.push(format!("{} {}{tail}", resource.plural(), names.join(", ")));
        }
        Ok(out)
    }
}

/// The answer to a create in a namespace without an Environment.
pub(crate) fn missing_environment(namespace: &str) -> ApiError {
    ApiError::NotFoundMessage {
        resource: GroupResource::new(GROUP, "environments"),
        name: namespace.into(),
        message: format!(
            "namespace {namespace:?} has no Environment: create Environment {namespace:?} \
             (kind Environment, apiVersion {}) before objects in it",
            edgefleet_api::API_VERSION
        ),
    }
}
