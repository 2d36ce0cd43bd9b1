//! Forwarding an ordinary request: same method, path, query and (streamed) body to the
//! upstream; status, headers and (streamed) body back. A watch or `logs -f` response flows
//! chunk by chunk for as long as the hub reads it; only the wait for the response headers is
//! bounded ([`UPSTREAM_RESPONSE_HEADERS_TIMEOUT`]).

use bytes::Bytes;
use edgefleet_tunnel::{body, error_chain, BoxError, TunnelBody};
use http::{Request, Response, Version};

use super::{headers, Upstream, UpstreamError};
use crate::status;
use crate::timeouts::UPSTREAM_RESPONSE_HEADERS_TIMEOUT;

/// Forwards `req`; every failure becomes a Status response.
#[tracing::instrument(skip_all, fields(method = %req.method(), path = %req.uri().path()))]
pub async fn forward<B>(upstream: &Upstream, req: Request<B>) -> Response<TunnelBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match try_forward(upstream, req).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!("forwarding failed: {}", error_chain(&error));
            status::upstream_error(&error)
        }
    }
}

async fn try_forward<B>(
    upstream: &Upstream,
    req: Request<B>,
) -> Result<Response<TunnelBody>, UpstreamError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    headers::require_impersonation(&parts.headers)?;
    headers::sanitize_request(&mut parts.headers);
    parts.uri = upstream.uri_for(&parts.uri)?;
    // The tunnel speaks HTTP/2; the pool picks HTTP/2 or HTTP/1.1 per upstream connection.
    parts.version = Version::HTTP_11;
    // Extensions of the tunnel's stream (hyper's upgrade handle, ...) mean nothing upstream.
    parts.extensions = http::Extensions::new();
    let uri = parts.uri.clone();
    let request = Request::from_parts(parts, body::boxed(body));

    let response = tokio::time::timeout(
        UPSTREAM_RESPONSE_HEADERS_TIMEOUT,
        super::transport::send(&upstream.inner.transports.pooled, request),
    )
    .await
    .map_err(|_| UpstreamError::Timeout {
        url: super::url_text(&uri),
        after: UPSTREAM_RESPONSE_HEADERS_TIMEOUT,
    })?
    .map_err(|error| {
        UpstreamError::from_transport(&uri, error, crate::timeouts::UPSTREAM_CONNECT_TIMEOUT)
    })?;

    let (mut parts, body) = response.into_parts();
    headers::sanitize_response(&mut parts.headers);
    parts.version = Version::default();
    parts.extensions = http::Extensions::new();
    Ok(Response::from_parts(parts, body))
}
