//! The `run` backend: the edge cluster's own kube-apiserver.
//!
//! ```text
//!   request from the hub ─► Upstream (tower::Service)
//!        │ CONNECT + :protocol ──► upgrade::upgrade ─► HTTP/1.1 Upgrade on a fresh connection,
//!        │                                              splice bytes after 101
//!        │ anything else ────────► forward::forward ─► same method, path, query and body on the
//!        │                                              pooled client, response streamed back
//!        ▼
//!   headers::sanitize_request (no Authorization, no hop-by-hop; Impersonate-* kept)
//!   transport: + the agent's own credentials (kube-rs auth layer / client certificate)
//! ```
//!
//! Where the upstream is and which credentials the agent uses come from a kubeconfig or from
//! the pod's service account ([`UpstreamSource`]), loaded by kube-rs.

pub mod forward;
pub mod headers;
pub mod transport;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_tunnel::{BoxError, TunnelBody};
use http::{Method, Request, Response, Uri};

pub use crate::error::UpstreamError;
use crate::error::{Error, Result};
pub use transport::{Transport, Transports};

/// Where the agent finds its cluster and its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamSource {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, the token at
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token` (re-read as it rotates) and the
    /// `ca.crt` next to it.
    InCluster,
}

impl UpstreamSource {
    /// Loads the kube-rs configuration.
    pub async fn load(&self) -> Result<kube::Config> {
        match self {
            Self::Kubeconfig(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    Error::Kubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|source| Error::Kubeconfig {
                        path: path.clone(),
                        source,
                    })
            }
            Self::InCluster => kube::Config::incluster().map_err(Error::InCluster),
        }
    }
}

impl UpstreamError {
    /// Classifies a transport failure: timeouts (anywhere in the chain) are 504s.
    fn from_transport(url: &Uri, error: BoxError, timeout: Duration) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return Self::Timeout {
                        url: url_text(url),
                        after: timeout,
                    };
                }
            }
            cause = e.source();
        }
        Self::Unreachable {
            url: url_text(url),
            source: error,
        }
    }
}

/// Scheme and authority only: paths and queries stay out of error messages and logs.
fn url_text(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => uri.to_string(),
    }
}

/// The edge kube-apiserver as a `tower::Service` (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    base: Uri,
    transports: Transports,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &url_text(&self.inner.base))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The upstream described by a kube-rs configuration.
    pub fn from_config(config: &kube::Config) -> Result<Self> {
        Ok(Self::with_transports(
            config.cluster_url.clone(),
            Transports::from_config(config)?,
        ))
    }

    /// The upstream at `base`, reached through `transports`.
    pub fn with_transports(base: Uri, transports: Transports) -> Self {
        Self {
            inner: Arc::new(Inner { base, transports }),
        }
    }

    /// The upstream URI for the hub's request URI: the base (scheme, authority, any path
    /// prefix) followed by the request's path and query.
    fn uri_for(&self, request: &Uri) -> Result<Uri, UpstreamError> {
        let base = &self.inner.base;
        let prefix = base.path().trim_end_matches('/');
        let path_and_query = request.path_and_query().map_or("/", |p| p.as_str());
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(
            format!("{prefix}{path_and_query}")
                .parse()
                .map_err(|e| UpstreamError::Request(http::Error::from(e)))?,
        );
        Uri::from_parts(parts).map_err(|e| UpstreamError::Request(http::Error::from(e)))
    }
}

impl<B> tower::Service<Request<B>> for Upstream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TunnelBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TunnelBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let upstream = self.clone();
        Box::pin(async move {
            Ok(if req.method() == Method::CONNECT {
                upgrade::upgrade(&upstream, req).await
            } else {
                forward::forward(&upstream, req).await
            })
        })
    }
}

#[cfg(test)]
mod tests;
