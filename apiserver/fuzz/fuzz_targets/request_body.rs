//! Feeds arbitrary bytes to the request body decoders: they must return a value or an error,
//! never panic, and a JSON value must be the one serde_json decodes (the duplicate-key visitor
//! changes what is reported, never what is built).
#![no_main]

use edgefleet_apiserver::http::decode::{json, yaml, MAX_DUPLICATES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = json(data) {
        assert!(decoded.duplicates.len() <= MAX_DUPLICATES);
        let plain: serde_json::Value = serde_json::from_slice(data).expect("serde_json agrees");
        assert_eq!(decoded.value, plain);
    }
    if let Ok(decoded) = yaml(data) {
        assert!(decoded.duplicates.len() <= MAX_DUPLICATES);
    }
});
