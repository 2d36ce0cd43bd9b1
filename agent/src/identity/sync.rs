//! Copies the tunnel's `identity.pem` to the Secret whenever it changes.
//!
//! The tunnel writes the file itself (atomically: temporary file, then rename) on enrollment
//! and on each rotation over the tunnel, and tells nobody. Enrollment is always followed by
//! [`AgentStatus::Connected`] (the enrolling connection is kept as the session), so a status
//! change triggers a look at once; a rotation changes no status, so the file is also looked at
//! every poll interval. A look reads a few kilobytes and compares them with what the Secret is
//! known to hold; only a difference costs a request to kube-apiserver.
//!
//! ```text
//!   Check { failures } ── the file differs from what the Secret holds ──► Write { failures }
//!     ▲      │ same, or no file yet                                saved │      │ failed
//!     │      ▼                                                           │      ▼
//!     │    Idle ── the tunnel's status changed, or the poll interval ─┐  │   Retry { failures }
//!     │                                                               │  │     wait min(CAP, BASE·2ⁿ),
//!     └───────────────────────────────────────────────────────────────┴──┴──── then failures + 1
//! ```
//!
//! Nothing ends the loop but dropping it; a failure is logged (never with the key) and retried,
//! and the tunnel carries on meanwhile: the Secret only matters for the next restart.

use std::path::PathBuf;
use std::time::Duration;

use edgefleet_tunnel::{error_chain, AgentStatus};
use tokio::sync::watch;

use super::secret::{Saved, Secrets};

use crate::timeouts::{IDENTITY_SECRET_RETRY_BASE, IDENTITY_SECRET_RETRY_CAP};

/// Keeps the Secret equal to the working copy of `identity.pem`.
#[derive(Debug)]
pub struct SecretSync {
    secrets: Secrets,
    file: PathBuf,
    /// What the Secret is known to hold (`None`: no identity, or not known).
    synced: Option<Vec<u8>>,
    poll_interval: Duration,
}

enum State {
    /// Read the file and compare. `failures` writes have failed in a row.
    Check { failures: u32 },
    /// Write these bytes to the Secret.
    Write { failures: u32, pem: Vec<u8> },
    /// Wait, then check again.
    Retry { failures: u32 },
    /// Nothing to do until the tunnel's status changes or the poll interval passes.
    Idle,
}

impl SecretSync {
    /// Syncs `file` to the Secret behind `secrets`, which holds `synced` now.
    pub fn new(
        secrets: Secrets,
        file: PathBuf,
        synced: Option<Vec<u8>>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            secrets,
            file,
            synced,
            poll_interval,
        }
    }

    /// Runs until the future is dropped, looking at the file whenever `status` changes.
    pub async fn run(mut self, mut status: watch::Receiver<AgentStatus>) {
        let mut tunnel_running = true;
        let mut state = State::Check { failures: 0 };
        loop {
            state = match state {
                State::Check { failures } => self.check(failures).await,
                State::Write { failures, pem } => match self.secrets.save(&pem).await {
                    Ok(saved) => {
                        log_saved(&self.secrets, &saved);
                        self.synced = Some(pem);
                        State::Check { failures: 0 }
                    }
                    Err(error) => {
                        tracing::warn!(
                            failures,
                            "saving the agent's identity to its Secret failed: {}",
                            error_chain(&error)
                        );
                        State::Retry { failures }
                    }
                },
                State::Retry { failures } => {
                    tokio::time::sleep(retry_delay(failures)).await;
                    State::Check {
                        failures: failures.saturating_add(1),
                    }
                }
                State::Idle => {
                    tokio::select! {
                        changed = status.changed(), if tunnel_running => {
                            // The tunnel is gone (only in tests that drop it): poll from now on.
                            tunnel_running = changed.is_ok();
                        }
                        () = tokio::time::sleep(self.poll_interval) => {}
                    }
                    State::Check { failures: 0 }
                }
            };
        }
    }

    async fn check(&self, failures: u32) -> State {
        match tokio::fs::read(&self.file).await {
            Ok(pem) if self.synced.as_ref() != Some(&pem) => State::Write { failures, pem },
            Ok(_) => State::Idle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::Idle,
            Err(error) => {
                tracing::warn!(
                    file = %self.file.display(),
                    "reading the agent's identity failed: {error}"
                );
                State::Retry { failures }
            }
        }
    }
}

fn log_saved(secrets: &Secrets, saved: &Saved) {
    match saved {
        Saved::Unchanged => {
            tracing::debug!(secret = %secrets.secret(), "the identity Secret is up to date")
        }
        Saved::Created { resource_version } => tracing::info!(
            secret = %secrets.secret(),
            %resource_version,
            "identity saved: Secret created"
        ),
        Saved::Updated { resource_version } => tracing::info!(
            secret = %secrets.secret(),
            %resource_version,
            "identity saved: Secret updated"
        ),
    }
}

/// `min(CAP, BASE · 2^failures)`.
pub(super) fn retry_delay(failures: u32) -> Duration {
    IDENTITY_SECRET_RETRY_BASE
        .saturating_mul(1_u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX))
        .min(IDENTITY_SECRET_RETRY_CAP)
}
