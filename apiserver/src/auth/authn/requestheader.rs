//! Front-proxy authentication ("requestheader"), as kube-apiserver talks to aggregated servers.
//!
//! kube-apiserver authenticates the user, then proxies the request over mTLS with its front-proxy
//! client certificate and the identity in headers:
//!
//! ```text
//! X-Remote-User: alice                 (username headers; first non-empty wins)
//! X-Remote-Uid: 42                     (uid headers; first non-empty wins)
//! X-Remote-Group: retail-admins        (group headers; every non-empty value, may repeat)
//! X-Remote-Group: system:authenticated
//! X-Remote-Extra-Scopes: view          (extra: key = rest of the header name, lowercased and
//! X-Remote-Extra-Acme.com%2fteam: sre   percent-decoded, so this one is "acme.com/team")
//! ```
//!
//! The headers are believed only when the connection's client certificate verifies against the
//! requestheader CA and, if allowed names are configured, its CN is one of them.
//!
//! Our rule is stricter than kube's: kube ignores the headers when the certificate is not a
//! front-proxy certificate and goes on to authenticate the connection's own certificate or the
//! anonymous user. We refuse such a request outright (an error that stops the union), because
//! identity headers that the connection cannot vouch for are either an attack or a broken proxy,
//! and acting as anyone else than the claimed user would be wrong either way. The same holds for
//! a front proxy that sends groups or extras but no user.

use std::fmt;

use async_trait::async_trait;
use edgefleet_apimachinery::impersonation::decode_extra_key;
use http::header::HeaderName;
use http::request::Parts;
use http::HeaderMap;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::x509::{describe, parse_subject, CaBundleError, CertificateVerifier};
use super::{header_str, Authenticator, AuthnError, Result};
use crate::auth::UserInfo;

/// kube's defaults for aggregated API servers.
pub const DEFAULT_USERNAME_HEADER: &str = "X-Remote-User";
pub const DEFAULT_UID_HEADER: &str = "X-Remote-Uid";
pub const DEFAULT_GROUP_HEADER: &str = "X-Remote-Group";
pub const DEFAULT_EXTRA_HEADERS_PREFIX: &str = "X-Remote-Extra-";

/// Front-proxy settings, as kube's `--requestheader-*` flags or the `requestheader-*` keys of the
/// `kube-system/extension-apiserver-authentication` ConfigMap give them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// The CA bundle that signs front-proxy client certificates.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Common names a front-proxy certificate may have; empty allows any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_headers_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// The CA with kube's default header names and no name restriction.
    pub fn new(client_ca: Vec<CertificateDer<'static>>) -> Self {
        RequestHeaderConfig {
            client_ca,
            allowed_names: Vec::new(),
            username_headers: vec![DEFAULT_USERNAME_HEADER.to_string()],
            uid_headers: vec![DEFAULT_UID_HEADER.to_string()],
            group_headers: vec![DEFAULT_GROUP_HEADER.to_string()],
            extra_headers_prefixes: vec![DEFAULT_EXTRA_HEADERS_PREFIX.to_string()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestHeaderConfigError {
    #[error("requestheader client CA")]
    ClientCa(#[from] CaBundleError),
    #[error("{0:?} is not a valid header name")]
    InvalidHeaderName(String),
    #[error("no requestheader username header is configured")]
    NoUsernameHeaders,
}

/// Authenticates requests forwarded by a front proxy; see the module docs.
#[derive(Clone)]
pub struct RequestHeaderAuthenticator {
    /// `None`: front-proxy authentication is off, and requests carrying the default headers are
    /// refused.
    verifier: Option<CertificateVerifier>,
    allowed_names: Vec<String>,
    username_headers: Vec<HeaderName>,
    uid_headers: Vec<HeaderName>,
    group_headers: Vec<HeaderName>,
    /// Lowercased, as `HeaderMap` names are.
    extra_prefixes: Vec<String>,
}

impl fmt::Debug for RequestHeaderAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHeaderAuthenticator")
            .field("configured", &self.verifier.is_some())
            .field("allowed_names", &self.allowed_names)
            .field("username_headers", &self.username_headers)
            .field("uid_headers", &self.uid_headers)
            .field("group_headers", &self.group_headers)
            .field("extra_prefixes", &self.extra_prefixes)
            .finish()
    }
}

fn header_names(names: &[String]) -> Result<Vec<HeaderName>, RequestHeaderConfigError> {
    names
        .iter()
        .map(|name| {
            HeaderName::try_from(name.as_str())
                .map_err(|_| RequestHeaderConfigError::InvalidHeaderName(name.clone()))
        })
        .collect()
}

impl RequestHeaderAuthenticator {
    pub fn new(config: &RequestHeaderConfig) -> Result<Self, RequestHeaderConfigError> {
        if config.username_headers.is_empty() {
            return Err(RequestHeaderConfigError::NoUsernameHeaders);
        }
        for prefix in &config.extra_headers_prefixes {
            HeaderName::try_from(prefix.as_str())
                .map_err(|_| RequestHeaderConfigError::InvalidHeaderName(prefix.clone()))?;
        }
        Ok(RequestHeaderAuthenticator {
            verifier: Some(CertificateVerifier::new(&config.client_ca)?),
            allowed_names: config.allowed_names.clone(),
            username_headers: header_names(&config.username_headers)?,
            uid_headers: header_names(&config.uid_headers)?,
            group_headers: header_names(&config.group_headers)?,
            extra_prefixes: config
                .extra_headers_prefixes
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Front-proxy authentication switched off: any request carrying kube's default front-proxy
    /// headers is refused, since nothing here can vouch for them.
    pub fn disabled() -> Self {
        RequestHeaderAuthenticator {
            verifier: None,
            allowed_names: Vec::new(),
            username_headers: vec![HeaderName::from_static("x-remote-user")],
            uid_headers: vec![HeaderName::from_static("x-remote-uid")],
            group_headers: vec![HeaderName::from_static("x-remote-group")],
            extra_prefixes: vec!["x-remote-extra-".to_string()],
        }
    }

    fn is_extra(&self, name: &HeaderName) -> bool {
        self.extra_prefixes
            .iter()
            .any(|prefix| name.as_str().starts_with(prefix.as_str()))
    }

    /// The front-proxy headers present on a request: kube removes them once they have been used,
    /// and nothing past authentication should see them.
    pub fn authentication_headers(&self, headers: &HeaderMap) -> Vec<HeaderName> {
        let fixed = self
            .username_headers
            .iter()
            .chain(&self.uid_headers)
            .chain(&self.group_headers)
            .filter(|name| headers.contains_key(*name));
        let extra = headers.keys().filter(|name| self.is_extra(name));
        let mut names: Vec<HeaderName> = Vec::new();
        for name in fixed.chain(extra) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Checks that the connection is a trusted front proxy; `header` is the identity header that
    /// made us look.
    fn verify_proxy(
        &self,
        header: &HeaderName,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<()> {
        let Some(verifier) = &self.verifier else {
            return Err(AuthnError::RequestHeaderNotConfigured {
                header: header.clone(),
            });
        };
        let Some(end_entity) = chain.first() else {
            return Err(AuthnError::RequestHeaderWithoutCertificate {
                header: header.clone(),
            });
        };
        verifier.verify(chain, now).map_err(|source| {
            AuthnError::RequestHeaderUntrustedCertificate {
                header: header.clone(),
                subject: describe(Some(end_entity)),
                source,
            }
        })?;
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let common_name = parse_subject(end_entity)
            .map_err(AuthnError::UnparsableCertificate)?
            .common_name;
        if self.allowed_names.contains(&common_name) {
            Ok(())
        } else {
            Err(AuthnError::RequestHeaderNameNotAllowed {
                header: header.clone(),
                common_name,
            })
        }
    }

    pub(crate) fn authenticate_at(
        &self,
        headers: &HeaderMap,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<Option<UserInfo>> {
        let Some(trigger) = self.authentication_headers(headers).into_iter().next() else {
            return Ok(None);
        };
        self.verify_proxy(&trigger, chain, now)?;

        let name = first_value(headers, &self.username_headers)?;
        if name.is_empty() {
            return Err(AuthnError::RequestHeaderMissingUser {
                headers: self
                    .username_headers
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut user = UserInfo::new(name).with_uid(first_value(headers, &self.uid_headers)?);
        for header in &self.group_headers {
            for value in headers.get_all(header) {
                let group = header_str(header, value)?;
                if !group.is_empty() {
                    user.groups.push(group.to_string());
                }
            }
        }
        // Prefix by prefix, so that values keep the order of the configured prefixes.
        for prefix in &self.extra_prefixes {
            for (header, value) in headers {
                if let Some(key) = header.as_str().strip_prefix(prefix.as_str()) {
                    let value = header_str(header, value)?;
                    user.extra
                        .entry(decode_extra_key(key))
                        .or_default()
                        .push(value.to_string());
                }
            }
        }
        Ok(Some(user))
    }
}

#[async_trait]
impl Authenticator for RequestHeaderAuthenticator {
    async fn authenticate(
        &self,
        head: &Parts,
        peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>> {
        self.authenticate_at(&head.headers, peer_certificates, UnixTime::now())
    }
}

/// The first non-empty value among `names`, looking only at each header's first value (Go's
/// `Header.Get`).
fn first_value<'a>(headers: &'a HeaderMap, names: &[HeaderName]) -> Result<&'a str> {
    for name in names {
        if let Some(value) = headers.get(name) {
            let value = header_str(name, value)?;
            if !value.is_empty() {
                return Ok(value);
            }
        }
    }
    Ok("")
}

#[cfg(test)]
mod tests;
