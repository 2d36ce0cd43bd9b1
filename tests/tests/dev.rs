//! `edgefleet-apiserver dev` beside another hub on the same machine: the tunnel port follows
//! `--listen`, and an address that is taken is named with the flag that moves it.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};

use edgefleet_apiserver::dev::TUNNEL_PORT_OFFSET;
use edgefleet_e2e::hub::binary;
use edgefleet_e2e::kubectl::{stop, Lines};

/// A loopback port that is free, and whose tunnel port (+ [`TUNNEL_PORT_OFFSET`]) is too.
fn free_pair() -> (TcpListener, TcpListener) {
    for _ in 0..50 {
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = api.local_addr().unwrap().port();
        let Some(tunnel_port) = port.checked_add(TUNNEL_PORT_OFFSET) else {
            continue;
        };
        if let Ok(tunnel) = TcpListener::bind(("127.0.0.1", tunnel_port)) {
            return (api, tunnel);
        }
    }
    panic!("no free pair of ports {TUNNEL_PORT_OFFSET} apart");
}

fn dev(data: &std::path::Path, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(binary("edgefleet-apiserver"));
    cmd.args([
        "dev",
        "--agents",
        "0",
        "--listen",
        &listen.to_string(),
        "--data-dir",
    ])
    .arg(data)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_dev_hub_moved_with_listen_alone_takes_the_tunnel_port_that_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (api, tunnel) = free_pair();
    let (listen, tunnel_addr) = (api.local_addr().unwrap(), tunnel.local_addr().unwrap());
    drop((api, tunnel));

    let mut child = dev(dir.path(), listen).spawn().unwrap();
    let mut lines = Lines::new(child.stdout.take().unwrap());
    let serving = lines.wait_for(std::time::Duration::from_secs(60), |l| {
        l.contains("serving on https://")
    });
    let stderr = stop(child);
    assert!(
        serving.contains(&format!("agents dial {tunnel_addr}")),
        "{serving}\n{stderr}"
    );
}

#[test]
fn a_taken_tunnel_port_is_named_with_the_flag_that_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (api, tunnel) = free_pair();
    let listen = api.local_addr().unwrap();
    drop(api);
    // Another hub's tunnel port, as a second dev hub on this machine finds it.
    let taken = tunnel.local_addr().unwrap();

    let out = dev(dir.path(), listen).output().unwrap();
    drop(tunnel);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&taken.to_string()),
        "names the address: {stderr}"
    );
    assert!(
        stderr.contains("--tunnel-listen"),
        "names the flag: {stderr}"
    );
    assert!(
        stderr.contains("Address already in use"),
        "says why: {stderr}"
    );
}

#[test]
fn a_taken_api_address_is_named_with_the_flag_that_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (api, tunnel) = free_pair();
    drop(tunnel);
    let taken = api.local_addr().unwrap();

    let out = dev(dir.path(), taken).output().unwrap();
    drop(api);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&taken.to_string()),
        "names the address: {stderr}"
    );
    assert!(stderr.contains("--listen"), "names the flag: {stderr}");
}
