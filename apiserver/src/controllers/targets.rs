//! What every cluster should run: a pure function of a [`Snapshot`].
//!
//! Per Environment (namespace), independently of every other:
//!
//! ```text
//! Placement p  ──targets──► clusters(p) = members of spec.clusters.fleets
//!                                       ∪ clusters matching spec.clusters.selector
//!                                       ∪ clusters named in spec.clusters.names
//!              ──places───► for each spec.addons[i]: content(ClusterAddon, values[i]) → release
//! Environment  ──requires─► spec.addons: the add-on's own content, drift always Correct
//!
//! cluster c ──► releases(c), in apply order:
//!                 1. what the Environment requires, in its order (no placement can remove it)
//!                 2. every other add-on a placement targets at c, by add-on name
//! ```
//!
//! **Conflicts.** When several placements target one cluster with one add-on, the *oldest*
//! placement (creation time, then name) supplies the release: a new placement never takes an
//! add-on over from a running one, and the choice does not depend on map order. Placements that
//! lost with *different* content are told so ([`PlacementResolution::conflicts`]). An add-on an
//! Environment requires and a placement also targets comes from that placement (its values
//! apply), but stays required: [`TargetRelease::required`] is what the cluster gets when the
//! placement's rollout holds it back.
//!
//! Every target keeps the placement it came from, so a rollout engine can gate it per
//! (placement, cluster); see [`super::gate`]. Problems a user can fix (a missing add-on or
//! fleet, values on a manifests add-on, content over the size limit) are collected per
//! Placement and Environment for their conditions; they never stop the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use edgefleet_api::delivery::{AddonRelease, DriftMode};
use edgefleet_api::{ClusterAddon, Placement, RolloutType};

use super::content::{addon_content, Content};
use super::snapshot::{ObjectKey, Snapshot};
use edgefleet_apimachinery::selectors::LabelSelectorExpr;

/// The desired state of every cluster, before gating.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub clusters: BTreeMap<ObjectKey, ClusterTarget>,
    /// Every release's content, by hash.
    pub contents: HashMap<String, Arc<Content>>,
    pub placements: BTreeMap<ObjectKey, PlacementResolution>,
    pub environments: BTreeMap<String, EnvironmentResolution>,
}

/// What one cluster should run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterTarget {
    pub releases: Vec<TargetRelease>,
    /// `spec.paused`: the hub sends this cluster nothing new.
    pub paused: bool,
}

/// One add-on release a cluster should run, and who asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetRelease {
    pub release: AddonRelease,
    /// The placement whose release this is; `None` when only the Environment asks for it.
    pub placement: Option<String>,
    /// How that placement rolls out (`AllAtOnce` for the Environment's own).
    pub strategy: RolloutType,
    /// For an add-on the Environment requires: the release it gets whatever a placement holds.
    pub required: Option<AddonRelease>,
}

/// How one placement resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementResolution {
    /// Names of the clusters it targets.
    pub targeted: BTreeSet<String>,
    /// Its release of each add-on it places (those that exist and fit).
    pub releases: BTreeMap<String, AddonRelease>,
    pub strategy: Option<RolloutType>,
    pub missing_addons: Vec<String>,
    pub missing_fleets: Vec<String>,
    /// Manifests add-ons it gives values to (values only apply to Helm add-ons).
    pub values_ignored: Vec<String>,
    /// Add-ons whose content with its values is too large, with why.
    pub too_large: Vec<(String, String)>,
    pub conflicts: Vec<Conflict>,
}

/// An add-on this placement targets at clusters where an older placement supplies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub addon: String,
    /// The placement whose release those clusters get.
    pub winner: String,
    pub clusters: usize,
}

/// How one Environment's required add-ons resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvironmentResolution {
    pub missing_addons: Vec<String>,
    pub too_large: Vec<(String, String)>,
}

/// Computes every cluster's target. Pure: the same snapshot gives the same targets.
pub fn compute(snapshot: &Snapshot) -> Targets {
    let mut targets = Targets::default();
    for ((_, env_name), env) in &snapshot.environments {
        if env.metadata.deletion_timestamp.is_some() {
            continue;
        }
        environment(snapshot, env_name, env, &mut targets);
    }
    targets
}

/// A candidate release of one add-on for one cluster, from one placement.
struct Candidate<'a> {
    placement: &'a str,
    strategy: RolloutType,
    release: &'a AddonRelease,
}

fn environment(
    snapshot: &Snapshot,
    ns: &str,
    env: &edgefleet_api::Environment,
    targets: &mut Targets,
) {
    let clusters: BTreeMap<&str, _> = Snapshot::in_namespace(&snapshot.clusters, ns).collect();
    let addons: BTreeMap<&str, &Arc<ClusterAddon>> =
        Snapshot::in_namespace(&snapshot.addons, ns).collect();

    // Fleet members, by fleet name.
    let fleets: BTreeMap<&str, BTreeSet<&str>> = Snapshot::in_namespace(&snapshot.fleets, ns)
        .map(|(name, fleet)| {
            let members = match LabelSelectorExpr::from_label_selector(&fleet.spec.selector) {
                Ok(expr) => clusters
                    .iter()
                    .filter(|(_, c)| expr.matches(&labels(&c.metadata)))
                    .map(|(n, _)| *n)
                    .collect(),
                Err(_) => BTreeSet::new(),
            };
            (name, members)
        })
        .collect();

    // Placements in precedence order: oldest first.
    let mut placements: Vec<(&str, &Arc<Placement>)> =
        Snapshot::in_namespace(&snapshot.placements, ns)
            .filter(|(_, p)| p.metadata.deletion_timestamp.is_none())
            .collect();
    placements.sort_by(|(an, a), (bn, b)| {
        let at = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let bt = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        at.cmp(&bt).then(an.cmp(bn))
    });

    let mut resolutions: BTreeMap<&str, PlacementResolution> = BTreeMap::new();
    for (name, placement) in &placements {
        let mut res = PlacementResolution {
            strategy: Some(
                placement
                    .spec
                    .strategy
                    .type_
                    .unwrap_or(RolloutType::Progressive),
            ),
            ..Default::default()
        };
        let spec = &placement.spec;
        for fleet in &spec.clusters.fleets {
            match fleets.get(fleet.as_str()) {
                Some(members) => res.targeted.extend(members.iter().map(|m| m.to_string())),
                None => res.missing_fleets.push(fleet.clone()),
            }
        }
        if let Some(selector) = &spec.clusters.selector {
            if let Ok(expr) = LabelSelectorExpr::from_label_selector(selector) {
                res.targeted.extend(
                    clusters
                        .iter()
                        .filter(|(_, c)| expr.matches(&labels(&c.metadata)))
                        .map(|(n, _)| n.to_string()),
                );
            }
        }
        res.targeted.extend(
            spec.clusters
                .names
                .iter()
                .filter(|n| clusters.contains_key(n.as_str()))
                .cloned(),
        );
        for placed in &spec.addons {
            let Some(addon) = addons.get(placed.name.as_str()) else {
                res.missing_addons.push(placed.name.clone());
                continue;
            };
            if placed.values.is_some() && addon.spec.helm.is_none() {
                res.values_ignored.push(placed.name.clone());
            }
            match addon_content(addon, placed.values.as_ref()) {
                Ok(content) => {
                    let release = release_of(addon, &content, drift_of(addon));
                    targets.contents.insert(content.hash.clone(), content);
                    res.releases.insert(placed.name.clone(), release);
                }
                Err(err) => res.too_large.push((placed.name.clone(), err.to_string())),
            }
        }
        resolutions.insert(name, res);
    }

    // The Environment's own releases: the add-on's content, always drift-corrected.
    let mut env_res = EnvironmentResolution::default();
    let mut required: Vec<(String, AddonRelease)> = Vec::new();
    for r in &env.spec.addons {
        let Some(addon) = addons.get(r.name.as_str()) else {
            env_res.missing_addons.push(r.name.clone());
            continue;
        };
        match addon_content(addon, None) {
            Ok(content) => {
                required.push((
                    r.name.clone(),
                    release_of(addon, &content, DriftMode::Correct),
                ));
                targets.contents.insert(content.hash.clone(), content);
            }
            Err(err) => env_res.too_large.push((r.name.clone(), err.to_string())),
        }
    }

    // Per cluster: the winning candidate of each add-on.
    let mut conflicts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (cluster_name, cluster) in &clusters {
        let mut candidates: BTreeMap<&str, Vec<Candidate<'_>>> = BTreeMap::new();
        for (name, _) in &placements {
            let res = &resolutions[name];
            if !res.targeted.contains(*cluster_name) {
                continue;
            }
            for (addon, release) in &res.releases {
                candidates.entry(addon).or_default().push(Candidate {
                    placement: name,
                    strategy: res.strategy.unwrap_or(RolloutType::Progressive),
                    release,
                });
            }
        }
        for (addon, list) in &candidates {
            let winner = &list[0];
            for loser in &list[1..] {
                if loser.release.content != winner.release.content {
                    *conflicts
                        .entry((
                            loser.placement.to_string(),
                            addon.to_string(),
                            winner.placement.to_string(),
                        ))
                        .or_default() += 1;
                }
            }
        }
        let mut releases = Vec::new();
        for (name, own) in &required {
            let release = match candidates.remove(name.as_str()) {
                Some(list) => {
                    let winner = &list[0];
                    let mut release = winner.release.clone();
                    release.drift = DriftMode::Correct;
                    TargetRelease {
                        release,
                        placement: Some(winner.placement.to_string()),
                        strategy: winner.strategy,
                        required: Some(own.clone()),
                    }
                }
                None => TargetRelease {
                    release: own.clone(),
                    placement: None,
                    strategy: RolloutType::AllAtOnce,
                    required: Some(own.clone()),
                },
            };
            releases.push(release);
        }
        for list in candidates.into_values() {
            let winner = &list[0];
            releases.push(TargetRelease {
                release: winner.release.clone(),
                placement: Some(winner.placement.to_string()),
                strategy: winner.strategy,
                required: None,
            });
        }
        targets.clusters.insert(
            (ns.to_string(), cluster_name.to_string()),
            ClusterTarget {
                releases,
                paused: cluster.spec.paused,
            },
        );
    }
    for ((loser, addon, winner), clusters) in conflicts {
        if let Some(res) = resolutions.get_mut(loser.as_str()) {
            res.conflicts.push(Conflict {
                addon,
                winner,
                clusters,
            });
        }
    }
    for (name, res) in resolutions {
        targets
            .placements
            .insert((ns.to_string(), name.to_string()), res);
    }
    targets.environments.insert(ns.to_string(), env_res);
}

fn labels(meta: &edgefleet_api::ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

fn drift_of(addon: &ClusterAddon) -> DriftMode {
    addon.spec.drift.unwrap_or_default()
}

fn release_of(addon: &ClusterAddon, content: &Content, drift: DriftMode) -> AddonRelease {
    AddonRelease {
        name: addon.metadata.name.clone().unwrap_or_default(),
        version: addon.spec.version.clone(),
        content: content.hash.clone(),
        drift,
    }
}
