//! The JSON the test upstream serves: discovery, its one Pod, and `metav1.Status` errors.

use serde_json::{json, Value};

/// Namespace of the test upstream's pod.
pub const NAMESPACE: &str = "default";
/// Name of the test upstream's pod.
pub const POD: &str = "edge-pod";
/// Its only container.
pub const CONTAINER: &str = "main";
/// The container port that echoes what it receives (`kubectl port-forward`).
pub const ECHO_PORT: u16 = 8080;
/// The pod's UID (port-forward errors name it).
pub const POD_UID: &str = "6f1c2a9e-0d7b-4c55-9a39-2f0e8c7d1b42";
/// Kubernetes version `/version` reports.
pub const GIT_VERSION: &str = "v1.32.0-edgefleet-test-upstream";

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `GET /apis`: no groups.
pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
}

/// `GET /api/v1`: pods and the subresources kubectl's streaming commands use.
pub fn core_v1_resources() -> Value {
    let sub = |name: &str, kind: &str, verbs: &[&str]| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs});
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
            sub("pods/attach", "PodAttachOptions", &["create", "get"]),
            sub("pods/exec", "PodExecOptions", &["create", "get"]),
            sub("pods/log", "Pod", &["get"]),
            sub("pods/portforward", "PodPortForwardOptions", &["create", "get"]),
        ],
    })
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": GIT_VERSION, "gitCommit": "0000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// The pod: running, one container with stdin and the echo port.
pub fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD, "namespace": NAMESPACE, "uid": POD_UID, "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "edge"},
        },
        "spec": {
            "nodeName": "edge-node-1",
            "containers": [{
                "name": CONTAINER, "image": "registry.example/edge-app:1", "stdin": true,
                "ports": [{"name": "http", "containerPort": ECHO_PORT, "protocol": "TCP"}],
            }],
        },
        "status": {
            "phase": "Running", "podIP": "10.42.0.10",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": CONTAINER, "ready": true, "restartCount": 0, "started": true,
                "image": "registry.example/edge-app:1", "imageID": "",
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
            }],
        },
    })
}

/// `GET pods`.
pub fn pod_list(namespace: Option<&str>) -> Value {
    let items = match namespace {
        Some(ns) if ns != NAMESPACE => vec![],
        _ => vec![pod()],
    };
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A failure `Status`.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// What a remote command's error channel carries at its end (the v4 protocol and later): the
/// exit code, as kubelet reports it.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}
