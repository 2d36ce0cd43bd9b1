//! Test PKI: CAs and client certificates generated with rcgen, plus request heads and the
//! management cluster's authentication ConfigMap.

use std::collections::BTreeMap;

use http::request::Parts;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use super::cluster_config as cc;

/// A certificate authority that issues client certificates.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: CertificateDer<'static>,
    pub pem: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("generate CA key");
        let params = ca_params(cn);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().expect("generate intermediate key");
        let params = ca_params(cn);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign intermediate");
        Ca {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with this common name, valid now.
    pub fn client(&self, cn: &str) -> ClientCert<'_> {
        ClientCert {
            ca: self,
            cn: cn.to_string(),
            orgs: Vec::new(),
            expired: false,
            server_only: false,
        }
    }
}

/// Builds one client certificate.
pub(crate) struct ClientCert<'a> {
    ca: &'a Ca,
    cn: String,
    orgs: Vec<String>,
    expired: bool,
    server_only: bool,
}

impl ClientCert<'_> {
    /// Adds an O value (at most two: rcgen keeps one value per attribute type, so the second is
    /// written under the same OID as a custom attribute).
    pub fn org(mut self, org: &str) -> Self {
        assert!(self.orgs.len() < 2, "the test PKI supports two O values");
        self.orgs.push(org.to_string());
        self
    }

    /// Valid in 2000 only.
    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }

    /// Only for TLS servers (serverAuth EKU), so not usable as a client certificate.
    pub fn server_only(mut self) -> Self {
        self.server_only = true;
        self
    }

    /// The end-entity certificate alone.
    pub fn issue(self) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if !self.cn.is_empty() {
            params
                .distinguished_name
                .push(DnType::CommonName, self.cn.as_str());
        }
        let mut orgs = self.orgs.iter();
        if let Some(org) = orgs.next() {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        if let Some(org) = orgs.next() {
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), org.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if self.server_only {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        if self.expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("generate client key");
        let cert = params
            .signed_by(&key, &self.ca.issuer)
            .expect("sign client cert");
        cert.der().clone()
    }
}

/// A GET request head with these headers.
pub(crate) fn head(headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().uri("/apis/edgefleet.io/v1alpha1/clusters");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid request").into_parts().0
}

/// The ConfigMap as kube-apiserver writes it, with the given CAs and front-proxy header names.
pub(crate) fn configmap(
    proxy_ca: Option<&Ca>,
    client_ca: Option<&Ca>,
    username_header: &str,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    if let Some(ca) = client_ca {
        data.insert(cc::CLIENT_CA_KEY.into(), ca.pem.clone());
    }
    if let Some(ca) = proxy_ca {
        data.insert(cc::REQUESTHEADER_CLIENT_CA_KEY.into(), ca.pem.clone());
        data.insert(
            cc::REQUESTHEADER_ALLOWED_NAMES_KEY.into(),
            r#"["front-proxy-client"]"#.into(),
        );
        data.insert(
            cc::REQUESTHEADER_USERNAME_HEADERS_KEY.into(),
            format!(r#"["{username_header}"]"#),
        );
        data.insert(
            cc::REQUESTHEADER_UID_HEADERS_KEY.into(),
            r#"["X-Remote-Uid"]"#.into(),
        );
        data.insert(
            cc::REQUESTHEADER_GROUP_HEADERS_KEY.into(),
            r#"["X-Remote-Group"]"#.into(),
        );
        data.insert(
            cc::REQUESTHEADER_EXTRA_HEADERS_PREFIX_KEY.into(),
            r#"["X-Remote-Extra-"]"#.into(),
        );
    }
    data
}
