//! The hub's request path as tower layers, each a `FooLayer` and the `Foo<S>` service it
//! wraps around the next, with its decision in a plain function of its own. The order, and
//! why each sits where it does, is in one place: [`stack`](super::stack).
//!
//! What a layer learns travels in the request's extensions:
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | [`RequestInfo`] | [`request_info`] | everyone below |
//! | [`Authenticated`] (who proved it) | [`authn`] | [`audit`] (the event's `user`) |
//! | [`UserInfo`] (who the request acts as) | [`authn`], replaced by [`impersonation`] | [`authz`], the proxy |
//! | [`AuditContext`] | [`audit`] | [`impersonation`], [`authz`], [`body_capture`], the proxy |
//!
//! and in the response's: [`ErrorStatus`](super::body::ErrorStatus) (the `metav1.Status` of
//! an error, which the audit layer records), [`Relayed`](super::body::Relayed),
//! [`PendingUpgrade`](super::upgrade::PendingUpgrade).
//!
//! Every service here is generic over the request body `B` and never fails (`Infallible`): an
//! error is a response. Only [`body_capture`] touches the body; it hands the router the one
//! body type, [`Body`].

use std::convert::Infallible;

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::Service;

use super::body::{error_response, Body};
use crate::auth::UserInfo;
use crate::errors::ApiError;
use edgefleet_apimachinery::request_info::RequestInfo;

pub mod audit;
pub mod authn;
pub mod authz;
pub mod body_capture;
pub mod impersonation;
pub mod request_info;

pub use audit::{AuditContext, AuditLayer};
pub use authn::{AuthenticationLayer, Unauthorized};
pub use authz::AuthorizationLayer;
pub use body_capture::BodyCaptureLayer;
pub use impersonation::ImpersonationLayer;
pub use request_info::RequestInfoLayer;

/// The user a request authenticated as (before impersonation), in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated(pub UserInfo);

/// What every service of the stack returns.
pub type ServiceFuture = BoxFuture<'static, Result<Response<Body>, Infallible>>;

/// The service a layer wraps: the rest of the stack, for requests with body `B`.
pub trait Next<B>:
    Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> Next<B> for S where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The inner service for one call (tower's rule): the one that was polled ready serves this
/// request, a clone takes its place for the next.
pub(crate) fn ready_inner<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// The request info a layer above has put in the extensions; a stack missing it is assembled
/// wrongly, which must not let a request through.
pub(crate) fn request_info_of<B>(req: &Request<B>) -> Result<&RequestInfo, ApiError> {
    req.extensions()
        .get::<RequestInfo>()
        .ok_or_else(|| ApiError::Internal("the request info layer did not run".into()))
}

/// The user the request acts as, put there by authentication (or impersonation).
pub(crate) fn user_in(extensions: &http::Extensions) -> Result<&UserInfo, ApiError> {
    extensions.get::<UserInfo>().ok_or_else(|| {
        ApiError::Internal("the request reached authorization unauthenticated".into())
    })
}

/// An answer without going further.
pub(crate) fn refuse(err: &ApiError) -> ServiceFuture {
    let response = error_response(err);
    Box::pin(async move { Ok(response) })
}

#[cfg(test)]
pub(crate) mod testing;
