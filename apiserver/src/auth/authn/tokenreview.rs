//! Bearer tokens checked by the management cluster: `POST authentication.k8s.io/v1 TokenReview`,
//! as kube's delegating authenticator does for aggregated API servers.
//!
//! ```text
//!  Authorization: Bearer <token>
//!        │ key = HMAC-SHA256(random per-process key, token, audiences)
//!        ▼
//!  LookupCache ── hit (within --authentication-token-webhook-cache-ttl) ──► answer
//!        │ miss: one TokenReview per key, however many requests wait for it
//!        ▼
//!  status.authenticated ─► UserInfo{username, uid, groups, extra}
//!  otherwise            ─► Err (401), with status.error; never anonymous
//!  request failed       ─► Err (401), not cached, so the next request asks again
//! ```
//!
//! Both answers are cached for the one TTL (kube's delegated authenticator does the same), which
//! bounds how long a revoked token keeps working and how often a bad token is re-asked.
//!
//! The cache key is a keyed digest: the table holds no tokens, and its keys are useless outside
//! this process (kube keys its cache the same way). Tokens appear in no log or error message.
//!
//! With `--api-audiences`, the review asks for those audiences and the token must be valid for
//! at least one of them (from `status.audiences`, or, when the server omits it, implied by the
//! review it accepted), as kube's webhook token authenticator checks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edgefleet_tunnel::error_chain;
use http::request::Parts;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Resource;
use ring::hmac;
use rustls_pki_types::CertificateDer;

use super::token::bearer_token;
use super::{Authenticator, AuthnError, Result};
use crate::auth::cache::{LookupCache, DEFAULT_MAX_ENTRIES};
use crate::auth::delegation::{
    self, RequestError, RetryBackoff, DEFAULT_TOKEN_CACHE_TTL, TOKEN_REVIEW_TIMEOUT,
};
use crate::auth::UserInfo;

/// What the management cluster said about one token.
#[derive(Clone, Debug)]
enum Review {
    Authenticated(UserInfo),
    /// `status.error`, or why we did not accept the answer.
    Rejected(String),
}

type Key = [u8; 32];

/// Authenticates bearer tokens with TokenReview; see the [module docs](self).
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
    cache_ttl: Duration,
    timeout: Duration,
    retry: RetryBackoff,
    key: Arc<hmac::Key>,
    cache: LookupCache<Key, Review, RequestError>,
}

impl fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audiences", &self.audiences)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens with `client`, caching answers for [`DEFAULT_TOKEN_CACHE_TTL`].
    pub fn new(client: kube::Client) -> Self {
        let rng = ring::rand::SystemRandom::new();
        TokenReviewAuthenticator {
            client,
            audiences: Vec::new(),
            cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            timeout: TOKEN_REVIEW_TIMEOUT,
            retry: RetryBackoff::default(),
            key: Arc::new(
                hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system RNG works"),
            ),
            cache: LookupCache::new(DEFAULT_MAX_ENTRIES),
        }
    }

    /// The audiences a token must be valid for (`spec.audiences`); empty: the management API's
    /// own.
    pub fn audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// How long an answer is reused; zero disables the cache.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    pub fn retry_backoff(mut self, retry: RetryBackoff) -> Self {
        self.retry = retry;
        self
    }

    /// Length-prefixed so that no two (token, audiences) inputs share a message.
    fn key(&self, token: &[u8]) -> Key {
        let mut ctx = hmac::Context::with_key(&self.key);
        let mut add = |bytes: &[u8]| {
            ctx.update(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
            ctx.update(bytes);
        };
        add(token);
        add(&self.audiences.len().to_be_bytes());
        for audience in &self.audiences {
            add(audience.as_bytes());
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    async fn review(&self, token: &str) -> Result<Review, Arc<RequestError>> {
        let client = self.client.clone();
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let audiences = self.audiences.clone();
        let (retry, timeout) = (self.retry, self.timeout);
        let ttl = self.cache_ttl;
        self.cache
            .get_or_fetch(self.key(token.as_bytes()), move |_| ttl, async move {
                let path = TokenReview::url_path(&(), None);
                let answer: TokenReview =
                    delegation::post(&client, &path, &request, retry, timeout).await?;
                Ok(interpret(answer.status.unwrap_or_default(), &audiences))
            })
            .await
    }
}

/// kube's reading of a TokenReview answer.
fn interpret(status: TokenReviewStatus, audiences: &[String]) -> Review {
    if status.authenticated != Some(true) {
        return Review::Rejected(
            status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token was not authenticated".to_string()),
        );
    }
    if !audiences.is_empty() {
        // The server may narrow the audiences; when it names none, it accepted ours.
        let granted = status.audiences.filter(|a| !a.is_empty());
        let granted = granted.as_deref().unwrap_or(audiences);
        if !audiences.iter().any(|a| granted.contains(a)) {
            return Review::Rejected(format!(
                "the token is not valid for the audiences {audiences:?}"
            ));
        }
    }
    let user = status.user.unwrap_or_default();
    let Some(name) = user.username.filter(|n| !n.is_empty()) else {
        return Review::Rejected(
            "the TokenReview authenticated the token but named no user".into(),
        );
    };
    Review::Authenticated(UserInfo {
        name,
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    })
}

#[async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(
        &self,
        head: &Parts,
        _peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>> {
        let Some(token) = bearer_token(&head.headers) else {
            return Ok(None);
        };
        // JSON carries text; a token that is not UTF-8 cannot be one the cluster issued.
        let token = std::str::from_utf8(token).map_err(|_| AuthnError::InvalidBearerToken)?;
        match self.review(token).await {
            Ok(Review::Authenticated(user)) => Ok(Some(user)),
            Ok(Review::Rejected(reason)) => Err(AuthnError::TokenReviewRejected { reason }),
            Err(source) => {
                tracing::warn!(error = %error_chain(&*source), "TokenReview failed");
                Err(AuthnError::TokenReviewFailed { source })
            }
        }
    }
}

#[cfg(test)]
mod tests;
