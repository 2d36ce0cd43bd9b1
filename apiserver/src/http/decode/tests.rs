use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

#[test]
fn a_repeated_key_is_reported_in_kubes_words_at_any_depth_and_the_last_one_wins() {
    let body = br#"{"kind":"Fleet","metadata":{"name":"f-dup3","name":"f-dup4","labels":{"a":"1","a":"2"}},"spec":{"x":[{"y":1,"y":2}]}}"#;
    let decoded = json(body).unwrap();
    assert_eq!(decoded.value["metadata"]["name"], "f-dup4");
    assert_eq!(decoded.value["metadata"]["labels"]["a"], "2");
    assert_eq!(
        decoded.duplicates,
        [
            "duplicate field \"name\"",
            "duplicate field \"a\"",
            "duplicate field \"y\""
        ]
    );
    assert_eq!(
        decoded.value,
        serde_json::from_slice::<Value>(body).unwrap(),
        "the same value the plain decoder builds"
    );
}

#[test]
fn yaml_repeated_keys_are_reported_too() {
    let decoded = yaml(b"metadata:\n  name: a\n  name: b\nspec: {}\n").unwrap();
    assert_eq!(
        decoded.value,
        json!({"metadata": {"name": "b"}, "spec": {}})
    );
    assert_eq!(decoded.duplicates, ["duplicate field \"name\""]);
}

#[test]
fn each_repeated_key_is_reported_once_and_the_list_is_bounded() {
    let once = json(br#"[{"a":1,"a":2,"a":3},{"a":1,"a":2}]"#).unwrap();
    assert_eq!(once.duplicates, ["duplicate field \"a\""]);

    let many: String = (0..2 * MAX_DUPLICATES)
        .map(|i| format!("\"k{i}\":1,\"k{i}\":2"))
        .collect::<Vec<_>>()
        .join(",");
    let decoded = json(format!("{{{many}}}").as_bytes()).unwrap();
    assert_eq!(decoded.duplicates.len(), MAX_DUPLICATES);
}

#[test]
fn the_decoders_limits_still_hold() {
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let err = json(deep.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    assert!(json(b"{} {}").is_err(), "one document only");
    assert!(json(b"{\"a\":").is_err());
}

#[test]
fn strict_refuses_duplicate_fields_warn_reports_them_and_ignore_does_not() {
    let body = br#"{"metadata":{"name":"a","name":"b"}}"#;
    let err = write_body(body, BodyType::Json, FieldValidation::Strict).unwrap_err();
    assert_eq!(err.code(), http::StatusCode::BAD_REQUEST);
    assert_eq!(
        err.to_string(),
        "strict decoding error: duplicate field \"name\""
    );
    let (value, warnings) = write_body(body, BodyType::MergePatch, FieldValidation::Warn).unwrap();
    assert_eq!(value["metadata"]["name"], "b");
    assert_eq!(warnings, ["duplicate field \"name\""]);
    let (_, warnings) = write_body(body, BodyType::Json, FieldValidation::Ignore).unwrap();
    assert!(warnings.is_empty());
    let (_, warnings) = write_body(
        b"metadata:\n  name: a\n  name: b\n",
        BodyType::ApplyPatch,
        FieldValidation::Warn,
    )
    .unwrap();
    assert_eq!(warnings, ["duplicate field \"name\""]);
}

/// JSON values as request bodies hold them.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9 ._/-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_json_decodes_as_serde_json_decodes_it(v in value()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let decoded = json(&bytes).unwrap();
        prop_assert_eq!(&decoded.value, &serde_json::from_slice::<Value>(&bytes).unwrap());
        prop_assert!(decoded.duplicates.is_empty());
    }

    #[test]
    fn any_yaml_decodes_as_the_yaml_decoder_decodes_it(v in value()) {
        let text = serde_yaml_ng::to_string(&v).unwrap();
        let decoded = yaml(text.as_bytes()).unwrap();
        prop_assert_eq!(&decoded.value, &serde_yaml_ng::from_str::<Value>(&text).unwrap());
        prop_assert!(decoded.duplicates.is_empty());
    }

    #[test]
    fn a_key_written_twice_is_found(v in value(), key in "[a-z]{1,4}") {
        let first = serde_json::to_string(&v).unwrap();
        let body = format!("{{\"{key}\":{first},\"{key}\":{first}}}");
        let decoded = json(body.as_bytes()).unwrap();
        prop_assert_eq!(decoded.duplicates.first(), Some(&format!("duplicate field {key:?}")));
    }

    /// The decoder reads bytes from the network: whatever they are, it answers.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = json(&bytes);
        let _ = yaml(&bytes);
    }
}
