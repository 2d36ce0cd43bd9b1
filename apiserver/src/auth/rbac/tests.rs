//! Table-driven RBAC cases, after kube's `plugin/pkg/auth/authorizer/rbac` tests, plus policy
//! file loading and the built-in roles.

use std::collections::BTreeMap;
use std::error::Error as _;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;
use crate::auth::{Attributes, Authorizer, Decision, UserInfo};

// ---- fixtures -------------------------------------------------------------------------------

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
        ..ObjectMeta::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> RbacObject {
    ClusterRole {
        metadata: meta("", name),
        rules: Some(rules),
        aggregation_rule: None,
    }
    .into()
}

fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> RbacObject {
    Role {
        metadata: meta(namespace, name),
        rules: Some(rules),
    }
    .into()
}

/// `"User:alice"`, `"Group:admins"`, `"ServiceAccount:ns:name"`, `"ServiceAccount::name"`.
fn subjects(specs: &[&str]) -> Option<Vec<Subject>> {
    Some(
        specs
            .iter()
            .map(|spec| {
                let (kind, rest) = spec.split_once(':').expect("Kind:name");
                let (namespace, name) = match kind {
                    "ServiceAccount" => {
                        let (ns, name) = rest.split_once(':').expect("ServiceAccount:ns:name");
                        ((!ns.is_empty()).then(|| ns.to_string()), name)
                    }
                    _ => (None, rest),
                };
                Subject {
                    api_group: (kind != "ServiceAccount").then(|| RBAC_GROUP.to_string()),
                    kind: kind.to_string(),
                    name: name.to_string(),
                    namespace,
                }
            })
            .collect(),
    )
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

fn cluster_binding(name: &str, cluster_role: &str, to: &[&str]) -> RbacObject {
    ClusterRoleBinding {
        metadata: meta("", name),
        role_ref: role_ref("ClusterRole", cluster_role),
        subjects: subjects(to),
    }
    .into()
}

/// `role` is `"Role:name"` or `"ClusterRole:name"`.
fn binding(namespace: &str, name: &str, role: &str, to: &[&str]) -> RbacObject {
    let (kind, role_name) = role.split_once(':').expect("Kind:name");
    RoleBinding {
        metadata: meta(namespace, name),
        role_ref: role_ref(kind, role_name),
        subjects: subjects(to),
    }
    .into()
}

fn policy(objects: Vec<RbacObject>) -> Policy {
    let mut policy = Policy::empty();
    for object in objects {
        policy.insert(object).expect("valid test object");
    }
    policy
}

/// `"alice"` or `"alice|group1,group2"`.
fn user(spec: &str) -> UserInfo {
    let (name, groups) = spec.split_once('|').unwrap_or((spec, ""));
    UserInfo::new(name).with_groups(groups.split(',').filter(|g| !g.is_empty()))
}

/// kube's `defaultAttributes`: a resource request; `resource` may be `resource/subresource`.
fn res(
    who: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes::resource(user(who), verb, group, resource)
        .with_subresource(subresource)
        .with_namespace(namespace)
        .with_name(name)
}

fn url(who: &str, verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(user(who), verb, path)
}

struct Case {
    name: &'static str,
    policy: Policy,
    allowed: Vec<Attributes>,
    denied: Vec<Attributes>,
}

async fn run(cases: Vec<Case>) {
    for case in cases {
        let authorizer = RbacAuthorizer::new(case.policy);
        for a in &case.allowed {
            let decision = authorizer.authorize(a).await;
            assert_eq!(
                decision,
                Decision::Allow,
                "{}: expected allow for {a:?}",
                case.name
            );
        }
        for a in &case.denied {
            let decision = authorizer.authorize(a).await;
            assert!(
                matches!(decision, Decision::NoOpinion(_)),
                "{}: expected no opinion for {a:?}, got {decision:?}",
                case.name
            );
        }
    }
}

const EF: &str = "edgefleet.io";

// ---- authorization ---------------------------------------------------------------------------

#[tokio::test]
async fn kube_rbac_cases() {
    run(vec![
        Case {
            name: "RoleBinding to a ClusterRole grants only in its namespace",
            policy: policy(vec![
                cluster_role(
                    "admin",
                    vec![rule(["*"]).groups(["*"]).resources(["*"]).build()],
                ),
                binding(
                    "ns1",
                    "admin",
                    "ClusterRole:admin",
                    &["User:admin", "Group:admins"],
                ),
            ]),
            allowed: vec![
                res("admin", "get", "", "pods", "ns1", ""),
                res("admin", "watch", "", "pods", "ns1", ""),
                res("admin|group1", "watch", "", "foobar", "ns1", ""),
                res("joe|admins", "watch", "", "foobar", "ns1", ""),
                res("joe|group1,admins", "watch", "", "foobar", "ns1", ""),
            ],
            denied: vec![
                res("admin", "get", "", "pods", "ns2", ""),
                res("admin", "get", "", "nodes", "", ""),
                res("admin|admins", "get", "", "pods", "ns2", ""),
                res("admin|admins", "get", "", "nodes", "", ""),
                res("joe", "get", "", "pods", "ns1", ""),
            ],
        },
        Case {
            name: "non-resource URLs: exact, verbs, prefix",
            policy: policy(vec![
                cluster_role(
                    "non-resource-url-getter",
                    vec![rule(["get"]).urls(["/apis"]).build()],
                ),
                cluster_role(
                    "non-resource-url",
                    vec![rule(["*"]).urls(["/apis"]).build()],
                ),
                cluster_role(
                    "non-resource-url-prefix",
                    vec![rule(["get"]).urls(["/apis/*"]).build()],
                ),
                cluster_binding(
                    "non-resource-url-getter",
                    "non-resource-url-getter",
                    &["User:foo", "Group:bar"],
                ),
                cluster_binding(
                    "non-resource-url",
                    "non-resource-url",
                    &["User:admin", "Group:admin"],
                ),
                cluster_binding(
                    "non-resource-url-prefix",
                    "non-resource-url-prefix",
                    &["User:prefixed", "Group:prefixed"],
                ),
            ]),
            allowed: vec![
                url("foo", "get", "/apis"),
                url("|bar", "get", "/apis"),
                url("admin", "get", "/apis"),
                url("admin", "watch", "/apis"),
                url("|admin", "get", "/apis"),
                url("|admin", "watch", "/apis"),
                url("prefixed", "get", "/apis/v1"),
                url("|prefixed", "get", "/apis/v1"),
                url("prefixed", "get", "/apis/v1/foobar"),
            ],
            denied: vec![
                url("foo", "watch", "/apis"),
                url("|bar", "watch", "/apis"),
                url("foo", "get", "/api"),
                url("|bar", "get", "/api"),
                url("admin", "get", "/api"),
                url("|admin", "get", "/api"),
                url("prefixed", "get", "/api/v1"),
                url("|prefixed", "get", "/api/v1"),
            ],
        },
        Case {
            name: "a resource does not cover its subresources",
            policy: policy(vec![
                cluster_role(
                    "admin",
                    vec![rule(["*"]).groups(["*"]).resources(["pods"]).build()],
                ),
                binding("ns1", "admin", "ClusterRole:admin", &["User:admin"]),
            ]),
            allowed: vec![res("admin", "get", "", "pods", "ns1", "")],
            denied: vec![res("admin", "get", "", "pods/status", "ns1", "")],
        },
        Case {
            name: "resource/subresource and */subresource",
            policy: policy(vec![
                cluster_role(
                    "admin",
                    vec![
                        rule(["*"]).groups(["*"]).resources(["pods/status"]).build(),
                        rule(["*"]).groups(["*"]).resources(["*/scale"]).build(),
                    ],
                ),
                binding("ns1", "admin", "ClusterRole:admin", &["User:admin"]),
            ]),
            allowed: vec![
                res("admin", "get", "", "pods/status", "ns1", ""),
                res("admin", "get", "", "pods/scale", "ns1", ""),
                res("admin", "get", "", "deployments/scale", "ns1", ""),
                res("admin", "get", "", "anything/scale", "ns1", ""),
            ],
            denied: vec![
                res("admin", "get", "", "pods", "ns1", ""),
                res("admin", "get", "", "deployments", "ns1", ""),
                res("admin", "get", "", "pods/proxy", "ns1", ""),
            ],
        },
    ])
    .await;
}

#[tokio::test]
async fn edgefleet_cases() {
    run(vec![
        Case {
            name: "resourceNames match only requests with that name",
            policy: policy(vec![
                role(
                    "retail",
                    "edge-1-only",
                    vec![rule(["*"])
                        .groups([EF])
                        .resources(["clusters", "clusters/proxy"])
                        .names(["edge-1"])
                        .build()],
                ),
                binding("retail", "edge-1-only", "Role:edge-1-only", &["User:alice"]),
            ]),
            allowed: vec![
                res("alice", "get", EF, "clusters", "retail", "edge-1"),
                res("alice", "update", EF, "clusters", "retail", "edge-1"),
                res("alice", "delete", EF, "clusters", "retail", "edge-1"),
                res("alice", "get", EF, "clusters/proxy", "retail", "edge-1"),
            ],
            denied: vec![
                res("alice", "get", EF, "clusters", "retail", "edge-2"),
                res("alice", "list", EF, "clusters", "retail", ""),
                res("alice", "watch", EF, "clusters", "retail", ""),
                res("alice", "create", EF, "clusters", "retail", ""),
                res("alice", "deletecollection", EF, "clusters", "retail", ""),
                res("alice", "get", EF, "clusters/status", "retail", "edge-1"),
            ],
        },
        Case {
            name:
                "a Role grants only in its own namespace; a same-named Role elsewhere is not used",
            policy: policy(vec![
                role(
                    "retail",
                    "reader",
                    vec![rule(["get", "list"])
                        .groups([EF])
                        .resources(["clusters"])
                        .build()],
                ),
                role(
                    "factory",
                    "reader",
                    vec![rule(["*"]).groups(["*"]).resources(["*"]).build()],
                ),
                binding("retail", "reader", "Role:reader", &["Group:retail-team"]),
            ]),
            allowed: vec![
                res("bob|retail-team", "list", EF, "clusters", "retail", ""),
                res("bob|retail-team", "get", EF, "clusters", "retail", "edge-1"),
            ],
            denied: vec![
                res(
                    "bob|retail-team",
                    "delete",
                    EF,
                    "clusters",
                    "retail",
                    "edge-1",
                ),
                res("bob|retail-team", "list", EF, "clusters", "factory", ""),
                res("bob|retail-team", "list", EF, "clusters", "", ""),
                res("bob", "list", EF, "clusters", "retail", ""),
            ],
        },
        Case {
            name: "a ClusterRoleBinding grants in every namespace and at cluster scope",
            policy: policy(vec![
                cluster_role(
                    "viewer",
                    vec![rule(["get", "list", "watch"])
                        .groups([EF])
                        .resources(["*"])
                        .build()],
                ),
                cluster_binding("viewers", "viewer", &["Group:auditors"]),
            ]),
            allowed: vec![
                res("carol|auditors", "list", EF, "clusters", "retail", ""),
                res("carol|auditors", "watch", EF, "clusters", "", ""),
                res("carol|auditors", "get", EF, "environments", "", "retail"),
                res(
                    "carol|auditors",
                    "get",
                    EF,
                    "clusters/proxy",
                    "retail",
                    "edge-1",
                ),
            ],
            denied: vec![
                res("carol|auditors", "create", EF, "clusters", "retail", ""),
                res("carol|auditors", "get", "", "secrets", "retail", "x"),
                url("carol|auditors", "get", "/apis"),
            ],
        },
        Case {
            name: "wildcard verbs and groups",
            policy: policy(vec![
                cluster_role(
                    "all-verbs",
                    vec![rule(["*"]).groups([EF]).resources(["fleets"]).build()],
                ),
                cluster_role(
                    "all-groups",
                    vec![rule(["get"])
                        .groups(["*"])
                        .resources(["placements"])
                        .build()],
                ),
                cluster_binding("all-verbs", "all-verbs", &["User:dave"]),
                cluster_binding("all-groups", "all-groups", &["User:dave"]),
            ]),
            allowed: vec![
                res("dave", "deletecollection", EF, "fleets", "retail", ""),
                res("dave", "patch", EF, "fleets", "retail", "f"),
                res("dave", "get", "other.io", "placements", "x", "p"),
            ],
            denied: vec![
                res("dave", "get", "other.io", "fleets", "x", "f"),
                res("dave", "list", EF, "placements", "x", ""),
            ],
        },
        Case {
            name: "non-resource URLs are never granted through a RoleBinding",
            policy: policy(vec![
                cluster_role("urls", vec![rule(["get"]).urls(["*"]).build()]),
                binding("retail", "urls", "ClusterRole:urls", &["User:erin"]),
            ]),
            allowed: vec![],
            denied: vec![url("erin", "get", "/healthz"), url("erin", "get", "/apis")],
        },
        Case {
            name: "service accounts",
            policy: policy(vec![
                cluster_role(
                    "reader",
                    vec![rule(["get"]).groups([EF]).resources(["clusters"]).build()],
                ),
                // No namespace: the binding's own.
                binding(
                    "retail",
                    "local-sa",
                    "ClusterRole:reader",
                    &["ServiceAccount::deployer"],
                ),
                // An SA of another namespace, explicitly.
                binding(
                    "factory",
                    "foreign-sa",
                    "ClusterRole:reader",
                    &["ServiceAccount:ci:builder"],
                ),
                cluster_binding(
                    "everywhere",
                    "reader",
                    &["ServiceAccount:kube-system:argocd"],
                ),
                binding(
                    "lab",
                    "all-sas",
                    "ClusterRole:reader",
                    &["Group:system:serviceaccounts:lab"],
                ),
            ]),
            allowed: vec![
                res(
                    "system:serviceaccount:retail:deployer",
                    "get",
                    EF,
                    "clusters",
                    "retail",
                    "e",
                ),
                res(
                    "system:serviceaccount:ci:builder",
                    "get",
                    EF,
                    "clusters",
                    "factory",
                    "e",
                ),
                res(
                    "system:serviceaccount:kube-system:argocd",
                    "get",
                    EF,
                    "clusters",
                    "anywhere",
                    "e",
                ),
                res(
                    "system:serviceaccount:lab:x|system:serviceaccounts,system:serviceaccounts:lab",
                    "get",
                    EF,
                    "clusters",
                    "lab",
                    "e",
                ),
            ],
            denied: vec![
                res(
                    "system:serviceaccount:factory:deployer",
                    "get",
                    EF,
                    "clusters",
                    "retail",
                    "e",
                ),
                res(
                    "system:serviceaccount:retail:deployer",
                    "get",
                    EF,
                    "clusters",
                    "factory",
                    "e",
                ),
                res(
                    "system:serviceaccount:factory:builder",
                    "get",
                    EF,
                    "clusters",
                    "factory",
                    "e",
                ),
                res("deployer", "get", EF, "clusters", "retail", "e"),
                res(
                    "system:serviceaccount:retail:deployer2",
                    "get",
                    EF,
                    "clusters",
                    "retail",
                    "e",
                ),
            ],
        },
        Case {
            name: "aggregated ClusterRoles gather labelled rules",
            policy: policy(vec![
                ClusterRole {
                    metadata: meta("", "monitoring"),
                    rules: Some(vec![rule(["*"]).groups(["*"]).resources(["*"]).build()]),
                    aggregation_rule: Some(AggregationRule {
                        cluster_role_selectors: Some(vec![LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                "aggregate-to-monitoring".into(),
                                "true".into(),
                            )])),
                            ..LabelSelector::default()
                        }]),
                    }),
                }
                .into(),
                RbacObject::ClusterRole(ClusterRole {
                    metadata: ObjectMeta {
                        labels: Some(BTreeMap::from([(
                            "aggregate-to-monitoring".into(),
                            "true".into(),
                        )])),
                        ..meta("", "fleet-status")
                    },
                    rules: Some(vec![rule(["get"])
                        .groups([EF])
                        .resources(["fleets/status"])
                        .build()]),
                    aggregation_rule: None,
                }),
                cluster_binding("monitoring", "monitoring", &["User:grafana"]),
            ]),
            allowed: vec![res("grafana", "get", EF, "fleets/status", "retail", "f")],
            // The aggregated role's own rules are replaced by the aggregate.
            denied: vec![res("grafana", "get", EF, "fleets", "retail", "f")],
        },
    ])
    .await;
}

#[tokio::test]
async fn reasons_follow_kube() {
    let authorizer = RbacAuthorizer::new(policy(vec![
        cluster_role(
            "reader",
            vec![rule(["get"]).groups([EF]).resources(["clusters"]).build()],
        ),
        cluster_binding("readers", "reader", &["User:alice"]),
        cluster_binding("dangling", "does-not-exist", &["Group:team"]),
        binding("retail", "local", "Role:missing", &["Group:team"]),
        binding(
            "retail",
            "sa",
            "ClusterRole:reader",
            &["ServiceAccount::deployer"],
        ),
    ]));

    let (decision, reason) =
        authorizer.authorize_with_reason(&res("alice", "get", EF, "clusters", "x", "e"));
    assert_eq!(decision, Decision::Allow);
    assert_eq!(
        reason,
        r#"RBAC: allowed by ClusterRoleBinding "readers" of ClusterRole "reader" to User "alice""#
    );
    let (_, reason) = authorizer.authorize_with_reason(&res(
        "system:serviceaccount:retail:deployer",
        "get",
        EF,
        "clusters",
        "retail",
        "e",
    ));
    assert_eq!(
        reason,
        r#"RBAC: allowed by RoleBinding "sa/retail" of ClusterRole "reader" to ServiceAccount "deployer/retail""#
    );

    // Nothing matched: no reason, so the Forbidden message is exactly kube's.
    let denied = res("alice", "delete", EF, "clusters", "retail", "e");
    assert_eq!(
        authorizer.authorize(&denied).await,
        Decision::NoOpinion(String::new())
    );

    // A binding that applies but points nowhere is reported.
    let decision = authorizer
        .authorize(&res("bob|team", "get", EF, "clusters", "", "e"))
        .await;
    assert_eq!(
        decision,
        Decision::NoOpinion(
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "does-not-exist" not found"#.into()
        )
    );
    let decision = authorizer
        .authorize(&res("bob|team", "get", EF, "clusters", "retail", "e"))
        .await;
    assert_eq!(
        decision,
        Decision::NoOpinion(
            r#"RBAC: [clusterrole.rbac.authorization.k8s.io "does-not-exist" not found, role.rbac.authorization.k8s.io "missing" not found]"#
                .into()
        )
    );
    assert_eq!(
        crate::auth::forbidden_message(
            &res("bob|team", "get", EF, "clusters", "", "e"),
            decision.reason()
        ),
        r#"clusters.edgefleet.io "e" is forbidden: User "bob" cannot get resource "clusters" in API group "edgefleet.io" at the cluster scope: RBAC: [clusterrole.rbac.authorization.k8s.io "does-not-exist" not found, role.rbac.authorization.k8s.io "missing" not found]"#
    );
}

#[tokio::test]
async fn bootstrap_policy_lets_users_discover() {
    let authorizer = RbacAuthorizer::new(Policy::with_defaults());
    let alice = "alice|system:authenticated";
    let anonymous = "system:anonymous|system:unauthenticated";
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/edgefleet.io/v1alpha1",
        "/openapi/v2",
        "/openapi/v3",
        "/openapi/v3/apis/edgefleet.io/v1alpha1",
        "/version",
        "/version/",
        "/healthz",
        "/livez",
        "/readyz",
    ] {
        assert!(
            authorizer
                .authorize(&url(alice, "get", path))
                .await
                .is_allow(),
            "{path}"
        );
    }
    assert!(!authorizer
        .authorize(&url(alice, "post", "/apis"))
        .await
        .is_allow());
    assert!(!authorizer
        .authorize(&url(alice, "get", "/metrics"))
        .await
        .is_allow());
    assert!(!authorizer
        .authorize(&url(alice, "get", "/healthz/etcd"))
        .await
        .is_allow());

    for path in ["/healthz", "/livez", "/readyz", "/version", "/version/"] {
        assert!(
            authorizer
                .authorize(&url(anonymous, "get", path))
                .await
                .is_allow(),
            "{path}"
        );
    }
    for path in ["/apis", "/api", "/openapi/v2"] {
        assert!(
            !authorizer
                .authorize(&url(anonymous, "get", path))
                .await
                .is_allow(),
            "{path}"
        );
    }

    let review = res(
        alice,
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        "",
    );
    assert!(authorizer.authorize(&review).await.is_allow());
    let review = res(
        alice,
        "create",
        "authentication.k8s.io",
        "selfsubjectreviews",
        "",
        "",
    );
    assert!(authorizer.authorize(&review).await.is_allow());
    assert!(!authorizer
        .authorize(&res(alice, "list", EF, "clusters", "retail", ""))
        .await
        .is_allow());

    // cluster-admin is bound to system:masters inside RBAC as well.
    let root = res(
        "root|system:masters",
        "delete",
        EF,
        "environments",
        "",
        "retail",
    );
    assert!(authorizer.authorize(&root).await.is_allow());
}

#[tokio::test]
async fn system_masters_bypasses_rbac() {
    let (chain, rbac) = standalone_authorizer(Policy::empty());
    let root = res(
        "root|system:masters",
        "delete",
        EF,
        "environments",
        "",
        "retail",
    );
    assert!(!rbac.authorize(&root).await.is_allow());
    assert!(chain.authorize(&root).await.is_allow());
    let alice = res("alice", "get", EF, "clusters", "retail", "e");
    assert_eq!(
        chain.authorize(&alice).await,
        Decision::NoOpinion(String::new())
    );
}

#[tokio::test]
async fn edgefleet_roles() {
    let base = Policy::with_defaults();
    let mut with_bindings = base.clone();
    for object in [
        binding(
            "retail",
            "admins",
            "ClusterRole:edgefleet-admin",
            &["User:admin"],
        ),
        binding(
            "retail",
            "operators",
            "ClusterRole:edgefleet-operator",
            &["User:operator"],
        ),
        binding(
            "retail",
            "viewers",
            "ClusterRole:edgefleet-viewer",
            &["User:viewer"],
        ),
        // kube's aggregated roles pick up ours through the labels.
        binding(
            "retail",
            "ns-admin",
            "ClusterRole:admin",
            &["User:ns-admin"],
        ),
        binding("retail", "ns-edit", "ClusterRole:edit", &["User:ns-edit"]),
        binding("retail", "ns-view", "ClusterRole:view", &["User:ns-view"]),
    ] {
        with_bindings.insert(object).unwrap();
    }
    run(vec![
        Case {
            name: "admin",
            policy: with_bindings.clone(),
            allowed: ["admin", "ns-admin"]
                .into_iter()
                .flat_map(|who| {
                    [
                        res(who, "get", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "create", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "get", EF, "clusters/bootstrap", "retail", "edge-1"),
                        res(who, "update", EF, "clusters/status", "retail", "edge-1"),
                        res(who, "delete", EF, "placements", "retail", "p"),
                    ]
                })
                .collect(),
            denied: vec![
                res("admin", "get", EF, "clusters", "factory", "edge-1"),
                res("admin", "get", "", "secrets", "retail", "s"),
            ],
        },
        Case {
            name: "operator",
            policy: with_bindings.clone(),
            allowed: ["operator", "ns-edit", "ns-admin"]
                .into_iter()
                .flat_map(|who| {
                    [
                        res(who, "create", EF, "clusters", "retail", ""),
                        res(who, "patch", EF, "fleets", "retail", "f"),
                        res(who, "update", EF, "clusteraddons", "retail", "a"),
                        res(who, "delete", EF, "placements", "retail", "p"),
                        res(who, "list", EF, "environments", "retail", ""),
                        res(who, "get", EF, "clusters/status", "retail", "edge-1"),
                        res(who, "get", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "delete", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "get", EF, "clusters/bootstrap", "retail", "edge-1"),
                    ]
                })
                .collect(),
            denied: ["operator", "ns-edit"]
                .into_iter()
                .flat_map(|who| {
                    [
                        res(who, "create", EF, "environments", "retail", ""),
                        res(who, "update", EF, "clusters/status", "retail", "edge-1"),
                    ]
                })
                .collect(),
        },
        Case {
            name: "viewer",
            policy: with_bindings,
            allowed: ["viewer", "ns-view", "ns-edit"]
                .into_iter()
                .flat_map(|who| {
                    [
                        res(who, "get", EF, "clusters", "retail", "edge-1"),
                        res(who, "list", EF, "fleets", "retail", ""),
                        res(who, "watch", EF, "placements", "retail", ""),
                        res(who, "get", EF, "clusteraddons/status", "retail", "a"),
                        res(who, "get", EF, "clusters/proxy", "retail", "edge-1"),
                    ]
                })
                .collect(),
            denied: ["viewer", "ns-view"]
                .into_iter()
                .flat_map(|who| {
                    [
                        res(who, "delete", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "create", EF, "clusters/proxy", "retail", "edge-1"),
                        res(who, "get", EF, "clusters/bootstrap", "retail", "edge-1"),
                        res(who, "create", EF, "clusters", "retail", ""),
                        res(who, "update", EF, "clusters", "retail", "edge-1"),
                    ]
                })
                .collect(),
        },
    ])
    .await;
}

#[test]
fn default_roles_carry_aggregation_labels_and_render_as_yaml() {
    let roles = default_cluster_roles();
    let label = |role: &ClusterRole, key: &str| {
        role.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
    };
    let names: Vec<_> = roles
        .iter()
        .map(|r| r.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [EDGEFLEET_ADMIN, EDGEFLEET_OPERATOR, EDGEFLEET_VIEWER]
    );
    assert_eq!(
        label(&roles[0], AGGREGATE_TO_ADMIN).as_deref(),
        Some("true")
    );
    assert_eq!(label(&roles[1], AGGREGATE_TO_EDIT).as_deref(), Some("true"));
    assert_eq!(label(&roles[2], AGGREGATE_TO_VIEW).as_deref(), Some("true"));

    let yaml = default_cluster_roles_yaml();
    assert_eq!(yaml.matches("kind: ClusterRole\n").count(), 3, "{yaml}");
    let parsed = parse_policy_yaml(&yaml, "defaults.yaml").unwrap();
    let parsed: Vec<_> = parsed
        .into_iter()
        .map(|o| match o {
            RbacObject::ClusterRole(role) => role,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(parsed, roles);
}

#[tokio::test]
async fn replacing_the_policy_takes_effect() {
    let authorizer = RbacAuthorizer::new(Policy::empty());
    let a = res("alice", "get", EF, "clusters", "retail", "e");
    assert!(!authorizer.authorize(&a).await.is_allow());
    authorizer.replace(policy(vec![
        cluster_role(
            "r",
            vec![rule(["get"]).groups([EF]).resources(["clusters"]).build()],
        ),
        cluster_binding("b", "r", &["User:alice"]),
    ]));
    assert!(authorizer.authorize(&a).await.is_allow());
    assert_eq!(authorizer.cluster_role_rules("r").unwrap().len(), 1);
}

// ---- validation ------------------------------------------------------------------------------

fn problems(object: RbacObject) -> Vec<String> {
    object
        .validate()
        .map(|()| Vec::new())
        .unwrap_or_else(|e| e.problems)
}

#[test]
fn invalid_objects_are_refused_with_field_errors() {
    assert_eq!(
        problems(role("retail", "r", vec![rule(["get"]).urls(["/healthz"]).build()])),
        ["rules[0].nonResourceURLs: Invalid value: namespaced rules cannot apply to non-resource URLs"]
    );
    assert_eq!(
        problems(cluster_role(
            "r",
            vec![rule(Vec::<String>::new())
                .groups([EF])
                .resources(["x"])
                .build()]
        )),
        ["rules[0].verbs: Required value: verbs must contain at least one value"]
    );
    assert_eq!(
        problems(cluster_role("r", vec![rule(["get"]).build()])),
        [
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[0].resources: Required value: resource rules must supply at least one resource",
        ]
    );
    assert_eq!(
        problems(cluster_role("r", vec![rule(["get"]).urls(["/x"]).resources(["y"]).build()])),
        ["rules[0].nonResourceURLs: Invalid value: rules cannot apply to both regular resources and non-resource URLs"]
    );
    assert_eq!(
        problems(role("", "r", vec![])),
        ["metadata.namespace: Required value: namespaced objects need a namespace"]
    );

    let mut crb_to_role = cluster_binding("b", "r", &["User:a"]);
    if let RbacObject::ClusterRoleBinding(b) = &mut crb_to_role {
        b.role_ref.kind = "Role".into();
    }
    assert_eq!(
        problems(crb_to_role),
        [r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#]
    );
    assert_eq!(
        problems(cluster_binding("b", "r", &["ServiceAccount::builder"])),
        ["subjects[0].namespace: Required value"]
    );
    assert_eq!(
        problems(binding("ns", "b", "Role:r", &["Robot:r2d2"])),
        [
            r#"subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#
        ]
    );

    // kube's defaulting: empty API groups mean rbac.authorization.k8s.io.
    let mut defaulted = binding("ns", "b", "Role:r", &["User:a"]);
    if let RbacObject::RoleBinding(b) = &mut defaulted {
        b.role_ref.api_group = String::new();
        b.subjects.as_mut().unwrap()[0].api_group = None;
    }
    assert_eq!(problems(defaulted), Vec::<String>::new());

    let mut policy = Policy::empty();
    let err = policy.insert(cluster_role("", vec![])).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"ClusterRole "" is invalid: metadata.name: Required value: name is required"#
    );
}

// ---- policy files ----------------------------------------------------------------------------

const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: cluster-reader
rules:
- apiGroups: ["edgefleet.io"]
  resources: ["clusters"]
  verbs: ["get", "list"]
---
---
apiVersion: v1
kind: List
items:
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata:
    name: readers
  roleRef:
    apiGroup: rbac.authorization.k8s.io
    kind: ClusterRole
    name: cluster-reader
  subjects:
  - kind: Group
    name: readers
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata:
    name: fleet-admin
    namespace: retail
  rules:
  - apiGroups: ["edgefleet.io"]
    resources: ["fleets"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: fleet-admins
  namespace: retail
roleRef:
  kind: Role
  name: fleet-admin
subjects:
- kind: User
  name: alice
- kind: ServiceAccount
  name: deployer
"#;

#[tokio::test]
async fn policy_file_documents_and_lists() {
    let objects = parse_policy_yaml(POLICY, "policy.yaml").unwrap();
    let kinds: Vec<_> = objects.iter().map(RbacObject::describe).collect();
    assert_eq!(
        kinds,
        [
            r#"ClusterRole "cluster-reader""#,
            r#"ClusterRoleBinding "readers""#,
            r#"Role "retail/fleet-admin""#,
            r#"RoleBinding "retail/fleet-admins""#,
        ]
    );

    let authorizer = RbacAuthorizer::new(Policy::from_yaml(POLICY, "policy.yaml").unwrap());
    assert!(authorizer
        .authorize(&res("x|readers", "list", EF, "clusters", "", ""))
        .await
        .is_allow());
    assert!(authorizer
        .authorize(&res("alice", "delete", EF, "fleets", "retail", "f"))
        .await
        .is_allow());
    let sa = "system:serviceaccount:retail:deployer";
    assert!(authorizer
        .authorize(&res(sa, "create", EF, "fleets", "retail", ""))
        .await
        .is_allow());
    // The defaults are there too.
    assert!(authorizer
        .authorize(&url("x|system:authenticated", "get", "/apis"))
        .await
        .is_allow());
}

#[test]
fn policy_file_can_override_a_builtin_role() {
    let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:public-info-viewer"}
rules:
- nonResourceURLs: ["/healthz"]
  verbs: ["get"]
"#;
    let policy = Policy::from_yaml(yaml, "p.yaml").unwrap();
    let rules = policy
        .cluster_role("system:public-info-viewer")
        .unwrap()
        .rules
        .clone()
        .unwrap();
    assert_eq!(rules, [rule(["get"]).urls(["/healthz"]).build()]);
}

fn load_error(yaml: &str) -> String {
    edgefleet_tunnel::error_chain(&parse_policy_yaml(yaml, "policy.yaml").unwrap_err())
}

#[test]
fn policy_file_errors_name_the_document() {
    assert_eq!(
        load_error("kind: ClusterRole\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
        r#"policy.yaml: document 2: unsupported kind "ConfigMap" (apiVersion "v1"): an RBAC policy file holds Role, ClusterRole, RoleBinding and ClusterRoleBinding objects of rbac.authorization.k8s.io/v1, or Lists of them"#
    );
    assert_eq!(
        load_error("apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1beta1\n  kind: Role\n"),
        r#"policy.yaml: document 1, items[0]: unsupported kind "Role" (apiVersion "rbac.authorization.k8s.io/v1beta1"): an RBAC policy file holds Role, ClusterRole, RoleBinding and ClusterRoleBinding objects of rbac.authorization.k8s.io/v1, or Lists of them"#
    );
    assert_eq!(
        load_error("- just\n- a list\n"),
        "policy.yaml: document 1: expected an object with apiVersion and kind"
    );
    assert!(
        load_error("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: a, namespace: b}\nrules: 7\n")
            .starts_with("policy.yaml: document 1: decoding Role: "),
    );
    assert!(load_error("a: [unclosed\n").starts_with("policy.yaml: document 1: invalid YAML: "));
    assert_eq!(
        load_error("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b}\nroleRef: {kind: Role, name: r}\n"),
        r#"policy.yaml: document 1: RoleBinding "b" is invalid: metadata.namespace: Required value: namespaced objects need a namespace"#
    );
    let twice =
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\n";
    assert_eq!(
        load_error(&format!("{twice}---\n{twice}")),
        r#"policy.yaml: document 2: ClusterRole "a" is defined twice (first in document 1)"#
    );
}

#[test]
fn empty_policy_file_is_just_the_defaults() {
    assert!(parse_policy_yaml("", "p.yaml").unwrap().is_empty());
    assert!(parse_policy_yaml("---\n---\n", "p.yaml")
        .unwrap()
        .is_empty());
    assert_eq!(
        Policy::from_yaml("", "p.yaml").unwrap(),
        Policy::with_defaults()
    );
}

#[test]
fn policy_file_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rbac.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let policy = Policy::load_file(&path).unwrap();
    assert!(policy.role("retail", "fleet-admin").is_some());
    assert!(policy.cluster_role_binding("readers").is_some());
    assert!(policy.role_binding("retail", "fleet-admins").is_some());

    let missing = dir.path().join("missing.yaml");
    let err = Policy::load_file(&missing).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(err.to_string().contains("missing.yaml"));
    assert!(err.source().is_some());
}
