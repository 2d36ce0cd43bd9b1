//! The aggregated statuses' writer: by exception, coalesced, rate-limited per object.
//!
//! ```text
//!   controllers ──submit(object, patch)──► pending: object → latest patch (older ones dropped)
//!                                              │ due = last write + AGGREGATE_MIN_INTERVAL
//!                                              ▼
//!                                 PATCH …/status (merge), at most WRITE_CONCURRENCY at once
//! ```
//!
//! Callers submit only statuses that differ from the stored one; the writer also drops a patch
//! equal to the last it wrote for that object (the cache may not have caught up with that write
//! yet). So a converged fleet costs no write at all, and one object changing many times a
//! second is written at most once per [`AGGREGATE_MIN_INTERVAL`], with its latest status.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::errors::ApiError;
use crate::registry::{Patch, Registry, Target, WriteOptions};

/// The field manager of the controllers' status writes.
pub const FIELD_MANAGER: &str = "edgefleet-controllers";
/// Least time between two status writes of one aggregated object.
pub const AGGREGATE_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Status writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;
/// Pause before retrying a failed write.
const WRITE_RETRY: Duration = Duration::from_secs(2);

/// Which object: `(plural, namespace, name)`.
pub type StatusKey = (&'static str, String, String);

/// Submits statuses. Cheap to clone.
#[derive(Clone)]
pub struct StatusWriterHandle {
    tx: mpsc::UnboundedSender<(StatusKey, Value)>,
}

impl StatusWriterHandle {
    /// Writes `patch` (a merge patch of the status object) to `key`'s status, soon.
    pub fn submit(&self, key: StatusKey, patch: Value) {
        let _ = self.tx.send((key, patch));
    }
}

/// The writer task.
pub struct StatusWriter {
    registry: Registry,
    rx: mpsc::UnboundedReceiver<(StatusKey, Value)>,
}

impl StatusWriter {
    pub fn new(registry: Registry) -> (StatusWriter, StatusWriterHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        (StatusWriter { registry, rx }, StatusWriterHandle { tx })
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let mut pending: HashMap<StatusKey, Value> = HashMap::new();
        let mut due: BTreeSet<(Instant, StatusKey)> = BTreeSet::new();
        let mut last_write: HashMap<StatusKey, (Instant, Value)> = HashMap::new();
        let mut writing: JoinSet<(StatusKey, Value, Result<(), ApiError>)> = JoinSet::new();
        let permits = Arc::new(Semaphore::new(WRITE_CONCURRENCY));
        loop {
            let next = due.first().map(|(at, _)| *at);
            tokio::select! {
                () = stop.cancelled() => return,
                item = self.rx.recv() => {
                    let Some((key, patch)) = item else { return };
                    if last_write.get(&key).is_some_and(|(_, v)| *v == patch) {
                        pending.remove(&key);
                        continue;
                    }
                    let at = last_write
                        .get(&key)
                        .map_or_else(Instant::now, |(t, _)| *t + AGGREGATE_MIN_INTERVAL);
                    if pending.insert(key.clone(), patch).is_none() {
                        due.insert((at, key));
                    }
                }
                Some(done) = writing.join_next(), if !writing.is_empty() => {
                    let Ok((key, patch, result)) = done else { continue };
                    match result {
                        Ok(()) | Err(ApiError::NotFound { .. }) => {}
                        Err(err) => {
                            tracing::warn!(resource = key.0, namespace = %key.1, name = %key.2, %err, "writing status failed; retrying");
                            last_write.remove(&key);
                            if !pending.contains_key(&key) {
                                pending.insert(key.clone(), patch);
                                due.insert((Instant::now() + WRITE_RETRY, key));
                            }
                        }
                    }
                }
                () = sleep_until(next) => {
                    let now = Instant::now();
                    while let Some((at, key)) = due.first().cloned() {
                        if at > now {
                            break;
                        }
                        due.pop_first();
                        let Some(patch) = pending.remove(&key) else { continue };
                        last_write.insert(key.clone(), (now, patch.clone()));
                        let registry = self.registry.clone();
                        let permits = permits.clone();
                        writing.spawn(async move {
                            let _permit = permits.acquire_owned().await;
                            let result = write(&registry, &key, patch.clone()).await;
                            (key, patch, result)
                        });
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write(registry: &Registry, key: &StatusKey, patch: Value) -> Result<(), ApiError> {
    let (plural, namespace, name) = key;
    let resource = registry.resource(plural).ok_or(ApiError::NoSuchPath)?;
    let opts = WriteOptions {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    let mut body = Map::new();
    body.insert("status".into(), patch);
    resource
        .patch(
            namespace,
            name,
            Target::Status,
            Patch::Merge(Value::Object(body)),
            &opts,
        )
        .await
        .map(|_| ())
}

/// The merge patch (RFC 7386) that turns `old` into `new`: changed members as they are now,
/// members gone as `null`, objects recursively; `None` when nothing changed.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, v) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (o, n) if o == n => None,
        (_, n) => Some(n.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_diff_removes_what_is_gone_and_keeps_what_is_unchanged_out() {
        let old = json!({"total": 3, "clusters": [{"name": "a"}], "conditions": [1], "x": {"y": 1, "z": 2}});
        let new = json!({"total": 3, "conditions": [2], "x": {"y": 1}});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"clusters": null, "conditions": [2], "x": {"z": null}}))
        );
        assert_eq!(merge_diff(&new, &new), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
            proptest::collection::vec(any::<u8>().prop_map(Value::from), 0..3)
                .prop_map(Value::Array),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        /// Applying the diff as a merge patch gives the new object (for objects without nulls,
        /// which statuses never hold).
        #[test]
        fn applying_the_diff_gives_the_new_status(
            old in proptest::collection::btree_map("[a-c]", json_value(), 0..4),
            new in proptest::collection::btree_map("[a-c]", json_value(), 0..4),
        ) {
            let old = Value::Object(old.into_iter().collect());
            let new = Value::Object(new.into_iter().collect());
            let mut patched = old.clone();
            if let Some(diff) = merge_diff(&old, &new) {
                json_patch::merge(&mut patched, &diff);
            }
            prop_assert_eq!(patched, new);
        }
    }
}
