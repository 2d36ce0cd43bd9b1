//! SIGKILL the hub during a burst of creates: every create that returned 201 survives, on the
//! embedded store and on etcd.

use std::collections::BTreeSet;

use edgefleet_api::testing::environment;
use edgefleet_e2e::hub::Hub;
use edgefleet_e2e::python::Burst;
use edgefleet_e2e::EtcdProcess;

/// Acknowledged creates to wait for before killing the hub.
const ACKED_BEFORE_KILL: usize = 200;
const WRITERS: usize = 16;

fn kill_mid_burst_loses_nothing(hub: &mut Hub) {
    hub.ok_stdin(&["apply", "-f", "-"], Some(&environment("crash").yaml()));
    let mut burst = Burst::start(&hub.kubeconfig, "crash", WRITERS);
    let acked = burst.created_at_least(ACKED_BEFORE_KILL);
    hub.kill();
    // The writers fail once the hub is gone; whatever they printed was acknowledged.
    let acked = burst.finish(acked);

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
