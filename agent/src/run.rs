//! `edgefleet-agent run`: one agent for a real edge cluster.
//!
//! ```text
//!  RunConfig ──build──► EdgeAgent ──run──► ┬─ TunnelClient (connect loop, forever)
//!   (with a Secret:                        │    serves AgentService { facts feed, Upstream }
//!    restore the identity                  ├─ FactsWatcher (list+watch nodes, forever)
//!    from it first)                        │    publishes to the facts feed
//!                                          └─ SecretSync (with a Secret; forever)
//!                                               copies identity.pem to the Secret on change
//! ```
//!
//! Building fails fast on what a person must fix (unreadable files, a bad kubeconfig, no way to
//! enroll, an unreadable or unusable identity Secret); running never ends on its own: the
//! tunnel reconnects, the watcher relists and the Secret sync retries.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use edgefleet_api::agent::agent_identity;
use edgefleet_tunnel::{AgentStatus, TunnelClient};
use tempfile::TempDir;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::facts::watch::{feed, FactsWatcher};
use crate::hub::{read_token, HubConfig};
use crate::identity::{IdentityStorage, SecretSync};
use crate::service::AgentService;
use crate::upstream::{Upstream, UpstreamSource};

/// Which cluster this agent is: `<environment>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// The Environment (and namespace) of the Cluster object.
    pub environment: String,
    /// The Cluster's name.
    pub name: String,
}

impl ClusterRef {
    /// The tunnel identity: `cluster:<environment>/<name>`.
    pub fn identity(&self) -> String {
        agent_identity(&self.environment, &self.name)
    }
}

impl FromStr for ClusterRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('/') {
            Some((env, name)) if !env.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    environment: env.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(Error::ClusterRef(s.to_owned())),
        }
    }
}

impl fmt::Display for ClusterRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.environment, self.name)
    }
}

/// Configuration of `edgefleet-agent run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The hub.
    pub hub: HubConfig,
    /// Which cluster this is (the identity claim).
    pub cluster: ClusterRef,
    /// Single-use enrollment token, read only while no identity is stored.
    pub bootstrap_token_file: Option<PathBuf>,
    /// Where the agent keeps its key and certificate.
    pub identity: IdentityStorage,
    /// The edge kube-apiserver and the agent's credentials for it.
    pub upstream: UpstreamSource,
}

/// A built agent, ready to run.
pub struct EdgeAgent {
    tunnel: TunnelClient<AgentService<Upstream>>,
    watcher: FactsWatcher,
    identity_sync: Option<SecretSync>,
    /// The identity's temporary working directory: removed (key included) when the agent stops.
    temp_dir: Option<TempDir>,
}

impl fmt::Debug for EdgeAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeAgent")
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

impl EdgeAgent {
    /// Loads everything `config` names and wires the agent up.
    pub async fn build(config: RunConfig) -> Result<Self> {
        let hub = config.hub.prepare()?;
        // The client first: a Secret-backed identity is read with it.
        let kube_config = config.upstream.load().await?;
        let upstream = Upstream::from_config(&kube_config)?;
        let client = kube::Client::try_from(kube_config).map_err(Error::UpstreamClient)?;

        let identity = config.identity.prepare(&client).await?;
        let enrolled = identity.store.load().map_err(Error::Identity)?.is_some();
        let token = match (&config.bootstrap_token_file, enrolled) {
            (Some(path), false) => read_token(path)?,
            _ => None,
        };
        if !enrolled && token.is_none() {
            return Err(Error::NoCredentials {
                location: identity.location,
            });
        }

        let (publish, facts) = feed();
        tracing::info!(
            cluster = %config.cluster,
            upstream = ?upstream,
            identity = %identity.location,
            enrolled,
            "edge agent configured"
        );

        let tunnel_config = hub.tunnel_config(identity.store, config.cluster.identity(), token);
        Ok(Self {
            tunnel: TunnelClient::new(tunnel_config, AgentService::new(facts, upstream)),
            watcher: FactsWatcher::new(client, publish),
            identity_sync: identity.sync,
            temp_dir: identity.temp_dir,
        })
    }

    /// Follows the tunnel's state.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.tunnel.status()
    }

    /// Runs until the future is dropped (which closes the tunnel).
    pub async fn run(self) {
        let Self {
            tunnel,
            watcher,
            identity_sync,
            temp_dir,
        } = self;
        // Held by this future: dropping it (a signal) removes the directory.
        let _temp_dir = temp_dir;
        let status = tunnel.status();
        let sync = async move {
            match identity_sync {
                Some(sync) => sync.run(status).await,
                None => std::future::pending().await,
            }
        };
        tokio::join!(tunnel.run(), watcher.run(), sync);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_environment_slash_name() {
        let cluster: ClusterRef = "retail/store-1".parse().unwrap();
        assert_eq!(cluster.identity(), "cluster:retail/store-1");
        assert_eq!(cluster.to_string(), "retail/store-1");
        for bad in ["retail", "retail/", "/store-1", "a/b/c"] {
            assert!(bad.parse::<ClusterRef>().is_err(), "{bad}");
        }
    }
}
