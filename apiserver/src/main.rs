//! `edgefleet-apiserver`: parse flags, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use edgefleet_apiserver::app::{self, ServerConfig, StorageConfig};
use edgefleet_apiserver::auth::flags::{AuthenticationFlags, AuthorizationFlags};
use edgefleet_apiserver::dev::{self, DevLayout};
use edgefleet_apiserver::registry::RegistryConfig;
use edgefleet_apiserver::storage::etcd::EtcdConfig;

#[derive(Parser)]
#[command(
    name = "edgefleet-apiserver",
    version,
    about = "The edgefleet hub: an aggregated Kubernetes API server for edge clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a development hub: embedded store, generated certificates, admin kubeconfig.
    Dev(DevArgs),
    /// Run the hub with explicit storage, TLS and authentication settings.
    Serve(Box<ServeArgs>),
    /// Print a kubeconfig: for an edge cluster (`--cluster env/name`, through the hub's proxy,
    /// with your current credentials), and/or for a user with a certificate from a dev hub's CA.
    Kubeconfig(KubeconfigArgs),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Prove a trail intact, or name the first record that was modified, removed, inserted,
    /// reordered or truncated (exit 0 intact, 1 tampered, 2 unreadable).
    Verify {
        /// The trail's directory (`<data-dir>/audit` for a dev hub).
        #[arg(long)]
        dir: PathBuf,
        /// The checkpoint signing key's public half (`<key>.pub`); without it, signatures are
        /// checked against the key the checkpoints name but not tied to your key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A checkpoint kept outside the trail (JSON, as the hub stores it under
        /// `edgefleet.io/internal/audit-checkpoints/<replica>`), to detect a cut tail.
        #[arg(long, conflicts_with = "store")]
        checkpoint: Option<PathBuf>,
        /// A stopped hub's embedded store (`<data-dir>/store` for a dev hub): the checkpoint is
        /// read from there, to detect a cut tail.
        #[arg(long)]
        store: Option<PathBuf>,
        /// The replica whose checkpoint --store holds (a dev hub's is `dev`).
        #[arg(long, default_value = "dev")]
        replica: String,
    },
    /// Generate a checkpoint signing key: FILE (Ed25519, PKCS#8 PEM, mode 0600) and FILE.pub,
    /// for --audit-signing-key-file; never overwrites.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct AuditArgs {
    /// Directory of the audit trail; auditing is off without it.
    #[arg(long, requires = "audit_signing_key_file")]
    audit_log_dir: Option<PathBuf>,
    /// Ed25519 key (PKCS#8 PEM) signing checkpoints; generated (with a .pub) if missing. Keep it
    /// away from the trail's directory.
    #[arg(long)]
    audit_signing_key_file: Option<PathBuf>,
    /// kube's audit Policy file (audit.k8s.io/v1); a built-in policy otherwise.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// kube's audit webhook configuration (kubeconfig format), to ship events to a SIEM.
    #[arg(long)]
    audit_webhook_config_file: Option<PathBuf>,
    #[arg(long, default_value_t = edgefleet_apiserver::app::DEFAULT_AUDIT_WEBHOOK_BATCH_MAX_SIZE)]
    audit_webhook_batch_max_size: usize,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    audit_webhook_batch_max_wait: Duration,
    /// Acknowledge audit records only once fsynced (survives power loss; slower) instead of
    /// once written (survives a crash of the hub).
    #[arg(long)]
    audit_fsync: bool,
    /// Segment files rotate at this size.
    #[arg(long, default_value_t = edgefleet_apiserver::app::DEFAULT_AUDIT_SEGMENT_MAX_BYTES)]
    audit_segment_max_bytes: u64,
}

#[derive(Args)]
struct DevArgs {
    /// Directory for the embedded store, certificates and kubeconfig.
    #[arg(long, default_value = "./.edgefleet")]
    data_dir: PathBuf,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address of the tunnel port agents dial (default: the listen address's IP, port 8132;
    /// port 0 when the listen port is 0).
    #[arg(long)]
    tunnel_listen: Option<SocketAddr>,
    /// Simulated edge clusters to start (`edgefleet-agent simulate`) in Environment `dev`.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Tunnel PING interval (and timeout): an agent silent for twice this is disconnected.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    tunnel_keepalive: Duration,
    /// Static bearer tokens (kube's CSV format), for users without certificates.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Audit segment files (in <data-dir>/audit) rotate at this size.
    #[arg(long, default_value_t = edgefleet_apiserver::app::DEFAULT_AUDIT_SEGMENT_MAX_BYTES)]
    audit_segment_max_bytes: u64,
}

/// The default tunnel port (konnectivity's agent port).
const DEFAULT_TUNNEL_PORT: u16 = 8132;

#[derive(Args)]
struct TunnelArgs {
    /// CA that signs agents' client certificates; enables the tunnel port.
    #[arg(long, requires = "tunnel_ca_key_file")]
    tunnel_ca_file: Option<PathBuf>,
    /// Private key of --tunnel-ca-file.
    #[arg(long)]
    tunnel_ca_key_file: Option<PathBuf>,
    /// IP address of the tunnel port.
    #[arg(long, default_value = "0.0.0.0")]
    tunnel_bind_address: std::net::IpAddr,
    /// Port agents dial.
    #[arg(long, default_value_t = DEFAULT_TUNNEL_PORT)]
    tunnel_port: u16,
    /// Tunnel serving certificate (default: --tls-cert-file).
    #[arg(long)]
    tunnel_tls_cert_file: Option<PathBuf>,
    /// Tunnel serving key (default: --tls-private-key-file).
    #[arg(long)]
    tunnel_tls_private_key_file: Option<PathBuf>,
    /// CA agents trust for the tunnel port, put in install manifests (default: the last
    /// certificate of the tunnel serving chain).
    #[arg(long)]
    tunnel_serving_ca_file: Option<PathBuf>,
    /// `host:port` agents dial, for install manifests (default: the bound address).
    #[arg(long)]
    tunnel_advertise_address: Option<String>,
    /// This replica's name in Cluster status (default: the host name).
    #[arg(long)]
    hub_replica: Option<String>,
    /// Agent image of install manifests.
    #[arg(long)]
    agent_image: Option<String>,
    /// Tunnel PING interval (and timeout): an agent silent for twice this is disconnected.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    tunnel_keepalive: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum StorageKind {
    Embedded,
    Etcd,
}

#[derive(Args)]
struct ServeArgs {
    /// Storage backend.
    #[arg(long, value_enum, default_value = "embedded")]
    storage: StorageKind,
    /// Directory of the embedded store.
    #[arg(long, default_value = "./.edgefleet/store")]
    data_dir: PathBuf,
    /// etcd client URLs, comma-separated (kube-apiserver: --etcd-servers).
    #[arg(long, alias = "etcd-servers", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Prefix of every key in etcd.
    #[arg(long, default_value = "/registry/")]
    etcd_prefix: String,
    /// CA bundle to verify etcd's serving certificate.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// Interval of storage compaction (history older than this is discarded).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: Duration,
    /// IP address to serve on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: std::net::IpAddr,
    /// Port to serve HTTPS on.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Serving certificate (PEM, chain allowed).
    #[arg(long)]
    tls_cert_file: PathBuf,
    /// Serving private key (PEM).
    #[arg(long)]
    tls_private_key_file: PathBuf,
    #[command(flatten)]
    authentication: AuthenticationFlags,
    #[command(flatten)]
    authorization: AuthorizationFlags,
    #[command(flatten)]
    tunnel: TunnelArgs,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Args)]
struct KubeconfigArgs {
    /// The edge cluster, `environment/name`: kubectl with this kubeconfig talks to it through
    /// the hub's `clusters/{name}/proxy`.
    #[arg(long)]
    cluster: Option<String>,
    /// The kubeconfig whose current context reaches the hub (default: $KUBECONFIG, then
    /// ~/.kube/config); used with --cluster when no --user is given.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Data directory of the dev hub whose CA signs the certificate.
    #[arg(long, default_value = "./.edgefleet")]
    data_dir: PathBuf,
    /// User name (certificate CN) for a new client certificate from the dev CA.
    #[arg(long, required_unless_present = "cluster")]
    user: Option<String>,
    /// Groups (certificate O), repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Default namespace of the context.
    #[arg(long)]
    namespace: Option<String>,
    /// Server URL; defaults to the one in the admin kubeconfig.
    #[arg(long)]
    server: Option<String>,
}

/// `30s`, `5m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => run_dev(args).await,
        Command::Serve(args) => run_serve(*args).await,
        Command::Audit(AuditCommand::Keygen { out }) => {
            let public = edgefleet_apiserver::audit::public_key_path(&out);
            edgefleet_apiserver::audit::generate_key_files(&out, &public)
                .with_context(|| format!("generating {}", out.display()))?;
            println!("wrote {} and {}", out.display(), public.display());
            Ok(())
        }
        Command::Audit(AuditCommand::Verify {
            dir,
            public_key,
            checkpoint,
            store,
            replica,
        }) => {
            let result = match store {
                None => edgefleet_apiserver::audit::verify_command(
                    &dir,
                    public_key.as_deref(),
                    checkpoint.as_deref(),
                ),
                Some(store) => {
                    verify_with_store(&dir, public_key.as_deref(), &store, &replica).await
                }
            };
            match result {
                Ok(report) => {
                    println!("{report}");
                    std::process::exit(report.exit_code());
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    std::process::exit(2);
                }
            }
        }
        Command::Kubeconfig(args) => {
            print!("{}", kubeconfig(args)?);
            Ok(())
        }
    }
}

async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    init_logging();
    let layout = DevLayout::new(&args.data_dir)?;
    let tunnel_port = if args.listen.port() == 0 {
        0
    } else {
        DEFAULT_TUNNEL_PORT
    };
    let tunnel_listen = args
        .tunnel_listen
        .unwrap_or(SocketAddr::new(args.listen.ip(), tunnel_port));
    let options = dev::DevOptions {
        listen: args.listen,
        tunnel_listen,
        keepalive: edgefleet_tunnel::Keepalive {
            interval: args.tunnel_keepalive,
            timeout: args.tunnel_keepalive,
        },
        token_auth_file: args.token_auth_file.clone(),
        audit_segment_max_bytes: args.audit_segment_max_bytes,
    };
    let config = dev::prepare(&layout, &options)?;
    let server = app::bind(&config).await?;
    let addr = server.local_addr();
    let kubeconfig = dev::write_admin_kubeconfig(&layout, addr)?;
    let agents = server
        .agents()
        .context("the dev hub has a tunnel port")?
        .clone();
    let simulator =
        dev::start_simulated_agents(&layout, server.registry(), &agents, args.agents).await?;
    println!(
        "edgefleet hub (dev) serving on https://{addr}, embedded store in {}; agents dial {}",
        layout.store().display(),
        agents.address()
    );
    if simulator.is_some() {
        println!(
            "{} simulated edge clusters connect in Environment {:?}.",
            args.agents,
            dev::SIMULATED_ENVIRONMENT
        );
    }
    println!(
        "Point kubectl at it:\n\n  export KUBECONFIG={}\n  kubectl get clusters -A\n",
        kubeconfig.display()
    );
    server.run(app::shutdown_signal()).await;
    drop(simulator);
    Ok(())
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let storage = match args.storage {
        StorageKind::Embedded => StorageConfig::Embedded { dir: args.data_dir },
        StorageKind::Etcd => {
            anyhow::ensure!(
                !args.etcd_endpoints.is_empty(),
                "--storage etcd needs --etcd-endpoints"
            );
            StorageConfig::Etcd(EtcdConfig {
                endpoints: args.etcd_endpoints,
                prefix: args.etcd_prefix,
                ca_file: args.etcd_cafile,
                cert_file: args.etcd_certfile,
                key_file: args.etcd_keyfile,
            })
        }
    };
    let config = ServerConfig {
        listen: SocketAddr::new(args.bind_address, args.secure_port),
        storage,
        tls_cert_file: args.tls_cert_file,
        tls_private_key_file: args.tls_private_key_file,
        authentication: args.authentication,
        authorization: args.authorization,
        compaction_interval: args.etcd_compaction_interval,
        registry: RegistryConfig::default(),
        agents: None,
        audit: None,
    };
    let config = ServerConfig {
        agents: tunnel_config(&args.tunnel, &config)?,
        ..config
    };
    let replica = config
        .agents
        .as_ref()
        .map(|a| a.replica.clone())
        .unwrap_or_else(default_replica);
    let audit = args
        .audit
        .audit_log_dir
        .clone()
        .map(|dir| app::AuditSettings {
            dir,
            signing_key_file: args
                .audit
                .audit_signing_key_file
                .clone()
                .expect("clap requires it with --audit-log-dir"),
            policy_file: args.audit.audit_policy_file.clone(),
            webhook_config_file: args.audit.audit_webhook_config_file.clone(),
            webhook_batch_max_size: args.audit.audit_webhook_batch_max_size,
            webhook_batch_max_wait: args.audit.audit_webhook_batch_max_wait,
            fsync_before_ack: args.audit.audit_fsync,
            replica,
            segment_max_bytes: args.audit.audit_segment_max_bytes,
        });
    let config = ServerConfig { audit, ..config };
    let server = app::bind(&config).await?;
    tracing::info!(addr = %server.local_addr(), "serving");
    println!("edgefleet hub serving on https://{}", server.local_addr());
    server.run(app::shutdown_signal()).await;
    Ok(())
}

/// The tunnel port's configuration, when a tunnel CA is given.
fn tunnel_config(
    args: &TunnelArgs,
    server: &ServerConfig,
) -> anyhow::Result<Option<edgefleet_apiserver::agents::AgentsConfig>> {
    let (Some(ca_file), Some(ca_key_file)) = (&args.tunnel_ca_file, &args.tunnel_ca_key_file)
    else {
        return Ok(None);
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let agent_ca = edgefleet_apiserver::pki::load_ca(&read(ca_file)?, &read(ca_key_file)?)?;
    let tls_cert_pem = read(
        args.tunnel_tls_cert_file
            .as_ref()
            .unwrap_or(&server.tls_cert_file),
    )?;
    let tls_key_pem = read(
        args.tunnel_tls_private_key_file
            .as_ref()
            .unwrap_or(&server.tls_private_key_file),
    )?;
    let serving_ca_pem = match &args.tunnel_serving_ca_file {
        Some(path) => read(path)?,
        None => last_certificate(&tls_cert_pem)
            .context("the tunnel serving chain has no certificate")?,
    };
    let replica = args.hub_replica.clone().unwrap_or_else(default_replica);
    Ok(Some(edgefleet_apiserver::agents::AgentsConfig {
        listen: SocketAddr::new(args.tunnel_bind_address, args.tunnel_port),
        tls_cert_pem,
        tls_key_pem,
        serving_ca_pem,
        agent_ca: std::sync::Arc::new(agent_ca),
        replica,
        advertise_address: args.tunnel_advertise_address.clone(),
        agent_image: args
            .agent_image
            .clone()
            .unwrap_or_else(dev::default_agent_image),

        keepalive: edgefleet_tunnel::Keepalive {
            interval: args.tunnel_keepalive,
            timeout: args.tunnel_keepalive,
        },
    }))
}

/// The last PEM certificate block of a chain.
fn last_certificate(chain: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = chain.rfind(END)? + END.len();
    let begin = chain[..end].rfind("-----BEGIN CERTIFICATE-----")?;
    Some(format!("{}\n", &chain[begin..end]))
}

/// `edgefleet-apiserver kubeconfig`.
fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<String> {
    let base = match &args.user {
        Some(user) => {
            let layout = DevLayout::new(&args.data_dir)?;
            let server = args
                .server
                .clone()
                .or_else(|| layout.server_url())
                .context("no --server given and no admin.kubeconfig in the data directory")?;
            let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
            layout.user_kubeconfig(&server, user, &groups, args.namespace.as_deref())?
        }
        None => {
            let path = args
                .kubeconfig
                .clone()
                .or_else(|| {
                    std::env::var_os("KUBECONFIG").and_then(|k| std::env::split_paths(&k).next())
                })
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
                .context("no --kubeconfig, $KUBECONFIG or $HOME")?;
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    match &args.cluster {
        None => Ok(base),
        Some(cluster) => {
            let (environment, name) = cluster
                .split_once('/')
                .context("--cluster is environment/name")?;
            edgefleet_apiserver::kubeconfig::for_cluster(&base, environment, name)
                .map_err(anyhow::Error::msg)
        }
    }
}

/// This replica's name when none is given: the host name (a pod's name in Kubernetes).
fn default_replica() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hub".into())
}

/// `audit verify --store`: the checkpoint comes from a (stopped) hub's embedded store.
async fn verify_with_store(
    dir: &std::path::Path,
    public_key: Option<&std::path::Path>,
    store: &std::path::Path,
    replica: &str,
) -> Result<edgefleet_apiserver::audit::VerifyReport, edgefleet_apiserver::audit::AuditError> {
    use edgefleet_apiserver::audit;
    let key = public_key.map(audit::PublicKey::load).transpose()?;
    let store = edgefleet_apiserver::storage::embedded::EmbeddedStore::open(store)
        .map_err(|e| audit::AuditError::CheckpointStore(e.into()))?;
    let checkpoint = audit::load_checkpoint(&store, replica).await?;
    if checkpoint.is_none() {
        // Not an error (a hub that never checkpointed), but the cut-tail check did not happen.
        eprintln!("note: the store holds no audit checkpoint for replica {replica:?}");
    }
    Ok(audit::verify_dir(dir, key.as_ref(), checkpoint.as_ref()))
}
