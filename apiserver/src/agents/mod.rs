//! The hub's side of the agents: the tunnel port, who may connect, what their clusters' status
//! says, and how credentials are issued, rotated and revoked (DESIGN.md §6).
//!
//! ```text
//!   agents ──TLS──► TunnelServer ──► HubAdmission (tokens, certificates)  [admission]
//!                        │
//!                        ├─ SessionRegistry ──► StatusController ──► Cluster.status  [status]
//!                        │        ▲                    └─► Observations (facts, for the controllers) [observed]
//!   Cluster deleted ─────┼────────┘ close the session, revoke certificates  [lifecycle]
//!   certificate aging ───┘ rotate over the tunnel                           [lifecycle]
//!   GET clusters/x/bootstrap ─► token + install manifest                     [bootstrap]
//! ```

mod admission;
pub mod bootstrap;
pub mod credentials;
mod lifecycle;
pub mod observed;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_tunnel::{CertificateAuthority, SessionRegistry, TunnelServer, TunnelServerConfig};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::errors::ApiError;
use crate::registry::Registry;
use admission::HubAdmission;
use credentials::{CredentialError, Credentials};

/// How long an agent's certificate is valid; it is rotated over the tunnel well before.
pub const AGENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// How the hub serves agents.
#[derive(Clone)]
pub struct AgentsConfig {
    /// Where the tunnel port listens.
    pub listen: SocketAddr,
    /// The tunnel port's certificate chain and key (PEM).
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
    /// The CA the tunnel certificate chains to, handed to agents in their install manifest.
    pub serving_ca_pem: String,
    /// The CA that signs agents' client certificates.
    pub agent_ca: Arc<CertificateAuthority>,
    /// This replica's name, recorded in `Cluster.status.connection.hubReplica`.
    pub replica: String,
    /// `host:port` agents dial, for install manifests; the bound address when `None`.
    pub advertise_address: Option<String>,
    /// The agent image of install manifests.
    pub agent_image: String,
    /// HTTP/2 PING keepalive of every session; a peer silent for twice this is dead.
    pub keepalive: edgefleet_tunnel::Keepalive,
}

/// The running agent side of the hub.
pub struct AgentHub {
    server: TunnelServer,
    credentials: Credentials,
    registry: Registry,
    config: AgentsConfig,
    address: SocketAddr,
    observations: observed::Observations,
    cluster_status: status::ClusterStatusHandle,
}

impl AgentHub {
    /// Binds the tunnel port and starts serving agents, writing status and managing credentials.
    pub async fn start(config: AgentsConfig, registry: Registry) -> anyhow::Result<Arc<AgentHub>> {
        let tls = edgefleet_tunnel::tls::server_config(
            &config.tls_cert_pem,
            &config.tls_key_pem,
            Some(config.agent_ca.certificate_pem()),
        )?;
        let credentials = Credentials::new(registry.storage().clone());
        let admission = Arc::new(HubAdmission {
            registry: registry.clone(),
            credentials: credentials.clone(),
            ca: config.agent_ca.clone(),
            certificate_validity: AGENT_CERTIFICATE_VALIDITY,
            presented: Arc::new(Mutex::new(HashMap::new())),
        });
        let mut tunnel = TunnelServerConfig::new(tls, config.replica.clone());
        tunnel.keepalive = config.keepalive;
        let server = TunnelServer::new(tunnel, admission.clone());
        let listener = TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let serving = server.clone();
        tokio::spawn(async move { serving.serve(listener).await });

        let status = status::StatusController::new(
            registry.clone(),
            server.registry().clone(),
            config.replica.clone(),
        );
        let observations = status.observations();
        let cluster_status = status.handle();
        tokio::spawn(status.run());
        lifecycle::spawn(
            registry.clone(),
            server.registry().clone(),
            credentials.clone(),
            admission,
        );

        tracing::info!(%address, "tunnel port serving agents");
        Ok(Arc::new(AgentHub {
            server,
            credentials,
            registry,
            config,
            address,
            observations,
            cluster_status,
        }))
    }

    /// What the agents last said, for the controllers.
    pub fn observations(&self) -> &observed::Observations {
        &self.observations
    }

    /// Where the controllers hand the cluster status writer the bundles they deliver.
    pub fn cluster_status(&self) -> &status::ClusterStatusHandle {
        &self.cluster_status
    }

    /// The tunnel port's bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The connected agents.
    pub fn sessions(&self) -> &SessionRegistry {
        self.server.registry()
    }

    /// A new bootstrap token for the Cluster `namespace/name`.
    pub async fn mint_token(&self, namespace: &str, name: &str) -> Result<String, ApiError> {
        let clusters = self
            .registry
            .resource("clusters")
            .ok_or(ApiError::NoSuchPath)?;
        let cluster = clusters.get(namespace, name, None).await?;
        let value: Value =
            serde_json::from_slice(&cluster.json).map_err(|e| ApiError::Internal(e.to_string()))?;
        let uid = value["metadata"]["uid"].as_str().unwrap_or_default();
        self.credentials
            .mint_token(namespace, name, uid, bootstrap::TOKEN_TTL)
            .await
            .map_err(|e| match e {
                CredentialError::Storage(s) => s.into(),
                other => ApiError::Internal(other.to_string()),
            })
    }

    /// The install manifest of the Cluster `namespace/name`, with a fresh token.
    pub async fn bootstrap(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let token = self.mint_token(namespace, name).await?;
        let hub_address = self
            .config
            .advertise_address
            .clone()
            .unwrap_or_else(|| self.address.to_string());
        Ok(bootstrap::install_manifest(&bootstrap::InstallParams {
            environment: namespace,
            cluster: name,
            token: &token,
            hub_address: &hub_address,
            hub_ca_pem: &self.config.serving_ca_pem,
            image: &self.config.agent_image,
        }))
    }
}

impl std::fmt::Debug for AgentsConfig {
    /// Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentsConfig")
            .field("listen", &self.listen)
            .field("replica", &self.replica)
            .field("advertise_address", &self.advertise_address)
            .field("agent_image", &self.agent_image)
            .finish_non_exhaustive()
    }
}
