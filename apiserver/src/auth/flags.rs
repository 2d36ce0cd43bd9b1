//! Command-line flags for authentication and authorization, named as kube-apiserver and
//! aggregated API servers (k8s.io/apiserver's delegating options) name them, plus our
//! `--authorization-rbac-file`, and what they build. `main` flattens these into its own
//! arguments.
//!
//! Two deployments, one set of flags:
//!
//! ```text
//!  standalone            client certs (--client-ca-file), --token-auth-file, RBAC from a file
//!  behind kube-apiserver  + front proxy and client CA from kube-system/extension-apiserver-
//!                           authentication (unless the --requestheader-*/--client-ca-file flags
//!                           say otherwise, or --authentication-skip-lookup)
//!                         + bearer tokens by TokenReview
//!                         + --authorization-mode=Webhook: SubjectAccessReview
//! ```
//!
//! Delegated authentication is on when `--authentication-kubeconfig` is given or the hub runs in
//! a pod (client-go's in-cluster rule: `KUBERNETES_SERVICE_HOST`/`_PORT` set); outside a cluster
//! and without a kubeconfig it is off, which is the standalone hub. This is kube's behaviour for
//! components whose remote kubeconfig is optional. Delegated authorization is on when
//! `--authorization-mode` names `Webhook`, and then requires a kubeconfig or a cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ArgAction;
use edgefleet_tunnel::error_chain;
use rustls_pki_types::CertificateDer;

use super::authn::client_ca::ClientCertificateAuthorities;
use super::authn::cluster_config::{self, ClusterSettings, ConfigMapError};
use super::authn::requestheader::{
    RequestHeaderConfigError, DEFAULT_EXTRA_HEADERS_PREFIX, DEFAULT_GROUP_HEADER,
    DEFAULT_UID_HEADER, DEFAULT_USERNAME_HEADER,
};
use super::authn::x509::read_pem_certificates;
use super::authn::{
    CaBundleError, CertificateVerifier, RequestHeaderAuthenticator, RequestHeaderConfig, TokenFile,
    TokenFileError, TokenReviewAuthenticator, UnionAuthenticator, X509Authenticator,
};
use super::authorizer::InvalidPathPattern;
use super::delegation::{
    self, ClientConfigError, InClusterEnvironment, RetryBackoff,
    AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL, DEFAULT_AUTHORIZED_TTL, DEFAULT_TOKEN_CACHE_TTL,
    DEFAULT_UNAUTHORIZED_TTL,
};
use super::rbac::{Policy, PolicyError, RbacAuthorizer};
use super::sar::SubjectAccessReviewAuthorizer;
use super::swap::Swap;
use super::{
    AlwaysAllow, AlwaysAllowPaths, AlwaysDeny, Authorizer, PrivilegedGroups, UnionAuthorizer,
};

/// A flag's value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("--client-ca-file")]
    ClientCa(#[source] CaBundleError),
    #[error("--requestheader-client-ca-file")]
    RequestHeaderCa(#[source] CaBundleError),
    #[error("--requestheader-* flags")]
    RequestHeader(#[source] RequestHeaderConfigError),
    #[error("--token-auth-file")]
    TokenFile(#[source] TokenFileError),
    #[error("--authorization-rbac-file")]
    Policy(#[source] PolicyError),
    #[error("--authorization-rbac-file is set but --authorization-mode does not include RBAC")]
    RbacFileWithoutRbac,
    #[error("--authentication-kubeconfig")]
    AuthenticationClient(#[source] ClientConfigError),
    #[error(
        "looking up authentication settings in the management cluster (set \
         --authentication-tolerate-lookup-failure to start without them, or \
         --authentication-skip-lookup to not look)"
    )]
    ClusterLookup(#[source] ConfigMapError),
    #[error("--authorization-mode=Webhook needs --authorization-kubeconfig or an in-cluster service account")]
    AuthorizationClient(#[source] ClientConfigError),
    #[error("--authorization-kubeconfig is set but --authorization-mode does not include Webhook")]
    KubeconfigWithoutWebhook,
    #[error("--authorization-always-allow-paths")]
    AlwaysAllowPaths(#[source] InvalidPathPattern),
}

/// A Go duration as kube's flags take it (`10s`, `1m30s`, `500ms`, `0`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let duration: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    Duration::try_from(duration).map_err(|_| format!("duration {s:?} must not be negative"))
}

/// kube's authentication flags that apply to the hub.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthenticationFlags {
    /// PEM bundle of CAs for client certificates; the certificate's CN is the user, its O
    /// values the groups. Without it, behind kube-apiserver, the client-ca-file of
    /// kube-system/extension-apiserver-authentication is used.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Static bearer tokens, CSV: token,user,uid,"group1,group2".
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Run requests that present no credential as system:anonymous (group
    /// system:unauthenticated), for RBAC to decide on.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub anonymous_auth: bool,

    /// PEM bundle of the CA that signs the front proxy's (kube-apiserver's) client certificate.
    /// Identity headers are only believed from a connection with such a certificate. Without it,
    /// behind kube-apiserver, all front-proxy settings come from
    /// kube-system/extension-apiserver-authentication and the other --requestheader-* flags are
    /// not used.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// Common names the front proxy's certificate may have; empty allows any signed by the CA.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub requestheader_allowed_names: Vec<String>,

    #[arg(
        long,
        value_delimiter = ',',
        default_value = DEFAULT_USERNAME_HEADER,
        value_name = "HEADERS"
    )]
    pub requestheader_username_headers: Vec<String>,

    #[arg(long, value_delimiter = ',', default_value = DEFAULT_UID_HEADER, value_name = "HEADERS")]
    pub requestheader_uid_headers: Vec<String>,

    #[arg(
        long,
        value_delimiter = ',',
        default_value = DEFAULT_GROUP_HEADER,
        value_name = "HEADERS"
    )]
    pub requestheader_group_headers: Vec<String>,

    #[arg(
        long,
        value_delimiter = ',',
        default_value = DEFAULT_EXTRA_HEADERS_PREFIX,
        value_name = "PREFIXES"
    )]
    pub requestheader_extra_headers_prefix: Vec<String>,

    /// kubeconfig of the management cluster, with the right to create
    /// tokenreviews.authentication.k8s.io and to read the ConfigMap
    /// kube-system/extension-apiserver-authentication. Without it, the in-cluster service
    /// account is used when running in a pod, and delegated authentication is off otherwise.
    #[arg(long, value_name = "FILE")]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// How long TokenReview answers (accepted and rejected tokens) are reused.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub authentication_token_webhook_cache_ttl: Duration,

    /// Do not read missing front-proxy and client CA settings from the management cluster.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub authentication_skip_lookup: bool,

    /// Start even if the settings cannot be read from the management cluster (they are retried
    /// in the background); until then front-proxy requests are refused.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub authentication_tolerate_lookup_failure: bool,

    /// Audiences bearer tokens must be valid for (TokenReview spec.audiences); empty: the
    /// management API's own.
    #[arg(long, value_delimiter = ',', value_name = "AUDIENCES")]
    pub api_audiences: Vec<String>,

    /// Never delegate (not a flag): a standalone hub such as `dev` stays standalone even when
    /// it happens to run in a pod.
    #[arg(skip)]
    pub standalone: bool,
}

impl Default for AuthenticationFlags {
    /// The same values as the flags' defaults: anonymous requests allowed (RBAC limits them to
    /// discovery and health), kube's front-proxy header names, no CAs and no token file, cluster
    /// lookup when delegated.
    fn default() -> Self {
        AuthenticationFlags {
            client_ca_file: None,
            token_auth_file: None,
            anonymous_auth: true,
            requestheader_client_ca_file: None,
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec![DEFAULT_USERNAME_HEADER.into()],
            requestheader_uid_headers: vec![DEFAULT_UID_HEADER.into()],
            requestheader_group_headers: vec![DEFAULT_GROUP_HEADER.into()],
            requestheader_extra_headers_prefix: vec![DEFAULT_EXTRA_HEADERS_PREFIX.into()],
            authentication_kubeconfig: None,
            authentication_token_webhook_cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            authentication_skip_lookup: false,
            authentication_tolerate_lookup_failure: false,
            api_audiences: Vec::new(),
            standalone: false,
        }
    }
}

/// What [`AuthenticationFlags::build`] makes.
pub struct Authentication {
    /// For the request pipeline.
    pub authenticator: Arc<UnionAuthenticator>,
    /// For the TLS layer: verifies client certificates against the CA files and the CAs read
    /// from the management cluster, current at each handshake. `None` when no client CA can
    /// ever be configured (no CA files, no cluster lookup): the server asks for no certificate.
    pub client_certificates: Option<Arc<ClientCertificateAuthorities>>,
    /// Whether bearer tokens are checked with TokenReview.
    pub token_review: bool,
    /// Whether settings are read (and re-read) from the management cluster.
    pub cluster_lookup: bool,
}

impl Authentication {
    /// The client CAs trusted at start-up, for a TLS configuration that takes a fixed list
    /// (prefer [`Self::client_certificates`], which follows rotations).
    pub fn client_cas_at_startup(&self) -> Vec<CertificateDer<'static>> {
        self.client_certificates
            .as_ref()
            .map(|cas| cas.certificates())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authentication")
            .field("authenticator", &self.authenticator)
            .field("client_certificates", &self.client_certificates)
            .field("token_review", &self.token_review)
            .field("cluster_lookup", &self.cluster_lookup)
            .finish()
    }
}

/// Knobs the flags do not expose, for tests.
#[derive(Clone, Debug)]
pub(crate) struct Tuning {
    pub refresh_interval: Duration,
    pub retry: RetryBackoff,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            refresh_interval: AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL,
            retry: RetryBackoff::default(),
        }
    }
}

impl AuthenticationFlags {
    /// The front-proxy configuration, when `--requestheader-client-ca-file` is set.
    pub fn request_header_config(&self) -> Result<Option<RequestHeaderConfig>, AuthConfigError> {
        let Some(path) = &self.requestheader_client_ca_file else {
            return Ok(None);
        };
        let client_ca = read_pem_certificates(path).map_err(AuthConfigError::RequestHeaderCa)?;
        Ok(Some(RequestHeaderConfig {
            client_ca,
            allowed_names: self.requestheader_allowed_names.clone(),
            username_headers: self.requestheader_username_headers.clone(),
            uid_headers: self.requestheader_uid_headers.clone(),
            group_headers: self.requestheader_group_headers.clone(),
            extra_headers_prefixes: self.requestheader_extra_headers_prefix.clone(),
        }))
    }

    /// Builds the authenticator and the TLS client CA set; behind kube-apiserver, reads the
    /// cluster's settings once and starts re-reading them in the background (the refresher ends
    /// when the authenticator and the CA set are dropped).
    pub async fn build(&self) -> Result<Authentication, AuthConfigError> {
        self.build_in(&InClusterEnvironment::from_process(), &Tuning::default())
            .await
    }

    pub(crate) async fn build_in(
        &self,
        env: &InClusterEnvironment,
        tuning: &Tuning,
    ) -> Result<Authentication, AuthConfigError> {
        let mut builder = UnionAuthenticator::builder().anonymous(self.anonymous_auth);
        let mut file_cas = Vec::new();

        let request_header = self.request_header_config()?;
        if let Some(config) = &request_header {
            file_cas.extend(config.client_ca.iter().cloned());
            builder = builder.request_header(
                RequestHeaderAuthenticator::new(config).map_err(AuthConfigError::RequestHeader)?,
            );
        }
        if let Some(path) = &self.client_ca_file {
            let cas = read_pem_certificates(path).map_err(AuthConfigError::ClientCa)?;
            let verifier = CertificateVerifier::new(&cas).map_err(AuthConfigError::ClientCa)?;
            file_cas.extend(cas);
            builder = builder.x509(X509Authenticator::new(verifier));
        }
        if let Some(path) = &self.token_auth_file {
            builder = builder.token(TokenFile::read(path).map_err(AuthConfigError::TokenFile)?);
        }

        let client = self.delegation_client(env).await?;
        if let Some(client) = &client {
            builder = builder.token(
                TokenReviewAuthenticator::new(client.clone())
                    .audiences(self.api_audiences.clone())
                    .cache_ttl(self.authentication_token_webhook_cache_ttl)
                    .retry_backoff(tuning.retry),
            );
        }

        let lookup_request_header = request_header.is_none();
        let lookup_client_ca = self.client_ca_file.is_none();
        let cluster = match &client {
            Some(client)
                if !self.authentication_skip_lookup
                    && (lookup_request_header || lookup_client_ca) =>
            {
                Some(client)
            }
            _ => None,
        };
        let tls = (!file_cas.is_empty() || cluster.is_some())
            .then(|| ClientCertificateAuthorities::new(file_cas))
            .transpose()
            .map_err(AuthConfigError::ClientCa)?
            .map(Arc::new);

        if let (Some(client), Some(tls)) = (cluster, &tls) {
            let settings = ClusterSettings {
                request_header: lookup_request_header
                    .then(|| Swap::new(RequestHeaderAuthenticator::disabled())),
                x509: lookup_client_ca.then(|| Swap::new(None)),
                tls: tls.clone(),
            };
            if let Some(slot) = &settings.request_header {
                builder = builder.dynamic_request_header(slot.clone());
            }
            if let Some(slot) = &settings.x509 {
                builder = builder.dynamic_x509(slot.clone());
            }
            let loaded = match cluster_config::fetch(client, tuning.retry).await {
                Ok(config) => settings.apply(&config).map(|()| config),
                Err(err) => Err(err),
            };
            let current = match loaded {
                Ok(config) => Some(config),
                Err(err) if self.authentication_tolerate_lookup_failure => {
                    tracing::warn!(
                        error = %error_chain(&err),
                        "starting without the management cluster's authentication settings; \
                         front-proxy requests are refused until they can be read"
                    );
                    None
                }
                Err(err) => return Err(AuthConfigError::ClusterLookup(err)),
            };
            cluster_config::spawn_refresher(
                client.clone(),
                &settings,
                current,
                tuning.refresh_interval,
                tuning.retry,
            );
        }

        Ok(Authentication {
            authenticator: Arc::new(builder.build()),
            client_certificates: tls,
            token_review: client.is_some(),
            cluster_lookup: cluster.is_some(),
        })
    }

    /// The management cluster client, if authentication is delegated: `--authentication-
    /// kubeconfig` (whose errors are fatal), else the in-cluster service account (kube's
    /// optional remote kubeconfig: a broken in-cluster setup is logged and leaves delegation
    /// off).
    async fn delegation_client(
        &self,
        env: &InClusterEnvironment,
    ) -> Result<Option<kube::Client>, AuthConfigError> {
        if self.standalone {
            return Ok(None);
        }
        if let Some(path) = &self.authentication_kubeconfig {
            return delegation::client_from_kubeconfig(path)
                .await
                .map(Some)
                .map_err(AuthConfigError::AuthenticationClient);
        }
        if !env.is_in_cluster() {
            return Ok(None);
        }
        match delegation::client_in_cluster(env) {
            Ok(client) => Ok(Some(client)),
            Err(err) => {
                tracing::warn!(
                    error = %error_chain(&err),
                    "no in-cluster configuration for delegated authentication; bearer tokens \
                     are not reviewed and no settings are read from the cluster"
                );
                Ok(None)
            }
        }
    }
}

/// Authorizers for `--authorization-mode`, spelled as kube spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthorizationMode {
    #[value(name = "RBAC")]
    Rbac,
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
    #[value(name = "AlwaysDeny")]
    AlwaysDeny,
    /// SubjectAccessReview against the management cluster (kube's delegated authorization).
    #[value(name = "Webhook")]
    Webhook,
}

#[derive(Clone, Debug, clap::Args)]
pub struct AuthorizationFlags {
    /// Authorizers to ask, in order, after the system:masters group (which is always allowed).
    /// Behind kube-apiserver: Webhook.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "RBAC",
        value_name = "MODES"
    )]
    pub authorization_mode: Vec<AuthorizationMode>,

    /// YAML with Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (several documents or
    /// a List), added to the built-in roles.
    #[arg(long, value_name = "FILE")]
    pub authorization_rbac_file: Option<PathBuf>,

    /// kubeconfig of the management cluster, with the right to create
    /// subjectaccessreviews.authorization.k8s.io (Webhook mode). Without it, the in-cluster
    /// service account.
    #[arg(long, value_name = "FILE")]
    pub authorization_kubeconfig: Option<PathBuf>,

    /// How long allowed SubjectAccessReview answers are reused.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub authorization_webhook_cache_authorized_ttl: Duration,

    /// How long denied (or undecided) SubjectAccessReview answers are reused.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Paths allowed to everyone ahead of the Webhook authorizer (a trailing * matches a
    /// prefix), so health probes do not depend on the management cluster.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez",
        value_name = "PATHS"
    )]
    pub authorization_always_allow_paths: Vec<String>,
}

impl Default for AuthorizationFlags {
    /// The same values as the flags' defaults: RBAC with the built-in roles only.
    fn default() -> Self {
        AuthorizationFlags {
            authorization_mode: vec![AuthorizationMode::Rbac],
            authorization_rbac_file: None,
            authorization_kubeconfig: None,
            authorization_webhook_cache_authorized_ttl: DEFAULT_AUTHORIZED_TTL,
            authorization_webhook_cache_unauthorized_ttl: DEFAULT_UNAUTHORIZED_TTL,
            authorization_always_allow_paths: ["/healthz", "/readyz", "/livez"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The authorizer chain the flags describe.
pub struct Authorization {
    pub authorizer: Arc<dyn Authorizer>,
    /// The RBAC authorizer in the chain, to reload its policy.
    pub rbac: Option<Arc<RbacAuthorizer>>,
}

impl AuthorizationFlags {
    /// The chain: `system:masters`, then each mode in order; ahead of `Webhook`, the
    /// always-allowed paths (kube's delegated authorizer order).
    pub async fn build(&self) -> Result<Authorization, AuthConfigError> {
        self.build_in(&InClusterEnvironment::from_process(), &Tuning::default())
            .await
    }

    pub(crate) async fn build_in(
        &self,
        env: &InClusterEnvironment,
        tuning: &Tuning,
    ) -> Result<Authorization, AuthConfigError> {
        let uses_rbac = self.authorization_mode.contains(&AuthorizationMode::Rbac);
        if self.authorization_rbac_file.is_some() && !uses_rbac {
            return Err(AuthConfigError::RbacFileWithoutRbac);
        }
        let uses_webhook = self
            .authorization_mode
            .contains(&AuthorizationMode::Webhook);
        if self.authorization_kubeconfig.is_some() && !uses_webhook {
            return Err(AuthConfigError::KubeconfigWithoutWebhook);
        }
        let rbac = if uses_rbac {
            let policy = match &self.authorization_rbac_file {
                Some(path) => Policy::load_file(path).map_err(AuthConfigError::Policy)?,
                None => Policy::with_defaults(),
            };
            Some(Arc::new(RbacAuthorizer::new(policy)))
        } else {
            None
        };
        let webhook: Option<Arc<dyn Authorizer>> = if uses_webhook {
            let client = delegation::client(self.authorization_kubeconfig.as_deref(), env)
                .await
                .map_err(AuthConfigError::AuthorizationClient)?;
            Some(Arc::new(
                SubjectAccessReviewAuthorizer::new(client)
                    .authorized_ttl(self.authorization_webhook_cache_authorized_ttl)
                    .unauthorized_ttl(self.authorization_webhook_cache_unauthorized_ttl)
                    .retry_backoff(tuning.retry),
            ))
        } else {
            None
        };
        let always_allow_paths = AlwaysAllowPaths::new(&self.authorization_always_allow_paths)
            .map_err(AuthConfigError::AlwaysAllowPaths)?;

        // kube-apiserver always puts system:masters ahead of the configured modes.
        let mut chain: Vec<Arc<dyn Authorizer>> =
            vec![Arc::new(PrivilegedGroups::system_masters())];
        for mode in &self.authorization_mode {
            match mode {
                AuthorizationMode::Rbac => chain.push(rbac.clone().expect("built above")),
                AuthorizationMode::AlwaysAllow => chain.push(Arc::new(AlwaysAllow)),
                AuthorizationMode::AlwaysDeny => chain.push(Arc::new(AlwaysDeny)),
                AuthorizationMode::Webhook => {
                    if !always_allow_paths.is_empty() {
                        chain.push(Arc::new(always_allow_paths.clone()));
                    }
                    chain.push(webhook.clone().expect("built above"));
                }
            }
        }
        Ok(Authorization {
            authorizer: Arc::new(UnionAuthorizer::new(chain)),
            rbac,
        })
    }
}

#[cfg(test)]
mod tests;
