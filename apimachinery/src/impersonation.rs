//! The impersonation headers (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>`), as
//! client-go writes them and kube-apiserver reads them.
//!
//! ```text
//! Impersonate-User: alice
//! Impersonate-Group: ops                     one header per group, in order
//! Impersonate-Group: system:authenticated
//! Impersonate-Uid: 42
//! Impersonate-Extra-scopes.example.com%2Fteam%20a: gpu     one header per value; the key
//! Impersonate-Extra-scopes.example.com%2Fteam%20a: ml      percent-encoded
//! ```
//!
//! An extra key becomes part of a header name, so client-go percent-encodes every byte that
//! may not stand in a header name (RFC 7230 `tchar`), and `%` itself, as `%XX` in upper-case hex
//! (`headerKeyEscape`); kube-apiserver lowercases the name (header names are case-insensitive)
//! and percent-decodes it (`url.PathUnescape`), keeping the text as sent when that fails. The
//! hub writes these headers on every request it forwards to an edge cluster; the agent refuses a
//! request without `Impersonate-User`; the hub's authentication reads them from its callers.
//! The same encoding names `X-Remote-Extra-<key>` headers of the front proxy.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub const IMPERSONATE_USER: HeaderName = HeaderName::from_static("impersonate-user");
pub const IMPERSONATE_GROUP: HeaderName = HeaderName::from_static("impersonate-group");
pub const IMPERSONATE_UID: HeaderName = HeaderName::from_static("impersonate-uid");
/// The prefix of `Impersonate-Extra-<key>`, lowercase as `HeaderMap` keys are.
pub const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";
/// Every impersonation header starts with this (lowercase).
pub const IMPERSONATE_PREFIX: &str = "impersonate-";

/// What client-go escapes in an extra key: everything but the `tchar`s other than `%`.
const EXTRA_KEY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'*')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Whether `name` is one of the impersonation headers.
pub fn is_impersonation_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(IMPERSONATE_PREFIX)
}

/// An extra key as it stands in a header name (client-go's `headerKeyEscape`).
pub fn encode_extra_key(key: &str) -> String {
    utf8_percent_encode(key, EXTRA_KEY_ESCAPED).to_string()
}

/// An extra key from (the lowercased tail of) a header name: percent-decoded, or as written
/// when it is not well-formed percent-encoding of UTF-8 (kube records it rather than drop it).
pub fn decode_extra_key(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return encoded.to_owned();
    }
    match percent_decode_str(encoded).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => encoded.to_owned(),
    }
}

/// The decoded key of an `Impersonate-Extra-<key>` header, `None` for other headers.
pub fn extra_key(name: &HeaderName) -> Option<String> {
    name.as_str()
        .strip_prefix(IMPERSONATE_EXTRA_PREFIX)
        .map(decode_extra_key)
}

/// Who a forwarded request acts as.
#[derive(Clone, Copy, Debug)]
pub struct Impersonate<'a> {
    pub user: &'a str,
    pub uid: &'a str,
    pub groups: &'a [String],
    pub extra: &'a BTreeMap<String, Vec<String>>,
}

/// A user, group, uid or extra value that cannot be sent in a header (a control character).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the caller's identity cannot be sent as a header")]
    Value,
    #[error("user extra key {0:?} cannot be sent as a header")]
    ExtraKey(String),
}

impl Impersonate<'_> {
    /// Sets the impersonation headers in `headers`, replacing any there were.
    pub fn write(&self, headers: &mut HeaderMap) -> Result<(), HeaderError> {
        let stale: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_impersonation_header(n))
            .cloned()
            .collect();
        for name in stale {
            headers.remove(name);
        }
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| HeaderError::Value);
        headers.insert(IMPERSONATE_USER, value(self.user)?);
        for group in self.groups {
            headers.append(IMPERSONATE_GROUP, value(group)?);
        }
        if !self.uid.is_empty() {
            headers.insert(IMPERSONATE_UID, value(self.uid)?);
        }
        for (key, values) in self.extra {
            let name = HeaderName::from_bytes(
                format!("{IMPERSONATE_EXTRA_PREFIX}{}", encode_extra_key(key)).as_bytes(),
            )
            .map_err(|_| HeaderError::ExtraKey(key.clone()))?;
            for v in values {
                headers.append(name.clone(), value(v)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn extra_keys_are_escaped_as_client_go_escapes_them() {
        assert_eq!(
            encode_extra_key("scopes.example.com/team a"),
            "scopes.example.com%2Fteam%20a"
        );
        assert_eq!(encode_extra_key("a%b"), "a%25b");
        assert_eq!(encode_extra_key("x!#$&'*+-.^_`|~"), "x!#$&'*+-.^_`|~");
        assert_eq!(encode_extra_key("k=v:é"), "k%3Dv%3A%C3%A9");
        assert_eq!(
            decode_extra_key("scopes.example.com%2fteam%20a"),
            "scopes.example.com/team a"
        );
        // Malformed escapes are kept as sent.
        assert_eq!(decode_extra_key("a%zz"), "a%zz");
        assert_eq!(decode_extra_key("a%ff"), "a%ff");
    }

    #[test]
    fn writing_replaces_the_impersonation_headers_there_were() {
        let mut headers = HeaderMap::new();
        headers.insert("impersonate-user", HeaderValue::from_static("root"));
        headers.insert("impersonate-extra-x", HeaderValue::from_static("y"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let groups = vec!["ops".to_owned(), "system:authenticated".to_owned()];
        let extra =
            BTreeMap::from([("Team/A".to_owned(), vec!["gpu".to_owned(), "ml".to_owned()])]);
        Impersonate {
            user: "alice",
            uid: "",
            groups: &groups,
            extra: &extra,
        }
        .write(&mut headers)
        .unwrap();
        assert_eq!(
            headers.get_all(IMPERSONATE_USER).iter().collect::<Vec<_>>(),
            ["alice"]
        );
        assert_eq!(
            headers
                .get_all(IMPERSONATE_GROUP)
                .iter()
                .collect::<Vec<_>>(),
            ["ops", "system:authenticated"]
        );
        assert!(
            headers.get(IMPERSONATE_UID).is_none() && headers.get("impersonate-extra-x").is_none()
        );
        let name = HeaderName::from_static("impersonate-extra-team%2fa");
        assert_eq!(
            headers.get_all(&name).iter().collect::<Vec<_>>(),
            ["gpu", "ml"]
        );
        // kube lowercases the name: an upper-case key comes back lowercased.
        assert_eq!(extra_key(&name).as_deref(), Some("team/a"));
        assert_eq!(headers.get("accept").unwrap(), "application/json");
        let bad = Impersonate {
            user: "a\nb",
            uid: "",
            groups: &[],
            extra: &BTreeMap::new(),
        };
        assert_eq!(bad.write(&mut HeaderMap::new()), Err(HeaderError::Value));
    }

    proptest! {
        /// Any lowercase key survives the trip through a header name.
        #[test]
        fn lowercase_extra_keys_round_trip(key in "\\PC*") {
            let key = key.to_lowercase();
            let encoded = encode_extra_key(&key);
            let name = HeaderName::from_bytes(format!("{IMPERSONATE_EXTRA_PREFIX}{encoded}").as_bytes());
            prop_assert!(name.is_ok() || key.is_empty(), "{:?}", encoded);
            if let Ok(name) = name {
                prop_assert_eq!(extra_key(&name), Some(key));
            }
        }

        /// Decoding any header tail never panics.
        #[test]
        fn decoding_never_panics(encoded in "\\PC*") {
            let _ = decode_extra_key(&encoded);
        }
    }
}
