//! Completing a request's audit record when its response is done.
//!
//! - A whole (sized) response is recorded as `ResponseComplete` *before* it is sent, so every
//!   response a client received is in the trail; if that record cannot be written, the client
//!   gets a 500 instead (fail closed).
//! - A streaming response (watch, proxied streams) records `ResponseStarted` before its first
//!   byte and `ResponseComplete` when the stream ends or the client goes away ([`AuditedBody`]).
//! - An upgraded stream (exec, attach, port-forward) is completed by the proxy when the stream
//!   ends; the request's [`AuditSlot`] hands the record over.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{self, error_response, Body};
use crate::audit::{AuditedRequest, Auditor, ResponseStatus};
use crate::errors::ApiError;

/// The request's audit record, where later stages (the proxy) can take it, and the trail it
/// belongs to (for session recordings).
#[derive(Clone)]
pub struct AuditSlot {
    request: Arc<Mutex<Option<AuditedRequest>>>,
    audit_id: Arc<str>,
    auditor: Auditor,
}

impl AuditSlot {
    pub fn new(request: AuditedRequest, auditor: Auditor) -> Self {
        AuditSlot {
            audit_id: request.audit_id().into(),
            request: Arc::new(Mutex::new(Some(request))),
            auditor,
        }
    }

    /// The request's audit ID, also after the record was taken.
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    /// Takes the record (the taker completes it).
    pub fn take(&self) -> Option<AuditedRequest> {
        self.request
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }
}

/// Names the request's audit record in its response, as kube does for every response.
pub fn with_audit_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert(crate::audit::AUDIT_ID_HEADER, v);
    }
    response
}

/// The status to record for a response whose body is `bytes` (a `metav1.Status` for errors).
fn response_status(code: StatusCode, bytes: &[u8]) -> ResponseStatus {
    let status = (code.is_client_error() || code.is_server_error())
        .then(|| {
            serde_json::from_slice::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>(bytes)
                .ok()
        })
        .flatten();
    match status {
        Some(s) => ResponseStatus::from_status(&s, code.as_u16()),
        None => ResponseStatus::code(code.as_u16()),
    }
}

/// Records the end of `response` for `audited` (or hands the response back untouched when the
/// record was taken by the proxy).
pub async fn complete(slot: AuditSlot, response: Response<Body>) -> Response<Body> {
    let Some(mut audited) = slot.take() else {
        return response;
    };
    let (parts, body) = with_audit_id(response, audited.audit_id()).into_parts();
    let code = parts.status;
    if body.size_hint().exact().is_some() {
        // A whole body: record it before it is sent.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                return error_response(&ApiError::Internal(format!("response body: {err}")))
            }
        };
        let status = response_status(code, &bytes);
        let recorded = audited.complete(status, audited_body(&bytes)).await;
        return match recorded {
            Ok(()) => Response::from_parts(parts, body::full(bytes)),
            Err(err) => error_response(&ApiError::from(err)),
        };
    }
    if let Err(err) = audited
        .response_started(ResponseStatus::code(code.as_u16()))
        .await
    {
        return error_response(&ApiError::from(err));
    }
    let body = AuditedBody {
        inner: body,
        audited: Some((audited, code)),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Bodies are recorded as objects only when they are JSON.
fn audited_body(bytes: &Bytes) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes.as_ref())
}

pin_project_lite::pin_project! {
    /// A streaming body that completes its audit record when it ends, fails or is dropped.
    pub struct AuditedBody {
        #[pin]
        inner: Body,
        audited: Option<(AuditedRequest, StatusCode)>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            finish(this.audited.take());
        }
    }
}

/// Writes `ResponseComplete` in the background (the response is already on its way).
fn finish(audited: Option<(AuditedRequest, StatusCode)>) {
    if let Some((audited, code)) = audited {
        tokio::spawn(async move {
            if let Err(err) = audited
                .complete(ResponseStatus::code(code.as_u16()), None)
                .await
            {
                tracing::error!(error = %err, "recording the end of a streamed response failed");
            }
        });
    }
}

impl http_body::Body for AuditedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            finish(this.audited.take());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
