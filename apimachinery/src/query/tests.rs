use proptest::prelude::*;

use super::*;

#[test]
fn booleans_are_true_unless_absent_zero_or_false() {
    let cases = [
        (None, false),
        (Some("watch=true"), true),
        (Some("watch=True"), true),
        (Some("watch=1"), true),
        (Some("watch=yes"), true),
        (Some("watch=maybe"), true),
        (Some("watch="), true),
        (Some("watch"), true),
        (Some("watch=false"), false),
        (Some("watch=FALSE"), false),
        (Some("watch=False"), false),
        (Some("watch=0"), false),
        (Some("watch=00"), true),
        (Some("resourceVersion=5"), false),
        (Some("watcher=true"), false),
    ];
    for (query, want) in cases {
        assert_eq!(flag(query, "watch"), want, "{query:?}");
        assert_eq!(QueryParams::parse(query).flag("watch"), want, "{query:?}");
    }
}

#[test]
fn a_repeated_parameter_is_read_from_its_first_value() {
    assert!(flag(Some("watch=true&watch=false"), "watch"));
    assert!(!flag(Some("watch=0&watch=1"), "watch"));
    let q = QueryParams::parse(Some("dryRun=All&limit=2&dryRun=x&limit=3"));
    assert_eq!(q.first("limit"), Some("2"));
    assert_eq!(q.values("dryRun").collect::<Vec<_>>(), ["All", "x"]);
}

#[test]
fn values_are_percent_decoded_with_plus_as_space() {
    let q = QueryParams::parse(Some("labelSelector=gpu%3Da100%2Cregion+in+%28eu%29"));
    assert_eq!(q.first("labelSelector"), Some("gpu=a100,region in (eu)"));
    assert!(q.contains("labelSelector") && !q.contains("fieldSelector"));
}

#[test]
fn integers_must_parse_when_present() {
    let q = QueryParams::parse(Some("limit=20&timeoutSeconds=&x=-3"));
    assert_eq!(q.int("limit"), Ok(Some(20)));
    assert_eq!(q.int("x"), Ok(Some(-3)));
    assert_eq!(q.int("continue"), Ok(None));
    assert!(
        q.int("timeoutSeconds").is_err(),
        "the empty value is no integer"
    );
}

proptest! {
    /// Any value other than `0` and `false` in some case turns a flag on.
    #[test]
    fn every_other_value_is_true(value in "\\PC*") {
        let query = format!("watch={}", form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>());
        let want = value != "0" && !value.eq_ignore_ascii_case("false");
        prop_assert_eq!(flag(Some(&query), "watch"), want);
    }

    /// Decoding never panics, whatever the bytes.
    #[test]
    fn any_query_decodes(query in "\\PC*") {
        let q = QueryParams::parse(Some(&query));
        let _ = (q.flag("watch"), q.int("limit"), q.values("dryRun").count());
    }
}
