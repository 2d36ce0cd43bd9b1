//! Credentials over time: revocation when a Cluster is deleted, rotation before certificates
//! expire.
//!
//! - **Revocation**: the clusters' watch cache is followed; a deleted Cluster's session is
//!   closed and its certificates forgotten, so the agent's next connection is refused. Setting
//!   the annotation `edgefleet.io/rotate-credentials` (any value, e.g. a date) does the same for
//!   a Cluster that stays: its agent enrolls again with a new bootstrap token.
//! - **Rotation**: every [`ROTATION_CHECK_INTERVAL`], each session whose certificate has less
//!   than a third of [`AGENT_CERTIFICATE_VALIDITY`] left gets a new one over its tunnel.

use std::sync::Arc;
use std::time::Duration;

use edgefleet_api::agent::agent_identity;
use edgefleet_api::jiff::Timestamp;
use edgefleet_tunnel::SessionRegistry;

use super::admission::HubAdmission;
use super::credentials::Credentials;
use super::AGENT_CERTIFICATE_VALIDITY;
use crate::registry::cacher::CacheError;
use crate::registry::Registry;
use crate::storage::EventKind;
use crate::tasks::Tasks;

/// How often certificates are checked for rotation.
pub const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

pub(super) fn spawn(
    tasks: &Tasks,
    registry: Registry,
    sessions: SessionRegistry,
    credentials: Credentials,
    admission: Arc<HubAdmission>,
) {
    tasks.spawn(revoke_deleted(registry, sessions.clone(), credentials));
    tasks.spawn(rotate(tasks.clone(), sessions, admission));
}

async fn revoke_deleted(registry: Registry, sessions: SessionRegistry, credentials: Credentials) {
    let Some(clusters) = registry.resource("clusters").cloned() else {
        return;
    };
    let cacher = clusters.cacher().clone();
    let mut changed = cacher.subscribe();
    while !cacher.is_ready() {
        if changed.changed().await.is_err() {
            return;
        }
    }
    let mut position = cacher.revision();
    loop {
        match cacher.events_after(position) {
            Ok((events, _)) if events.is_empty() => {
                if changed.changed().await.is_err() {
                    return;
                }
            }
            Ok((events, _)) => {
                for event in events {
                    position = event.revision;
                    let why = match event.kind {
                        EventKind::Deleted => Some("cluster deleted"),
                        EventKind::Updated if rotation_requested(&event) => {
                            Some("credentials rotated")
                        }
                        _ => None,
                    };
                    if let Some(why) = why {
                        let (namespace, name) = (&event.object.namespace, &event.object.name);
                        let identity = agent_identity(namespace, name);
                        if let Err(err) = credentials.revoke(namespace, name).await {
                            tracing::warn!(%identity, %err, "revoking certificates failed");
                        }
                        if sessions.close(&identity) {
                            tracing::info!(%identity, why, "tunnel closed, certificates revoked");
                        }
                    }
                }
            }
            Err(CacheError::TooOld { .. } | CacheError::TooNew { .. }) => {
                // The cache moved past us: close sessions whose Cluster is gone, and go on.
                let snapshot = cacher.snapshot(&clusters.key_prefix);
                let existing: std::collections::HashSet<String> = snapshot
                    .objects
                    .iter()
                    .map(|o| agent_identity(&o.namespace, &o.name))
                    .collect();
                for session in sessions.sessions() {
                    if !existing.contains(session.identity()) {
                        sessions.close(session.identity());
                    }
                }
                position = snapshot.revision;
            }
        }
    }
}

/// Setting (or changing) this annotation on a Cluster revokes its agent's certificates and
/// closes its tunnel; the agent must enroll again with a new bootstrap token.
pub const ROTATE_CREDENTIALS_ANNOTATION: &str = "edgefleet.io/rotate-credentials";

fn annotation(obj: &crate::registry::cacher::CachedObject) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&obj.json).ok()?;
    value["metadata"]["annotations"][ROTATE_CREDENTIALS_ANNOTATION]
        .as_str()
        .map(String::from)
}

/// Whether an update set or changed [`ROTATE_CREDENTIALS_ANNOTATION`].
fn rotation_requested(event: &crate::registry::cacher::CachedEvent) -> bool {
    let now = annotation(&event.object);
    now.is_some() && event.prev.as_ref().and_then(|p| annotation(p)) != now
}

async fn rotate(tasks: Tasks, sessions: SessionRegistry, admission: Arc<HubAdmission>) {
    let mut tick = tokio::time::interval(ROTATION_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let threshold = AGENT_CERTIFICATE_VALIDITY / 3;
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        for session in sessions.sessions() {
            let due = admission
                .presented
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(session.identity())
                .is_some_and(|p| {
                    p.not_after.duration_since(now).unsigned_abs() < threshold || p.not_after < now
                });
            if due {
                let admission = admission.clone();
                tasks.spawn(async move {
                    match session.rotate_certificate(&*admission).await {
                        Ok(()) => {
                            tracing::info!(identity = %session.identity(), "agent certificate rotated")
                        }
                        Err(err) => {
                            tracing::warn!(identity = %session.identity(), %err, "rotating an agent certificate failed")
                        }
                    }
                });
            }
        }
    }
}
