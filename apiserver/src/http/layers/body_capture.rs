//! Body capture: the request body read (bounded) for the audit record, when the policy's level
//! records request bodies — never for upgrades, whose "body" is the upgraded protocol.
//!
//! The last layer before the router, because only an authorized request's body is worth
//! reading, and because it is where the request body becomes the one body type
//! ([`Body`]) the router and the proxy take: a body read for the record is handed on whole.
//! A body over [`MAX_REQUEST_BODY_BYTES`](crate::http::body::MAX_REQUEST_BODY_BYTES) is
//! refused here (413) rather than recorded in part.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt as _;
use tower::{Layer, Service};

use super::{AuditContext, ServiceFuture};
use crate::http::body::{self, error_response, Body, BoxError};

/// Reads the request body for the audit record when the record wants it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BodyCaptureLayer;

impl<S> Layer<S> for BodyCaptureLayer {
    type Service = CaptureBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CaptureBody { inner }
    }
}

/// See [`BodyCaptureLayer`].
#[derive(Clone, Debug)]
pub struct CaptureBody<S> {
    inner: S,
}

/// Whether a request's body is read for its record.
pub fn captures(audit: Option<&AuditContext>, headers: &HeaderMap) -> bool {
    audit.is_some_and(AuditContext::wants_request_body)
        && !headers.contains_key(http::header::UPGRADE)
}

impl<S, B> Service<Request<B>> for CaptureBody<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        Box::pin(async move {
            let (parts, request_body) = req.into_parts();
            let audit = parts.extensions.get::<AuditContext>();
            let request_body = if captures(audit, &parts.headers) {
                match body::read_body(request_body).await {
                    Ok(bytes) => {
                        if let Some(audit) = audit {
                            audit.set_request_body(&bytes);
                        }
                        body::full(bytes)
                    }
                    Err(err) => return Ok(error_response(&err)),
                }
            } else {
                request_body
                    .map_err(|e| std::io::Error::other(e.into()))
                    .boxed_unsync()
            };
            inner.call(Request::from_parts(parts, request_body)).await
        })
    }
}
