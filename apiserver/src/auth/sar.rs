//! Authorization delegated to the management cluster: every request becomes a
//! `POST authorization.k8s.io/v1 SubjectAccessReview`, as kube's delegating authorizer (the
//! webhook authorizer in front of the aggregating kube-apiserver) does.
//!
//! ```text
//!  Attributes ──► SubjectAccessReviewSpec{user, uid, groups, extra,
//!                   resourceAttributes{namespace, verb, group, version, resource, subresource, name}
//!                   | nonResourceAttributes{path, verb}}
//!        │ key = the spec's JSON (every attribute, so no two questions share an answer)
//!        ▼
//!  LookupCache ── hit ──► answer        (allowed: authorized TTL; otherwise: unauthorized TTL)
//!        │ miss: one review per distinct question in flight
//!        ▼
//!  status ─► allowed ─► Allow      denied ─► Deny(reason)      neither ─► NoOpinion(reason)
//!  request failed ─► NoOpinion("…could not be reached"), not cached: a union falls through to
//!                    a 403, and the next request asks again
//! ```
//!
//! Empty attributes are left out of the review (kube's fields are `omitempty`), so the JSON is
//! what kube-apiserver itself would send. Failures are logged with the verb and resource, never
//! with the user's groups or extra.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use edgefleet_tunnel::error_chain;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use kube::Resource;

use super::cache::{LookupCache, DEFAULT_MAX_ENTRIES};
use super::delegation::{
    self, RequestError, RetryBackoff, DEFAULT_AUTHORIZED_TTL, DEFAULT_UNAUTHORIZED_TTL,
    SUBJECT_ACCESS_REVIEW_TIMEOUT,
};
use super::{Attributes, Authorizer, Decision};

/// The reason a request is forbidden when the management cluster could not be asked.
pub const UNREACHABLE_REASON: &str =
    "the management cluster's SubjectAccessReview API could not be reached";

/// Authorizes with SubjectAccessReview; see the [module docs](self).
#[derive(Clone)]
pub struct SubjectAccessReviewAuthorizer {
    client: kube::Client,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    timeout: Duration,
    retry: RetryBackoff,
    cache: LookupCache<String, SubjectAccessReviewStatus, RequestError>,
}

impl fmt::Debug for SubjectAccessReviewAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectAccessReviewAuthorizer")
            .field("authorized_ttl", &self.authorized_ttl)
            .field("unauthorized_ttl", &self.unauthorized_ttl)
            .finish_non_exhaustive()
    }
}

impl SubjectAccessReviewAuthorizer {
    /// Asks through `client`, with kube's default cache TTLs.
    pub fn new(client: kube::Client) -> Self {
        SubjectAccessReviewAuthorizer {
            client,
            authorized_ttl: DEFAULT_AUTHORIZED_TTL,
            unauthorized_ttl: DEFAULT_UNAUTHORIZED_TTL,
            timeout: SUBJECT_ACCESS_REVIEW_TIMEOUT,
            retry: RetryBackoff::default(),
            cache: LookupCache::new(DEFAULT_MAX_ENTRIES),
        }
    }

    /// `--authorization-webhook-cache-authorized-ttl`; zero disables caching allowed answers.
    pub fn authorized_ttl(mut self, ttl: Duration) -> Self {
        self.authorized_ttl = ttl;
        self
    }

    /// `--authorization-webhook-cache-unauthorized-ttl`; zero disables caching other answers.
    pub fn unauthorized_ttl(mut self, ttl: Duration) -> Self {
        self.unauthorized_ttl = ttl;
        self
    }

    pub fn retry_backoff(mut self, retry: RetryBackoff) -> Self {
        self.retry = retry;
        self
    }
}

/// kube's `WebhookAuthorizer` mapping of attributes to a review.
pub fn review_spec(a: &Attributes) -> SubjectAccessReviewSpec {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let user = &a.user;
    SubjectAccessReviewSpec {
        user: some(&user.name),
        uid: some(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes: a.resource_request.then(|| ResourceAttributes {
            namespace: some(&a.namespace),
            verb: some(&a.verb),
            group: some(&a.api_group),
            version: some(&a.api_version),
            resource: some(&a.resource),
            subresource: some(&a.subresource),
            name: some(&a.name),
            ..ResourceAttributes::default()
        }),
        non_resource_attributes: (!a.resource_request).then(|| NonResourceAttributes {
            path: some(&a.path),
            verb: some(&a.verb),
        }),
    }
}

/// kube's reading of a review's status.
pub fn decision(status: &SubjectAccessReviewStatus) -> Decision {
    let reason = status.reason.clone().unwrap_or_default();
    let denied = status.denied == Some(true);
    if denied && status.allowed {
        tracing::error!("SubjectAccessReview answered both allowed and denied; denying");
    }
    if denied {
        Decision::Deny(reason)
    } else if status.allowed {
        Decision::Allow
    } else {
        Decision::NoOpinion(reason)
    }
}

#[async_trait]
impl Authorizer for SubjectAccessReviewAuthorizer {
    async fn authorize(&self, a: &Attributes) -> Decision {
        let spec = review_spec(a);
        // serde_json writes struct fields in declaration order and `extra` as a sorted map, so
        // equal questions have equal keys.
        let key = serde_json::to_string(&spec).expect("a review spec serializes");
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let client = self.client.clone();
        let (retry, timeout) = (self.retry, self.timeout);
        let (authorized_ttl, unauthorized_ttl) = (self.authorized_ttl, self.unauthorized_ttl);
        let answer = self
            .cache
            .get_or_fetch(
                key,
                move |status: &SubjectAccessReviewStatus| {
                    if status.allowed {
                        authorized_ttl
                    } else {
                        unauthorized_ttl
                    }
                },
                async move {
                    let path = SubjectAccessReview::url_path(&(), None);
                    let answer: SubjectAccessReview =
                        delegation::post(&client, &path, &review, retry, timeout).await?;
                    Ok(answer.status.unwrap_or_default())
                },
            )
            .await;
        match answer {
            Ok(status) => decision(&status),
            Err(err) => {
                tracing::warn!(
                    verb = %a.verb,
                    resource = %a.resource,
                    subresource = %a.subresource,
                    path = %a.path,
                    error = %error_chain(&*err),
                    "SubjectAccessReview failed"
                );
                Decision::NoOpinion(UNREACHABLE_REASON.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
