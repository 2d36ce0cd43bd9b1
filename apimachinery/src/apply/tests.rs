//! Server-side apply and field management against the real edgefleet schemas: what kubectl
//! users see (`--server-side`, `--field-manager`, `--force-conflicts`,
//! `--show-managed-fields`), written as a stored object going through successive writes.

use std::sync::OnceLock;

use edgefleet_api::schema::{components, kind_schema};
use edgefleet_api::{ApiKind, Cluster, ClusterAddon, Environment, Fleet, Placement, API_VERSION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn compile<K: ApiKind>() -> ObjectSchema {
    ObjectSchema::new(&kind_schema::<K>(), &components()).expect("schema compiles")
}

fn cluster_schema() -> &'static ObjectSchema {
    static S: OnceLock<ObjectSchema> = OnceLock::new();
    S.get_or_init(compile::<Cluster>)
}

fn placement_schema() -> &'static ObjectSchema {
    static S: OnceLock<ObjectSchema> = OnceLock::new();
    S.get_or_init(compile::<Placement>)
}

fn addon_schema() -> &'static ObjectSchema {
    static S: OnceLock<ObjectSchema> = OnceLock::new();
    S.get_or_init(compile::<ClusterAddon>)
}

/// 2025-01-01T00:00:00Z plus `secs`.
fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_735_689_600 + secs).expect("valid timestamp"))
}

fn time_text(secs: i64) -> Value {
    serde_json::to_value(at(secs)).expect("time serializes")
}

// ---------------------------------------------------------------------------------------------
// Fixtures: configurations are built, not pasted.

/// An apply configuration (or a full object) of kind Cluster.
#[derive(Clone)]
struct ClusterConfig(Value);

fn cluster(name: &str) -> ClusterConfig {
    ClusterConfig(json!({
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "retail"},
    }))
}

impl ClusterConfig {
    fn spec(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.0["spec"].is_object() {
            self.0["spec"] = json!({});
        }
        self.0["spec"].as_object_mut().expect("spec is an object")
    }

    fn version(mut self, v: &str) -> Self {
        self.spec().insert("kubernetesVersion".into(), v.into());
        self
    }

    fn paused(mut self, paused: bool) -> Self {
        self.spec().insert("paused".into(), paused.into());
        self
    }

    fn pool(mut self, name: &str, replicas: i32) -> Self {
        let pools = self.spec().entry("nodePools").or_insert_with(|| json!([]));
        pools
            .as_array_mut()
            .expect("nodePools is a list")
            .push(json!({"name": name, "replicas": replicas}));
        self
    }

    /// Sets a field of the last node pool added.
    fn pool_field(mut self, field: &str, value: Value) -> Self {
        let pools = self
            .spec()
            .get_mut("nodePools")
            .and_then(Value::as_array_mut)
            .expect("a pool was added");
        pools.last_mut().expect("a pool was added")[field] = value;
        self
    }

    fn label(mut self, key: &str, value: &str) -> Self {
        // Indexing a missing key of an object inserts it as an empty object.
        self.0["metadata"]["labels"][key] = value.into();
        self
    }

    fn status(mut self, status: Value) -> Self {
        self.0["status"] = status;
        self
    }

    fn build(self) -> Value {
        self.0
    }
}

fn placement(fleets: &[&str], addons: &[&str]) -> Value {
    let addons: Vec<Value> = addons.iter().map(|a| json!({"name": a})).collect();
    json!({
        "apiVersion": API_VERSION,
        "kind": "Placement",
        "metadata": {"name": "gpu-operator", "namespace": "retail"},
        "spec": {"clusters": {"fleets": fleets}, "addons": addons},
    })
}

// ---------------------------------------------------------------------------------------------
// A stand-in for the registry: one stored object, a clock that moves one second per write.

struct Store {
    schema: &'static ObjectSchema,
    object: Option<Value>,
    clock: i64,
}

impl Store {
    fn new(schema: &'static ObjectSchema) -> Self {
        Store {
            schema,
            object: None,
            clock: 0,
        }
    }

    fn tick(&mut self) -> Time {
        self.clock += 1;
        at(self.clock)
    }

    fn try_apply(
        &mut self,
        manager: &str,
        config: &Value,
        force: bool,
        scope: Scope,
    ) -> Result<Value> {
        let now = self.tick();
        let out = apply(ApplyRequest {
            schema: self.schema,
            live: self.object.as_ref(),
            config,
            manager,
            force,
            scope,
            api_version: API_VERSION,
            now,
        })?;
        self.object = Some(out.clone());
        Ok(out)
    }

    fn apply(&mut self, manager: &str, config: &Value) -> Value {
        self.try_apply(manager, config, false, Scope::Main)
            .expect("apply succeeds")
    }

    fn force_apply(&mut self, manager: &str, config: &Value) -> Value {
        self.try_apply(manager, config, true, Scope::Main)
            .expect("forced apply succeeds")
    }

    fn conflicts(&mut self, manager: &str, config: &Value) -> ApplyError {
        let before = self.object.clone();
        let err = self
            .try_apply(manager, config, false, Scope::Main)
            .expect_err("apply conflicts");
        assert_eq!(self.object, before, "a failed apply changes nothing");
        err
    }

    /// A non-apply write of `new` (create when nothing is stored).
    fn update(&mut self, manager: &str, new: Value, scope: Scope) -> Value {
        let now = self.tick();
        let out = record_update(
            self.schema,
            self.object.as_ref(),
            new,
            manager,
            scope,
            API_VERSION,
            now,
        )
        .expect("update is recorded");
        self.object = Some(out.clone());
        out
    }

    fn object(&self) -> &Value {
        self.object.as_ref().expect("an object is stored")
    }

    /// The stored object with `f` applied, as a client's PUT body would be (managedFields
    /// left out, as kubectl edit sends them).
    fn edited(&self, f: impl FnOnce(&mut Value)) -> Value {
        let mut obj = self.object().clone();
        obj["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("managedFields");
        f(&mut obj);
        obj
    }

    /// `(manager, operation, subresource)` of each entry, in stored order.
    fn managers(&self) -> Vec<(String, String, String)> {
        managed_fields(self.object())
            .iter()
            .map(|e| {
                let s = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (s("manager"), s("operation"), s("subresource"))
            })
            .collect()
    }

    fn entry(&self, manager: &str, operation: &str) -> Value {
        managed_fields(self.object())
            .into_iter()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
            .unwrap_or_else(|| panic!("no {operation} entry for {manager}: {:#}", self.object()))
    }

    fn fields(&self, manager: &str, operation: &str) -> Value {
        self.entry(manager, operation)["fieldsV1"].clone()
    }
}

fn managed_fields(obj: &Value) -> Vec<Value> {
    obj["metadata"]
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn mgr(manager: &str, operation: &str, subresource: &str) -> (String, String, String) {
    (manager.into(), operation.into(), subresource.into())
}

fn conflict_fields(err: &ApplyError) -> Vec<(String, String)> {
    match err {
        ApplyError::Conflicts(c) => c
            .iter()
            .map(|c| (c.manager.clone(), c.field.clone()))
            .collect(),
        other => panic!("expected conflicts, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas

#[test]
fn every_kind_schema_compiles() {
    compile::<Environment>();
    compile::<Fleet>();
    let s = compile::<Cluster>();
    let gvk = s.group_version_kind().expect("the root names its kind");
    assert_eq!(
        (gvk.api_version().as_str(), gvk.kind.as_str()),
        (API_VERSION, "Cluster")
    );
    compile::<Placement>();
    compile::<ClusterAddon>();

    // Compiled once per kind and shared across request handlers.
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    shareable(&std::sync::Arc::new(s));
}

#[test]
fn schema_errors_name_the_place() {
    let bad_ref = json!({"type": "object", "properties": {"metadata": {"$ref": "#/components/schemas/Nope"}}});
    assert!(matches!(
        ObjectSchema::new(&bad_ref, &components()),
        Err(SchemaError::UnresolvedRef { ref reference, .. }) if reference == "#/components/schemas/Nope"
    ));
    let no_keys =
        json!({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"});
    assert!(matches!(
        ObjectSchema::new(&no_keys, &components()),
        Err(SchemaError::MissingMapKeys { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Apply: create, re-apply, conflicts

#[test]
fn apply_creates_the_object_and_records_the_applier() {
    let mut store = Store::new(cluster_schema());
    let config = cluster("edge-1")
        .label("region", "eu")
        .version("v1.31.4")
        .pool("gpu", 3)
        .build();
    let obj = store.apply("mgr-a", &config);

    assert_eq!(obj["apiVersion"], API_VERSION);
    assert_eq!(obj["kind"], "Cluster");
    assert_eq!(obj["metadata"]["name"], "edge-1");
    assert_eq!(obj["spec"], config["spec"]);
    assert_eq!(
        managed_fields(&obj),
        [json!({
            "apiVersion": API_VERSION,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:region": {}}},
                "f:spec": {
                    "f:kubernetesVersion": {},
                    "f:nodePools": {"k:{\"name\":\"gpu\"}": {".": {}, "f:name": {}, "f:replicas": {}}},
                },
            },
            "manager": "mgr-a",
            "operation": "Apply",
            "time": time_text(1),
        })]
    );
}

#[test]
fn reapplying_the_same_configuration_changes_nothing() {
    let mut store = Store::new(cluster_schema());
    let config = cluster("edge-1")
        .label("region", "eu")
        .version("v1.31.4")
        .pool("gpu", 3)
        .build();
    let first = store.apply("mgr-a", &config);
    let second = store.apply("mgr-a", &config);
    assert_eq!(
        serde_json::to_string(&first).ok(),
        serde_json::to_string(&second).ok()
    );
}

#[test]
fn second_manager_conflicts_until_it_forces() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );

    let upgrade = cluster("edge-1").version("v1.32.0").build();
    let err = store.conflicts("mgr-b", &upgrade);
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "mgr-a": .spec.kubernetesVersion"#
    );
    let ApplyError::Conflicts(conflicts) = &err else {
        unreachable!()
    };
    assert_eq!(conflicts[0].cause_message(), r#"conflict with "mgr-a""#);
    assert_eq!(conflicts[0].field, ".spec.kubernetesVersion");

    let obj = store.force_apply("mgr-b", &upgrade);
    assert_eq!(obj["spec"]["kubernetesVersion"], "v1.32.0");
    assert_eq!(
        store.fields("mgr-b", "Apply"),
        json!({"f:spec": {"f:kubernetesVersion": {}}})
    );
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {"f:paused": {}}}),
        "mgr-a lost the version"
    );

    // mgr-a applying its old configuration again now conflicts with mgr-b.
    let err = store.conflicts(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "mgr-b": .spec.kubernetesVersion"#
    );
}

#[test]
fn forced_apply_drops_an_owner_left_with_nothing() {
    let mut store = Store::new(cluster_schema());
    store.apply("mgr-a", &cluster("edge-1").version("v1.31.4").build());
    store.force_apply("mgr-b", &cluster("edge-1").version("v1.32.0").build());
    assert_eq!(store.managers(), [mgr("mgr-b", "Apply", "")]);
}

#[test]
fn several_conflicts_are_grouped_by_owner() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    let edited = store.edited(|o| o["spec"]["nodePools"] = json!([{"name": "gpu", "replicas": 1}]));
    store.update("kubectl-edit", edited, Scope::Main);

    let config = cluster("edge-1")
        .version("v1.32.0")
        .paused(false)
        .pool("gpu", 2)
        .build();
    let err = store.conflicts("mgr-b", &config);
    assert_eq!(
        err.message(),
        "Apply failed with 3 conflicts: conflicts with \"kubectl-edit\" using edgefleet.io/v1alpha1:\n\
         - .spec.nodePools[name=\"gpu\"].replicas\n\
         conflicts with \"mgr-a\":\n\
         - .spec.kubernetesVersion\n\
         - .spec.paused"
    );
}

#[test]
fn applying_the_same_value_shares_ownership() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    store.apply("mgr-b", &cluster("edge-1").version("v1.31.4").build());
    let version = json!({"f:spec": {"f:kubernetesVersion": {}}});
    assert_eq!(store.fields("mgr-b", "Apply"), version);

    // mgr-a lets go of the version: mgr-b still holds it, so it stays.
    let obj = store.apply("mgr-a", &cluster("edge-1").paused(true).build());
    assert_eq!(obj["spec"]["kubernetesVersion"], "v1.31.4");
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {"f:paused": {}}})
    );

    // Now mgr-b lets go too: nobody owns it, it goes.
    let obj = store.apply("mgr-b", &cluster("edge-1").build());
    assert_eq!(obj["spec"], json!({"paused": true}));
    assert_eq!(store.managers(), [mgr("mgr-a", "Apply", "")]);
}

#[test]
fn a_field_the_applier_stops_applying_is_removed() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1")
            .label("region", "eu")
            .label("gpu", "a100")
            .version("v1.31.4")
            .build(),
    );
    let obj = store.apply("mgr-a", &cluster("edge-1").label("region", "eu").build());
    assert_eq!(obj["metadata"]["labels"], json!({"region": "eu"}));
    assert!(
        obj.get("spec").is_none(),
        "spec held only the dropped field: {obj:#}"
    );
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:metadata": {"f:labels": {"f:region": {}}}})
    );
    // Identity survives pruning.
    assert_eq!(obj["metadata"]["name"], "edge-1");
    assert_eq!(obj["metadata"]["namespace"], "retail");
}

#[test]
fn a_field_the_applier_stops_applying_stays_when_an_updater_owns_it() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    let edited = store.edited(|o| o["spec"]["paused"] = json!(false));
    store.update("kubectl-edit", edited, Scope::Main);
    let obj = store.apply("mgr-a", &cluster("edge-1").version("v1.31.4").build());
    assert_eq!(obj["spec"]["paused"], false);
}

#[test]
fn fields_nobody_owns_survive_an_applier_dropping_a_sibling() {
    let mut store = Store::new(cluster_schema());
    let full = cluster("edge-1")
        .version("v1.31.4")
        .paused(true)
        .pool("gpu", 2)
        .build();
    store.update("creator", full, Scope::Main);
    // Forget all ownership (`[{}]`), as objects written before field management look.
    let reset = store.edited(|o| o["metadata"]["managedFields"] = json!([{}]));
    store.update("creator", reset, Scope::Main);
    assert!(store.managers().is_empty());

    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    store.apply("mgr-b", &cluster("edge-1").paused(true).build());
    let obj = store.apply("mgr-a", &cluster("edge-1").build());
    assert_eq!(
        obj["spec"],
        json!({"paused": true, "nodePools": [{"name": "gpu", "replicas": 2}]})
    );
}

// ---------------------------------------------------------------------------------------------
// Update operations

#[test]
fn create_records_every_field_as_an_update() {
    let mut store = Store::new(cluster_schema());
    let obj = store.update(
        "kubectl-create",
        cluster("edge-1")
            .label("region", "eu")
            .version("v1.31.4")
            .pool("gpu", 3)
            .build(),
        Scope::Main,
    );
    assert_eq!(
        managed_fields(&obj),
        [json!({
            "apiVersion": API_VERSION,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:region": {}}},
                "f:spec": {
                    ".": {},
                    "f:kubernetesVersion": {},
                    "f:nodePools": {".": {}, "k:{\"name\":\"gpu\"}": {".": {}, "f:name": {}, "f:replicas": {}}},
                },
            },
            "manager": "kubectl-create",
            "operation": "Update",
            "time": time_text(1),
        })]
    );
}

#[test]
fn an_update_takes_the_fields_it_changes() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").pool("gpu", 3).build(),
    );
    let created_at = store.entry("mgr-a", "Apply")["time"].clone();

    let edited = store.edited(|o| o["spec"]["nodePools"][0]["replicas"] = json!(5));
    store.update("kubectl-edit", edited, Scope::Main);
    assert_eq!(
        store.fields("kubectl-edit", "Update"),
        json!({"f:spec": {"f:nodePools": {"k:{\"name\":\"gpu\"}": {"f:replicas": {}}}}})
    );
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {"f:kubernetesVersion": {}, "f:nodePools": {"k:{\"name\":\"gpu\"}": {".": {}, "f:name": {}}}}})
    );
    assert_eq!(
        store.entry("mgr-a", "Apply")["time"],
        created_at,
        "losing fields does not touch an entry's time"
    );
    assert_eq!(
        store.managers(),
        [mgr("mgr-a", "Apply", ""), mgr("kubectl-edit", "Update", "")],
        "appliers sort before updaters"
    );

    // The applier re-asserting its value now conflicts with the updater.
    let err = store.conflicts(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").pool("gpu", 3).build(),
    );
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using edgefleet.io/v1alpha1: \
         .spec.nodePools[name=\"gpu\"].replicas"
    );
}

#[test]
fn an_update_that_changes_nothing_leaves_managed_fields_alone() {
    let mut store = Store::new(cluster_schema());
    store.apply("mgr-a", &cluster("edge-1").version("v1.31.4").build());
    let before = store.object().clone();
    let same = store.edited(|_| {});
    let after = store.update("kubectl-edit", same, Scope::Main);
    assert_eq!(after, before);
}

#[test]
fn an_updater_keeps_its_fields_and_time_across_unrelated_writes() {
    let mut store = Store::new(cluster_schema());
    store.update(
        "ctl",
        cluster("edge-1").version("v1.31.4").paused(true).build(),
        Scope::Main,
    );
    let edited = store.edited(|o| o["spec"]["paused"] = json!(false));
    store.update("ctl", edited, Scope::Main);
    assert_eq!(
        store.entry("ctl", "Update")["time"],
        time_text(2),
        "a changing write stamps the entry"
    );
    assert_eq!(
        store.fields("ctl", "Update"),
        json!({"f:spec": {".": {}, "f:kubernetesVersion": {}, "f:paused": {}}}),
        "the writer keeps what it owned and what it changed"
    );
    let edited = store.edited(|o| o["metadata"]["labels"] = json!({"a": "b"}));
    store.update("other", edited, Scope::Main);
    assert_eq!(store.entry("ctl", "Update")["time"], time_text(2));
}

#[test]
fn removed_fields_leave_every_set() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1")
            .label("region", "eu")
            .label("tier", "gold")
            .build(),
    );
    let edited = store.edited(|o| {
        o["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("tier");
    });
    store.update("kubectl-edit", edited, Scope::Main);
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:metadata": {"f:labels": {"f:region": {}}}})
    );
    assert_eq!(
        store.managers(),
        [mgr("mgr-a", "Apply", "")],
        "removing owns nothing"
    );

    let edited = store.edited(|o| {
        o["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("labels");
    });
    store.update("kubectl-edit", edited, Scope::Main);
    assert!(
        store.object()["metadata"].get("managedFields").is_none(),
        "no owner left: {:#}",
        store.object()
    );
}

#[test]
fn server_owned_metadata_is_never_managed() {
    let mut store = Store::new(cluster_schema());
    let mut full = cluster("edge-1").label("region", "eu").build();
    full["metadata"]["uid"] = json!("0b6e8f2c-0000-4000-8000-000000000001");
    full["metadata"]["resourceVersion"] = json!("7");
    full["metadata"]["generation"] = json!(1);
    full["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    full["metadata"]["annotations"] = json!({"note": "x"});
    full["metadata"]["finalizers"] = json!(["edgefleet.io/tunnel"]);
    full["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "Namespace", "name": "retail", "uid": "u-1"}]);
    store.update("creator", full, Scope::Main);
    assert_eq!(
        store.fields("creator", "Update"),
        json!({"f:metadata": {
            "f:annotations": {".": {}, "f:note": {}},
            "f:finalizers": {".": {}, "v:\"edgefleet.io/tunnel\"": {}},
            "f:labels": {".": {}, "f:region": {}},
            "f:ownerReferences": {".": {}, "k:{\"uid\":\"u-1\"}": {
                ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}
            }},
        }})
    );
}

// ---------------------------------------------------------------------------------------------
// Granularity: map-lists, sets, atomic lists, free-form values

#[test]
fn map_list_items_are_owned_one_by_one() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1")
            .pool("gpu", 3)
            .pool_field("machineType", json!("a100"))
            .build(),
    );
    let obj = store.apply("mgr-b", &cluster("edge-1").pool("cpu", 2).build());
    let names: Vec<&Value> = obj["spec"]["nodePools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert_eq!(
        names,
        ["gpu", "cpu"],
        "live items keep their place, new ones follow"
    );

    let err = store.conflicts(
        "mgr-b",
        &cluster("edge-1").pool("cpu", 2).pool("gpu", 4).build(),
    );
    assert_eq!(
        conflict_fields(&err),
        [(
            "mgr-a".into(),
            ".spec.nodePools[name=\"gpu\"].replicas".into()
        )]
    );
    store.force_apply(
        "mgr-b",
        &cluster("edge-1").pool("cpu", 2).pool("gpu", 4).build(),
    );

    // mgr-a drops the gpu pool: mgr-b still owns the item, its name and replicas; the machine
    // type only mgr-a set goes.
    let obj = store.apply("mgr-a", &cluster("edge-1").build());
    assert_eq!(
        obj["spec"]["nodePools"],
        json!([{"name": "cpu", "replicas": 2}, {"name": "gpu", "replicas": 4}])
    );
    assert!(store.managers().iter().all(|(m, _, _)| m != "mgr-a"));
}

#[test]
fn shared_map_list_items_follow_the_config_order() {
    let names = |obj: &Value| -> Vec<String> {
        let pools = obj["spec"]["nodePools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pools
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut store = Store::new(cluster_schema());
    store.apply("mgr-a", &cluster("edge-1").pool("a", 1).build());
    store.apply("mgr-b", &cluster("edge-1").pool("x", 1).build());
    let obj = store.apply(
        "mgr-a",
        &cluster("edge-1").pool("a", 1).pool("b", 1).build(),
    );
    assert_eq!(
        names(&obj),
        ["a", "x", "b"],
        "new items go after the live ones"
    );
    // Reordering: the applier's items take its order; others' items keep their place
    // relative to the items around them, as SMD merges them.
    let obj = store.apply(
        "mgr-a",
        &cluster("edge-1").pool("b", 1).pool("a", 1).build(),
    );
    assert_eq!(names(&obj), ["x", "b", "a"]);
}

#[test]
fn set_items_are_owned_by_value() {
    let mut store = Store::new(placement_schema());
    store.apply("mgr-a", &placement(&["a100", "h100"], &["gpu-operator"]));
    let obj = store.apply("mgr-b", &placement(&["l4"], &["dcgm-exporter"]));
    assert_eq!(
        obj["spec"]["clusters"]["fleets"],
        json!(["a100", "h100", "l4"])
    );
    assert_eq!(
        obj["spec"]["addons"],
        json!([{"name": "gpu-operator"}, {"name": "dcgm-exporter"}])
    );
    assert_eq!(
        store.fields("mgr-b", "Apply"),
        json!({"f:spec": {
            "f:addons": {"k:{\"name\":\"dcgm-exporter\"}": {".": {}, "f:name": {}}},
            "f:clusters": {"f:fleets": {"v:\"l4\"": {}}},
        }})
    );
    let obj = store.apply("mgr-a", &placement(&["h100"], &["gpu-operator"]));
    assert_eq!(obj["spec"]["clusters"]["fleets"], json!(["h100", "l4"]));
}

#[test]
fn atomic_lists_are_one_field_and_free_form_maps_are_granular() {
    let mut store = Store::new(addon_schema());
    let manifest = |replicas: i64| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"n": replicas}});
    let config = |manifests: Value, values: Value| {
        json!({
            "apiVersion": API_VERSION, "kind": "ClusterAddon", "metadata": {"name": "gpu-operator", "namespace": "retail"},
            "spec": {"version": "v25.3.0", "manifests": manifests, "helm": {"values": values}},
        })
    };
    store.apply(
        "mgr-a",
        &config(
            json!([manifest(1)]),
            json!({"driver": {"enabled": true, "args": ["-v"]}}),
        ),
    );
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {
            "f:helm": {"f:values": {"f:driver": {".": {}, "f:args": {}, "f:enabled": {}}}},
            "f:manifests": {},
            "f:version": {},
        }})
    );
    // Another manager adding a value next to mgr-a's is no conflict; touching one manifest is.
    store.apply(
        "mgr-b",
        &config(json!([manifest(1)]), json!({"toolkit": {"enabled": false}})),
    );
    let err = store.conflicts("mgr-c", &config(json!([manifest(2)]), json!({})));
    assert_eq!(
        conflict_fields(&err),
        [
            ("mgr-a".into(), ".spec.manifests".into()),
            ("mgr-b".into(), ".spec.manifests".into())
        ]
    );
    let err = store.conflicts(
        "mgr-c",
        &config(json!([manifest(1)]), json!({"driver": {"args": ["-vv"]}})),
    );
    assert_eq!(
        conflict_fields(&err),
        [("mgr-a".into(), ".spec.helm.values.driver.args".into())]
    );
}

// ---------------------------------------------------------------------------------------------
// Scopes

#[test]
fn status_is_its_own_scope() {
    let mut store = Store::new(cluster_schema());
    let with_status = cluster("edge-1")
        .version("v1.31.4")
        .status(json!({"kubernetesVersion": "v1.30.0"}))
        .build();
    let obj = store.apply("mgr-a", &with_status);
    assert!(
        obj.get("status").is_none(),
        "the main resource ignores status"
    );
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {"f:kubernetesVersion": {}}})
    );

    // The hub reports status through the subresource; spec in that configuration is ignored.
    let report = cluster("edge-1")
        .version("v9.9.9")
        .status(json!({"kubernetesVersion": "v1.31.4", "nodes": {"ready": 2, "total": 3}}))
        .build();
    let obj = store
        .try_apply("edgefleet-hub", &report, false, Scope::Status)
        .expect("status apply");
    assert_eq!(obj["spec"]["kubernetesVersion"], "v1.31.4");
    assert_eq!(obj["status"]["nodes"], json!({"ready": 2, "total": 3}));
    assert_eq!(
        store.managers(),
        [
            mgr("mgr-a", "Apply", ""),
            mgr("edgefleet-hub", "Apply", "status")
        ]
    );
    assert_eq!(
        store.fields("edgefleet-hub", "Apply"),
        json!({"f:status": {"f:kubernetesVersion": {}, "f:nodes": {"f:ready": {}, "f:total": {}}}})
    );

    // A status update by another writer takes the field it changes, under the subresource.
    let edited = store.edited(|o| o["status"]["nodes"]["ready"] = json!(3));
    store.update("status-fixer", edited, Scope::Status);
    assert_eq!(store.managers()[2], mgr("status-fixer", "Update", "status"));
    assert_eq!(
        store.fields("status-fixer", "Update"),
        json!({"f:status": {"f:nodes": {"f:ready": {}}}})
    );

    // The hub re-applying its report now conflicts, naming the subresource.
    let err = store
        .try_apply("edgefleet-hub", &report, false, Scope::Status)
        .expect_err("conflict");
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"status-fixer\" with subresource \"status\" using \
         edgefleet.io/v1alpha1: .status.nodes.ready"
    );
}

#[test]
fn a_main_update_does_not_take_status() {
    let mut store = Store::new(cluster_schema());
    store.update(
        "creator",
        cluster("edge-1").version("v1.31.4").build(),
        Scope::Main,
    );
    let edited = store.edited(|o| {
        o["spec"]["paused"] = json!(true);
        o["status"] = json!({"kubernetesVersion": "v1.31.4"});
    });
    store.update("editor", edited, Scope::Main);
    assert_eq!(
        store.fields("editor", "Update"),
        json!({"f:spec": {"f:paused": {}}})
    );
}

// ---------------------------------------------------------------------------------------------
// Validation of the applied configuration

fn apply_error(config: Value) -> ApplyError {
    Store::new(cluster_schema())
        .try_apply("mgr", &config, false, Scope::Main)
        .expect_err("rejected")
}

#[test]
fn a_configuration_must_name_its_version_and_kind() {
    let mut no_kind = cluster("edge-1").build();
    no_kind.as_object_mut().expect("object").remove("kind");
    assert_eq!(
        apply_error(no_kind),
        ApplyError::InvalidConfig("kind must be set in the apply configuration".into())
    );

    let mut no_version = cluster("edge-1").build();
    no_version
        .as_object_mut()
        .expect("object")
        .remove("apiVersion");
    assert!(
        matches!(apply_error(no_version), ApplyError::InvalidConfig(m) if m.contains("apiVersion"))
    );

    let mut other_version = cluster("edge-1").build();
    other_version["apiVersion"] = json!("edgefleet.io/v1");
    assert!(
        matches!(apply_error(other_version), ApplyError::InvalidConfig(m) if m.contains("Incorrect version"))
    );

    let mut other_kind = cluster("edge-1").build();
    other_kind["kind"] = json!("Fleet");
    assert!(
        matches!(apply_error(other_kind), ApplyError::InvalidConfig(m) if m.contains("invalid object type"))
    );
}

#[test]
fn a_configuration_must_fit_the_schema() {
    let mut unknown = cluster("edge-1").version("v1.31.4").build();
    unknown["spec"]["replicas"] = json!(3);
    assert_eq!(
        apply_error(unknown),
        ApplyError::InvalidConfig(".spec.replicas: field not declared in schema".into())
    );

    let wrong_type = cluster("edge-1")
        .pool("gpu", 1)
        .pool_field("replicas", json!("three"))
        .build();
    assert_eq!(
        apply_error(wrong_type),
        ApplyError::InvalidConfig(
            ".spec.nodePools[name=\"gpu\"].replicas: expected numeric (int or float), got string"
                .into()
        )
    );

    let mut no_key = cluster("edge-1").build();
    no_key["spec"] = json!({"nodePools": [{"replicas": 1}]});
    assert!(matches!(apply_error(no_key), ApplyError::InvalidConfig(m)
        if m.starts_with(".spec.nodePools: element 0: associative list with keys has an element that omits all key fields")));

    let duplicate = cluster("edge-1").pool("gpu", 1).pool("gpu", 2).build();
    assert_eq!(
        apply_error(duplicate),
        ApplyError::InvalidConfig(
            ".spec.nodePools: duplicate entries for key [name=\"gpu\"]".into()
        )
    );

    let mut managed = cluster("edge-1").build();
    managed["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply_error(managed),
        ApplyError::InvalidConfig("metadata.managedFields must be nil".into())
    );
}

#[test]
fn apply_needs_a_field_manager() {
    let err =
        Store::new(cluster_schema()).try_apply("", &cluster("edge-1").build(), false, Scope::Main);
    assert_eq!(
        err,
        Err(ApplyError::InvalidConfig(
            "fieldManager is required for apply requests".into()
        ))
    );
}

#[test]
fn int_or_string_fields_are_scalars() {
    let mut store = Store::new(placement_schema());
    let mut config = placement(&["a100"], &["gpu-operator"]);
    config["spec"]["strategy"] = json!({"maxUnavailable": "25%"});
    store.apply("mgr-a", &config);
    config["spec"]["strategy"]["maxUnavailable"] = json!(2);
    let err = store.conflicts("mgr-b", &config);
    assert_eq!(
        conflict_fields(&err),
        [("mgr-a".into(), ".spec.strategy.maxUnavailable".into())]
    );
    let obj = store.force_apply("mgr-b", &config);
    assert_eq!(obj["spec"]["strategy"]["maxUnavailable"], 2);
}

#[test]
fn applying_null_owns_the_field_and_leaves_it_unset() {
    let mut store = Store::new(cluster_schema());
    store.update(
        "creator",
        cluster("edge-1").version("v1.31.4").paused(true).build(),
        Scope::Main,
    );
    let mut config = cluster("edge-1").build();
    config["spec"] = json!({"kubernetesVersion": null});
    let err = store.conflicts("mgr-a", &config);
    assert_eq!(
        conflict_fields(&err),
        [("creator".into(), ".spec.kubernetesVersion".into())]
    );
    let obj = store.force_apply("mgr-a", &config);
    assert_eq!(obj["spec"], json!({"paused": true}));
    assert_eq!(
        store.fields("mgr-a", "Apply"),
        json!({"f:spec": {"f:kubernetesVersion": {}}})
    );
    let again = store.apply("mgr-a", &config);
    assert_eq!(again, obj, "re-applying the null is a no-op");
}

// ---------------------------------------------------------------------------------------------
// managedFields sent by clients, and stored ones

#[test]
fn clients_reset_managed_fields_with_an_empty_list_or_one_empty_entry() {
    for reset in [json!([]), json!([{}])] {
        let mut store = Store::new(cluster_schema());
        store.apply("mgr-a", &cluster("edge-1").version("v1.31.4").build());
        let edited = store.edited(|o| o["metadata"]["managedFields"] = reset.clone());
        let obj = store.update("kubectl", edited, Scope::Main);
        assert!(
            obj["metadata"].get("managedFields").is_none(),
            "{reset} resets: {obj:#}"
        );
    }
}

#[test]
fn clients_replace_managed_fields_with_a_valid_list() {
    let mut store = Store::new(cluster_schema());
    store.apply(
        "mgr-a",
        &cluster("edge-1").version("v1.31.4").paused(true).build(),
    );
    let handed_over = json!([{
        "manager": "new-owner", "operation": "Apply", "apiVersion": API_VERSION, "time": "2024-06-01T00:00:00Z",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:kubernetesVersion": {}, "f:paused": {}}},
    }]);
    let edited = store.edited(|o| o["metadata"]["managedFields"] = handed_over.clone());
    let obj = store.update("kubectl", edited, Scope::Main);
    assert_eq!(
        managed_fields(&obj),
        handed_over.as_array().cloned().unwrap_or_default()
    );

    // Through the status subresource the stored entries win.
    let edited = store.edited(|o| o["metadata"]["managedFields"] = json!([]));
    let obj = store.update("kubectl", edited, Scope::Status);
    assert_eq!(
        managed_fields(&obj),
        handed_over.as_array().cloned().unwrap_or_default()
    );
}

#[test]
fn malformed_managed_fields_are_rejected_when_sent_and_dropped_when_stored() {
    let mut store = Store::new(cluster_schema());
    store.apply("mgr-a", &cluster("edge-1").version("v1.31.4").build());
    let bad = json!([{"manager": "x", "operation": "Replace", "apiVersion": API_VERSION, "fieldsType": "FieldsV1"}]);
    let edited = store.edited(|o| o["metadata"]["managedFields"] = bad.clone());
    let err = record_update(
        cluster_schema(),
        store.object.as_ref(),
        edited,
        "kubectl",
        Scope::Main,
        API_VERSION,
        at(99),
    )
    .expect_err("rejected");
    assert!(
        matches!(err, ApplyError::InvalidManagedFields(ref m) if m.contains("operation")),
        "{err:?}"
    );

    let bad_fields = json!([{"manager": "x", "operation": "Update", "apiVersion": API_VERSION, "fieldsType": "FieldsV1", "fieldsV1": {"spec": {}}}]);
    let edited = store.edited(|o| o["metadata"]["managedFields"] = bad_fields.clone());
    assert!(matches!(
        record_update(
            cluster_schema(),
            store.object.as_ref(),
            edited,
            "kubectl",
            Scope::Main,
            API_VERSION,
            at(99)
        ),
        Err(ApplyError::InvalidManagedFields(_))
    ));

    // Damaged stored entries: an apply cannot trust them, an update starts over.
    let mut damaged = store.object().clone();
    damaged["metadata"]["managedFields"] = bad;
    store.object = Some(damaged.clone());
    assert!(matches!(
        store.try_apply("mgr-a", &cluster("edge-1").build(), false, Scope::Main),
        Err(ApplyError::InvalidManagedFields(_))
    ));
    let edited = store.edited(|o| o["spec"]["paused"] = json!(true));
    store.update("kubectl-edit", edited, Scope::Main);
    assert_eq!(store.managers(), [mgr("kubectl-edit", "Update", "")]);
}

#[test]
fn stored_sets_follow_lists_that_became_atomic() {
    // An entry written when `manifests` was item-by-item: its owner now owns the list whole.
    let mut store = Store::new(addon_schema());
    let addon = json!({
        "apiVersion": API_VERSION, "kind": "ClusterAddon", "metadata": {"name": "a", "namespace": "retail"},
        "spec": {"version": "v1", "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]},
    });
    store.update("creator", addon, Scope::Main);
    let old_style = json!([{
        "manager": "creator", "operation": "Update", "apiVersion": API_VERSION, "time": "2024-06-01T00:00:00Z",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:manifests": {".": {}, "i:0": {"f:kind": {}}}, "f:version": {}}},
    }]);
    let edited = store.edited(|o| o["metadata"]["managedFields"] = old_style);
    store.update("creator", edited, Scope::Main);
    assert_eq!(
        store.fields("creator", "Update"),
        json!({"f:spec": {"f:manifests": {}, "f:version": {}}})
    );
}

#[test]
fn update_entries_are_capped() {
    let mut store = Store::new(cluster_schema());
    store.apply("applier", &cluster("edge-1").build());
    for i in 0..12 {
        let edited = store.edited(|o| o["metadata"]["labels"][format!("l{i}")] = json!("x"));
        store.update(&format!("writer-{i:02}"), edited, Scope::Main);
    }
    let managers = store.managers();
    let updaters: Vec<&String> = managers
        .iter()
        .filter(|(_, op, _)| op == "Update")
        .map(|(m, _, _)| m)
        .collect();
    assert_eq!(updaters.len(), managed::MAX_UPDATE_MANAGERS);
    assert!(
        updaters.contains(&&"ancient-changes".to_owned()),
        "{updaters:?}"
    );
    assert_eq!(
        store.fields("ancient-changes", "Update"),
        json!({"f:metadata": {"f:labels": {".": {}, "f:l0": {}, "f:l1": {}, "f:l2": {}}}})
    );
}

// ---------------------------------------------------------------------------------------------
// fieldsV1 encoding

fn set_of(paths: &[Vec<PathElement>]) -> FieldSet {
    paths.iter().map(|p| Path::new(p.clone())).collect()
}

fn f(name: &str) -> PathElement {
    PathElement::field(name)
}

#[test]
fn fields_v1_matches_kube_encoding() {
    // The shapes kube-apiserver writes (Kubernetes docs examples, on our fields): a struct
    // field only through its children, a map entry, a keyed item that is also a parent.
    let set = set_of(&[
        vec![f("metadata"), f("labels"), f("region")],
        vec![f("spec"), f("kubernetesVersion")],
        vec![
            f("spec"),
            f("nodePools"),
            PathElement::key([("name", json!("gpu"))]),
        ],
        vec![
            f("spec"),
            f("nodePools"),
            PathElement::key([("name", json!("gpu"))]),
            f("name"),
        ],
        vec![
            f("spec"),
            f("nodePools"),
            PathElement::key([("name", json!("gpu"))]),
            f("replicas"),
        ],
    ]);
    let kube = r#"{"f:metadata":{"f:labels":{"f:region":{}}},"f:spec":{"f:kubernetesVersion":{},"f:nodePools":{"k:{\"name\":\"gpu\"}":{".":{},"f:name":{},"f:replicas":{}}}}}"#;
    assert_eq!(set.to_fields_v1().to_string(), kube);
    assert_eq!(
        FieldSet::from_fields_v1(&serde_json::from_str(kube).expect("json")),
        Ok(set)
    );
}

#[test]
fn fields_v1_orders_elements_as_kube_does() {
    // Fields, then keys (multi-field keys sorted by field name), then set values (numbers,
    // strings, booleans), then indices; "." always first.
    let set = set_of(&[
        vec![f("spec"), PathElement::Index(1)],
        vec![f("spec"), PathElement::value(true)],
        vec![f("spec"), PathElement::value("fleet-a")],
        vec![f("spec"), PathElement::value(7)],
        vec![
            f("spec"),
            PathElement::key([("protocol", json!("TCP")), ("port", json!(443))]),
        ],
        vec![f("spec"), PathElement::key([("name", json!("a<b"))])],
        vec![f("spec"), f("zone")],
        vec![f("spec")],
    ]);
    assert_eq!(
        set.to_fields_v1().to_string(),
        r#"{"f:spec":{".":{},"f:zone":{},"k:{\"name\":\"a\\u003cb\"}":{},"k:{\"port\":443,\"protocol\":\"TCP\"}":{},"v:7":{},"v:\"fleet-a\"":{},"v:true":{},"i:1":{}}}"#
    );
}

#[test]
fn fields_v1_decoding_normalizes_and_rejects_garbage() {
    let messy: Value = serde_json::from_str(
        r#"{"f:spec":{"f:paused":{},"z:future":{},".":{},"f:kubernetesVersion":{"f:nested":{}}}}"#,
    )
    .expect("json");
    let set = FieldSet::from_fields_v1(&messy).expect("decodes");
    assert_eq!(
        set.to_fields_v1().to_string(),
        r#"{"f:spec":{".":{},"f:kubernetesVersion":{"f:nested":{}},"f:paused":{}}}"#
    );
    for bad in [
        r#"{"":{}}"#,
        r#"{"x":{}}"#,
        r#"{":":{}}"#,
        r#"{"f:a":1}"#,
        r#"{"f:a":[]}"#,
        r#"{"k:[1]":{}}"#,
        r#"{"v:1 2":{}}"#,
        r#"{"i:-1":{}}"#,
    ] {
        let value: Value = serde_json::from_str(bad).expect("json");
        assert!(
            FieldSet::from_fields_v1(&value).is_err(),
            "{bad} is rejected"
        );
    }
}

#[test]
fn paths_print_as_kubernetes_prints_them() {
    let path = Path::new(vec![
        f("spec"),
        f("nodePools"),
        PathElement::key([("name", json!("gpu"))]),
        f("replicas"),
    ]);
    assert_eq!(path.to_string(), r#".spec.nodePools[name="gpu"].replicas"#);
    let path = Path::new(vec![
        f("spec"),
        f("clusters"),
        f("fleets"),
        PathElement::value("a\"b"),
    ]);
    assert_eq!(path.to_string(), r#".spec.clusters.fleets[="a\"b"]"#);
}

// ---------------------------------------------------------------------------------------------
// Properties

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,5}"
}

prop_compose! {
    fn cluster_config()(
        version in proptest::option::of("v1\\.3[0-2]\\.[0-9]"),
        paused in proptest::option::of(any::<bool>()),
        pools in proptest::collection::btree_map(dns_label(), (0..5i32, proptest::option::of(dns_label())), 0..4),
        labels in proptest::collection::btree_map(dns_label(), dns_label(), 0..3),
    ) -> Value {
        let mut c = cluster("edge-1");
        for (k, v) in &labels {
            c = c.label(k, v);
        }
        if let Some(v) = &version {
            c = c.version(v);
        }
        if let Some(p) = paused {
            c = c.paused(p);
        }
        for (name, (replicas, machine)) in &pools {
            c = c.pool(name, *replicas);
            if let Some(m) = machine {
                c = c.pool_field("machineType", json!(m));
            }
        }
        c.build()
    }
}

/// Free-form JSON as Helm values are: nested maps, lists, scalars and nulls.
fn free_form() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3..3i64).prop_map(Value::from),
        dns_label().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map(dns_label(), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn addon_config()(
        version in "v[0-9]\\.[0-9]",
        values in proptest::collection::btree_map(dns_label(), free_form(), 0..4),
        manifests in proptest::collection::vec(dns_label(), 0..3),
    ) -> Value {
        let manifests: Vec<Value> = manifests
            .iter()
            .map(|n| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}}))
            .collect();
        let values: serde_json::Map<String, Value> = values.into_iter().collect();
        json!({
            "apiVersion": API_VERSION,
            "kind": "ClusterAddon",
            "metadata": {"name": "gpu-operator", "namespace": "retail"},
            "spec": {"version": version, "manifests": manifests, "helm": {"chart": "gpu-operator", "values": values}},
        })
    }
}

prop_compose! {
    fn placement_config()(
        fleets in proptest::collection::btree_set(dns_label(), 0..4),
        addons in proptest::collection::btree_set(dns_label(), 0..3),
        canary in proptest::option::of(prop_oneof![(0..5i64).prop_map(Value::from), Just(json!("10%"))]),
    ) -> Value {
        let fleets: Vec<&str> = fleets.iter().map(String::as_str).collect();
        let addons: Vec<&str> = addons.iter().map(String::as_str).collect();
        let mut config = placement(&fleets, &addons);
        if let Some(canary) = canary {
            config["spec"]["strategy"] = json!({"canary": canary});
        }
        config
    }
}

/// `mgr` applying `config` (forced, over what `other` applied) and then applying it again
/// changes nothing, and every stored fieldsV1 re-encodes to itself.
fn check_apply_is_idempotent(
    schema: &'static ObjectSchema,
    other: &Value,
    config: &Value,
) -> Result<(), TestCaseError> {
    let mut store = Store::new(schema);
    store.apply("other", other);
    let once = store.force_apply("mgr", config);
    let twice = store.apply("mgr", config);
    prop_assert_eq!(&once, &twice);
    for entry in managed_fields(&once) {
        let set = FieldSet::from_fields_v1(&entry["fieldsV1"]).expect("stored fieldsV1 decodes");
        prop_assert_eq!(&set.to_fields_v1(), &entry["fieldsV1"]);
    }
    Ok(())
}

fn path_element() -> impl Strategy<Value = PathElement> {
    prop_oneof![
        dns_label().prop_map(PathElement::Field),
        (
            dns_label(),
            prop_oneof![
                dns_label().prop_map(Value::from),
                (0..1000i64).prop_map(Value::from)
            ]
        )
            .prop_map(|(k, v)| PathElement::key([(k, v)])),
        prop_oneof![
            dns_label().prop_map(Value::from),
            (-5..5i64).prop_map(Value::from),
            any::<bool>().prop_map(Value::from)
        ]
        .prop_map(PathElement::Value),
        (0..4usize).prop_map(PathElement::Index),
    ]
}

proptest! {
    #[test]
    fn applying_twice_is_applying_once(other in cluster_config(), config in cluster_config()) {
        check_apply_is_idempotent(cluster_schema(), &other, &config)?;
    }

    #[test]
    fn applying_free_form_values_twice_is_applying_once(other in addon_config(), config in addon_config()) {
        check_apply_is_idempotent(addon_schema(), &other, &config)?;
    }

    #[test]
    fn applying_sets_twice_is_applying_once(other in placement_config(), config in placement_config()) {
        check_apply_is_idempotent(placement_schema(), &other, &config)?;
    }

    #[test]
    fn fields_v1_round_trips(paths in proptest::collection::vec(proptest::collection::vec(path_element(), 1..4), 0..12)) {
        let set = set_of(&paths);
        let encoded = set.to_fields_v1();
        let decoded = FieldSet::from_fields_v1(&encoded).expect("decodes");
        prop_assert_eq!(&decoded, &set);
        prop_assert_eq!(decoded.to_fields_v1().to_string(), encoded.to_string());
        for path in &paths {
            prop_assert!(decoded.contains(path));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The deduced schema: kinds nobody described (what a simulated cluster stores).

fn deduced_schema() -> &'static ObjectSchema {
    static S: OnceLock<ObjectSchema> = OnceLock::new();
    S.get_or_init(ObjectSchema::deduced)
}

/// A Deployment-like object of a kind the engine has no schema for.
fn workload(name: &str, replicas: i64, args: &[&str]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "args": args}]}}},
    })
}

fn deduced_apply(
    live: Option<&Value>,
    manager: &str,
    config: &Value,
    force: bool,
    t: i64,
) -> Result<Value> {
    apply(ApplyRequest {
        schema: deduced_schema(),
        live,
        config,
        manager,
        force,
        scope: Scope::Main,
        api_version: "apps/v1",
        now: at(t),
    })
}

#[test]
fn an_object_of_an_unknown_kind_is_applied_with_managed_fields() {
    let created = deduced_apply(None, "kubectl", &workload("web", 2, &["-v"]), false, 1).unwrap();
    assert_eq!(created["spec"]["replicas"], 2);
    assert_eq!(created["kind"], "Deployment");
    let entries = managed_fields(&created);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["manager"], "kubectl");
    assert_eq!(entries[0]["operation"], "Apply");
    assert_eq!(entries[0]["apiVersion"], "apps/v1");
    // Maps are granular down to every key, each map also a member ("."), as SMD deduces
    // them; the list is one field.
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {".": {}, "f:replicas": {}, "f:template": {".": {}, "f:spec": {".": {}, "f:containers": {}}}},
        })
    );
    // Applying it again changes nothing, times included.
    let again = deduced_apply(
        Some(&created),
        "kubectl",
        &workload("web", 2, &["-v"]),
        false,
        2,
    )
    .unwrap();
    assert_eq!(again, created);
}

#[test]
fn managers_of_an_unknown_kind_conflict_on_the_fields_they_share() {
    let live = deduced_apply(None, "ci", &workload("web", 2, &["-v"]), false, 1).unwrap();
    // Another manager setting the same replicas shares the field; a different value conflicts.
    let scaler = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 5}});
    let err = deduced_apply(Some(&live), "hpa", &scaler, false, 2).unwrap_err();
    assert_eq!(
        conflict_fields(&err),
        [("ci".into(), ".spec.replicas".into())]
    );
    assert_eq!(
        err.message(),
        "Apply failed with 1 conflict: conflict with \"ci\": .spec.replicas"
    );
    // The list is atomic: changing one argument conflicts on the whole list.
    let err =
        deduced_apply(Some(&live), "ops", &workload("web", 2, &["-vv"]), false, 2).unwrap_err();
    assert_eq!(
        conflict_fields(&err),
        [("ci".into(), ".spec.template.spec.containers".into())]
    );
    // Forced, the scaler takes replicas and ci keeps the rest.
    let forced = deduced_apply(Some(&live), "hpa", &scaler, true, 3).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let ci = managed_fields(&forced)
        .into_iter()
        .find(|e| e["manager"] == "ci")
        .unwrap();
    assert!(
        ci["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "{ci:#}"
    );
    assert!(
        ci["fieldsV1"]["f:spec"].get("f:template").is_some(),
        "{ci:#}"
    );
}

#[test]
fn an_applier_of_an_unknown_kind_prunes_what_it_stops_applying() {
    let live = deduced_apply(None, "ci", &workload("web", 2, &["-v"]), false, 1).unwrap();
    let mut less = workload("web", 2, &["-v"]);
    less["metadata"].as_object_mut().unwrap().remove("labels");
    let pruned = deduced_apply(Some(&live), "ci", &less, false, 2).unwrap();
    assert!(pruned["metadata"].get("labels").is_none(), "{pruned:#}");
    // An updater's fields of an unknown kind are tracked too, and survive the applier's prune.
    let mut edited = pruned.clone();
    edited["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    edited["data"] = json!({"note": "by hand"});
    let updated = record_update(
        deduced_schema(),
        Some(&pruned),
        edited,
        "kubectl-edit",
        Scope::Main,
        "apps/v1",
        at(3),
    )
    .unwrap();
    let edit = managed_fields(&updated)
        .into_iter()
        .find(|e| e["manager"] == "kubectl-edit")
        .unwrap();
    assert_eq!(edit["fieldsV1"], json!({"f:data": {".": {}, "f:note": {}}}));
    let reapplied = deduced_apply(Some(&updated), "ci", &less, false, 4).unwrap();
    assert_eq!(reapplied["data"]["note"], "by hand");
}

#[test]
fn the_deduced_schema_accepts_any_field_and_still_checks_the_kind_s_identity() {
    let odd = json!({"apiVersion": "apps/v1", "kind": "Anything", "metadata": {"name": "x"},
        "whatever": {"nested": [1, {"a": null}]}, "n": 1.5});
    assert!(deduced_apply(None, "m", &odd, false, 1).is_ok());
    let other_version =
        json!({"apiVersion": "apps/v2", "kind": "Deployment", "metadata": {"name": "x"}});
    assert!(matches!(
        deduced_apply(None, "m", &other_version, false, 1),
        Err(ApplyError::InvalidConfig(_))
    ));
    assert!(deduced_schema().group_version_kind().is_none());
}
