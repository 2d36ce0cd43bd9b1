//! Dispatch of an authorized request: resource requests to the registry handlers (or to the
//! handler a subresource is registered with), everything else (discovery, OpenAPI, version,
//! health) to the small handlers here. The innermost service of the stack.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use edgefleet_apimachinery::request_info::RequestInfo;
use http::header::ACCEPT;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tower::Service;

use super::body::{self, bytes_response, error_response, value_response, Body};
use super::layers::ServiceFuture;
use super::openapi::{OpenApi, GROUP_VERSION_PATH};
use super::proxy::{ProxyHandler, Tunnels};
use super::{discovery, resources};
use crate::agents::AgentHub;
use crate::audit::Auditor;
use crate::errors::ApiError;
use crate::negotiation::{negotiate, Encoding, Offers, Transform};
use crate::registry::Registry;

/// A subresource served by a handler of its own rather than by the generic resource handlers
/// (kube's `rest.Connecter`s: `clusters/proxy`, `clusters/bootstrap`). The request is
/// authorized; `info.rest` holds what follows the subresource in the path.
#[async_trait]
pub trait SubresourceHandler: Send + Sync {
    async fn handle(
        &self,
        info: &RequestInfo,
        req: Request<Body>,
    ) -> Result<Response<Body>, ApiError>;
}

/// The handlers of subresources, by resource and subresource.
#[derive(Clone, Default)]
pub struct Subresources {
    handlers: HashMap<(String, String), Arc<dyn SubresourceHandler>>,
}

impl Subresources {
    /// Serves `resource/{name}/subresource` with `handler`.
    pub fn register(
        &mut self,
        resource: &str,
        subresource: &str,
        handler: Arc<dyn SubresourceHandler>,
    ) {
        self.handlers
            .insert((resource.to_string(), subresource.to_string()), handler);
    }

    /// The handler of `resource/{name}/subresource`, if one is registered.
    pub fn get(&self, resource: &str, subresource: &str) -> Option<&Arc<dyn SubresourceHandler>> {
        self.handlers
            .get(&(resource.to_string(), subresource.to_string()))
    }
}

/// What the router serves.
pub struct Router {
    pub registry: Registry,
    pub openapi: OpenApi,
    pub subresources: Subresources,
    /// The audit trail, whose health `/readyz` reports (none when auditing is off).
    pub auditor: Option<Auditor>,
}

/// The API level we serve, as `/version` reports it.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "34";

impl Router {
    /// The router of a hub: `agents` for the `bootstrap` subresource, `tunnels` for `proxy`
    /// (the agents' sessions when `None` and there is a tunnel port; a test double in tests).
    pub fn new(
        registry: Registry,
        agents: Option<Arc<AgentHub>>,
        tunnels: Option<Arc<dyn Tunnels>>,
        auditor: Option<Auditor>,
    ) -> Self {
        let openapi = OpenApi::build(&registry);
        let tunnels = tunnels.or_else(|| {
            agents
                .as_ref()
                .map(|a| Arc::new(a.sessions().clone()) as Arc<dyn Tunnels>)
        });
        let mut subresources = Subresources::default();
        subresources.register(
            "clusters",
            "proxy",
            Arc::new(ProxyHandler::new(registry.clone(), tunnels)),
        );
        subresources.register(
            "clusters",
            "bootstrap",
            Arc::new(resources::Bootstrap::new(agents)),
        );
        Router {
            registry,
            openapi,
            subresources,
            auditor,
        }
    }

    /// Serves a request whose [`RequestInfo`] has been parsed (and which has been authorized).
    pub async fn route(&self, info: &RequestInfo, req: Request<Body>) -> Response<Body> {
        let result = if info.is_resource_request && info.api_prefix == "api" {
            super::core::handle(&self.registry, info, &req.into_parts().0).await
        } else if info.is_resource_request {
            resources::handle(&self.registry, &self.subresources, info, req).await
        } else {
            self.non_resource(info, &req.into_parts().0).await
        };
        result.unwrap_or_else(|err| error_response(&err))
    }

    async fn non_resource(
        &self,
        info: &RequestInfo,
        req: &http::request::Parts,
    ) -> Result<Response<Body>, ApiError> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(if self.serves(&info.path) {
                ApiError::MethodNotAllowed
            } else {
                ApiError::NoSuchPath
            });
        }
        let accept = req.headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        let path = info.path.trim_end_matches('/');
        let group_path = format!("/apis/{}", edgefleet_api::GROUP);
        let version_path = format!("/apis/{}/{}", edgefleet_api::GROUP, edgefleet_api::VERSION);
        let verbose = req
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("verbose")));
        let plain = |v: Value| {
            value_response(
                StatusCode::OK,
                &v,
                negotiate(accept, Offers::PLAIN)?.encoding,
            )
        };
        match path {
            "" => plain(json!({"paths": self.paths()})),
            "/version" => plain(version()),
            "/healthz" | "/livez" => Ok(health("healthz", &[("ping", true)], verbose)),
            "/readyz" => {
                let audit = self.auditor.as_ref().is_none_or(|a| {
                    a.health()
                        .inspect_err(|err| tracing::debug!(%err, "not ready: the audit trail"))
                        .is_ok()
                });
                let checks = [
                    ("ping", true),
                    ("watch-caches-synced", self.registry.is_ready()),
                    ("audit-trail-writable", audit),
                ];
                Ok(health("readyz", &checks, verbose))
            }
            "/api" | "/apis" => {
                let rep = negotiate(accept, Offers::DISCOVERY)?;
                let (aggregated, legacy) = if path == "/api" {
                    (discovery::aggregated_core(), discovery::core_versions())
                } else {
                    (
                        discovery::aggregated_groups(&self.registry),
                        discovery::groups(),
                    )
                };
                if rep.transform == Transform::AggregatedDiscovery {
                    let bytes = body::encode(&aggregated, Encoding::Json)?;
                    Ok(bytes_response(
                        StatusCode::OK,
                        discovery::AGGREGATED_CONTENT_TYPE,
                        bytes,
                    ))
                } else {
                    value_response(StatusCode::OK, &legacy, rep.encoding)
                }
            }
            "/api/v1" => plain(discovery::core_resources()),
            p if p == group_path => plain(discovery::api_group()),
            p if p == version_path => plain(discovery::resources(&self.registry)),
            "/openapi/v3" => plain(self.openapi.v3_root()),
            p if p.strip_prefix("/openapi/v3/") == Some(GROUP_VERSION_PATH) => {
                Ok(self.openapi_v3(req))
            }
            "/openapi/v2" => {
                // kubectl asks for protobuf only; JSON clients get JSON, protobuf-only is a 406.
                let rep = negotiate(accept, Offers::PLAIN)?;
                if rep.encoding != Encoding::Json {
                    return Err(ApiError::NotAcceptable(
                        "only application/json is served for /openapi/v2".into(),
                    ));
                }
                Ok(bytes_response(
                    StatusCode::OK,
                    "application/json",
                    self.openapi.v2.clone(),
                ))
            }
            _ => Err(ApiError::NoSuchPath),
        }
    }

    fn serves(&self, path: &str) -> bool {
        self.paths().iter().any(|p| p == path.trim_end_matches('/'))
    }

    fn paths(&self) -> Vec<String> {
        let mut p: Vec<String> = [
            "/api",
            "/api/v1",
            "/apis",
            "/healthz",
            "/livez",
            "/openapi/v2",
            "/openapi/v3",
            "/readyz",
            "/version",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        p.push(format!("/apis/{}", edgefleet_api::GROUP));
        p.push(format!(
            "/apis/{}/{}",
            edgefleet_api::GROUP,
            edgefleet_api::VERSION
        ));
        p.push(format!("/openapi/v3/{GROUP_VERSION_PATH}"));
        p.sort();
        p
    }

    /// The group-version document, cacheable forever under its hash.
    fn openapi_v3(&self, req: &http::request::Parts) -> Response<Body> {
        let hash = &self.openapi.v3_hash;
        let asked = req.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "hash")
                .map(|(_, v)| v.into_owned())
        });
        if asked.as_ref().is_some_and(|a| a != hash) {
            // An old hash: point the client at the current document, as kube-apiserver does.
            let mut resp =
                bytes_response(StatusCode::MOVED_PERMANENTLY, "text/plain", Bytes::new());
            if let Ok(v) = http::HeaderValue::from_str(&format!(
                "/openapi/v3/{GROUP_VERSION_PATH}?hash={hash}"
            )) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            return resp;
        }
        let mut resp = bytes_response(
            StatusCode::OK,
            "application/json",
            self.openapi.v3_group_version.clone(),
        );
        let cache = if req.uri.query().is_some_and(|q| q.contains("hash=")) {
            "public, immutable"
        } else {
            "no-cache, private"
        };
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(cache),
        );
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{hash}\"")) {
            resp.headers_mut().insert(http::header::ETAG, v);
        }
        resp
    }
}

/// `version.Info`.
fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+edgefleet-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `ok`, or kube's check list (with `?verbose`, or when a check failed). Failed checks say
/// "reason withheld", as kube does: the reason is in the hub's log.
fn health(name: &str, checks: &[(&str, bool)], verbose: bool) -> Response<Body> {
    let healthy = checks.iter().all(|(_, ok)| *ok);
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if !verbose && healthy {
        return bytes_response(status, "text/plain; charset=utf-8", "ok");
    }
    let mut text = String::new();
    for (check, ok) in checks {
        if *ok {
            text.push_str(&format!("[+]{check} ok\n"));
        } else {
            text.push_str(&format!("[-]{check} failed: reason withheld\n"));
        }
    }
    text.push_str(&format!(
        "{name} check {}\n",
        if healthy { "passed" } else { "failed" }
    ));
    bytes_response(status, "text/plain; charset=utf-8", text)
}

/// The router as the innermost service of the stack.
#[derive(Clone)]
pub struct RouterService(pub Arc<Router>);

impl Service<Request<Body>> for RouterService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let router = self.0.clone();
        Box::pin(async move {
            let info = match super::layers::request_info_of(&req) {
                Ok(info) => info.clone(),
                Err(err) => return Ok(error_response(&err)),
            };
            Ok(router.route(&info, req).await)
        })
    }
}
