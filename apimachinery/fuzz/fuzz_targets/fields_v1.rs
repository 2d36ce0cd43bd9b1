//! Feeds arbitrary bytes, as JSON, to the fieldsV1 decoder (what a client may send in
//! `metadata.managedFields[].fieldsV1`): it must return a set or an error, never panic, and a
//! decoded set must encode to a document that decodes to the same set.
#![no_main]

use edgefleet_apimachinery::apply::FieldSet;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(set) = FieldSet::from_fields_v1(&document) {
        let encoded = set.to_fields_v1();
        let decoded = FieldSet::from_fields_v1(&encoded).expect("an encoded set decodes");
        assert_eq!(decoded, set);
        assert_eq!(decoded.to_fields_v1(), encoded);
    }
});
