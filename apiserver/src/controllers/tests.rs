//! Tests of the pure controllers: targets, the gate, aggregated status.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgefleet_api::delivery::{AddonPhase, AddonReport, DriftMode};
use edgefleet_api::jiff::Timestamp;
use edgefleet_api::{
    AddonRef, AddonState, Cluster, ClusterAddon, ClusterStatus, ConnectionState, ConnectionStatus,
    Environment, Fleet, HelmChart, LabelSelector, NodeCounts, ObjectMeta, PlacedAddon, Placement,
    RolloutType, Time,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::aggregate;
use super::gate::{self, Decision};
use super::snapshot::Snapshot;
use super::targets::{self, Targets};

const NS: &str = "retail";

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: (!ns.is_empty()).then(|| ns.into()),
        generation: Some(1),
        ..Default::default()
    }
}

/// Builds a snapshot of one environment, `NS`.
#[derive(Default, Clone, Debug)]
struct World {
    snapshot: Snapshot,
    clock: i64,
}

impl World {
    fn new() -> Self {
        let mut w = World::default();
        w.env(&[]);
        w
    }

    fn env(&mut self, required: &[&str]) -> &mut Self {
        let mut e = Environment {
            metadata: meta(NS, ""),
            ..Default::default()
        };
        e.spec.addons = required
            .iter()
            .map(|n| AddonRef {
                name: n.to_string(),
            })
            .collect();
        self.snapshot
            .environments
            .insert((String::new(), NS.into()), Arc::new(e));
        self
    }

    fn cluster(&mut self, name: &str, labels: &[(&str, &str)]) -> &mut Self {
        let mut c = Cluster {
            metadata: meta(name, NS),
            ..Default::default()
        };
        c.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.snapshot
            .clusters
            .insert((NS.into(), name.into()), Arc::new(c));
        self
    }

    fn cluster_status(&mut self, name: &str, status: ClusterStatus) -> &mut Self {
        let key = (NS.to_string(), name.to_string());
        let mut c = (*self.snapshot.clusters[&key]).clone();
        c.status = Some(status);
        self.snapshot.clusters.insert(key, Arc::new(c));
        self
    }

    fn addon(&mut self, name: &str, version: &str, data: &str) -> &mut Self {
        let mut a = ClusterAddon {
            metadata: meta(name, NS),
            ..Default::default()
        };
        a.spec.version = version.into();
        a.spec.drift = Some(DriftMode::Correct);
        a.spec.manifests = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": name}, "data": {"k": data}}),
        ];
        self.snapshot
            .addons
            .insert((NS.into(), name.into()), Arc::new(a));
        self
    }

    fn helm_addon(&mut self, name: &str, values: Value) -> &mut Self {
        let mut a = ClusterAddon {
            metadata: meta(name, NS),
            ..Default::default()
        };
        a.spec.version = "v1".into();
        a.spec.helm = Some(HelmChart {
            repository: "oci://registry/charts".into(),
            chart: name.into(),
            version: "1.0.0".into(),
            release_name: None,
            values: Some(values),
        });
        self.snapshot
            .addons
            .insert((NS.into(), name.into()), Arc::new(a));
        self
    }

    fn fleet(&mut self, name: &str, labels: &[(&str, &str)]) -> &mut Self {
        let mut f = Fleet {
            metadata: meta(name, NS),
            ..Default::default()
        };
        f.spec.selector = LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.snapshot
            .fleets
            .insert((NS.into(), name.into()), Arc::new(f));
        self
    }

    /// A placement created after every one before it.
    fn placement(&mut self, name: &str, build: impl FnOnce(&mut Placement)) -> &mut Self {
        self.clock += 1;
        let mut p = Placement {
            metadata: meta(name, NS),
            ..Default::default()
        };
        p.metadata.creation_timestamp = Some(Time(
            Timestamp::from_second(1_700_000_000 + self.clock).unwrap(),
        ));
        p.spec.strategy.type_ = Some(RolloutType::AllAtOnce);
        build(&mut p);
        self.snapshot
            .placements
            .insert((NS.into(), name.into()), Arc::new(p));
        self
    }

    fn targets(&self) -> Targets {
        targets::compute(&self.snapshot)
    }
}

fn addons(p: &mut Placement, names: &[&str]) {
    p.spec.addons = names
        .iter()
        .map(|n| PlacedAddon {
            name: n.to_string(),
            values: None,
        })
        .collect();
}

fn names(p: &mut Placement, clusters: &[&str]) {
    p.spec.clusters.names = clusters.iter().map(|c| c.to_string()).collect();
}

fn release_names(targets: &Targets, cluster: &str) -> Vec<String> {
    targets.clusters[&(NS.to_string(), cluster.to_string())]
        .releases
        .iter()
        .map(|r| r.release.name.clone())
        .collect()
}

#[test]
fn a_placement_targets_the_union_of_its_fleets_selector_and_names() {
    let mut w = World::new();
    w.cluster("a", &[("gpu", "l4")])
        .cluster("b", &[("region", "eu")])
        .cluster("c", &[])
        .cluster("d", &[])
        .fleet("l4", &[("gpu", "l4")])
        .addon("policies", "1", "x")
        .placement("p", |p| {
            addons(p, &["policies"]);
            p.spec.clusters.fleets = vec!["l4".into()];
            p.spec.clusters.selector = Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("region".into(), "eu".into())])),
                ..Default::default()
            });
            names(p, &["c", "not-registered"]);
        });
    let t = w.targets();
    let res = &t.placements[&(NS.to_string(), "p".to_string())];
    assert_eq!(
        res.targeted.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    for c in ["a", "b", "c"] {
        assert_eq!(release_names(&t, c), ["policies"], "{c}");
    }
    assert!(release_names(&t, "d").is_empty());
}

#[test]
fn environment_required_addons_come_first_always_corrected_and_cannot_be_excluded() {
    let mut w = World::new();
    w.env(&["baseline"])
        .cluster("a", &[])
        .cluster("b", &[])
        .addon("baseline", "1", "x")
        .addon("app", "2", "y");
    let mut baseline = (*w.snapshot.addons[&(NS.into(), "baseline".into())]).clone();
    baseline.spec.drift = Some(DriftMode::Report);
    w.snapshot
        .addons
        .insert((NS.into(), "baseline".into()), Arc::new(baseline));
    w.placement("apps", |p| {
        addons(p, &["app"]);
        names(p, &["a"]);
    });
    let t = w.targets();
    assert_eq!(release_names(&t, "a"), ["baseline", "app"]);
    assert_eq!(release_names(&t, "b"), ["baseline"], "no placement needed");
    let first = &t.clusters[&(NS.into(), "a".into())].releases[0];
    assert_eq!(
        first.release.drift,
        DriftMode::Correct,
        "required add-ons are enforced"
    );
    assert!(first.required.is_some());
}

#[test]
fn a_placement_naming_a_missing_addon_or_fleet_is_reported_and_the_rest_still_delivered() {
    let mut w = World::new();
    w.env(&["absent-policy"])
        .cluster("a", &[])
        .addon("app", "1", "x")
        .placement("p", |p| {
            addons(p, &["app", "ghost"]);
            p.spec.clusters.fleets = vec!["no-such-fleet".into()];
            names(p, &["a"]);
        });
    let t = w.targets();
    let res = &t.placements[&(NS.to_string(), "p".to_string())];
    assert_eq!(res.missing_addons, ["ghost"]);
    assert_eq!(res.missing_fleets, ["no-such-fleet"]);
    assert_eq!(release_names(&t, "a"), ["app"]);
    assert_eq!(t.environments[NS].missing_addons, ["absent-policy"]);

    let placement = &w.snapshot.placements[&(NS.into(), "p".into())];
    let status = aggregate::placement_status(
        &(NS.into(), "p".into()),
        placement,
        res,
        &w.snapshot,
        &t,
        &BTreeMap::new(),
        Timestamp::UNIX_EPOCH,
    );
    let resolved = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Resolved")
        .unwrap();
    assert_eq!(resolved.status, "False");
    assert_eq!(resolved.reason, "AddonNotFound");
    assert!(
        resolved.message.contains("\"ghost\""),
        "{}",
        resolved.message
    );
    assert!(
        resolved.message.contains("no-such-fleet"),
        "{}",
        resolved.message
    );
}

#[test]
fn the_oldest_placement_wins_a_conflict_and_the_younger_is_told() {
    let mut w = World::new();
    w.cluster("a", &[])
        .cluster("b", &[])
        .helm_addon("gpu", json!({"driver": {"enabled": false}}));
    w.placement("first", |p| {
        p.spec.addons = vec![PlacedAddon {
            name: "gpu".into(),
            values: Some(json!({"driver": {"enabled": true}})),
        }];
        names(p, &["a"]);
    });
    w.placement("second", |p| {
        addons(p, &["gpu"]);
        names(p, &["a", "b"]);
    });
    let t = w.targets();
    let first = &t.placements[&(NS.to_string(), "first".to_string())];
    let second = &t.placements[&(NS.to_string(), "second".to_string())];
    let on_a = &t.clusters[&(NS.into(), "a".into())].releases[0];
    assert_eq!(on_a.placement.as_deref(), Some("first"));
    assert_eq!(on_a.release.content, first.releases["gpu"].content);
    let on_b = &t.clusters[&(NS.into(), "b".into())].releases[0];
    assert_eq!(on_b.placement.as_deref(), Some("second"));
    assert!(first.conflicts.is_empty());
    assert_eq!(second.conflicts.len(), 1);
    assert_eq!(second.conflicts[0].winner, "first");
    assert_eq!(second.conflicts[0].clusters, 1);
}

#[test]
fn two_placements_of_the_same_content_do_not_conflict() {
    let mut w = World::new();
    w.cluster("a", &[]).addon("app", "1", "x");
    for name in ["p1", "p2"] {
        w.placement(name, |p| {
            addons(p, &["app"]);
            names(p, &["a"]);
        });
    }
    let t = w.targets();
    assert!(t.placements.values().all(|r| r.conflicts.is_empty()));
    assert_eq!(release_names(&t, "a"), ["app"], "one release, not two");
}

#[test]
fn values_on_a_manifests_addon_are_reported_as_ignored() {
    let mut w = World::new();
    w.cluster("a", &[])
        .addon("app", "1", "x")
        .placement("p", |p| {
            p.spec.addons = vec![PlacedAddon {
                name: "app".into(),
                values: Some(json!({"replicas": 3})),
            }];
            names(p, &["a"]);
        });
    let t = w.targets();
    assert_eq!(
        t.placements[&(NS.to_string(), "p".to_string())].values_ignored,
        ["app"]
    );
}

fn report(name: &str, version: &str, content: &str) -> AddonReport {
    AddonReport {
        name: name.into(),
        version: version.into(),
        content: content.into(),
        phase: AddonPhase::Ready,
        ..Default::default()
    }
}

#[test]
fn progressive_placements_hold_clusters_at_what_they_run_and_all_at_once_delivers() {
    assert_eq!(gate::decide(RolloutType::AllAtOnce), Decision::Deliver);
    assert_eq!(gate::decide(RolloutType::Progressive), Decision::Hold);
    let mut w = World::new();
    w.env(&["baseline"])
        .cluster("a", &[])
        .addon("baseline", "1", "x")
        .addon("canary-app", "2", "new")
        .addon("fast-app", "1", "y")
        .placement("canary", |p| {
            addons(p, &["canary-app", "baseline"]);
            names(p, &["a"]);
            p.spec.strategy.type_ = Some(RolloutType::Progressive);
        })
        .placement("fast", |p| {
            addons(p, &["fast-app"]);
            names(p, &["a"]);
        });
    let t = w.targets();
    let target = &t.clusters[&(NS.into(), "a".into())];
    assert!(gate::depends_on_reports(target));

    // Nothing runs yet: the held add-on is not added; the required one comes anyway.
    let delivered = gate::gate(target, &[]);
    let names: Vec<&str> = delivered.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["baseline", "fast-app"]);

    // It runs version 1 of the canary app: it keeps exactly that.
    let running = [report("canary-app", "1", "old-hash")];
    let delivered = gate::gate(target, &running);
    let held = delivered.iter().find(|r| r.name == "canary-app").unwrap();
    assert_eq!(
        (held.version.as_str(), held.content.as_str()),
        ("1", "old-hash")
    );
}

#[test]
fn deleting_every_placement_leaves_an_empty_bundle() {
    let mut w = World::new();
    w.cluster("a", &[])
        .addon("app", "1", "x")
        .placement("p", |p| {
            addons(p, &["app"]);
            names(p, &["a"]);
        });
    let before = gate::bundle(gate::gate(
        &w.targets().clusters[&(NS.into(), "a".into())],
        &[],
    ));
    assert_eq!(before.releases.len(), 1);
    w.snapshot.placements.clear();
    let after = gate::bundle(gate::gate(
        &w.targets().clusters[&(NS.into(), "a".into())],
        &[],
    ));
    assert!(after.releases.is_empty());
    assert_ne!(before.hash, after.hash);
    assert_eq!(
        after.hash,
        gate::bundle(vec![]).hash,
        "the empty bundle has one hash"
    );
}

fn ready(name: &str, version: &str) -> AddonState {
    AddonState {
        name: name.into(),
        version: Some(version.into()),
        state: "Ready".into(),
        ..Default::default()
    }
}

#[test]
fn statuses_count_ready_failed_and_list_the_clusters_not_ready() {
    let mut w = World::new();
    w.env(&[])
        .cluster("a", &[("gpu", "l4")])
        .cluster("b", &[("gpu", "l4")])
        .cluster("c", &[])
        .fleet("l4", &[("gpu", "l4")])
        .addon("app", "2", "x")
        .placement("p", |p| {
            addons(p, &["app"]);
            names(p, &["a", "b", "c"]);
        });
    let connected = |state: Vec<AddonState>| ClusterStatus {
        connection: Some(ConnectionStatus {
            state: ConnectionState::Connected,
            since: None,
            hub_replica: None,
        }),
        kubernetes_version: Some("v1.31.4".into()),
        nodes: Some(NodeCounts { ready: 1, total: 1 }),
        addons: state,
        ..Default::default()
    };
    w.cluster_status("a", connected(vec![ready("app", "2")]));
    w.cluster_status(
        "b",
        connected(vec![AddonState {
            state: "Failed".into(),
            message: Some("configmaps \"app\" is invalid".into()),
            ..ready("app", "2")
        }]),
    );
    // c still runs version 1 Ready: not updated.
    w.cluster_status("c", connected(vec![ready("app", "1")]));
    let t = w.targets();
    let key = (NS.to_string(), "p".to_string());
    let status = aggregate::placement_status(
        &key,
        &w.snapshot.placements[&key],
        &t.placements[&key],
        &w.snapshot,
        &t,
        &BTreeMap::new(),
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!((status.total, status.updated, status.failed), (3, 1, 1));
    let listed: Vec<(&str, &str)> = status
        .clusters
        .iter()
        .map(|d| (d.name.as_str(), d.state.as_str()))
        .collect();
    assert_eq!(listed, [("b", "Failed"), ("c", "Pending")], "failed first");
    let ready_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready_condition.reason, "ClustersFailed");
    assert!(ready_condition.message.contains("is invalid"));

    let akey = (NS.to_string(), "app".to_string());
    let a = aggregate::addon_status(
        &akey,
        &w.snapshot.addons[&akey],
        &w.snapshot,
        &t,
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!((a.clusters, a.ready, a.failed), (Some(3), Some(1), Some(1)));
    let versions: Vec<(&str, i32)> = a
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.count))
        .collect();
    assert_eq!(versions, [("1", 1), ("2", 1)]);

    let e = aggregate::environment_status(
        NS,
        &w.snapshot.environments[&(String::new(), NS.to_string())],
        &w.snapshot,
        &t,
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!((e.clusters, e.connected), (Some(3), Some(3)));
    let counts = e.addons.unwrap();
    assert_eq!((counts.desired, counts.ready, counts.failed), (3, 1, 1));

    let fkey = (NS.to_string(), "l4".to_string());
    let f = aggregate::fleet_status(&fkey, &w.snapshot.fleets[&fkey], &w.snapshot);
    assert_eq!((f.matched, f.ready, f.updated), (2, 2, 2));
    assert_eq!(f.versions[0].version, "v1.31.4");
    assert_eq!(f.versions[0].count, 2);
}

#[test]
fn a_fleet_counts_matched_clusters_whether_or_not_they_ever_connected() {
    let mut w = World::new();
    w.cluster("store-0042", &[("gpu", "l4")])
        .fleet("l4-stores", &[("gpu", "l4")]);
    let key = (NS.to_string(), "l4-stores".to_string());
    let f = aggregate::fleet_status(&key, &w.snapshot.fleets[&key], &w.snapshot);
    assert_eq!((f.matched, f.ready, f.updated), (1, 0, 0));
}

#[test]
fn a_condition_keeps_its_transition_time_while_its_status_holds() {
    let t0 = Timestamp::from_second(1_000).unwrap();
    let t1 = Timestamp::from_second(2_000).unwrap();
    let c0 = aggregate::condition(&[], "Ready", false, "Pending", "0 of 2".into(), Some(1), t0);
    let c1 = aggregate::condition(
        std::slice::from_ref(&c0),
        "Ready",
        false,
        "Pending",
        "1 of 2".into(),
        Some(1),
        t1,
    );
    assert_eq!(c1.last_transition_time, c0.last_transition_time);
    let c2 = aggregate::condition(
        &[c1],
        "Ready",
        true,
        "AllClustersReady",
        "2 of 2".into(),
        Some(1),
        t1,
    );
    assert_eq!(c2.last_transition_time.0, t1);
}

/// A random environment: clusters with random labels, add-ons, placements choosing by name,
/// label and fleet, some Progressive.
fn arb_world() -> impl Strategy<Value = World> {
    let cluster = ("[a-e]", proptest::option::of(prop_oneof!["l4", "a100"]));
    let placement = (
        proptest::collection::vec("[p-s]", 1..3),
        proptest::collection::vec("[a-e]", 0..3),
        proptest::option::of(prop_oneof!["l4", "a100"]),
        any::<bool>(),
        any::<bool>(),
    );
    (
        proptest::collection::vec(cluster, 1..6),
        proptest::collection::vec(placement, 0..5),
        proptest::collection::vec("[p-s]", 0..2),
    )
        .prop_map(|(clusters, placements, required)| {
            let mut w = World::new();
            let required: Vec<&str> = required.iter().map(String::as_str).collect();
            w.env(&required);
            for name in ["p", "q", "r"] {
                w.addon(name, "1", name);
            }
            w.fleet("l4", &[("gpu", "l4")]);
            for (name, gpu) in &clusters {
                match gpu {
                    Some(g) => w.cluster(name, &[("gpu", g)]),
                    None => w.cluster(name, &[]),
                };
            }
            for (i, (addon_names, cluster_names, gpu, fleet, progressive)) in
                placements.into_iter().enumerate()
            {
                w.placement(&format!("pl-{i}"), |p| {
                    let mut seen = std::collections::BTreeSet::new();
                    p.spec.addons = addon_names
                        .into_iter()
                        .filter(|a| seen.insert(a.clone()))
                        .map(|name| PlacedAddon { name, values: None })
                        .collect();
                    p.spec.clusters.names = cluster_names;
                    p.spec.clusters.selector = gpu.map(|g| LabelSelector {
                        match_labels: Some(BTreeMap::from([("gpu".to_string(), g)])),
                        ..Default::default()
                    });
                    if fleet {
                        p.spec.clusters.fleets = vec!["l4".into()];
                    }
                    if progressive {
                        p.spec.strategy.type_ = Some(RolloutType::Progressive);
                    }
                });
            }
            w
        })
}

proptest! {
    /// Every add-on a targeting placement places (and that exists) is in the cluster's target,
    /// once; nothing else is; what the Environment requires is always there, first.
    #[test]
    fn targets_are_the_union_of_what_targets_a_cluster_plus_what_its_environment_requires(w in arb_world()) {
        let t = w.targets();
        let env = &w.snapshot.environments[&(String::new(), NS.to_string())];
        let required: Vec<&str> = env
            .spec
            .addons
            .iter()
            .map(|a| a.name.as_str())
            .filter(|n| w.snapshot.addons.contains_key(&(NS.to_string(), n.to_string())))
            .collect();
        for (key, target) in &t.clusters {
            let mut expected: std::collections::BTreeSet<String> = required.iter().map(|s| s.to_string()).collect();
            for (pkey, res) in &t.placements {
                let _ = pkey;
                if res.targeted.contains(&key.1) {
                    expected.extend(res.releases.keys().cloned());
                }
            }
            let got: Vec<String> = target.releases.iter().map(|r| r.release.name.clone()).collect();
            let unique: std::collections::BTreeSet<String> = got.iter().cloned().collect();
            prop_assert_eq!(unique.len(), got.len(), "each add-on once");
            prop_assert_eq!(&unique, &expected);
            prop_assert_eq!(&got[..required.len()], &required.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]);
            // Whatever the gate holds back, a required add-on is always delivered.
            let delivered: Vec<String> = gate::gate(target, &[]).into_iter().map(|r| r.name).collect();
            for r in &required {
                prop_assert!(delivered.iter().any(|d| d == r), "{} missing from {:?}", r, delivered);
            }
        }
    }

    /// Conflicts resolve to the oldest placement that targets the cluster with the add-on.
    #[test]
    fn the_winner_of_a_conflict_is_the_oldest_targeting_placement(w in arb_world()) {
        let t = w.targets();
        for ((_, cluster), target) in &t.clusters {
            for r in &target.releases {
                let Some(winner) = &r.placement else { continue };
                let oldest = w
                    .snapshot
                    .placements
                    .iter()
                    .filter(|(k, _)| {
                        let res = &t.placements[*k];
                        res.targeted.contains(cluster) && res.releases.contains_key(&r.release.name)
                    })
                    .min_by_key(|(k, p)| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), k.1.clone()))
                    .map(|(k, _)| k.1.clone());
                prop_assert_eq!(Some(winner.clone()), oldest);
            }
        }
    }
}
