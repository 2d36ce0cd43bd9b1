//! `clusters/{name}/proxy/{path}`: kubectl to an edge cluster, through its agent's tunnel.
//!
//! ```text
//! kubectl ──► hub: authn ─► audit ─► authz clusters/proxy (verb from method; any upgrade:
//!              create) ─► here:
//!     strip the caller's Authorization, Impersonate-*, front-proxy and hop-by-hop headers,
//!     add Impersonate-User/Group/Uid/Extra-* for the caller,
//!     one HTTP/2 stream to the agent (or an extended CONNECT for exec/attach/port-forward),
//! agent ──► edge kube-apiserver with its own credentials + the impersonation headers
//! ```
//!
//! Responses stream both ways (watch, `logs -f`). A cluster without a tunnel answers `503` at
//! once; an unknown cluster `404`; the agent's own paths (`/.well-known/edgefleet/…`: bundles,
//! content, facts) `403`, whoever asks. An upgrade answers 101 with the switched connection in
//! the response ([`PendingUpgrade`]); the audit layer records it and the server runs it. The
//! edge is reached through [`Tunnels`], injected: the tunnel port's sessions in the hub.

use edgefleet_api::agent::agent_identity;
use edgefleet_apimachinery::impersonation::{self, Impersonate};
use edgefleet_apimachinery::request_info::RequestInfo;
use edgefleet_tunnel::{forwarding, SessionRegistry, UpgradeOutcome};
use futures::future::BoxFuture;
use http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, UPGRADE,
};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;

use std::sync::Arc;

use super::body::{self, Body, Relayed};
use super::layers::audit::AuditContext;
use super::router::SubresourceHandler;
use super::upgrade::{Io, PendingUpgrade, Upgrade};
use crate::auth::UserInfo;
use crate::errors::ApiError;
use crate::registry::Registry;

/// Whether the caller's header may go to the edge cluster: not hop-by-hop, not `Host` (the
/// tunnel's stream has its own authority), and no credential or identity of the caller's
/// (`Authorization`, `Impersonate-*`, the front proxy's `X-Remote-*`).
fn forwardable(name: &HeaderName, connection_listed: &[HeaderName]) -> bool {
    !(forwarding::is_hop_by_hop(name, connection_listed)
        || *name == HOST
        || *name == AUTHORIZATION
        || impersonation::is_impersonation_header(name)
        || name.as_str().starts_with("x-remote-"))
}

/// The headers to send to the edge cluster for `user`'s request.
pub fn edge_headers(caller: &HeaderMap, user: &UserInfo) -> Result<HeaderMap, ApiError> {
    let listed = forwarding::connection_listed(caller);
    let mut out = HeaderMap::new();
    for (name, value) in caller {
        if forwardable(name, &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    Impersonate {
        user: &user.name,
        uid: &user.uid,
        groups: &user.groups,
        extra: &user.extra,
    }
    .write(&mut out)
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(out)
}

/// The upgrade protocol of an HTTP/1.1 upgrade request (`websocket`, `spdy/3.1`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<String> {
    forwarding::upgrade_protocol(req.headers())
}

/// Authorizes a protocol upgrade through the proxy as `create`, whatever its method.
///
/// The verb of a proxied request follows its method, but an upgrade is `exec`, `attach` or
/// `port-forward` on the edge cluster — a shell or a socket there — and kubectl makes its
/// WebSocket upgrades with GET (RFC 6455 requires it). Taken from the method, that would be
/// `get` on `clusters/proxy`: what the viewer role grants for reading. kube-apiserver closed
/// the same hole for `pods/exec`, `pods/attach` and `pods/portforward` by requiring `create`
/// for WebSocket upgrades (`AuthorizePodWebsocketUpgradeCreatePermission`); SPDY upgrades are
/// POSTs, so `create` already. Called by the request-info layer, before anything judges the
/// request.
pub fn authorize_upgrades_as_create(info: &mut RequestInfo, headers: &HeaderMap) {
    if is_proxy(info) && forwarding::upgrade_protocol(headers).is_some() {
        info.verb = "create".to_string();
    }
}

/// How the proxy reaches an edge cluster's agent: the tunnel port's sessions in the hub, a
/// test double that records what it is sent in the in-process tests.
pub trait Tunnels: Send + Sync + 'static {
    /// Whether `identity`'s agent has a tunnel to this hub.
    fn is_connected(&self, identity: &str) -> bool;

    /// Sends one request to `identity`'s agent; the response streams.
    fn send(
        &self,
        identity: &str,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, edgefleet_tunnel::Error>>;

    /// Opens an extended CONNECT stream with `:protocol` = `protocol` and `head`'s path and
    /// headers.
    fn upgrade(
        &self,
        identity: &str,
        protocol: &str,
        head: Request<()>,
    ) -> BoxFuture<'static, Result<EdgeUpgrade, edgefleet_tunnel::Error>>;
}

/// The agent's answer to an upgrade.
pub enum EdgeUpgrade {
    /// It switched: its response head (e.g. `sec-websocket-protocol`) and the byte stream.
    Upgraded {
        head: http::response::Parts,
        stream: Box<dyn Io>,
    },
    /// It refused (e.g. 403 from the edge cluster's RBAC): relay the response as is.
    Rejected(Response<Body>),
}

impl Tunnels for SessionRegistry {
    fn is_connected(&self, identity: &str) -> bool {
        SessionRegistry::is_connected(self, identity)
    }

    fn send(
        &self,
        identity: &str,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, edgefleet_tunnel::Error>> {
        let dialer = self.dialer(identity);
        Box::pin(async move {
            let response = dialer.send(req).await?;
            Ok(response.map(|b| b.map_err(std::io::Error::other).boxed_unsync()))
        })
    }

    fn upgrade(
        &self,
        identity: &str,
        protocol: &str,
        head: Request<()>,
    ) -> BoxFuture<'static, Result<EdgeUpgrade, edgefleet_tunnel::Error>> {
        let dialer = self.dialer(identity);
        let protocol = protocol.to_string();
        Box::pin(async move {
            Ok(match dialer.upgrade(&protocol, head).await? {
                UpgradeOutcome::Upgraded { head, stream } => EdgeUpgrade::Upgraded {
                    head,
                    stream: Box::new(stream),
                },
                UpgradeOutcome::Rejected(response) => EdgeUpgrade::Rejected(
                    response.map(|b| b.map_err(std::io::Error::other).boxed_unsync()),
                ),
            })
        })
    }
}

/// `clusters/{name}/proxy`, through `tunnels` (none: the hub has no tunnel port).
pub struct ProxyHandler {
    registry: Registry,
    tunnels: Option<Arc<dyn Tunnels>>,
}

impl ProxyHandler {
    pub fn new(registry: Registry, tunnels: Option<Arc<dyn Tunnels>>) -> Self {
        ProxyHandler { registry, tunnels }
    }
}

#[async_trait::async_trait]
impl SubresourceHandler for ProxyHandler {
    async fn handle(
        &self,
        info: &RequestInfo,
        req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        handle(&self.registry, self.tunnels.as_deref(), info, req).await
    }
}

/// Whether a request is to `clusters/{name}/proxy/...`: proxied to an edge cluster.
pub fn is_proxy(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.api_group == edgefleet_api::GROUP
        && info.resource == "clusters"
        && info.subresource == "proxy"
        && !info.name.is_empty()
}

/// Serves a proxy request. The caller was authorized for `clusters/proxy` by the stack.
pub async fn handle(
    registry: &Registry,
    tunnels: Option<&dyn Tunnels>,
    info: &RequestInfo,
    mut req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let clusters = registry.resource("clusters").ok_or(ApiError::NoSuchPath)?;
    // An unknown cluster is a 404 whether or not a tunnel exists.
    clusters.get(&info.namespace, &info.name, Some("0")).await?;
    // The agent's own paths (desired bundles, content, facts) are the hub's to use: a caller
    // who may proxy to the edge cluster may not hand its agent a bundle.
    if edgefleet_api::delivery::is_agent_path(&format!("/{}", info.rest)) {
        return Err(ApiError::Forbidden {
            message: format!(
                "paths under {} belong to the edgefleet agent and cannot be proxied",
                edgefleet_api::delivery::AGENT_PATH_PREFIX
            ),
            resource: Some(clusters.group_resource.clone()),
            name: info.name.clone(),
        });
    }
    let identity = agent_identity(&info.namespace, &info.name);
    let tunnels = tunnels.ok_or_else(|| not_connected(info, "this hub has no tunnel port"))?;
    if !tunnels.is_connected(&identity) {
        return Err(not_connected(info, "its agent has no tunnel to this hub"));
    }
    let user = req.extensions().get::<UserInfo>().cloned().ok_or_else(|| {
        ApiError::Internal("a proxied request reached the proxy unauthenticated".into())
    })?;
    let path = format!("/{}", info.rest);
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut headers = edge_headers(req.headers(), &user)?;
    // The edge kube-apiserver takes an incoming Audit-ID as its own, so both trails name the
    // request alike and an auditor can join the hub's record to the edge cluster's.
    if let Some(audit) = req.extensions().get::<AuditContext>() {
        if let Ok(id) = HeaderValue::from_str(audit.audit_id()) {
            headers.insert(HeaderName::from_static(crate::audit::AUDIT_ID_HEADER), id);
        }
    }

    if let Some(protocol) = upgrade_protocol(&req) {
        let head = connect_head(&path_and_query, headers)?;
        let outcome = tunnels
            .upgrade(&identity, &protocol, head)
            .await
            .map_err(|e| tunnel_error(info, e))?;
        return match outcome {
            EdgeUpgrade::Rejected(response) => Ok(relay(response)),
            EdgeUpgrade::Upgraded {
                head: agent,
                stream,
            } => switching_protocols(&mut req, &agent, stream, protocol == "websocket"),
        };
    }

    let (parts, incoming) = req.into_parts();
    let mut forward = Request::builder()
        .method(parts.method)
        .uri(&path_and_query)
        .body(incoming)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    *forward.headers_mut() = headers;
    let response = tunnels
        .send(&identity, forward)
        .await
        .map_err(|e| tunnel_error(info, e))?;
    Ok(relay(response))
}

/// The 101 for the client, carrying the switched connection for whoever serves it.
fn switching_protocols(
    req: &mut Request<Body>,
    agent: &http::response::Parts,
    stream: Box<dyn Io>,
    websocket: bool,
) -> Result<Response<Body>, ApiError> {
    let client_upgrade = hyper::upgrade::on(&mut *req);
    let client_wants = req
        .headers()
        .get(UPGRADE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, client_wants);
    if let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
    {
        resp = resp.header("sec-websocket-accept", forwarding::websocket_accept(key));
    }
    for name in [
        "sec-websocket-protocol",
        "x-stream-protocol-version",
        "sec-websocket-extensions",
    ] {
        if let Some(v) = agent.headers.get(name) {
            resp = resp.header(name, v);
        }
    }
    let upgrade = Upgrade::new(client_upgrade, stream, websocket);
    resp.extension(PendingUpgrade::new(upgrade))
        .body(body::empty())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The head of the extended CONNECT that carries an upgrade through the tunnel.
///
/// The caller's `Content-Length` stays behind: kubectl's SPDY upgrades are `POST`s with
/// `Content-Length: 0`, and on an HTTP/2 stream that header bounds the DATA, so the agent's
/// HTTP/2 server would reset the stream at the first byte of the upgraded protocol. What the
/// stream carries after the CONNECT is the upgraded protocol, never a request body.
fn connect_head(path_and_query: &str, mut headers: HeaderMap) -> Result<Request<()>, ApiError> {
    headers.remove(CONTENT_LENGTH);
    let mut head = Request::builder()
        .uri(path_and_query)
        .body(())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    *head.headers_mut() = headers;
    Ok(head)
}

/// The agent's response, streamed to the caller without hop-by-hop headers.
fn relay(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    forwarding::remove_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(Relayed);
    Response::from_parts(parts, body)
}

fn not_connected(info: &RequestInfo, why: &str) -> ApiError {
    ApiError::ServiceUnavailable(format!(
        "cluster {}/{} is not connected: {why}",
        info.namespace, info.name
    ))
}

fn tunnel_error(info: &RequestInfo, err: edgefleet_tunnel::Error) -> ApiError {
    match err {
        edgefleet_tunnel::Error::NotConnected { .. } => {
            not_connected(info, "its agent has no tunnel to this hub")
        }
        other => {
            tracing::debug!(cluster = %format!("{}/{}", info.namespace, info.name), err = %other, "proxying through the tunnel failed");
            ApiError::ServiceUnavailable(format!(
                "proxying to cluster {}/{} failed: {other}",
                info.namespace, info.name
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["ops".into(), "system:authenticated".into()],
            extra: [(
                "scopes.example.com/team a".to_string(),
                vec!["gpu".to_string(), "ml".to_string()],
            )]
            .into(),
        }
    }

    #[test]
    fn the_caller_s_credentials_never_reach_the_edge() {
        let mut caller = HeaderMap::new();
        caller.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        caller.insert("impersonate-user", HeaderValue::from_static("root"));
        caller.insert(
            "impersonate-group",
            HeaderValue::from_static("system:masters"),
        );
        caller.insert("x-remote-user", HeaderValue::from_static("mallory"));
        caller.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-custom-hop"),
        );
        caller.insert("x-custom-hop", HeaderValue::from_static("1"));
        caller.insert("accept", HeaderValue::from_static("application/json"));
        let out = edge_headers(&caller, &user()).unwrap();
        assert!(out.get(AUTHORIZATION).is_none());
        assert!(
            out.get("x-remote-user").is_none()
                && out.get("x-custom-hop").is_none()
                && out.get(CONNECTION).is_none()
        );
        assert_eq!(out.get("accept").unwrap(), "application/json");
        assert_eq!(
            out.get_all("impersonate-user").iter().collect::<Vec<_>>(),
            ["alice"]
        );
        let groups: Vec<&str> = out
            .get_all("impersonate-group")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(groups, ["ops", "system:authenticated"]);
        assert_eq!(out.get("impersonate-uid").unwrap(), "u-1");
        let extra: Vec<&str> = out
            .get_all("impersonate-extra-scopes.example.com%2Fteam%20a")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(extra, ["gpu", "ml"]);
    }

    #[test]
    fn the_connect_for_an_upgrade_carries_no_content_length() {
        // kubectl's SPDY exec: POST, Content-Length: 0, Upgrade: SPDY/3.1.
        let mut caller = HeaderMap::new();
        caller.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        caller.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        caller.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        caller.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        let head = connect_head(
            "/api/v1/namespaces/default/pods/p/exec?command=ls",
            edge_headers(&caller, &user()).unwrap(),
        )
        .unwrap();
        assert!(head.headers().get(CONTENT_LENGTH).is_none());
        assert!(head.headers().get(UPGRADE).is_none() && head.headers().get(CONNECTION).is_none());
        assert_eq!(
            head.headers().get("x-stream-protocol-version").unwrap(),
            "v4.channel.k8s.io"
        );
        assert_eq!(
            head.uri(),
            "/api/v1/namespaces/default/pods/p/exec?command=ls"
        );
    }

    #[test]
    fn upgrades_through_the_proxy_are_authorized_as_create() {
        let websocket_exec = Request::get("/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1/proxy/api/v1/namespaces/default/pods/p/exec?command=sh")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        let info_of = |req: &Request<()>| {
            let mut info = edgefleet_apimachinery::request_info::parse(
                req.method(),
                req.uri().path(),
                req.uri().query(),
            );
            authorize_upgrades_as_create(&mut info, req.headers());
            info
        };
        let info = info_of(&websocket_exec);
        assert_eq!(
            (info.verb.as_str(), info.subresource.as_str()),
            ("create", "proxy")
        );

        // A plain GET through the proxy stays a get; an upgrade elsewhere is not touched.
        let (mut parts, ()) = websocket_exec.into_parts();
        parts.headers.remove(UPGRADE);
        assert_eq!(info_of(&Request::from_parts(parts, ())).verb, "get");
        let elsewhere =
            Request::get("/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/edge-1")
                .header(CONNECTION, "Upgrade")
                .header(UPGRADE, "websocket")
                .body(())
                .unwrap();
        assert_eq!(info_of(&elsewhere).verb, "get");
    }

    #[test]
    fn upgrades_are_recognised() {
        let req = Request::get("/x")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "SPDY/3.1")
            .body(())
            .unwrap();
        assert_eq!(upgrade_protocol(&req).as_deref(), Some("spdy/3.1"));
        let plain = Request::get("/x")
            .header(UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert_eq!(
            upgrade_protocol(&plain),
            None,
            "Upgrade without Connection: Upgrade is not an upgrade"
        );
    }
}
