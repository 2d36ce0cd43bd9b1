//! Authorization (kube's `WithAuthorization`): the authorizer judges the user the request acts
//! as (after impersonation) doing the request's verb on its resource or path.
//!
//! It sits below the audit layer, so that a denial is recorded — with kube's
//! `authorization.k8s.io/decision` and `/reason` annotations — and the 403 names the user,
//! verb and resource in kube's words. Allowed requests carry `decision: allow`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{ready_inner, request_info_of, user_in, AuditContext, Next, ServiceFuture};
use crate::auth::{Attributes, Authorizer, Decision, Forbidden, UserInfo};
use crate::errors::{ApiError, GroupResource};
use crate::http::body::{error_response, Body};
use edgefleet_apimachinery::request_info::RequestInfo;

/// Refuses what the authorizer does not allow.
#[derive(Clone)]
pub struct AuthorizationLayer {
    authorizer: Arc<dyn Authorizer>,
}

impl AuthorizationLayer {
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Self {
        AuthorizationLayer { authorizer }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// See [`AuthorizationLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    authorizer: Arc<dyn Authorizer>,
}

/// What the authorizer judges: kube's `authorizer.Attributes` from the request info.
pub fn attributes(user: &UserInfo, info: &RequestInfo) -> Attributes {
    if info.is_resource_request {
        Attributes::resource(user.clone(), &info.verb, &info.api_group, &info.resource)
            .with_api_version(&info.api_version)
            .with_namespace(&info.namespace)
            .with_name(&info.name)
            .with_subresource(&info.subresource)
    } else {
        Attributes::non_resource(user.clone(), &info.verb, &info.path)
    }
}

/// kube's 403 for a request the authorizer did not allow, for `reason`.
pub fn forbidden(attributes: &Attributes, reason: &str) -> ApiError {
    let forbidden = Forbidden::new(attributes, reason);
    ApiError::Forbidden {
        message: forbidden.message,
        resource: (!forbidden.resource.is_empty())
            .then(|| GroupResource::new(group_name(&forbidden.group), forbidden.resource)),
        name: forbidden.name,
    }
}

/// Our only group, or the core group (the only ones a request can name that we know).
fn group_name(group: &str) -> &'static str {
    if group == edgefleet_api::GROUP {
        edgefleet_api::GROUP
    } else {
        ""
    }
}

impl<S, B> Service<Request<B>> for Authorize<S>
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
        let attributes = match (user_in(req.extensions()), request_info_of(&req)) {
            (Ok(user), Ok(info)) => attributes(user, info),
            (Err(err), _) | (_, Err(err)) => return super::refuse(&err),
        };
        Box::pin(async move {
            let audit = req.extensions().get::<AuditContext>().cloned();
            match authorizer.authorize(&attributes).await {
                Decision::Allow => {
                    if let Some(audit) = &audit {
                        audit.annotate("authorization.k8s.io/decision", "allow");
                    }
                    inner.call(req).await
                }
                Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                    tracing::debug!(user = %attributes.user.name, verb = %attributes.verb, resource = %attributes.resource, "forbidden");
                    if let Some(audit) = &audit {
                        audit.annotate("authorization.k8s.io/decision", "forbid");
                        audit.annotate("authorization.k8s.io/reason", &reason);
                    }
                    Ok(error_response(&forbidden(&attributes, &reason)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use tower::ServiceExt as _;

    use super::*;
    use crate::http::layers::testing::{authenticated, echo, with_info, AllowOnly};

    #[test]
    fn resource_and_non_resource_requests_become_kube_attributes() {
        let info = edgefleet_apimachinery::request_info::parse(
            &Method::GET,
            "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/status",
            None,
        );
        let a = attributes(&UserInfo::new("alice"), &info);
        assert!(a.resource_request);
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.name.as_str()
            ),
            ("get", "retail", "clusters", "status", "edge-1")
        );
        let info = edgefleet_apimachinery::request_info::parse(&Method::GET, "/healthz", None);
        let a = attributes(&UserInfo::new("alice"), &info);
        assert!(!a.resource_request);
        assert_eq!(a.path, "/healthz");
    }

    #[test]
    fn a_denial_is_kube_s_forbidden_for_the_resource() {
        let info = edgefleet_apimachinery::request_info::parse(
            &Method::DELETE,
            "/apis/edgefleet.io/v1alpha1/environments/retail",
            None,
        );
        let err = forbidden(&attributes(&UserInfo::new("vera"), &info), "");
        assert_eq!(err.code(), 403);
        assert_eq!(
            err.to_string(),
            r#"environments.edgefleet.io "retail" is forbidden: User "vera" cannot delete resource "environments" in API group "edgefleet.io" at the cluster scope"#
        );
    }

    #[tokio::test]
    async fn only_allowed_requests_reach_the_inner_service() {
        let layer = AuthorizationLayer::new(Arc::new(AllowOnly("alice")));
        let seen = echo();
        let get = |user| {
            with_info(authenticated(
                Request::get("/apis/edgefleet.io/v1alpha1/environments"),
                user,
            ))
        };
        let allowed = layer
            .layer(seen.clone())
            .oneshot(get("alice"))
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200);
        let denied = layer
            .layer(seen.clone())
            .oneshot(get("vera"))
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
        assert_eq!(seen.count(), 1);
    }
}
