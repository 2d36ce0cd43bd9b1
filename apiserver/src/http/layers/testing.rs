//! Test doubles for the layers' own tests: an inner service that records what reached it, an
//! authenticator that knows one token, an authorizer that allows one user.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use http::request::Parts;
use http::{Request, Response};
use rustls_pki_types::CertificateDer;
use tower::Service;

use super::{Authenticated, ServiceFuture};
use crate::auth::authn::{self, Authenticator};
use crate::auth::{Attributes, Authorizer, Decision, UserInfo};
use crate::http::body::{self, Body};

/// An inner service that answers 200 and keeps the head of every request it was called with.
#[derive(Clone, Default)]
pub struct Echo(Arc<Mutex<Vec<Parts>>>);

pub fn echo() -> Echo {
    Echo::default()
}

impl Echo {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn last(&self) -> Parts {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the service")
    }
}

impl<B: Send + 'static> Service<Request<B>> for Echo {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.lock().unwrap().push(req.into_parts().0);
        Box::pin(async { Ok(Response::new(body::empty())) })
    }
}

/// Authenticates `Authorization: Bearer <name>` as user `<name>` for one name; any other token
/// is invalid, no token is no opinion.
pub struct FixedAuthenticator(String);

impl FixedAuthenticator {
    pub fn new(name: &str) -> Self {
        FixedAuthenticator(name.to_string())
    }
}

#[async_trait]
impl Authenticator for FixedAuthenticator {
    async fn authenticate(
        &self,
        head: &Parts,
        _: &[CertificateDer<'static>],
    ) -> authn::Result<Option<UserInfo>> {
        match authn::token::bearer_token(&head.headers) {
            None => Ok(None),
            Some(token) if token == self.0.as_bytes() => Ok(Some(UserInfo::new(&self.0))),
            Some(_) => Err(authn::AuthnError::InvalidBearerToken),
        }
    }
}

/// Allows one user everything; everyone else nothing.
pub struct AllowOnly(pub &'static str);

#[async_trait]
impl Authorizer for AllowOnly {
    async fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.name == self.0 {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// A request as the authentication layer passes it on for `user`.
pub fn authenticated(req: http::request::Builder, user: &str) -> Request<Body> {
    let user = UserInfo::new(user);
    req.extension(Authenticated(user.clone()))
        .extension(user)
        .body(body::empty())
        .unwrap()
}

/// The request with its request info, as the first layer adds it.
pub fn with_info(req: Request<Body>) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let info = super::request_info::request_info_of(&parts);
    parts.extensions.insert(info);
    Request::from_parts(parts, body)
}
