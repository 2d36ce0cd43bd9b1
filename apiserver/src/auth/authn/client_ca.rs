//! The CAs the TLS layer asks client certificates from, when some of them change at run time.
//!
//! The hub trusts client certificates from the `--client-ca-file` and
//! `--requestheader-client-ca-file` bundles and, behind kube-apiserver, from the `client-ca-file`
//! and `requestheader-client-ca-file` of `kube-system/extension-apiserver-authentication`, which
//! the management cluster rotates. [`ClientCertificateAuthorities`] is a rustls
//! [`ClientCertVerifier`] over the union of the fixed bundles and the current cluster bundles:
//! each handshake reads the version current at that moment.
//!
//! As in TLS today, a certificate is only checked to chain to one of the CAs; which CA vouched
//! for it (a user's certificate or the front proxy's) is decided again by the authenticators,
//! each against its own bundle. A client without a certificate is let through to the bearer token
//! and anonymous authenticators.
//!
//! One difference to a static rustls verifier: the CertificateRequest names no CAs (an empty
//! `certificate_authorities` list), because rustls borrows the hint list for as long as the
//! verifier lives and the list changes. An empty list tells clients to send whatever certificate
//! they have, which Go (kubectl, kube-apiserver's front-proxy client) and rustls clients do.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::x509::CaBundleError;
use crate::auth::swap::Swap;

/// One version of the trusted set.
struct Bundle {
    certificates: Vec<CertificateDer<'static>>,
    /// `None` while the set is empty: no certificate is asked for.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// Verifies client certificates against the fixed CAs plus the current cluster CAs; see the
/// [module docs](self).
pub struct ClientCertificateAuthorities {
    fixed: Vec<CertificateDer<'static>>,
    current: Swap<Bundle>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ClientCertificateAuthorities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificateAuthorities")
            .field("fixed", &self.fixed.len())
            .field("current", &self.current.load().certificates.len())
            .finish()
    }
}

impl ClientCertificateAuthorities {
    /// Trusts `fixed` (the CA files) and nothing else until [`Self::set_dynamic`].
    pub fn new(fixed: Vec<CertificateDer<'static>>) -> Result<Self, CaBundleError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bundle = build(fixed.clone(), &provider)?;
        Ok(ClientCertificateAuthorities {
            fixed,
            current: Swap::new(bundle),
            provider,
        })
    }

    /// Replaces the CAs that came from the cluster; the fixed ones stay. On error the previous
    /// set stays in force.
    pub fn set_dynamic(&self, dynamic: &[CertificateDer<'static>]) -> Result<(), CaBundleError> {
        let mut certificates = self.fixed.clone();
        for cert in dynamic {
            if !certificates.contains(cert) {
                certificates.push(cert.clone());
            }
        }
        self.current.store(build(certificates, &self.provider)?);
        Ok(())
    }

    /// The CA certificates trusted right now (fixed first), e.g. for a server configuration
    /// that can only take a fixed list.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().certificates.clone()
    }
}

fn build(
    certificates: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Bundle, CaBundleError> {
    if certificates.is_empty() {
        return Ok(Bundle {
            certificates,
            verifier: None,
        });
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|source| CaBundleError::Certificate { index, source })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(CaBundleError::Verifier)?;
    Ok(Bundle {
        certificates,
        verifier: Some(verifier),
    })
}

impl ClientCertVerifier for ClientCertificateAuthorities {
    fn offer_client_auth(&self) -> bool {
        self.current.load().verifier.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &self.current.load().verifier {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            // The set emptied between offering client auth and the certificate arriving.
            None => Err(rustls::Error::General(
                "no client certificate authority is configured".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
