//! Authentication and authorization for the management API, with Kubernetes semantics.
//!
//! Every request passes three steps before it reaches a handler; this module holds the pure
//! logic of each (no listeners: the request pipeline calls in here):
//!
//! ```text
//!  request head + TLS peer chain
//!        │
//!        ▼
//!  authn::UnionAuthenticator ── Err / Ok(None) ──► 401 Unauthorized
//!   requestheader → x509 → bearer tokens (file, TokenReview) → anonymous;
//!   adds system:authenticated
//!        │ UserInfo
//!        ▼
//!  impersonation::impersonate ── Err ──► 400 / 403 (asks the Authorizer for verb "impersonate")
//!        │ UserInfo (possibly replaced)
//!        ▼
//!  Authorizer (UnionAuthorizer: system:masters, then the --authorization-mode chain:
//!              rbac::RbacAuthorizer standalone, sar::SubjectAccessReviewAuthorizer behind
//!              kube-apiserver)
//!        │ Decision::Allow ──► handler;  Deny / NoOpinion ──► 403 with forbidden::Forbidden
//! ```
//!
//! [`UserInfo`] is kube's `user.Info`, [`Attributes`] is kube's `authorizer.Attributes`, and
//! [`Decision`] carries the reason kube appends to its Forbidden message.
//!
//! Behind kube-apiserver (an aggregated API server), the management cluster does part of the
//! work, through [`delegation`]'s client: it reviews bearer tokens (`authn::tokenreview`),
//! authorizes requests ([`sar`]), and publishes the front-proxy and client CA settings
//! (`authn::cluster_config`), which replace the flag-configured ones while the server runs.
//!
//! Nothing here logs tokens, private keys or header values: errors name headers, never their
//! contents.

mod attributes;
pub mod authn;
mod authorizer;
pub mod cache;
pub mod delegation;
pub mod flags;
mod forbidden;
pub mod impersonation;
pub mod rbac;
pub mod sar;
pub mod swap;
#[cfg(test)]
pub(crate) mod test_apiserver;
mod user;

pub use attributes::Attributes;
pub use authorizer::{
    AlwaysAllow, AlwaysAllowPaths, AlwaysDeny, Authorizer, Decision, InvalidPathPattern,
    PrivilegedGroups, UnionAuthorizer,
};
pub use forbidden::{forbidden_message, Forbidden};
pub use sar::SubjectAccessReviewAuthorizer;
pub use user::{
    UserInfo, ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS, CREDENTIAL_ID_KEY,
    SERVICE_ACCOUNT_USERNAME_PREFIX, SYSTEM_PRIVILEGED_GROUP,
};
