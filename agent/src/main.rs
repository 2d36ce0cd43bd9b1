//! `edgefleet-agent`: parse flags, build, run (see the library docs).

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};
use edgefleet_agent::{
    ClusterRef, ClusterShape, EdgeAgent, HubConfig, IdentityStorage, RunConfig, SecretRef,
    SecretStorage, SimulateConfig, Simulation, UpstreamSource,
};

#[derive(Parser)]
#[command(
    version,
    about = "The edgefleet edge agent: dials out to the hub and serves its cluster through the tunnel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a real edge cluster (its kube-apiserver) to the hub.
    Run(RunArgs),
    /// Serve many simulated edge clusters, one agent and one tunnel each.
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct HubArgs {
    /// The hub's tunnel port, host:port.
    #[arg(long, env = "EDGEFLEET_HUB_ADDRESS")]
    hub_address: String,
    /// Name the hub's certificate must carry (default: the host of --hub-address).
    #[arg(long, env = "EDGEFLEET_HUB_SERVER_NAME")]
    hub_server_name: Option<String>,
    /// PEM bundle the hub's tunnel certificate chains to.
    #[arg(long, env = "EDGEFLEET_HUB_CA_FILE")]
    hub_ca_file: PathBuf,
}

impl HubArgs {
    fn config(self) -> HubConfig {
        let mut hub = HubConfig::new(self.hub_address, self.hub_ca_file);
        hub.server_name = self.hub_server_name;
        hub
    }
}

#[derive(Args)]
#[command(group(
    // One or both: a directory alone, a Secret alone (temporary working copy), or a Secret
    // with a working directory on a writable volume.
    ArgGroup::new("identity")
        .required(true)
        .multiple(true)
        .args(["identity_dir", "identity_secret"])
))]
struct RunArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// This cluster, <environment>/<name> (the identity cluster:<environment>/<name>).
    #[arg(long, env = "EDGEFLEET_CLUSTER")]
    cluster: String,
    /// Single-use bootstrap token, read only while no identity is stored.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_TOKEN_FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Where the agent keeps its key and certificate. With --identity-secret, only a private
    /// working copy (default: a new directory under $TMPDIR, removed when the agent stops).
    #[arg(long, env = "EDGEFLEET_IDENTITY_DIR")]
    identity_dir: Option<PathBuf>,
    /// Keep the identity in this Secret of the edge cluster, <namespace>/<name>, so that a
    /// restarted agent reconnects with its certificate (needs get, create and update on it).
    #[arg(long, env = "EDGEFLEET_IDENTITY_SECRET", value_name = "NAMESPACE/NAME")]
    identity_secret: Option<SecretRef>,
    /// Kubeconfig of the edge cluster (default: the pod's service account).
    #[arg(long, env = "EDGEFLEET_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

impl RunArgs {
    fn identity(&self) -> IdentityStorage {
        match (&self.identity_secret, &self.identity_dir) {
            (Some(secret), work_dir) => IdentityStorage::Secret(SecretStorage {
                work_dir: work_dir.clone(),
                ..SecretStorage::new(secret.clone())
            }),
            (None, Some(dir)) => IdentityStorage::Directory(dir.clone()),
            (None, None) => unreachable!("clap requires --identity-dir or --identity-secret"),
        }
    }
}

#[derive(Args)]
struct SimulateArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// One <environment>.<name> subdirectory per cluster, each with a `token` file.
    #[arg(long)]
    bootstrap_dir: PathBuf,
    /// Simulate at most this many clusters (the first in name order).
    #[arg(long)]
    count: Option<usize>,
    /// Nodes per simulated cluster.
    #[arg(long, default_value_t = ClusterShape::default().nodes)]
    nodes: u32,
    /// GPUs per simulated node.
    #[arg(long, default_value_t = ClusterShape::default().gpus_per_node)]
    gpus_per_node: u32,
    /// GPU product of the simulated nodes (label nvidia.com/gpu.product).
    #[arg(long, default_value_t = ClusterShape::default().gpu_model)]
    gpu_model: String,
    /// Kubernetes version the simulated clusters report.
    #[arg(long, default_value_t = ClusterShape::default().kubernetes_version)]
    kubernetes_version: String,
    /// Exit when the process that started this one exits, even if it was killed without a
    /// chance to stop us (a dev hub spawns its simulator with this flag).
    #[arg(long)]
    exit_with_parent: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // kube-rs builds its TLS configuration with the process-wide provider: make it ring.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let command = Cli::parse().command;
    // One agent runs on one thread. Its work is relaying: each request hops between the
    // tunnel's connection, its stream task and the upstream connection, and on a
    // multi-threaded runtime every hop is a cross-thread wake-up (futex, often an idle vCPU
    // woken by IPI). On one thread the agent answers a small GET through the tunnel about a
    // third faster and spends about a third less CPU per request (tunnel-bench); an edge
    // node's CPU belongs to its workloads anyway. A simulation runs thousands of agents, whose
    // TLS handshakes use every core.
    let runtime = match command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        Command::Simulate(_) => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    runtime.block_on(serve(command))
}

async fn serve(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let cluster: ClusterRef = args.cluster.parse()?;
            let identity = args.identity();
            let upstream = match args.kubeconfig {
                Some(path) => UpstreamSource::Kubeconfig(path),
                None => UpstreamSource::InCluster,
            };
            let agent = EdgeAgent::build(RunConfig {
                hub: args.hub.config(),
                cluster,
                bootstrap_token_file: args.bootstrap_token_file,
                identity,
                upstream,
            })
            .await
            .context("configuring the agent")?;
            shutdown_on_signal(agent.run()).await
        }
        Command::Simulate(args) => {
            let mut config = SimulateConfig::new(args.hub.config(), args.bootstrap_dir);
            config.count = args.count;
            config.shape = ClusterShape {
                nodes: args.nodes,
                gpus_per_node: args.gpus_per_node,
                gpu_model: args.gpu_model,
                kubernetes_version: args.kubernetes_version,
            };
            let simulation = Simulation::build(config).context("configuring the simulation")?;
            if args.exit_with_parent {
                let parent = std::os::unix::process::parent_id();
                tokio::select! {
                    result = shutdown_on_signal(simulation.run()) => result,
                    () = parent_exited(parent) => {
                        tracing::info!("the process that started the simulation exited; closing the tunnels");
                        Ok(())
                    }
                }
            } else {
                shutdown_on_signal(simulation.run()).await
            }
        }
    }
}

/// Resolves once this process is no longer the child of `parent`: when a parent dies, its
/// children are re-parented (to init or a subreaper), so a changed parent id is the signal.
/// Polling keeps this portable across Linux and macOS, unlike `PR_SET_PDEATHSIG`.
async fn parent_exited(parent: u32) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// Runs `agents` until SIGINT or SIGTERM; dropping it closes every tunnel.
async fn shutdown_on_signal(agents: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        () = agents => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; closing the tunnel"),
        _ = terminate.recv() => tracing::info!("terminated; closing the tunnel"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    const HUB: [&str; 5] = [
        "edgefleet-agent",
        "run",
        "--hub-address=hub.example.com:8132",
        "--hub-ca-file=/etc/edgefleet/bootstrap/hub-ca.crt",
        "--cluster=retail/store-1",
    ];

    fn run(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let args = HUB.iter().chain(extra);
        match Cli::try_parse_from(args)?.command {
            Command::Run(args) => Ok(args),
            Command::Simulate(_) => unreachable!(),
        }
    }

    #[test]
    fn the_flags_are_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn an_identity_directory_or_secret_is_required() {
        let error = run(&[]).err().expect("neither is an error");
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        let message = error.to_string();
        assert!(message.contains("--identity-dir"), "{message}");
        assert!(message.contains("--identity-secret"), "{message}");

        let args = run(&["--identity-dir=/var/lib/edgefleet"]).unwrap();
        assert_eq!(
            args.identity(),
            IdentityStorage::Directory("/var/lib/edgefleet".into())
        );
    }

    #[test]
    fn a_secret_takes_an_optional_working_directory() {
        let secret: SecretRef = "edgefleet-system/edgefleet-agent-identity".parse().unwrap();
        let args = run(&["--identity-secret=edgefleet-system/edgefleet-agent-identity"]).unwrap();
        assert_eq!(
            args.identity(),
            IdentityStorage::Secret(SecretStorage::new(secret.clone()))
        );

        let args = run(&[
            "--identity-secret=edgefleet-system/edgefleet-agent-identity",
            "--identity-dir=/var/run/edgefleet",
        ])
        .unwrap();
        let IdentityStorage::Secret(storage) = args.identity() else {
            panic!("expected a Secret");
        };
        assert_eq!(storage.secret, secret);
        assert_eq!(storage.work_dir, Some("/var/run/edgefleet".into()));
    }

    #[test]
    fn an_invalid_secret_is_refused_with_the_reason() {
        let error = run(&["--identity-secret=edgefleet-agent-identity"])
            .err()
            .expect("a name without a namespace is an error");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        let message = error.to_string();
        assert!(message.contains("<namespace>/<name>"), "{message}");
    }
}
