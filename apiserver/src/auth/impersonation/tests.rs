use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::auth::authn::testing::head;
use crate::auth::rbac::{parse_policy_yaml, Policy, RbacAuthorizer};
use crate::auth::Decision;

/// alice may impersonate anyone; limited may impersonate only user bob and group viewers;
/// deployer-admin may impersonate service accounts of namespace retail only.
const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonator}
rules:
- apiGroups: [""]
  resources: [users, groups, serviceaccounts]
  verbs: [impersonate]
- apiGroups: [authentication.k8s.io]
  resources: [uids, userextras/scopes, "*/acme.com/team"]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-impersonates}
roleRef: {kind: ClusterRole, name: impersonator}
subjects: [{kind: User, name: alice}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: limited-impersonator}
rules:
- apiGroups: [""]
  resources: [users]
  resourceNames: [bob]
  verbs: [impersonate]
- apiGroups: [""]
  resources: [groups]
  resourceNames: [viewers]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: limited}
roleRef: {kind: ClusterRole, name: limited-impersonator}
subjects: [{kind: User, name: limited}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: sa-impersonator, namespace: retail}
rules:
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: deployer-admin, namespace: retail}
roleRef: {kind: Role, name: sa-impersonator}
subjects: [{kind: User, name: deployer-admin}]
"#;

fn authorizer() -> RbacAuthorizer {
    let mut policy = Policy::empty();
    for object in parse_policy_yaml(POLICY, "policy.yaml").unwrap() {
        policy.insert(object).unwrap();
    }
    RbacAuthorizer::new(policy)
}

async fn run(caller: &str, headers: &[(&str, &str)]) -> Result<Impersonation, ImpersonationError> {
    let requestor = UserInfo::new(caller).with_groups(["system:authenticated"]);
    impersonate(&authorizer(), &requestor, &head(headers).headers).await
}

fn names(names: &[&str]) -> Vec<HeaderName> {
    names
        .iter()
        .map(|n| HeaderName::try_from(*n).unwrap())
        .collect()
}

#[tokio::test]
async fn no_impersonation_headers() {
    let outcome = run("alice", &[("authorization", "Bearer x")])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Impersonation {
            user: None,
            headers_to_strip: vec![]
        }
    );
}

#[tokio::test]
async fn user_with_groups_extra_and_uid() {
    let outcome = run(
        "alice",
        &[
            ("impersonate-user", "bob"),
            ("impersonate-group", "viewers"),
            ("impersonate-group", "ops"),
            ("impersonate-uid", "42"),
            ("impersonate-extra-scopes", "view"),
            ("impersonate-extra-scopes", "edit"),
            ("Impersonate-Extra-Acme.com%2fTeam", "sre"),
            ("accept", "application/json"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.user.unwrap(),
        UserInfo::new("bob")
            .with_uid("42")
            .with_groups(["viewers", "ops", "system:authenticated"])
            .with_extra("scopes", ["view", "edit"])
            .with_extra("acme.com/team", ["sre"])
    );
    assert_eq!(
        outcome.headers_to_strip,
        names(&[
            "impersonate-user",
            "impersonate-group",
            "impersonate-uid",
            "impersonate-extra-scopes",
            "impersonate-extra-acme.com%2fteam",
        ])
    );
}

#[tokio::test]
async fn service_account_gets_its_groups_unless_groups_are_given() {
    let sa = [("impersonate-user", "system:serviceaccount:retail:deployer")];
    let user = run("deployer-admin", &sa).await.unwrap().user.unwrap();
    assert_eq!(user.name, "system:serviceaccount:retail:deployer");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:retail",
            "system:authenticated"
        ]
    );

    let user = run("alice", &[sa[0], ("impersonate-group", "custom")])
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(user.groups, ["custom", "system:authenticated"]);

    // The namespaced permission does not reach other namespaces.
    let err = run(
        "deployer-admin",
        &[("impersonate-user", "system:serviceaccount:factory:deployer")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.status_code(), StatusCode::FORBIDDEN);
    assert_eq!(
        err.to_string(),
        r#"serviceaccounts "deployer" is forbidden: User "deployer-admin" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "factory""#
    );
}

#[tokio::test]
async fn refusals_use_kubes_wording() {
    let err = run("limited", &[("impersonate-user", "mallory")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"users "mallory" is forbidden: User "limited" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );

    let err = run(
        "limited",
        &[
            ("impersonate-user", "bob"),
            ("impersonate-group", "system:masters"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"groups "system:masters" is forbidden: User "limited" cannot impersonate resource "groups" in API group "" at the cluster scope"#
    );

    let err = run(
        "limited",
        &[
            ("impersonate-user", "bob"),
            ("impersonate-extra-acme.com%2Fteam", "sre"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"userextras.authentication.k8s.io "sre" is forbidden: User "limited" cannot impersonate resource "userextras/acme.com/team" in API group "authentication.k8s.io" at the cluster scope"#
    );

    let err = run(
        "limited",
        &[("impersonate-user", "bob"), ("impersonate-uid", "7")],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"uids.authentication.k8s.io "7" is forbidden: User "limited" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope"#
    );

    // The permitted subset works.
    let user = run(
        "limited",
        &[
            ("impersonate-user", "bob"),
            ("impersonate-group", "viewers"),
        ],
    )
    .await
    .unwrap()
    .user
    .unwrap();
    assert_eq!(user.groups, ["viewers", "system:authenticated"]);
}

#[tokio::test]
async fn identity_without_user_is_a_bad_request() {
    let err = run("alice", &[("impersonate-group", "system:masters")])
        .await
        .unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
    assert_eq!(
        err.to_string(),
        "requested Impersonate-Group without impersonating a user (no Impersonate-User)"
    );
    let err = run(
        "alice",
        &[
            ("impersonate-user", ""),
            ("impersonate-uid", "1"),
            ("impersonate-extra-a", "b"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested Impersonate-Extra-*, Impersonate-Uid without impersonating a user (no Impersonate-User)"
    );
    assert!(
        !err.to_string().contains(": 1"),
        "values stay out of messages"
    );
}

#[tokio::test]
async fn empty_user_header_impersonates_no_one_but_is_stripped() {
    let outcome = run("mallory", &[("impersonate-user", "")]).await.unwrap();
    assert_eq!(outcome.user, None);
    assert_eq!(outcome.headers_to_strip, names(&["impersonate-user"]));
}

#[tokio::test]
async fn authenticated_and_unauthenticated_groups() {
    let user = run("alice", &[("impersonate-user", "system:anonymous")])
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(user.groups, ["system:unauthenticated"]);

    let user = run(
        "alice",
        &[
            ("impersonate-user", "carol"),
            ("impersonate-group", "system:unauthenticated"),
        ],
    )
    .await
    .unwrap()
    .user
    .unwrap();
    assert_eq!(user.groups, ["system:unauthenticated"]);

    let user = run(
        "alice",
        &[
            ("impersonate-user", "carol"),
            ("impersonate-group", "system:authenticated"),
        ],
    )
    .await
    .unwrap()
    .user
    .unwrap();
    assert_eq!(user.groups, ["system:authenticated"]);
}

/// Allows everything and records what it was asked.
#[derive(Default)]
struct Recorder(Mutex<Vec<Attributes>>);

#[async_trait]
impl Authorizer for Recorder {
    async fn authorize(&self, a: &Attributes) -> Decision {
        self.0.lock().unwrap().push(a.clone());
        Decision::Allow
    }
}

#[tokio::test]
async fn checks_are_kubes_attributes_in_kubes_order() {
    let recorder = Recorder::default();
    let requestor = UserInfo::new("alice");
    let headers = head(&[
        ("impersonate-uid", "42"),
        ("impersonate-extra-scopes", "view"),
        ("impersonate-group", "g"),
        ("impersonate-user", "system:serviceaccount:retail:deployer"),
    ])
    .headers;
    impersonate(&recorder, &requestor, &headers).await.unwrap();
    let asked = recorder.0.into_inner().unwrap();
    let alice = || requestor.clone();
    assert_eq!(
        asked,
        [
            Attributes::resource(alice(), "impersonate", "", "serviceaccounts")
                .with_namespace("retail")
                .with_name("deployer"),
            Attributes::resource(alice(), "impersonate", "", "groups").with_name("g"),
            Attributes::resource(
                alice(),
                "impersonate",
                "authentication.k8s.io",
                "userextras"
            )
            .with_api_version("v1")
            .with_subresource("scopes")
            .with_name("view"),
            Attributes::resource(alice(), "impersonate", "authentication.k8s.io", "uids")
                .with_api_version("v1")
                .with_name("42"),
        ]
    );
}

#[tokio::test]
async fn non_utf8_values_are_a_bad_request() {
    let mut headers = HeaderMap::new();
    headers.insert(
        IMPERSONATE_USER,
        HeaderValue::from_bytes(b"b\xffb").unwrap(),
    );
    let err = impersonate(&Recorder::default(), &UserInfo::new("alice"), &headers)
        .await
        .unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
}

#[test]
fn impersonation_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (authorizer, user, headers) = (Recorder::default(), UserInfo::new("a"), HeaderMap::new());
    assert_send(&impersonate(&authorizer, &user, &headers));
}
