//! Command-line flags for authentication and authorization, named as kube-apiserver names them
//! (plus our `--authorization-rbac-file`), and what they build. `main` flattens these into its
//! own arguments.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ArgAction;

use super::authn::requestheader::{
    RequestHeaderConfigError, DEFAULT_EXTRA_HEADERS_PREFIX, DEFAULT_GROUP_HEADER,
    DEFAULT_UID_HEADER, DEFAULT_USERNAME_HEADER,
};
use super::authn::x509::read_pem_certificates;
use super::authn::{
    CaBundleError, CertificateVerifier, RequestHeaderAuthenticator, RequestHeaderConfig, TokenFile,
    TokenFileError, UnionAuthenticator, X509Authenticator,
};
use super::rbac::{Policy, PolicyError, RbacAuthorizer};
use super::{AlwaysAllow, AlwaysDeny, Authorizer, PrivilegedGroups, UnionAuthorizer};

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
}

/// kube-apiserver's authentication flags that apply to the hub.
#[derive(Clone, Debug, clap::Args)]
pub struct AuthenticationFlags {
    /// PEM bundle of CAs for client certificates; the certificate's CN is the user, its O
    /// values the groups.
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
    /// Identity headers are only believed from a connection with such a certificate.
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
}

impl Default for AuthenticationFlags {
    /// The same values as the flags' defaults: anonymous requests allowed (RBAC limits them to
    /// discovery and health), kube's front-proxy header names, no CAs and no token file.
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

    pub fn build(&self) -> Result<UnionAuthenticator, AuthConfigError> {
        let mut builder = UnionAuthenticator::builder().anonymous(self.anonymous_auth);
        if let Some(config) = self.request_header_config()? {
            builder = builder.request_header(
                RequestHeaderAuthenticator::new(&config).map_err(AuthConfigError::RequestHeader)?,
            );
        }
        if let Some(path) = &self.client_ca_file {
            let verifier =
                CertificateVerifier::from_pem_file(path).map_err(AuthConfigError::ClientCa)?;
            builder = builder.x509(X509Authenticator::new(verifier));
        }
        if let Some(path) = &self.token_auth_file {
            builder = builder.token(TokenFile::read(path).map_err(AuthConfigError::TokenFile)?);
        }
        Ok(builder.build())
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
}

#[derive(Clone, Debug, clap::Args)]
pub struct AuthorizationFlags {
    /// Authorizers to ask, in order, after the system:masters group (which is always allowed).
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
}

/// The authorizer chain the flags describe.
pub struct Authorization {
    pub authorizer: Arc<dyn Authorizer>,
    /// The RBAC authorizer in the chain, to reload its policy.
    pub rbac: Option<Arc<RbacAuthorizer>>,
}

impl AuthorizationFlags {
    pub fn build(&self) -> Result<Authorization, AuthConfigError> {
        let uses_rbac = self.authorization_mode.contains(&AuthorizationMode::Rbac);
        if self.authorization_rbac_file.is_some() && !uses_rbac {
            return Err(AuthConfigError::RbacFileWithoutRbac);
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

        // kube-apiserver always puts system:masters ahead of the configured modes.
        let mut chain: Vec<Arc<dyn Authorizer>> =
            vec![Arc::new(PrivilegedGroups::system_masters())];
        for mode in &self.authorization_mode {
            chain.push(match mode {
                AuthorizationMode::Rbac => rbac.clone().expect("built above"),
                AuthorizationMode::AlwaysAllow => Arc::new(AlwaysAllow),
                AuthorizationMode::AlwaysDeny => Arc::new(AlwaysDeny),
            });
        }
        Ok(Authorization {
            authorizer: Arc::new(UnionAuthorizer::new(chain)),
            rbac,
        })
    }
}

#[cfg(test)]
mod tests;
