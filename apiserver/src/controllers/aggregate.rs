//! Aggregated status: Placement, ClusterAddon, Environment and Fleet, each a pure function of
//! the snapshot, the targets and the bundles delivered.
//!
//! Per-cluster truth is `Cluster.status` as stored (connection, version, nodes, and
//! `addons[]`, which its writer derives from the agent's reports), so a cluster that went
//! offline keeps counting with what it last reported instead of falling to "unknown". An
//! add-on counts as Ready on a cluster when the cluster's `status.addons[]` entry is Ready *at
//! the version the cluster's target names*.
//!
//! | object | fields | conditions |
//! |---|---|---|
//! | Placement | total, updated, failed, clusters not yet Ready (failed first, at most [`MAX_LISTED_CLUSTERS`]) | `Resolved` (add-ons and fleets exist, values apply, content fits), `Progressing` (AllAtOnce, or why a Progressive rollout is held), `Conflicted`, `Ready` |
//! | ClusterAddon | clusters (targeted), ready, failed, Ready clusters per version | `Ready` |
//! | Environment | clusters, connected, add-on releases desired/ready/failed | `AddonsResolved`, `AddonsReady` |
//! | Fleet | matched, ready (connected, every node Ready), updated, per-version counts | kept as they are |
//!
//! Conditions keep their `lastTransitionTime` while their status holds. Statuses are compared
//! with what is stored; only differences are written ([`super::writer`]).

use std::collections::BTreeMap;

use edgefleet_api::jiff::Timestamp;
use edgefleet_api::{
    AddonState, Cluster, ClusterAddon, ClusterAddonStatus, ClusterDecision, Condition,
    ConnectionState, Environment, EnvironmentStatus, Fleet, FleetStatus, Placement,
    PlacementStatus, ReleaseCounts, RolloutType, Time, VersionCount,
};

use super::snapshot::{ObjectKey, Snapshot};
use super::targets::{ClusterTarget, PlacementResolution, Targets};
use edgefleet_apimachinery::selectors::LabelSelectorExpr;

/// Clusters a Placement's status lists by name.
pub const MAX_LISTED_CLUSTERS: usize = 25;

/// A condition with `lastTransitionTime` kept from `old` while the status holds.
pub fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// How one add-on stands on one cluster, against the release it should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Ready,
    Failed,
    Applying,
    Pending,
}

fn standing<'a>(
    cluster: &'a Cluster,
    addon: &str,
    version: &str,
) -> (Standing, Option<&'a AddonState>) {
    let entry = cluster
        .status
        .as_ref()
        .and_then(|s| s.addons.iter().find(|a| a.name == addon));
    let Some(entry) = entry.filter(|e| e.version.as_deref() == Some(version)) else {
        return (Standing::Pending, entry);
    };
    let standing = match entry.state.as_str() {
        "Ready" => Standing::Ready,
        "Failed" => Standing::Failed,
        "Applied" | "Drifted" => Standing::Applying,
        _ => Standing::Pending,
    };
    (standing, Some(entry))
}

fn target_version<'a>(target: Option<&'a ClusterTarget>, addon: &str) -> Option<&'a str> {
    target?
        .releases
        .iter()
        .find(|r| r.release.name == addon)
        .map(|r| r.release.version.as_str())
}

fn connected(cluster: &Cluster) -> bool {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.connection.as_ref())
        .is_some_and(|c| c.state == ConnectionState::Connected)
}

/// Clusters Ready and failed, of those targeted.
#[derive(Clone, Copy)]
struct Counts {
    ready: i32,
    failed: i32,
    total: i32,
}

/// The `Ready` condition of something rolled out to `counts.total` clusters.
fn ready_condition(
    old: &[Condition],
    counts: Counts,
    first_failure: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let Counts {
        ready,
        failed,
        total,
    } = counts;
    let (status, reason, message) = if failed > 0 {
        (
            false,
            "ClustersFailed",
            format!(
                "{failed} of {total} clusters failed; {}",
                first_failure.unwrap_or_default()
            ),
        )
    } else if ready == total {
        (
            true,
            "AllClustersReady",
            format!("Ready on {total} of {total} clusters"),
        )
    } else {
        (
            false,
            "ClustersPending",
            format!("Ready on {ready} of {total} clusters"),
        )
    };
    condition(old, "Ready", status, reason, message, generation, now)
}

/// A Placement's status.
pub fn placement_status(
    key: &ObjectKey,
    placement: &Placement,
    resolution: &PlacementResolution,
    snapshot: &Snapshot,
    targets: &Targets,
    delivered: &BTreeMap<ObjectKey, String>,
    now: Timestamp,
) -> PlacementStatus {
    let (ns, _) = key;
    let old = placement.status.clone().unwrap_or_default();
    let generation = placement.metadata.generation;
    let strategy = resolution.strategy.unwrap_or(RolloutType::Progressive);
    let held = strategy == RolloutType::Progressive;
    let (mut updated, mut failed) = (0, 0);
    let mut listed: Vec<(bool, ClusterDecision)> = Vec::new();
    for name in &resolution.targeted {
        let ckey = (ns.clone(), name.clone());
        let Some(cluster) = snapshot.clusters.get(&ckey) else {
            continue;
        };
        let target = targets.clusters.get(&ckey);
        // A placement with nothing to deliver has updated nobody.
        let mut worst = if resolution.releases.is_empty() {
            Standing::Pending
        } else {
            Standing::Ready
        };
        let mut detail: Option<String> = None;
        let mut since = None;
        for addon in resolution.releases.keys() {
            let Some(version) = target_version(target, addon) else {
                continue;
            };
            let (s, entry) = standing(cluster, addon, version);
            let rank = |s: Standing| match s {
                Standing::Failed => 3,
                Standing::Pending => 2,
                Standing::Applying => 1,
                Standing::Ready => 0,
            };
            if rank(s) > rank(worst) {
                worst = s;
                detail = entry.and_then(|e| {
                    e.message
                        .as_ref()
                        .map(|m| format!("{addon} {}: {m}", e.version.as_deref().unwrap_or("")))
                });
                since = entry.and_then(|e| e.since.clone());
            }
        }
        match worst {
            Standing::Ready => {
                updated += 1;
                continue;
            }
            Standing::Failed => failed += 1,
            _ => {}
        }
        let state = match worst {
            Standing::Failed => "Failed",
            Standing::Applying => "Progressing",
            _ => "Pending",
        };
        let message = if held && worst == Standing::Pending {
            Some("held: this hub does not deliver Progressive rollouts yet".to_string())
        } else {
            detail
        };
        listed.push((
            worst == Standing::Failed,
            ClusterDecision {
                name: name.clone(),
                bundle_hash: delivered.get(&ckey).cloned(),
                state: state.into(),
                message,
                last_transition_time: since,
            },
        ));
    }
    listed.sort_by(|(af, a), (bf, b)| bf.cmp(af).then(a.name.cmp(&b.name)));
    let total = resolution.targeted.len() as i32;

    let mut problems = Vec::new();
    let mut reason = "Resolved";
    if let Some(missing) = resolution.missing_addons.first() {
        reason = "AddonNotFound";
        problems.push(format!(
            "ClusterAddon {missing:?} does not exist in namespace {ns:?}: create it or remove it from spec.addons"
        ));
    }
    if let Some(missing) = resolution.missing_fleets.first() {
        if problems.is_empty() {
            reason = "FleetNotFound";
        }
        problems.push(format!(
            "Fleet {missing:?} does not exist in namespace {ns:?}: create it or remove it from spec.clusters.fleets"
        ));
    }
    if let Some((addon, why)) = resolution.too_large.first() {
        if problems.is_empty() {
            reason = "ContentTooLarge";
        }
        problems.push(format!("add-on {addon:?} is not delivered: {why}"));
    }
    if let Some(addon) = resolution.values_ignored.first() {
        if problems.is_empty() {
            reason = "ValuesIgnored";
        }
        problems.push(format!(
            "add-on {addon:?} has manifests, not a Helm chart: its values in spec.addons are ignored"
        ));
    }
    let resolved = problems.is_empty();
    let resolved_message = if resolved {
        format!("{} add-ons on {total} clusters", resolution.releases.len())
    } else {
        problems.join("; ")
    };

    let progressing = if held {
        condition(
            &old.conditions,
            "Progressing",
            false,
            "ProgressiveRolloutNotDelivered",
            "strategy.type is Progressive, which this hub does not deliver yet: every targeted cluster keeps what it runs. Set spec.strategy.type: AllAtOnce to deliver to all targeted clusters at once.".into(),
            generation,
            now,
        )
    } else {
        condition(
            &old.conditions,
            "Progressing",
            true,
            "AllAtOnce",
            "delivered to every targeted cluster at once".into(),
            generation,
            now,
        )
    };
    let conflicted = match resolution.conflicts.first() {
        Some(c) => condition(
            &old.conditions,
            "Conflicted",
            true,
            "AddonPlacedByOlderPlacement",
            format!(
                "add-on {:?} on {} clusters comes from the older Placement {:?}, not from this one{}",
                c.addon,
                c.clusters,
                c.winner,
                if resolution.conflicts.len() > 1 {
                    format!(" (and {} more conflicts)", resolution.conflicts.len() - 1)
                } else {
                    String::new()
                }
            ),
            generation,
            now,
        ),
        None => condition(
            &old.conditions,
            "Conflicted",
            false,
            "NoConflict",
            "no other placement supplies these add-ons to these clusters".into(),
            generation,
            now,
        ),
    };
    let first = listed
        .first()
        .filter(|(f, _)| *f)
        .map(|(_, d)| format!("{}: {}", d.name, d.message.as_deref().unwrap_or("failed")));
    let ready = ready_condition(
        &old.conditions,
        Counts {
            ready: updated,
            failed,
            total,
        },
        first,
        generation,
        now,
    );
    PlacementStatus {
        total,
        updated,
        failed,
        clusters: listed
            .into_iter()
            .take(MAX_LISTED_CLUSTERS)
            .map(|(_, d)| d)
            .collect(),
        observed_generation: generation,
        conditions: vec![
            condition(
                &old.conditions,
                "Resolved",
                resolved,
                reason,
                resolved_message,
                generation,
                now,
            ),
            progressing,
            conflicted,
            ready,
        ],
    }
}

/// A ClusterAddon's status.
pub fn addon_status(
    key: &ObjectKey,
    addon: &ClusterAddon,
    snapshot: &Snapshot,
    targets: &Targets,
    now: Timestamp,
) -> ClusterAddonStatus {
    let (ns, name) = key;
    let old = addon.status.clone().unwrap_or_default();
    let generation = addon.metadata.generation;
    let (mut clusters, mut ready, mut failed) = (0, 0, 0);
    let mut versions: BTreeMap<String, i32> = BTreeMap::new();
    let mut first_failure: Option<String> = None;
    for ((cns, cname), target) in targets
        .clusters
        .range((ns.clone(), String::new())..)
        .take_while(|((cns, _), _)| cns == ns)
    {
        let Some(version) = target_version(Some(target), name) else {
            continue;
        };
        let Some(cluster) = snapshot.clusters.get(&(cns.clone(), cname.clone())) else {
            continue;
        };
        clusters += 1;
        let (s, entry) = standing(cluster, name, version);
        match s {
            Standing::Ready => ready += 1,
            Standing::Failed => {
                failed += 1;
                if first_failure.is_none() {
                    first_failure = Some(format!(
                        "{cname}: {}",
                        entry.and_then(|e| e.message.as_deref()).unwrap_or("failed")
                    ));
                }
            }
            _ => {}
        }
        if let Some(e) = entry.filter(|e| e.state == "Ready") {
            *versions
                .entry(e.version.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    let ready_condition = if clusters == 0 {
        condition(
            &old.conditions,
            "Ready",
            true,
            "NotPlaced",
            "no Placement or Environment puts this add-on on a cluster".into(),
            generation,
            now,
        )
    } else {
        ready_condition(
            &old.conditions,
            Counts {
                ready,
                failed,
                total: clusters,
            },
            first_failure,
            generation,
            now,
        )
    };
    ClusterAddonStatus {
        clusters: Some(clusters),
        ready: Some(ready),
        failed: Some(failed),
        versions: versions
            .into_iter()
            .map(|(version, count)| VersionCount { version, count })
            .collect(),
        observed_generation: generation,
        conditions: vec![ready_condition],
    }
}

/// An Environment's status.
pub fn environment_status(
    name: &str,
    env: &Environment,
    snapshot: &Snapshot,
    targets: &Targets,
    now: Timestamp,
) -> EnvironmentStatus {
    let old = env.status.clone().unwrap_or_default();
    let generation = env.metadata.generation;
    let mut counts = ReleaseCounts::default();
    let (mut clusters, mut connected_count) = (0, 0);
    for (cname, cluster) in Snapshot::in_namespace(&snapshot.clusters, name) {
        clusters += 1;
        if connected(cluster) {
            connected_count += 1;
        }
        let Some(target) = targets.clusters.get(&(name.to_string(), cname.to_string())) else {
            continue;
        };
        for r in &target.releases {
            counts.desired += 1;
            match standing(cluster, &r.release.name, &r.release.version).0 {
                Standing::Ready => counts.ready += 1,
                Standing::Failed => counts.failed += 1,
                _ => {}
            }
        }
    }
    let resolution = targets.environments.get(name);
    let missing = resolution.and_then(|r| r.missing_addons.first());
    let too_large = resolution.and_then(|r| r.too_large.first());
    let resolved = match (missing, too_large) {
        (Some(m), _) => condition(
            &old.conditions,
            "AddonsResolved",
            false,
            "AddonNotFound",
            format!("required ClusterAddon {m:?} does not exist in namespace {name:?}: create it or remove it from spec.addons"),
            generation,
            now,
        ),
        (None, Some((addon, why))) => condition(
            &old.conditions,
            "AddonsResolved",
            false,
            "ContentTooLarge",
            format!("required add-on {addon:?} is not delivered: {why}"),
            generation,
            now,
        ),
        (None, None) => condition(
            &old.conditions,
            "AddonsResolved",
            true,
            "Resolved",
            format!("{} required add-ons exist", env.spec.addons.len()),
            generation,
            now,
        ),
    };
    let all_ready = counts.ready == counts.desired;
    let ready = condition(
        &old.conditions,
        "AddonsReady",
        all_ready && counts.failed == 0,
        if counts.failed > 0 {
            "ReleasesFailed"
        } else if all_ready {
            "AllReleasesReady"
        } else {
            "ReleasesPending"
        },
        format!(
            "{} of {} add-on releases Ready, {} failed, on {clusters} clusters",
            counts.ready, counts.desired, counts.failed
        ),
        generation,
        now,
    );
    EnvironmentStatus {
        clusters: Some(clusters),
        connected: Some(connected_count),
        addons: Some(counts),
        conditions: vec![resolved, ready],
    }
}

/// A Fleet's status (issue 9 item 21: matched counts every cluster the selector matches,
/// connected or not).
pub fn fleet_status(key: &ObjectKey, fleet: &Fleet, snapshot: &Snapshot) -> FleetStatus {
    let (ns, _) = key;
    let old = fleet.status.clone().unwrap_or_default();
    let Ok(selector) = LabelSelectorExpr::from_label_selector(&fleet.spec.selector) else {
        return FleetStatus {
            observed_generation: fleet.metadata.generation,
            ..old
        };
    };
    let (mut matched, mut ready, mut updated) = (0, 0, 0);
    let mut versions: BTreeMap<String, i32> = BTreeMap::new();
    for (_, cluster) in Snapshot::in_namespace(&snapshot.clusters, ns) {
        let labels = cluster.metadata.labels.clone().unwrap_or_default();
        if !selector.matches(&labels) {
            continue;
        }
        matched += 1;
        let status = cluster.status.as_ref();
        let nodes_ready = status
            .and_then(|s| s.nodes)
            .is_some_and(|n| n.total > 0 && n.ready == n.total);
        if connected(cluster) && nodes_ready {
            ready += 1;
        }
        let running = status.and_then(|s| s.kubernetes_version.clone());
        match (&fleet.spec.kubernetes_version, &running) {
            (Some(want), Some(have)) if want == have => updated += 1,
            (None, Some(_)) => updated += 1,
            _ => {}
        }
        if let Some(v) = running {
            *versions.entry(v).or_default() += 1;
        }
    }
    FleetStatus {
        matched,
        ready,
        updated,
        versions: versions
            .into_iter()
            .map(|(version, count)| VersionCount { version, count })
            .collect(),
        observed_generation: fleet.metadata.generation,
        conditions: old.conditions,
    }
}
