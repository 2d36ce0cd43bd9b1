//! kubectl (the real binary) against the hub, end to end: the same suite on the embedded store
//! (`edgefleet-apiserver dev`) and on a real etcd (`edgefleet-apiserver serve --storage etcd`).

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use edgefleet_e2e::hub::{eventually, workspace_root, Hub};
use edgefleet_e2e::EtcdProcess;
use serde_json::Value;

/// A hub, and the etcd it stores in (dropped after the hub).
struct Env {
    hub: Hub,
    _etcd: Option<EtcdProcess>,
}

impl Env {
    fn dev() -> Env {
        Env {
            hub: Hub::dev().expect("dev hub starts"),
            _etcd: None,
        }
    }

    fn etcd() -> Env {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let etcd = rt.block_on(EtcdProcess::start()).expect("etcd starts");
        Env {
            hub: Hub::etcd(&etcd).expect("hub on etcd starts"),
            _etcd: Some(etcd),
        }
    }
}

const NS: &str = "retail-prod";

fn environment(hub: &Hub, name: &str) {
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: edgefleet.io/v1alpha1\nkind: Environment\nmetadata:\n  name: {name}\n"
        )),
    );
}

fn cluster_yaml(name: &str, labels: &[(&str, &str)], spec: &str) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: edgefleet.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels:\n    e2e: \"true\"\n{labels}spec: {spec}\n"
    )
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn json(hub: &Hub, args: &[&str]) -> Value {
    serde_json::from_str(&hub.ok(args)).expect("kubectl printed JSON")
}

/// Lines a background kubectl prints, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn discovery_and_explain(hub: &Hub) {
    let out = hub.ok(&[
        "api-resources",
        "--api-group=edgefleet.io",
        "-o",
        "wide",
        "--no-headers",
    ]);
    let mut rows: Vec<Vec<&str>> = out.lines().map(words).collect();
    rows.sort();
    let summary: Vec<(&str, &str, &str, &str)> =
        rows.iter().map(|r| (r[0], r[1], r[3], r[4])).collect();
    assert_eq!(
        summary,
        [
            ("clusteraddons", "ca", "true", "ClusterAddon"),
            ("clusters", "ec", "true", "Cluster"),
            ("environments", "env", "false", "Environment"),
            ("fleets", "fl", "true", "Fleet"),
            ("placements", "pl", "true", "Placement"),
        ]
    );
    for row in &rows {
        assert_eq!(
            row[5], "create,delete,deletecollection,get,list,patch,update,watch",
            "{row:?}"
        );
        assert_eq!(row[6], "edgefleet", "category of {row:?}");
    }

    let explain = hub.ok(&["explain", "cluster.spec"]);
    assert!(explain.contains("KIND:       Cluster"), "{explain}");
    assert!(explain.contains("kubernetesVersion\t<string>"), "{explain}");
    assert!(explain.contains("nodePools\t<[]Object>"), "{explain}");
    let field = hub.ok(&["explain", "placement.spec.strategy.maxUnavailable"]);
    assert!(field.contains("updating or failed at once"), "{field}");
    // The delivery fields are documented where users look.
    let drift = hub.ok(&["explain", "clusteraddon.spec.drift"]);
    assert!(drift.contains("Report"), "{drift}");
    assert!(drift.contains("Correct"), "{drift}");
    let values = hub.ok(&["explain", "placement.spec.addons.values"]);
    assert!(values.contains("merge patch"), "{values}");
    let addons = hub.ok(&["explain", "cluster.status.addons.state"]);
    assert!(addons.contains("Failed"), "{addons}");
}

fn samples_and_tables(hub: &Hub) {
    let samples = workspace_root().join("config/samples");
    let out = hub.ok(&["apply", "-f", samples.to_str().unwrap()]);
    for created in [
        "environment.edgefleet.io/retail-prod created",
        "cluster.edgefleet.io/store-0042 created",
        "fleet.edgefleet.io/l4-stores created",
        "clusteraddon.edgefleet.io/gpu-operator created",
        "placement.edgefleet.io/gpu-operator-l4 created",
    ] {
        assert!(out.contains(created), "{out}");
    }

    let table = hub.ok(&["get", "clusters", "-A"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "NAMESPACE",
            "NAME",
            "ENVIRONMENT",
            "STATUS",
            "VERSION",
            "NODES",
            "GPUS",
            "AGE",
            "ADDONS"
        ]
    );
    // VERSION and NODES stay empty until the agent reports; GPUS counts 0.
    assert_eq!(
        words(lines[1])[..5],
        ["retail-prod", "store-0042", "retail-prod", "Pending", "0"]
    );
    let wide = hub.ok(&["get", "ec", "-n", NS, "-o", "wide"]);
    assert_eq!(
        words(wide.lines().next().unwrap()),
        [
            "NAME",
            "ENVIRONMENT",
            "STATUS",
            "VERSION",
            "NODES",
            "GPUS",
            "AGE",
            "ADDONS",
            "DESIRED",
            "GPU-MODEL",
            "HUB"
        ]
    );
    assert!(
        wide.contains("v1.31.4+k3s1"),
        "the wide DESIRED column shows spec.kubernetesVersion: {wide}"
    );
    let fleets = hub.ok(&["get", "fleets", "-n", NS]);
    assert_eq!(
        words(fleets.lines().next().unwrap()),
        ["NAME", "CLUSTERS", "READY", "VERSION", "AGE"]
    );
    // Fleet and Environment status are computed (issue 9 item 21): store-0042 matches the
    // fleet's selector and belongs to the environment, connected or not.
    eventually(
        Duration::from_secs(20),
        "l4-stores counts store-0042",
        || {
            let row = hub.ok(&["get", "fleets", "l4-stores", "-n", NS, "--no-headers"]);
            (words(&row)[1] == "1").then_some(())
        },
    );
    eventually(
        Duration::from_secs(20),
        "retail-prod counts its cluster",
        || {
            let row = hub.ok(&["get", "env", NS, "--no-headers"]);
            (words(&row)[1..3] == ["1", "0"]).then_some(())
        },
    );
    // The samples' Placement is Progressive: held, and it says why.
    let reason = eventually(Duration::from_secs(20), "the placement's condition", || {
        let out = hub.ok(&[
            "get",
            "pl",
            "gpu-operator-l4",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(reason, "ProgressiveRolloutNotDelivered");
    let placements = hub.ok(&["get", "pl", "-n", NS]);
    assert_eq!(
        words(placements.lines().next().unwrap()),
        ["NAME", "ADDONS", "CLUSTERS", "UPDATED", "AGE"]
    );
    assert_eq!(
        words(placements.lines().nth(1).unwrap())[..2],
        ["gpu-operator-l4", "gpu-operator"]
    );

    let yaml = hub.ok(&[
        "get",
        "ec",
        "store-0042",
        "-n",
        NS,
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    let obj: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(obj["kind"], "Cluster");
    assert_eq!(obj["apiVersion"], "edgefleet.io/v1alpha1");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert_eq!(obj["spec"]["nodePools"][0]["name"], "gpu");
    // Create clears status (the registry's unit tests prove it for a body that carries one);
    // what status there is now, the hub wrote since: the add-ons its Environment requires,
    // Pending until an agent connects. Nothing else.
    assert!(
        obj["status"].get("connection").is_none(),
        "no agent ever connected: {obj}"
    );
    for entry in obj["metadata"]["managedFields"].as_array().unwrap() {
        if entry["subresource"] == "status" {
            assert_eq!(entry["manager"], "edgefleet-hub", "{entry}");
        }
    }
    if let Some(addons) = obj["status"]["addons"].as_array() {
        assert!(addons.iter().all(|a| a["state"] == "Pending"), "{obj}");
    }

    let all = hub.ok(&["get", "edgefleet", "-A", "-o", "name"]);
    for name in [
        "environment.edgefleet.io/retail-prod",
        "cluster.edgefleet.io/store-0042",
        "fleet.edgefleet.io/l4-stores",
        "clusteraddon.edgefleet.io/gpu-operator",
        "clusteraddon.edgefleet.io/baseline-policies",
        "placement.edgefleet.io/gpu-operator-l4",
    ] {
        assert!(
            all.lines().any(|l| l == name),
            "{name} missing from `get edgefleet -A`: {all}"
        );
    }
    // Defaults were applied on the server.
    let strategy = json(
        hub,
        &[
            "get",
            "pl",
            "gpu-operator-l4",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.strategy}",
        ],
    );
    assert_eq!(strategy["type"], "Progressive");
}

fn label_annotate_patch_edit(hub: &Hub) {
    environment(hub, NS);
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("edge-1", &[], "{kubernetesVersion: v1.30.2}")),
    );
    let get = |path: &str| {
        hub.ok(&[
            "get",
            "ec",
            "edge-1",
            "-n",
            NS,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };

    hub.ok(&["label", "ec", "edge-1", "-n", NS, "tier=gold"]);
    hub.ok(&["annotate", "ec", "edge-1", "-n", NS, "owner=ml-platform"]);
    assert_eq!(
        get("{.metadata.labels.tier} {.metadata.annotations.owner} {.metadata.generation}"),
        "gold ml-platform 1"
    );

    hub.ok(&[
        "patch",
        "ec",
        "edge-1",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    assert_eq!(
        get("{.spec.paused} {.metadata.generation}"),
        "true 2",
        "a spec change bumps generation"
    );
    hub.ok(&[
        "patch", "ec", "edge-1", "-n", NS, "--type=json", "-p",
        r#"[{"op":"add","path":"/spec/nodePools","value":[{"name":"gpu","replicas":2}]},{"op":"replace","path":"/spec/kubernetesVersion","value":"v1.31.4"}]"#,
    ]);
    assert_eq!(
        get("{.spec.kubernetesVersion} {.spec.nodePools[0].replicas} {.metadata.generation}"),
        "v1.31.4 2 3"
    );

    // `kubectl edit` through an editor that rewrites the replica count.
    let editor = hub.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 2/replicas: 5/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = hub
        .kubectl_env(
            &hub.kubeconfig,
            &["edit", "ec", "edge-1", "-n", NS],
            None,
            &[("KUBE_EDITOR", editor.to_str().unwrap())],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster.edgefleet.io/edge-1 edited"));
    assert_eq!(
        get("{.spec.nodePools[0].replicas} {.metadata.generation}"),
        "5 4"
    );

    // A merge patch that leaves the spec as it is changes nothing, not even the resourceVersion.
    let rv = get("{.metadata.resourceVersion}");
    hub.ok(&[
        "patch",
        "ec",
        "edge-1",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    assert_eq!(get("{.metadata.resourceVersion}"), rv);
}

fn server_side_apply(hub: &Hub) {
    environment(hub, NS);
    let config =
        |version: &str| cluster_yaml("ssa-1", &[], &format!("{{kubernetesVersion: {version}}}"));
    hub.ok_stdin(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        Some(&config("v1.31.4")),
    );
    let err = hub.fails(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        Some(&config("v1.32.0")),
    );
    assert!(err.contains("conflict"), "{err}");
    assert!(
        err.contains("\"alice\""),
        "the conflict names the owner: {err}"
    );
    assert!(
        err.contains(".spec.kubernetesVersion"),
        "the conflict names the field: {err}"
    );
    let get = |path: &str| {
        hub.ok(&[
            "get",
            "ec",
            "ssa-1",
            "-n",
            NS,
            "-o",
            &format!("jsonpath={path}"),
        ])
    };
    assert_eq!(
        get("{.spec.kubernetesVersion}"),
        "v1.31.4",
        "a refused apply changes nothing"
    );

    hub.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&config("v1.32.0")),
    );
    assert_eq!(get("{.spec.kubernetesVersion}"), "v1.32.0");
    let managers = json(
        hub,
        &[
            "get",
            "ec",
            "ssa-1",
            "-n",
            NS,
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields}",
        ],
    );
    let bob = managers
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "bob")
        .expect("bob manages fields");
    assert_eq!(bob["operation"], "Apply");
    assert!(
        bob["fieldsV1"]["f:spec"]["f:kubernetesVersion"].is_object(),
        "{bob}"
    );
    let alice_owns_version = managers.as_array().unwrap().iter().any(|m| {
        m["manager"] == "alice" && m["fieldsV1"]["f:spec"]["f:kubernetesVersion"].is_object()
    });
    assert!(
        !alice_owns_version,
        "forcing took the field from alice: {managers}"
    );
}

fn watch_sees_changes_by_another_client(hub: &Hub) {
    environment(hub, NS);
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("watched", &[("tier", "silver")], "{}")),
    );
    let mut watcher = hub
        .spawn_kubectl(&[
            "get",
            "ec",
            "-n",
            NS,
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier",
        ])
        .unwrap();
    let lines = lines_of(&mut watcher);
    let first = lines.recv_timeout(Duration::from_secs(20)).expect("header");
    assert_eq!(words(&first), ["NAME", "TIER"]);
    assert_eq!(
        words(&lines.recv_timeout(Duration::from_secs(20)).unwrap()),
        ["watched", "silver"]
    );
    hub.ok(&[
        "label",
        "ec",
        "watched",
        "-n",
        NS,
        "tier=gold",
        "--overwrite",
    ]);
    let changed = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch reports the change");
    assert_eq!(words(&changed), ["watched", "gold"]);
    let _ = watcher.kill();
}

fn pagination(hub: &Hub) {
    environment(hub, NS);
    let many: String = (0..10)
        .map(|i| format!("{}---\n", cluster_yaml(&format!("page-{i:02}"), &[], "{}")))
        .collect();
    hub.ok_stdin(&["create", "-f", "-"], Some(&many));
    let out = hub
        .kubectl(&[
            "get",
            "ec",
            "-n",
            NS,
            "--chunk-size=2",
            "-o",
            "name",
            "-v=6",
        ])
        .unwrap();
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let want: Vec<String> = (0..10)
        .map(|i| format!("cluster.edgefleet.io/page-{i:02}"))
        .collect();
    assert_eq!(names, want);
    let requests = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("limit=2"))
        .count();
    assert!(
        requests >= 5,
        "kubectl read 10 objects in pages of 2 ({requests} requests)"
    );

    // The raw pages: continue tokens, remaining counts, one revision.
    let path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters?limit=4");
    let first = json(hub, &["get", "--raw", &path]);
    assert_eq!(first["items"].as_array().unwrap().len(), 4);
    assert_eq!(first["metadata"]["remainingItemCount"], 6);
    let token = first["metadata"]["continue"].as_str().unwrap();
    hub.ok_stdin(
        &["create", "-f", "-"],
        Some(&cluster_yaml("page-99", &[], "{}")),
    );
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut next = Some(token.to_string());
    while let Some(token) = next {
        let page = json(hub, &["get", "--raw", &format!("{path}&continue={token}")]);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        next = page["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(String::from);
    }
    let want: Vec<String> = (0..10).map(|i| format!("page-{i:02}")).collect();
    assert_eq!(
        seen, want,
        "later pages come from the first page's revision: page-99 is not in this list"
    );
}

fn selectors(hub: &Hub) {
    environment(hub, NS);
    for (name, gpu, region) in [("a", "a100", "eu"), ("b", "l4", "eu"), ("c", "l4", "us")] {
        hub.ok_stdin(
            &["apply", "-f", "-"],
            Some(&cluster_yaml(
                name,
                &[("gpu", gpu), ("region", region)],
                "{}",
            )),
        );
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["get", "ec", "-n", NS, "-o", "name"];
        all.extend_from_slice(args);
        hub.ok(&all)
            .lines()
            .map(|l| l.trim_start_matches("cluster.edgefleet.io/").to_string())
            .collect()
    };
    assert_eq!(names(&["-l", "gpu=l4"]), ["b", "c"]);
    assert_eq!(names(&["-l", "gpu=l4,region notin (us)"]), ["b"]);
    assert_eq!(names(&["-l", "region in (eu),gpu!=l4"]), ["a"]);
    assert_eq!(names(&["--field-selector", "metadata.name=c"]), ["c"]);
    assert_eq!(
        names(&["--field-selector", "metadata.name!=c", "-l", "region=eu"]),
        ["a", "b"]
    );
    let all_ns = hub.ok(&[
        "get",
        "ec",
        "-A",
        "--field-selector",
        &format!("metadata.namespace={NS}"),
        "-o",
        "name",
    ]);
    assert_eq!(all_ns.lines().count(), 3);
    let err = hub.fails(
        &[
            "get",
            "ec",
            "-n",
            NS,
            "--field-selector",
            "spec.paused=true",
        ],
        None,
    );
    assert!(err.contains("field label not supported"), "{err}");
    let err = hub.fails(&["get", "ec", "-n", NS, "-l", "gpu in (a"], None);
    assert!(
        err.contains("unable to parse requirement") || err.contains("unable to parse"),
        "{err}"
    );
}

fn wait_for_jsonpath(hub: &Hub) {
    environment(hub, NS);
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("waiter", &[], "{}")),
    );
    let mut wait = hub
        .spawn_kubectl(&[
            "wait",
            "ec/waiter",
            "-n",
            NS,
            "--for=jsonpath={.spec.paused}=true",
            "--timeout=60s",
        ])
        .unwrap();
    hub.ok(&[
        "patch",
        "ec",
        "waiter",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    let status = eventually(Duration::from_secs(60), "kubectl wait to finish", || {
        wait.try_wait().unwrap()
    });
    let mut out = String::new();
    std::io::Read::read_to_string(wait.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "kubectl wait failed: {out}");
    assert!(out.contains("condition met"), "{out}");
}

fn delete_and_finalizers(hub: &Hub) {
    environment(hub, NS);
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("gone", &[], "{}")),
    );
    assert!(hub
        .ok(&["delete", "ec", "gone", "-n", NS])
        .contains("cluster.edgefleet.io \"gone\" deleted"));
    let err = hub.fails(&["get", "ec", "gone", "-n", NS], None);
    assert!(
        err.contains("NotFound") && err.contains("clusters.edgefleet.io \"gone\" not found"),
        "{err}"
    );

    let held = "apiVersion: edgefleet.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: held\n  namespace: retail-prod\n  finalizers: [edgefleet.io/e2e]\n";
    hub.ok_stdin(&["apply", "-f", "-"], Some(held));
    hub.ok(&["delete", "ec", "held", "-n", NS, "--wait=false"]);
    let stamp = hub.ok(&[
        "get",
        "ec",
        "held",
        "-n",
        NS,
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !stamp.is_empty(),
        "a finalizer keeps the object, terminating"
    );

    let err = hub.fails(&["delete", "env", NS], None);
    assert!(
        err.contains("still holds objects") && err.contains("clusters held"),
        "{err}"
    );
    assert!(
        hub.ok(&[
            "get",
            "env",
            NS,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty(),
        "a refused delete leaves the Environment as it was"
    );

    hub.ok(&[
        "patch",
        "ec",
        "held",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let err = hub.fails(&["get", "ec", "held", "-n", NS], None);
    assert!(
        err.contains("not found"),
        "removing the last finalizer completes the delete: {err}"
    );
    hub.ok(&["delete", "env", NS]);
    let err = hub.fails(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("late", &[], "{}")),
    );
    assert!(err.contains("has no Environment"), "{err}");
}

fn fleet_yaml(name: &str) -> String {
    format!(
        "apiVersion: edgefleet.io/v1alpha1\nkind: Fleet\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      gpu: l4\n"
    )
}

/// What one tenant with patch rights must not be able to do to everyone's listings, and what
/// many writers of one object must all get done.
fn hostile_and_contended_writes(hub: &Hub) {
    environment(hub, NS);
    hub.ok_stdin(&["apply", "-f", "-"], Some(&fleet_yaml("target")));
    hub.ok_stdin(&["apply", "-f", "-"], Some(&fleet_yaml("other")));

    let refused = |kind: &str, patch: &str| {
        hub.fails(
            &[
                "patch",
                "fl",
                "target",
                "-n",
                NS,
                &format!("--type={kind}"),
                "-p",
                patch,
            ],
            None,
        )
    };
    for (kind, patch) in [
        ("merge", r#"{"kind":""}"#),
        (
            "merge",
            r#"{"apiVersion":"edgefleet.io/v2","kind":"Cluster"}"#,
        ),
        (
            "json",
            r#"[{"op":"replace","path":"/kind","value":"Cluster"}]"#,
        ),
    ] {
        let err = refused(kind, patch);
        assert!(
            err.contains("is invalid") && err.contains("must be"),
            "{patch}: {err}"
        );
    }
    let err = refused("json", r#"[{"op":"remove","path":"/metadata"}]"#);
    assert!(err.contains("does not match the name on the URL"), "{err}");
    let all = json(hub, &["get", "fl", "-A", "-o", "json"]);
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["kind"] == "Fleet"), "{all}");
    let names = hub.ok(&["get", "fl", "-n", NS, "-o", "name"]);
    assert_eq!(names.lines().count(), 2, "{names}");

    // Ten `kubectl label` at once, none with a resourceVersion: every one lands.
    let labellers: Vec<_> = (0..10)
        .map(|i| {
            hub.spawn_kubectl(&["label", "fl", "target", "-n", NS, &format!("kl{i}=v")])
                .unwrap()
        })
        .collect();
    for (i, child) in labellers.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "label {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let labels =
        json(hub, &["get", "fl", "target", "-n", NS, "-o", "json"])["metadata"]["labels"].clone();
    for i in 0..10 {
        assert_eq!(labels[format!("kl{i}")], "v", "{labels}");
    }

    let base = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/fleets");
    let err = hub.fails(
        &["get", "--raw", &format!("{base}?timeoutSeconds=abc")],
        None,
    );
    assert!(err.contains("timeoutSeconds"), "{err}");
    let err = hub.fails(
        &["get", "--raw", &format!("{base}/target?timeout=abc")],
        None,
    );
    assert!(
        err.contains("invalid timeout specified in the request URL"),
        "{err}"
    );
    let err = hub.fails(
        &[
            "delete",
            "--raw",
            &format!("{base}/other?propagationPolicy=Sideways"),
        ],
        None,
    );
    assert!(err.contains("Unsupported value: \"Sideways\""), "{err}");
    hub.ok(&["get", "fl", "other", "-n", NS]);

    // A body repeating a key: refused under Strict, a warning under Warn.
    let dup = hub.dir.path().join("dup.json");
    std::fs::write(
        &dup,
        format!(r#"{{"apiVersion":"edgefleet.io/v1alpha1","kind":"Fleet","metadata":{{"name":"dup1","name":"dup2","namespace":"{NS}"}},"spec":{{}}}}"#),
    )
    .unwrap();
    let dup = dup.to_str().unwrap();
    let err = hub.fails(
        &[
            "create",
            "--raw",
            &format!("{base}?fieldValidation=Strict"),
            "-f",
            dup,
        ],
        None,
    );
    assert!(err.contains("duplicate field \"name\""), "{err}");
    let out = hub
        .kubectl_as(
            &hub.kubeconfig,
            &["create", "--raw", &base, "-f", dup],
            None,
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicate field \"name\""),
        "the warning is shown"
    );
}

fn errors(hub: &Hub) {
    environment(hub, NS);
    let out = hub
        .kubectl_as(
            &hub.kubeconfig,
            &["create", "-f", "-", "-v=6"],
            Some(&cluster_yaml(
                "bad",
                &[],
                "{kubernetesVersion: \"1.31\", nodePools: [{name: a, replicas: -1}]}",
            )),
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("422 Unprocessable Entity"), "{err}");
    assert!(
        err.contains("spec.kubernetesVersion: Invalid value: \"1.31\""),
        "{err}"
    );
    assert!(err.contains("spec.nodePools[0].replicas"), "{err}");

    let err = hub.fails(
        &["apply", "--validate=strict", "-f", "-"],
        Some(&cluster_yaml("strict", &[], "{bogus: 1}")),
    );
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    let err = hub.fails(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("wrong-type", &[], "{paused: \"yes\"}")),
    );
    assert!(
        err.contains("spec.paused") && err.contains("must be of type boolean"),
        "{err}"
    );

    let err = hub.fails(
        &["apply", "-f", "-"],
        Some(&cluster_yaml("x", &[], "{}").replace(NS, "nowhere")),
    );
    assert!(
        err.contains("namespace \"nowhere\" has no Environment"),
        "{err}"
    );

    let viewer = hub.user_kubeconfig("vera", &["edgefleet:viewers"]).unwrap();
    let listed = hub
        .kubectl_as(&viewer, &["get", "ec", "-n", NS], None)
        .unwrap();
    assert!(
        listed.status.success(),
        "a viewer can list: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let out = hub
        .kubectl_as(
            &viewer,
            &["create", "-f", "-"],
            Some(&cluster_yaml("by-viewer", &[], "{}")),
        )
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Forbidden"), "{err}");
    assert!(
        err.contains(
            "User \"vera\" cannot create resource \"clusters\" in API group \"edgefleet.io\""
        ),
        "{err}"
    );
}

macro_rules! suite {
    ($backend:ident, $env:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn discovery_and_explain() {
                super::discovery_and_explain(&$env.hub);
            }
            #[test]
            fn samples_and_tables() {
                super::samples_and_tables(&$env.hub);
            }
            #[test]
            fn label_annotate_patch_edit() {
                super::label_annotate_patch_edit(&$env.hub);
            }
            #[test]
            fn server_side_apply() {
                super::server_side_apply(&$env.hub);
            }
            #[test]
            fn watch_sees_changes_by_another_client() {
                super::watch_sees_changes_by_another_client(&$env.hub);
            }
            #[test]
            fn pagination() {
                super::pagination(&$env.hub);
            }
            #[test]
            fn selectors() {
                super::selectors(&$env.hub);
            }
            #[test]
            fn wait_for_jsonpath() {
                super::wait_for_jsonpath(&$env.hub);
            }
            #[test]
            fn delete_and_finalizers() {
                super::delete_and_finalizers(&$env.hub);
            }
            #[test]
            fn errors() {
                super::errors(&$env.hub);
            }
            #[test]
            fn hostile_and_contended_writes() {
                super::hostile_and_contended_writes(&$env.hub);
            }
        }
    };
}

suite!(embedded, Env::dev());
suite!(etcd, Env::etcd());
