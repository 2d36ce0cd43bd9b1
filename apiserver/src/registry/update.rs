//! Guaranteed update: kube's `GuaranteedUpdate`, the one read-modify-write loop of the registry.
//!
//! Patches, server-side applies and deletes read the object, decide on what they read, and
//! write with a compare-and-swap on the revision they read. When another write lands in
//! between, the swap fails; the write is then run again on the newer object, as often as it
//! takes, so that a request without a precondition of its own never fails for contention:
//!
//! ```text
//!   ┌─► read the object (absent: None) ──► attempt ──► Ok ─────────────────► done
//!   │                                        ├──────► Fail(error) ─────────► the error
//!   └──────────────── Stale ◄────────────────┘  (the swap lost to a concurrent write)
//! ```
//!
//! An attempt reports `Stale` only for a lost swap (a `409 Conflict` whose reason is
//! [`OBJECT_MODIFIED`], or a create that found the object created meanwhile). A precondition
//! the client stated (a `resourceVersion` in the patch, `preconditions` of a delete) is checked
//! by the attempt against the object it read and fails with the error as it is, so it is never
//! retried. A PUT carries its precondition and does not come here.
//!
//! kube retries until the request times out; [`GUARANTEED_UPDATE_TIMEOUT`] is that bound here.
//! Each round of contending writers has a winner, so `n` writers racing for one object all
//! finish within `n` rounds.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use serde_json::Value;

use super::{object, Resource};
use crate::errors::{ApiError, OBJECT_MODIFIED};
use crate::storage::{KeyValue, Revision};

/// How long a write without a precondition keeps retrying lost compare-and-swaps (kube bounds
/// it by the request timeout, 34 s for a patch).
pub const GUARANTEED_UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an attempt did not finish.
#[derive(Debug)]
pub(super) enum Retry {
    /// The object changed between the read and the write: read it again, attempt again.
    Stale,
    /// Give up with this error.
    Fail(ApiError),
}

impl From<ApiError> for Retry {
    /// A lost compare-and-swap is `Stale`; every other error fails the write.
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Conflict { ref reason, .. } if reason == OBJECT_MODIFIED => Retry::Stale,
            other => Retry::Fail(other),
        }
    }
}

impl Resource {
    /// Runs `attempt` on the current value of `key` (`None` when absent) until it finishes or
    /// fails; see the module docs.
    pub(super) async fn guaranteed_update<'a, T>(
        &self,
        key: &str,
        name: &str,
        mut attempt: impl FnMut(Option<KeyValue>) -> BoxFuture<'a, Result<T, Retry>>,
    ) -> Result<T, ApiError> {
        let deadline = Instant::now() + GUARANTEED_UPDATE_TIMEOUT;
        loop {
            let current = self.store.get(key).await?;
            match attempt(current).await {
                Ok(done) => return Ok(done),
                Err(Retry::Fail(err)) => return Err(err),
                Err(Retry::Stale) if Instant::now() < deadline => {}
                Err(Retry::Stale) => return Err(self.conflict(name)),
            }
        }
    }
}

/// `metav1.Preconditions`: what the object must be for a write to apply (a delete's
/// `preconditions`, the `uid` of a PUT's body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// `409 Conflict` naming the first precondition `obj` (stored at `revision`) fails, in
    /// kube's words.
    pub(super) fn check(
        &self,
        resource: &Resource,
        obj: &Value,
        revision: Revision,
        name: &str,
    ) -> Result<(), ApiError> {
        let failed = |what: &str, want: &str, have: &str| ApiError::Conflict {
            resource: resource.group_resource.clone(),
            name: name.into(),
            reason: format!(
                "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
            ),
        };
        if let Some(uid) = &self.uid {
            let have = object::meta_str(obj, "uid").unwrap_or_default();
            if uid != have {
                return Err(failed("UID", uid, have));
            }
        }
        if let Some(rv) = &self.resource_version {
            if *rv != revision.to_string() {
                return Err(failed("ResourceVersion", rv, &revision.to_string()));
            }
        }
        Ok(())
    }
}
