//! `edgefleet-agent`: parse flags, build, run (see the library docs).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use edgefleet_agent::{
    ClusterRef, ClusterShape, EdgeAgent, HubConfig, RunConfig, SimulateConfig, Simulation,
    UpstreamSource,
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
struct RunArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// This cluster, <environment>/<name> (the identity cluster:<environment>/<name>).
    #[arg(long, env = "EDGEFLEET_CLUSTER")]
    cluster: String,
    /// Single-use bootstrap token, read only while no identity is stored.
    #[arg(long, env = "EDGEFLEET_BOOTSTRAP_TOKEN_FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Where the agent keeps its key and certificate.
    #[arg(long, env = "EDGEFLEET_IDENTITY_DIR")]
    identity_dir: PathBuf,
    /// Kubeconfig of the edge cluster (default: the pod's service account).
    #[arg(long, env = "EDGEFLEET_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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

    match Cli::parse().command {
        Command::Run(args) => {
            let cluster: ClusterRef = args.cluster.parse()?;
            let upstream = match args.kubeconfig {
                Some(path) => UpstreamSource::Kubeconfig(path),
                None => UpstreamSource::InCluster,
            };
            let agent = EdgeAgent::build(RunConfig {
                hub: args.hub.config(),
                cluster,
                bootstrap_token_file: args.bootstrap_token_file,
                identity_dir: args.identity_dir,
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
            shutdown_on_signal(simulation.run()).await
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
