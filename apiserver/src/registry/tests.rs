//! Registry tests over the real embedded store (a temporary directory).

mod watch_window;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::watch::{Frame, WatchOptions, WatchStart};
use super::*;
use crate::storage::embedded::EmbeddedStore;

struct Fixture {
    registry: Registry,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with(RegistryConfig::default()).await
}

async fn fixture_with(config: RegistryConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStorage = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let registry = Registry::new(store, config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !registry.is_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch caches never synced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Fixture {
        registry,
        _dir: dir,
    }
}

/// A builder for Cluster bodies.
struct ClusterBody(Value);

fn cluster(name: &str) -> ClusterBody {
    ClusterBody(
        json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}}),
    )
}

impl ClusterBody {
    fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = v.into();
        self
    }
    fn version(mut self, v: &str) -> Self {
        self.0["spec"]["kubernetesVersion"] = v.into();
        self
    }
    fn status(mut self, status: Value) -> Self {
        self.0["status"] = status;
        self
    }
    fn body(self) -> Value {
        self.0
    }
}

fn opts() -> WriteOptions {
    WriteOptions {
        field_manager: "test".into(),
        ..Default::default()
    }
}

impl Fixture {
    fn clusters(&self) -> &Arc<Resource> {
        self.registry.resource("clusters").unwrap()
    }

    async fn env(&self, name: &str) {
        let envs = self.registry.resource("environments").unwrap();
        let body = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Environment", "metadata": {"name": name}});
        envs.create(&self.registry, "", body, &opts())
            .await
            .unwrap();
    }

    async fn create(&self, ns: &str, body: ClusterBody) -> Value {
        let out = self
            .clusters()
            .create(&self.registry, ns, body.body(), &opts())
            .await
            .unwrap();
        parse(&out.object)
    }

    async fn get(&self, ns: &str, name: &str) -> Value {
        parse(&self.clusters().get(ns, name, None).await.unwrap())
    }

    async fn merge(
        &self,
        ns: &str,
        name: &str,
        target: Target,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.clusters()
            .patch(ns, name, target, Patch::Merge(patch), &opts())
            .await
            .map(|o| parse(&o.object))
    }
}

fn parse(obj: &cacher::CachedObject) -> Value {
    serde_json::from_slice(&obj.json).unwrap()
}

fn rv_of(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

impl Fixture {
    /// Polls until the clusters' watch cache has seen `revision`.
    async fn wait_for_cache(&self, revision: i64) {
        self.clusters()
            .cacher()
            .wait_for(revision, Duration::from_secs(10))
            .await
            .expect("the watch cache catches up");
    }
}

#[tokio::test]
async fn create_sets_server_fields_and_clears_status() {
    let f = fixture().await;
    f.env("retail").await;
    let obj = f
        .create(
            "retail",
            cluster("edge-1").status(json!({"kubernetesVersion": "v1.0.0"})),
        )
        .await;
    assert_eq!(obj["metadata"]["namespace"], "retail");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj["metadata"]["uid"].is_string() && obj["metadata"]["creationTimestamp"].is_string());
    assert!(obj.get("status").is_none());
    assert_eq!(
        obj["metadata"]["resourceVersion"],
        f.get("retail", "edge-1").await["metadata"]["resourceVersion"]
    );

    let err = f
        .clusters()
        .create(&f.registry, "retail", cluster("edge-1").body(), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err}");
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let f = fixture().await;
    f.env("retail").await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..5 {
        let body = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster", "metadata": {"generateName": "edge-"}});
        let out = f
            .clusters()
            .create(&f.registry, "retail", body, &opts())
            .await
            .unwrap();
        let name = out.object.name.clone();
        assert!(
            name.starts_with("edge-") && name.len() == "edge-".len() + 5,
            "{name}"
        );
        assert!(names.insert(name));
    }
}

#[tokio::test]
async fn generation_follows_spec_only_and_status_only_through_the_subresource() {
    let f = fixture().await;
    f.env("retail").await;
    f.create("retail", cluster("edge-1")).await;

    let labelled = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled["metadata"]["generation"], 1,
        "metadata changes do not bump generation"
    );

    let status =
        json!({"status": {"kubernetesVersion": "v1.31.4", "nodes": {"ready": 1, "total": 2}}});
    let ignored = f
        .merge("retail", "edge-1", Target::Main, status.clone())
        .await
        .unwrap();
    assert!(
        ignored.get("status").is_none(),
        "status is ignored on the main resource"
    );

    let with_status = f
        .merge("retail", "edge-1", Target::Status, status)
        .await
        .unwrap();
    assert_eq!(with_status["status"]["nodes"]["total"], 2);
    assert_eq!(
        with_status["metadata"]["generation"], 1,
        "status changes do not bump generation"
    );

    let spec_via_status = f
        .merge(
            "retail",
            "edge-1",
            Target::Status,
            json!({"spec": {"paused": true}, "metadata": {"labels": {"x": "y"}}}),
        )
        .await
        .unwrap();
    assert!(
        spec_via_status["spec"].get("paused").is_none(),
        "spec is ignored on /status"
    );
    assert!(spec_via_status["metadata"]["labels"].get("x").is_none());

    let bumped = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"spec": {"paused": true}}),
        )
        .await
        .unwrap();
    assert_eq!(bumped["metadata"]["generation"], 2);
    assert_eq!(
        bumped["status"]["nodes"]["total"], 2,
        "status survives spec updates"
    );

    let err = f
        .merge(
            "retail",
            "edge-1",
            Target::Status,
            json!({"status": {"nodes": {"ready": 3, "total": 2}}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Invalid { errors, .. } if errors.0[0].field == "status.nodes.ready"),
        "{err}"
    );
}

#[tokio::test]
async fn put_requires_and_checks_the_resource_version() {
    let f = fixture().await;
    f.env("retail").await;
    let created = f.create("retail", cluster("edge-1")).await;

    let mut body = created.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let err = f
        .clusters()
        .replace("retail", "edge-1", Target::Main, body, &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Invalid { errors, .. } if errors.0[0].field == "metadata.resourceVersion"),
        "{err}"
    );

    let mut body = created.clone();
    body["spec"]["paused"] = true.into();
    let updated = f
        .clusters()
        .replace("retail", "edge-1", Target::Main, body.clone(), &opts())
        .await
        .unwrap();
    assert_eq!(parse(&updated.object)["metadata"]["generation"], 2);

    // The same body again carries a stale resourceVersion.
    let err = f
        .clusters()
        .replace("retail", "edge-1", Target::Main, body, &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn malformed_input_is_refused_and_changes_nothing() {
    let f = fixture().await;
    f.env("retail").await;
    let before = f
        .create("retail", cluster("edge-1").version("v1.30.0"))
        .await;
    let bad = [
        json!({"spec": {"kubernetesVersion": 5}}),
        json!({"spec": {"nodePools": "many"}}),
        json!({"spec": {"kubernetesVersion": "one"}}),
        json!({"metadata": {"labels": {"bad key!": "x"}}}),
        json!({"metadata": {"name": "renamed"}}),
    ];
    for patch in bad {
        let err = f
            .merge("retail", "edge-1", Target::Main, patch.clone())
            .await
            .unwrap_err();
        assert!(err.code().is_client_error(), "{patch}: {err}");
    }
    let json_patch: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/spec/kubernetesVersion", "value": "v9"}]),
    )
    .unwrap();
    let err = f
        .clusters()
        .patch(
            "retail",
            "edge-1",
            Target::Main,
            Patch::Json(json_patch),
            &opts(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), http::StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(f.get("retail", "edge-1").await, before, "nothing changed");
}

#[tokio::test]
async fn unknown_fields_follow_field_validation() {
    let f = fixture().await;
    f.env("retail").await;
    let body = || cluster("edge-1").body();
    let with_unknown = || {
        let mut b = body();
        b["spec"]["bogus"] = 1.into();
        b
    };
    let strict = WriteOptions {
        field_validation: FieldValidation::Strict,
        ..opts()
    };
    let err = f
        .clusters()
        .create(&f.registry, "retail", with_unknown(), &strict)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "strict decoding error: unknown field \"spec.bogus\""
    );

    let warn = WriteOptions {
        field_validation: FieldValidation::Warn,
        ..opts()
    };
    let out = f
        .clusters()
        .create(&f.registry, "retail", with_unknown(), &warn)
        .await
        .unwrap();
    assert_eq!(out.warnings, ["unknown field \"spec.bogus\""]);
    assert!(
        parse(&out.object)["spec"].get("bogus").is_none(),
        "unknown fields are pruned"
    );
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let f = fixture().await;
    f.env("retail").await;
    let dry = WriteOptions {
        dry_run: true,
        ..opts()
    };
    let out = f
        .clusters()
        .create(&f.registry, "retail", cluster("edge-1").body(), &dry)
        .await
        .unwrap();
    assert_eq!(out.object.name, "edge-1");
    assert!(matches!(
        f.clusters().get("retail", "edge-1", None).await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn lists_page_at_one_revision() {
    let f = fixture().await;
    f.env("retail").await;
    for i in 0..7 {
        f.create(
            "retail",
            cluster(&format!("c{i}")).label("even", if i % 2 == 0 { "yes" } else { "no" }),
        )
        .await;
    }
    let mut opts = ListOptions {
        namespace: "retail".into(),
        limit: 3,
        ..Default::default()
    };
    let first = f.clusters().list(&opts).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.remaining, Some(4));
    f.create("retail", cluster("c99")).await;

    let mut names: Vec<String> = first.items.iter().map(|o| o.name.clone()).collect();
    opts.continue_token = first.continue_token.clone();
    while opts.continue_token.is_some() {
        let page = f.clusters().list(&opts).await.unwrap();
        assert_eq!(page.revision, first.revision);
        names.extend(page.items.iter().map(|o| o.name.clone()));
        opts.continue_token = page.continue_token;
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let filtered = ListOptions {
        namespace: "retail".into(),
        limit: 2,
        filter: Filter {
            labels: edgefleet_apimachinery::selectors::LabelSelectorExpr::parse("even=yes")
                .unwrap(),
            ..Default::default()
        },
        ..Default::default()
    };
    let page = f.clusters().list(&filtered).await.unwrap();
    let names: Vec<&str> = page.items.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["c0", "c2"],
        "a filtered page is filled from further storage pages"
    );
    assert!(page.continue_token.is_some());
    assert_eq!(page.remaining, None, "no remaining count with a selector");
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<Frame>) -> (String, String, i64) {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event in time")
        .expect("open")
    {
        Frame::Event { kind, object } => {
            (kind.to_string(), object.name.clone(), object.mod_revision)
        }
        other => panic!("unexpected frame {other:?}"),
    }
}

fn watch_opts(start: WatchStart, labels: &str) -> WatchOptions {
    WatchOptions {
        namespace: "retail".into(),
        filter: Filter {
            labels: edgefleet_apimachinery::selectors::LabelSelectorExpr::parse(labels).unwrap(),
            ..Default::default()
        },
        start,
        initial_events: !matches!(start, WatchStart::After(_)),
        initial_events_end: false,
        bookmarks: false,
        timeout: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn filtered_watches_see_objects_enter_and_leave() {
    let f = fixture().await;
    f.env("retail").await;
    let created = f
        .create("retail", cluster("edge-1").label("gpu", "a100"))
        .await;
    let rv: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut rx = f
        .clusters()
        .watch(watch_opts(WatchStart::After(rv), "gpu=l4"))
        .await
        .unwrap();

    f.merge(
        "retail",
        "edge-1",
        Target::Main,
        json!({"metadata": {"labels": {"gpu": "l4"}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut rx).await.0,
        "ADDED",
        "an update that starts matching is an ADDED"
    );
    f.merge(
        "retail",
        "edge-1",
        Target::Main,
        json!({"spec": {"paused": true}}),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut rx).await.0, "MODIFIED");
    let left = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"metadata": {"labels": {"gpu": "h100"}}}),
        )
        .await
        .unwrap();
    let (kind, name, revision) = next_event(&mut rx).await;
    assert_eq!(
        (kind.as_str(), name.as_str()),
        ("DELETED", "edge-1"),
        "an update that stops matching is a DELETED"
    );
    assert_eq!(
        revision.to_string(),
        left["metadata"]["resourceVersion"],
        "at the revision of the update"
    );
}

#[tokio::test]
async fn watches_resume_from_the_window_without_gaps_and_from_before_it_with_410() {
    // A window of three events: resumes inside it see every event, older ones are told 410.
    let f = fixture_with(RegistryConfig {
        watch_cache: cacher::WindowLimits {
            max_events: 3,
            ..Default::default()
        },
    })
    .await;
    f.env("retail").await;
    let mut revisions = Vec::new();
    for i in 0..8 {
        let obj = f.create("retail", cluster(&format!("w{i}"))).await;
        revisions.push(rv_of(&obj));
    }
    f.wait_for_cache(revisions[7]).await;
    let mut rx = f
        .clusters()
        .watch(watch_opts(WatchStart::After(revisions[4]), ""))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 5..8 {
        seen.push(next_event(&mut rx).await);
    }
    let expected: Vec<_> = (5..8)
        .map(|i| ("ADDED".to_string(), format!("w{i}"), revisions[i]))
        .collect();
    assert_eq!(seen, expected, "every event, in order");

    let mut rx = f
        .clusters()
        .watch(watch_opts(WatchStart::After(revisions[0]), ""))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
    {
        Frame::Error(err) => {
            assert_eq!(err.code(), http::StatusCode::GONE, "{err}");
            assert_eq!(err.reason(), "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaced_objects_need_an_environment_and_environments_with_objects_stay() {
    let f = fixture().await;
    let err = f
        .clusters()
        .create(&f.registry, "retail", cluster("edge-1").body(), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.code(), http::StatusCode::NOT_FOUND);
    assert!(err.to_string().contains("has no Environment"), "{err}");

    f.env("retail").await;
    f.create("retail", cluster("edge-1")).await;
    let envs = f.registry.resource("environments").unwrap().clone();
    let err = envs
        .delete(&f.registry, "", "retail", &DeleteOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("clusters edge-1"), "{err}");
    let env = parse(&envs.get("", "retail", None).await.unwrap());
    assert!(
        env["metadata"].get("deletionTimestamp").is_none(),
        "the refused delete was undone"
    );

    f.clusters()
        .delete(&f.registry, "retail", "edge-1", &DeleteOptions::default())
        .await
        .unwrap();
    envs.delete(&f.registry, "", "retail", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        envs.get("", "retail", None).await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn racing_creates_never_outlive_their_environment() {
    // Creates race the Environment's deletion; afterwards either the Environment exists or the
    // namespace is empty.
    for round in 0..5 {
        let f = fixture().await;
        f.env("race").await;
        let registry = f.registry.clone();
        let creators: Vec<_> = (0..8)
            .map(|i| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let clusters = registry.resource("clusters").unwrap().clone();
                    let _ = clusters
                        .create(
                            &registry,
                            "race",
                            cluster(&format!("c{round}-{i}")).body(),
                            &opts(),
                        )
                        .await;
                })
            })
            .collect();
        let envs = registry.resource("environments").unwrap().clone();
        let deleted = envs
            .delete(&registry, "", "race", &DeleteOptions::default())
            .await
            .is_ok();
        for c in creators {
            c.await.unwrap();
        }
        let left = f
            .clusters()
            .list(&ListOptions {
                namespace: "race".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let env_exists = envs.get("", "race", None).await.is_ok();
        assert!(
            env_exists || left.items.is_empty(),
            "round {round}: objects outlived their Environment (deleted: {deleted})"
        );
    }
}
