//! managedFields: who owns which fields (every write), and server-side apply, through the
//! [`edgefleet_apimachinery::apply`] engine with the kind's compiled schema.

use edgefleet_api::jiff::Timestamp;
use edgefleet_api::API_VERSION;
use edgefleet_apimachinery::apply::{self, ApplyError, ApplyRequest, Scope};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::object;
use super::write::{Target, WriteOptions};
use super::Resource;
use crate::errors::ApiError;

fn scope(target: Target) -> Scope {
    match target {
        Target::Main => Scope::Main,
        Target::Status => Scope::Status,
    }
}

impl Resource {
    /// Records an Update operation by `manager` turning `old` (none for a create) into `new`.
    pub(crate) fn record_update(
        &self,
        old: Option<&Value>,
        new: &mut Value,
        manager: &str,
        target: Target,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let recorded = apply::record_update(
            &self.object_schema,
            old,
            new.take(),
            manager,
            scope(target),
            API_VERSION,
            Time(now),
        )
        .map_err(|e| self.apply_error(object::name(old.unwrap_or(&Value::Null)), e))?;
        *new = recorded;
        Ok(())
    }

    /// Merges an applied configuration into the live object (none: the apply creates it).
    pub(crate) fn merge_apply(
        &self,
        live: Option<&Value>,
        config: &Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        apply::apply(ApplyRequest {
            schema: &self.object_schema,
            live,
            config,
            manager: &opts.field_manager,
            force: opts.force,
            scope: scope(target),
            api_version: API_VERSION,
            now: Time(Timestamp::now()),
        })
        .map_err(|e| self.apply_error(object::name(config), e))
    }

    fn apply_error(&self, name: &str, err: ApplyError) -> ApiError {
        match err {
            ApplyError::Conflicts(conflicts) => ApiError::ApplyConflict {
                resource: self.group_resource.clone(),
                name: name.to_string(),
                message: ApplyError::Conflicts(conflicts.clone()).message(),
                fields: conflicts
                    .iter()
                    .map(|c| (c.field.clone(), c.cause_message()))
                    .collect(),
            },
            ApplyError::InvalidConfig(message) => ApiError::BadRequest(message),
            ApplyError::InvalidManagedFields(message) => {
                ApiError::BadRequest(format!("invalid metadata.managedFields: {message}"))
            }
        }
    }
}
