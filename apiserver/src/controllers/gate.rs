//! The gate between what a cluster should run ([`super::targets`]) and what is delivered to
//! it: decided per (placement, cluster), pure.
//!
//! ```text
//!   TargetRelease (from placement p) ──decide(p's strategy, cluster)──► Deliver │ Hold
//!        Deliver: the target release goes into the cluster's bundle
//!        Hold:    the cluster keeps the release of that add-on it runs now (from its agent's
//!                 reports); an add-on it does not run yet is not added — unless its
//!                 Environment requires it, in which case it gets the required release
//! ```
//!
//! A bundle with a hold is offered only on the session whose report it was computed from
//! ([`super::delivery::Deliverable`]): one computed before the agent said what it runs would
//! leave out, and so prune, what the hold is meant to keep.
//!
//! Today's only policy: `strategy.type: AllAtOnce` delivers everywhere at once; `Progressive`
//! (the default type) holds every cluster, because delivering a canary placement to everything
//! at once is exactly what its user asked us not to do. The rollout engine replaces [`decide`]
//! with per-cluster decisions (canary first, then waves) and keeps this shape.

use edgefleet_api::delivery::{AddonRelease, AddonReport, DesiredBundle};
use edgefleet_api::RolloutType;

use super::content::bundle_hash;
use super::targets::ClusterTarget;

/// Whether a placement's release may reach a cluster now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Deliver,
    Hold,
}

/// The decision for one (placement, cluster).
pub fn decide(strategy: RolloutType) -> Decision {
    match strategy {
        RolloutType::AllAtOnce => Decision::Deliver,
        RolloutType::Progressive => Decision::Hold,
    }
}

/// The releases delivered to a cluster, given its target and what its agent reports running.
pub fn gate(target: &ClusterTarget, running: &[AddonReport]) -> Vec<AddonRelease> {
    target
        .releases
        .iter()
        .filter_map(|t| match decide(t.strategy) {
            Decision::Deliver => Some(t.release.clone()),
            Decision::Hold => running
                .iter()
                .find(|r| r.name == t.release.name)
                .map(|r| AddonRelease {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    content: r.content.clone(),
                    drift: t.release.drift,
                })
                .or_else(|| t.required.clone()),
        })
        .collect()
}

/// Whether the gate's answer for `target` depends on what the agent reports (any hold).
pub fn depends_on_reports(target: &ClusterTarget) -> bool {
    target
        .releases
        .iter()
        .any(|t| decide(t.strategy) == Decision::Hold)
}

/// A bundle of `releases`, with its hash.
pub fn bundle(releases: Vec<AddonRelease>) -> DesiredBundle {
    DesiredBundle {
        hash: bundle_hash(&releases),
        releases,
    }
}
