//! Storage keys and continue tokens.
//!
//! ```text
//! edgefleet.io/<resource>/<namespace>/<name>     namespaced kinds
//! edgefleet.io/<resource>/<name>                 cluster-scoped kinds (Environment)
//! ```
//! The etcd backend prepends its prefix (`/registry/` by default), giving DESIGN.md's
//! `/registry/edgefleet.io/<resource>/<namespace>/<name>`.
//!
//! A continue token is base64 of `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key suffix>"}`,
//! the same shape kube-apiserver uses: the next page is read at the same revision from `start`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;
use crate::storage::Revision;

/// The key prefix of all objects of `resource`, or of those in `namespace`.
pub fn prefix(group: &str, resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{group}/{resource}/{ns}/"),
        _ => format!("{group}/{resource}/"),
    }
}

/// The key of one object.
pub fn object(group: &str, resource: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{group}/{resource}/{name}")
    } else {
        format!("{group}/{resource}/{namespace}/{name}")
    }
}

#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Encodes where the next page starts: after `last_key`, at `revision`.
pub fn encode_continue(resource_prefix: &str, last_key: &str, revision: Revision) -> String {
    let suffix = last_key.strip_prefix(resource_prefix).unwrap_or(last_key);
    // The next key strictly after `last_key`.
    let token = ContinueToken {
        v: TOKEN_VERSION.into(),
        rv: revision,
        start: format!("{suffix}\u{0}"),
    };
    STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a continue token into (start key, revision). The start key must stay under
/// `resource_prefix`, so a crafted token cannot read other resources.
pub fn decode_continue(resource_prefix: &str, token: &str) -> Result<(String, Revision), ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("continue key is not valid: {why}"));
    let raw = STANDARD
        .decode(token.trim())
        .map_err(|_| bad("not base64"))?;
    let token: ContinueToken =
        serde_json::from_slice(&raw).map_err(|_| bad("not a continue token"))?;
    if token.v != TOKEN_VERSION {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    if token.rv <= 0 {
        return Err(bad("incorrect encoded start resourceVersion"));
    }
    if token.start.is_empty()
        || token.start.starts_with('/')
        || token.start.split('/').any(|p| p == "..")
    {
        return Err(bad("key may not be empty, absolute or contain '..'"));
    }
    Ok((format!("{resource_prefix}{}", token.start), token.rv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            object("edgefleet.io", "clusters", "retail", "edge-1"),
            "edgefleet.io/clusters/retail/edge-1"
        );
        assert_eq!(
            object("edgefleet.io", "environments", "", "retail"),
            "edgefleet.io/environments/retail"
        );
        assert_eq!(
            prefix("edgefleet.io", "clusters", Some("retail")),
            "edgefleet.io/clusters/retail/"
        );
        assert_eq!(
            prefix("edgefleet.io", "clusters", None),
            "edgefleet.io/clusters/"
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_stay_inside_the_resource() {
        let p = "edgefleet.io/clusters/";
        let token = encode_continue(p, "edgefleet.io/clusters/retail/edge-1", 42);
        let (start, rv) = decode_continue(p, &token).unwrap();
        assert_eq!(
            (start.as_str(), rv),
            ("edgefleet.io/clusters/retail/edge-1\u{0}", 42)
        );
        assert!(start.as_str() > "edgefleet.io/clusters/retail/edge-1");

        for bad in [
            "???",
            "e30=",
            &STANDARD.encode(br#"{"v":"meta.k8s.io/v1","rv":3,"start":"../x"}"#),
        ] {
            let err = decode_continue(p, bad).unwrap_err();
            assert_eq!(err.code(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
