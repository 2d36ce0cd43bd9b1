//! What headers cross from the hub to the edge kube-apiserver and back.
//!
//! Requests keep everything the hub sent (notably `Impersonate-User`, `Impersonate-Group`
//! (repeated), `Impersonate-Uid`, `Impersonate-Extra-*`, `Accept`, `Content-Type`) except:
//!
//! * `Authorization` and `Proxy-Authorization`: the caller's credentials are never forwarded
//!   (the hub strips them already; the agent does not rely on that). The agent's own
//!   credentials are added after this step, by the upstream transport.
//! * hop-by-hop headers (the tunnel crate's one list, [`edgefleet_tunnel::forwarding`]:
//!   `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`): they describe
//!   the hop from the hub, not the hop to the upstream.
//! * `Host`: the upstream connection has its own.
//!
//! Responses lose their hop-by-hop headers (HTTP/2 forbids them on the tunnel).

use edgefleet_apimachinery::impersonation::IMPERSONATE_USER;
use edgefleet_tunnel::forwarding::remove_hop_by_hop;
use http::header::{self, HeaderMap};

use crate::error::UpstreamError;

/// Prepares the hub's request headers for the upstream (see the module docs).
pub fn sanitize_request(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::HOST);
}

/// Prepares the upstream's response headers for the tunnel.
pub fn sanitize_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
}

/// Refuses a request that does not say whom to impersonate: sent with only the agent's own
/// credentials, it would run with the agent's privileges instead of the caller's. The hub sets
/// `Impersonate-User` on every request it forwards, so this only ever catches a hub bug.
pub fn require_impersonation(headers: &HeaderMap) -> Result<(), UpstreamError> {
    match headers.get(IMPERSONATE_USER) {
        Some(user) if !user.is_empty() => Ok(()),
        _ => Err(UpstreamError::NotImpersonated),
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderName;
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn requests_keep_impersonation_and_lose_credentials_and_hop_by_hop_headers() {
        let mut h = headers(&[
            ("authorization", "Bearer caller-token"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("impersonate-user", "alice"),
            ("impersonate-group", "devs"),
            ("impersonate-group", "system:authenticated"),
            ("impersonate-uid", "1234"),
            ("impersonate-extra-scopes", "view"),
            ("accept", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "hub.example.com"),
        ]);
        sanitize_request(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "impersonate-extra-scopes",
                "impersonate-group",
                "impersonate-uid",
                "impersonate-user"
            ]
        );
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["devs", "system:authenticated"]);
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_only() {
        let mut h = headers(&[
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("audit-id", "abc"),
        ]);
        sanitize_response(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "audit-id"]);
    }

    #[test]
    fn a_request_must_say_whom_to_impersonate() {
        assert!(require_impersonation(&headers(&[("impersonate-user", "alice")])).is_ok());
        for h in [headers(&[]), headers(&[("impersonate-user", "")])] {
            assert!(matches!(
                require_impersonation(&h),
                Err(UpstreamError::NotImpersonated)
            ));
        }
    }
}
