//! Authentication: who is calling (kube's `WithAuthentication`).
//!
//! ```text
//!  request ──► Authenticator (request head + the connection's client certificates)
//!                 │ Ok(user)                        │ no credential that proves anyone, or a bad one
//!                 ▼                                 ▼
//!  inner, with Authenticated(user) and        `unauthorized` (kube's failed handler): the
//!  UserInfo(user) in the extensions           audit layer around a 401, so the refusal is
//!                                             recorded, with an empty user, as kube records it
//! ```
//!
//! Either way the `Authorization` header is removed: no later stage, least of all the proxy
//! to an edge cluster, sees the caller's credential.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt as _};

use super::{ready_inner, Authenticated, Next, ServiceFuture};
use crate::auth::authn::{self, Authenticator};
use crate::auth::UserInfo;
use crate::errors::ApiError;
use crate::http::body::{error_response, Body};
use crate::http::server::ConnectionInfo;

/// Authenticates requests; sends those that fail to `unauthorized`.
#[derive(Clone)]
pub struct AuthenticationLayer<F> {
    authenticator: Arc<dyn Authenticator>,
    unauthorized: F,
}

impl<F> AuthenticationLayer<F> {
    pub fn new(authenticator: Arc<dyn Authenticator>, unauthorized: F) -> Self {
        AuthenticationLayer {
            authenticator,
            unauthorized,
        }
    }
}

impl<S, F: Clone> Layer<S> for AuthenticationLayer<F> {
    type Service = Authenticate<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: self.authenticator.clone(),
            unauthorized: self.unauthorized.clone(),
        }
    }
}

/// See [`AuthenticationLayer`].
#[derive(Clone)]
pub struct Authenticate<S, F> {
    inner: S,
    authenticator: Arc<dyn Authenticator>,
    unauthorized: F,
}

/// The outcome of authentication: a user, or 401. A request with no credential at all is
/// `Ok(None)` only when anonymous access is off (the union falls back to `system:anonymous`).
pub fn outcome(result: authn::Result<Option<UserInfo>>) -> Result<UserInfo, ApiError> {
    match result {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(ApiError::Unauthorized),
        Err(err) => {
            // The reason names headers and certificate subjects, never credentials.
            tracing::debug!(reason = %err.message(), "authentication failed");
            Err(ApiError::Unauthorized)
        }
    }
}

impl<S, F, B> Service<Request<B>> for Authenticate<S, F>
where
    S: Next<B>,
    F: Next<B>,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = ready_inner(&mut self.inner);
        let unauthorized = self.unauthorized.clone();
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let peer = parts
                .extensions
                .get::<Arc<ConnectionInfo>>()
                .cloned()
                .unwrap_or_default();
            let result = authenticator
                .authenticate(&parts, &peer.peer_certificates)
                .await;
            parts.headers.remove(AUTHORIZATION);
            match outcome(result) {
                Ok(user) => {
                    parts.extensions.insert(Authenticated(user.clone()));
                    parts.extensions.insert(user);
                    let mut inner = inner;
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(_) => unauthorized.oneshot(Request::from_parts(parts, body)).await,
            }
        })
    }
}

/// Answers 401: what a request that did not authenticate gets, once audited.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unauthorized;

impl<B> Service<Request<B>> for Unauthorized {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        std::future::ready(Ok(error_response(&ApiError::Unauthorized)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::layers::testing::{echo, FixedAuthenticator};

    fn request(token: Option<&str>) -> Request<Body> {
        let mut req = Request::get("/apis");
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(crate::http::body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_known_caller_goes_on_without_its_credential() {
        let layer =
            AuthenticationLayer::new(Arc::new(FixedAuthenticator::new("alice")), Unauthorized);
        let seen = echo();
        let response = layer
            .layer(seen.clone())
            .oneshot(request(Some("alice")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let head = seen.last();
        assert!(head.headers.get(AUTHORIZATION).is_none());
        assert_eq!(
            head.extensions.get::<Authenticated>().unwrap().0.name,
            "alice"
        );
        assert_eq!(head.extensions.get::<UserInfo>().unwrap().name, "alice");
    }

    #[tokio::test]
    async fn a_caller_who_proves_nothing_is_answered_by_the_unauthorized_service() {
        let layer =
            AuthenticationLayer::new(Arc::new(FixedAuthenticator::new("alice")), Unauthorized);
        let seen = echo();
        for token in [Some("mallory"), None] {
            let response = layer
                .layer(seen.clone())
                .oneshot(request(token))
                .await
                .unwrap();
            assert_eq!(response.status(), 401);
            let status = response
                .extensions()
                .get::<crate::http::body::ErrorStatus>()
                .unwrap();
            assert_eq!(status.0.reason.as_deref(), Some("Unauthorized"));
        }
        assert_eq!(
            seen.count(),
            0,
            "nothing unauthenticated reaches the inner service"
        );
    }

    #[test]
    fn errors_and_no_opinion_are_both_401() {
        assert!(matches!(outcome(Ok(None)), Err(ApiError::Unauthorized)));
        assert!(matches!(
            outcome(Err(authn::AuthnError::InvalidBearerToken)),
            Err(ApiError::Unauthorized)
        ));
        assert_eq!(outcome(Ok(Some(UserInfo::new("bob")))).unwrap().name, "bob");
    }
}
