//! Fixtures for the agent's integration tests: a test PKI, a hub side built from the tunnel's
//! `TunnelServer` with a token-then-certificate `Admission`, a fake edge kube-apiserver over
//! HTTPS, and polling helpers (no fixed sleeps). Everything runs on loopback with real TLS.
#![allow(dead_code)] // each test binary uses a different subset

pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_agent::HubConfig;
use edgefleet_tunnel::handshake::Hello;
use edgefleet_tunnel::identity::Usage;
use edgefleet_tunnel::{
    async_trait, body, Admission, Admitted, Backoff, CertificateAuthority, CertificateSigner,
    PeerCertificates, Refusal, SessionRegistry, StoredIdentity, TunnelBody, TunnelServer,
    TunnelServerConfig,
};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long to wait for something that should happen "soon". Generous: a loaded CI machine is
/// slow, and a passing test is not slowed by it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The name on the hub's tunnel certificate.
pub const HUB_NAME: &str = "hub.test";
/// The name on the fake kube-apiserver's certificate.
pub const UPSTREAM_NAME: &str = "kubernetes.test";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// One CA for the hub, the agents and the fake upstream.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub hub: StoredIdentity,
    pub upstream: StoredIdentity,
}

impl Pki {
    pub fn new() -> Arc<Self> {
        let ca = CertificateAuthority::generate("edgefleet agent test CA", DAY).unwrap();
        let hub = ca.issue("hub", &[HUB_NAME], Usage::Server, DAY).unwrap();
        let upstream = ca
            .issue("kube-apiserver", &[UPSTREAM_NAME], Usage::Server, DAY)
            .unwrap();
        Arc::new(Self { ca, hub, upstream })
    }

    /// Writes the CA bundle to `dir/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.certificate_pem()).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// The hub side: the tunnel's server with a test admission policy

/// Test policy: a client certificate's CN is the identity; otherwise a known, unused bootstrap
/// token plus a CSR enrolls the agent (the token is then spent).
pub struct TestAdmission {
    pki: Arc<Pki>,
    tokens: Mutex<HashMap<String, (String, bool)>>,
    /// Identities admitted by token (enrollments), in order.
    pub enrolled: Mutex<Vec<String>>,
    /// Identities admitted by client certificate, in order.
    pub by_certificate: Mutex<Vec<String>>,
    /// Serial numbers (hex) of the client certificates admitted, in order.
    pub certificate_serials: Mutex<Vec<String>>,
    /// Reasons of refusals, in order.
    pub refusals: Mutex<Vec<String>>,
}

impl TestAdmission {
    pub fn add_token(&self, token: &str, identity: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.into(), (identity.into(), false));
    }

    fn refuse(&self, reason: &str) -> Refusal {
        self.refusals.lock().unwrap().push(reason.into());
        Refusal::new(reason).retry_after(Duration::from_millis(100))
    }
}

#[async_trait]
impl Admission for TestAdmission {
    async fn admit(&self, hello: &Hello, peer: &PeerCertificates) -> Result<Admitted, Refusal> {
        if let Some(identity) = peer.common_name() {
            self.by_certificate.lock().unwrap().push(identity.clone());
            self.certificate_serials
                .lock()
                .unwrap()
                .push(peer.serial_hex().unwrap_or_default());
            return Ok(Admitted {
                identity,
                issue_certificate: None,
            });
        }
        let (Some(token), Some(csr)) = (&hello.bootstrap_token, &hello.csr_pem) else {
            return Err(self.refuse("no client certificate or bootstrap token"));
        };
        let mut tokens = self.tokens.lock().unwrap();
        let Some((identity, used)) = tokens.get_mut(token) else {
            drop(tokens);
            return Err(self.refuse("unknown bootstrap token"));
        };
        if *used {
            drop(tokens);
            return Err(self.refuse("bootstrap token already used"));
        }
        let chain = self
            .pki
            .ca
            .sign_csr(csr, identity, DAY)
            .map_err(|e| Refusal::new(format!("invalid CSR: {e}")))?;
        *used = true;
        let identity = identity.clone();
        drop(tokens);
        self.enrolled.lock().unwrap().push(identity.clone());
        Ok(Admitted {
            identity,
            issue_certificate: Some(chain),
        })
    }
}

/// Signs rotation CSRs with the test CA, as the hub's signer would.
pub struct TestSigner(pub Arc<Pki>);

#[async_trait]
impl CertificateSigner for TestSigner {
    async fn sign(
        &self,
        identity: &str,
        csr_pem: &str,
    ) -> Result<String, edgefleet_tunnel::BoxError> {
        Ok(self.0.ca.sign_csr(csr_pem, identity, DAY)?)
    }
}

/// The hub's tunnel port on loopback, and a client for the test to act as the hub.
pub struct Hub {
    pub server: TunnelServer,
    pub admission: Arc<TestAdmission>,
    pub addr: SocketAddr,
    ca_file: PathBuf,
    task: JoinHandle<()>,
}

impl Hub {
    pub async fn start(pki: &Arc<Pki>, dir: &Path) -> Self {
        let tls = edgefleet_tunnel::tls::server_config(
            &pki.hub.certificate_chain_pem,
            pki.hub.key_pem(),
            Some(pki.ca.certificate_pem()),
        )
        .unwrap();
        let admission = Arc::new(TestAdmission {
            pki: pki.clone(),
            tokens: Mutex::default(),
            enrolled: Mutex::default(),
            by_certificate: Mutex::default(),
            certificate_serials: Mutex::default(),
            refusals: Mutex::default(),
        });
        let server = TunnelServer::new(
            TunnelServerConfig::new(tls, "hub-test-0"),
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
        wait_for(&format!("{identity} to connect"), || {
            self.registry()
                .get(identity)
                .map(|s| s.id())
                .filter(|id| Some(*id) != not)
        })
        .await
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

/// Polls `probe` every 10 ms until it returns `Some`, or panics after [`PATIENCE`].
pub async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next data frame of `body`, or panics after [`PATIENCE`].
pub async fn next_chunk(body: &mut Incoming) -> Bytes {
    let frame = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("no chunk in time")
        .expect("the body ended")
        .expect("the body failed");
    frame.into_data().expect("a data frame")
}
