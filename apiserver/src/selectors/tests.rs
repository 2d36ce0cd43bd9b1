use std::collections::BTreeMap;

use edgefleet_api::{LabelSelector, LabelSelectorRequirement};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn equality_and_existence() {
    let gpu = labels(&[("gpu", "a100"), ("region", "eu")]);
    let cases = [
        ("", true),
        ("gpu", true),
        ("!gpu", false),
        ("!zone", true),
        ("gpu=a100", true),
        ("gpu==a100", true),
        ("gpu!=a100", false),
        ("zone!=a", true),
        ("gpu=a100,region=us", false),
        ("gpu = a100 , region = eu", true),
    ];
    for (sel, want) in cases {
        assert_eq!(
            LabelSelectorExpr::parse(sel).unwrap().matches(&gpu),
            want,
            "{sel:?}"
        );
    }
}

#[test]
fn set_based() {
    let l = labels(&[("region", "eu"), ("tier", "3")]);
    for (sel, want) in [
        ("region in (eu,us)", true),
        ("region in (us)", false),
        ("region notin (us, ap)", true),
        ("zone notin (a)", true),
        ("zone in (a)", false),
        ("region in (eu),tier in (3)", true),
        ("tier>2", true),
        ("tier<3", false),
    ] {
        assert_eq!(
            LabelSelectorExpr::parse(sel).unwrap().matches(&l),
            want,
            "{sel:?}"
        );
    }
}

#[test]
fn malformed_selectors_are_errors() {
    for bad in [
        "gpu in (a",
        "gpu in a",
        "a,,b",
        "bad key!=x",
        "x=has space",
        "tier>three",
        "=x",
    ] {
        assert!(
            LabelSelectorExpr::parse(bad).is_err(),
            "{bad:?} should not parse"
        );
    }
}

#[test]
fn from_metav1_label_selector() {
    let sel = LabelSelector {
        match_labels: Some([("gpu".to_string(), "a100".to_string())].into()),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "region".into(),
            operator: "NotIn".into(),
            values: Some(vec!["us".into()]),
        }]),
    };
    let expr = LabelSelectorExpr::from_label_selector(&sel).unwrap();
    assert!(expr.matches(&labels(&[("gpu", "a100"), ("region", "eu")])));
    assert!(!expr.matches(&labels(&[("gpu", "a100"), ("region", "us")])));
    assert!(!expr.matches(&labels(&[("region", "eu")])));
}

const FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

fn fields_of<'a>(name: &'a str, ns: &'a str) -> impl Fn(&str) -> Option<String> + 'a {
    move |f: &str| match f {
        "metadata.name" => Some(name.to_string()),
        "metadata.namespace" => Some(ns.to_string()),
        _ => None,
    }
}

#[test]
fn field_selectors() {
    let f = fields_of("edge-1", "retail");
    for (sel, want) in [
        ("metadata.name=edge-1", true),
        ("metadata.name==edge-1", true),
        ("metadata.name!=edge-1", false),
        ("metadata.namespace=retail,metadata.name!=edge-2", true),
        ("metadata.namespace=lab", false),
    ] {
        assert_eq!(
            FieldSelectorExpr::parse(sel, FIELDS).unwrap().matches(&f),
            want,
            "{sel:?}"
        );
    }
    let sel = FieldSelectorExpr::parse("metadata.name=edge-1", FIELDS).unwrap();
    assert_eq!(sel.required_value("metadata.name"), Some("edge-1"));
    let escaped = FieldSelectorExpr::parse(r"metadata.name=a\,b", FIELDS).unwrap();
    assert!(escaped.matches(&fields_of("a,b", "x")));
    let err = FieldSelectorExpr::parse("spec.paused=true", FIELDS).unwrap_err();
    assert!(
        err.to_string()
            .contains("field label not supported: \"spec.paused\""),
        "{err}"
    );
    assert!(FieldSelectorExpr::parse("metadata.name", FIELDS).is_err());
}
