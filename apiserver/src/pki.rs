//! Certificates: the hub's CAs (the dev CA that signs serving and user certificates, the
//! tunnel CA that signs agents' certificates) are `edgefleet_tunnel`'s
//! [`CertificateAuthority`] — one implementation, on rcgen and ring — with these helpers.

use std::time::Duration;

pub use edgefleet_tunnel::{CertificateAuthority, LeafSpec, StoredIdentity, Usage};

/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("certificate error: {0}")]
pub struct PkiError(#[from] edgefleet_tunnel::Error);

/// A new CA named `common_name`, valid for [`CA_VALIDITY`].
pub fn generate_ca(common_name: &str) -> Result<CertificateAuthority, PkiError> {
    Ok(CertificateAuthority::generate(common_name, CA_VALIDITY)?)
}

/// A CA from its certificate and key.
pub fn load_ca(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, PkiError> {
    Ok(CertificateAuthority::from_pem(cert_pem, key_pem)?)
}

/// Issues a certificate and key as `spec` says.
pub fn issue(ca: &CertificateAuthority, spec: &LeafSpec) -> Result<StoredIdentity, PkiError> {
    Ok(ca.issue_leaf(spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_certificates_with_a_group() {
        let ca = generate_ca("test-ca").unwrap();
        assert!(
            issue(&ca, &LeafSpec::client("alice", &["ops", "viewers"])).is_err(),
            "two O values would lose one"
        );
        let leaf = issue(&ca, &LeafSpec::client("alice", &["ops"])).unwrap();
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(leaf.certificate_chain_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        let orgs: Vec<&str> = cert
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(
            (cn.as_slice(), orgs.as_slice()),
            (["alice"].as_slice(), ["ops"].as_slice())
        );

        let reloaded = load_ca(ca.certificate_pem(), &ca_key(&ca)).unwrap();
        let server = issue(
            &reloaded,
            &LeafSpec::server("hub", &["localhost"], &["127.0.0.1".parse().unwrap()]),
        );
        assert!(server.is_ok());
    }

    fn ca_key(ca: &CertificateAuthority) -> String {
        ca.key_pem()
    }
}
