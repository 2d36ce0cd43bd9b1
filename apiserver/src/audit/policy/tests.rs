use super::*;
use crate::auth::UserInfo;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo::new(name).with_groups(groups.iter().copied())
}

fn res(u: &UserInfo, verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes::resource(u.clone(), verb, group, resource)
        .with_namespace(ns)
        .with_name(name)
        .with_subresource(sub)
}

fn url(u: &UserInfo, verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(u.clone(), verb, path)
}

/// The example policy of kube's audit documentation, abridged, plus rules for the edge cases.
const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse
    resources:
    - group: ""
      resources: ["pods"]
  - level: Metadata
    resources:
    - group: ""
      resources: ["pods/log", "pods/status"]
  - level: None
    resources:
    - group: ""
      resources: ["configmaps"]
      resourceNames: ["controller-leader"]
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
    - group: ""
      resources: ["endpoints", "services"]
  - level: None
    userGroups: ["system:authenticated"]
    nonResourceURLs:
    - "/api*"
    - "/version"
  - level: Request
    resources:
    - group: ""
      resources: ["configmaps"]
    namespaces: ["kube-system"]
  - level: Metadata
    resources:
    - group: ""
      resources: ["secrets", "configmaps"]
  - level: Request
    resources:
    - group: ""
    - group: "extensions"
  - level: RequestResponse
    resources:
    - group: "apps"
      resources: ["*/scale"]
  - level: Request
    resources:
    - group: "apps"
      resources: ["statefulsets/*"]
  - level: Metadata
    omitStages: ["ResponseStarted"]
    omitManagedFields: false
    resources:
    - group: "batch"
      resources: ["*"]
    namespaces: ["", "jobs"]
"#;

#[test]
fn kube_semantics_table() {
    let policy = PolicyEvaluator::from_yaml(POLICY).unwrap();
    let alice = user("alice", &["system:authenticated"]);
    let proxy = user("system:kube-proxy", &["system:authenticated"]);
    let anon = user("system:anonymous", &["system:unauthenticated"]);
    use Level::*;
    let cases: Vec<(Attributes, Level, &str)> = vec![
        (
            res(&alice, "get", "", "pods", "default", "p"),
            RequestResponse,
            "first rule wins",
        ),
        (
            res(&alice, "get", "", "pods/log", "default", "p"),
            Metadata,
            "pods does not match pods/log",
        ),
        (
            res(&alice, "get", "", "pods/exec", "default", "p"),
            Request,
            "falls to the core group rule",
        ),
        (
            res(&alice, "update", "", "configmaps", "x", "controller-leader"),
            None,
            "resourceNames",
        ),
        (
            res(&alice, "update", "", "configmaps", "kube-system", "other"),
            Request,
            "namespaces",
        ),
        (
            res(&alice, "update", "", "configmaps", "default", "other"),
            Metadata,
            "namespace not listed",
        ),
        (
            res(&proxy, "watch", "", "endpoints", "", ""),
            None,
            "users and verbs",
        ),
        (
            res(&proxy, "list", "", "endpoints", "", ""),
            Request,
            "verb not listed",
        ),
        (
            res(&alice, "watch", "", "endpoints", "", ""),
            Request,
            "user not listed",
        ),
        (url(&alice, "get", "/apis/apps"), None, "prefix wildcard"),
        (url(&alice, "get", "/version"), None, "exact path"),
        (url(&alice, "get", "/versions"), None, "no rule matches"),
        (
            url(&anon, "get", "/api"),
            None,
            "group not listed, no rule matches",
        ),
        (
            res(&alice, "get", "", "secrets", "default", "s"),
            Metadata,
            "secrets",
        ),
        (
            res(&alice, "get", "extensions", "ingresses", "default", "i"),
            Request,
            "whole group",
        ),
        (
            res(&alice, "patch", "apps", "deployments/scale", "default", "d"),
            RequestResponse,
            "*/scale",
        ),
        (
            res(&alice, "patch", "apps", "deployments", "default", "d"),
            None,
            "*/scale needs a subresource",
        ),
        (
            res(&alice, "get", "apps", "statefulsets", "default", "s"),
            Request,
            "resource/* matches the resource",
        ),
        (
            res(&alice, "get", "apps", "statefulsets/status", "default", "s"),
            Request,
            "resource/* matches subresources",
        ),
        (
            res(&alice, "list", "batch", "jobs", "", ""),
            Metadata,
            "cluster-scoped is the empty namespace",
        ),
        (
            res(&alice, "list", "batch", "jobs", "other", ""),
            None,
            "namespace not listed",
        ),
    ];
    for (attrs, want, why) in &cases {
        assert_eq!(policy.evaluate(attrs).level, *want, "{why}: {attrs:?}");
    }

    // Policy-level omitStages join each rule's; a rule's omitManagedFields overrides.
    let batch = policy.evaluate(&res(&alice, "list", "batch", "jobs", "", ""));
    assert_eq!(
        batch.omit_stages,
        [Stage::RequestReceived, Stage::ResponseStarted].into()
    );
    assert!(!batch.omit_managed_fields);
    let none = policy.evaluate(&url(&alice, "get", "/nothing"));
    assert_eq!(none.level, Level::None);
    assert_eq!(none.omit_stages, [Stage::RequestReceived].into());
    assert!(!none.records(Stage::ResponseComplete));
}

#[test]
fn validation_as_kube_does() {
    let invalid = |yaml: &str| match PolicyEvaluator::from_yaml(yaml) {
        Err(PolicyError::Invalid(errors)) => errors.join("; "),
        other => panic!("expected invalid, got {other:?}"),
    };
    let header = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
    assert!(invalid(header).contains("at least one rule"));
    assert!(invalid(&format!(
        "{header}rules:\n- level: None\n  nonResourceURLs: [\"/a\"]\n  namespaces: [\"x\"]\n"
    ))
    .contains("both regular resources and non-resource URLs"));
    assert!(invalid(&format!(
        "{header}rules:\n- level: None\n  nonResourceURLs: [\"a\", \"/b*c\"]\n"
    ))
    .contains("must begin with a '/'"));
    assert!(invalid(&format!(
        "{header}rules:\n- level: None\n  nonResourceURLs: [\"/b*c\"]\n"
    ))
    .contains("final character"));
    assert!(invalid(&format!(
        "{header}rules:\n- level: None\n  resources: [{{group: \"apps/v1\"}}]\n"
    ))
    .contains("RFC 1123"));
    assert!(invalid(&format!(
        "{header}rules:\n- level: None\n  resources: [{{group: \"\", resourceNames: [\"x\"]}}]\n"
    ))
    .contains("requires at least one resource"));
    assert!(
        invalid("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n")
            .contains("apiVersion")
    );

    // Parse errors: an unknown level or stage, a misspelt field.
    for bad in [
        "rules: [{level: Everything}]",
        "rules: [{level: None, omitStages: [Later]}]",
        "rules: [{level: None, verb: [get]}]",
    ] {
        assert!(
            matches!(
                PolicyEvaluator::from_yaml(&format!("{header}{bad}\n")),
                Err(PolicyError::Parse(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn default_policy() {
    let policy = PolicyEvaluator::default_policy();
    assert!(policy.policy().omit_stages.is_empty());
    let alice = user("alice", &["dev", "system:authenticated"]);
    use Level::*;
    let ef = "edgefleet.io";
    let cases = [
        (url(&alice, "get", "/healthz"), None),
        (url(&alice, "get", "/readyz/etcd"), None),
        (url(&alice, "get", "/apis"), Metadata),
        (url(&alice, "get", "/metrics"), Metadata),
        (
            res(&alice, "create", "", "secrets", "default", ""),
            Metadata,
        ),
        (
            res(&alice, "update", "", "secrets", "default", "s"),
            Metadata,
        ),
        (
            res(&alice, "patch", "", "configmaps", "default", "c"),
            Metadata,
        ),
        (
            res(
                &alice,
                "create",
                "",
                "serviceaccounts/token",
                "default",
                "sa",
            ),
            Metadata,
        ),
        (
            res(
                &alice,
                "create",
                "authentication.k8s.io",
                "tokenreviews",
                "",
                "",
            ),
            Metadata,
        ),
        (
            res(&alice, "get", ef, "clusters/bootstrap", "retail", "edge-1"),
            Metadata,
        ),
        (
            res(&alice, "get", ef, "clusters", "retail", "edge-1"),
            Metadata,
        ),
        (res(&alice, "watch", ef, "clusters", "", ""), Metadata),
        (
            res(&alice, "update", ef, "clusters", "retail", "edge-1"),
            Request,
        ),
        (
            res(&alice, "delete", ef, "placements", "retail", "p"),
            Request,
        ),
        (
            res(&alice, "create", "", "pods/exec", "default", "web-1"),
            Request,
        ),
        (
            res(&alice, "patch", "apps", "deployments", "shop", "web"),
            Request,
        ),
        (
            res(&alice, "get", "", "pods/log", "default", "web-1"),
            Metadata,
        ),
        (res(&alice, "impersonate", "", "users", "", "bob"), Metadata),
    ];
    for (attrs, want) in &cases {
        let config = policy.evaluate(attrs);
        assert_eq!(config.level, *want, "{attrs:?}");
        assert!(config.omit_stages.is_empty());
        assert!(config.omit_managed_fields);
    }
}

#[test]
fn a_rule_matches_either_view_of_a_proxied_request() {
    let policy = PolicyEvaluator::from_yaml(
        r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: RequestResponse
  namespaces: ["retail"]
  resources: [{group: edgefleet.io, resources: ["clusters/proxy"], resourceNames: ["edge-1"]}]
- level: Metadata
"#,
    )
    .unwrap();
    let alice = user("alice", &[]);
    let edge = res(&alice, "get", "", "pods", "default", "web-1");
    let hub = |cluster: &str| {
        res(
            &alice,
            "get",
            "edgefleet.io",
            "clusters/proxy",
            "retail",
            cluster,
        )
    };
    assert_eq!(
        policy.evaluate_any(&[&edge, &hub("edge-1")]).level,
        Level::RequestResponse
    );
    assert_eq!(
        policy.evaluate_any(&[&edge, &hub("edge-2")]).level,
        Level::Metadata
    );
    assert_eq!(policy.evaluate(&edge).level, Level::Metadata);
}
