//! The upstream backend with in-memory transports: what the upstream receives, and what the
//! hub gets back when the upstream fails. Real sockets and TLS are covered in `tests/run.rs`.

use std::sync::{Arc, Mutex};

use edgefleet_tunnel::body;
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::upgrade::{connect_response_headers, upstream_request, UpgradeProtocol};
use super::*;

const BASE: &str = "https://10.0.0.1:6443";

/// What an in-memory transport saw, and what it answers.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<(Parts, Bytes)>>>,
    answer: fn() -> Result<Response<TunnelBody>, BoxError>,
}

impl Recorder {
    fn new(answer: fn() -> Result<Response<TunnelBody>, BoxError>) -> Self {
        Self {
            seen: Arc::default(),
            answer,
        }
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<TunnelBody>,
        Response = Response<TunnelBody>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
           + Send
           + Sync
           + 'static {
        let this = self.clone();
        tower::service_fn(move |req: Request<TunnelBody>| {
            let this = this.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                this.seen.lock().unwrap().push((parts, body));
                (this.answer)()
            }
        })
    }

    fn requests(&self) -> Vec<(Parts, Bytes)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn ok_answer() -> Result<Response<TunnelBody>, BoxError> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("connection", "close")
        .header("transfer-encoding", "chunked")
        .header("audit-id", "42")
        .body(body::full("{\"kind\":\"NodeList\"}"))
        .unwrap())
}

/// An upstream whose credentials are a static bearer token, as a kubeconfig `token:` gives.
fn upstream_with(pooled: &Recorder, upgrade: &Recorder) -> Upstream {
    let mut config = kube::Config::new(BASE.parse().unwrap());
    config.auth_info = serde_json::from_value(serde_json::json!({"token": "agent-token"})).unwrap();
    let auth = kube::client::ConfigExt::auth_layer(&config).unwrap();
    Upstream::with_transports(
        BASE.parse().unwrap(),
        Transports::with_auth(auth, pooled.service(), upgrade.service()),
    )
}

fn hub_request(method: Method, path: &str, body: &'static str) -> Request<TunnelBody> {
    Request::builder()
        .method(method)
        .uri(format!("https://hub.internal{path}"))
        .version(Version::HTTP_2)
        .header(header::AUTHORIZATION, "Bearer caller-token")
        .header("impersonate-user", "alice@example.com")
        .header("impersonate-group", "devs")
        .header("impersonate-group", "system:authenticated")
        .header("impersonate-uid", "u-1")
        .header("impersonate-extra-scopes", "view")
        .header("te", "trailers")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(body))
        .unwrap()
}

async fn call(upstream: &Upstream, req: Request<TunnelBody>) -> (StatusCode, HeaderMap, Bytes) {
    use tower::ServiceExt;
    let response = upstream.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

use http::{HeaderMap, Version};

#[tokio::test]
async fn a_request_reaches_the_upstream_with_impersonation_and_the_agents_own_credentials() {
    let (pooled, upgrade) = (Recorder::new(ok_answer), Recorder::new(ok_answer));
    let upstream = upstream_with(&pooled, &upgrade);

    let (status, headers, body) = call(
        &upstream,
        hub_request(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            "{\"a\":1}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"{\"kind\":\"NodeList\"}");
    // Hop-by-hop headers of the upstream's hop stay behind; the rest comes through.
    assert_eq!(headers["audit-id"], "42");
    assert!(headers.get("connection").is_none());
    assert!(headers.get("transfer-encoding").is_none());

    let seen = pooled.requests();
    assert_eq!(seen.len(), 1);
    let (parts, body) = &seen[0];
    assert_eq!(parts.method, Method::POST);
    assert_eq!(
        parts.uri,
        "https://10.0.0.1:6443/api/v1/namespaces/default/configmaps?dryRun=All"
    );
    assert_eq!(&body[..], b"{\"a\":1}");
    // The agent's credentials, never the caller's.
    assert_eq!(parts.headers[header::AUTHORIZATION], "Bearer agent-token");
    assert_eq!(
        parts.headers.get_all(header::AUTHORIZATION).iter().count(),
        1
    );
    assert_eq!(parts.headers["impersonate-user"], "alice@example.com");
    let groups: Vec<_> = parts.headers.get_all("impersonate-group").iter().collect();
    assert_eq!(groups, ["devs", "system:authenticated"]);
    assert_eq!(parts.headers["impersonate-uid"], "u-1");
    assert_eq!(parts.headers["impersonate-extra-scopes"], "view");
    assert!(parts.headers.get("te").is_none());
    assert!(upgrade.requests().is_empty());
}

#[tokio::test]
async fn a_base_url_with_a_path_prefix_is_kept() {
    let pooled = Recorder::new(ok_answer);
    let upstream = Upstream::with_transports(
        "https://rancher.example.com/k8s/clusters/c-1/"
            .parse()
            .unwrap(),
        Transports::with_auth(None, pooled.service(), pooled.service()),
    );
    call(
        &upstream,
        hub_request(Method::GET, "/api/v1/nodes?limit=500", ""),
    )
    .await;
    assert_eq!(
        pooled.requests()[0].0.uri,
        "https://rancher.example.com/k8s/clusters/c-1/api/v1/nodes?limit=500"
    );
}

#[tokio::test]
async fn a_request_without_impersonation_is_refused_before_the_upstream() {
    let pooled = Recorder::new(ok_answer);
    let upstream = upstream_with(&pooled, &pooled);
    let mut request = hub_request(Method::GET, "/api/v1/secrets", "");
    request.headers_mut().remove("impersonate-user");
    let (status, _, body) = call(&upstream, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert!(pooled.requests().is_empty());
}

#[tokio::test]
async fn transport_failures_are_502_and_timeouts_504() {
    fn refused() -> Result<Response<TunnelBody>, BoxError> {
        Err(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }
    fn timed_out() -> Result<Response<TunnelBody>, BoxError> {
        Err(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "tcp connect timed out",
        )))
    }
    for (answer, code, reason) in [
        (
            refused as fn() -> _,
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
        ),
        (timed_out, StatusCode::GATEWAY_TIMEOUT, "Timeout"),
    ] {
        let pooled = Recorder::new(answer);
        let upstream = upstream_with(&pooled, &pooled);
        let (status, headers, body) =
            call(&upstream, hub_request(Method::GET, "/version", "")).await;
        assert_eq!(status, code);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], reason);
        assert_eq!(status["code"], code.as_u16());
        assert!(
            status["message"].as_str().unwrap().contains(BASE),
            "{status}"
        );
    }
}

fn connect_request(protocol: &'static str, path: &str) -> Request<TunnelBody> {
    let mut request = hub_request(Method::CONNECT, path, "");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    request
}

#[test]
fn upgrade_protocols_are_matched_case_insensitively() {
    assert_eq!(
        UpgradeProtocol::from_connect_protocol("websocket"),
        Some(UpgradeProtocol::WebSocket)
    );
    assert_eq!(
        UpgradeProtocol::from_connect_protocol("SPDY/3.1"),
        Some(UpgradeProtocol::Spdy)
    );
    assert_eq!(
        UpgradeProtocol::from_connect_protocol("spdy/3.1"),
        Some(UpgradeProtocol::Spdy)
    );
    assert_eq!(UpgradeProtocol::from_connect_protocol("h2c"), None);
}

#[test]
fn the_upstream_upgrade_request_carries_a_fresh_handshake_and_the_hubs_headers() {
    let mut hub = hub_request(Method::CONNECT, "/x", "").headers().clone();
    hub.insert("sec-websocket-key", HeaderValue::from_static("stale"));
    hub.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let uri: Uri = "https://10.0.0.1:6443/api/v1/namespaces/n/pods/p/exec?command=sh"
        .parse()
        .unwrap();

    let ws = upstream_request(UpgradeProtocol::WebSocket, &hub, uri.clone(), Some("a2V5")).unwrap();
    assert_eq!(ws.method(), Method::GET);
    assert_eq!(ws.uri(), &uri);
    let h = ws.headers();
    assert_eq!(h[header::CONNECTION], "Upgrade");
    assert_eq!(h[header::UPGRADE], "websocket");
    assert_eq!(h["sec-websocket-key"], "a2V5");
    assert_eq!(h["sec-websocket-version"], "13");
    assert_eq!(h["sec-websocket-protocol"], "v5.channel.k8s.io");
    assert_eq!(h["impersonate-user"], "alice@example.com");
    assert!(
        h.get(header::AUTHORIZATION).is_none(),
        "the caller's credentials leaked"
    );

    let mut hub = hub;
    hub.append(
        "x-stream-protocol-version",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    hub.append(
        "x-stream-protocol-version",
        HeaderValue::from_static("v3.channel.k8s.io"),
    );
    let spdy = upstream_request(UpgradeProtocol::Spdy, &hub, uri, None).unwrap();
    assert_eq!(spdy.method(), Method::POST);
    let h = spdy.headers();
    assert_eq!(h[header::UPGRADE], "SPDY/3.1");
    assert!(h.get("sec-websocket-key").is_none());
    let versions: Vec<_> = h.get_all("x-stream-protocol-version").iter().collect();
    assert_eq!(versions, ["v4.channel.k8s.io", "v3.channel.k8s.io"]);
}

#[test]
fn the_connect_answer_passes_the_negotiated_protocol_back() {
    let mut upstream = HeaderMap::new();
    upstream.insert("connection", HeaderValue::from_static("Upgrade"));
    upstream.insert("upgrade", HeaderValue::from_static("websocket"));
    upstream.insert("sec-websocket-accept", HeaderValue::from_static("xyz"));
    upstream.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    upstream.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let headers = connect_response_headers(&upstream);
    let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["sec-websocket-protocol", "x-stream-protocol-version"]
    );
}

#[tokio::test]
async fn an_upgrade_refused_by_the_upstream_is_relayed() {
    fn forbidden() -> Result<Response<TunnelBody>, BoxError> {
        Ok(Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header("content-type", "application/json")
            .body(body::full("{\"kind\":\"Status\",\"reason\":\"Forbidden\"}"))
            .unwrap())
    }
    let (pooled, upgrade) = (Recorder::new(ok_answer), Recorder::new(forbidden));
    let upstream = upstream_with(&pooled, &upgrade);
    let (status, _, body) = call(
        &upstream,
        connect_request("websocket", "/api/v1/namespaces/n/pods/p/exec?command=sh"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(&body[..], b"{\"kind\":\"Status\",\"reason\":\"Forbidden\"}");

    let seen = upgrade.requests();
    assert_eq!(seen.len(), 1);
    let parts = &seen[0].0;
    assert_eq!(parts.method, Method::GET);
    assert_eq!(
        parts.uri,
        "https://10.0.0.1:6443/api/v1/namespaces/n/pods/p/exec?command=sh"
    );
    assert_eq!(parts.headers[header::AUTHORIZATION], "Bearer agent-token");
    assert!(pooled.requests().is_empty());
}

#[tokio::test]
async fn an_upgrade_answered_2xx_without_switching_protocols_is_502() {
    let (pooled, upgrade) = (Recorder::new(ok_answer), Recorder::new(ok_answer));
    let upstream = upstream_with(&pooled, &upgrade);
    let (status, _, _) = call(
        &upstream,
        connect_request("SPDY/3.1", "/api/v1/namespaces/n/pods/p/exec"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_websocket_101_with_a_wrong_accept_is_502() {
    fn wrong_accept() -> Result<Response<TunnelBody>, BoxError> {
        Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "not-the-right-one")
            .body(body::empty())
            .unwrap())
    }
    let (pooled, upgrade) = (Recorder::new(ok_answer), Recorder::new(wrong_accept));
    let upstream = upstream_with(&pooled, &upgrade);
    let (status, _, _) = call(
        &upstream,
        connect_request("websocket", "/api/v1/namespaces/n/pods/p/attach"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_unknown_upgrade_protocol_is_400() {
    let (pooled, upgrade) = (Recorder::new(ok_answer), Recorder::new(ok_answer));
    let upstream = upstream_with(&pooled, &upgrade);
    let (status, _, _) = call(&upstream, connect_request("h2c", "/x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(upgrade.requests().is_empty());
}
