//! Fixtures for the agent's integration tests: a hub side built from the tunnel's
//! `TunnelServer` with the tunnel's test `Admission` (token, then certificate), a fake edge
//! kube-apiserver over HTTPS, and waits with deadlines (no fixed sleeps). The PKI, admission and
//! signer are `edgefleet_tunnel::testing`'s, shared with the tunnel's tests; polling is
//! `edgefleet_testkit::eventually!`. Everything runs on loopback with real TLS.
#![allow(dead_code)] // each test binary uses a different subset

pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgefleet_agent::HubConfig;
use edgefleet_tunnel::{
    body, Backoff, SessionRegistry, TunnelBody, TunnelServer, TunnelServerConfig,
};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use edgefleet_testkit::{eventually, patient, PATIENCE};
pub use edgefleet_tunnel::testing::{TestAdmission, TestPki, HUB_NAME};

/// The name on the fake kube-apiserver's certificate.
pub const UPSTREAM_NAME: &str = "kubernetes.test";

/// The hub's tunnel port on loopback, and a client for the test to act as the hub.
pub struct Hub {
    pub server: TunnelServer,
    pub admission: Arc<TestAdmission>,
    pub addr: SocketAddr,
    ca_file: PathBuf,
    task: JoinHandle<()>,
}

impl Hub {
    pub async fn start(pki: &Arc<TestPki>, dir: &Path) -> Self {
        let admission = TestAdmission::new(pki.clone());
        let server = TunnelServer::new(
            TunnelServerConfig::new(pki.server_tls(), "hub-test-0"),
            admission.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        let task = tokio::spawn(async move { serving.serve(listener).await });
        Self {
            server,
            admission,
            addr,
            ca_file: pki.write_ca(dir),
            task,
        }
    }

    /// How an agent reaches this hub (short backoff, so restarts are quick).
    pub fn agent_config(&self) -> HubConfig {
        let mut hub = HubConfig::new(self.addr.to_string(), &self.ca_file);
        hub.server_name = Some(HUB_NAME.into());
        hub.backoff = Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
        };
        hub
    }

    pub fn registry(&self) -> &SessionRegistry {
        self.server.registry()
    }

    /// Waits until `identity` has a session other than `not`; returns its id.
    pub async fn connected(&self, identity: &str, not: Option<u64>) -> u64 {
        eventually!(
            self.registry()
                .get(identity)
                .map(|s| s.id())
                .filter(|id| Some(*id) != not),
            "{identity} to connect"
        )
    }

    /// Sends `req` to `identity`'s agent, as the hub's proxy would.
    pub async fn send(&self, identity: &str, req: Request<TunnelBody>) -> Response<Incoming> {
        self.registry().dialer(identity).send(req).await.unwrap()
    }

    /// A GET as the hub's proxy sends it (impersonating `alice`), with `accept`; the whole body.
    pub async fn get(
        &self,
        identity: &str,
        path: &str,
        accept: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let req = Request::get(path)
            .header("impersonate-user", "alice")
            .header("accept", accept)
            .body(body::empty())
            .unwrap();
        let response = self.send(identity, req).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, bytes)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next data frame of `body`, or panics after [`PATIENCE`] (× patience).
pub async fn next_chunk(body: &mut Incoming) -> Bytes {
    let frame = tokio::time::timeout(patient(PATIENCE), body.frame())
        .await
        .expect("no chunk in time")
        .expect("the body ended")
        .expect("the body failed");
    frame.into_data().expect("a data frame")
}
