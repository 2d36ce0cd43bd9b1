//! Certificates: a small CA that issues serving and client certificates (for `dev`, for tests,
//! and for minting user kubeconfigs), with rcgen on ring.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a generated leaf certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("certificate error: {0}")]
pub struct PkiError(String);

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError(e.to_string())
    }
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// The subject and names of a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    /// `O=` values; for client certificates these are the user's groups.
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub usage: Usage,
    pub validity: Duration,
}

impl LeafSpec {
    /// A client certificate for `user` in `groups`.
    pub fn client(user: &str, groups: &[&str]) -> Self {
        LeafSpec {
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: Usage::Client,
            validity: LEAF_VALIDITY,
        }
    }

    /// A serving certificate for the given names.
    pub fn server(common_name: &str, dns_names: &[&str], ip_addresses: &[IpAddr]) -> Self {
        LeafSpec {
            common_name: common_name.into(),
            organizations: vec![],
            dns_names: dns_names.iter().map(|d| d.to_string()).collect(),
            ip_addresses: ip_addresses.to_vec(),
            usage: Usage::Server,
            validity: LEAF_VALIDITY,
        }
    }
}

/// A certificate authority whose key we hold.
pub struct CertificateAuthority {
    pub cert: CertifiedKey,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, duration: Duration) {
    let now = OffsetDateTime::now_utc();
    // Tolerate clock skew between the issuer and its verifiers.
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + duration;
}

impl CertificateAuthority {
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        let certified = CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            cert: certified,
        })
    }

    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            issuer,
            cert: CertifiedKey {
                cert_pem: cert_pem.into(),
                key_pem: key_pem.into(),
            },
        })
    }

    /// Issues a leaf certificate with a fresh key.
    ///
    /// rcgen keeps one value per subject attribute type, so a certificate carries at most one
    /// `O` (group); more are refused rather than silently dropped.
    pub fn issue(&self, spec: &LeafSpec) -> Result<CertifiedKey> {
        if spec.organizations.len() > 1 {
            return Err(PkiError(format!(
                "a certificate can carry one group (O) here, not {}: bind the others to the user in RBAC",
                spec.organizations.len()
            )));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into()?));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, spec.validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_certificates_with_groups() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        assert!(
            ca.issue(&LeafSpec::client("alice", &["ops", "viewers"]))
                .is_err(),
            "two O values would lose one"
        );
        let leaf = ca.issue(&LeafSpec::client("alice", &["ops"])).unwrap();

        let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
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
        assert_eq!(cn, ["alice"]);
        assert_eq!(orgs, ["ops"]);

        let reloaded = CertificateAuthority::load(&ca.cert.cert_pem, &ca.cert.key_pem).unwrap();
        assert!(reloaded
            .issue(&LeafSpec::server(
                "hub",
                &["localhost"],
                &["127.0.0.1".parse().unwrap()]
            ))
            .is_ok());
    }
}
