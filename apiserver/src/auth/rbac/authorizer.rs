//! The RBAC authorizer: kube's `RBACAuthorizer` over an in-memory [`Policy`].
//!
//! For a request by user U in namespace N:
//!
//! ```text
//!  every ClusterRoleBinding with a subject matching U ──► its ClusterRole's rules
//!  if N is set: every RoleBinding in N matching U ──► its Role (in N) or ClusterRole's rules
//!  the first rule that covers the request allows it; otherwise NoOpinion
//! ```
//!
//! A subject matches as a User (name), a Group (one of U's groups) or a ServiceAccount (U is
//! `system:serviceaccount:<ns>:<name>`, `<ns>` defaulting to the binding's namespace). A
//! ClusterRole reached through a RoleBinding grants only inside that namespace, and its
//! `nonResourceURLs` never apply there (non-resource requests have no namespace). RBAC only ever
//! allows: when nothing matches the answer is NoOpinion, so that a later authorizer may still
//! allow; the reason is empty (kube's Forbidden message then has no suffix) unless a matching
//! binding points at a missing role, which kube reports as
//! `RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};

use super::aggregation::aggregate;
use super::rule::rule_allows;
use super::Policy;
use crate::auth::forbidden::go_quote;
use crate::auth::user::is_service_account;
use crate::auth::{Attributes, Authorizer, Decision, UserInfo};

/// A policy with its ClusterRoles aggregated, ready to answer requests.
#[derive(Debug)]
struct Resolved {
    policy: Policy,
    /// Effective rules of every ClusterRole, after aggregation.
    cluster_role_rules: BTreeMap<String, Vec<PolicyRule>>,
}

impl Resolved {
    fn new(policy: Policy) -> Self {
        Resolved {
            cluster_role_rules: aggregate(&policy.cluster_roles),
            policy,
        }
    }

    /// kube's `GetRoleReferenceRules`; the error text is kube's NotFound message.
    fn role_ref_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .policy
                .role(namespace, &role_ref.name)
                .map(|role| role.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {} not found",
                        go_quote(&role_ref.name)
                    )
                }),
            "ClusterRole" => self
                .cluster_role_rules
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {} not found",
                        go_quote(&role_ref.name)
                    )
                }),
            other => Err(format!(
                "unsupported role reference kind: {}",
                go_quote(other)
            )),
        }
    }

    /// `Ok(reason)` when allowed (kube's `RBAC: allowed by …`), `Err(reason)` otherwise.
    fn evaluate(&self, a: &Attributes) -> Result<String, String> {
        let mut errors = Vec::new();

        for (name, binding) in &self.policy.cluster_role_bindings {
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            let Some(subject) = applies_to(&a.user, subjects, "") else {
                continue;
            };
            match self.role_ref_rules(&binding.role_ref, "") {
                Err(e) => errors.push(e),
                Ok(rules) if rules.iter().any(|r| rule_allows(a, r)) => {
                    return Ok(format!(
                        "RBAC: allowed by ClusterRoleBinding {} of {} {} to {}",
                        go_quote(name),
                        binding.role_ref.kind,
                        go_quote(&binding.role_ref.name),
                        describe_subject(subject, ""),
                    ));
                }
                Ok(_) => {}
            }
        }

        if !a.namespace.is_empty() {
            let in_namespace = self
                .policy
                .role_bindings
                .range((a.namespace.clone(), String::new())..)
                .take_while(|((namespace, _), _)| *namespace == a.namespace);
            for ((namespace, name), binding) in in_namespace {
                let subjects = binding.subjects.as_deref().unwrap_or_default();
                let Some(subject) = applies_to(&a.user, subjects, namespace) else {
                    continue;
                };
                match self.role_ref_rules(&binding.role_ref, namespace) {
                    Err(e) => errors.push(e),
                    Ok(rules) if rules.iter().any(|r| rule_allows(a, r)) => {
                        // kube writes `name/namespace` here.
                        return Ok(format!(
                            "RBAC: allowed by RoleBinding {} of {} {} to {}",
                            go_quote(&format!("{name}/{namespace}")),
                            binding.role_ref.kind,
                            go_quote(&binding.role_ref.name),
                            describe_subject(subject, namespace),
                        ));
                    }
                    Ok(_) => {}
                }
            }
        }

        Err(match errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        })
    }
}

/// kube's `appliesTo`: the first subject that names the user.
fn applies_to<'a>(
    user: &UserInfo,
    subjects: &'a [Subject],
    namespace: &str,
) -> Option<&'a Subject> {
    subjects.iter().find(|subject| match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let sa_namespace = match subject.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => ns,
                _ => namespace,
            };
            !sa_namespace.is_empty() && is_service_account(&user.name, sa_namespace, &subject.name)
        }
        _ => false,
    })
}

fn describe_subject(subject: &Subject, binding_namespace: &str) -> String {
    if subject.kind == "ServiceAccount" {
        let namespace = match subject.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => binding_namespace,
        };
        format!(
            "{} {}",
            subject.kind,
            go_quote(&format!("{}/{namespace}", subject.name))
        )
    } else {
        format!("{} {}", subject.kind, go_quote(&subject.name))
    }
}

/// Kubernetes RBAC over an in-memory policy. The policy can be swapped at run time (a reloaded
/// file, later a watch on the management cluster's RBAC objects) without blocking readers for
/// longer than an `Arc` clone.
#[derive(Debug)]
pub struct RbacAuthorizer {
    resolved: RwLock<Arc<Resolved>>,
}

impl RbacAuthorizer {
    pub fn new(policy: Policy) -> Self {
        RbacAuthorizer {
            resolved: RwLock::new(Arc::new(Resolved::new(policy))),
        }
    }

    /// Replaces the policy; requests already being evaluated finish with the old one.
    pub fn replace(&self, policy: Policy) {
        let resolved = Arc::new(Resolved::new(policy));
        *self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner) = resolved;
    }

    fn current(&self) -> Arc<Resolved> {
        self.resolved
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The effective rules of a ClusterRole after aggregation.
    pub fn cluster_role_rules(&self, name: &str) -> Option<Vec<PolicyRule>> {
        self.current().cluster_role_rules.get(name).cloned()
    }

    /// The decision with kube's reason text, including the reason of an Allow
    /// (`RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "alice"`), which kube
    /// records in the audit annotation `authorization.k8s.io/reason` and [`Decision::Allow`] does
    /// not carry.
    pub fn authorize_with_reason(&self, a: &Attributes) -> (Decision, String) {
        match self.current().evaluate(a) {
            Ok(reason) => (Decision::Allow, reason),
            Err(reason) => {
                // The user stays out: it may come from an Impersonate-User header.
                tracing::debug!(
                    verb = %a.verb,
                    namespace = %a.namespace,
                    api_group = %a.api_group,
                    resource = %a.resource,
                    subresource = %a.subresource,
                    path = %a.path,
                    %reason,
                    "RBAC: no rule allows the request"
                );
                (Decision::NoOpinion(reason.clone()), reason)
            }
        }
    }
}

#[async_trait]
impl Authorizer for RbacAuthorizer {
    async fn authorize(&self, a: &Attributes) -> Decision {
        self.authorize_with_reason(a).0
    }
}
