//! TLS configuration for both ends: TLS 1.3 only, the `ring` provider, ALPN `h2`.
//!
//! The hub asks for a client certificate but does not require one: an agent that has not
//! enrolled yet connects without one and presents a bootstrap token in its Hello instead. A
//! certificate that *is* presented must chain to the client CA, or the TLS handshake fails
//! before the hub reads a byte; whether a valid certificate is still welcome (revocation) is the
//! hub's [`crate::Admission`] decision.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The ALPN protocol the tunnel negotiates.
pub const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM bundle (leaf first, as written).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Pem("no certificate found".into()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM document.
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Pem(format!("private key: {e}")))
}

/// A root store holding every certificate of a PEM bundle.
pub fn root_store_from_pem(pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates_from_pem(pem)? {
        roots.add(cert).map_err(Error::TlsConfig)?;
    }
    Ok(roots)
}

/// The hub's tunnel-port TLS config. With `client_ca_pem`, client certificates are verified
/// against it (and optional); without, none are asked for.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::TlsConfig)?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store_from_pem(ca)?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Pem(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            certificates_from_pem(cert_chain_pem)?,
            private_key_from_pem(key_pem)?,
        )
        .map_err(Error::TlsConfig)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The agent's TLS config: trusts `hub_roots`, presents `client_identity` (certificate chain
/// PEM, key PEM) when given.
pub fn client_config(
    hub_roots: Arc<RootCertStore>,
    client_identity: Option<(&str, &str)>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::TlsConfig)?
        .with_root_certificates(hub_roots);
    let mut config = match client_identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(certificates_from_pem(chain)?, private_key_from_pem(key)?)
            .map_err(Error::TlsConfig)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
