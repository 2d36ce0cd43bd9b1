use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt as _};

use super::*;
use crate::audit::{segment, AuditConfig, SigningKey};
use crate::http::layers::testing::with_info;

/// How long a test waits before it calls something stuck.
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

async fn auditor(dir: &Path) -> Auditor {
    let mut config = AuditConfig::new(dir, "hub-0", SigningKey::generate().unwrap().0);
    config.checkpoint_interval = Duration::from_secs(3600);
    Auditor::open(config).await.unwrap()
}

/// An inner service that answers with what `respond` builds.
#[derive(Clone)]
struct Answer<F>(F);

impl<F, B> Service<Request<B>> for Answer<F>
where
    F: Fn() -> Response<Body> + Clone + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        std::future::ready(Ok((self.0)()))
    }
}

fn proxied_get() -> Request<Body> {
    let user = UserInfo::new("alice");
    with_info(
        Request::get(PROXY_GET)
            .extension(Authenticated(user.clone()))
            .extension(user)
            .body(body::empty())
            .unwrap(),
    )
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

fn events(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (_, path) in segment::list_segments(dir).unwrap() {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(event) = record.get("event") {
                out.push(event.clone());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_large_relayed_response_streams_instead_of_being_read_ahead_of_its_client() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = AuditLayer::new(Some(auditor(tmp.path()).await));
    let service = layer.layer(Answer(|| {
        relayed(Announced { len: 1 << 40 }.boxed_unsync())
    }));

    let response = tokio::time::timeout(DEADLINE, service.oneshot(proxied_get()))
        .await
        .expect("the layer read a 1 TiB relayed body instead of streaming it")
        .unwrap();

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
    let layer = AuditLayer::new(Some(auditor(tmp.path()).await));
    let json = Bytes::from_static(br#"{"kind":"PodList","items":[]}"#);
    let body = json.clone();
    let service = layer.layer(Answer(move || relayed(body::full(body.clone()))));

    let response = service.oneshot(proxied_get()).await.unwrap();

    assert_eq!(stages(tmp.path()), ["RequestReceived", "ResponseComplete"]);
    assert!(response.headers().contains_key(AUDIT_ID_HEADER));
    let sent = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(sent, json);
}

#[tokio::test]
async fn a_large_response_built_by_the_hub_is_still_recorded_before_it_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = AuditLayer::new(Some(auditor(tmp.path()).await));
    let list = Bytes::from(vec![b' '; MAX_BUFFERED_RELAYED_BYTES as usize + 1]);
    let body = list.clone();
    let service = layer.layer(Answer(move || Response::new(body::full(body.clone()))));

    let response = service.oneshot(proxied_get()).await.unwrap();

    assert_eq!(stages(tmp.path()), ["RequestReceived", "ResponseComplete"]);
    assert_eq!(response.body().size_hint().exact(), Some(list.len() as u64));
}

#[tokio::test]
async fn an_error_is_recorded_from_the_status_it_carries_not_from_its_body() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = AuditLayer::new(Some(auditor(tmp.path()).await));
    let service = layer.layer(Answer(|| {
        // The body says something else: the record follows the typed error.
        let mut response = error_response(&ApiError::Conflict {
            resource: crate::errors::GroupResource::new("edgefleet.io", "clusters"),
            name: "edge-1".into(),
            reason: crate::errors::OBJECT_MODIFIED.into(),
        });
        *response.body_mut() = body::full("not a Status");
        response
    }));

    let response = service.oneshot(proxied_get()).await.unwrap();
    assert_eq!(response.status(), 409);
    let events = events(tmp.path());
    let status = &events[1]["responseStatus"];
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(409), Some("Conflict"))
    );
}

#[tokio::test]
async fn a_request_the_trail_cannot_record_is_refused_with_a_status() {
    let tmp = tempfile::tempdir().unwrap();
    let auditor = auditor(tmp.path()).await;
    auditor.faults().fill();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    let service = AuditLayer::new(Some(auditor)).layer(Answer(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        Response::new(body::empty())
    }));
    let mut post = proxied_get();
    *post.method_mut() = Method::POST;

    let response = service.oneshot(post).await.unwrap();

    assert_eq!(response.status(), 500);
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "the write was not passed on"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("InternalError"))
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("failed to store audit event"));
}

#[test]
fn source_ips_and_user_agent_as_kube() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        "10.0.0.1, bogus, 10.0.0.2".parse().unwrap(),
    );
    headers.insert("x-real-ip", "10.0.0.2".parse().unwrap());
    let peer = "127.0.0.1".parse().ok();
    assert_eq!(
        source_ips(&headers, peer),
        ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    );
    headers.insert("x-real-ip", "10.0.0.3".parse().unwrap());
    let last = "10.0.0.3".parse().ok();
    assert_eq!(
        source_ips(&headers, last),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
    headers.insert(http::header::USER_AGENT, "k".repeat(2000).parse().unwrap());
    let ua = user_agent(&headers);
    assert_eq!(
        ua.len(),
        MAX_USER_AGENT_BYTES + USER_AGENT_TRUNCATED_SUFFIX.len()
    );
    assert!(ua.ends_with("...TRUNCATED"));
}

#[test]
fn exec_and_attach_are_sessions_and_port_forward_is_not() {
    assert!(is_session("api/v1/namespaces/default/pods/web/exec"));
    assert!(is_session("api/v1/namespaces/default/pods/web/attach/"));
    assert!(!is_session(
        "api/v1/namespaces/default/pods/web/portforward"
    ));
    assert!(!is_session("api/v1/namespaces/default/pods/web/log"));
}

/// Records the fields of `request` spans.
#[derive(Clone, Default)]
struct SpanFields(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .lock()
            .unwrap()
            .push((field.name().to_string(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0
            .lock()
            .unwrap()
            .push((field.name().to_string(), value.to_string()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanFields {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "request" {
            attrs.record(&mut self.clone());
        }
    }

    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        values.record(&mut self.clone());
    }
}

#[tokio::test]
async fn every_request_runs_in_a_span_naming_its_record_and_never_its_credentials() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let fields = SpanFields::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(fields.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let layer = AuditLayer::new(Some(auditor(tmp.path()).await));
    let service = layer.layer(Answer(|| Response::new(body::empty())));
    let mut req = proxied_get();
    req.headers_mut()
        .insert("authorization", "Bearer s3cret-token".parse().unwrap());
    req.headers_mut()
        .insert("impersonate-user", "s3cret-user".parse().unwrap());

    let response = service.oneshot(req).await.unwrap();

    let audit_id = response.headers()[AUDIT_ID_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    let fields = fields.0.lock().unwrap().clone();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
    };
    assert_eq!(field("audit_id"), audit_id);
    assert_eq!(field("verb"), "get");
    assert_eq!(
        (
            field("resource"),
            field("subresource"),
            field("namespace"),
            field("name")
        ),
        (
            "clusters".into(),
            "proxy".into(),
            "retail".into(),
            "edge-1".into()
        )
    );
    assert_eq!(field("user"), "alice");
    assert!(
        fields.iter().all(|(_, v)| !v.contains("s3cret")),
        "{fields:?}"
    );
}
