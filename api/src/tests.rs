//! Kind-level tests: defaulting, validation paths, printer cells, schemas, serde round trips.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::schema::{components, kind_schema, OBJECT_META};
use crate::table::human_duration;
use crate::*;

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

fn error_fields<K: ApiKind>(obj: &K) -> Vec<String> {
    obj.validate().iter().map(|e| e.field.clone()).collect()
}

#[test]
fn cluster_validation_names_fields() {
    let mut c = Cluster {
        metadata: meta("edge-1", Some("retail")),
        ..Default::default()
    };
    assert!(c.validate().is_empty());
    c.spec.kubernetes_version = Some("1.31".into());
    c.spec.node_pools = vec![
        NodePool {
            name: "gpu".into(),
            replicas: 2,
            ..Default::default()
        },
        NodePool {
            name: "gpu".into(),
            replicas: -1,
            ..Default::default()
        },
    ];
    assert_eq!(
        error_fields(&c),
        [
            "spec.kubernetesVersion",
            "spec.nodePools[1].name",
            "spec.nodePools[1].replicas"
        ]
    );
}

#[test]
fn placement_defaults_and_validation() {
    let mut p = Placement {
        metadata: meta("gpu", Some("retail")),
        ..Default::default()
    };
    p.default_fields();
    assert_eq!(p.spec.strategy.type_, Some(RolloutType::Progressive));
    assert_eq!(
        p.spec.strategy.max_unavailable,
        Some(IntOrString::String("25%".into()))
    );
    assert_eq!(p.spec.strategy.pause_on_failure, Some(true));
    let before = p.clone();
    p.default_fields();
    assert_eq!(p, before, "defaulting is idempotent");

    assert_eq!(error_fields(&p), ["spec.addons", "spec.clusters"]);

    p.spec.addons = vec![PlacedAddon {
        name: "gpu-operator".into(),
        values: None,
    }];
    p.spec.clusters.fleets = vec!["a100".into()];
    p.spec.strategy.max_unavailable = Some(IntOrString::String("150%".into()));
    p.spec.strategy.health_gates = vec![
        HealthGate {
            type_: HealthGateType::AddonsReady,
            min_available: Some(IntOrString::Int(1)),
        },
        HealthGate {
            type_: HealthGateType::AddonsReady,
            min_available: None,
        },
    ];
    assert_eq!(
        error_fields(&p),
        [
            "spec.strategy.maxUnavailable",
            "spec.strategy.healthGates[1].type",
            "spec.strategy.healthGates[0].minAvailable",
        ]
    );
}

#[test]
fn all_at_once_forbids_progressive_knobs() {
    let mut p = Placement {
        metadata: meta("p", Some("e")),
        ..Default::default()
    };
    p.spec.addons = vec![PlacedAddon {
        name: "a".into(),
        values: None,
    }];
    p.spec.clusters.names = vec!["edge-1".into()];
    p.spec.strategy.type_ = Some(RolloutType::AllAtOnce);
    p.spec.strategy.canary = Some(IntOrString::Int(1));
    p.default_fields();
    assert_eq!(p.spec.strategy.max_unavailable, None);
    assert_eq!(error_fields(&p), ["spec.strategy.canary"]);
}

#[test]
fn fleet_defaults_and_selector() {
    let mut f = Fleet {
        metadata: meta("a100", Some("retail")),
        ..Default::default()
    };
    f.default_fields();
    assert_eq!(f.spec.strategy.max_unavailable, Some(IntOrString::Int(1)));
    f.spec.strategy.max_unavailable = Some(IntOrString::Int(0));
    f.spec.selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("gpu".into(), "has space".into())])),
        ..Default::default()
    };
    assert_eq!(
        error_fields(&f),
        [
            "spec.selector.matchLabels[gpu]",
            "spec.strategy.maxUnavailable"
        ]
    );
}

#[test]
fn addon_needs_exactly_one_source() {
    let mut a = ClusterAddon {
        metadata: meta("gpu-operator", Some("retail")),
        ..Default::default()
    };
    a.spec.version = "v25.3.0".into();
    assert_eq!(error_fields(&a), ["spec"]);
    a.spec.helm = Some(HelmChart {
        repository: "https://helm.ngc.nvidia.com/nvidia".into(),
        chart: "gpu-operator".into(),
        version: "v25.3.0".into(),
        ..Default::default()
    });
    assert!(a.validate().is_empty());
    a.spec.manifests = vec![json!({"apiVersion": "v1", "kind": "Namespace"})];
    assert_eq!(
        error_fields(&a),
        ["spec.helm", "spec.manifests[0].metadata.name"]
    );
}

#[test]
fn cluster_cells_follow_columns() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let mut c = Cluster {
        metadata: ObjectMeta {
            creation_timestamp: Some(Time(Timestamp::from_second(1_000_000 - 3_700).unwrap())),
            ..meta("edge-1", Some("retail"))
        },
        ..Default::default()
    };
    let names: Vec<&str> = Cluster::columns().iter().map(|c| c.name).collect();
    assert_eq!(
        &names[..7],
        [
            "Name",
            "Environment",
            "Status",
            "Version",
            "Nodes",
            "GPUs",
            "Age"
        ]
    );
    assert_eq!(
        c.cells(now)[..7],
        [
            json!("edge-1"),
            json!("retail"),
            json!("Pending"),
            Value::Null,
            Value::Null,
            json!(0),
            json!("61m")
        ]
    );
    c.status = Some(ClusterStatus {
        connection: Some(ConnectionStatus {
            state: ConnectionState::Connected,
            since: None,
            hub_replica: None,
        }),
        kubernetes_version: Some("v1.31.4".into()),
        nodes: Some(NodeCounts { ready: 2, total: 3 }),
        gpus: vec![
            GpuInventory {
                model: "A100".into(),
                count: 8,
                allocatable: 8,
            },
            GpuInventory {
                model: "L4".into(),
                count: 2,
                allocatable: 1,
            },
        ],
        ..Default::default()
    });
    let cells = c.cells(now);
    assert_eq!(cells.len(), Cluster::columns().len());
    assert_eq!(
        cells[2..6],
        [
            json!("Connected"),
            json!("v1.31.4"),
            json!("2/3"),
            json!(10)
        ]
    );
    let column = |name: &str| {
        Cluster::columns()
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    assert_eq!(cells[column("GPU-Model")], json!("A100,L4"));
    assert_eq!(cells[column("Addons")], json!("0/0"));
}

#[test]
fn every_kind_has_one_cell_per_column() {
    fn check<K: ApiKind>() {
        let cells = K::default().cells(Timestamp::UNIX_EPOCH);
        assert_eq!(cells.len(), K::columns().len(), "{}", K::INFO.kind);
        assert_eq!(K::columns()[0].format, "name");
        assert!(K::columns().iter().any(|c| c.name == "Age"));
    }
    check::<Environment>();
    check::<Cluster>();
    check::<Fleet>();
    check::<ClusterAddon>();
    check::<Placement>();
}

#[test]
fn human_durations_match_kubectl() {
    for (secs, want) in [
        (-5, "<invalid>"),
        (-1, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ] {
        assert_eq!(human_duration(secs), want, "{secs}s");
    }
}

fn contains_null_type(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("type").is_some_and(|t| {
                t == "null" || t.as_array().is_some_and(|a| a.contains(&json!("null")))
            }) || m.contains_key("nullable")
                || m.values().any(contains_null_type)
        }
        Value::Array(a) => a.iter().any(contains_null_type),
        _ => false,
    }
}

#[test]
fn schemas_are_structural() {
    let s = kind_schema::<Cluster>();
    assert_eq!(
        s["x-kubernetes-group-version-kind"],
        json!([{"group": "edgefleet.io", "kind": "Cluster", "version": "v1alpha1"}])
    );
    assert!(s["properties"]["metadata"]["allOf"][0]["$ref"]
        .as_str()
        .unwrap()
        .ends_with(OBJECT_META));
    let pools = &s["properties"]["spec"]["properties"]["nodePools"];
    assert_eq!(pools["x-kubernetes-list-type"], "map");
    assert_eq!(pools["items"]["required"], json!(["name"]));
    assert!(s["properties"]["spec"]["properties"]["kubernetesVersion"]["description"].is_string());
    assert!(!contains_null_type(&s), "{s:#}");

    let p = kind_schema::<Placement>();
    let max = &p["properties"]["spec"]["properties"]["strategy"]["properties"]["maxUnavailable"];
    assert_eq!(max["x-kubernetes-int-or-string"], true);
    assert!(!contains_null_type(&p));
    let rollout = &p["properties"]["spec"]["properties"]["strategy"]["properties"]["type"];
    assert_eq!(rollout["enum"], json!(["AllAtOnce", "Progressive"]));
    let targets = &p["properties"]["spec"]["properties"]["clusters"]["description"];
    assert!(
        !targets.as_str().unwrap().contains('\n'),
        "line breaks within a paragraph are joined"
    );

    let a = kind_schema::<ClusterAddon>();
    let manifests = &a["properties"]["spec"]["properties"]["manifests"];
    assert_eq!(
        manifests["items"]["x-kubernetes-preserve-unknown-fields"],
        true
    );

    let c = components();
    assert!(c.contains_key(OBJECT_META));
    assert_eq!(
        c[OBJECT_META]["properties"]["finalizers"]["x-kubernetes-list-type"],
        "set"
    );
    assert!(!contains_null_type(&Value::Object(c)));
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]"
}

fn int_or_string() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        (0..100i32).prop_map(IntOrString::Int),
        (0..=100i32).prop_map(|p| IntOrString::String(format!("{p}%")))
    ]
}

prop_compose! {
    fn arb_cluster()(
        n in name(), ns in name(), version in proptest::option::of("v1\\.[0-9]{2}\\.[0-9]"),
        pools in proptest::collection::vec((name(), 0..10i32, proptest::collection::btree_map(name(), name(), 0..3)), 0..4),
        paused in any::<bool>(),
        gpus in proptest::collection::vec((name(), 0..16i32), 0..3),
    ) -> Cluster {
        Cluster {
            api_version: API_VERSION.into(),
            kind: "Cluster".into(),
            metadata: meta(&n, Some(&ns)),
            spec: ClusterSpec {
                kubernetes_version: version,
                node_pools: pools.into_iter().map(|(name, replicas, labels)| NodePool { name, replicas, machine_type: None, labels }).collect(),
                paused,
            },
            status: (!gpus.is_empty()).then(|| ClusterStatus {
                gpus: gpus.into_iter().map(|(model, count)| GpuInventory { model, count, allocatable: count }).collect(),
                ..Default::default()
            }),
        }
    }
}

prop_compose! {
    fn arb_placement()(
        n in name(), addons in proptest::collection::vec(name(), 0..4), fleets in proptest::collection::vec(name(), 0..3),
        max in proptest::option::of(int_or_string()), canary in proptest::option::of(int_or_string()),
        soak in proptest::option::of(0..3600i32), all_at_once in any::<bool>(), paused in any::<bool>(),
        values in proptest::option::of(proptest::collection::btree_map(name(), name(), 0..3).prop_map(|m| json!(m))),
    ) -> Placement {
        Placement {
            api_version: API_VERSION.into(),
            kind: "Placement".into(),
            metadata: meta(&n, Some("retail")),
            spec: PlacementSpec {
                addons: addons.into_iter().map(|name| PlacedAddon { name, values: values.clone() }).collect(),
                clusters: ClusterTargets { fleets, selector: None, names: vec![] },
                strategy: RolloutStrategy {
                    type_: Some(if all_at_once { RolloutType::AllAtOnce } else { RolloutType::Progressive }),
                    canary, max_unavailable: max, min_soak_seconds: soak, pause_on_failure: Some(true),
                    health_gates: vec![HealthGate { type_: HealthGateType::GpuHealthy, min_available: Some(IntOrString::String("90%".into())) }],
                },
                paused,
            },
            status: None,
        }
    }
}

prop_compose! {
    fn arb_addon()(n in name(), version in "v[0-9]{1,2}\\.[0-9]\\.[0-9]", helm in any::<bool>(), chart in name(), report in any::<bool>()) -> ClusterAddon {
        let mut a = ClusterAddon { api_version: API_VERSION.into(), kind: "ClusterAddon".into(), metadata: meta(&n, Some("retail")), ..Default::default() };
        a.spec.version = version.clone();
        a.spec.drift = Some(if report { delivery::DriftMode::Report } else { delivery::DriftMode::Correct });
        if helm {
            a.spec.helm = Some(HelmChart { repository: "oci://registry/charts".into(), chart, version, release_name: None, values: Some(json!({"driver": {"enabled": true}})) });
        } else {
            a.spec.manifests = vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": chart}})];
        }
        a
    }
}

fn round_trips<K: ApiKind>(obj: &K) -> Result<(), TestCaseError> {
    let json = serde_json::to_value(obj).unwrap();
    let back: K = serde_json::from_value(json.clone()).unwrap();
    prop_assert_eq!(&back, obj);
    prop_assert_eq!(serde_json::to_value(&back).unwrap(), json);
    Ok(())
}

proptest! {
    #[test]
    fn clusters_round_trip(c in arb_cluster()) { round_trips(&c)?; }

    #[test]
    fn placements_round_trip(p in arb_placement()) { round_trips(&p)?; }

    #[test]
    fn addons_round_trip(a in arb_addon()) { round_trips(&a)?; }

    #[test]
    fn fleets_and_environments_round_trip(n in name(), v in proptest::option::of("v1\\.[0-9]{2}\\.[0-9]"), max in proptest::option::of(int_or_string()), addons in proptest::collection::vec(name(), 0..3)) {
        let mut f = Fleet { api_version: API_VERSION.into(), kind: "Fleet".into(), metadata: meta(&n, Some("retail")), ..Default::default() };
        f.spec.kubernetes_version = v;
        f.spec.strategy.max_unavailable = max;
        round_trips(&f)?;
        let mut e = Environment { api_version: API_VERSION.into(), kind: "Environment".into(), metadata: meta(&n, None), ..Default::default() };
        e.spec.addons = addons.into_iter().map(|name| AddonRef { name }).collect();
        round_trips(&e)?;
    }

    /// Defaulting never turns a valid object invalid, and is idempotent.
    #[test]
    fn defaulting_is_stable(mut p in arb_placement()) {
        p.default_fields();
        let once = p.clone();
        p.default_fields();
        prop_assert_eq!(p, once);
    }
}

#[test]
fn an_oversized_addon_is_refused_naming_the_field() {
    let mut a = ClusterAddon {
        metadata: meta("big", Some("retail")),
        ..Default::default()
    };
    a.spec.version = "1".into();
    let data = "x".repeat(delivery::MAX_ADDON_SOURCE_BYTES);
    a.spec.manifests = vec![json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": data}
    })];
    let errs = a.validate();
    assert_eq!(error_fields(&a), ["spec.manifests"]);
    assert_eq!(
        errs.iter().next().unwrap().kind,
        crate::validation::ErrorType::TooLong
    );
    // Just under the limit is fine.
    let fits = delivery::MAX_ADDON_SOURCE_BYTES - 200;
    a.spec.manifests[0]["data"]["k"] = json!("x".repeat(fits));
    assert!(a.validate().is_empty(), "{:?}", a.validate());

    a.spec.manifests = vec![];
    a.spec.helm = Some(HelmChart {
        repository: "oci://r/c".into(),
        chart: "c".into(),
        version: "1".into(),
        values: Some(json!(["not", "an", "object"])),
        ..Default::default()
    });
    assert_eq!(error_fields(&a), ["spec.helm.values"]);
}

#[test]
fn a_manifest_that_is_not_an_object_is_refused() {
    let mut a = ClusterAddon {
        metadata: meta("bad", Some("retail")),
        ..Default::default()
    };
    a.spec.version = "1".into();
    a.spec.manifests = vec![json!("kind: ConfigMap")];
    assert_eq!(error_fields(&a), ["spec.manifests[0]"]);
}

#[test]
fn drift_defaults_to_correct_and_is_documented() {
    let mut a = ClusterAddon::default();
    a.default_fields();
    assert_eq!(a.spec.drift, Some(delivery::DriftMode::Correct));
    let schema = kind_schema::<ClusterAddon>();
    let drift = &schema["properties"]["spec"]["properties"]["drift"];
    assert_eq!(drift["enum"], json!(["Correct", "Report"]));
    assert!(drift["description"].as_str().unwrap().contains("Report"));
    let p = kind_schema::<Placement>();
    let values = &p["properties"]["spec"]["properties"]["addons"]["items"]["properties"]["values"];
    assert_eq!(values["x-kubernetes-preserve-unknown-fields"], true);
    assert!(values["description"]
        .as_str()
        .unwrap()
        .contains("merge patch"));
}

#[test]
fn placement_values_must_be_a_small_object() {
    let mut p = Placement {
        metadata: meta("p", Some("e")),
        ..Default::default()
    };
    p.spec.clusters.names = vec!["edge-1".into()];
    p.spec.addons = vec![
        PlacedAddon {
            name: "a".into(),
            values: Some(json!(3)),
        },
        PlacedAddon {
            name: "b".into(),
            values: Some(json!({"k": "x".repeat(delivery::MAX_PLACEMENT_VALUES_BYTES)})),
        },
        PlacedAddon {
            name: "c".into(),
            values: Some(json!({"driver": {"enabled": true}})),
        },
    ];
    assert_eq!(
        error_fields(&p),
        ["spec.addons[0].values", "spec.addons[1].values"]
    );
}

#[test]
fn progress_columns_show_ready_of_desired() {
    let now = Timestamp::UNIX_EPOCH;
    let a = ClusterAddon {
        status: Some(ClusterAddonStatus {
            clusters: Some(3),
            ready: Some(2),
            failed: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let column = |cols: &[table::PrinterColumn], name: &str| {
        cols.iter().position(|c| c.name == name).unwrap()
    };
    let cells = a.cells(now);
    assert_eq!(
        cells[column(ClusterAddon::columns(), "Ready")],
        json!("2/3")
    );
    assert_eq!(cells[column(ClusterAddon::columns(), "Clusters")], json!(3));

    let c = Cluster {
        status: Some(ClusterStatus {
            addons: vec![
                AddonState {
                    name: "a".into(),
                    state: ADDON_STATE_READY.into(),
                    ..Default::default()
                },
                AddonState {
                    name: "b".into(),
                    state: "Pending".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        c.cells(now)[column(Cluster::columns(), "Addons")],
        json!("1/2")
    );

    let e = Environment {
        status: Some(EnvironmentStatus {
            addons: Some(ReleaseCounts {
                desired: 4,
                ready: 3,
                failed: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        e.cells(now)[column(Environment::columns(), "Releases")],
        json!("3/4")
    );
}

proptest! {
    #[test]
    fn statuses_round_trip(n in 0..50i32, version in name(), since in 0..2_000_000_000i64) {
        let mut a = ClusterAddon { api_version: API_VERSION.into(), kind: "ClusterAddon".into(), metadata: meta("a", Some("r")), ..Default::default() };
        a.status = Some(ClusterAddonStatus { clusters: Some(n), ready: Some(n / 2), failed: Some(0), versions: vec![VersionCount { version: version.clone(), count: n }], ..Default::default() });
        round_trips(&a)?;
        let mut c = Cluster { api_version: API_VERSION.into(), kind: "Cluster".into(), metadata: meta("c", Some("r")), ..Default::default() };
        c.status = Some(ClusterStatus { addons: vec![AddonState { name: version.clone(), version: Some("1".into()), state: "Failed".into(), message: Some("edge said no".into()), since: Some(Time(Timestamp::from_second(since).unwrap())) }], ..Default::default() });
        round_trips(&c)?;
        let mut e = Environment { api_version: API_VERSION.into(), kind: "Environment".into(), metadata: meta("e", None), ..Default::default() };
        e.status = Some(EnvironmentStatus { clusters: Some(n), connected: Some(n), addons: Some(ReleaseCounts { desired: n, ready: n, failed: 0 }), ..Default::default() });
        round_trips(&e)?;
    }
}
