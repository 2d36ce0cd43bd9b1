//! The webhook sink: ships the events of the trail to a SIEM as kube-apiserver's audit webhook
//! backend does — `POST`s of `audit.k8s.io/v1` `EventList`s, batched, configured by a
//! kubeconfig file (`--audit-webhook-config-file`).
//!
//! ```text
//!  writer thread ──try_send──► bounded buffer ──► batcher task ──POST EventList──► SIEM
//!   (after the record is       (buffer_size;       (≤ batch_max_size events,     retried with
//!    in the file)               full → dropped      or batch_max_wait after the   backoff on
//!                               and counted)        first one)                    errors/429/5xx
//! ```
//!
//! The webhook is best effort and never slows a request: the file trail is the system of
//! record. Events reach the webhook only once they are in the file, in trail order.
//!
//! Deviations from kube: no throttling (`--audit-webhook-batch-throttle-*`); TLS needs a CA
//! (`certificate-authority[-data]`) — there is no system trust store here, and
//! `insecure-skip-tls-verify` is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::event::{API_VERSION, EVENT_LIST_KIND};

/// kube's `--audit-webhook-batch-max-size` default.
pub const DEFAULT_BATCH_MAX_SIZE: usize = 400;
/// kube's `--audit-webhook-batch-max-wait` default.
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::from_secs(30);
/// kube's `--audit-webhook-batch-buffer-size` default.
pub const DEFAULT_BUFFER_SIZE: usize = 10_000;
/// kube's `--audit-webhook-initial-backoff` default.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Attempts per batch (kube's webhook backoff has 5 steps, factor 1.5, jitter 0.2).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const BACKOFF_FACTOR: f64 = 1.5;
const BACKOFF_JITTER: f64 = 0.2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the audit webhook kubeconfig {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("audit webhook configuration: {0}")]
    Config(String),
}

/// Where and how to send events.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The URL events are POSTed to.
    pub server: Uri,
    /// TLS for `https` servers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name to verify the server certificate against (default: the host of `server`).
    pub tls_server_name: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    pub batch_max_size: usize,
    pub batch_max_wait: Duration,
    pub buffer_size: usize,
    pub initial_backoff: Duration,
    pub max_attempts: u32,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("server", &self.server)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch_max_size", &self.batch_max_size)
            .field("batch_max_wait", &self.batch_max_wait)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    entry: T,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: String,
}

impl WebhookConfig {
    /// Reads a kubeconfig as kube's `--audit-webhook-config-file`: the current context's
    /// cluster is the webhook server, its user the credentials. Relative file paths are
    /// relative to the kubeconfig's directory. Batching has kube's defaults.
    pub fn from_kubeconfig_file(path: &Path) -> Result<Self, WebhookError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebhookError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config: Kubeconfig =
            serde_yaml_ng::from_str(&text).map_err(|source| WebhookError::Parse {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_kubeconfig(config, base)
    }

    fn from_kubeconfig(config: Kubeconfig, base: &Path) -> Result<Self, WebhookError> {
        let cfg = |msg: String| WebhookError::Config(msg);
        let (cluster_name, user_name) = if config.current_context.is_empty() {
            match (config.contexts.as_slice(), config.clusters.as_slice()) {
                ([only], _) => (only.entry.cluster.clone(), only.entry.user.clone()),
                ([], [only]) => (
                    only.name.clone(),
                    config
                        .users
                        .first()
                        .map(|u| u.name.clone())
                        .unwrap_or_default(),
                ),
                _ => return Err(cfg("no current-context".into())),
            }
        } else {
            let context = config
                .contexts
                .iter()
                .find(|c| c.name == config.current_context)
                .ok_or_else(|| cfg(format!("context {:?} not found", config.current_context)))?;
            (context.entry.cluster.clone(), context.entry.user.clone())
        };
        let cluster = &config
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .ok_or_else(|| cfg(format!("cluster {cluster_name:?} not found")))?
            .entry;
        let default_user = UserEntry::default();
        let user = if user_name.is_empty() {
            &default_user
        } else {
            &config
                .users
                .iter()
                .find(|u| u.name == user_name)
                .ok_or_else(|| cfg(format!("user {user_name:?} not found")))?
                .entry
        };

        let server: Uri = cluster
            .server
            .parse()
            .map_err(|e| cfg(format!("server {:?}: {e}", cluster.server)))?;
        let read = |p: &Path| -> Result<Vec<u8>, WebhookError> {
            let p = base.join(p);
            std::fs::read(&p).map_err(|source| WebhookError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let data = |field: &str, b64: &str| -> Result<Vec<u8>, WebhookError> {
            STANDARD
                .decode(b64.trim())
                .map_err(|_| cfg(format!("{field} is not base64")))
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => Some(
                String::from_utf8(read(file)?)
                    .map_err(|_| cfg("token-file is not UTF-8".into()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };

        let tls = match server.scheme_str() {
            Some("https") => {
                if cluster.insecure_skip_tls_verify {
                    return Err(cfg("insecure-skip-tls-verify is not supported".into()));
                }
                let ca = match (
                    &cluster.certificate_authority_data,
                    &cluster.certificate_authority,
                ) {
                    (Some(d), _) => data("certificate-authority-data", d)?,
                    (None, Some(p)) => read(p)?,
                    (None, None) => return Err(cfg(
                        "an https server needs certificate-authority or certificate-authority-data"
                            .into(),
                    )),
                };
                let cert = match (&user.client_certificate_data, &user.client_certificate) {
                    (Some(d), _) => Some(data("client-certificate-data", d)?),
                    (None, Some(p)) => Some(read(p)?),
                    (None, None) => None,
                };
                let key = match (&user.client_key_data, &user.client_key) {
                    (Some(d), _) => Some(data("client-key-data", d)?),
                    (None, Some(p)) => Some(read(p)?),
                    (None, None) => None,
                };
                Some(tls_config(&ca, cert.as_deref().zip(key.as_deref()))?)
            }
            Some("http") => None,
            _ => return Err(cfg(format!("server {server} is not an http(s) URL"))),
        };
        Ok(WebhookConfig {
            server,
            tls,
            tls_server_name: cluster.tls_server_name.clone(),
            token,
            batch_max_size: DEFAULT_BATCH_MAX_SIZE,
            batch_max_wait: DEFAULT_BATCH_MAX_WAIT,
            buffer_size: DEFAULT_BUFFER_SIZE,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }
}

fn tls_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, WebhookError> {
    let cfg = |msg: String| WebhookError::Config(msg);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| cfg(format!("certificate authority: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| cfg(format!("certificate authority: {e}")))?;
    }
    if roots.is_empty() {
        return Err(cfg("the certificate authority holds no certificate".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| cfg(e.to_string()))?
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| cfg(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|_| cfg("client key is not a PEM private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cfg(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Starts the sink: returns the buffer the writer feeds (canonical event JSON) and the task
/// that ends once the buffer is closed and drained.
pub(crate) fn start(
    config: WebhookConfig,
) -> Result<(mpsc::Sender<Bytes>, JoinHandle<()>), WebhookError> {
    if config.server.host().is_none() {
        return Err(WebhookError::Config(format!(
            "server {} has no host",
            config.server
        )));
    }
    let (tx, rx) = mpsc::channel(config.buffer_size.max(1));
    let task = tokio::spawn(run(config, rx));
    Ok((tx, task))
}

async fn run(config: WebhookConfig, mut rx: mpsc::Receiver<Bytes>) {
    let max = config.batch_max_size.max(1);
    let mut client = Client {
        config,
        sender: None,
    };
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + client.config.batch_max_wait;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        client.deliver(&batch).await;
    }
}

/// `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[…]}`.
pub fn event_list_body(events: &[Bytes]) -> Bytes {
    let len: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut body = BytesMut::with_capacity(len + 96);
    body.extend_from_slice(
        format!(
            r#"{{"kind":"{EVENT_LIST_KIND}","apiVersion":"{API_VERSION}","metadata":{{}},"items":["#
        )
        .as_bytes(),
    );
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(b"]}");
    body.freeze()
}

struct Client {
    config: WebhookConfig,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

#[derive(Debug)]
enum PostError {
    /// Worth another attempt: connection trouble, timeouts, 429, 5xx.
    Retry(String),
    /// Not: the server refuses this batch.
    Fatal(String),
}

impl Client {
    async fn deliver(&mut self, events: &[Bytes]) {
        let body = event_list_body(events);
        let mut backoff = self.config.initial_backoff;
        for attempt in 1..=self.config.max_attempts.max(1) {
            match self.post(body.clone()).await {
                Ok(()) => return,
                Err(PostError::Fatal(reason)) => {
                    tracing::error!(events = events.len(), %reason, "audit webhook refused a batch; dropped it");
                    return;
                }
                Err(PostError::Retry(reason)) => {
                    self.sender = None;
                    if attempt == self.config.max_attempts.max(1) {
                        tracing::error!(events = events.len(), attempts = attempt, %reason, "audit webhook unreachable; dropped a batch");
                        return;
                    }
                    tracing::warn!(attempt, %reason, "audit webhook failed; retrying");
                    let jitter = 1.0 + BACKOFF_JITTER * rand::random::<f64>();
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = backoff.mul_f64(BACKOFF_FACTOR);
                }
            }
        }
    }

    async fn post(&mut self, body: Bytes) -> Result<(), PostError> {
        let ready = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let uri = &self.config.server;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.config.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| PostError::Fatal(e.to_string()))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| PostError::Retry(format!("sending: {e}")))?;
            let status = response.status();
            // Read the body so the connection can carry the next batch.
            drop(response.into_body().collect().await);
            Ok::<_, PostError>(status)
        };
        let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| PostError::Retry("timed out".into()))??;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::TOO_MANY_REQUESTS => Err(PostError::Retry(status.to_string())),
            s if s.is_server_error() => Err(PostError::Retry(status.to_string())),
            s => Err(PostError::Fatal(s.to_string())),
        }
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, PostError> {
        let uri = &self.config.server;
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| PostError::Retry("connect timed out".into()))?
        .map_err(|e| PostError::Retry(format!("connecting to {host}:{port}: {e}")))?;
        drop(tcp.set_nodelay(true));
        let handshake_error = |e: hyper::Error| PostError::Retry(format!("HTTP handshake: {e}"));
        match (&self.config.tls, tls) {
            (Some(config), true) => {
                let name = self.config.tls_server_name.as_deref().unwrap_or(host);
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| PostError::Fatal(format!("server name {name:?}: {e}")))?;
                let stream = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| PostError::Retry("TLS handshake timed out".into()))?
                .map_err(|e| PostError::Retry(format!("TLS handshake: {e}")))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(handshake_error)?;
                tokio::spawn(async move { drop(conn.await) });
                Ok(sender)
            }
            (None, false) => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake_error)?;
                tokio::spawn(async move { drop(conn.await) });
                Ok(sender)
            }
            _ => Err(PostError::Fatal(
                "https server without TLS configuration".into(),
            )),
        }
    }
}
