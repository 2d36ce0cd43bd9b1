//! The part of kube's bootstrap RBAC policy that matters to a server serving only our group.
//!
//! - `cluster-admin`: everything; bound to `system:masters`.
//! - `system:discovery`: GET `/api`, `/api/*`, `/apis`, `/apis/*`, `/openapi`, `/openapi/*`,
//!   `/version`, `/version/` and the health endpoints; bound to `system:authenticated`.
//! - `system:basic-user`: create SelfSubjectAccessReviews, SelfSubjectRulesReviews and
//!   SelfSubjectReviews; bound to `system:authenticated`.
//! - `system:public-info-viewer`: GET `/healthz`, `/livez`, `/readyz`, `/version`, `/version/`;
//!   bound to `system:authenticated` and `system:unauthenticated`.
//! - `admin`, `edit`, `view`: aggregated from the `aggregate-to-admin/edit/view` labels (`view`
//!   feeds `edit`, `edit` feeds `admin`); not bound.
//!
//! Since kube 1.14, unauthenticated users no longer get discovery; we follow that. `admin`,
//! `edit` and `view` exist so that a RoleBinding to them picks up the edgefleet roles through
//! their aggregation labels, exactly as on a real cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    rule, RbacObject, AGGREGATE_TO_ADMIN, AGGREGATE_TO_EDIT, AGGREGATE_TO_VIEW, RBAC_GROUP,
};
use crate::auth::{ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, SYSTEM_PRIVILEGED_GROUP};

const BOOTSTRAPPING_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
const AUTOUPDATE_ANNOTATION: (&str, &str) = ("rbac.authorization.kubernetes.io/autoupdate", "true");

fn metadata(name: &str, extra_labels: &[(&str, &str)]) -> ObjectMeta {
    let labels = std::iter::once(BOOTSTRAPPING_LABEL)
        .chain(extra_labels.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            AUTOUPDATE_ANNOTATION.0.to_string(),
            AUTOUPDATE_ANNOTATION.1.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, &[]),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// A ClusterRole whose rules are those of the ClusterRoles labelled `aggregate_from: "true"`.
fn aggregated_role(name: &str, labels: &[(&str, &str)], aggregate_from: &str) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    aggregate_from.to_string(),
                    "true".to_string(),
                )])),
                ..LabelSelector::default()
            }]),
        }),
    }
}

fn binding_to_groups(name: &str, groups: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(name, &[]),
        role_ref: RoleRef {
            api_group: RBAC_GROUP.to_string(),
            kind: "ClusterRole".to_string(),
            name: name.to_string(),
        },
        subjects: Some(
            groups
                .iter()
                .map(|group| Subject {
                    api_group: Some(RBAC_GROUP.to_string()),
                    kind: "Group".to_string(),
                    name: group.to_string(),
                    namespace: None,
                })
                .collect(),
        ),
    }
}

/// The bootstrap ClusterRoles and ClusterRoleBindings.
pub fn objects() -> Vec<RbacObject> {
    let roles = [
        cluster_role(
            "cluster-admin",
            vec![
                rule(["*"]).groups(["*"]).resources(["*"]).build(),
                rule(["*"]).urls(["*"]).build(),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![rule(["get"])
                .urls([
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ])
                .build()],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(["create"])
                    .groups(["authorization.k8s.io"])
                    .resources(["selfsubjectaccessreviews", "selfsubjectrulesreviews"])
                    .build(),
                rule(["create"])
                    .groups(["authentication.k8s.io"])
                    .resources(["selfsubjectreviews"])
                    .build(),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![rule(["get"])
                .urls(["/livez", "/readyz", "/healthz", "/version", "/version/"])
                .build()],
        ),
        aggregated_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
    ];
    let bindings = [
        binding_to_groups("cluster-admin", &[SYSTEM_PRIVILEGED_GROUP]),
        binding_to_groups("system:discovery", &[ALL_AUTHENTICATED]),
        binding_to_groups("system:basic-user", &[ALL_AUTHENTICATED]),
        binding_to_groups(
            "system:public-info-viewer",
            &[ALL_AUTHENTICATED, ALL_UNAUTHENTICATED],
        ),
    ];
    roles
        .into_iter()
        .map(RbacObject::from)
        .chain(bindings.into_iter().map(RbacObject::from))
        .collect()
}
