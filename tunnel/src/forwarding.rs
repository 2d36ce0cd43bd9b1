//! What a proxy does to an HTTP message it forwards, Kubernetes-free: the hub forwards callers'
//! requests into the tunnel and the agent forwards them on to its kube-apiserver, and both relay
//! the responses back.
//!
//! * **Hop-by-hop headers** describe one connection, not the message (RFC 9110 §7.6.1), and HTTP/2
//!   forbids the connection-specific ones: `Connection` and every header it names, `Keep-Alive`,
//!   `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade` (the list of Go's `httputil.ReverseProxy`, which
//!   kube-apiserver's proxies use). [`remove_hop_by_hop`] drops them.
//! * **The WebSocket accept key** (RFC 6455 §4.2.2): the `Sec-WebSocket-Accept` a server answers
//!   to a client's `Sec-WebSocket-Key`, via tungstenite's `derive_accept_key`.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers, always removed (plus whatever `Connection` names).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The header names the `Connection` headers list (lowercase, as `HeaderMap` keys are).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether `name` is hop-by-hop in a message whose `Connection` lists `listed`.
pub fn is_hop_by_hop(name: &HeaderName, listed: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || listed.contains(name)
}

/// Removes the hop-by-hop headers from `headers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too; collect them before removing it.
    let listed = connection_listed(headers);
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`websocket`, `spdy/3.1`), lowercased:
/// only with `Connection: Upgrade` and a non-empty `Upgrade`.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<String> {
    let upgrading = connection_listed(headers).contains(&header::UPGRADE);
    let protocol = headers
        .get(header::UPGRADE)?
        .to_str()
        .ok()?
        .trim()
        .to_ascii_lowercase();
    (upgrading && !protocol.is_empty()).then_some(protocol)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    tungstenite::handshake::derive_accept_key(key.as_bytes())
}

#[cfg(test)]
mod tests {
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
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("content-type", "application/json"),
            ("impersonate-user", "alice"),
            ("host", "hub.example.com"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "host", "impersonate-user"]);
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade() {
        let spdy = headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]);
        assert_eq!(upgrade_protocol(&spdy).as_deref(), Some("spdy/3.1"));
        let listed = headers(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", " websocket "),
        ]);
        assert_eq!(upgrade_protocol(&listed).as_deref(), Some("websocket"));
        assert_eq!(
            upgrade_protocol(&headers(&[("upgrade", "websocket")])),
            None
        );
        assert_eq!(
            upgrade_protocol(&headers(&[("connection", "upgrade"), ("upgrade", "")])),
            None
        );
    }

    #[test]
    fn websocket_accept_matches_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
