//! The checks kube's API validation makes on RBAC objects, so that a policy file with a typo is
//! refused at load time instead of silently granting nothing (or too much).
//!
//! kube's v1 defaulting runs first: an empty `roleRef.apiGroup`, and an empty `apiGroup` of a
//! User or Group subject, mean `rbac.authorization.k8s.io`.

use k8s_openapi::api::rbac::v1::{AggregationRule, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::RBAC_GROUP;

/// One object of a policy is invalid; `problems` are field errors in kube's style.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object} is invalid: {}", problems.join("; "))]
pub struct InvalidObject {
    /// `ClusterRole "name"`, `RoleBinding "namespace/name"`.
    pub object: String,
    pub problems: Vec<String>,
}

/// Collects field errors for one object.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, field: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{field}: {message}"));
    }

    pub(super) fn into_result(self, object: String) -> Result<(), InvalidObject> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidObject {
                object,
                problems: self.0,
            })
        }
    }

    pub(super) fn metadata(&mut self, metadata: &ObjectMeta, namespaced: bool) {
        if metadata.name.as_deref().unwrap_or_default().is_empty() {
            self.add("metadata.name", "Required value: name is required");
        }
        if namespaced && metadata.namespace.as_deref().unwrap_or_default().is_empty() {
            self.add(
                "metadata.namespace",
                "Required value: namespaced objects need a namespace",
            );
        }
    }

    /// kube's `ValidatePolicyRule`.
    pub(super) fn rules(&mut self, rules: &[PolicyRule], namespaced: bool) {
        for (i, rule) in rules.iter().enumerate() {
            let field = |name: &str| format!("rules[{i}].{name}");
            let empty = |list: &Option<Vec<String>>| list.as_ref().is_none_or(Vec::is_empty);
            if rule.verbs.is_empty() {
                self.add(
                    field("verbs"),
                    "Required value: verbs must contain at least one value",
                );
            }
            if !empty(&rule.non_resource_urls) {
                if namespaced {
                    self.add(
                        field("nonResourceURLs"),
                        "Invalid value: namespaced rules cannot apply to non-resource URLs",
                    );
                }
                if !empty(&rule.api_groups)
                    || !empty(&rule.resources)
                    || !empty(&rule.resource_names)
                {
                    self.add(
                        field("nonResourceURLs"),
                        "Invalid value: rules cannot apply to both regular resources and \
                         non-resource URLs",
                    );
                }
                continue;
            }
            if empty(&rule.api_groups) {
                self.add(
                    field("apiGroups"),
                    "Required value: resource rules must supply at least one api group",
                );
            }
            if empty(&rule.resources) {
                self.add(
                    field("resources"),
                    "Required value: resource rules must supply at least one resource",
                );
            }
        }
    }

    pub(super) fn aggregation_rule(&mut self, rule: &AggregationRule) {
        for (i, selector) in rule.cluster_role_selectors.iter().flatten().enumerate() {
            for (j, requirement) in selector.match_expressions.iter().flatten().enumerate() {
                let field =
                    format!("aggregationRule.clusterRoleSelectors[{i}].matchExpressions[{j}]");
                let values = requirement.values.as_deref().unwrap_or_default();
                match requirement.operator.as_str() {
                    "In" | "NotIn" if values.is_empty() => self.add(
                        format!("{field}.values"),
                        "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    ),
                    "Exists" | "DoesNotExist" if !values.is_empty() => self.add(
                        format!("{field}.values"),
                        "Forbidden: may not be specified when `operator` is 'Exists' or \
                         'DoesNotExist'",
                    ),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                    other => self.add(
                        format!("{field}.operator"),
                        format!(
                            "Unsupported value: {other:?}: supported values: \"DoesNotExist\", \
                             \"Exists\", \"In\", \"NotIn\""
                        ),
                    ),
                }
            }
        }
    }

    /// `cluster`: the role reference of a ClusterRoleBinding, which can only name a ClusterRole.
    pub(super) fn role_ref(&mut self, role_ref: &RoleRef, cluster: bool) {
        if !role_ref.api_group.is_empty() && role_ref.api_group != RBAC_GROUP {
            self.add(
                "roleRef.apiGroup",
                format!(
                    "Unsupported value: {:?}: supported values: {RBAC_GROUP:?}",
                    role_ref.api_group
                ),
            );
        }
        match role_ref.kind.as_str() {
            "ClusterRole" => {}
            "Role" if !cluster => {}
            other => self.add(
                "roleRef.kind",
                if cluster {
                    format!("Unsupported value: {other:?}: supported values: \"ClusterRole\"")
                } else {
                    format!(
                        "Unsupported value: {other:?}: supported values: \"Role\", \"ClusterRole\""
                    )
                },
            ),
        }
        if role_ref.name.is_empty() {
            self.add("roleRef.name", "Required value");
        }
    }

    /// `namespaced`: the subjects of a RoleBinding, where a ServiceAccount may omit its namespace.
    pub(super) fn subjects(&mut self, subjects: &[Subject], namespaced: bool) {
        for (i, subject) in subjects.iter().enumerate() {
            let field = |name: &str| format!("subjects[{i}].{name}");
            let api_group = subject.api_group.as_deref().unwrap_or_default();
            if subject.name.is_empty() {
                self.add(field("name"), "Required value");
            }
            match subject.kind.as_str() {
                "ServiceAccount" => {
                    if !api_group.is_empty() {
                        self.add(
                            field("apiGroup"),
                            format!("Unsupported value: {api_group:?}: supported values: \"\""),
                        );
                    }
                    if !namespaced && subject.namespace.as_deref().unwrap_or_default().is_empty() {
                        self.add(field("namespace"), "Required value");
                    }
                }
                "User" | "Group" => {
                    if !api_group.is_empty() && api_group != RBAC_GROUP {
                        self.add(
                            field("apiGroup"),
                            format!(
                                "Unsupported value: {api_group:?}: supported values: \
                                 {RBAC_GROUP:?}"
                            ),
                        );
                    }
                }
                other => self.add(
                    field("kind"),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"ServiceAccount\", \
                         \"User\", \"Group\""
                    ),
                ),
            }
        }
    }
}
