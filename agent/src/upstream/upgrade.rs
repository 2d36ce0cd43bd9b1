//! Upgrades (`kubectl exec`, `attach`, `port-forward`, `cp`): an RFC 8441 extended CONNECT from
//! the hub becomes an HTTP/1.1 `Upgrade` request to the upstream.
//!
//! ```text
//!  hub ── CONNECT :protocol websocket|SPDY/3.1 ──► agent                      kube-apiserver
//!         :path /api/v1/namespaces/n/pods/p/exec?command=sh&stdin=true…
//!         impersonate-*, sec-websocket-protocol | x-stream-protocol-version
//!                                                 │ GET (websocket) / POST (SPDY) same path+query
//!                                                 │ Connection: Upgrade, Upgrade: websocket|SPDY/3.1
//!                                                 │ Sec-WebSocket-Key (fresh) + Version 13  (websocket)
//!                                                 │ + the hub's headers, + the agent's credentials
//!                                                 ├────────────────────────────────────────────►
//!                                                 │◄──────────── 101 Switching Protocols ───────
//!  ◄── 200, sec-websocket-protocol / x-stream-protocol-version (the upstream's choice) ─┤
//!  ◄═══════════════════ bytes both ways until either side closes ══════════════════════►
//!
//!  upstream answers non-101: its status, headers and body are relayed (403 from edge RBAC, …),
//!  except 2xx, which would read as "upgraded" to the hub: that becomes 502.
//! ```
//!
//! The HTTP/2 CONNECT carries no method, so the upstream method follows what kubectl sends for
//! each protocol: GET for WebSocket (RFC 6455 requires it), POST for SPDY. The hub must not send
//! `Connection`/`Upgrade` (HTTP/2 forbids them) nor `Sec-WebSocket-Key` (RFC 8441 has none): the
//! agent creates the HTTP/1.1 handshake headers itself and checks the upstream's
//! `Sec-WebSocket-Accept`. The WebSocket frames then pass through unchanged, kubectl's masking
//! included, so the hub answers kubectl's own handshake (its `Sec-WebSocket-Accept`) itself.

use base64::Engine;
use bytes::Bytes;
use edgefleet_tunnel::{error_chain, forwarding, BoxError, TunnelBody};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use rand::RngCore;

use super::{headers, Upstream, UpstreamError};
use crate::status;
use crate::timeouts::UPSTREAM_RESPONSE_HEADERS_TIMEOUT;

/// `Upgrade` value for SPDY, as kubectl spells it.
pub const SPDY_3_1: &str = "SPDY/3.1";

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The protocols the agent upgrades to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeProtocol {
    /// RFC 6455 WebSocket (`v5.channel.k8s.io`, port-forward over WebSocket, …).
    WebSocket,
    /// SPDY/3.1 (the older kubectl streaming protocol).
    Spdy,
}

impl UpgradeProtocol {
    /// From the CONNECT's `:protocol` (case-insensitive: `websocket`, `SPDY/3.1`).
    pub fn from_connect_protocol(protocol: &str) -> Option<Self> {
        if protocol.eq_ignore_ascii_case("websocket") {
            Some(Self::WebSocket)
        } else if protocol.eq_ignore_ascii_case(SPDY_3_1) {
            Some(Self::Spdy)
        } else {
            None
        }
    }

    /// The method of the upstream request (see the module docs).
    pub fn method(self) -> Method {
        match self {
            Self::WebSocket => Method::GET,
            Self::Spdy => Method::POST,
        }
    }

    fn upgrade_header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::WebSocket => "websocket",
            Self::Spdy => SPDY_3_1,
        })
    }
}

/// Handles an extended CONNECT; every failure becomes a Status response.
#[tracing::instrument(skip_all, fields(path = %req.uri().path()))]
pub async fn upgrade<B>(upstream: &Upstream, mut req: Request<B>) -> Response<TunnelBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Taken before anything else: it resolves once our 200 has gone out on the tunnel.
    let from_hub = hyper::upgrade::on(&mut req);
    let result = try_upgrade(upstream, req).await;
    match result {
        Ok(Upgrade::Switched {
            response,
            to_upstream,
        }) => {
            tokio::spawn(async move {
                let (hub, upstream) = tokio::join!(from_hub, to_upstream);
                match (hub, upstream) {
                    (Ok(hub), Ok(upstream)) => splice(hub, upstream).await,
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::debug!(%error, "upgrade abandoned before any byte moved")
                    }
                }
            });
            response
        }
        Ok(Upgrade::Refused(response)) => response,
        Err(error) => {
            tracing::warn!("upgrade failed: {}", error_chain(&error));
            status::upstream_error(&error)
        }
    }
}

enum Upgrade {
    /// The upstream switched protocols: answer the hub with `response`, then splice.
    Switched {
        response: Response<TunnelBody>,
        to_upstream: hyper::upgrade::OnUpgrade,
    },
    /// The upstream refused; relay its answer.
    Refused(Response<TunnelBody>),
}

async fn try_upgrade<B>(upstream: &Upstream, req: Request<B>) -> Result<Upgrade, UpstreamError> {
    let protocol = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let protocol = UpgradeProtocol::from_connect_protocol(&protocol)
        .ok_or(UpstreamError::UnsupportedProtocol(protocol))?;
    headers::require_impersonation(req.headers())?;
    let uri = upstream.uri_for(req.uri())?;
    let key = (protocol == UpgradeProtocol::WebSocket).then(websocket_key);
    let request = upstream_request(protocol, req.headers(), uri.clone(), key.as_deref())?;

    let mut response = tokio::time::timeout(
        UPSTREAM_RESPONSE_HEADERS_TIMEOUT,
        super::transport::send(&upstream.inner.transports.upgrade, request),
    )
    .await
    .map_err(|_| UpstreamError::Timeout {
        url: super::url_text(&uri),
        after: UPSTREAM_RESPONSE_HEADERS_TIMEOUT,
    })?
    .map_err(|error| {
        UpstreamError::from_transport(&uri, error, crate::timeouts::UPSTREAM_CONNECT_TIMEOUT)
    })?;

    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(key) = &key {
            let accepted = response.headers().get(SEC_WEBSOCKET_ACCEPT);
            if accepted.map(HeaderValue::as_bytes)
                != Some(forwarding::websocket_accept(key).as_bytes())
            {
                return Err(UpstreamError::WebSocketAccept);
            }
        }
        let to_upstream = hyper::upgrade::on(&mut response);
        let mut answer = Response::new(edgefleet_tunnel::body::empty());
        *answer.headers_mut() = connect_response_headers(response.headers());
        return Ok(Upgrade::Switched {
            response: answer,
            to_upstream,
        });
    }
    if status.is_success() {
        return Err(UpstreamError::NoUpgrade { status });
    }
    let (mut parts, body) = response.into_parts();
    headers::sanitize_response(&mut parts.headers);
    parts.version = Version::default();
    parts.extensions = http::Extensions::new();
    Ok(Upgrade::Refused(Response::from_parts(parts, body)))
}

/// The HTTP/1.1 Upgrade request for the hub's CONNECT headers.
pub fn upstream_request(
    protocol: UpgradeProtocol,
    hub_headers: &HeaderMap,
    uri: Uri,
    websocket_key: Option<&str>,
) -> Result<Request<TunnelBody>, UpstreamError> {
    let mut headers = hub_headers.clone();
    headers::sanitize_request(&mut headers);
    // The handshake is ours to make; a stale key or version from the hub must not leak in.
    for name in [
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_ACCEPT,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, protocol.upgrade_header());
    if let Some(key) = websocket_key {
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(key).map_err(|e| UpstreamError::Request(e.into()))?,
        );
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    let mut request = Request::builder()
        .method(protocol.method())
        .uri(uri)
        .body(edgefleet_tunnel::body::empty())
        .map_err(UpstreamError::Request)?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Headers of the 200 answering the CONNECT: what the upstream negotiated
/// (`Sec-WebSocket-Protocol`, `X-Stream-Protocol-Version`, `Sec-WebSocket-Extensions`, …),
/// without the HTTP/1.1 handshake's own headers.
pub fn connect_response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = upstream.clone();
    headers::sanitize_response(&mut headers);
    headers.remove(SEC_WEBSOCKET_ACCEPT);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> String {
    let mut nonce = [0_u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

async fn splice(hub: hyper::upgrade::Upgraded, upstream: hyper::upgrade::Upgraded) {
    let mut hub = TokioIo::new(hub);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut hub, &mut upstream).await {
        Ok((to_upstream, to_hub)) => {
            tracing::debug!(to_upstream, to_hub, "upgraded stream closed")
        }
        Err(error) => tracing::debug!(%error, "upgraded stream ended"),
    }
}
