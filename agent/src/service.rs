//! The service the agent serves on its tunnel: the agent's own paths first, then a backend (the
//! edge kube-apiserver in `run`, the in-memory cluster in `simulate`).
//!
//! | request                                      | answer                                       |
//! |----------------------------------------------|----------------------------------------------|
//! | `GET /.well-known/edgefleet/facts`           | 200 NDJSON facts stream ([`facts::stream`])   |
//! | other method on the facts path               | 405 Status                                   |
//! | any other `/.well-known/edgefleet[/…]`       | 404 Status, never forwarded                  |
//! | anything else (including extended CONNECT)   | the backend                                  |
//!
//! The tunnel's reserved paths (`/.well-known/edgefleet-tunnel/…`) never get here: the tunnel's
//! own handler answers them first.
//!
//! [`facts::stream`]: crate::facts::stream

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use edgefleet_api::agent::FACTS_PATH;
use edgefleet_tunnel::TunnelBody;
use http::{Method, Request, Response};
use tower::ServiceExt;

use crate::facts::stream::{facts_response, FactsFeed};
use crate::status;
use crate::timeouts::FACTS_HEARTBEAT_INTERVAL;

/// Prefix of the agent's own paths (the facts stream and whatever comes next).
pub const AGENT_PATH_PREFIX: &str = "/.well-known/edgefleet";

/// The agent's service: see the module docs. Cheap to clone (one per tunnel stream).
#[derive(Clone)]
pub struct AgentService<B> {
    facts: FactsFeed,
    heartbeat: Duration,
    backend: B,
}

impl<B> std::fmt::Debug for AgentService<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService").finish_non_exhaustive()
    }
}

impl<B> AgentService<B> {
    /// Serves `facts` on the facts path and everything else from `backend`.
    pub fn new(facts: FactsFeed, backend: B) -> Self {
        Self {
            facts,
            heartbeat: FACTS_HEARTBEAT_INTERVAL,
            backend,
        }
    }

    /// Repeats unchanged facts this often instead of [`FACTS_HEARTBEAT_INTERVAL`].
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }
}

/// Whether `path` is the agent's own (answered here, never forwarded).
pub fn is_agent_path(path: &str) -> bool {
    path == AGENT_PATH_PREFIX
        || path
            .strip_prefix(AGENT_PATH_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl<B, ReqBody> tower::Service<Request<ReqBody>> for AgentService<B>
where
    B: tower::Service<Request<ReqBody>, Response = Response<TunnelBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    B::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<TunnelBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TunnelBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Backends are always ready; readiness is checked per call by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if path == FACTS_PATH {
            let response = if req.method() == Method::GET {
                facts_response(self.facts.clone(), self.heartbeat)
            } else {
                status::method_not_allowed()
            };
            return Box::pin(async move { Ok(response) });
        }
        if is_agent_path(path) {
            return Box::pin(async { Ok(status::path_not_found()) });
        }
        let backend = self.backend.clone();
        Box::pin(backend.oneshot(req))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use edgefleet_tunnel::body;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tokio::sync::watch;

    use super::*;

    type Backend = tower::util::BoxCloneService<Request<()>, Response<TunnelBody>, Infallible>;

    fn service() -> (AgentService<Backend>, watch::Sender<Option<Bytes>>) {
        let (tx, feed) = watch::channel(Some(Bytes::from_static(b"{\"facts\":1}\n")));
        let backend = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(body::full(format!("backend {}", req.uri()))))
        });
        (AgentService::new(feed, Backend::new(backend)), tx)
    }

    async fn call(method: Method, path: &str) -> (StatusCode, Bytes) {
        let (service, _facts) = service();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let mut body = response.into_body();
        // The facts stream never ends: take its first frame only.
        let bytes = match body.frame().await {
            Some(frame) => frame.unwrap().into_data().unwrap_or_default(),
            None => Bytes::new(),
        };
        (status, bytes)
    }

    #[tokio::test]
    async fn the_facts_path_is_answered_by_the_agent() {
        let (status, bytes) = call(Method::GET, FACTS_PATH).await;
        assert_eq!(
            (status, &bytes[..]),
            (StatusCode::OK, &b"{\"facts\":1}\n"[..])
        );
        let (status, _) = call(Method::POST, FACTS_PATH).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn unknown_agent_paths_are_404_and_never_reach_the_backend() {
        for path in [
            "/.well-known/edgefleet",
            "/.well-known/edgefleet/",
            "/.well-known/edgefleet/metrics",
            "/.well-known/edgefleet/facts/extra",
        ] {
            let (status, bytes) = call(Method::GET, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!bytes.starts_with(b"backend"), "{path} was forwarded");
        }
    }

    #[tokio::test]
    async fn everything_else_goes_to_the_backend() {
        for path in [
            "/api/v1/nodes",
            "/.well-known/edgefleetx",
            "/.well-known/openid-configuration",
        ] {
            let (status, bytes) = call(Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(bytes, format!("backend {path}"), "{path}");
        }
    }
}
