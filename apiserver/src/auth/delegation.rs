//! The hub's client for the management cluster's kube-apiserver, which it asks to authenticate
//! bearer tokens (TokenReview), to authorize requests (SubjectAccessReview), and for the
//! front-proxy settings (`kube-system/extension-apiserver-authentication`) when it runs as an
//! aggregated API server.
//!
//! ```text
//!  --authentication-kubeconfig / --authorization-kubeconfig ──► kube::Config
//!  absent: in-cluster (KUBERNETES_SERVICE_HOST/PORT, service account token + ca.crt; kube-rs
//!          re-reads both files about once a minute, so a rotated token is picked up)
//!                                  │
//!                                  ▼
//!  kube::Client ──► post()/get(): one attempt per try, retried with kube's webhook backoff on
//!                   transient failures, the whole exchange bounded by a timeout
//! ```
//!
//! Requests are sent with `Client::send` and their bodies parsed here, not with kube-rs' typed
//! helpers, because those log a response body they cannot parse and a TokenReview carries a
//! token. Nothing in this module logs a request or response body, and errors carry the status
//! and the server's message, never a body.
//!
//! Every timeout and interval of delegated authentication and authorization lives here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::authn::x509::{read_pem_certificates, CaBundleError};

/// kube's `TokenRequestTimeout` of delegated authentication: one TokenReview, retries included.
pub const TOKEN_REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// kube's `ClientTimeout` of delegated authorization: one SubjectAccessReview, retries included.
pub const SUBJECT_ACCESS_REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Reading `kube-system/extension-apiserver-authentication`.
pub const CONFIGMAP_TIMEOUT: Duration = Duration::from_secs(10);
/// Establishing a connection to the management API.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// kube's `--authentication-token-webhook-cache-ttl` default for aggregated servers; also how
/// long a rejected token is remembered (kube uses one TTL for both).
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// kube's `--authorization-webhook-cache-authorized-ttl` default for aggregated servers.
pub const DEFAULT_AUTHORIZED_TTL: Duration = Duration::from_secs(10);
/// kube's `--authorization-webhook-cache-unauthorized-ttl` default for aggregated servers.
pub const DEFAULT_UNAUTHORIZED_TTL: Duration = Duration::from_secs(10);
/// How often the front-proxy and client CA settings are re-read from the cluster. kube watches
/// the ConfigMap; these settings change only when the management cluster rotates its CAs, and a
/// GET every half minute costs nothing.
pub const AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// kube's default webhook retry backoff: first wait, growth factor, jitter, attempts.
pub const RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const RETRY_BACKOFF_FACTOR: f64 = 1.5;
pub const RETRY_BACKOFF_JITTER: f64 = 0.2;
pub const RETRY_ATTEMPTS: u32 = 5;
/// Responses larger than this are refused (a ConfigMap is at most 1 MiB).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Where kubelet mounts a pod's service account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The management API client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("reading kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "not running in a cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not \
         set) and no kubeconfig was given"
    )]
    NotInCluster,
    #[error("in-cluster API address {host}:{port} is not a valid URL")]
    InClusterUrl {
        host: String,
        port: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("reading the service account token {}", path.display())]
    ServiceAccountToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the service account CA {}", path.display())]
    ServiceAccountCa {
        path: PathBuf,
        #[source]
        source: CaBundleError,
    },
    #[error("building the client")]
    Client(#[source] kube::Error),
}

/// What the in-cluster configuration is read from: the process environment and the service
/// account mount, or fakes of both in tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InClusterEnvironment {
    /// `KUBERNETES_SERVICE_HOST`.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// Holds `token`, `ca.crt` and `namespace`.
    pub service_account_dir: PathBuf,
}

impl InClusterEnvironment {
    /// This process's environment and kubelet's mount point.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        InClusterEnvironment {
            service_host: var("KUBERNETES_SERVICE_HOST"),
            service_port: var("KUBERNETES_SERVICE_PORT"),
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }

    /// client-go's test: both variables set (the service account files may still be missing).
    pub fn is_in_cluster(&self) -> bool {
        self.service_host.is_some() && self.service_port.is_some()
    }

    /// The API server URL, bracketing IPv6 addresses as client-go does.
    fn cluster_url(&self) -> Result<http::Uri, ClientConfigError> {
        let (Some(host), Some(port)) = (&self.service_host, &self.service_port) else {
            return Err(ClientConfigError::NotInCluster);
        };
        let authority = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        format!("https://{authority}")
            .parse()
            .map_err(|source| ClientConfigError::InClusterUrl {
                host: host.clone(),
                port: port.clone(),
                source,
            })
    }
}

/// A client from a kubeconfig file (its current context), as client-go's
/// `ClientConfigLoadingRules{ExplicitPath}` reads it.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, ClientConfigError> {
    let error = |source| ClientConfigError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(error)?;
    finish(config)
}

/// A client from the pod's service account, as client-go's `rest.InClusterConfig`. The token
/// and CA files are re-read by kube-rs about once a minute, so rotated credentials are used
/// without a restart.
pub fn client_in_cluster(env: &InClusterEnvironment) -> Result<kube::Client, ClientConfigError> {
    let cluster_url = env.cluster_url()?;
    let token_file = env.service_account_dir.join("token");
    let ca_file = env.service_account_dir.join("ca.crt");
    // Read both now so that a missing mount fails at start-up, not on the first request.
    std::fs::metadata(&token_file).map_err(|source| ClientConfigError::ServiceAccountToken {
        path: token_file.clone(),
        source,
    })?;
    let ca =
        read_pem_certificates(&ca_file).map_err(|source| ClientConfigError::ServiceAccountCa {
            path: ca_file.clone(),
            source,
        })?;

    let mut config = kube::Config::new(cluster_url);
    config.root_cert = Some(ca.into_iter().map(|der| der.to_vec()).collect());
    config.root_cert_file = Some(ca_file);
    config.auth_info.token_file = Some(token_file.display().to_string());
    if let Ok(namespace) = std::fs::read_to_string(env.service_account_dir.join("namespace")) {
        config.default_namespace = namespace.trim().to_string();
    }
    finish(config)
}

/// The client for `--authentication-kubeconfig`/`--authorization-kubeconfig`, or in-cluster.
pub async fn client(
    kubeconfig: Option<&Path>,
    env: &InClusterEnvironment,
) -> Result<kube::Client, ClientConfigError> {
    match kubeconfig {
        Some(path) => client_from_kubeconfig(path).await,
        None => client_in_cluster(env),
    }
}

fn finish(mut config: kube::Config) -> Result<kube::Client, ClientConfigError> {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // Each exchange is bounded as a whole by its own timeout (see `post`), retries included.
    config.read_timeout = None;
    config.write_timeout = None;
    // Retries follow kube's webhook backoff here, in one place, rather than kube-rs' policy on
    // top of ours.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(ClientConfigError::Client)
}

/// kube's webhook retry backoff (`wait.Backoff`): waits `initial`, `initial * factor`, … each
/// stretched by up to `jitter`, for at most `attempts` tries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBackoff {
    pub initial: Duration,
    pub factor: f64,
    pub jitter: f64,
    pub attempts: u32,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            initial: RETRY_INITIAL_BACKOFF,
            factor: RETRY_BACKOFF_FACTOR,
            jitter: RETRY_BACKOFF_JITTER,
            attempts: RETRY_ATTEMPTS,
        }
    }
}

impl RetryBackoff {
    /// The wait before try `attempt + 1` (`attempt` counts from 0).
    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .mul_f64(self.factor.powi(attempt.try_into().unwrap_or(i32::MAX)));
        if self.jitter > 0.0 {
            base.mul_f64(1.0 + rand::rng().random_range(0.0..self.jitter))
        } else {
            base
        }
    }
}

/// One exchange with the management API failed. Messages never include a request or response
/// body.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("encoding the request")]
    Encode(#[source] serde_json::Error),
    #[error("sending the request")]
    Transport(#[source] kube::Error),
    #[error("the server answered {code}{}: {message}", fmt_reason(reason))]
    Status {
        code: u16,
        reason: String,
        message: String,
        /// `details.retryAfterSeconds`: the server asks to be asked again.
        retry_after: bool,
    },
    #[error("reading the response")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("decoding the response")]
    Decode(#[source] serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the lookup was abandoned")]
    Aborted(#[from] super::cache::LookupAborted),
}

fn fmt_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

impl RequestError {
    /// kube's `DefaultShouldRetry`: an overloaded or failing server (500 InternalError, 504
    /// Timeout, 429 TooManyRequests, or any answer asking to retry later) or a connection that
    /// broke mid-request. A refused connection is not retried: the server is down, and the
    /// caller should decide now rather than after the backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            RequestError::Status {
                code, retry_after, ..
            } => matches!(code, 429 | 500 | 504) || *retry_after,
            RequestError::Transport(err) => is_broken_connection(err),
            _ => false,
        }
    }
}

fn is_broken_connection(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// `metav1.Status` fields of an error answer.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StatusBody {
    reason: String,
    message: String,
    details: Option<StatusDetails>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StatusDetails {
    retry_after_seconds: Option<i64>,
}

async fn exchange<T: DeserializeOwned>(
    client: &kube::Client,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<T, RequestError> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(ACCEPT, "application/json");
    if !body.is_empty() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(kube::client::Body::from(body.to_vec()))
        .expect("method, path and headers are valid");
    let response = client
        .send(request)
        .await
        .map_err(RequestError::Transport)?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(RequestError::Body)?
        .to_bytes();
    if !status.is_success() {
        // Only the Status fields are kept: an arbitrary error body is not worth the risk of
        // echoing something secret into a log line.
        let parsed: StatusBody = serde_json::from_slice(&bytes).unwrap_or_default();
        return Err(RequestError::Status {
            code: status.as_u16(),
            reason: parsed.reason,
            message: if parsed.message.is_empty() {
                status.canonical_reason().unwrap_or_default().to_string()
            } else {
                parsed.message
            },
            retry_after: parsed.details.and_then(|d| d.retry_after_seconds).is_some(),
        });
    }
    serde_json::from_slice(&bytes).map_err(RequestError::Decode)
}

/// Sends `method path` (with a JSON `body` unless empty) until it succeeds, fails for good, the
/// backoff is spent, or `timeout` passes.
async fn with_retries<T: DeserializeOwned>(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Vec<u8>,
    backoff: RetryBackoff,
    timeout: Duration,
) -> Result<T, RequestError> {
    let attempts = async {
        let mut attempt = 0;
        loop {
            match exchange(client, &method, path, &body).await {
                Err(err) if err.is_transient() && attempt + 1 < backoff.attempts => {
                    tracing::debug!(%path, attempt, error = %err, "retrying");
                    tokio::time::sleep(backoff.delay(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .unwrap_or(Err(RequestError::Timeout(timeout)))
}

/// Creates `object` at `path` (a review: the answer is the object with its status).
pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
    client: &kube::Client,
    path: &str,
    object: &Req,
    backoff: RetryBackoff,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    let body = serde_json::to_vec(object).map_err(RequestError::Encode)?;
    with_retries(client, Method::POST, path, body, backoff, timeout).await
}

/// Reads the object at `path`.
pub(crate) async fn get<Resp: DeserializeOwned>(
    client: &kube::Client,
    path: &str,
    backoff: RetryBackoff,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    with_retries(client, Method::GET, path, Vec::new(), backoff, timeout).await
}

#[cfg(test)]
mod tests;
