//! `edgefleet-apiserver dev`: a hub for a first run and for development, with no setup.
//!
//! Everything lives under the data directory and survives restarts:
//!
//! ```text
//! <data-dir>/
//!   pki/ca.crt ca.key            the dev CA (generated once)
//!   pki/admin.crt admin.key      client certificate, CN=edgefleet-admin O=system:masters
//!   pki/apiserver.crt .key       serving certificate (re-issued at each start for the listen address)
//!   store/                       the embedded store
//!   admin.kubeconfig             kubectl configuration with everything embedded
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_api::{ApiKind, Cluster, Environment};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::agents::{AgentHub, AgentsConfig};
use crate::app::{
    AuditSettings, ServerConfig, StorageConfig, DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_SIZE,
    DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_WAIT,
};
use crate::auth::flags::{AuthenticationFlags, AuthorizationFlags, AuthorizationMode};
use crate::auth::rbac;
use crate::errors::ApiError;
use crate::kubeconfig::{self, Credentials};
use crate::pki::{self, CertificateAuthority, LeafSpec, PkiError};
use crate::registry::RegistryConfig;
use crate::registry::{Registry, WriteOptions};

/// The user of the generated admin kubeconfig.
pub const ADMIN_USER: &str = "edgefleet-admin";
/// The group that bypasses authorization, as in kube-apiserver.
pub const SUPERUSER_GROUP: &str = "system:masters";
/// The kubeconfig context and cluster name.
pub const CONTEXT: &str = "edgefleet-dev";

/// Why a dev hub could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dev certificates")]
    Pki(#[from] PkiError),
    #[error("{0} is missing from the data directory's pki/")]
    Missing(&'static str),
    #[error("creating the simulated clusters")]
    Api(#[from] ApiError),
    #[error("encoding the simulated clusters")]
    Json(#[from] serde_json::Error),
    #[error("starting edgefleet-agent simulate")]
    Simulator(#[source] std::io::Error),
    #[error(
        "--listen port {port} leaves no tunnel port ({port} + {TUNNEL_PORT_OFFSET} is past 65535): \
         give --tunnel-listen"
    )]
    NoTunnelPort { port: u16 },
}

/// A dev hub's tunnel port is its API port plus this: 8132 (konnectivity's agent port) for
/// the default 6443, and a second dev hub moved with `--listen` alone moves its tunnel port
/// with it instead of failing on a taken 8132.
pub const TUNNEL_PORT_OFFSET: u16 = 8132 - 6443;

/// Where a dev hub's tunnel port listens: `explicit` (`--tunnel-listen`), else the API's IP
/// with its port + [`TUNNEL_PORT_OFFSET`] (port 0, any free port, for an API on port 0).
pub fn tunnel_listen(
    listen: SocketAddr,
    explicit: Option<SocketAddr>,
) -> Result<SocketAddr, DevError> {
    if let Some(explicit) = explicit {
        return Ok(explicit);
    }
    let port = match listen.port() {
        0 => 0,
        port => port
            .checked_add(TUNNEL_PORT_OFFSET)
            .ok_or(DevError::NoTunnelPort { port })?,
    };
    Ok(SocketAddr::new(listen.ip(), port))
}

/// `source` while doing `what` to `path`.
fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_path_buf();
    move |source| DevError::Io { what, path, source }
}

/// Paths of a dev data directory.
pub struct DevLayout {
    pub data_dir: PathBuf,
    pub pki: PathBuf,
}

impl DevLayout {
    pub fn new(data_dir: &Path) -> Result<Self, DevError> {
        std::fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
        let data_dir = data_dir.canonicalize().map_err(io("resolving", data_dir))?;
        let pki = data_dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(io("creating", &pki))?;
        Ok(DevLayout { data_dir, pki })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    pub fn store(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The audit trail (`edgefleet-apiserver audit verify --dir <this>`).
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.pki.join(name)).ok()
    }

    fn write(&self, name: &str, contents: &str) -> Result<(), DevError> {
        let path = self.pki.join(name);
        kubeconfig::write_private(&path, contents).map_err(io("writing", &path))
    }

    /// The CA that signs agents' certificates, generated on first use.
    pub fn tunnel_ca(&self) -> Result<CertificateAuthority, DevError> {
        if let (Some(cert), Some(key)) = (self.read("tunnel-ca.crt"), self.read("tunnel-ca.key")) {
            return Ok(pki::load_ca(&cert, &key)?);
        }
        let ca = pki::generate_ca("edgefleet-dev-tunnel-ca")?;
        self.write("tunnel-ca.key", &ca.key_pem())?;
        self.write("tunnel-ca.crt", ca.certificate_pem())?;
        Ok(ca)
    }

    /// The dev CA, generated on first use.
    pub fn ca(&self) -> Result<CertificateAuthority, DevError> {
        if let (Some(cert), Some(key)) = (self.read("ca.crt"), self.read("ca.key")) {
            return Ok(pki::load_ca(&cert, &key)?);
        }
        let ca = pki::generate_ca("edgefleet-dev-ca")?;
        self.write("ca.key", &ca.key_pem())?;
        self.write("ca.crt", ca.certificate_pem())?;
        Ok(ca)
    }

    /// A kubeconfig for `user` in `groups`, with a fresh client certificate from the dev CA.
    pub fn user_kubeconfig(
        &self,
        server: &str,
        user: &str,
        groups: &[&str],
        namespace: Option<&str>,
    ) -> Result<String, DevError> {
        let ca = self.ca()?;
        let leaf = pki::issue(&ca, &LeafSpec::client(user, groups))?;
        Ok(kubeconfig::render(
            CONTEXT,
            server,
            ca.certificate_pem(),
            user,
            Credentials::ClientCertificate {
                cert_pem: &leaf.certificate_chain_pem,
                key_pem: leaf.key_pem(),
            },
            namespace,
        ))
    }

    /// The server URL in the admin kubeconfig of a running (or last run) dev hub.
    pub fn server_url(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.kubeconfig()).ok()?;
        let config: serde_json::Value = serde_yaml_ng::from_str(&text).ok()?;
        config["clusters"][0]["cluster"]["server"]
            .as_str()
            .map(String::from)
    }
}

/// Names the serving certificate must carry for `listen`.
fn serving_names(listen: SocketAddr) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec!["localhost".to_string()];
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if listen.ip().is_unspecified() {
        if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
            let host = host.trim();
            if !host.is_empty() {
                dns.push(host.to_string());
            }
        }
    } else if !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    (dns, ips)
}

/// What a dev hub is asked to be.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// The API's address.
    pub listen: SocketAddr,
    /// The tunnel port's address.
    pub tunnel_listen: SocketAddr,
    pub keepalive: edgefleet_tunnel::Keepalive,
    /// kube's static token file, for users without certificates.
    pub token_auth_file: Option<PathBuf>,
    /// Audit segment files rotate at this size.
    pub audit_segment_max_bytes: u64,
}

/// Prepares certificates and returns the server configuration for `dev`.
pub fn prepare(layout: &DevLayout, options: &DevOptions) -> Result<ServerConfig, DevError> {
    let listen = options.listen;
    let ca = layout.ca()?;
    let (dns, ips) = serving_names(listen);
    let dns_refs: Vec<&str> = dns.iter().map(String::as_str).collect();
    let serving = pki::issue(
        &ca,
        &LeafSpec::server("edgefleet-apiserver", &dns_refs, &ips),
    )?;
    layout.write("apiserver.crt", &serving.certificate_chain_pem)?;
    layout.write("apiserver.key", serving.key_pem())?;
    if layout.read("admin.crt").is_none() || layout.read("admin.key").is_none() {
        let admin = pki::issue(&ca, &LeafSpec::client(ADMIN_USER, &[SUPERUSER_GROUP]))?;
        layout.write("admin.key", admin.key_pem())?;
        layout.write("admin.crt", &admin.certificate_chain_pem)?;
    }
    let rbac_file = layout.data_dir.join("rbac.yaml");
    if !rbac_file.exists() {
        std::fs::write(&rbac_file, standalone_bindings_yaml())
            .map_err(io("writing", &rbac_file))?;
    }
    Ok(ServerConfig {
        listen,
        storage: StorageConfig::Embedded {
            dir: layout.store(),
        },
        tls_cert_file: layout.pki.join("apiserver.crt"),
        tls_private_key_file: layout.pki.join("apiserver.key"),
        authentication: AuthenticationFlags {
            client_ca_file: Some(layout.pki.join("ca.crt")),
            token_auth_file: options.token_auth_file.clone(),
            standalone: true,
            ..AuthenticationFlags::default()
        },
        authorization: AuthorizationFlags {
            authorization_mode: vec![AuthorizationMode::Rbac],
            authorization_rbac_file: Some(rbac_file),
            ..AuthorizationFlags::default()
        },
        compaction_interval: Duration::from_secs(300),
        registry: RegistryConfig::default(),
        agents: Some(AgentsConfig {
            listen: options.tunnel_listen,
            tls_cert_pem: serving.certificate_chain_pem.clone(),
            tls_key_pem: serving.key_pem().to_string(),
            serving_ca_pem: ca.certificate_pem().to_string(),
            agent_ca: Arc::new(layout.tunnel_ca()?),
            replica: DEV_REPLICA.into(),
            advertise_address: None,
            agent_image: default_agent_image(),
            keepalive: options.keepalive,
        }),
        audit: Some(AuditSettings {
            dir: layout.audit_dir(),
            signing_key_file: layout.pki.join("audit-signing.key"),
            policy_file: None,
            webhook_config_file: None,
            webhook_batch_max_size: DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_SIZE,
            webhook_batch_max_wait: DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_WAIT,
            fsync_before_ack: false,
            replica: DEV_REPLICA.into(),
            segment_max_bytes: options.audit_segment_max_bytes,
        }),
    })
}

/// The hub replica name of a dev hub.
pub const DEV_REPLICA: &str = "dev";

/// The agent image install manifests name, for this build.
pub fn default_agent_image() -> String {
    format!(
        "ghcr.io/edgefleet/edgefleet-agent:v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The Environment of a dev hub's simulated clusters.
pub const SIMULATED_ENVIRONMENT: &str = "dev";

/// Creates the Environment and `count` Clusters (`sim-1` …) for simulated agents, writes a
/// bootstrap token for each agent that has no identity yet under `<data-dir>/agents/`, and
/// starts `edgefleet-agent simulate` against the tunnel port. The child ends with the hub.
pub async fn start_simulated_agents(
    layout: &DevLayout,
    registry: &Registry,
    agents: &AgentHub,
    count: usize,
) -> Result<Option<tokio::process::Child>, DevError> {
    if count == 0 {
        return Ok(None);
    }
    let agent_binary = std::env::current_exe()
        .map_err(io("locating", Path::new("the running executable")))?
        .with_file_name("edgefleet-agent");
    if !agent_binary.exists() {
        tracing::warn!(
            path = %agent_binary.display(),
            "edgefleet-agent is not built next to this binary: no simulated agents (cargo build -p edgefleet-agent)"
        );
        return Ok(None);
    }
    let opts = WriteOptions {
        field_manager: "edgefleet-dev".into(),
        ..Default::default()
    };
    let envs = registry
        .resource("environments")
        .ok_or(ApiError::NoSuchPath)?;
    let mut env = Environment::named(SIMULATED_ENVIRONMENT);
    env.spec.description = Some("Simulated edge clusters of the dev hub".into());
    let env = serde_json::to_value(env)?;
    match envs.create(registry, "", env, &opts).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let clusters = registry.resource("clusters").ok_or(ApiError::NoSuchPath)?;
    let bootstrap_dir = layout.data_dir.join("agents");
    for i in 1..=count {
        let name = format!("sim-{i}");
        let mut cluster = Cluster::named(&name);
        cluster.metadata.labels = Some(
            [("simulated", "true"), ("gpu", "l4"), ("region", "local")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cluster.spec.kubernetes_version = Some("v1.31.4+k3s1".into());
        let cluster = serde_json::to_value(cluster)?;
        match clusters
            .create(registry, SIMULATED_ENVIRONMENT, cluster, &opts)
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = bootstrap_dir.join(format!("{SIMULATED_ENVIRONMENT}.{name}"));
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        if !dir.join("identity.pem").exists() {
            let token = agents.mint_token(SIMULATED_ENVIRONMENT, &name).await?;
            let token_file = dir.join("token");
            kubeconfig::write_private(&token_file, &format!("{token}\n"))
                .map_err(io("writing", &token_file))?;
        }
    }
    let address = agents.address();
    let child = tokio::process::Command::new(agent_binary)
        .arg("simulate")
        .arg(format!("--hub-address={address}"))
        .arg(format!("--hub-server-name={}", address.ip()))
        .arg("--hub-ca-file")
        .arg(layout.pki.join("ca.crt"))
        .arg("--bootstrap-dir")
        .arg(&bootstrap_dir)
        .arg(format!("--count={count}"))
        // kill_on_drop covers a hub that stops; this covers one that is killed outright.
        .arg("--exit-with-parent")
        .kill_on_drop(true)
        .spawn()
        .map_err(DevError::Simulator)?;
    Ok(Some(child))
}

/// Groups bound to the shipped ClusterRoles in a standalone hub, so that a user's group in
/// their certificate (`edgefleet-apiserver kubeconfig --group edgefleet:viewers`) is all it
/// takes. Behind kube-apiserver, authorization is the management cluster's RBAC instead.
pub const STANDALONE_GROUPS: [(&str, &str); 3] = [
    ("edgefleet:admins", rbac::EDGEFLEET_ADMIN),
    ("edgefleet:operators", rbac::EDGEFLEET_OPERATOR),
    ("edgefleet:viewers", rbac::EDGEFLEET_VIEWER),
];

/// The RBAC file a dev hub starts with (`<data-dir>/rbac.yaml`, editable): bindings of
/// [`STANDALONE_GROUPS`] to the built-in ClusterRoles.
pub fn standalone_bindings_yaml() -> String {
    let mut out = String::from(
        "# RBAC policy of this hub, added to the built-in roles (edgefleet-admin, edgefleet-operator,\n\
         # edgefleet-viewer and Kubernetes' discovery roles). The hub reloads it when it changes.\n",
    );
    for (group, role) in STANDALONE_GROUPS {
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{role}-{}", group.replace(':', "-"))),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: group.into(),
                namespace: None,
            }]),
        };
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&binding).unwrap_or_default());
    }
    out
}

/// Writes the admin kubeconfig pointing at `addr`.
pub fn write_admin_kubeconfig(layout: &DevLayout, addr: SocketAddr) -> Result<PathBuf, DevError> {
    let ca = layout.read("ca.crt").ok_or(DevError::Missing("ca.crt"))?;
    let cert = layout
        .read("admin.crt")
        .ok_or(DevError::Missing("admin.crt"))?;
    let key = layout
        .read("admin.key")
        .ok_or(DevError::Missing("admin.key"))?;
    let host = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    let server = format!("https://{}", SocketAddr::new(host, addr.port()));
    let config = kubeconfig::render(
        CONTEXT,
        &server,
        &ca,
        ADMIN_USER,
        Credentials::ClientCertificate {
            cert_pem: &cert,
            key_pem: &key,
        },
        None,
    );
    let path = layout.kubeconfig();
    kubeconfig::write_private(&path, &config).map_err(io("writing", &path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_tunnel_port_follows_the_listen_port_unless_given() {
        let derived = |listen| tunnel_listen(addr(listen), None).unwrap();
        assert_eq!(derived("127.0.0.1:6443"), addr("127.0.0.1:8132"));
        assert_eq!(derived("127.0.0.1:7443"), addr("127.0.0.1:9132"));
        assert_eq!(derived("0.0.0.0:6443"), addr("0.0.0.0:8132"));
        assert_eq!(derived("[::1]:6443"), addr("[::1]:8132"));
        assert_eq!(derived("127.0.0.1:0"), addr("127.0.0.1:0"));
        assert_eq!(
            tunnel_listen(addr("127.0.0.1:7443"), Some(addr("127.0.0.2:9000"))).unwrap(),
            addr("127.0.0.2:9000")
        );
        let err = tunnel_listen(addr("127.0.0.1:65000"), None).unwrap_err();
        assert!(err.to_string().contains("give --tunnel-listen"), "{err}");
    }
}
