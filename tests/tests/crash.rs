//! SIGKILL the hub during a burst of creates: every create that returned 201 survives, on the
//! embedded store and on etcd.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgefleet_e2e::hub::{workspace_root, Hub};
use edgefleet_e2e::EtcdProcess;

/// Acknowledged creates to wait for before killing the hub.
const ACKED_BEFORE_KILL: usize = 200;
const WRITERS: &str = "16";

fn kill_mid_burst_loses_nothing(hub: &mut Hub) {
    hub.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: edgefleet.io/v1alpha1\nkind: Environment\nmetadata:\n  name: crash\n"),
    );
    let script = workspace_root().join("tests/python/burst_create.py");
    let mut burst = Command::new("python3")
        .arg(&script)
        .arg(&hub.kubeconfig)
        .args(["crash", WRITERS])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let stdout = burst.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("created ") {
                let _ = tx.send(name.to_string());
            }
        }
    });
    let mut acked = BTreeSet::new();
    while acked.len() < ACKED_BEFORE_KILL {
        let name = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("creates are acknowledged");
        acked.insert(name);
    }
    hub.kill();
    // The writers fail once the hub is gone; whatever they printed was acknowledged.
    let _ = burst.wait();
    reader.join().unwrap();
    acked.extend(rx.try_iter());

    hub.start().expect("the hub restarts on the same data");
    let listed = hub.ok(&["get", "ec", "-n", "crash", "-o", "name"]);
    let stored: BTreeSet<String> = listed
        .lines()
        .map(|l| l.trim_start_matches("cluster.edgefleet.io/").to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates were lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}

#[test]
fn embedded_store_keeps_every_acknowledged_create() {
    let mut hub = Hub::dev().expect("dev hub starts");
    kill_mid_burst_loses_nothing(&mut hub);
}

#[test]
fn etcd_keeps_every_acknowledged_create() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(EtcdProcess::start()).expect("etcd starts");
    let mut hub = Hub::etcd(&etcd).expect("hub on etcd starts");
    kill_mid_burst_loses_nothing(&mut hub);
}
