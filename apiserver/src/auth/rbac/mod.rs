//! Kubernetes RBAC, evaluated in process over Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding (`k8s_openapi::api::rbac::v1`), with kube's semantics.
//!
//! ```text
//!  policy file (YAML) ─┐
//!  bootstrap roles ────┼─► Policy (validated objects) ─► RbacAuthorizer (ClusterRoles aggregated)
//!  edgefleet roles ────┘                                   └─ authorize(Attributes) → Decision
//! ```
//!
//! - [`rule`]: whether one rule covers a request (verbs, groups, resources and subresources,
//!   resource names, non-resource URLs).
//! - [`policy`] / [`file`]: the object set and its YAML loader (`--authorization-rbac-file`).
//! - [`aggregation`]: ClusterRole `aggregationRule`, resolved at load time.
//! - [`authorizer`]: bindings → roles → rules for a user and namespace.
//! - [`bootstrap`] / [`defaults`]: kube's default roles we need, and the edgefleet roles we ship.
//!
//! `system:masters` is not RBAC's business: kube allows it before RBAC runs, and so does
//! [`PrivilegedGroups`](crate::auth::PrivilegedGroups) in [`standalone_authorizer`].

use std::sync::Arc;

use crate::auth::{PrivilegedGroups, UnionAuthorizer};

mod aggregation;
mod authorizer;
pub mod bootstrap;
mod defaults;
mod file;
mod policy;
mod rule;
mod validation;

pub use authorizer::RbacAuthorizer;
pub use defaults::{
    default_cluster_roles, default_cluster_roles_yaml, EDGEFLEET_ADMIN, EDGEFLEET_OPERATOR,
    EDGEFLEET_VIEWER,
};
pub use file::{parse_policy_yaml, DocumentProblem, PolicyError};
pub use policy::{Policy, RbacObject};
pub use rule::{rule, rule_allows, RuleBuilder};
pub use validation::InvalidObject;

/// The API group of the RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// kube's aggregation labels: a ClusterRole carrying one (value `"true"`) adds its rules to the
/// `admin`, `edit` or `view` ClusterRole.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The standalone hub's authorizer chain, as kube-apiserver orders it: `system:masters` first,
/// then RBAC over `policy`.
pub fn standalone_authorizer(policy: Policy) -> (UnionAuthorizer, Arc<RbacAuthorizer>) {
    let rbac = Arc::new(RbacAuthorizer::new(policy));
    let union = UnionAuthorizer::new(vec![
        Arc::new(PrivilegedGroups::system_masters()),
        rbac.clone(),
    ]);
    (union, rbac)
}

#[cfg(test)]
mod tests;
