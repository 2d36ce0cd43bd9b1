//! Front-proxy and client CA settings read from the management cluster, as aggregated API
//! servers read them.
//!
//! kube-apiserver publishes how it proxies to aggregated servers in the ConfigMap
//! `kube-system/extension-apiserver-authentication`:
//!
//! ```text
//!  client-ca-file                      PEM: CAs of users' client certificates
//!  requestheader-client-ca-file        PEM: CA of kube-apiserver's front-proxy certificate
//!  requestheader-allowed-names         JSON ["front-proxy-client"]
//!  requestheader-username-headers      JSON ["X-Remote-User"]
//!  requestheader-uid-headers           JSON ["X-Remote-Uid"]        (newer clusters)
//!  requestheader-group-headers         JSON ["X-Remote-Group"]
//!  requestheader-extra-headers-prefix  JSON ["X-Remote-Extra-"]
//! ```
//!
//! The hub takes the front-proxy settings from here unless `--requestheader-client-ca-file` is
//! given, and the client CA unless `--client-ca-file` is given (and not at all with
//! `--authentication-skip-lookup`). kube watches the ConfigMap; the hub re-reads it every
//! [`AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL`]:
//!
//! ```text
//!  start-up: GET ─► parse ─► build authenticators + TLS CA set ─► store (or fail start-up,
//!                                                                  unless tolerated)
//!  every interval: GET ─► unchanged? nothing
//!                       └ changed: parse + build everything, then store each piece
//!                         any error: keep the previous settings, log, try again next time
//!  the refresher stops once the authenticator and TLS verifier it feeds are gone
//! ```
//!
//! [`AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL`]: crate::auth::delegation::AUTHENTICATION_CONFIGMAP_REFRESH_INTERVAL

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use edgefleet_tunnel::error_chain;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use rustls_pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::client_ca::ClientCertificateAuthorities;
use super::requestheader::RequestHeaderConfigError;
use super::x509::{parse_pem_certificates, CaBundleError};
use super::{
    CertificateVerifier, RequestHeaderAuthenticator, RequestHeaderConfig, X509Authenticator,
};
use crate::auth::delegation::{self, RequestError, RetryBackoff, CONFIGMAP_TIMEOUT};
use crate::auth::swap::{Swap, WeakSwap};

pub const AUTHENTICATION_CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const AUTHENTICATION_CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

pub const CLIENT_CA_KEY: &str = "client-ca-file";
pub const REQUESTHEADER_CLIENT_CA_KEY: &str = "requestheader-client-ca-file";
pub const REQUESTHEADER_ALLOWED_NAMES_KEY: &str = "requestheader-allowed-names";
pub const REQUESTHEADER_USERNAME_HEADERS_KEY: &str = "requestheader-username-headers";
pub const REQUESTHEADER_UID_HEADERS_KEY: &str = "requestheader-uid-headers";
pub const REQUESTHEADER_GROUP_HEADERS_KEY: &str = "requestheader-group-headers";
pub const REQUESTHEADER_EXTRA_HEADERS_PREFIX_KEY: &str = "requestheader-extra-headers-prefix";

/// The ConfigMap could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigMapError {
    #[error(
        "reading ConfigMap {AUTHENTICATION_CONFIGMAP_NAMESPACE}/{AUTHENTICATION_CONFIGMAP_NAME}"
    )]
    Read(#[source] RequestError),
    #[error("key {key}")]
    CaBundle {
        key: &'static str,
        #[source]
        source: CaBundleError,
    },
    #[error("key {key} is not a JSON array of strings")]
    StringList {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("front-proxy settings")]
    RequestHeader(#[source] RequestHeaderConfigError),
    #[error(
        "the ConfigMap has no {REQUESTHEADER_CLIENT_CA_KEY}: the management cluster's \
         kube-apiserver has no front proxy configured, so it cannot forward requests to the hub"
    )]
    NoRequestHeaderCa,
}

/// The settings of one version of the ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterAuthenticationConfig {
    /// `client-ca-file`, when present.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
    /// The `requestheader-*` keys, when `requestheader-client-ca-file` is present.
    pub request_header: Option<RequestHeaderConfig>,
}

/// Reads the ConfigMap's `data` as kube's `RequestHeaderAuthRequestController` and
/// `ConfigMapCAController` do: missing list keys are empty lists, empty CA keys are absent.
pub fn parse_configmap(
    data: &BTreeMap<String, String>,
) -> Result<ClusterAuthenticationConfig, ConfigMapError> {
    let ca = |key: &'static str| -> Result<_, ConfigMapError> {
        data.get(key)
            .filter(|pem| !pem.trim().is_empty())
            .map(|pem| {
                parse_pem_certificates(pem.as_bytes())
                    .map_err(|source| ConfigMapError::CaBundle { key, source })
            })
            .transpose()
    };
    let strings = |key: &'static str| -> Result<Vec<String>, ConfigMapError> {
        match data.get(key).filter(|json| !json.is_empty()) {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str::<Option<Vec<String>>>(json)
                .map(Option::unwrap_or_default)
                .map_err(|source| ConfigMapError::StringList { key, source }),
        }
    };
    let request_header = match ca(REQUESTHEADER_CLIENT_CA_KEY)? {
        None => None,
        Some(client_ca) => Some(RequestHeaderConfig {
            client_ca,
            allowed_names: strings(REQUESTHEADER_ALLOWED_NAMES_KEY)?,
            username_headers: strings(REQUESTHEADER_USERNAME_HEADERS_KEY)?,
            uid_headers: strings(REQUESTHEADER_UID_HEADERS_KEY)?,
            group_headers: strings(REQUESTHEADER_GROUP_HEADERS_KEY)?,
            extra_headers_prefixes: strings(REQUESTHEADER_EXTRA_HEADERS_PREFIX_KEY)?,
        }),
    };
    Ok(ClusterAuthenticationConfig {
        client_ca: ca(CLIENT_CA_KEY)?,
        request_header,
    })
}

/// Reads and parses the ConfigMap.
pub async fn fetch(
    client: &kube::Client,
    retry: RetryBackoff,
) -> Result<ClusterAuthenticationConfig, ConfigMapError> {
    let path = ConfigMap::url_path(&(), Some(AUTHENTICATION_CONFIGMAP_NAMESPACE));
    let path = format!("{path}/{AUTHENTICATION_CONFIGMAP_NAME}");
    let configmap: ConfigMap = delegation::get(client, &path, retry, CONFIGMAP_TIMEOUT)
        .await
        .map_err(ConfigMapError::Read)?;
    parse_configmap(&configmap.data.unwrap_or_default())
}

/// The pieces of authentication that take their settings from the cluster. A `None` slot is
/// configured by flags and left alone.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Front-proxy authentication (no `--requestheader-client-ca-file`).
    pub request_header: Option<Swap<RequestHeaderAuthenticator>>,
    /// Client certificate authentication (no `--client-ca-file`); holds `None` while the
    /// cluster publishes no client CA.
    pub x509: Option<Swap<Option<X509Authenticator>>>,
    /// The TLS layer's CA set, whose cluster part follows the two above.
    pub tls: Arc<ClientCertificateAuthorities>,
}

impl ClusterSettings {
    /// Installs `config`: everything is built first, so an unusable ConfigMap changes nothing.
    pub fn apply(&self, config: &ClusterAuthenticationConfig) -> Result<(), ConfigMapError> {
        let mut cluster_cas = Vec::new();
        let request_header = match &self.request_header {
            None => None,
            Some(_) => {
                let settings = config
                    .request_header
                    .as_ref()
                    .ok_or(ConfigMapError::NoRequestHeaderCa)?;
                cluster_cas.extend(settings.client_ca.iter().cloned());
                Some(
                    RequestHeaderAuthenticator::new(settings)
                        .map_err(ConfigMapError::RequestHeader)?,
                )
            }
        };
        let x509 = match (&self.x509, &config.client_ca) {
            (None, _) => None,
            (Some(_), None) => Some(None),
            (Some(_), Some(ca)) => {
                cluster_cas.extend(ca.iter().cloned());
                let verifier =
                    CertificateVerifier::new(ca).map_err(|source| ConfigMapError::CaBundle {
                        key: CLIENT_CA_KEY,
                        source,
                    })?;
                Some(Some(X509Authenticator::new(verifier)))
            }
        };
        self.tls
            .set_dynamic(&cluster_cas)
            .map_err(|source| ConfigMapError::CaBundle {
                key: CLIENT_CA_KEY,
                source,
            })?;
        if let (Some(slot), Some(authenticator)) = (&self.request_header, request_header) {
            slot.store(authenticator);
        }
        if let (Some(slot), Some(authenticator)) = (&self.x509, x509) {
            slot.store(authenticator);
        }
        Ok(())
    }

    fn downgrade(&self) -> WeakClusterSettings {
        WeakClusterSettings {
            request_header: self.request_header.as_ref().map(Swap::downgrade),
            x509: self.x509.as_ref().map(Swap::downgrade),
            tls: Arc::downgrade(&self.tls),
        }
    }
}

/// What the refresher holds: it must not keep the authenticator alive.
struct WeakClusterSettings {
    request_header: Option<WeakSwap<RequestHeaderAuthenticator>>,
    x509: Option<WeakSwap<Option<X509Authenticator>>>,
    tls: Weak<ClientCertificateAuthorities>,
}

impl WeakClusterSettings {
    /// `None` once nothing the settings feed is in use any more.
    fn upgrade(&self) -> Option<ClusterSettings> {
        let request_header = self.request_header.as_ref().and_then(WeakSwap::upgrade);
        let x509 = self.x509.as_ref().and_then(WeakSwap::upgrade);
        let tls = self.tls.upgrade();
        if request_header.is_none() && x509.is_none() && tls.is_none() {
            return None;
        }
        // The TLS set may be gone while an authenticator lives (a test, or a server that
        // builds its TLS configuration elsewhere): keep feeding a detached one.
        let tls = tls.unwrap_or_else(|| {
            Arc::new(ClientCertificateAuthorities::new(Vec::new()).expect("an empty set builds"))
        });
        Some(ClusterSettings {
            request_header,
            x509,
            tls,
        })
    }
}

/// Re-reads the ConfigMap every `interval` and applies changes; see the [module docs](self).
/// `current` is what is installed now (`None`: nothing yet).
pub fn spawn_refresher(
    client: kube::Client,
    settings: &ClusterSettings,
    current: Option<ClusterAuthenticationConfig>,
    interval: Duration,
    retry: RetryBackoff,
) -> JoinHandle<()> {
    let weak = settings.downgrade();
    tokio::spawn(async move {
        let mut current = current;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(settings) = weak.upgrade() else {
                tracing::debug!("authentication settings no longer in use; refresher stops");
                return;
            };
            let result = match fetch(&client, retry).await {
                Ok(config) if current.as_ref() == Some(&config) => continue,
                Ok(config) => settings.apply(&config).map(|()| config),
                Err(err) => Err(err),
            };
            match result {
                Ok(config) => {
                    tracing::info!(
                        front_proxy = config.request_header.is_some(),
                        client_ca = config.client_ca.is_some(),
                        "loaded new authentication settings from \
                         {AUTHENTICATION_CONFIGMAP_NAMESPACE}/{AUTHENTICATION_CONFIGMAP_NAME}"
                    );
                    current = Some(config);
                }
                Err(err) => tracing::warn!(
                    error = %error_chain(&err),
                    "keeping the previous authentication settings"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests;
