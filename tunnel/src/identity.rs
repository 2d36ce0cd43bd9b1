//! Identity, as mechanism. Policy (which tokens are valid, which clusters are revoked, how an
//! identity is named) lives in the hub, behind [`Admission`] and [`CertificateSigner`].
//!
//! The life of an agent's identity:
//!
//! ```text
//!  first contact      Hello{bootstrapToken, csrPem} ──► Admission::admit ──► Welcome{certificateChainPem}
//!                     agent stores key + certificate (IdentityStore) and keeps this connection
//!  every reconnect    TLS client certificate ──► Admission::admit (e.g. CN → identity, revocation)
//!  rotation           hub: Session::rotate_certificate(signer)
//!                       POST /.well-known/edgefleet-tunnel/csr          ◄── new key's CSR
//!                       signer.sign(identity, csr)
//!                       PUT  /.well-known/edgefleet-tunnel/certificate  ──► agent stores it,
//!                     used from the next connect on (the current session is not interrupted)
//!  revocation         hub: SessionRegistry::close(identity); Admission refuses the next Hello
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{BoxError, Error, Result};
use crate::handshake::Hello;
use crate::timeouts::CERTIFICATE_BACKDATE;
use crate::tls::certificates_from_pem;

/// The client certificate chain the agent presented in TLS (verified against the hub's client
/// CA by rustls), or none.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates {
    chain: Vec<CertificateDer<'static>>,
}

impl PeerCertificates {
    /// Wraps a verified chain, leaf first.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self { chain }
    }

    /// The chain, leaf first; empty when the agent presented no certificate.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The agent's own certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// The leaf's subject common name, e.g. `cluster:retail/edge-1`.
    pub fn common_name(&self) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(self.leaf()?).ok()?;
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }

    /// The leaf's serial number as lowercase hex, for revocation lists.
    pub fn serial_hex(&self) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(self.leaf()?).ok()?;
        Some(cert.raw_serial_as_string().replace(':', ""))
    }
}

/// The hub's decision to let an agent in.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The identity the session is registered under (`cluster:<env>/<name>`).
    pub identity: String,
    /// Certificate chain PEM to hand to the agent (enrollment); the agent presents it from its
    /// next connection on.
    pub issue_certificate: Option<String>,
}

/// The hub's decision to keep an agent out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Clear, human-readable, secret-free: "bootstrap token already used", "bootstrap token
    /// expired", "certificate revoked". It ends up in the agent's log.
    pub reason: String,
    /// Ask the agent to wait at least this long before retrying.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// A refusal with no retry hint (the agent uses its backoff).
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Sets the retry hint.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// Decides who an agent is. Injected into [`crate::TunnelServer`] by the hub.
#[async_trait]
pub trait Admission: Send + Sync + 'static {
    /// Admits or refuses the agent that sent `hello` over a TLS connection that presented
    /// `peer`. Runs inside the handshake timeout.
    async fn admit(&self, hello: &Hello, peer: &PeerCertificates) -> Result<Admitted, Refusal>;
}

/// Signs an agent's CSR during rotation. Implemented by the hub (e.g. with a
/// [`CertificateAuthority`] and its own validity policy).
#[async_trait]
pub trait CertificateSigner: Send + Sync {
    /// Returns the certificate chain PEM (leaf first) for `identity`'s CSR.
    async fn sign(&self, identity: &str, csr_pem: &str) -> Result<String, BoxError>;
}

/// A single-use enrollment token. [`fmt::Debug`] never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

impl BootstrapToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the Hello and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapToken(<redacted>)")
    }
}

/// An agent's private key and the certificate chain issued for it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    /// Certificate chain PEM, leaf first.
    pub certificate_chain_pem: String,
    key_pem: String,
}

impl StoredIdentity {
    /// Pairs a chain with its key after checking that the leaf certifies that key.
    pub fn new(certificate_chain_pem: String, key_pem: String) -> Result<Self> {
        let key = KeyPair::from_pem(&key_pem).map_err(Error::Certificate)?;
        ensure_certificate_matches_key(&certificate_chain_pem, &key)?;
        Ok(Self {
            certificate_chain_pem,
            key_pem,
        })
    }

    /// The private key PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The leaf certificate's serial number as lowercase hex.
    pub fn serial_hex(&self) -> Result<String> {
        let chain = certificates_from_pem(&self.certificate_chain_pem)?;
        PeerCertificates::new(chain)
            .serial_hex()
            .ok_or_else(|| Error::Pem("unparsable certificate".into()))
    }
}

impl fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("certificate_chain_pem", &self.certificate_chain_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Checks that the leaf of `chain_pem` certifies `key`'s public key.
fn ensure_certificate_matches_key(chain_pem: &str, key: &KeyPair) -> Result<()> {
    let chain = certificates_from_pem(chain_pem)?;
    let (_, leaf) = X509Certificate::from_der(&chain[0])
        .map_err(|e| Error::Pem(format!("certificate: {e}")))?;
    if leaf.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(key) {
        return Err(Error::CertificateKeyMismatch);
    }
    Ok(())
}

/// A fresh key pair (ECDSA P-256) and a CSR for it. The CSR's subject CN is `identity_claim`
/// when given; the hub decides the real subject anyway.
pub fn generate_csr(identity_claim: Option<&str>) -> Result<(PendingKey, String)> {
    let key = KeyPair::generate().map_err(Error::Certificate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(claim) = identity_claim {
        params.distinguished_name.push(DnType::CommonName, claim);
    }
    let csr = params.serialize_request(&key).map_err(Error::Certificate)?;
    let pem = csr.pem().map_err(Error::Certificate)?;
    Ok((PendingKey { key }, pem))
}

/// A key whose certificate has been requested but not yet issued.
pub struct PendingKey {
    key: KeyPair,
}

impl PendingKey {
    /// Pairs the key with its issued chain, checking that the chain certifies this key.
    pub fn complete(self, certificate_chain_pem: String) -> Result<StoredIdentity> {
        ensure_certificate_matches_key(&certificate_chain_pem, &self.key)?;
        Ok(StoredIdentity {
            certificate_chain_pem,
            key_pem: self.key.serialize_pem(),
        })
    }
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingKey(<redacted>)")
    }
}

/// Where an agent keeps its key and certificate between connections.
///
/// The directory backend writes one file, `identity.pem` (certificate chain, then key), mode
/// 0600, replaced atomically (write to a temporary file, then rename), so a crash never leaves a
/// certificate next to the wrong key. The memory backend is for simulated agents and tests.
#[derive(Clone, Debug)]
pub struct IdentityStore {
    backend: Arc<Backend>,
}

#[derive(Debug)]
enum Backend {
    Directory(PathBuf),
    Memory(Mutex<Option<StoredIdentity>>),
}

const IDENTITY_FILE: &str = "identity.pem";

impl IdentityStore {
    /// A store in `dir` (created on first write).
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        Self {
            backend: Arc::new(Backend::Directory(dir.into())),
        }
    }

    /// A store that lives as long as the process.
    pub fn in_memory() -> Self {
        Self {
            backend: Arc::new(Backend::Memory(Mutex::new(None))),
        }
    }

    /// The stored identity, if the agent has enrolled.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        match &*self.backend {
            Backend::Memory(slot) => Ok(lock(slot).clone()),
            Backend::Directory(dir) => {
                let path = dir.join(IDENTITY_FILE);
                let pem = match std::fs::read_to_string(&path) {
                    Ok(pem) => pem,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(source) => return Err(Error::IdentityStore { path, source }),
                };
                let (chain, key) = split_identity_pem(&pem).ok_or_else(|| {
                    Error::Pem(format!("{} holds no certificate and key", path.display()))
                })?;
                StoredIdentity::new(chain, key).map(Some)
            }
        }
    }

    /// Replaces the stored identity.
    pub fn store(&self, identity: &StoredIdentity) -> Result<()> {
        match &*self.backend {
            Backend::Memory(slot) => {
                *lock(slot) = Some(identity.clone());
                Ok(())
            }
            Backend::Directory(dir) => write_identity_file(dir, identity),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the Option half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Splits `identity.pem` into (certificate chain PEM, key PEM).
fn split_identity_pem(pem: &str) -> Option<(String, String)> {
    let key_start = pem.find("-----BEGIN PRIVATE KEY-----")?;
    let (chain, key) = pem.split_at(key_start);
    (!chain.trim().is_empty()).then(|| (chain.to_owned(), key.to_owned()))
}

fn write_identity_file(dir: &Path, identity: &StoredIdentity) -> Result<()> {
    use std::io::Write;

    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::IdentityStore { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    let mut contents = identity.certificate_chain_pem.trim_end().to_owned();
    contents.push('\n');
    contents.push_str(&identity.key_pem);
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(IDENTITY_FILE);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// What a certificate issued by [`CertificateAuthority::issue`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (the hub's tunnel port).
    Server,
    /// A TLS client (an agent).
    Client,
}

/// The subject, names and use of a certificate [`CertificateAuthority::issue_leaf`] makes.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    /// `O=` values; for Kubernetes client certificates, the user's groups (at most one).
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub usage: Usage,
    pub validity: Duration,
}

impl LeafSpec {
    /// How long [`LeafSpec::client`] and [`LeafSpec::server`] certificates are valid.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

    /// A client certificate for `user` in `groups` (CN = user, O = groups).
    pub fn client(user: &str, groups: &[&str]) -> Self {
        Self {
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: Usage::Client,
            validity: Self::DEFAULT_VALIDITY,
        }
    }

    /// A serving certificate for the given names.
    pub fn server(
        common_name: &str,
        dns_names: &[&str],
        ip_addresses: &[std::net::IpAddr],
    ) -> Self {
        Self {
            common_name: common_name.into(),
            organizations: Vec::new(),
            dns_names: dns_names.iter().map(|d| d.to_string()).collect(),
            ip_addresses: ip_addresses.to_vec(),
            usage: Usage::Server,
            validity: Self::DEFAULT_VALIDITY,
        }
    }
}

/// A small certificate authority: enough for the hub to enroll and rotate agents, and for tests
/// and development setups to mint the hub's serving and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA valid for `validity`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self> {
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let mut params = base_params(common_name, validity)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(Error::Certificate)?;
        Ok(Self {
            certificate_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA certificate and its key.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(Error::Certificate)?;
        let issuer = Issuer::from_ca_cert_pem(certificate_pem, key).map_err(Error::Certificate)?;
        Ok(Self {
            issuer,
            certificate_pem: certificate_pem.to_owned(),
        })
    }

    /// The CA certificate PEM (what the other side trusts).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA's private key PEM, to persist it. Handle as a secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs an agent's CSR as a client certificate for `identity`, valid for `validity`.
    /// Only the CSR's key is used: the subject is `CN=identity` whatever the CSR asked for, and
    /// no requested extension is copied. The CSR's signature is checked (proof of possession).
    pub fn sign_csr(&self, csr_pem: &str, identity: &str, validity: Duration) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(Error::Certificate)?;
        let mut params = base_params(identity, validity)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(Error::Certificate)?;
        Ok(cert.pem())
    }

    /// Issues a fresh key and certificate (`CN=common_name`, DNS SANs `dns_names`).
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[&str],
        usage: Usage,
        validity: Duration,
    ) -> Result<StoredIdentity> {
        let mut spec = match usage {
            Usage::Server => LeafSpec::server(common_name, dns_names, &[]),
            Usage::Client => LeafSpec::client(common_name, &[]),
        };
        spec.validity = validity;
        self.issue_leaf(&spec)
    }

    /// Issues a fresh key and certificate as `spec` describes.
    ///
    /// rcgen keeps one value per subject attribute type, so a certificate carries at most one
    /// `O` (group); more are refused rather than silently dropped.
    pub fn issue_leaf(&self, spec: &LeafSpec) -> Result<StoredIdentity> {
        if spec.organizations.len() > 1 {
            return Err(Error::Pem(format!(
                "a certificate can carry one group (O) here, not {}",
                spec.organizations.len()
            )));
        }
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let mut params = base_params(&spec.common_name, spec.validity)?;
        for org in &spec.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        let mut sans = Vec::new();
        for name in &spec.dns_names {
            let name =
                rcgen::string::Ia5String::try_from(name.as_str()).map_err(Error::Certificate)?;
            sans.push(rcgen::SanType::DnsName(name));
        }
        sans.extend(
            spec.ip_addresses
                .iter()
                .map(|ip| rcgen::SanType::IpAddress(*ip)),
        );
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match spec.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(Error::Certificate)?;
        Ok(StoredIdentity {
            certificate_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn base_params(common_name: &str, validity: Duration) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let now = time::OffsetDateTime::now_utc();
    let to_time = |d: Duration| {
        time::Duration::try_from(d).map_err(|_| Error::Pem("validity out of range".into()))
    };
    params.not_before = now - to_time(CERTIFICATE_BACKDATE)?;
    params.not_after = now + to_time(validity)?;
    let mut serial = [0_u8; 16];
    rand::rng().fill_bytes(&mut serial);
    // Positive and without a leading zero byte, as RFC 5280 wants serials.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_signed_csr_yields_an_identity_whose_subject_is_chosen_by_the_ca() {
        let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
        let (pending, csr) = generate_csr(Some("cluster:evil/other")).unwrap();
        let chain = ca.sign_csr(&csr, "cluster:retail/edge-1", DAY).unwrap();
        let identity = pending.complete(chain).unwrap();
        let peer =
            PeerCertificates::new(certificates_from_pem(&identity.certificate_chain_pem).unwrap());
        assert_eq!(peer.common_name().as_deref(), Some("cluster:retail/edge-1"));
        assert_eq!(peer.serial_hex().unwrap().len(), 32);
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
        let (pending, _) = generate_csr(None).unwrap();
        let (_, other_csr) = generate_csr(None).unwrap();
        let chain = ca.sign_csr(&other_csr, "cluster:a/b", DAY).unwrap();
        assert!(matches!(
            pending.complete(chain),
            Err(Error::CertificateKeyMismatch)
        ));
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
        let (_, csr) = generate_csr(Some("cluster:a/b")).unwrap();
        // Flip one base64 character in the middle of the request (key or signature bits).
        let mut tampered = csr.into_bytes();
        let middle = tampered.len() / 2;
        let (i, c) = tampered[middle..]
            .iter()
            .enumerate()
            .find(|(_, c)| c.is_ascii_alphabetic())
            .map(|(i, c)| (middle + i, *c))
            .unwrap();
        tampered[i] = if c == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(ca.sign_csr(&tampered, "cluster:a/b", DAY).is_err());
    }

    #[test]
    fn the_directory_store_round_trips_privately_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::directory(dir.path().join("agent"));
        assert!(store.load().unwrap().is_none());
        let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
        let first = ca.issue("cluster:a/b", &[], Usage::Client, DAY).unwrap();
        store.store(&first).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&first));
        let second = ca.issue("cluster:a/b", &[], Usage::Client, DAY).unwrap();
        store.store(&second).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&second));
        let path = dir.path().join("agent").join(IDENTITY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("agent"))
            .unwrap()
            .collect();
        assert_eq!(entries.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
        let identity = ca.issue("cluster:a/b", &[], Usage::Client, DAY).unwrap();
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
        assert!(!format!("{:?}", BootstrapToken::new("tok-123")).contains("tok-123"));
    }
}
