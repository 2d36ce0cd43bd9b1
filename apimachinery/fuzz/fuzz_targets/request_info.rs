//! Feeds arbitrary bytes to the RequestInfo parser as a method, a path and a query: it must
//! return, never panic, and what it returns must describe the path it was given.
#![no_main]

use edgefleet_apimachinery::request_info::parse;
use http::Method;

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(first) % METHODS.len()];
    let text = String::from_utf8_lossy(rest);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*text, None),
    };
    let info = parse(method, path, query);
    assert_eq!(info.path, path);
    if info.is_resource_request {
        assert!(info.api_prefix == "api" || info.api_prefix == "apis");
        if info.verb == "deletecollection" {
            assert!(info.name.is_empty());
        }
    } else {
        assert_eq!(info.verb, method.as_str().to_lowercase());
    }
});
