//! The agent's errors: [`Error`], why an agent could not be built (configuration, credentials,
//! files), and [`UpstreamError`], why a request to the edge kube-apiserver failed. The latter
//! never ends a process: it becomes a `metav1.Status` for the caller ([`crate::status`]). Both
//! live here so that `status` (which maps them) and `upstream` (which returns them) depend on
//! this module and not on each other.

use std::path::PathBuf;
use std::time::Duration;

use edgefleet_tunnel::BoxError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the configuration names could not be read.
    #[error("reading the {what} {path}")]
    ReadFile {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The hub address is not `host:port`.
    #[error("invalid hub address {0:?}: expected host:port")]
    HubAddress(String),
    /// The name the hub's certificate must carry is not a DNS name or IP address.
    #[error("invalid hub server name {0:?}")]
    HubServerName(String, #[source] rustls_pki_types::InvalidDnsNameError),
    /// The hub CA bundle holds no usable certificate.
    #[error("invalid hub CA bundle {path}")]
    HubCa {
        /// The bundle.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: edgefleet_tunnel::Error,
    },
    /// The cluster is not `<environment>/<name>`.
    #[error("invalid cluster {0:?}: expected <environment>/<name>")]
    ClusterRef(String),
    /// The agent has neither a stored identity nor a bootstrap token.
    #[error(
        "no identity is stored in {location} and no bootstrap token was given: the agent cannot enroll"
    )]
    NoCredentials {
        /// The identity directory, or `the Secret <namespace>/<name>`.
        location: String,
    },
    /// The identity directory could not be read.
    #[error("reading the stored identity")]
    Identity(#[source] edgefleet_tunnel::Error),
    /// The identity Secret is not `<namespace>/<name>`.
    #[error("invalid identity Secret {value:?}: {why}")]
    SecretRef {
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The working directory of the identity could not be created or written.
    #[error("preparing the identity working directory {path} (it must be writable: with a read-only root filesystem, mount an emptyDir and pass --identity-dir)")]
    WorkDir {
        /// The directory or file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The identity Secret could not be read.
    #[error("restoring the identity from its Secret")]
    IdentitySecret(#[source] crate::identity::secret::SecretError),
    /// The identity Secret holds something that is not a certificate chain and its key.
    #[error("the Secret {secret} holds an unusable identity.pem; delete the Secret to enroll again with a new bootstrap token")]
    UnusableSecretIdentity {
        /// `<namespace>/<name>`.
        secret: String,
        /// What is wrong with it (never its contents).
        #[source]
        source: edgefleet_tunnel::Error,
    },
    /// The kubeconfig could not be loaded.
    #[error("loading the kubeconfig {path}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// In-cluster configuration (service account) could not be loaded.
    #[error("loading the in-cluster configuration (service account token, ca.crt, KUBERNETES_SERVICE_HOST/PORT)")]
    InCluster(#[source] kube::config::InClusterError),
    /// The upstream client (TLS, credentials) could not be built from the configuration.
    #[error("building the client for the edge kube-apiserver")]
    UpstreamClient(#[source] kube::Error),
    /// The upstream URL is not usable.
    #[error("invalid kube-apiserver URL {0:?}")]
    UpstreamUrl(String),
    /// The bootstrap directory of `simulate` holds no cluster.
    #[error("the bootstrap directory {0} holds no <environment>.<name> subdirectories")]
    EmptyBootstrapDir(PathBuf),
    /// A simulated cluster shape is invalid.
    #[error("invalid simulated cluster shape: {0}")]
    Shape(String),
}

/// Why a request to the upstream failed (each becomes a Status in [`crate::status`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting, TLS, credentials or the exchange itself failed.
    #[error("request to the edge cluster's kube-apiserver at {url} failed")]
    Unreachable {
        /// The upstream.
        url: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Connecting or waiting for the response headers took too long.
    #[error("timed out after {after:?} waiting for the edge cluster's kube-apiserver at {url}")]
    Timeout {
        /// The upstream.
        url: String,
        /// The budget that ran out.
        after: Duration,
    },
    /// An upgrade was answered with a success status other than 101.
    #[error("the edge cluster's kube-apiserver answered the upgrade with {status} instead of 101 Switching Protocols")]
    NoUpgrade {
        /// What it answered.
        status: http::StatusCode,
    },
    /// A WebSocket 101 whose `Sec-WebSocket-Accept` does not match our key.
    #[error("the edge cluster's kube-apiserver answered the WebSocket upgrade with a wrong Sec-WebSocket-Accept")]
    WebSocketAccept,
    /// The hub asked for an upgrade this agent does not speak.
    #[error("unsupported upgrade protocol {0:?}: expected websocket or SPDY/3.1")]
    UnsupportedProtocol(String),
    /// The hub's request carries no `Impersonate-User` (see [`crate::upstream::headers::require_impersonation`]).
    #[error("refusing to forward a request without Impersonate-User: it would run with the agent's own privileges")]
    NotImpersonated,
    /// The request could not be rebuilt for the upstream.
    #[error("the request cannot be sent to the edge cluster's kube-apiserver")]
    Request(#[source] http::Error),
}
