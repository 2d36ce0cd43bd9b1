//! The audit layer: the one place a request's audit record is begun, refused, started and
//! completed (kube's `WithAudit`, and its `WithFailedAuthenticationAudit` when it wraps the
//! 401 answer).
//!
//! ```text
//!  request ──► describe it (RequestInfo, user, URI, Audit-ID, source IPs, user agent; a
//!  │           proxied one as the edge request it is) ──► Auditor::begin
//!  │             Err ──► 500 "failed to store audit event" (fail closed; nothing below runs)
//!  ▼
//!  AuditContext in the extensions (later layers annotate: impersonated user, authorization
//!  │   decision, request body) ─► inner
//!  ▼
//!  response ──► its status: the `metav1.Status` in its extensions (ErrorStatus), or its code
//!     whole (built by the hub, or relayed with a Content-Length ≤ MAX_BUFFERED_RELAYED_BYTES):
//!         ResponseComplete written before it is sent; if it cannot be, a 500 instead
//!     streaming (watch, larger or unsized relayed responses): ResponseStarted before the first
//!         byte, ResponseComplete when the stream ends or the client goes away (AuditedBody)
//!     101 Switching Protocols (exec, attach, port-forward): ResponseStarted before the switch;
//!         exec/attach get a session recording; ResponseComplete, with the recording's name
//!         and hash, when the spliced streams end
//!  every response carries the Audit-Id header
//! ```
//!
//! A relayed body is never read ahead of its client beyond [`MAX_BUFFERED_RELAYED_BYTES`]: a
//! client that stops reading a `kubectl cp` of gigabytes must stall the edge, not fill the
//! hub's memory.
//!
//! Each request runs in a `request` tracing span with its audit ID, verb, resource,
//! namespace, name and user (never a credential), so that registry and storage logs can be
//! tied to the trail.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::{ready_inner, request_info_of, Authenticated, Next, ServiceFuture};
use crate::audit::event::{MAX_USER_AGENT_BYTES, USER_AGENT_TRUNCATED_SUFFIX};
use crate::audit::{
    edge, AuditedRequest, Auditor, ProxyTarget, RequestAttributes, ResponseStatus, SessionHeader,
    Target, AUDIT_ID_HEADER,
};
use crate::auth::UserInfo;
use crate::errors::ApiError;
use crate::http::body::{self, error_response, Body, ErrorStatus, Relayed};
use crate::http::proxy;
use crate::http::server::ConnectionInfo;
use crate::http::upgrade::PendingUpgrade;
use edgefleet_apimachinery::request_info::{self, RequestInfo};

/// Largest relayed response (by its `Content-Length`) read whole before it is sent, so that its
/// `ResponseComplete` is durable first. The tunnel's per-stream window: a size the hub holds
/// for a stream anyway while its client reads slower than the edge sends.
pub const MAX_BUFFERED_RELAYED_BYTES: u64 = edgefleet_tunnel::limits::STREAM_WINDOW_BYTES as u64;

/// Audits every request with `auditor`; without one, requests pass untouched.
#[derive(Clone, Default)]
pub struct AuditLayer {
    auditor: Option<Auditor>,
}

impl AuditLayer {
    pub fn new(auditor: Option<Auditor>) -> Self {
        AuditLayer { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            auditor: self.auditor.clone(),
        }
    }
}

/// See [`AuditLayer`].
#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    auditor: Option<Auditor>,
}

/// A request's audit record, for the layers below to add to (kube's audit context). The
/// audit layer alone writes its stages.
#[derive(Clone)]
pub struct AuditContext {
    record: Arc<Mutex<Option<AuditedRequest>>>,
    audit_id: Arc<str>,
}

impl std::fmt::Debug for AuditContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditContext")
            .field("audit_id", &self.audit_id)
            .finish_non_exhaustive()
    }
}

impl AuditContext {
    fn new(request: AuditedRequest) -> Self {
        AuditContext {
            audit_id: request.audit_id().into(),
            record: Arc::new(Mutex::new(Some(request))),
        }
    }

    /// The request's audit ID (also sent to the edge, so both trails name it alike).
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    fn with<T: Default>(&self, f: impl FnOnce(&mut AuditedRequest) -> T) -> T {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .map(f)
            .unwrap_or_default()
    }

    /// kube's `AddAuditAnnotation`, e.g. `authorization.k8s.io/decision`.
    pub fn annotate(&self, key: &str, value: &str) {
        self.with(|r| r.annotate(key, value));
    }

    /// The user the request acts as after impersonation.
    pub fn set_impersonated_user(&self, user: &UserInfo) {
        self.with(|r| r.set_impersonated_user(user));
    }

    /// Whether the policy records the request body.
    pub fn wants_request_body(&self) -> bool {
        self.with(|r| r.wants_request_body())
    }

    /// Records the request body (JSON) at levels `Request` and `RequestResponse`.
    pub fn set_request_body(&self, body: &[u8]) {
        self.with(|r| r.set_request_body(body));
    }

    fn take(&self) -> Option<AuditedRequest> {
        self.record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<S, B> Service<Request<B>> for Audit<S>
where
    S: Next<B>,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut inner = ready_inner(&mut self.inner);
        let Some(auditor) = self.auditor.clone() else {
            return Box::pin(inner.call(req));
        };
        let info = match request_info_of(&req) {
            Ok(info) => info.clone(),
            Err(err) => return super::refuse(&err),
        };
        // No Authenticated: the 401 path, recorded with an empty user as kube records it.
        let user = req
            .extensions()
            .get::<Authenticated>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let span = request_span(&info, &user);
        Box::pin(
            async move {
                let attrs = attributes(&info, &req, user);
                let audited = match auditor.begin(attrs).await {
                    Ok(audited) => audited,
                    Err(err) => return Ok(refusal(&info, err)),
                };
                tracing::Span::current().record("audit_id", audited.audit_id());
                let context = AuditContext::new(audited);
                req.extensions_mut().insert(context.clone());
                let response = inner.call(req).await?;
                Ok(complete(&auditor, &context, &info, response).await)
            }
            .instrument(span),
        )
    }
}

/// The span every request runs in.
fn request_span(info: &RequestInfo, user: &UserInfo) -> tracing::Span {
    tracing::info_span!(
        "request",
        audit_id = tracing::field::Empty,
        verb = %info.verb,
        resource = %info.resource,
        subresource = %info.subresource,
        namespace = %info.namespace,
        name = %info.name,
        user = %user.name,
    )
}

// ---------------------------------------------------------------------------------------------
// Describing a request

/// How the auditor sees `req`: a request to the hub's own API, or — through
/// `clusters/{name}/proxy` — the edge request it carries.
pub fn attributes<B>(info: &RequestInfo, req: &Request<B>, user: UserInfo) -> RequestAttributes {
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<Arc<ConnectionInfo>>()
        .and_then(|c| c.remote)
        .map(|a| a.ip());
    let attrs = if proxy::is_proxy(info) {
        proxied_attributes(info, req.method(), req.uri().query(), user, uri)
    } else {
        hub_attributes(info, user, uri)
    };
    with_headers(attrs, req.headers(), peer)
}

/// A request to the hub's own API, described by its parsed request info.
pub fn hub_attributes(
    info: &RequestInfo,
    user: UserInfo,
    request_uri: String,
) -> RequestAttributes {
    let target = match edge::object_ref(info) {
        Some(object) => Target::Resource(object),
        None => Target::NonResource(info.path.clone()),
    };
    RequestAttributes {
        audit_id: None,
        request_uri,
        verb: info.verb.clone(),
        user,
        impersonated_user: None,
        source_ips: Vec::new(),
        user_agent: String::new(),
        target,
        proxy: None,
        long_running: info.is_long_running(),
        // Subresources other than status may act on a GET (bootstrap mints a token).
        read_only: if info.is_resource_request {
            matches!(info.verb.as_str(), "get" | "list" | "watch")
                && matches!(info.subresource.as_str(), "" | "status")
        } else {
            matches!(info.verb.as_str(), "get" | "head")
        },
        received: None,
    }
}

/// A request to `clusters/{name}/proxy/{rest}`: `hub` is its parsed request info, `method`
/// and `query` those of the request. The event describes the edge request — verb, `objectRef`
/// parsed from `/{rest}` by kube's rules — and is annotated with the cluster and its
/// environment; `requestURI` stays the URI the hub received.
pub fn proxied_attributes(
    hub: &RequestInfo,
    method: &Method,
    query: Option<&str>,
    user: UserInfo,
    request_uri: String,
) -> RequestAttributes {
    let edge_path = format!("/{}", hub.rest);
    let edge = request_info::parse(method, &edge_path, query);
    let target = match edge::object_ref(&edge) {
        Some(object) => Target::Resource(object),
        None => Target::NonResource(edge_path),
    };
    RequestAttributes {
        audit_id: None,
        request_uri,
        verb: edge.verb.clone(),
        user,
        impersonated_user: None,
        source_ips: Vec::new(),
        user_agent: String::new(),
        target,
        proxy: Some(ProxyTarget {
            environment: hub.namespace.clone(),
            cluster: hub.name.clone(),
            hub_verb: hub.verb.clone(),
        }),
        long_running: edge.is_long_running(),
        read_only: *method == Method::GET || *method == Method::HEAD,
        received: None,
    }
}

/// Takes the audit ID, source IPs and user agent from the request head; an upgrade request
/// (WebSocket, SPDY) is long-running, and not a read whatever its method.
pub fn with_headers(
    mut attrs: RequestAttributes,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> RequestAttributes {
    attrs.audit_id = headers
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    attrs.source_ips = source_ips(headers, peer);
    attrs.user_agent = user_agent(headers);
    if headers.contains_key(http::header::UPGRADE) {
        // exec, attach, port-forward: a shell or a socket on the edge, whatever the method.
        attrs.long_running = true;
        attrs.read_only = false;
    }
    attrs
}

/// The client's addresses as kube-apiserver records them (`utilnet.SourceIPs`): the valid
/// entries of `X-Forwarded-For`, then `X-Real-Ip` unless already listed, then the peer address
/// unless it is the last entry already.
pub fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<String> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(forwarded) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        ips.extend(
            forwarded
                .split(',')
                .filter_map(|p| p.trim().parse::<IpAddr>().ok()),
        );
    }
    if let Some(real) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        if !ips.contains(&real) {
            ips.push(real);
        }
    }
    if let Some(peer) = peer {
        if ips.last() != Some(&peer) {
            ips.push(peer);
        }
    }
    ips.into_iter().map(|ip| ip.to_string()).collect()
}

/// The `User-Agent` header, cut as kube-apiserver cuts it.
pub fn user_agent(headers: &HeaderMap) -> String {
    let Some(ua) = headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    else {
        return String::new();
    };
    if ua.len() <= MAX_USER_AGENT_BYTES {
        return ua;
    }
    let mut end = MAX_USER_AGENT_BYTES;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{USER_AGENT_TRUNCATED_SUFFIX}", &ua[..end])
}

/// Whether the edge path starts an interactive session that is recorded (`pods/x/exec`,
/// `pods/x/attach`).
pub fn is_session(rest: &str) -> bool {
    let path = rest
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    path.ends_with("/exec") || path.ends_with("/attach")
}

// ---------------------------------------------------------------------------------------------
// Recording the response

/// The answer to a request that cannot be recorded (fail closed), in kube's words: a
/// `metav1.Status` for a resource request, plain text for a non-resource one (discovery,
/// OpenAPI), whose bodies client-go reads raw — it shows plain text as it is, but says
/// "unknown" for any JSON error body, and kubectl's first step is discovery.
pub fn refusal(info: &RequestInfo, err: crate::audit::AuditError) -> Response<Body> {
    let err = ApiError::from(err);
    if info.is_resource_request {
        return error_response(&err);
    }
    let mut response =
        body::bytes_response(err.code(), "text/plain; charset=utf-8", err.to_string());
    response.extensions_mut().insert(ErrorStatus(err.status()));
    response
}

/// Names the request's audit record in its response, as kube does for every response.
fn with_audit_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        response.headers_mut().insert(AUDIT_ID_HEADER, v);
    }
    response
}

/// The status to record for a response: the Status of an error the hub answered, the code of
/// anything else (a relayed response's body is the edge cluster's, not read back).
pub fn response_status(response: &Response<Body>) -> ResponseStatus {
    let code = response.status().as_u16();
    match response.extensions().get::<ErrorStatus>() {
        Some(ErrorStatus(status)) => ResponseStatus::from_status(status, code),
        None => ResponseStatus::code(code),
    }
}

/// Records the response of the request whose record `context` holds.
async fn complete(
    auditor: &Auditor,
    context: &AuditContext,
    info: &RequestInfo,
    response: Response<Body>,
) -> Response<Body> {
    let Some(mut audited) = context.take() else {
        return response;
    };
    let response = with_audit_id(response, context.audit_id());
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switched(auditor, audited, info, response).await;
    }
    let status = response_status(&response);
    let (parts, body) = response.into_parts();
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
                return with_audit_id(
                    error_response(&ApiError::Internal(format!("response body: {err}"))),
                    context.audit_id(),
                )
            }
        };
        let recorded = audited.complete(status, recorded_body(&bytes)).await;
        return match recorded {
            Ok(()) => Response::from_parts(parts, body::full(bytes)),
            Err(err) => with_audit_id(refusal(info, err), context.audit_id()),
        };
    }
    if let Err(err) = audited.response_started(status.clone()).await {
        return with_audit_id(refusal(info, err), context.audit_id());
    }
    let body = AuditedBody {
        inner: body,
        audited: Some((audited, status)),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// A 101: `ResponseStarted` before the switch (or a 500 instead of it), a recording for an
/// interactive session, `ResponseComplete` when the spliced streams end.
async fn switched(
    auditor: &Auditor,
    mut audited: AuditedRequest,
    info: &RequestInfo,
    mut response: Response<Body>,
) -> Response<Body> {
    let id = audited.audit_id().to_string();
    if let Err(err) = audited.response_started(ResponseStatus::code(101)).await {
        // The 101 and the switched connection it carries are dropped: the edge stream closes.
        return with_audit_id(refusal(info, err), &id);
    }
    let upgrade = response
        .extensions()
        .get::<PendingUpgrade>()
        .and_then(PendingUpgrade::take);
    let Some(mut upgrade) = upgrade else {
        // Nothing to splice (no handler here switches on its own): the request is over.
        if let Err(err) = audited.complete(ResponseStatus::code(101), None).await {
            return with_audit_id(refusal(info, err), &id);
        }
        return response;
    };
    if is_session(&info.rest) {
        let header = SessionHeader {
            width: None,
            height: None,
            title: format!("{} ({}/{})", info.rest, info.namespace, info.name),
            env: vec![
                (
                    "cluster".into(),
                    format!("{}/{}", info.namespace, info.name),
                ),
                ("path".into(), edge_path_and_query(info, &audited)),
            ],
        };
        match auditor.record_session(&audited, header).await {
            Ok(recorder) => upgrade.record(recorder),
            Err(err) => return with_audit_id(refusal(info, err), &id),
        }
    }
    upgrade.on_finish(Box::new(move |recording| {
        Box::pin(async move {
            if let Some(recording) = recording {
                audited.attach_recording(&recording);
            }
            if let Err(err) = audited.complete(ResponseStatus::code(101), None).await {
                tracing::error!(%err, "recording the end of an upgraded stream failed");
            }
        })
    }));
    response
        .extensions_mut()
        .insert(PendingUpgrade::new(upgrade));
    response
}

/// The edge path and query of a proxied request (for a recording's header).
fn edge_path_and_query(info: &RequestInfo, audited: &AuditedRequest) -> String {
    let query = audited
        .request_uri()
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("/{}{query}", info.rest)
}

/// Bodies are recorded as objects only when there are some (and, the auditor checks, JSON).
fn recorded_body(bytes: &Bytes) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes.as_ref())
}

pin_project_lite::pin_project! {
    /// A streaming body that completes its audit record when it ends, fails or is dropped.
    pub struct AuditedBody {
        #[pin]
        inner: Body,
        audited: Option<(AuditedRequest, ResponseStatus)>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            finish(this.audited.take());
        }
    }
}

/// Writes `ResponseComplete` in the background (the response is already on its way).
fn finish(audited: Option<(AuditedRequest, ResponseStatus)>) {
    if let Some((audited, status)) = audited {
        tokio::spawn(async move {
            if let Err(err) = audited.complete(status, None).await {
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
mod tests;
