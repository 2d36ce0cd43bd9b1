//! managedFields: who owns which fields, and server-side apply.
//!
//! Placeholder until the apply engine lands: updates record nothing and apply is refused.

use edgefleet_api::jiff::Timestamp;
use serde_json::Value;

use super::write::{Target, WriteOptions};
use super::Resource;
use crate::errors::ApiError;

impl Resource {
    /// Records an Update operation by `manager` turning `old` into `new`.
    pub(crate) fn record_update(
        &self,
        _old: Option<&Value>,
        _new: &mut Value,
        _manager: &str,
        _target: Target,
        _now: Timestamp,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Merges an applied configuration into the live object.
    pub(crate) fn merge_apply(
        &self,
        _live: Option<&Value>,
        _config: &Value,
        _target: Target,
        _opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Err(ApiError::UnsupportedMediaType(
            "server-side apply is not available yet".into(),
        ))
    }
}
