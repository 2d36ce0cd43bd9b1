use std::collections::BTreeMap;

use edgefleet_api::{LabelSelector, LabelSelectorRequirement};

use proptest::prelude::*;

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

// ---- moved from the simulator's selector module: the simulator now parses with this one ------

#[test]
fn node_selectors_the_simulator_answers() {
    let gpu = labels(&[("nvidia.com/gpu.product", "NVIDIA-L4"), ("tier", "edge")]);
    let cpu = labels(&[("tier", "core")]);
    let cases = [
        ("", true, true),
        ("nvidia.com/gpu.product=NVIDIA-L4", true, false),
        ("nvidia.com/gpu.product==NVIDIA-L4", true, false),
        ("nvidia.com/gpu.product!=NVIDIA-L4", false, true),
        ("nvidia.com/gpu.product", true, false),
        ("!nvidia.com/gpu.product", false, true),
        ("tier in (edge, core)", true, true),
        ("tier notin (edge)", false, true),
        ("tier=edge,nvidia.com/gpu.product", true, false),
        ("tier in (edge,core),!nvidia.com/gpu.product", false, true),
    ];
    for (selector, on_gpu, on_cpu) in cases {
        let parsed = LabelSelectorExpr::parse(selector).unwrap();
        assert_eq!(parsed.matches(&gpu), on_gpu, "{selector:?} on the GPU node");
        assert_eq!(parsed.matches(&cpu), on_cpu, "{selector:?} on the CPU node");
    }
    for bad in [
        "tier in edge)",
        "tier in (edge",
        "a b=c",
        "=x",
        "tier within (a)",
    ] {
        assert!(LabelSelectorExpr::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn selectors_the_simulator_used_to_accept_are_refused() {
    // Its old parser checked neither keys nor values, nor that a set ends its requirement.
    for bad in [
        "tier=a b",
        "Tier Key=x",
        "tier=-edge",
        "tier in (a)b",
        "tier=edge)",
        "-tier",
        "tier in (a b)",
    ] {
        let err = LabelSelectorExpr::parse(bad).unwrap_err();
        assert!(
            err.to_string().starts_with("unable to parse requirement: "),
            "{bad:?}: {err}"
        );
    }
}

// ---- kube's grammar, case by case -------------------------------------------------------------

#[test]
fn kube_label_selector_grammar() {
    // (selector, its canonical form as kube prints it)
    let cases = [
        ("x=a,y=b,z=c", "x=a,y=b,z=c"),
        ("z=c , x=a", "x=a,z=c"),
        ("x==a", "x==a"),
        ("x!=a", "x!=a"),
        ("x>1", "x>1"),
        ("x<10", "x<10"),
        ("!x", "!x"),
        ("x", "x"),
        ("x=", "x="),
        ("x=,z= ", "x=,z="),
        ("x in (b, a ,a)", "x in (a,b)"),
        ("x notin(a)", "x notin (a)"),
        ("x in ()", "x in ()"),
        ("x in (,a)", "x in (,a)"),
        ("x in (a,,b)", "x in (,a,b)"),
        ("x in (a,)", "x in (,a)"),
        ("in in (in)", "in in (in)"),
        ("notin=in", "notin=in"),
        ("x\t=\na", "x=a"),
        ("", ""),
        ("   ", ""),
    ];
    for (selector, printed) in cases {
        let parsed = LabelSelectorExpr::parse(selector)
            .unwrap_or_else(|e| panic!("{selector:?} should parse: {e}"));
        assert_eq!(parsed.to_string(), printed, "{selector:?}");
    }
    for bad in [
        "x=a,",
        ",x=a",
        "x=a,,y=b",
        "x=a||y=b",
        "x==a==b",
        "!x=a",
        "x>a",
        "x<1.5",
        "x<-1",
        "x>",
        "x in (a",
        "x in a",
        "x notin ( a b )",
        "(x=a)",
        "x=(a)",
        "x=a=b",
        "a/b/c=x",
    ] {
        assert!(
            LabelSelectorExpr::parse(bad).is_err(),
            "{bad:?} should not parse"
        );
    }
}

#[test]
fn greater_and_less_compare_integers_and_need_the_label() {
    let sel = LabelSelectorExpr::parse("tier>2,rank<10").unwrap();
    assert!(sel.matches(&labels(&[("tier", "3"), ("rank", "9")])));
    assert!(!sel.matches(&labels(&[("tier", "3"), ("rank", "x")])));
    assert!(!sel.matches(&labels(&[("tier", "3")])));
}

#[test]
fn kube_field_selector_grammar() {
    let any = |s: &str| FieldSelectorExpr::parse_any(s);
    // Sorted terms, `==` printed as `=`, values escaped.
    assert_eq!(
        any(r"spec.nodeName==n1,metadata.name=a\,b")
            .unwrap()
            .to_string(),
        r"metadata.name=a\,b,spec.nodeName=n1"
    );
    assert_eq!(any("a=b,,c!=d").unwrap().to_string(), "a=b,c!=d");
    assert_eq!(any("a=").unwrap().required_value("a"), Some(""));
    // The field is split at the first operator and never trimmed.
    let spaced = any("metadata.name = x").unwrap();
    assert_eq!(spaced.required_value("metadata.name "), Some(" x"));
    assert!(FieldSelectorExpr::parse("metadata.name = x", FIELDS).is_err());
    for (bad, message) in [
        ("a", "invalid selector: 'a'; can't understand 'a'"),
        (
            r"a=b\c",
            r"invalid field selector: invalid escape sequence: \c",
        ),
        (
            r"a=b\",
            r"invalid field selector: invalid escape sequence: \",
        ),
        (
            "a=b=c",
            "invalid field selector: unescaped character in value: =",
        ),
        (
            r"a\=b=c",
            "invalid field selector: unescaped character in value: =",
        ),
    ] {
        assert_eq!(any(bad).unwrap_err().to_string(), message, "{bad:?}");
    }
    // kube's RequiresExactMatch: the first equality term of the sorted terms.
    let two = any("metadata.name=b,metadata.name=a").unwrap();
    assert_eq!(two.required_value("metadata.name"), Some("a"));
    assert_eq!(
        any("metadata.name!=a")
            .unwrap()
            .required_value("metadata.name"),
        None
    );
}

#[test]
fn one_split_unescaped_keeps_escapes_for_the_value_parser() {
    assert_eq!(split_unescaped(r"a\,b,c\\,d", ','), [r"a\,b", r"c\\", "d"]);
    assert_eq!(split_unescaped("", ','), [""]);
    assert_eq!(split_unescaped("é,ü", ','), ["é", "ü"]);
}

// ---- properties ---------------------------------------------------------------------------------

/// Text made of the label selector alphabet, so that random strings often parse.
fn selector_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a".to_owned()),
            Just("b/c".to_owned()),
            Just("x.io/k".to_owned()),
            Just("in".to_owned()),
            Just("notin".to_owned()),
            Just("1".to_owned()),
            Just("=".to_owned()),
            Just("!".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(",".to_owned()),
            Just(">".to_owned()),
            Just("<".to_owned()),
            Just(" ".to_owned()),
            Just("\0".to_owned()),
            "[a-z0-9]{1,3}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn field_term() -> impl Strategy<Value = (String, bool, String)> {
    (
        "[a-z]{1,3}(\\.[a-z]{1,3})?",
        any::<bool>(),
        "[a-z=,\\\\ ]{0,4}",
    )
}

proptest! {
    /// Whatever parses prints as kube prints it, and that text parses to the same selector.
    #[test]
    fn label_selectors_round_trip_through_their_text(s in selector_text()) {
        if let Ok(parsed) = LabelSelectorExpr::parse(&s) {
            let printed = parsed.to_string();
            prop_assert_eq!(LabelSelectorExpr::parse(&printed), Ok(parsed), "{:?} → {:?}", s, printed);
        }
    }

    /// Arbitrary input never panics either parser.
    #[test]
    fn selector_parsers_never_panic(s in "\\PC*", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let lossy = String::from_utf8_lossy(&bytes);
        for input in [s.as_str(), &lossy] {
            let _ = LabelSelectorExpr::parse(input);
            let _ = FieldSelectorExpr::parse_any(input);
            let _ = FieldSelectorExpr::parse(input, FIELDS);
        }
    }

    /// A selector built from terms prints with escaped values, parses back to the same terms,
    /// and selects what the terms say.
    #[test]
    fn field_selectors_round_trip_through_their_text(terms in proptest::collection::vec(field_term(), 0..4)) {
        let text = terms
            .iter()
            .map(|(f, eq, v)| format!("{f}{}{}", if *eq { "=" } else { "!=" }, escape_value(v)))
            .collect::<Vec<_>>()
            .join(",");
        let parsed = FieldSelectorExpr::parse_any(&text).unwrap();
        let again = FieldSelectorExpr::parse_any(&parsed.to_string()).unwrap();
        prop_assert_eq!(again.to_string(), parsed.to_string());
        let object: BTreeMap<String, String> =
            terms.iter().map(|(f, _, v)| (f.clone(), v.clone())).collect();
        let get = |f: &str| object.get(f).cloned();
        let want = terms.iter().all(|(f, eq, v)| (object[f] == *v) == *eq);
        prop_assert_eq!(parsed.matches(&get), want);
        prop_assert_eq!(again.matches(&get), want);
    }
}
