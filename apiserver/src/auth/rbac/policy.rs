//! The set of RBAC objects an [`RbacAuthorizer`](super::RbacAuthorizer) evaluates.
//!
//! Objects are keyed as the API server keys them: Roles and RoleBindings by namespace and name,
//! ClusterRoles and ClusterRoleBindings by name. Inserting an object validates it and replaces any
//! object of the same kind and key, so a policy file can override a built-in role.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use super::validation::{InvalidObject, Problems};

/// One of the four RBAC kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum RbacObject {
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
}

impl RbacObject {
    pub fn kind(&self) -> &'static str {
        match self {
            RbacObject::Role(_) => "Role",
            RbacObject::ClusterRole(_) => "ClusterRole",
            RbacObject::RoleBinding(_) => "RoleBinding",
            RbacObject::ClusterRoleBinding(_) => "ClusterRoleBinding",
        }
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            RbacObject::Role(o) => &o.metadata,
            RbacObject::ClusterRole(o) => &o.metadata,
            RbacObject::RoleBinding(o) => &o.metadata,
            RbacObject::ClusterRoleBinding(o) => &o.metadata,
        }
    }

    fn is_namespaced(&self) -> bool {
        matches!(self, RbacObject::Role(_) | RbacObject::RoleBinding(_))
    }

    /// `(namespace, name)`, the namespace empty for cluster-scoped kinds (kube drops a namespace
    /// set on them).
    pub fn key(&self) -> (String, String) {
        let metadata = self.metadata();
        let namespace = if self.is_namespaced() {
            metadata.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        (namespace, metadata.name.clone().unwrap_or_default())
    }

    /// `ClusterRole "name"` or `RoleBinding "namespace/name"`, for messages.
    pub fn describe(&self) -> String {
        let (namespace, name) = self.key();
        if namespace.is_empty() {
            format!("{} {name:?}", self.kind())
        } else {
            format!("{} \"{namespace}/{name}\"", self.kind())
        }
    }

    /// kube's API validation for the kind (see [`super::validation`]).
    pub fn validate(&self) -> Result<(), InvalidObject> {
        let mut problems = Problems::default();
        problems.metadata(self.metadata(), self.is_namespaced());
        match self {
            RbacObject::Role(role) => {
                problems.rules(role.rules.as_deref().unwrap_or_default(), true);
            }
            RbacObject::ClusterRole(role) => {
                problems.rules(role.rules.as_deref().unwrap_or_default(), false);
                if let Some(aggregation) = &role.aggregation_rule {
                    problems.aggregation_rule(aggregation);
                }
            }
            RbacObject::RoleBinding(binding) => {
                problems.role_ref(&binding.role_ref, false);
                problems.subjects(binding.subjects.as_deref().unwrap_or_default(), true);
            }
            RbacObject::ClusterRoleBinding(binding) => {
                problems.role_ref(&binding.role_ref, true);
                problems.subjects(binding.subjects.as_deref().unwrap_or_default(), false);
            }
        }
        problems.into_result(self.describe())
    }
}

impl From<Role> for RbacObject {
    fn from(o: Role) -> Self {
        RbacObject::Role(o)
    }
}
impl From<ClusterRole> for RbacObject {
    fn from(o: ClusterRole) -> Self {
        RbacObject::ClusterRole(o)
    }
}
impl From<RoleBinding> for RbacObject {
    fn from(o: RoleBinding) -> Self {
        RbacObject::RoleBinding(o)
    }
}
impl From<ClusterRoleBinding> for RbacObject {
    fn from(o: ClusterRoleBinding) -> Self {
        RbacObject::ClusterRoleBinding(o)
    }
}

/// Roles, ClusterRoles and their bindings, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// By `(namespace, name)`.
    pub(super) roles: BTreeMap<(String, String), Role>,
    pub(super) cluster_roles: BTreeMap<String, ClusterRole>,
    /// By `(namespace, name)`, so one namespace's bindings are one range.
    pub(super) role_bindings: BTreeMap<(String, String), RoleBinding>,
    pub(super) cluster_role_bindings: BTreeMap<String, ClusterRoleBinding>,
}

impl Policy {
    /// No objects at all: nobody but `system:masters` (outside RBAC) may do anything.
    pub fn empty() -> Self {
        Policy::default()
    }

    /// kube's bootstrap policy relevant to this server ([`super::bootstrap`]) and the edgefleet
    /// ClusterRoles ([`super::defaults`]): the base every policy file adds to.
    pub fn with_defaults() -> Self {
        let mut policy = Policy::empty();
        for object in super::bootstrap::objects().into_iter().chain(
            super::default_cluster_roles()
                .into_iter()
                .map(RbacObject::from),
        ) {
            policy
                .insert(object)
                .expect("built-in RBAC objects are valid");
        }
        policy
    }

    /// Validates and adds an object, replacing (and returning) one of the same kind and key.
    pub fn insert(
        &mut self,
        object: impl Into<RbacObject>,
    ) -> Result<Option<RbacObject>, InvalidObject> {
        let object = object.into();
        object.validate()?;
        let (namespace, name) = object.key();
        Ok(match object {
            RbacObject::Role(o) => self
                .roles
                .insert((namespace, name), o)
                .map(RbacObject::from),
            RbacObject::ClusterRole(o) => self.cluster_roles.insert(name, o).map(RbacObject::from),
            RbacObject::RoleBinding(o) => self
                .role_bindings
                .insert((namespace, name), o)
                .map(RbacObject::from),
            RbacObject::ClusterRoleBinding(o) => self
                .cluster_role_bindings
                .insert(name, o)
                .map(RbacObject::from),
        })
    }

    pub fn role(&self, namespace: &str, name: &str) -> Option<&Role> {
        self.roles.get(&(namespace.to_string(), name.to_string()))
    }

    /// As written, before aggregation.
    pub fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles.get(name)
    }

    pub fn role_binding(&self, namespace: &str, name: &str) -> Option<&RoleBinding> {
        self.role_bindings
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn cluster_role_binding(&self, name: &str) -> Option<&ClusterRoleBinding> {
        self.cluster_role_bindings.get(name)
    }

    /// Every object, kind by kind, in key order.
    pub fn objects(&self) -> impl Iterator<Item = RbacObject> + '_ {
        let cluster_roles = self.cluster_roles.values().cloned().map(RbacObject::from);
        let crbs = self
            .cluster_role_bindings
            .values()
            .cloned()
            .map(RbacObject::from);
        let roles = self.roles.values().cloned().map(RbacObject::from);
        let rbs = self.role_bindings.values().cloned().map(RbacObject::from);
        cluster_roles.chain(crbs).chain(roles).chain(rbs)
    }
}
