//! Impersonation (kube's `WithImpersonation`): an authenticated caller may act as someone else
//! when the authorizer lets it `impersonate` that user, each group, each extra value and the
//! UID ([`impersonate`] holds kube's rules).
//!
//! It sits below the audit layer, so that refusals (400 for a group without a user, 403 for
//! an identity the caller may not take) are recorded, and the event names both users; and
//! above authorization, which then judges the user the request acts as.
//!
//! Every `Impersonate-*` header is removed once consumed: nothing downstream (least of all
//! the proxy to an edge cluster, which sends impersonation headers of its own) sees them.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::{ready_inner, user_in, AuditContext, Next, ServiceFuture};
use crate::auth::impersonation::{impersonate, ImpersonationError};
use crate::auth::Authorizer;
use crate::errors::ApiError;
use crate::http::body::{error_response, Body};

/// Applies the caller's `Impersonate-*` headers.
#[derive(Clone)]
pub struct ImpersonationLayer {
    authorizer: Arc<dyn Authorizer>,
}

impl ImpersonationLayer {
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Self {
        ImpersonationLayer { authorizer }
    }
}

impl<S> Layer<S> for ImpersonationLayer {
    type Service = Impersonate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Impersonate {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// See [`ImpersonationLayer`].
#[derive(Clone)]
pub struct Impersonate<S> {
    inner: S,
    authorizer: Arc<dyn Authorizer>,
}

/// The answer to an impersonation that is refused: kube's 403 Forbidden (naming what was
/// not allowed) or 400 for malformed headers.
pub fn refusal(err: &ImpersonationError) -> ApiError {
    match err.status_code() {
        StatusCode::FORBIDDEN => ApiError::Forbidden {
            message: err.to_string(),
            resource: None,
            name: String::new(),
        },
        _ => ApiError::BadRequest(err.to_string()),
    }
}

impl<S, B> Service<Request<B>> for Impersonate<S>
where
    S: Next<B>,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut inner = ready_inner(&mut self.inner);
        let authorizer = self.authorizer.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let requestor = match user_in(&parts.extensions) {
                Ok(user) => user.clone(),
                Err(err) => return Ok(error_response(&err)),
            };
            let impersonation = match impersonate(&*authorizer, &requestor, &parts.headers).await {
                Ok(impersonation) => impersonation,
                Err(err) => return Ok(error_response(&refusal(&err))),
            };
            for header in &impersonation.headers_to_strip {
                parts.headers.remove(header);
            }
            if let Some(user) = impersonation.user {
                if let Some(audit) = parts.extensions.get::<AuditContext>() {
                    audit.set_impersonated_user(&user);
                }
                parts.extensions.insert(user);
            }
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::UserInfo;
    use crate::http::layers::testing::{authenticated, echo, AllowOnly};

    #[tokio::test]
    async fn an_allowed_impersonation_replaces_the_user_and_its_headers_go() {
        let layer = ImpersonationLayer::new(Arc::new(AllowOnly("root")));
        let seen = echo();
        let req = authenticated(
            Request::get("/apis")
                .header("impersonate-user", "bob")
                .header("impersonate-group", "team-b"),
            "root",
        );
        let response = layer.layer(seen.clone()).oneshot(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let head = seen.last();
        let user = head.extensions.get::<UserInfo>().unwrap();
        assert_eq!(user.name, "bob");
        assert_eq!(user.groups, ["team-b", "system:authenticated"]);
        assert!(head
            .headers
            .keys()
            .all(|h| !h.as_str().starts_with("impersonate-")));
    }

    #[tokio::test]
    async fn a_refused_impersonation_is_answered_and_goes_no_further() {
        let layer = ImpersonationLayer::new(Arc::new(AllowOnly("root")));
        let seen = echo();
        let forbidden = authenticated(
            Request::get("/apis").header("impersonate-user", "root"),
            "mallory",
        );
        let response = layer.layer(seen.clone()).oneshot(forbidden).await.unwrap();
        assert_eq!(response.status(), 403);
        let malformed = authenticated(
            Request::get("/apis").header("impersonate-group", "x"),
            "root",
        );
        let response = layer.layer(seen.clone()).oneshot(malformed).await.unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(seen.count(), 0);
    }
}
