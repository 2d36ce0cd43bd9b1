//! The request pipeline, in kube-apiserver's order (DESIGN.md §4):
//!
//! ```text
//! request info ─► authentication ─► impersonation ─► authorization ─► router
//!     (401)            (401)          (400/403)          (403)
//! ```
//!
//! Request info comes first because authorization and audit need it and it needs nothing.
//! Authentication precedes impersonation, which asks the authorizer whether the *authenticated*
//! caller may act as someone else; authorization then judges the effective user. Credentials
//! and impersonation headers are removed from the request once consumed, so nothing downstream
//! (least of all a proxy) can forward them as they came.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use hyper::body::Incoming;

use super::body::{error_response, Body};
use super::router::Router;
use super::server::{ConnectionInfo, Handler};
use crate::auth::authn::{Authenticator, UnionAuthenticator};
use crate::auth::impersonation::impersonate;
use crate::auth::{Attributes, Authorizer, Decision, Forbidden, UserInfo};
use crate::errors::{ApiError, GroupResource};
use crate::request_info::{self, RequestInfo};

/// The stack every request goes through.
pub struct Pipeline {
    pub authenticator: Arc<UnionAuthenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub router: Arc<Router>,
}

impl Handler for Pipeline {
    fn handle(&self, req: Request<Incoming>) -> BoxFuture<'static, Response<Body>> {
        let authenticator = self.authenticator.clone();
        let authorizer = self.authorizer.clone();
        let router = self.router.clone();
        Box::pin(async move {
            let mut info = request_info::parse(req.method(), req.uri().path(), req.uri().query());
            super::proxy::authorize_upgrades_as_create(&mut info, req.headers());
            let req = match admit(&*authenticator, &*authorizer, &info, req).await {
                Ok(req) => req,
                Err(err) => return error_response(&err),
            };
            router.route(&info, req).await
        })
    }
}

/// Authenticates, applies impersonation and authorizes; returns the request with the effective
/// [`UserInfo`] in its extensions and the consumed credential headers removed.
pub async fn admit<B>(
    authenticator: &dyn Authenticator,
    authorizer: &dyn Authorizer,
    info: &RequestInfo,
    req: Request<B>,
) -> Result<Request<B>, ApiError> {
    let (mut parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<Arc<ConnectionInfo>>()
        .cloned()
        .unwrap_or_default();
    let user = match authenticator
        .authenticate(&parts, &peer.peer_certificates)
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return Err(ApiError::Unauthorized),
        Err(err) => {
            tracing::debug!(reason = %err.message(), "authentication failed");
            return Err(ApiError::Unauthorized);
        }
    };
    parts.headers.remove(AUTHORIZATION);

    let impersonation = impersonate(authorizer, &user, &parts.headers)
        .await
        .map_err(|err| match err.status_code() {
            http::StatusCode::FORBIDDEN => ApiError::Forbidden {
                message: err.to_string(),
                resource: None,
                name: String::new(),
            },
            _ => ApiError::BadRequest(err.to_string()),
        })?;
    for header in &impersonation.headers_to_strip {
        parts.headers.remove(header);
    }
    let user = impersonation.user.unwrap_or(user);

    let attributes = attributes(&user, info);
    match authorizer.authorize(&attributes).await {
        Decision::Allow => {}
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            let forbidden = Forbidden::new(&attributes, &reason);
            tracing::debug!(user = %user.name, verb = %info.verb, resource = %info.resource, "forbidden");
            return Err(ApiError::Forbidden {
                message: forbidden.message,
                resource: (!forbidden.resource.is_empty())
                    .then(|| GroupResource::new(group_name(&forbidden.group), forbidden.resource)),
                name: forbidden.name,
            });
        }
    }
    parts.extensions.insert(user);
    Ok(Request::from_parts(parts, body))
}

/// Our only group, or the core group (the only ones a request can name that we know).
fn group_name(group: &str) -> &'static str {
    if group == edgefleet_api::GROUP {
        edgefleet_api::GROUP
    } else {
        ""
    }
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
