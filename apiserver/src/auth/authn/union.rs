//! The authenticator the pipeline calls: all configured authenticators in kube's order.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::request::Parts;
use rustls_pki_types::CertificateDer;

use super::{Authenticator, AuthnError, RequestHeaderAuthenticator, Result, X509Authenticator};
use crate::auth::swap::Swap;
use crate::auth::UserInfo;

/// Tries requestheader, x509, then the bearer token authenticators, then anonymous; see the
/// [module docs](super) for how errors combine.
///
/// The order is fixed by the builder's slots rather than by call order, so that wiring code
/// cannot accidentally let a bearer token shadow the front proxy.
///
/// The front-proxy and client certificate slots are [`Swap`]s, so settings read from the
/// management cluster can be replaced while the server runs; a request uses the versions it
/// loaded when it started.
#[derive(Clone)]
pub struct UnionAuthenticator {
    request_header: Swap<RequestHeaderAuthenticator>,
    x509: Swap<Option<X509Authenticator>>,
    tokens: Vec<Arc<dyn Authenticator>>,
    anonymous: bool,
}

impl fmt::Debug for UnionAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionAuthenticator")
            .field("request_header", &self.request_header)
            .field("x509", &self.x509.load().is_some())
            .field("tokens", &self.tokens.len())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// Assembles a [`UnionAuthenticator`]. Anonymous access is on by default, as kube's
/// `--anonymous-auth`.
pub struct UnionAuthenticatorBuilder {
    inner: UnionAuthenticator,
}

impl UnionAuthenticatorBuilder {
    /// Front-proxy authentication. Without it, requests carrying kube's default front-proxy
    /// headers are refused.
    pub fn request_header(mut self, authenticator: RequestHeaderAuthenticator) -> Self {
        self.inner.request_header = Swap::new(authenticator);
        self
    }

    /// Front-proxy authentication whose settings are replaced at run time (read from the
    /// management cluster).
    pub fn dynamic_request_header(
        mut self,
        authenticator: Swap<RequestHeaderAuthenticator>,
    ) -> Self {
        self.inner.request_header = authenticator;
        self
    }

    pub fn x509(mut self, authenticator: X509Authenticator) -> Self {
        self.inner.x509 = Swap::new(Some(authenticator));
        self
    }

    /// Client certificate authentication whose CA is replaced at run time; `None` in the slot
    /// means no client certificate authentication for now.
    pub fn dynamic_x509(mut self, authenticator: Swap<Option<X509Authenticator>>) -> Self {
        self.inner.x509 = authenticator;
        self
    }

    /// A bearer token authenticator (token file, then TokenReview); asked in the order added.
    pub fn token(mut self, authenticator: impl Authenticator + 'static) -> Self {
        self.inner.tokens.push(Arc::new(authenticator));
        self
    }

    pub fn anonymous(mut self, enabled: bool) -> Self {
        self.inner.anonymous = enabled;
        self
    }

    pub fn build(self) -> UnionAuthenticator {
        self.inner
    }
}

impl UnionAuthenticator {
    pub fn builder() -> UnionAuthenticatorBuilder {
        UnionAuthenticatorBuilder {
            inner: UnionAuthenticator {
                request_header: Swap::new(RequestHeaderAuthenticator::disabled()),
                x509: Swap::new(None),
                tokens: Vec::new(),
                anonymous: true,
            },
        }
    }

    /// The current front-proxy authenticator, for the header names the pipeline must strip.
    pub fn request_header(&self) -> Arc<RequestHeaderAuthenticator> {
        self.request_header.load()
    }
}

#[async_trait]
impl Authenticator for UnionAuthenticator {
    /// `Ok(None)` only when nothing authenticated and anonymous access is off: the pipeline
    /// answers 401 for it as for an error.
    async fn authenticate(
        &self,
        head: &Parts,
        peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>> {
        let mut errors = Vec::new();

        let request_header = self.request_header.load();
        let x509 = self.x509.load();
        let authenticators = std::iter::once(&*request_header as &dyn Authenticator)
            .chain(x509.as_ref().as_ref().map(|a| a as &dyn Authenticator))
            .chain(self.tokens.iter().map(|a| a.as_ref()));
        for authenticator in authenticators {
            match authenticator.authenticate(head, peer_certificates).await {
                Ok(Some(mut user)) => {
                    user.add_authenticated_group();
                    return Ok(Some(user));
                }
                Ok(None) => {}
                Err(e) if e.is_unverified_request_header() => return Err(e),
                Err(e) => errors.push(e),
            }
        }

        match errors.len() {
            // A presented credential failed: refuse rather than fall back to anonymous.
            0 if self.anonymous => Ok(Some(UserInfo::anonymous())),
            0 => Ok(None),
            1 => Err(errors.remove(0)),
            _ => Err(AuthnError::Union(errors)),
        }
    }
}

#[cfg(test)]
mod tests;
