//! Client certificates (`--client-ca-file`): user = subject CN, groups = subject O values.
//!
//! The TLS layer may accept certificates from several CAs (client CA, front-proxy CA), so every
//! authenticator re-verifies the chain against its own bundle with rustls' webpki verifier:
//! signature chain to a trust anchor, validity period at the current time, and the clientAuth
//! extended key usage when the certificate restricts its usages.
//!
//! A client sends many requests over one connection, each with the same chain, and the
//! signature checks of a full verification cost more than the rest of a small request (about a
//! third of the hub's CPU for proxied GETs, measured by `hack/bench/tunnel.sh`). So a verifier
//! remembers the chains it verified — by SHA-256 of the chain — for [`VERIFIED_TTL_SECS`], and
//! within the validity window of every certificate in the chain; the clock is still checked on
//! every request. Failures are never remembered. A reloaded CA bundle is a new verifier with an
//! empty memory.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use http::request::Parts;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::error::X509Error;

use super::{Authenticator, AuthnError, Result};
use crate::auth::{UserInfo, CREDENTIAL_ID_KEY};

/// A CA bundle could not be turned into a verifier.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("reading CA bundle {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("the CA bundle holds no certificate")]
    Empty,
    #[error("CA certificate {index} is not usable as a trust anchor")]
    Certificate {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("building the certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// Parses every `CERTIFICATE` block of a PEM bundle.
pub fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CaBundleError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CaBundleError::Pem)?;
    if certs.is_empty() {
        return Err(CaBundleError::Empty);
    }
    Ok(certs)
}

/// Reads and parses a PEM CA bundle file.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaBundleError> {
    let pem = std::fs::read(path).map_err(|source| CaBundleError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_pem_certificates(&pem)
}

/// How long a verified chain is trusted without verifying it again.
pub const VERIFIED_TTL_SECS: u64 = 60;
/// Chains remembered at most; the memory starts over when full.
const MAX_VERIFIED: usize = 10_000;

/// A chain that verified at `verified_at` (Unix seconds), good while `now` is inside the
/// validity of all its certificates.
#[derive(Clone, Copy, Debug)]
struct Verified {
    verified_at: u64,
    not_before: u64,
    not_after: u64,
}

impl Verified {
    fn holds_at(&self, now: u64) -> bool {
        now >= self.verified_at
            && now - self.verified_at < VERIFIED_TTL_SECS
            && now >= self.not_before
            && now <= self.not_after
    }
}

/// Verifies client certificate chains against one CA bundle.
#[derive(Clone)]
pub struct CertificateVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
    verified: Arc<Mutex<HashMap<[u8; 32], Verified>>>,
}

impl fmt::Debug for CertificateVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateVerifier")
            .finish_non_exhaustive()
    }
}

impl CertificateVerifier {
    pub fn new(ca: &[CertificateDer<'static>]) -> Result<Self, CaBundleError> {
        if ca.is_empty() {
            return Err(CaBundleError::Empty);
        }
        let mut roots = RootCertStore::empty();
        for (index, cert) in ca.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|source| CaBundleError::Certificate { index, source })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(CaBundleError::Verifier)?;
        Ok(CertificateVerifier {
            verifier,
            verified: Arc::default(),
        })
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, CaBundleError> {
        Self::new(&parse_pem_certificates(pem)?)
    }

    pub fn from_pem_file(path: &Path) -> Result<Self, CaBundleError> {
        Self::new(&read_pem_certificates(path)?)
    }

    /// Verifies `chain` (end entity first, then intermediates) for client authentication at
    /// `now`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let key = chain_digest(chain);
        let at = now.as_secs();
        let remembered = self.remembered().get(&key).copied();
        if remembered.is_some_and(|v| v.holds_at(at)) {
            return Ok(());
        }
        self.verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some((not_before, not_after)) = validity_window(chain) {
            let mut verified = self.remembered();
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(
                key,
                Verified {
                    verified_at: at,
                    not_before,
                    not_after,
                },
            );
        }
        Ok(())
    }

    fn remembered(&self) -> MutexGuard<'_, HashMap<[u8; 32], Verified>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many chains are remembered as verified (for tests).
    #[cfg(test)]
    pub(crate) fn remembered_chains(&self) -> usize {
        self.remembered().len()
    }
}

/// SHA-256 over the chain, each certificate prefixed with its length so that no two chains
/// collide by regrouping bytes.
fn chain_digest(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for cert in chain {
        ctx.update(&(cert.len() as u64).to_be_bytes());
        ctx.update(cert);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The latest notBefore and earliest notAfter of the chain's certificates (Unix seconds);
/// `None` if one does not parse (then nothing is remembered).
fn validity_window(chain: &[CertificateDer<'_>]) -> Option<(u64, u64)> {
    let mut window = (0u64, u64::MAX);
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        let from = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let until = u64::try_from(validity.not_after.timestamp()).ok()?;
        window = (window.0.max(from), window.1.min(until));
    }
    Some(window)
}

/// The parts of a certificate subject that become a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    /// The last CN, as Go's `pkix.Name` keeps it.
    pub common_name: String,
    /// Every O value, in order.
    pub organizations: Vec<String>,
    /// The RFC 4514-ish rendering, for error messages.
    pub display: String,
}

pub(crate) fn parse_subject(der: &CertificateDer<'_>) -> Result<Subject, X509Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    })?;
    let subject = cert.subject();
    let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attr.as_str()
            .map(str::to_owned)
            .map_err(|_| X509Error::InvalidX509Name)
    };
    Ok(Subject {
        common_name: subject
            .iter_common_name()
            .last()
            .map(text)
            .transpose()?
            .unwrap_or_default(),
        organizations: subject
            .iter_organization()
            .map(text)
            .collect::<Result<_, _>>()?,
        display: subject.to_string(),
    })
}

/// The subject for an error message; certificates that do not even parse are named as such.
pub(crate) fn describe(der: Option<&CertificateDer<'_>>) -> String {
    match der.map(parse_subject) {
        Some(Ok(subject)) => format!("{:?}", subject.display),
        Some(Err(_)) => "<unparsable>".to_string(),
        None => "<none>".to_string(),
    }
}

/// `X509SHA256=<hex>` over the DER of the end-entity certificate, kube's credential id.
fn credential_id(der: &CertificateDer<'_>) -> String {
    use std::fmt::Write;

    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut id = String::with_capacity(11 + 64);
    id.push_str("X509SHA256=");
    for byte in digest.as_ref() {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Authenticates requests by their client certificate, as kube's `x509.Authenticator` with
/// `CommonNameUserConversion`.
#[derive(Clone, Debug)]
pub struct X509Authenticator {
    verifier: CertificateVerifier,
}

impl X509Authenticator {
    pub fn new(verifier: CertificateVerifier) -> Self {
        X509Authenticator { verifier }
    }

    pub(crate) fn authenticate_chain(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<Option<UserInfo>> {
        let Some(end_entity) = chain.first() else {
            return Ok(None);
        };
        self.verifier.verify(chain, now).map_err(|source| {
            AuthnError::InvalidClientCertificate {
                subject: describe(Some(end_entity)),
                source,
            }
        })?;
        let subject = parse_subject(end_entity).map_err(AuthnError::UnparsableCertificate)?;
        // kube has no opinion on a verified certificate without a CN: it names no user.
        if subject.common_name.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            UserInfo::new(subject.common_name)
                .with_groups(subject.organizations)
                .with_extra(CREDENTIAL_ID_KEY, [credential_id(end_entity)]),
        ))
    }
}

#[async_trait]
impl Authenticator for X509Authenticator {
    async fn authenticate(
        &self,
        _head: &Parts,
        peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>> {
        self.authenticate_chain(peer_certificates, UnixTime::now())
    }
}

#[cfg(test)]
mod tests;
