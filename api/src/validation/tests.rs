use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn fields(errs: &ErrorList) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn dns_labels_and_subdomains() {
    for ok in ["a", "edge-1", "0abc", &"a".repeat(63)] {
        assert!(is_dns1123_label(ok).is_empty(), "{ok} should be a label");
    }
    for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
        assert!(
            !is_dns1123_label(bad).is_empty(),
            "{bad} should not be a label"
        );
    }
    assert!(is_dns1123_subdomain("gpu-operator.nvidia.com").is_empty());
    assert!(!is_dns1123_subdomain("a..b").is_empty());
    assert!(!is_dns1123_subdomain(".a").is_empty());
}

#[test]
fn qualified_names_and_label_values() {
    for ok in ["gpu", "edgefleet.io/region", "a_b.c-d", "k8s.io/Name"] {
        assert!(is_qualified_name(ok).is_empty(), "{ok}");
    }
    for bad in ["", "/a", "a/", "a/b/c", "-a", "UPPER.io/x", &"a".repeat(64)] {
        assert!(!is_qualified_name(bad).is_empty(), "{bad}");
    }
    assert!(is_label_value("").is_empty());
    assert!(is_label_value("eu-west_1.a").is_empty());
    assert!(!is_label_value("has space").is_empty());
    assert!(!is_label_value(&"v".repeat(64)).is_empty());
}

#[test]
fn int_or_percent() {
    let path = Path::new("spec").child("strategy").child("maxUnavailable");
    let positive = IntOrPercentRules { positive: true };
    let check = |v: IntOrString, rules| validate_int_or_percent(&v, &path, rules);
    assert!(check(IntOrString::Int(1), positive).is_empty());
    assert!(check(IntOrString::String("100%".into()), positive).is_empty());
    assert!(check(IntOrString::Int(0), IntOrPercentRules { positive: false }).is_empty());

    for bad in [
        IntOrString::Int(0),
        IntOrString::Int(-1),
        IntOrString::String("0%".into()),
        IntOrString::String("101%".into()),
        IntOrString::String("ten%".into()),
        IntOrString::String("5".into()),
        IntOrString::String("%".into()),
    ] {
        let errs = check(bad.clone(), positive);
        assert_eq!(fields(&errs), ["spec.strategy.maxUnavailable"], "{bad:?}");
        assert_eq!(errs.0[0].kind, ErrorType::Invalid);
    }
}

#[test]
fn kubernetes_versions() {
    let p = Path::new("v");
    for ok in ["v1.31.4", "v1.30.0+k3s1", "v1.32.0-rc.1", "v10.0.100"] {
        assert!(validate_kubernetes_version(ok, &p).is_empty(), "{ok}");
    }
    for bad in [
        "1.31.4", "v1.31", "v1.31.x", "v1..4", "v1.31.4+", "v1.31.4 ", "latest", "",
    ] {
        assert!(!validate_kubernetes_version(bad, &p).is_empty(), "{bad}");
    }
}

#[test]
fn object_meta_rules() {
    let rules = MetaRules {
        namespaced: true,
        name_is_label: true,
    };
    let mut meta = ObjectMeta {
        name: Some("edge-1".into()),
        namespace: Some("retail".into()),
        ..Default::default()
    };
    assert!(validate_object_meta(&meta, rules).is_empty());

    meta.name = Some("Edge_1".into());
    meta.labels = Some([("bad key!".to_string(), "v".to_string())].into());
    meta.namespace = None;
    let errs = validate_object_meta(&meta, rules);
    assert_eq!(
        fields(&errs),
        ["metadata.name", "metadata.namespace", "metadata.labels"]
    );

    let cluster_scoped = MetaRules {
        namespaced: false,
        name_is_label: true,
    };
    let env = ObjectMeta {
        name: Some("retail".into()),
        namespace: Some("x".into()),
        ..Default::default()
    };
    let errs = validate_object_meta(&env, cluster_scoped);
    assert_eq!(errs.0[0].kind, ErrorType::Forbidden);
    assert_eq!(fields(&errs), ["metadata.namespace"]);
}

#[test]
fn label_selectors() {
    let p = Path::new("spec").child("selector");
    let selector = LabelSelector {
        match_labels: Some([("gpu".to_string(), "a100".to_string())].into()),
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "region".into(),
                operator: "In".into(),
                values: None,
            },
            LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Exists".into(),
                values: Some(vec!["a".into()]),
            },
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Near".into(),
                values: None,
            },
        ]),
    };
    let errs = validate_label_selector(&selector, &p);
    assert_eq!(
        fields(&errs),
        [
            "spec.selector.matchExpressions[0].values",
            "spec.selector.matchExpressions[1].values",
            "spec.selector.matchExpressions[2].operator",
        ]
    );
    assert_eq!(errs.0[2].kind, ErrorType::NotSupported);
}

#[test]
fn messages_read_like_kube_apiserver() {
    let p = Path::new("spec").child("kubernetesVersion");
    let e = FieldError::invalid(&p, "1.x", "must be a version");
    assert_eq!(
        e.to_string(),
        "spec.kubernetesVersion: Invalid value: \"1.x\": must be a version"
    );
    let r = FieldError::required(&Path::new("spec").child("addons"), "");
    assert_eq!(r.to_string(), "spec.addons: Required value");
    let n = FieldError::not_supported(&Path::new("t"), "X", &["A", "B"]);
    assert_eq!(
        n.to_string(),
        "t: Unsupported value: \"X\": supported values: \"A\", \"B\""
    );
    let list: ErrorList = [e.clone(), r].into_iter().collect();
    assert!(list.to_string().starts_with("[spec.kubernetesVersion: "));
    assert_eq!(ErrorList(vec![e.clone()]).to_string(), e.to_string());
}
