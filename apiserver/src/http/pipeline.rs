//! The request pipeline, in kube-apiserver's order:
//!
//! ```text
//! request info ─► authentication ─► audit ─► impersonation ─► authorization ─► router ─► audit
//!                     (401)        (500)       (400/403)          (403)                 complete
//! ```
//!
//! - Request info comes first: authorization and audit need it, and it needs nothing.
//! - Audit begins right after authentication, as in kube-apiserver, so refused requests (403,
//!   and 401s, recorded with an empty user) are in the trail too; a request whose
//!   `RequestReceived` cannot be written is refused (fail closed). DESIGN.md §4 lists audit after
//!   authorization; recording denials is what security teams need, so it moved up.
//! - Impersonation asks the authorizer whether the *authenticated* caller may act as someone
//!   else; authorization then judges the effective user.
//! - Credentials and impersonation headers are removed once consumed, so nothing downstream
//!   (least of all the proxy) can forward them as they came.

use std::sync::Arc;

use edgefleet_apimachinery::request_info::{self, RequestInfo};
use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::audited::{self, with_audit_id, AuditSlot};
use super::body::{self, error_response, Body};
use super::router::Router;
use super::server::{ConnectionInfo, Handler};
use crate::audit::{Auditor, RequestAttributes, ResponseStatus};
use crate::auth::authn::{Authenticator, UnionAuthenticator};
use crate::auth::impersonation::impersonate;
use crate::auth::{Attributes, Authorizer, Decision, Forbidden, UserInfo};
use crate::errors::{ApiError, GroupResource};

/// The stack every request goes through.
pub struct Pipeline {
    pub authenticator: Arc<UnionAuthenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub router: Arc<Router>,
    /// The audit trail; `None` when auditing is off.
    pub auditor: Option<Auditor>,
}

/// A request as the router receives it: the body possibly already read for the audit record.
pub type RoutedRequest = Request<Body>;

impl Handler for Pipeline {
    fn handle(&self, req: Request<Incoming>) -> BoxFuture<'static, Response<Body>> {
        let authenticator = self.authenticator.clone();
        let authorizer = self.authorizer.clone();
        let router = self.router.clone();
        let auditor = self.auditor.clone();
        Box::pin(async move {
            let mut info = request_info::parse(req.method(), req.uri().path(), req.uri().query());
            // Streams that reach into a container or a port are writes, whatever the method.
            super::proxy::authorize_upgrades_as_create(&mut info, req.headers());
            let req = req.map(|b| b.map_err(std::io::Error::other).boxed_unsync());
            match serve(
                &*authenticator,
                &*authorizer,
                auditor.as_ref(),
                &router,
                &info,
                req,
            )
            .await
            {
                Ok(response) | Err(response) => response,
            }
        })
    }
}

/// The audit attributes of a request.
fn audit_attributes(info: &RequestInfo, req: &RoutedRequest, user: UserInfo) -> RequestAttributes {
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<Arc<ConnectionInfo>>()
        .and_then(|c| c.remote)
        .map(|a| a.ip());
    let proxied =
        info.resource == "clusters" && info.subresource == "proxy" && !info.name.is_empty();
    let attrs = if proxied {
        RequestAttributes::proxied(info, req.method(), req.uri().query(), user, uri)
    } else {
        RequestAttributes::hub(info, user, uri)
    };
    attrs.with_headers(req.headers(), peer)
}

/// Runs the stages; `Err` carries an early answer (401, 403, ...).
async fn serve(
    authenticator: &dyn Authenticator,
    authorizer: &dyn Authorizer,
    auditor: Option<&Auditor>,
    router: &Router,
    info: &RequestInfo,
    req: RoutedRequest,
) -> Result<Response<Body>, Response<Body>> {
    let (mut parts, request_body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<Arc<ConnectionInfo>>()
        .cloned()
        .unwrap_or_default();

    // Authentication.
    let authenticated = match authenticator
        .authenticate(&parts, &peer.peer_certificates)
        .await
    {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(ApiError::Unauthorized),
        Err(err) => {
            tracing::debug!(reason = %err.message(), "authentication failed");
            Err(ApiError::Unauthorized)
        }
    };
    parts.headers.remove(AUTHORIZATION);
    let req = Request::from_parts(parts, request_body);
    let user = match authenticated {
        Ok(user) => user,
        Err(err) => {
            // Recorded with an empty user, as kube-apiserver records failed authentication.
            if let Some(auditor) = auditor {
                let attrs = audit_attributes(info, &req, UserInfo::default());
                if let Ok(audited) = auditor.begin(attrs).await {
                    let id = audited.audit_id().to_string();
                    let _ = audited
                        .complete(
                            ResponseStatus::from_status(&err.status(), err.code().as_u16()),
                            None,
                        )
                        .await;
                    return Err(with_audit_id(error_response(&err), &id));
                }
            }
            return Err(error_response(&err));
        }
    };

    // Audit: RequestReceived is durable before anything else happens.
    let mut audited = match auditor {
        Some(auditor) => {
            let attrs = audit_attributes(info, &req, user.clone());
            Some(
                auditor
                    .begin(attrs)
                    .await
                    .map_err(|e| error_response(&e.into()))?,
            )
        }
        None => None,
    };
    let refuse = |audited: Option<crate::audit::AuditedRequest>, err: ApiError| async move {
        let Some(audited) = audited else {
            return error_response(&err);
        };
        let id = audited.audit_id().to_string();
        let status = ResponseStatus::from_status(&err.status(), err.code().as_u16());
        let response = match audited.complete(status, None).await {
            Ok(()) => error_response(&err),
            Err(audit_err) => error_response(&audit_err.into()),
        };
        with_audit_id(response, &id)
    };

    // Impersonation.
    let (mut parts, request_body) = req.into_parts();
    let impersonation = match impersonate(authorizer, &user, &parts.headers).await {
        Ok(i) => i,
        Err(err) => {
            let api = match err.status_code() {
                StatusCode::FORBIDDEN => ApiError::Forbidden {
                    message: err.to_string(),
                    resource: None,
                    name: String::new(),
                },
                _ => ApiError::BadRequest(err.to_string()),
            };
            return Err(refuse(audited, api).await);
        }
    };
    for header in &impersonation.headers_to_strip {
        parts.headers.remove(header);
    }
    let user = match impersonation.user {
        Some(impersonated) => {
            if let Some(a) = audited.as_mut() {
                a.set_impersonated_user(&impersonated);
            }
            impersonated
        }
        None => user,
    };

    // Authorization.
    let attributes = attributes(&user, info);
    match authorizer.authorize(&attributes).await {
        Decision::Allow => {
            if let Some(a) = audited.as_mut() {
                a.annotate("authorization.k8s.io/decision", "allow");
            }
        }
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            let forbidden = Forbidden::new(&attributes, &reason);
            tracing::debug!(user = %user.name, verb = %info.verb, resource = %info.resource, "forbidden");
            if let Some(a) = audited.as_mut() {
                a.annotate("authorization.k8s.io/decision", "forbid");
                a.annotate("authorization.k8s.io/reason", reason.as_str());
            }
            let err = ApiError::Forbidden {
                message: forbidden.message,
                resource: (!forbidden.resource.is_empty())
                    .then(|| GroupResource::new(group_name(&forbidden.group), forbidden.resource)),
                name: forbidden.name,
            };
            return Err(refuse(audited, err).await);
        }
    }
    parts.extensions.insert(user);

    // The request body, when the audit level records it (never for upgrades and streams).
    let request_body = match audited.as_mut().filter(|a| a.wants_request_body()) {
        Some(a) if !parts.headers.contains_key(http::header::UPGRADE) => {
            match body::read_body(request_body).await {
                Ok(bytes) => {
                    a.set_request_body(&bytes);
                    body::full(bytes)
                }
                Err(err) => return Err(refuse(audited, err).await),
            }
        }
        _ => request_body,
    };

    let slot = audited
        .zip(auditor.cloned())
        .map(|(request, auditor)| AuditSlot::new(request, auditor));
    if let Some(slot) = &slot {
        parts.extensions.insert(slot.clone());
    }
    let response = router
        .route(info, Request::from_parts(parts, request_body))
        .await;
    Ok(match slot {
        Some(slot) => audited::complete(slot, response).await,
        None => response,
    })
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
