//! Where the hub is and how to trust it; turned into the tunnel's client configuration.
//!
//! One [`PreparedHub`] is shared by every agent of a process (`simulate` runs thousands): the
//! CA bundle is parsed once and its root store shared behind an `Arc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefleet_tunnel::{Backoff, BootstrapToken, IdentityStore, TunnelClientConfig};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;

use crate::error::{Error, Result};
use crate::AGENT_VERSION;

/// How to reach the hub's tunnel port.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `host:port` of the hub's tunnel port.
    pub address: String,
    /// The name the hub's certificate must carry; the host of `address` when `None`.
    pub server_name: Option<String>,
    /// PEM bundle of the CA(s) the hub's tunnel certificate chains to.
    pub ca_file: PathBuf,
    /// Reconnect backoff (tests shorten it).
    pub backoff: Backoff,
}

impl HubConfig {
    /// A hub at `address` trusted through `ca_file`, with the default backoff.
    pub fn new(address: impl Into<String>, ca_file: impl Into<PathBuf>) -> Self {
        Self {
            address: address.into(),
            server_name: None,
            ca_file: ca_file.into(),
            backoff: Backoff::default(),
        }
    }

    /// Reads the CA bundle and checks the names.
    pub fn prepare(&self) -> Result<PreparedHub> {
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(&self.address)?.to_owned(),
        };
        let server_name = ServerName::try_from(server_name.clone())
            .map_err(|e| Error::HubServerName(server_name, e))?;
        let pem = read_to_string(&self.ca_file, "hub CA bundle")?;
        let roots =
            edgefleet_tunnel::tls::root_store_from_pem(&pem).map_err(|source| Error::HubCa {
                path: self.ca_file.clone(),
                source,
            })?;
        Ok(PreparedHub {
            address: self.address.clone(),
            server_name,
            roots: Arc::new(roots),
            backoff: self.backoff,
        })
    }
}

/// A [`HubConfig`] with its CA bundle loaded.
#[derive(Clone, Debug)]
pub struct PreparedHub {
    address: String,
    server_name: ServerName<'static>,
    roots: Arc<RootCertStore>,
    backoff: Backoff,
}

impl PreparedHub {
    /// The tunnel configuration of one agent.
    pub fn tunnel_config(
        &self,
        identity: IdentityStore,
        identity_claim: String,
        bootstrap_token: Option<BootstrapToken>,
    ) -> TunnelClientConfig {
        let mut config = TunnelClientConfig::new(
            self.address.clone(),
            self.server_name.clone(),
            RootCertStore::empty(),
            identity,
        );
        config.hub_roots = self.roots.clone();
        config.identity_claim = Some(identity_claim);
        config.bootstrap_token = bootstrap_token;
        config.agent_version = AGENT_VERSION.to_owned();
        config.backoff = self.backoff;
        config
    }
}

/// The host of `host:port` (`[::1]:443` → `::1`).
fn host_of(address: &str) -> Result<&str> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| Error::HubAddress(address.to_owned()))?;
    if port.parse::<u16>().is_err() {
        return Err(Error::HubAddress(address.to_owned()));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(Error::HubAddress(address.to_owned()));
    }
    Ok(host)
}

/// Reads a small text file, naming it in the error.
pub(crate) fn read_to_string(path: &Path, what: &'static str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a bootstrap token file (one line; surrounding whitespace ignored). `None` when the
/// file does not exist or is empty: a spent token may have been removed after enrollment.
pub(crate) fn read_token(path: &Path) -> Result<Option<BootstrapToken>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            Ok((!token.is_empty()).then(|| BootstrapToken::new(token)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadFile {
            what: "bootstrap token",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_address() {
        assert_eq!(host_of("hub.example.com:8443").unwrap(), "hub.example.com");
        assert_eq!(host_of("10.0.0.1:8443").unwrap(), "10.0.0.1");
        assert_eq!(host_of("[::1]:8443").unwrap(), "::1");
        for bad in ["hub.example.com", ":8443", "hub:port", "hub:99999"] {
            assert!(host_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_file_is_trimmed_and_may_be_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(read_token(&path).unwrap().is_none());
        std::fs::write(&path, "abc.def\n").unwrap();
        assert_eq!(read_token(&path).unwrap().unwrap().expose(), "abc.def");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).unwrap().is_none());
    }
}
