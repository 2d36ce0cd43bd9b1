//! The shipped kustomize bases build (with kubectl's kustomize), and the hub's manifest only
//! passes flags and values the built `edgefleet-apiserver serve` accepts — so a renamed flag
//! cannot leave `config/` starting a crash-looping pod.

use std::process::Command;

use edgefleet_e2e::hub::{binary, workspace_root};
use serde::Deserialize as _;
use serde_json::Value;

/// `kubectl kustomize config/<base>`, as objects.
fn build(base: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join("config").join(base))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize config/{base}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn the_hub_base_builds_and_its_flags_are_ones_the_binary_accepts() {
    let objects = build("apiserver");
    let kinds = kinds(&objects);
    for kind in [
        "APIService",
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "RoleBinding",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let hub = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "edgefleet-apiserver")
        .expect("the hub's StatefulSet");
    let container = &hub["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect();
    assert_eq!(args.first(), Some(&"serve"), "{args:?}");
    // clap parses every argument (names and values) before it acts on --help.
    let out = Command::new(binary("edgefleet-apiserver"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("edgefleet-apiserver runs");
    assert!(
        out.status.success(),
        "edgefleet-apiserver {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every path a flag names is mounted.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for arg in &args {
        let Some((_, value)) = arg.split_once('=') else {
            continue;
        };
        if value.starts_with('/') {
            assert!(
                mounts.iter().any(|m| value.starts_with(m)),
                "{arg}: no volume is mounted there ({mounts:?})"
            );
        }
    }
}

#[test]
fn the_etcd_base_builds() {
    let objects = build("etcd");
    let kinds = kinds(&objects);
    assert!(kinds.contains(&"StatefulSet"), "{kinds:?}");
    assert!(kinds.contains(&"Service"), "{kinds:?}");
}
