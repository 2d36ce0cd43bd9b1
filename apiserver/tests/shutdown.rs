//! A dev hub in process, on loopback ports: when `BoundServer::run` returns, the hub's
//! background tasks have stopped (the tunnel port among them: it no longer accepts agents).

use std::time::Duration;

use edgefleet_apiserver::app;
use edgefleet_apiserver::dev::{self, DevLayout, DevOptions};

#[tokio::test]
async fn when_run_returns_the_tunnel_port_and_every_background_task_have_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let layout = DevLayout::new(dir.path()).unwrap();
    let options = DevOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tunnel_listen: "127.0.0.1:0".parse().unwrap(),
        keepalive: edgefleet_tunnel::Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(20),
        },
        token_auth_file: None,
        audit_segment_max_bytes: app::DEFAULT_AUDIT_SEGMENT_MAX_BYTES,
    };
    let config = dev::prepare(&layout, &options).unwrap();
    let server = app::bind(&config).await.unwrap();
    let tunnel = server
        .agents()
        .expect("a dev hub has a tunnel port")
        .address();
    assert!(tokio::net::TcpStream::connect(tunnel).await.is_ok());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(edgefleet_testkit::patient(Duration::from_secs(30)), running)
        .await
        .expect("run returns after shutdown")
        .unwrap();

    // The tunnel port's accept loop was one of the hub's tasks: it is gone with them.
    let refused = tokio::net::TcpStream::connect(tunnel).await;
    assert!(
        refused.is_err(),
        "the tunnel port still accepts after run returned"
    );
}
