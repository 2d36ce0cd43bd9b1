use serde_json::json;

use super::*;
use crate::auth::test_apiserver::{Answer, TestApiserver, SUBJECT_ACCESS_REVIEWS};
use crate::auth::{PrivilegedGroups, UnionAuthorizer, UserInfo};

const QUICK: RetryBackoff = RetryBackoff {
    initial: Duration::from_millis(1),
    factor: 1.0,
    jitter: 0.0,
    attempts: 2,
};

fn alice() -> UserInfo {
    UserInfo::new("alice")
        .with_uid("a1b2")
        .with_groups(["retail-admins", "system:authenticated"])
        .with_extra("scopes", ["view", "edit"])
        .with_extra(
            "authentication.kubernetes.io/credential-id",
            ["X509SHA256=ab"],
        )
}

/// Every resource attribute set.
fn get_cluster_status() -> Attributes {
    Attributes::resource(alice(), "get", "edgefleet.io", "clusters")
        .with_api_version("v1alpha1")
        .with_namespace("retail")
        .with_subresource("status")
        .with_name("store-1")
}

#[test]
fn resource_attributes_map_to_kubes_review_fields() {
    let spec = serde_json::to_value(review_spec(&get_cluster_status())).unwrap();
    assert_eq!(
        spec,
        json!({
            "user": "alice",
            "uid": "a1b2",
            "groups": ["retail-admins", "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": ["X509SHA256=ab"],
                "scopes": ["view", "edit"],
            },
            "resourceAttributes": {
                "namespace": "retail",
                "verb": "get",
                "group": "edgefleet.io",
                "version": "v1alpha1",
                "resource": "clusters",
                "subresource": "status",
                "name": "store-1",
            },
        })
    );
}

#[test]
fn non_resource_attributes_and_empty_fields_are_left_out() {
    let healthz = Attributes::non_resource(UserInfo::new("bob"), "get", "/healthz");
    assert_eq!(
        serde_json::to_value(review_spec(&healthz)).unwrap(),
        json!({"user": "bob", "nonResourceAttributes": {"path": "/healthz", "verb": "get"}})
    );
    // The core group, cluster scope, no name: those keys are omitted, as kube omits them.
    let list =
        Attributes::resource(UserInfo::new("bob"), "list", "", "namespaces").with_api_version("v1");
    assert_eq!(
        serde_json::to_value(review_spec(&list)).unwrap(),
        json!({
            "user": "bob",
            "resourceAttributes": {"verb": "list", "version": "v1", "resource": "namespaces"},
        })
    );
}

#[test]
fn review_status_to_decision() {
    let status = |allowed, denied: Option<bool>, reason: &str| SubjectAccessReviewStatus {
        allowed,
        denied,
        reason: Some(reason.into()),
        evaluation_error: None,
    };
    assert_eq!(decision(&status(true, None, "rbac")), Decision::Allow);
    assert_eq!(
        decision(&status(false, Some(true), "banned")),
        Decision::Deny("banned".into())
    );
    assert_eq!(
        decision(&status(true, Some(true), "both")),
        Decision::Deny("both".into()),
        "kube denies a contradictory answer"
    );
    assert_eq!(
        decision(&status(false, Some(false), "no rule")),
        Decision::NoOpinion("no rule".into())
    );
    assert_eq!(
        decision(&SubjectAccessReviewStatus::default()),
        Decision::NoOpinion(String::new())
    );
}

async fn setup() -> (TestApiserver, SubjectAccessReviewAuthorizer) {
    let server = TestApiserver::start().await;
    server.require_bearer("hub-token");
    let authorizer =
        SubjectAccessReviewAuthorizer::new(server.client("hub-token").await).retry_backoff(QUICK);
    (server, authorizer)
}

#[tokio::test]
async fn the_clusters_answer_decides_and_the_request_carries_every_attribute() {
    let (server, authz) = setup().await;
    server.on_subject_access_review(|spec| match spec["resourceAttributes"]["verb"].as_str() {
        Some("get") => Answer::Status(json!({"allowed": true, "reason": "RBAC: allowed"})),
        Some("delete") => Answer::Status(
            json!({"allowed": false, "denied": true, "reason": "protected by policy"}),
        ),
        _ => Answer::Status(json!({"allowed": false, "reason": "no RBAC policy matched"})),
    });

    assert_eq!(
        authz.authorize(&get_cluster_status()).await,
        Decision::Allow
    );
    let received = server.received(SUBJECT_ACCESS_REVIEWS);
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer hub-token")
    );
    assert_eq!(body["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(body["kind"], "SubjectAccessReview");
    let spec = &body["spec"];
    assert_eq!(spec["user"], "alice");
    assert_eq!(spec["uid"], "a1b2");
    assert_eq!(
        spec["groups"],
        json!(["retail-admins", "system:authenticated"])
    );
    assert_eq!(spec["extra"]["scopes"], json!(["view", "edit"]));
    assert_eq!(
        spec["extra"]["authentication.kubernetes.io/credential-id"],
        json!(["X509SHA256=ab"])
    );
    let resource = &spec["resourceAttributes"];
    assert_eq!(resource["namespace"], "retail");
    assert_eq!(resource["verb"], "get");
    assert_eq!(resource["group"], "edgefleet.io");
    assert_eq!(resource["version"], "v1alpha1");
    assert_eq!(resource["resource"], "clusters");
    assert_eq!(resource["subresource"], "status");
    assert_eq!(resource["name"], "store-1");
    assert!(spec.get("nonResourceAttributes").is_none());

    let mut delete = get_cluster_status();
    delete.verb = "delete".into();
    assert_eq!(
        authz.authorize(&delete).await,
        Decision::Deny("protected by policy".into())
    );
    let mut update = get_cluster_status();
    update.verb = "update".into();
    assert_eq!(
        authz.authorize(&update).await,
        Decision::NoOpinion("no RBAC policy matched".into())
    );

    let healthz = Attributes::non_resource(alice(), "get", "/healthz");
    authz.authorize(&healthz).await;
    let spec = &server.received(SUBJECT_ACCESS_REVIEWS)[3].body["spec"];
    assert_eq!(
        spec["nonResourceAttributes"],
        json!({"path": "/healthz", "verb": "get"})
    );
    assert!(spec.get("resourceAttributes").is_none());
}

#[tokio::test]
async fn answers_are_cached_per_question_with_every_attribute_in_the_key() {
    let (server, authz) = setup().await;
    server.on_subject_access_review(|_| Answer::Status(json!({"allowed": true})));
    let base = get_cluster_status();
    authz.authorize(&base).await;
    authz.authorize(&base.clone()).await;
    assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), 1);

    // Each question differs from the first in one attribute, so each needs its own answer.
    let variants: Vec<(&str, Attributes)> = vec![
        ("user", {
            let mut a = base.clone();
            a.user.name = "mallory".into();
            a
        }),
        ("uid", {
            let mut a = base.clone();
            a.user.uid = "other".into();
            a
        }),
        ("groups", {
            let mut a = base.clone();
            a.user.groups.push("extra-group".into());
            a
        }),
        ("extra", {
            let mut a = base.clone();
            a.user.extra.insert("scopes".into(), vec!["admin".into()]);
            a
        }),
        ("namespace", base.clone().with_namespace("wholesale")),
        ("verb", {
            let mut a = base.clone();
            a.verb = "watch".into();
            a
        }),
        ("group", {
            let mut a = base.clone();
            a.api_group = "apps".into();
            a
        }),
        ("version", base.clone().with_api_version("v1")),
        ("resource", {
            let mut a = base.clone();
            a.resource = "fleets".into();
            a
        }),
        ("subresource", base.clone().with_subresource("proxy")),
        ("name", base.clone().with_name("store-2")),
        (
            "non-resource path",
            Attributes::non_resource(alice(), "get", "/apis"),
        ),
        (
            "non-resource verb",
            Attributes::non_resource(alice(), "post", "/apis"),
        ),
    ];
    for (n, (what, attributes)) in variants.iter().enumerate() {
        authz.authorize(attributes).await;
        assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), n + 2, "{what}");
        authz.authorize(attributes).await;
        assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), n + 2, "{what}, again");
    }
}

#[tokio::test]
async fn allowed_and_other_answers_have_their_own_ttls() {
    let (server, authz) = setup().await;
    let authz = authz
        .authorized_ttl(Duration::from_secs(60))
        .unauthorized_ttl(Duration::from_secs(5));
    server.on_subject_access_review(|spec| {
        Answer::Status(json!({"allowed": spec["user"] == "alice"}))
    });
    let allowed = get_cluster_status();
    let mut refused = get_cluster_status();
    refused.user.name = "bob".into();
    authz.authorize(&allowed).await;
    authz.authorize(&refused).await;
    assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), 2);

    let skip = |by| async move {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    };
    skip(Duration::from_secs(5)).await;
    assert!(authz.authorize(&allowed).await.is_allow());
    assert!(!authz.authorize(&refused).await.is_allow());
    assert_eq!(
        server.count(SUBJECT_ACCESS_REVIEWS),
        3,
        "only the refusal expired"
    );

    skip(Duration::from_secs(55)).await;
    authz.authorize(&allowed).await;
    assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), 4);
}

#[tokio::test]
async fn concurrent_identical_questions_share_one_review() {
    let (server, authz) = setup().await;
    server.on_subject_access_review(|_| Answer::Status(json!({"allowed": true})));
    let question = get_cluster_status();
    let answers = futures::future::join_all((0..6).map(|_| authz.authorize(&question))).await;
    assert!(answers.iter().all(Decision::is_allow));
    assert_eq!(server.count(SUBJECT_ACCESS_REVIEWS), 1);
}

#[tokio::test]
async fn failures_have_no_opinion_are_not_cached_and_a_union_forbids() {
    let (server, authz) = setup().await;
    server.on_subject_access_review(|_| Answer::Fail(403, "Forbidden"));
    let union = UnionAuthorizer::new(vec![
        std::sync::Arc::new(PrivilegedGroups::system_masters()),
        std::sync::Arc::new(authz),
    ]);
    let question = get_cluster_status();
    let decision = union.authorize(&question).await;
    assert_eq!(decision, Decision::NoOpinion(UNREACHABLE_REASON.into()));
    assert!(!decision.is_allow(), "nobody allowed it: forbidden");

    server.on_subject_access_review(|_| Answer::Status(json!({"allowed": true})));
    assert!(union.authorize(&question).await.is_allow());
    assert_eq!(
        server.count(SUBJECT_ACCESS_REVIEWS),
        2,
        "the failure was not cached"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_forbids_all_but_system_masters() {
    let server = TestApiserver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path(), "hub");
    let down = crate::auth::test_apiserver::unreachable_url().await;
    let text = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(&server.url(), &down);
    std::fs::write(&kubeconfig, text).unwrap();
    drop(server);
    let authz = SubjectAccessReviewAuthorizer::new(
        crate::auth::delegation::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap(),
    );
    let union = UnionAuthorizer::new(vec![
        std::sync::Arc::new(PrivilegedGroups::system_masters()),
        std::sync::Arc::new(authz),
    ]);

    let decision = union.authorize(&get_cluster_status()).await;
    assert_eq!(decision, Decision::NoOpinion(UNREACHABLE_REASON.into()));
    let root = Attributes::resource(
        UserInfo::new("root").with_groups(["system:masters"]),
        "delete",
        "edgefleet.io",
        "environments",
    );
    assert!(union.authorize(&root).await.is_allow());
}
