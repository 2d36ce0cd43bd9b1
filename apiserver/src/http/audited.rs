//! Completing a request's audit record when its response is done.
//!
//! - A whole response is recorded as `ResponseComplete` *before* it is sent, so every response a
//!   client received is in the trail; if that record cannot be written, the client gets a 500
//!   instead (fail closed). Whole means: built by the hub (already in memory), or relayed from
//!   an edge cluster with a `Content-Length` of at most [`MAX_BUFFERED_RELAYED_BYTES`].
//! - A streaming response (watch, larger or unsized proxied responses) records
//!   `ResponseStarted` before its first byte and `ResponseComplete` when the stream ends or the
//!   client goes away ([`AuditedBody`]). A relayed body is never read ahead of its client
//!   beyond that bound: a client that stops reading a `kubectl cp` of gigabytes must stall the
//!   edge, not fill the hub's memory.
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

/// Largest relayed response (by its `Content-Length`) read whole before it is sent, so that its
/// `ResponseComplete` is durable first. The tunnel's per-stream window: a size the hub holds
/// for a stream anyway while its client reads slower than the edge sends.
pub const MAX_BUFFERED_RELAYED_BYTES: u64 = edgefleet_tunnel::limits::STREAM_WINDOW_BYTES as u64;

/// Marks a response whose body is relayed from an edge cluster (in its extensions), as opposed
/// to one the hub built in memory.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

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
    let relayed = parts.extensions.get::<Relayed>().is_some();
    let whole = match body.size_hint().exact() {
        Some(len) => !relayed || len <= MAX_BUFFERED_RELAYED_BYTES,
        None => false,
    };
    if whole {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use http::Method;

    use super::*;
    use crate::audit::{segment, AuditConfig, RequestAttributes, SigningKey};
    use crate::auth::UserInfo;
    use edgefleet_apimachinery::request_info;

    /// How long `complete` may take before the test calls it stuck.
    const DEADLINE: Duration = Duration::from_secs(30);

    const PROXY_GET: &str =
        "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy/api/v1/pods";

    /// A body that announces `len` bytes and never yields one: an edge response whose client
    /// (or edge) has stalled.
    struct Announced {
        len: u64,
    }

    impl http_body::Body for Announced {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.len)
        }
    }

    async fn slot(dir: &Path) -> AuditSlot {
        let mut config = AuditConfig::new(dir, "hub-0", SigningKey::generate().unwrap().0);
        config.checkpoint_interval = Duration::from_secs(3600);
        let auditor = Auditor::open(config).await.unwrap();
        let info = request_info::parse(&Method::GET, PROXY_GET, None);
        let attrs = RequestAttributes::proxied(
            &info,
            &Method::GET,
            None,
            UserInfo::new("alice"),
            PROXY_GET,
        );
        let request = auditor.begin(attrs).await.unwrap();
        AuditSlot::new(request, auditor)
    }

    fn relayed(body: Body) -> Response<Body> {
        let mut response = Response::new(body);
        response.extensions_mut().insert(Relayed);
        response
    }

    /// The stages of the events written so far, in trail order.
    fn stages(dir: &Path) -> Vec<String> {
        let mut stages = Vec::new();
        for (_, path) in segment::list_segments(dir).unwrap() {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(stage) = record["event"]["stage"].as_str() {
                    stages.push(stage.to_string());
                }
            }
        }
        stages
    }

    #[tokio::test]
    async fn a_large_relayed_response_streams_instead_of_being_read_ahead_of_its_client() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = slot(tmp.path()).await;
        let announced = Announced { len: 1 << 40 }.boxed_unsync();

        let response = tokio::time::timeout(DEADLINE, complete(slot, relayed(announced)))
            .await
            .expect("complete read a 1 TiB relayed body instead of streaming it");

        assert_eq!(response.body().size_hint().exact(), Some(1 << 40));
        assert_eq!(stages(tmp.path()), ["RequestReceived"]);

        // The client goes away: the record is completed then.
        drop(response);
        edgefleet_testkit::eventually!(
            within = DEADLINE,
            {
                let stages = stages(tmp.path());
                if stages == ["RequestReceived", "ResponseComplete"] {
                    Ok(())
                } else {
                    Err(stages)
                }
            },
            "a ResponseComplete after the stream was dropped"
        );
    }

    #[tokio::test]
    async fn a_small_relayed_response_is_recorded_complete_before_it_is_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = slot(tmp.path()).await;
        let json = Bytes::from_static(br#"{"kind":"PodList","items":[]}"#);

        let response = complete(slot, relayed(body::full(json.clone()))).await;

        assert_eq!(stages(tmp.path()), ["RequestReceived", "ResponseComplete"]);
        let sent = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(sent, json);
    }

    #[tokio::test]
    async fn a_large_response_built_by_the_hub_is_still_recorded_before_it_is_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = slot(tmp.path()).await;
        let list = Bytes::from(vec![b' '; MAX_BUFFERED_RELAYED_BYTES as usize + 1]);

        let response = complete(slot, Response::new(body::full(list.clone()))).await;

        assert_eq!(stages(tmp.path()), ["RequestReceived", "ResponseComplete"]);
        assert_eq!(response.body().size_hint().exact(), Some(list.len() as u64));
    }
}
