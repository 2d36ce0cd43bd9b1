//! Feeds arbitrary bytes to the label and field selector parsers: they must return a selector
//! or an error, never panic; a parsed label selector prints as text that parses back to it, and
//! a parsed field selector's text parses to a selector that prints the same.
#![no_main]

use edgefleet_apimachinery::selectors::{FieldSelectorExpr, LabelSelectorExpr};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(labels) = LabelSelectorExpr::parse(&text) {
        let printed = labels.to_string();
        assert_eq!(LabelSelectorExpr::parse(&printed).as_ref(), Ok(&labels), "{printed:?}");
    }
    if let Ok(fields) = FieldSelectorExpr::parse_any(&text) {
        let printed = fields.to_string();
        let again = FieldSelectorExpr::parse_any(&printed).expect("printed selectors parse");
        let reprinted = FieldSelectorExpr::parse_any(&again.to_string()).expect("reprinted selectors parse");
        assert_eq!(again.to_string(), reprinted.to_string());
    }
    let _ = FieldSelectorExpr::parse(&text, &["metadata.name", "metadata.namespace"]);
});
