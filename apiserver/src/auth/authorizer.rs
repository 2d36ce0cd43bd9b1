//! The authorizer contract and the small authorizers around RBAC.
//!
//! Kube chains authorizers in a union: each answers Allow, Deny or NoOpinion; the first Allow or
//! Deny decides, NoOpinion falls through to the next, and a request nobody allowed is forbidden.
//! The hub's chain is `[PrivilegedGroups(system:masters), RbacAuthorizer]` standalone, and gets the
//! delegated SubjectAccessReview authorizer behind kube-apiserver.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Attributes, SYSTEM_PRIVILEGED_GROUP};

/// An authorizer's answer; the text is the reason kube appends to its Forbidden message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
    NoOpinion(String),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The reason for a Deny or NoOpinion (empty for Allow).
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow => "",
            Decision::Deny(reason) | Decision::NoOpinion(reason) => reason,
        }
    }
}

#[async_trait]
pub trait Authorizer: Send + Sync {
    async fn authorize(&self, a: &Attributes) -> Decision;
}

#[async_trait]
impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    async fn authorize(&self, a: &Attributes) -> Decision {
        (**self).authorize(a).await
    }
}

/// Allows everything: for tests and development only (kube's `--authorization-mode=AlwaysAllow`).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

#[async_trait]
impl Authorizer for AlwaysAllow {
    async fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }
}

/// Has no opinion on anything, so everything is forbidden (kube's `AlwaysDeny` mode, which
/// answers NoOpinion as well so a later authorizer in a union could still allow).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysDeny;

#[async_trait]
impl Authorizer for AlwaysDeny {
    async fn authorize(&self, _: &Attributes) -> Decision {
        Decision::NoOpinion("Everything is forbidden.".to_string())
    }
}

/// Allows members of the given groups everything (kube puts `system:masters` here, ahead of every
/// other authorizer, so a broken RBAC policy cannot lock the superuser out).
#[derive(Clone, Debug)]
pub struct PrivilegedGroups {
    groups: Vec<String>,
}

impl PrivilegedGroups {
    pub fn new<I, S>(groups: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PrivilegedGroups {
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// `system:masters`, as kube-apiserver configures it.
    pub fn system_masters() -> Self {
        PrivilegedGroups::new([SYSTEM_PRIVILEGED_GROUP])
    }
}

#[async_trait]
impl Authorizer for PrivilegedGroups {
    async fn authorize(&self, a: &Attributes) -> Decision {
        if self.groups.iter().any(|g| a.user.in_group(g)) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// Allows some non-resource paths to everyone, without asking further (kube's
/// `--authorization-always-allow-paths`, by default the health endpoints, so that probes work
/// even when the delegated authorizer cannot be reached). A trailing `*` matches a prefix.
#[derive(Clone, Debug, Default)]
pub struct AlwaysAllowPaths {
    /// Without their leading `/`, as kube compares them.
    paths: Vec<String>,
    prefixes: Vec<String>,
}

/// A `*` that is not the last character of an always-allowed path.
#[derive(Debug, thiserror::Error)]
#[error("only a trailing * is allowed in {0:?}")]
pub struct InvalidPathPattern(pub String);

impl AlwaysAllowPaths {
    pub fn new<I, S>(patterns: I) -> Result<Self, InvalidPathPattern>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut allowed = AlwaysAllowPaths::default();
        for pattern in patterns {
            let p = pattern
                .as_ref()
                .strip_prefix('/')
                .unwrap_or(pattern.as_ref());
            match p.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') => allowed.prefixes.push(prefix.to_string()),
                None if !p.contains('*') => allowed.paths.push(p.to_string()),
                _ => return Err(InvalidPathPattern(pattern.as_ref().to_string())),
            }
        }
        Ok(allowed)
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.prefixes.is_empty()
    }
}

#[async_trait]
impl Authorizer for AlwaysAllowPaths {
    async fn authorize(&self, a: &Attributes) -> Decision {
        if a.resource_request {
            return Decision::NoOpinion(String::new());
        }
        let path = a.path.strip_prefix('/').unwrap_or(&a.path);
        if self.paths.iter().any(|p| p == path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
        {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// Asks each authorizer in turn: the first Allow or Deny wins; when all have no opinion the result
/// is NoOpinion with the non-empty reasons joined by newlines (kube's `union.New`).
#[derive(Clone, Default)]
pub struct UnionAuthorizer {
    authorizers: Vec<Arc<dyn Authorizer>>,
}

impl UnionAuthorizer {
    pub fn new(authorizers: Vec<Arc<dyn Authorizer>>) -> Self {
        UnionAuthorizer { authorizers }
    }

    /// Appends an authorizer, asked after those already present.
    pub fn push(&mut self, authorizer: impl Authorizer + 'static) {
        self.authorizers.push(Arc::new(authorizer));
    }
}

impl std::fmt::Debug for UnionAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionAuthorizer")
            .field("authorizers", &self.authorizers.len())
            .finish()
    }
}

#[async_trait]
impl Authorizer for UnionAuthorizer {
    async fn authorize(&self, a: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for authorizer in &self.authorizers {
            match authorizer.authorize(a).await {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;

    /// Answers a fixed decision and counts how often it was asked.
    struct Fixed(Decision, std::sync::atomic::AtomicUsize);

    impl Fixed {
        fn new(d: Decision) -> Arc<Self> {
            Arc::new(Fixed(d, Default::default()))
        }
        fn asked(&self) -> usize {
            self.1.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Authorizer for Fixed {
        async fn authorize(&self, _: &Attributes) -> Decision {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.clone()
        }
    }

    fn get_healthz(user: UserInfo) -> Attributes {
        Attributes::non_resource(user, "get", "/healthz")
    }

    #[tokio::test]
    async fn union_first_allow_or_deny_wins_and_no_opinion_falls_through() {
        let first = Fixed::new(Decision::NoOpinion("first has none".into()));
        let deny = Fixed::new(Decision::Deny("denied".into()));
        let allow = Fixed::new(Decision::Allow);
        let union = UnionAuthorizer::new(vec![first.clone(), deny.clone(), allow.clone()]);
        let decision = union.authorize(&get_healthz(UserInfo::new("alice"))).await;
        assert_eq!(decision, Decision::Deny("denied".into()));
        assert_eq!((first.asked(), deny.asked(), allow.asked()), (1, 1, 0));

        let union = UnionAuthorizer::new(vec![first.clone(), allow.clone(), deny.clone()]);
        assert_eq!(
            union.authorize(&get_healthz(UserInfo::new("a"))).await,
            Decision::Allow
        );
    }

    #[tokio::test]
    async fn union_joins_no_opinion_reasons() {
        let union = UnionAuthorizer::new(vec![
            Fixed::new(Decision::NoOpinion("one".into())),
            Fixed::new(Decision::NoOpinion(String::new())),
            Fixed::new(Decision::NoOpinion("two".into())),
        ]);
        let decision = union.authorize(&get_healthz(UserInfo::new("a"))).await;
        assert_eq!(decision, Decision::NoOpinion("one\ntwo".into()));
        assert_eq!(
            UnionAuthorizer::default()
                .authorize(&get_healthz(UserInfo::new("a")))
                .await,
            Decision::NoOpinion(String::new())
        );
    }

    #[tokio::test]
    async fn system_masters_is_allowed_everything_and_others_pass_through() {
        let masters = PrivilegedGroups::system_masters();
        let root = UserInfo::new("root").with_groups(["system:masters"]);
        let attrs = Attributes::resource(root, "delete", "edgefleet.io", "environments");
        assert_eq!(masters.authorize(&attrs).await, Decision::Allow);
        let alice = get_healthz(UserInfo::new("alice").with_groups(["system:authenticated"]));
        assert_eq!(
            masters.authorize(&alice).await,
            Decision::NoOpinion(String::new())
        );
    }

    #[tokio::test]
    async fn always_allowed_paths_match_exactly_or_by_trailing_star() {
        let allowed =
            AlwaysAllowPaths::new(["/healthz", "/readyz", "livez", "/metrics/*"]).unwrap();
        let anonymous = UserInfo::anonymous();
        for path in [
            "/healthz",
            "/readyz",
            "/livez",
            "/metrics/",
            "/metrics/cadvisor",
        ] {
            let get = Attributes::non_resource(anonymous.clone(), "get", path);
            assert_eq!(allowed.authorize(&get).await, Decision::Allow, "{path}");
        }
        for path in ["/healthz/etcd", "/metrics", "/apis", "/"] {
            let get = Attributes::non_resource(anonymous.clone(), "get", path);
            assert!(!allowed.authorize(&get).await.is_allow(), "{path}");
        }
        // A resource whose name looks like a path is not a path.
        let resource = Attributes::resource(anonymous, "get", "", "healthz");
        assert!(!allowed.authorize(&resource).await.is_allow());

        assert!(AlwaysAllowPaths::new(["/a*b"]).is_err());
        assert!(AlwaysAllowPaths::new(Vec::<String>::new())
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn always_allow_and_always_deny() {
        let a = get_healthz(UserInfo::new("a"));
        assert!(AlwaysAllow.authorize(&a).await.is_allow());
        assert_eq!(
            AlwaysDeny.authorize(&a).await.reason(),
            "Everything is forbidden."
        );
    }
}
