//! Authentication: who is calling.
//!
//! Each authenticator looks at the request head and the TLS peer certificate chain of the
//! connection and answers one of three things:
//!
//! - `Ok(Some(user))`: the request proves this identity;
//! - `Ok(None)`: no credential of this kind is present (no opinion);
//! - `Err(_)`: a credential of this kind is present but invalid; the pipeline answers 401.
//!
//! [`UnionAuthenticator`] asks them in kube's order and falls back to `system:anonymous`:
//!
//! ```text
//!  requestheader ──► x509 client cert ──► bearer token(s) ──► anonymous (if enabled)
//!  (front proxy)     (--client-ca-file)   (--token-auth-file,   system:anonymous
//!                                          then TokenReview)
//!         first Ok(Some) wins; then `system:authenticated` is added to the user
//! ```
//!
//! As in kube, an error from one authenticator does not stop the others (a valid bearer token
//! still authenticates a request whose client certificate is expired), but a request that fails
//! every authenticator with an error is refused rather than treated as anonymous. One deliberate
//! exception: front-proxy identity headers without a valid front-proxy client certificate stop the
//! chain at once (see [`requestheader`]), so a forged `X-Remote-User` can never fall through to
//! the connection's own certificate or to anonymous.

use async_trait::async_trait;
use http::header::HeaderName;
use http::request::Parts;
use rustls_pki_types::CertificateDer;

use super::UserInfo;

pub mod client_ca;
pub mod cluster_config;
pub mod requestheader;
pub mod token;
pub mod tokenreview;
mod union;
pub mod x509;

#[cfg(test)]
pub(crate) mod testing;

pub use client_ca::ClientCertificateAuthorities;
pub use requestheader::{RequestHeaderAuthenticator, RequestHeaderConfig};
pub use token::{TokenFile, TokenFileError};
pub use tokenreview::TokenReviewAuthenticator;
pub use union::{UnionAuthenticator, UnionAuthenticatorBuilder};
pub use x509::{CaBundleError, CertificateVerifier, X509Authenticator};

pub type Result<T, E = AuthnError> = std::result::Result<T, E>;

/// Finds out who sent a request.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// `head` is the request without its body; `peer_certificates` is the client certificate chain
    /// the TLS connection presented (end entity first), empty when it presented none.
    async fn authenticate(
        &self,
        head: &Parts,
        peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>>;
}

/// A credential was presented but does not prove an identity. Messages name headers and
/// certificate subjects, never header values or tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("verifying client certificate {subject} failed")]
    InvalidClientCertificate {
        subject: String,
        #[source]
        source: rustls::Error,
    },

    #[error("client certificate could not be parsed")]
    UnparsableCertificate(#[source] x509_parser::error::X509Error),

    #[error("invalid bearer token")]
    InvalidBearerToken,

    /// The management cluster's TokenReview did not authenticate the token.
    #[error("invalid bearer token: {reason}")]
    TokenReviewRejected { reason: String },

    /// The management cluster could not be asked; not cached, so the next request asks again.
    #[error("the bearer token could not be reviewed")]
    TokenReviewFailed {
        #[source]
        source: std::sync::Arc<crate::auth::delegation::RequestError>,
    },

    #[error("header {header} is not valid UTF-8")]
    InvalidHeaderValue { header: HeaderName },

    #[error(
        "request carries the front-proxy header {header} but this server does not accept \
         front-proxy authentication (no --requestheader-client-ca-file)"
    )]
    RequestHeaderNotConfigured { header: HeaderName },

    #[error(
        "request carries the front-proxy header {header} but the connection presented no \
         front-proxy client certificate"
    )]
    RequestHeaderWithoutCertificate { header: HeaderName },

    #[error(
        "request carries the front-proxy header {header} but client certificate {subject} does \
         not verify against the requestheader CA"
    )]
    RequestHeaderUntrustedCertificate {
        header: HeaderName,
        subject: String,
        #[source]
        source: rustls::Error,
    },

    #[error(
        "request carries the front-proxy header {header} but front-proxy client certificate \
         common name {common_name:?} is not in --requestheader-allowed-names"
    )]
    RequestHeaderNameNotAllowed {
        header: HeaderName,
        common_name: String,
    },

    #[error("front-proxy request names no user (none of the username headers {headers} is set)")]
    RequestHeaderMissingUser { headers: String },

    /// Every authenticator that had an opinion failed (kube's aggregate error).
    #[error("{}", aggregate_message(.0))]
    Union(Vec<AuthnError>),
}

impl AuthnError {
    /// The error and its causes, for the message of the 401 `Status`.
    pub fn message(&self) -> String {
        edgefleet_tunnel::error_chain(self)
    }

    /// Front-proxy identity headers that the connection cannot vouch for: a spoofing attempt or a
    /// misconfigured proxy. [`UnionAuthenticator`] stops at these instead of trying the rest.
    pub fn is_unverified_request_header(&self) -> bool {
        matches!(
            self,
            AuthnError::RequestHeaderNotConfigured { .. }
                | AuthnError::RequestHeaderWithoutCertificate { .. }
                | AuthnError::RequestHeaderUntrustedCertificate { .. }
                | AuthnError::RequestHeaderNameNotAllowed { .. }
                | AuthnError::RequestHeaderMissingUser { .. }
        )
    }
}

/// kube's `utilerrors.NewAggregate` text: one error as is, several as `[a, b]`.
fn aggregate_message(errors: &[AuthnError]) -> String {
    match errors {
        [one] => one.message(),
        many => format!(
            "[{}]",
            many.iter()
                .map(AuthnError::message)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The value of a header as UTF-8 text (Go keeps header bytes as strings; non-UTF-8 identity data
/// is refused rather than mangled).
fn header_str<'a>(name: &HeaderName, value: &'a http::HeaderValue) -> Result<&'a str> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| AuthnError::InvalidHeaderValue {
        header: name.clone(),
    })
}
