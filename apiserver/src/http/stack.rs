//! The hub's request path, assembled: the one place its order is decided.
//!
//! ```text
//! request info ─► authentication ─► audit ─► impersonation ─► authorization ─► body capture ─► router
//!                   │ (401)          (500)      (400/403)          (403)          (413)
//!                   └─► audit ─► 401
//! ```
//!
//! kube-apiserver's order (`DefaultBuildHandlerChain`), read from the outside in; each layer
//! says below why it sits where it does. DESIGN.md §4 lists audit after authorization;
//! recording denials is what security teams need, so it moved up, as in kube.

use std::sync::Arc;

use tower::ServiceBuilder;

use super::layers::audit::Audit;
use super::layers::authn::Authenticate;
use super::layers::authz::Authorize;
use super::layers::body_capture::CaptureBody;
use super::layers::impersonation::Impersonate;
use super::layers::request_info::WithRequestInfo;
use super::layers::{
    AuditLayer, AuthenticationLayer, AuthorizationLayer, BodyCaptureLayer, ImpersonationLayer,
    RequestInfoLayer, Unauthorized,
};
use super::router::{Router, RouterService};
use crate::audit::Auditor;
use crate::auth::authn::Authenticator;
use crate::auth::Authorizer;

/// The hub as one `tower::Service<Request<B>>`, for any request body `B` (hyper's on a
/// connection, an in-memory one in tests). Cheap to clone.
pub type Hub = WithRequestInfo<
    Authenticate<Audit<Impersonate<Authorize<CaptureBody<RouterService>>>>, Audit<Unauthorized>>,
>;

/// What the stack is made of.
pub struct StackParts {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    /// The audit trail; `None` when auditing is off.
    pub auditor: Option<Auditor>,
    pub router: Arc<Router>,
}

/// Assembles the stack.
pub fn build(parts: StackParts) -> Hub {
    let audit = AuditLayer::new(parts.auditor);
    // A request that fails authentication is audited (with an empty user, as kube records
    // it) and answered 401: kube's `WithFailedAuthenticationAudit(Unauthorized)`.
    let unauthorized = ServiceBuilder::new()
        .layer(audit.clone())
        .service(Unauthorized);
    ServiceBuilder::new()
        // Request info first: audit, authorization and the router all read it, and it needs
        // nothing. Upgrades through the proxy become `create` here, before anything judges them.
        .layer(RequestInfoLayer)
        // Authentication next: everything after it needs to know who is calling. It removes
        // the Authorization header, so no later stage can forward the caller's credential.
        .layer(AuthenticationLayer::new(parts.authenticator, unauthorized))
        // Audit right after authentication, so that every refusal below (400, 403, 413) is in
        // the trail with the caller's identity; a request whose RequestReceived cannot be
        // written goes no further (fail closed). It owns every stage of the record, and the
        // request's tracing span.
        .layer(audit)
        // Impersonation asks the authorizer whether the authenticated caller may act as
        // someone else, and removes the Impersonate-* headers it consumed; below it, the
        // request acts as the impersonated user.
        .layer(ImpersonationLayer::new(parts.authorizer.clone()))
        // Authorization judges the effective user, and annotates the record with its decision.
        .layer(AuthorizationLayer::new(parts.authorizer))
        // Body capture last: only an authorized request's body is read for the record, and
        // here the body becomes the one type the router takes.
        .layer(BodyCaptureLayer)
        .service(RouterService(parts.router))
}
