//! What a write may not do to an object (hostile or careless patches, PUTs and deletes), and
//! that writes without a precondition of their own never fail for contention.

use super::*;

fn json_patch(ops: Value) -> Patch {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

impl Fixture {
    async fn patch(&self, name: &str, patch: Patch) -> Result<Value, ApiError> {
        self.clusters()
            .patch("retail", name, Target::Main, patch, &opts())
            .await
            .map(|o| parse(&o.object))
    }

    async fn delete_with(&self, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        self.clusters()
            .delete(&self.registry, "retail", name, opts)
            .await
            .map(|o| parse(&o))
    }
}

/// The causes of a 422, as `field: body`.
fn causes(err: &ApiError) -> Vec<String> {
    match err {
        ApiError::Invalid { errors, .. } => errors.iter().map(|e| e.to_string()).collect(),
        other => panic!("expected 422 Invalid, got {other}"),
    }
}

#[tokio::test]
async fn a_patch_cannot_rewrite_the_kind_or_api_version() {
    let f = fixture().await;
    f.env("retail").await;
    let before = f.create("retail", cluster("edge-1")).await;

    let err = f
        .merge("retail", "edge-1", Target::Main, json!({"kind": ""}))
        .await
        .unwrap_err();
    assert_eq!(causes(&err), ["kind: Invalid value: \"\": must be Cluster"]);
    let err = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"kind": "Environment", "apiVersion": "v1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(&err),
        [
            "kind: Invalid value: \"Environment\": must be Cluster",
            "apiVersion: Invalid value: \"v1\": must be edgefleet.io/v1alpha1",
        ]
    );
    let err = f
        .patch(
            "edge-1",
            json_patch(json!([{"op": "replace", "path": "/apiVersion", "value": "x/y/z"}])),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(&err),
        ["apiVersion: Invalid value: \"x/y/z\": must be edgefleet.io/v1alpha1"]
    );
    let err = f
        .patch(
            "edge-1",
            json_patch(json!([{"op": "remove", "path": "/kind"}])),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), http::StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(
        f.get("retail", "edge-1").await,
        before,
        "nothing was stored"
    );
    let listed = f.clusters().list(&ListOptions::default()).await.unwrap();
    assert!(listed.items.iter().all(
        |o| parse(o)["kind"] == "Cluster" && parse(o)["apiVersion"] == "edgefleet.io/v1alpha1"
    ));
}

#[tokio::test]
async fn removing_metadata_with_a_json_patch_is_refused_and_keeps_labels_and_finalizers() {
    let f = fixture().await;
    f.env("retail").await;
    f.create("retail", cluster("edge-1").label("tier", "gold"))
        .await;
    f.merge(
        "retail",
        "edge-1",
        Target::Main,
        json!({"metadata": {"finalizers": ["edgefleet.io/keep"]}}),
    )
    .await
    .unwrap();
    // Terminating: the finalizer holds it.
    f.delete_with("edge-1", &DeleteOptions::default())
        .await
        .unwrap();
    let before = f.get("retail", "edge-1").await;

    for patch in [
        json_patch(json!([{"op": "remove", "path": "/metadata"}])),
        Patch::Merge(json!({"metadata": null})),
    ] {
        let err = f.patch("edge-1", patch).await.unwrap_err();
        assert_eq!(err.code(), http::StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(
            err.to_string(),
            "the name of the object () does not match the name on the URL (edge-1)"
        );
    }
    let after = f.get("retail", "edge-1").await;
    assert_eq!(after, before, "labels, finalizers and the deletion stand");
    assert_eq!(after["metadata"]["labels"]["tier"], "gold");
}

#[tokio::test]
async fn concurrent_patches_without_a_resource_version_all_succeed() {
    const PATCHERS: usize = 64;
    let f = fixture().await;
    f.env("retail").await;
    f.create("retail", cluster("hot").label("base", "yes"))
        .await;
    let tasks: Vec<_> = (0..PATCHERS)
        .map(|i| {
            let clusters = f.clusters().clone();
            tokio::spawn(async move {
                let patch = if i % 2 == 0 {
                    Patch::Merge(json!({"metadata": {"labels": {format!("k{i}"): "v"}}}))
                } else {
                    json_patch(json!([{"op": "add", "path": format!("/metadata/labels/k{i}"), "value": "v"}]))
                };
                clusters
                    .patch("retail", "hot", Target::Main, patch, &opts())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap()
            .expect("an unconditional patch does not conflict");
    }
    let labels = f.get("retail", "hot").await["metadata"]["labels"].clone();
    for i in 0..PATCHERS {
        assert_eq!(labels[format!("k{i}")], "v", "no update was lost");
    }
}

#[tokio::test]
async fn concurrent_applies_and_deletes_of_one_object_never_conflict() {
    let f = fixture().await;
    f.env("retail").await;
    f.create("retail", cluster("hot")).await;
    let applies: Vec<_> = (0..16)
        .map(|i| {
            let (registry, clusters) = (f.registry.clone(), f.clusters().clone());
            tokio::spawn(async move {
                let config = cluster("hot").label(&format!("a{i}"), "v").body();
                let opts = WriteOptions {
                    field_manager: format!("manager-{i}"),
                    ..Default::default()
                };
                clusters
                    .apply(&registry, "retail", "hot", Target::Main, config, &opts)
                    .await
            })
        })
        .collect();
    for apply in applies {
        apply
            .await
            .unwrap()
            .expect("applies of distinct managers merge");
    }
    // Deletes race label patches; each delete succeeds or finds it gone.
    f.merge(
        "retail",
        "hot",
        Target::Main,
        json!({"metadata": {"finalizers": ["edgefleet.io/keep"]}}),
    )
    .await
    .unwrap();
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let (registry, clusters) = (f.registry.clone(), f.clusters().clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    clusters
                        .delete(&registry, "retail", "hot", &DeleteOptions::default())
                        .await
                        .map(|_| ())
                } else {
                    let patch =
                        Patch::Merge(json!({"metadata": {"annotations": {format!("n{i}"): "v"}}}));
                    clusters
                        .patch("retail", "hot", Target::Main, patch, &opts())
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().expect("no write conflicts");
    }
    assert!(f.get("retail", "hot").await["metadata"]["deletionTimestamp"].is_string());
}

#[tokio::test]
async fn a_patch_naming_a_resource_version_still_conflicts_when_stale() {
    let f = fixture().await;
    f.env("retail").await;
    let created = f.create("retail", cluster("edge-1")).await;
    let rv = created["metadata"]["resourceVersion"].clone();
    let updated = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"metadata": {"resourceVersion": rv, "labels": {"a": "1"}}}),
        )
        .await
        .unwrap();
    let err = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Conflict { reason, .. } if reason == crate::errors::OBJECT_MODIFIED),
        "{err}"
    );
    assert_eq!(f.get("retail", "edge-1").await, updated);
}

#[tokio::test]
async fn a_put_naming_another_uid_is_a_failed_precondition_and_a_patch_cannot_change_it() {
    let f = fixture().await;
    f.env("retail").await;
    let created = f.create("retail", cluster("edge-1")).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();

    let mut body = created.clone();
    body["metadata"]["uid"] = "someone-else".into();
    body["spec"]["paused"] = true.into();
    let err = f
        .clusters()
        .replace("retail", "edge-1", Target::Main, body, &opts())
        .await
        .unwrap_err();
    assert_eq!(err.code(), http::StatusCode::CONFLICT);
    assert_eq!(
        err.to_string(),
        format!(
            "Operation cannot be fulfilled on clusters.edgefleet.io \"edge-1\": Precondition failed: \
             UID in precondition: someone-else, UID in object meta: {uid}"
        )
    );
    let err = f
        .merge(
            "retail",
            "edge-1",
            Target::Main,
            json!({"metadata": {"uid": "someone-else"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        causes(&err),
        ["metadata.uid: Invalid value: \"someone-else\": field is immutable"]
    );
    assert_eq!(f.get("retail", "edge-1").await, created, "nothing changed");

    // The same uid, or none, is fine.
    let mut body = created.clone();
    body["spec"]["paused"] = true.into();
    f.clusters()
        .replace("retail", "edge-1", Target::Main, body.clone(), &opts())
        .await
        .unwrap();
    let mut body = f.get("retail", "edge-1").await;
    body["metadata"].as_object_mut().unwrap().remove("uid");
    body["spec"]["paused"] = false.into();
    let out = f
        .clusters()
        .replace("retail", "edge-1", Target::Main, body, &opts())
        .await
        .unwrap();
    assert_eq!(parse(&out.object)["metadata"]["uid"], uid.as_str());
}

#[tokio::test]
async fn delete_options_kube_refuses_are_422_and_delete_nothing() {
    let f = fixture().await;
    f.env("retail").await;
    f.create("retail", cluster("edge-1")).await;
    let refused = [
        (
            DeleteOptions {
                propagation_policy: Some("Sideways".into()),
                ..Default::default()
            },
            "propagationPolicy: Unsupported value: \"Sideways\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
        ),
        (
            DeleteOptions {
                propagation_policy: Some("Orphan".into()),
                orphan_dependents: Some(true),
                ..Default::default()
            },
            "propagationPolicy: Invalid value: \"Orphan\": orphanDependents and deletionPropagation cannot be both set",
        ),
    ];
    for (opts, cause) in refused {
        let err = f.delete_with("edge-1", &opts).await.unwrap_err();
        assert_eq!(causes(&err), [cause]);
        assert!(err
            .to_string()
            .starts_with("DeleteOptions.meta.k8s.io \"\" is invalid"));
        let err = f
            .clusters()
            .delete_collection(&f.registry, &ListOptions::default(), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code(), http::StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert!(f.clusters().get("retail", "edge-1", None).await.is_ok());

    for policy in ["Foreground", "Background", "Orphan"] {
        f.create("retail", cluster(policy.to_lowercase().as_str()))
            .await;
        let opts = DeleteOptions {
            propagation_policy: Some(policy.into()),
            grace_period_seconds: Some(-1),
            ..Default::default()
        };
        f.delete_with(&policy.to_lowercase(), &opts).await.unwrap();
    }
}

#[tokio::test]
async fn apply_without_a_field_manager_is_422() {
    let f = fixture().await;
    f.env("retail").await;
    let err = f
        .clusters()
        .apply(
            &f.registry,
            "retail",
            "edge-1",
            Target::Main,
            cluster("edge-1").body(),
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert_eq!(
        causes(&err),
        ["fieldManager: Required value: is required for apply patch"]
    );
    assert!(f.clusters().get("retail", "edge-1", None).await.is_err());
}

/// A ClusterAddon whose inline manifest carries `bytes` of data.
fn addon(name: &str, bytes: usize, fill: char) -> Value {
    json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "ClusterAddon",
           "metadata": {"name": name},
           "spec": {"version": "v1.0.0", "manifests": [{
               "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"},
               "data": {"blob": fill.to_string().repeat(bytes)}}]}})
}

#[tokio::test]
async fn objects_larger_than_storage_takes_are_refused_with_413() {
    let f = fixture().await;
    f.env("retail").await;
    let addons = f.registry.resource("clusteraddons").unwrap().clone();
    let limit = crate::storage::MAX_VALUE_BYTES;

    let err = addons
        .create(&f.registry, "retail", addon("big", limit, 'a'), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.code(), http::StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        err.to_string()
            .contains(&format!("more than the {limit} bytes storage takes")),
        "{err}"
    );
    assert!(addons.get("retail", "big", None).await.is_err());

    let created = addons
        .create(
            &f.registry,
            "retail",
            addon("big", limit - 4096, 'a'),
            &opts(),
        )
        .await
        .expect("an object under the limit is stored");
    let before = parse(&created.object);
    for dry_run in [true, false] {
        let grown = WriteOptions { dry_run, ..opts() };
        let patch = Patch::Merge(json!({"metadata": {"annotations": {"pad": "p".repeat(8192)}}}));
        let err = addons
            .patch("retail", "big", Target::Main, patch, &grown)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "dry run {dry_run}"
        );
    }
    assert_eq!(
        parse(&addons.get("retail", "big", None).await.unwrap()),
        before
    );
}
