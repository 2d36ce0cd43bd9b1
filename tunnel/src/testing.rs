//! Test fixtures for the tunnel's users (feature `testing`): one PKI, one [`Admission`] and one
//! [`CertificateSigner`] that the tunnel's, the agent's and the end-to-end tests share, so that
//! every test reads admission the same way.
//!
//! ```text
//!   TestPki ── ca ───────── signs ──► hub serving certificate (CN hub, SAN HUB_NAME)
//!          │                     └──► client(identity), server(cn, names), enrolled CSRs
//!          └─ rogue CA ──── signs ──► forged_client(identity)       (a CA nobody trusts)
//!
//!   TestAdmission (the hub's policy in tests)
//!     client certificate ──► its CN is the identity, unless revoked
//!     no certificate ──────► a known, unused, unexpired bootstrap token + a CSR enrolls
//!                            (the token is then spent); anything else is refused
//!     every refusal carries retryAfter = TEST_RETRY_AFTER, and is recorded
//! ```
//!
//! Real certificates and real TLS, with short-lived keys generated per test: nothing here is
//! a mock of the tunnel.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::handshake::Hello;
use crate::identity::{
    Admission, Admitted, CertificateAuthority, CertificateSigner, PeerCertificates, Refusal,
    StoredIdentity, Usage,
};
use crate::BoxError;

/// The name on the test hub's serving certificate (what agents check).
pub const HUB_NAME: &str = "hub.test";

/// How long test certificates are valid: longer than any test, short enough to be obviously
/// a test's.
pub const TEST_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The retry hint of every refusal: short, so tests stay quick, but long enough that an agent
/// honouring it is seen to (test agents' backoff starts at 50 ms).
pub const TEST_RETRY_AFTER: Duration = Duration::from_millis(200);

/// A CA for the hub and its agents, plus an unrelated CA for forged certificates.
pub struct TestPki {
    pub ca: CertificateAuthority,
    /// The hub's serving identity (CN `hub`, SAN [`HUB_NAME`]).
    pub hub: StoredIdentity,
    rogue_ca: CertificateAuthority,
}

impl TestPki {
    /// Generates the CAs and the hub's certificate.
    ///
    /// # Panics
    /// When key generation fails (it does not, with `ring`).
    pub fn new() -> Arc<Self> {
        let ca =
            CertificateAuthority::generate("edgefleet test CA", TEST_VALIDITY).expect("a test CA");
        let hub = ca
            .issue("hub", &[HUB_NAME], Usage::Server, TEST_VALIDITY)
            .expect("the hub's certificate");
        let rogue_ca =
            CertificateAuthority::generate("rogue CA", TEST_VALIDITY).expect("a rogue CA");
        Arc::new(Self { ca, hub, rogue_ca })
    }

    /// The hub's TLS configuration: its certificate, client certificates from the test CA
    /// verified (and optional, for enrollment).
    pub fn server_tls(&self) -> rustls::ServerConfig {
        crate::tls::server_config(
            &self.hub.certificate_chain_pem,
            self.hub.key_pem(),
            Some(self.ca.certificate_pem()),
        )
        .expect("the test hub's TLS configuration")
    }

    /// What agents trust for the hub.
    pub fn hub_roots(&self) -> rustls::RootCertStore {
        crate::tls::root_store_from_pem(self.ca.certificate_pem()).expect("the test CA parses")
    }

    /// A client certificate for `identity` signed by the test CA (an enrolled agent).
    pub fn client(&self, identity: &str) -> StoredIdentity {
        self.ca
            .issue(identity, &[], Usage::Client, TEST_VALIDITY)
            .expect("a client certificate")
    }

    /// A client certificate for `identity` signed by a CA the hub does not trust.
    pub fn forged_client(&self, identity: &str) -> StoredIdentity {
        self.rogue_ca
            .issue(identity, &[], Usage::Client, TEST_VALIDITY)
            .expect("a forged client certificate")
    }

    /// A serving certificate from the test CA for another server of the test (an edge
    /// cluster's API server double), named `common_name`, valid for `dns_names`.
    pub fn server(&self, common_name: &str, dns_names: &[&str]) -> StoredIdentity {
        self.ca
            .issue(common_name, dns_names, Usage::Server, TEST_VALIDITY)
            .expect("a serving certificate")
    }

    /// Writes the CA bundle to `dir/ca.pem` and returns its path (for `--hub-ca-file`).
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca.certificate_pem())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

struct Token {
    identity: String,
    used: bool,
    expired: bool,
}

/// The hub's admission policy in tests (see the module docs), recording what it decided.
pub struct TestAdmission {
    pki: Arc<TestPki>,
    tokens: Mutex<HashMap<String, Token>>,
    revoked: Mutex<HashSet<String>>,
    enrolled: Mutex<Vec<String>>,
    certificates: Mutex<Vec<(String, String)>>,
    refusals: Mutex<Vec<String>>,
}

/// A poisoned lock only means another test thread panicked; the records are still readable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl TestAdmission {
    pub fn new(pki: Arc<TestPki>) -> Arc<Self> {
        Arc::new(Self {
            pki,
            tokens: Mutex::default(),
            revoked: Mutex::default(),
            enrolled: Mutex::default(),
            certificates: Mutex::default(),
            refusals: Mutex::default(),
        })
    }

    /// A single-use bootstrap token that enrolls `identity`.
    pub fn add_token(&self, token: &str, identity: &str) {
        lock(&self.tokens).insert(
            token.into(),
            Token {
                identity: identity.into(),
                used: false,
                expired: false,
            },
        );
    }

    /// A bootstrap token for `identity` that has expired.
    pub fn add_expired_token(&self, token: &str, identity: &str) {
        self.add_token(token, identity);
        if let Some(entry) = lock(&self.tokens).get_mut(token) {
            entry.expired = true;
        }
    }

    /// Refuses `identity`'s certificate from now on.
    pub fn revoke(&self, identity: &str) {
        lock(&self.revoked).insert(identity.into());
    }

    /// Identities admitted by bootstrap token (enrollments), in order.
    pub fn enrolled(&self) -> Vec<String> {
        lock(&self.enrolled).clone()
    }

    /// Identities admitted by client certificate, in order.
    pub fn by_certificate(&self) -> Vec<String> {
        lock(&self.certificates)
            .iter()
            .map(|(identity, _)| identity.clone())
            .collect()
    }

    /// Serial numbers (hex) of the client certificates admitted, in order.
    pub fn certificate_serials(&self) -> Vec<String> {
        lock(&self.certificates)
            .iter()
            .map(|(_, serial)| serial.clone())
            .collect()
    }

    /// The serial of the last certificate `identity` was admitted with.
    pub fn last_serial_of(&self, identity: &str) -> Option<String> {
        lock(&self.certificates)
            .iter()
            .rev()
            .find(|(id, _)| id == identity)
            .map(|(_, serial)| serial.clone())
    }

    /// Reasons of refusals, in order.
    pub fn refusals(&self) -> Vec<String> {
        lock(&self.refusals).clone()
    }

    fn refuse(&self, reason: impl Into<String>) -> Refusal {
        let reason = reason.into();
        lock(&self.refusals).push(reason.clone());
        Refusal::new(reason).retry_after(TEST_RETRY_AFTER)
    }
}

#[async_trait]
impl Admission for TestAdmission {
    async fn admit(&self, hello: &Hello, peer: &PeerCertificates) -> Result<Admitted, Refusal> {
        if let Some(identity) = peer.common_name() {
            if lock(&self.revoked).contains(&identity) {
                return Err(self.refuse("certificate revoked"));
            }
            let serial = peer.serial_hex().unwrap_or_default();
            lock(&self.certificates).push((identity.clone(), serial));
            return Ok(Admitted {
                identity,
                issue_certificate: None,
            });
        }
        let Some(token) = &hello.bootstrap_token else {
            return Err(self.refuse("no client certificate or bootstrap token"));
        };
        let (identity, chain) = {
            let mut tokens = lock(&self.tokens);
            let Some(entry) = tokens.get_mut(token) else {
                drop(tokens);
                return Err(self.refuse("unknown bootstrap token"));
            };
            if entry.expired {
                drop(tokens);
                return Err(self.refuse("bootstrap token expired"));
            }
            if entry.used {
                drop(tokens);
                return Err(self.refuse("bootstrap token already used"));
            }
            let Some(csr) = &hello.csr_pem else {
                drop(tokens);
                return Err(self.refuse("enrollment needs a CSR"));
            };
            let chain = match self.pki.ca.sign_csr(csr, &entry.identity, TEST_VALIDITY) {
                Ok(chain) => chain,
                Err(e) => {
                    drop(tokens);
                    return Err(self.refuse(format!("invalid CSR: {e}")));
                }
            };
            entry.used = true;
            (entry.identity.clone(), chain)
        };
        lock(&self.enrolled).push(identity.clone());
        Ok(Admitted {
            identity,
            issue_certificate: Some(chain),
        })
    }
}

/// Signs rotation CSRs with the test CA, as the hub's signer would.
pub struct TestSigner(pub Arc<TestPki>);

#[async_trait]
impl CertificateSigner for TestSigner {
    async fn sign(&self, identity: &str, csr_pem: &str) -> Result<String, BoxError> {
        Ok(self.0.ca.sign_csr(csr_pem, identity, TEST_VALIDITY)?)
    }
}
