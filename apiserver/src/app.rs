//! Assembling and running the hub: storage, registry, the HTTP stack.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::agents::{AgentHub, AgentsConfig, StartAgentsError};
use crate::audit::checkpoint::KeyError;
use crate::audit::policy::PolicyError;
use crate::audit::webhook::WebhookError;
use crate::audit::AuditError;
use crate::audit::{AuditConfig, Auditor, Durability, PolicyEvaluator, SigningKey, WebhookConfig};
use crate::auth::flags::AuthConfigError;
use crate::auth::flags::{AuthenticationFlags, AuthorizationFlags};
use crate::auth::rbac::{Policy, RbacAuthorizer};
use crate::controllers::{AgentLink, Controllers};
use crate::http::router::Router;
use crate::http::stack::{self, Hub, StackParts};
use crate::http::tls::TlsError;
use crate::http::{server, tls};
use crate::registry::{Registry, RegistryConfig};
use crate::storage::compactor::Compactor;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::etcd::{EtcdConfig, EtcdStore};
use crate::storage::DynStorage;
use crate::storage::StorageError;
use crate::tasks::Tasks;

/// Why the hub could not start. Each variant says what was being set up; the cause is its
/// source.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the embedded store in {}", dir.display())]
    EmbeddedStore {
        dir: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("connecting to etcd at {endpoints}")]
    Etcd {
        endpoints: String,
        #[source]
        source: StorageError,
    },
    #[error("the audit signing key {}", path.display())]
    AuditSigningKey {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("the audit policy {}", path.display())]
    AuditPolicy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("the audit webhook configuration {}", path.display())]
    AuditWebhook {
        path: PathBuf,
        #[source]
        source: WebhookError,
    },
    #[error("opening the audit trail in {}", dir.display())]
    AuditTrail {
        dir: PathBuf,
        #[source]
        source: AuditError,
    },
    #[error("the serving certificate or key")]
    Tls(#[source] TlsError),
    #[error("authentication or authorization settings")]
    Auth(#[source] AuthConfigError),
    #[error(transparent)]
    Agents(StartAgentsError),
    /// The API's address is taken (another hub?) or not this machine's.
    #[error("listening on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where objects are stored.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Embedded { dir: PathBuf },
    Etcd(EtcdConfig),
}

/// Everything the hub needs to run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub authentication: AuthenticationFlags,
    pub authorization: AuthorizationFlags,
    pub compaction_interval: Duration,
    pub registry: RegistryConfig,
    /// The tunnel port for agents; none without a CA to sign their certificates.
    pub agents: Option<AgentsConfig>,
    /// The audit trail; none to run without one.
    pub audit: Option<AuditSettings>,
}

/// Audit segment files rotate at this size by default.
pub const DEFAULT_AUDIT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// kube-apiserver's `--audit-webhook-batch-max-size` default.
pub const DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_SIZE: usize = 400;
/// kube-apiserver's `--audit-webhook-batch-max-wait` default.
pub const DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_WAIT: Duration = Duration::from_secs(30);

/// Where and how the audit trail is kept (`--audit-*` flags).
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// Directory of the trail's segment files and session recordings.
    pub dir: PathBuf,
    /// Ed25519 key (PKCS#8) signing the checkpoints; generated with a `.pub` beside it if missing.
    pub signing_key_file: PathBuf,
    /// kube's `audit.k8s.io/v1` Policy; the built-in policy when absent.
    pub policy_file: Option<PathBuf>,
    /// kube's audit webhook configuration (a kubeconfig) for a SIEM.
    pub webhook_config_file: Option<PathBuf>,
    pub webhook_batch_max_size: usize,
    pub webhook_batch_max_wait: Duration,
    /// Acknowledge records only once fsynced (survives power loss) rather than once written.
    pub fsync_before_ack: bool,
    /// This replica's name, in checkpoints.
    pub replica: String,
    /// Segment files rotate at this size.
    pub segment_max_bytes: u64,
}

impl AuditSettings {
    /// Opens the trail (checkpoints also go to `store`).
    pub async fn open(&self, store: DynStorage) -> Result<Auditor, StartError> {
        let (key, generated) =
            SigningKey::load_or_generate(&self.signing_key_file).map_err(|source| {
                StartError::AuditSigningKey {
                    path: self.signing_key_file.clone(),
                    source,
                }
            })?;
        if generated {
            tracing::info!(path = %self.signing_key_file.display(), "generated the audit signing key");
        }
        let mut config = AuditConfig::new(&self.dir, self.replica.clone(), key);
        if let Some(path) = &self.policy_file {
            config.policy =
                PolicyEvaluator::from_file(path).map_err(|source| StartError::AuditPolicy {
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(path) = &self.webhook_config_file {
            let mut webhook = WebhookConfig::from_kubeconfig_file(path).map_err(|source| {
                StartError::AuditWebhook {
                    path: path.clone(),
                    source,
                }
            })?;
            webhook.batch_max_size = self.webhook_batch_max_size;
            webhook.batch_max_wait = self.webhook_batch_max_wait;
            config.webhook = Some(webhook);
        }
        if self.fsync_before_ack {
            config.durability = Durability::AfterSync;
        }
        config.checkpoint_storage = Some(store);
        config.max_segment_bytes = self.segment_max_bytes;
        Auditor::open(config)
            .await
            .map_err(|source| StartError::AuditTrail {
                dir: self.dir.clone(),
                source,
            })
    }
}

/// A hub whose listener is bound (so its address is known) but which does not serve yet.
pub struct BoundServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Hub,
    auditor: Option<Auditor>,
    registry: Registry,
    agents: Option<Arc<AgentHub>>,
    controllers: Controllers,
    /// The background tasks (compactor, RBAC reload, the tunnel port and its controllers):
    /// stopped, and waited for, when serving ends.
    tasks: Tasks,
}

impl BoundServer {
    /// The registry the server serves (for in-process setup such as `dev`'s clusters).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The agents' side, when the tunnel port is enabled.
    pub fn agents(&self) -> Option<&Arc<AgentHub>> {
        self.agents.as_ref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The leader-elected controllers.
    pub fn controllers(&self) -> &Controllers {
        &self.controllers
    }

    /// Serves until `shutdown` resolves; then stops the controllers (releasing their lease) and
    /// the background tasks, waits for them, and closes the audit trail with a final checkpoint.
    /// When it returns, nothing of this hub runs any more.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        server::serve(self.listener, self.tls, self.service, shutdown).await;
        self.controllers.shutdown().await;
        self.tasks.shut_down().await;
        if let Some(auditor) = self.auditor {
            if let Err(err) = auditor.shutdown().await {
                tracing::error!(%err, "closing the audit trail failed");
            }
        }
    }
}

/// Opens the configured storage, with the compactor that suits it.
pub async fn open_storage(config: &StorageConfig) -> Result<(DynStorage, Compactor), StartError> {
    Ok(match config {
        StorageConfig::Embedded { dir } => {
            let store: DynStorage =
                Arc::new(
                    EmbeddedStore::open(dir).map_err(|source| StartError::EmbeddedStore {
                        dir: dir.clone(),
                        source,
                    })?,
                );
            (store.clone(), Compactor::new(store))
        }
        StorageConfig::Etcd(etcd) => {
            let store =
                EtcdStore::connect(etcd.clone())
                    .await
                    .map_err(|source| StartError::Etcd {
                        endpoints: etcd.endpoints.join(","),
                        source,
                    })?;
            (Arc::new(store.clone()), Compactor::for_etcd(store))
        }
    })
}

/// Opens storage, starts the registry and binds the listener.
pub async fn bind(config: &ServerConfig) -> Result<BoundServer, StartError> {
    let (store, compactor) = open_storage(&config.storage).await?;
    let auditor = match &config.audit {
        Some(audit) => Some(audit.open(store.clone()).await?),
        None => None,
    };
    let tasks = Tasks::new();
    tasks.spawn(compactor.with_interval(config.compaction_interval).run());
    let registry = Registry::new(store, config.registry.clone());
    let agents = match &config.agents {
        Some(agents) => Some(
            AgentHub::start(agents.clone(), registry.clone(), &tasks)
                .await
                .map_err(StartError::Agents)?,
        ),
        None => None,
    };
    let replica = config
        .agents
        .as_ref()
        .map(|a| a.replica.clone())
        .or_else(|| config.audit.as_ref().map(|a| a.replica.clone()))
        .unwrap_or_else(|| "edgefleet-apiserver".into());
    let controllers = Controllers::spawn(
        registry.clone(),
        agents.as_ref().map(|a| AgentLink {
            sessions: a.sessions().clone(),
            observations: a.observations().clone(),
            cluster_status: a.cluster_status().clone(),
        }),
        &replica,
        Default::default(),
    );
    let router = Arc::new(Router::new(
        registry.clone(),
        agents.clone(),
        None,
        auditor.clone(),
    ));

    let cert_chain = tls::load_certs(&config.tls_cert_file).map_err(StartError::Tls)?;
    let key = tls::load_key(&config.tls_private_key_file).map_err(StartError::Tls)?;
    let authentication = config
        .authentication
        .build()
        .await
        .map_err(StartError::Auth)?;
    // TLS asks for client certificates from every trusted CA (the CA files, and behind
    // kube-apiserver the cluster's, which may change at run time); authentication decides which
    // CA vouched for a certificate.
    let verifier = authentication
        .client_certificates
        .clone()
        .map(|v| v as Arc<dyn rustls::server::danger::ClientCertVerifier>);
    let tls = tls::server_config(cert_chain, key, verifier).map_err(StartError::Tls)?;
    let authenticator = authentication.authenticator;
    let authorization = config
        .authorization
        .build()
        .await
        .map_err(StartError::Auth)?;
    if let (Some(rbac), Some(path)) = (
        authorization.rbac.clone(),
        config.authorization.authorization_rbac_file.clone(),
    ) {
        tasks.spawn(reload_rbac(rbac, path));
    }
    let service = stack::build(StackParts {
        authenticator,
        authorizer: authorization.authorizer,
        auditor: auditor.clone(),
        router,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
    Ok(BoundServer {
        listener,
        tls,
        service,
        auditor,
        registry,
        agents,
        controllers,
        tasks,
    })
}

/// How often the RBAC policy file is checked for changes.
const RBAC_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads the RBAC policy file when it changes; a file that does not load keeps the policy in
/// force (and says why in the log).
async fn reload_rbac(rbac: Arc<RbacAuthorizer>, path: PathBuf) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    let mut tick = tokio::time::interval(RBAC_RELOAD_INTERVAL);
    loop {
        tick.tick().await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match Policy::load_file(&path) {
            Ok(policy) => {
                rbac.replace(policy);
                tracing::info!(path = %path.display(), "RBAC policy reloaded");
            }
            Err(err) => {
                tracing::error!(path = %path.display(), %err, "RBAC policy not reloaded; keeping the previous one")
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
    tracing::info!("shutting down");
}
