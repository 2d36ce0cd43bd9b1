//! The Python `kubernetes` client from PyPI drives the hub: create, list, patch, watch, delete.

use std::process::Command;

use edgefleet_e2e::hub::{workspace_root, Hub};

#[test]
fn python_client_creates_lists_patches_watches_and_deletes() {
    let hub = Hub::dev().expect("dev hub starts");
    let script = workspace_root().join("tests/python/cluster_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&hub.kubeconfig)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}\n{}\n--- hub log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        hub.log_tail()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: ok"));
}
