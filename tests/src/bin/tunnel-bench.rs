//! The tunnel's benchmarks (issue: the tunnel), each against baselines measured in the same
//! round: direct HTTP/2 + TLS to the same upstream, and rathole carrying the same traffic. Run
//! by `hack/bench/tunnel.sh`, which builds in release mode and writes the figures into
//! BENCHMARKS.md.
//!
//! Method (see `edgefleet_e2e::tunnel_bench` for the processes):
//!
//! * **Request path**, per round, every path in turn (the order rotates each round): small GETs
//!   at concurrency 1 and 64 (latency, rps, and the intermediaries' CPU per 1,000 requests),
//!   large transfers (throughput, CPU per GB), held watch streams (opens/s, memory and sockets
//!   per stream, multiplexed and one connection each), and one stalled stream next to the
//!   concurrency-1 GETs (their p99 with and without it). Paths: direct; the tunnel alone (the
//!   bench hub → `edgefleet-agent run`); the real hub's `clusters/{name}/proxy` (`edgefleet-apiserver
//!   dev` → `edgefleet-agent run`); rathole (server → client, TLS transport). Memory is read on
//!   freshly restarted processes (`edgefleet_e2e::tunnel_bench::rig`).
//! * **Reconnect**, per round: the real hub (and rathole's server) killed and started again;
//!   the time from its tunnel port being bound again to the agent's session, from the hub's
//!   log.
//! * **The tunnel's own share** of the per-agent memory: the same N agents, enrolled
//!   beforehand, on the bench hub (TunnelServer only).
//! * **Scale**: a real dev hub with N Clusters created and enrolled through the API (bootstrap
//!   subresource tokens), N simulated agents (`edgefleet-agent simulate`, one connection each);
//!   hub memory and sockets per idle agent; then per round a hub restart (SIGKILL, same data
//!   and ports) with the time until each agent is back and the hub's API latency meanwhile.
//!   The baseline is a rathole server's cost per connected rathole client.
//!
//! The report gives the median round. The load generator shares the machine's 2 cores with
//! everything it measures; its CPU is not counted in any CPU figure (only the hub and agent
//! processes, or rathole's server and client, are).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use edgefleet_e2e::hub::binary;
use edgefleet_e2e::procs::{self, wait_line, Proc};
use edgefleet_e2e::tunnel_bench::client::H2Client;
use edgefleet_e2e::tunnel_bench::devhub::{self, DevHub};
use edgefleet_e2e::tunnel_bench::load::{
    self, percentile, HeldClients, HELD_STREAMS_PER_CONNECTION,
};
use edgefleet_e2e::tunnel_bench::pki::{BenchPki, HUB_NAME};
use edgefleet_e2e::tunnel_bench::rig::{
    rathole_server_lines, BenchHub, Reconnect, Rig, READY_TIMEOUT,
};
use edgefleet_e2e::tunnel_bench::{harness, rathole, upstream};
use futures::StreamExt;
use http::{Method, StatusCode};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "The tunnel's benchmarks against direct HTTP/2+TLS and rathole")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    args: Args,
}

/// The benchmark's own child processes (this binary, started again).
#[derive(Subcommand)]
enum Role {
    /// The upstream HTTPS server.
    #[command(hide = true)]
    ServeUpstream {
        #[arg(long)]
        pki: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The bench hub: TunnelServer and its HTTPS front.
    #[command(hide = true)]
    ServeHub {
        #[arg(long)]
        pki: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        tunnel_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:0")]
        front_listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct Args {
    /// Small numbers everywhere (a smoke run: 1 round, 100 agents); any flag below overrides.
    #[arg(long)]
    quick: bool,
    /// Rounds per figure (the median is reported) [default: 3, quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Requests of the concurrency-1 run [default: 2000, quick: 200].
    #[arg(long)]
    requests_c1: Option<usize>,
    /// Requests of the concurrency-64 run [default: 20000, quick: 2000].
    #[arg(long)]
    requests_c64: Option<usize>,
    /// Size of one large transfer, MiB.
    #[arg(long, default_value_t = 64)]
    transfer_mib: u64,
    /// Large transfers per round and path [default: 2, quick: 1].
    #[arg(long)]
    transfers: Option<usize>,
    /// Held watch streams [default: 1000, quick: 100].
    #[arg(long)]
    watches: Option<usize>,
    /// Hub restarts per round for the single-agent reconnect [default: 5, quick: 2].
    #[arg(long)]
    reconnects: Option<usize>,
    /// Simulated agents for the scale figures; 0 skips them [default: 10000, quick: 100].
    #[arg(long)]
    agents: Option<usize>,
    /// Rathole clients for its per-agent cost [default: 100, quick: 5].
    #[arg(long)]
    rathole_agents: Option<usize>,
    /// The rathole binary; without it the rathole baseline is skipped.
    #[arg(long)]
    rathole: Option<PathBuf>,
    /// Keep logs and configuration here (default: a temporary directory, kept on failure).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What to run, after `--quick` and overrides.
#[derive(Clone, Debug)]
struct Sizes {
    rounds: usize,
    requests_c1: usize,
    requests_c64: usize,
    transfer_bytes: u64,
    transfers: usize,
    watches: usize,
    reconnects: usize,
    agents: usize,
    rathole_agents: usize,
}

impl Sizes {
    fn from(args: &Args) -> Sizes {
        let q = args.quick;
        let pick =
            |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
        Sizes {
            rounds: pick(args.rounds, 3, 1).max(1),
            requests_c1: pick(args.requests_c1, 2000, 200),
            requests_c64: pick(args.requests_c64, 20_000, 2000),
            transfer_bytes: args.transfer_mib << 20,
            transfers: pick(args.transfers, 2, 1).max(1),
            watches: pick(args.watches, 1000, 100),
            reconnects: pick(args.reconnects, 5, 2),
            agents: pick(args.agents, 10_000, 100),
            rathole_agents: pick(args.rathole_agents, 100, 5),
        }
    }
}

/// Concurrency of the "64 concurrent streams" run.
const CONCURRENCY: usize = 64;
/// Requests that warm each path up (connections, pools, caches) before anything is measured.
const WARMUP_REQUESTS: usize = 200;
/// How long the stalled stream runs before the others are measured: long enough to fill every
/// window and buffer on its way (MiBs at loopback speed).
const STALL_FILL: Duration = Duration::from_millis(500);
/// Blocks of the stalled-stream measurement (each: without, then with the stalled stream).
const STALL_BLOCKS: usize = 4;
/// Pause after opening held streams before memory is read (allocator and kernel settle).
const MEMORY_SETTLE: Duration = Duration::from_secs(1);
/// Budget for all agents to reconnect after a hub restart before the round gives up on the
/// stragglers (reported as not back).
const RECONNECT_BUDGET: Duration = Duration::from_secs(180);
/// The target: 99% of agents back within this after a hub restart.
const RECONNECT_GOAL: Duration = Duration::from_secs(30);
/// A session this long resets an agent's backoff (`edgefleet_tunnel::timeouts::HEALTHY_SESSION`,
/// plus a margin): the pause between two restarts so each starts from healthy agents.
const HEALTHY_SESSION: Duration = Duration::from_secs(32);
/// Concurrency of Cluster creation and bootstrap for the scale figures.
const CREATE_CONCURRENCY: usize = 64;
/// The scale Environment.
const FLEET: &str = "fleet";
/// Below this much CPU (cores) a process counts as idle, for memory readings.
const IDLE_CORES: f64 = 0.05;
/// Pace of the hub API probe during reconnects (and while idle, for comparison).
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long the API probe runs against the idle hub.
const IDLE_PROBE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::ServeUpstream { pki, listen }) => {
            upstream::serve(&BenchPki::open(&pki), listen).await
        }
        Some(Role::ServeHub {
            pki,
            tunnel_listen,
            front_listen,
        }) => harness::serve(&BenchPki::open(&pki), tunnel_listen, front_listen).await,
        None => {
            let (work, temp) = match &cli.args.work_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    (dir.clone(), None)
                }
                None => {
                    let temp = tempfile::Builder::new().prefix("tunnel-bench-").tempdir()?;
                    (temp.path().to_path_buf(), Some(temp))
                }
            };
            // Interrupted, the run is dropped, and with it every child process.
            let result = tokio::select! {
                result = run(&cli.args, &work) => result,
                () = interrupted() => Err(anyhow::anyhow!("interrupted")),
            };
            if result.is_err() {
                if let Some(temp) = temp {
                    eprintln!("logs kept in {}", temp.keep().display());
                }
            }
            result
        }
    }
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Figures collected per round: `(figure, path)` → one value per round.
#[derive(Default)]
struct Samples(BTreeMap<(String, String), Vec<f64>>);

impl Samples {
    fn add(&mut self, figure: &str, path: &str, value: f64) {
        self.0
            .entry((figure.to_string(), path.to_string()))
            .or_default()
            .push(value);
    }

    fn median(&self, figure: &str, path: &str) -> Option<f64> {
        let mut v = self.0.get(&(figure.to_string(), path.to_string()))?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// The report: per-round lines (printed as they come) and summary tables.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.lines.push(format!("- {}", s.trim()));
    }
}

async fn run(args: &Args, work: &Path) -> anyhow::Result<()> {
    let sizes = Sizes::from(args);
    check_descriptor_limit(&sizes)?;
    let mut report = Report::default();
    let rathole_version = args.rathole.as_ref().map_or("none".to_string(), |bin| {
        Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Build Version:"))
                    .map(|v| format!("rathole {} (TLS transport, native-tls)", v.trim()))
            })
            .unwrap_or_else(|| "rathole (version unknown)".into())
    });
    report.line(format!(
        "machine: {} cores; load average at start: {}; baseline: {rathole_version}; sizes: {sizes:?}",
        std::thread::available_parallelism()?,
        procs::load_average()
    ));
    let pki = BenchPki::generate(&work.join("pki"))?;
    let mut rig = Rig::start(&pki, work, args.rathole.as_deref()).await?;
    let paths = rig.paths();

    let mut samples = Samples::default();
    let mut single_reconnects: Vec<Reconnect> = Vec::new();
    let mut rathole_reconnects: Vec<Duration> = Vec::new();
    for round in 0..sizes.rounds {
        report.line(format!(
            "round {round} (load average {})",
            procs::load_average()
        ));
        for i in 0..paths.len() {
            let path = paths[(i + round) % paths.len()];
            measure_path(&mut rig, path, &sizes, round, &mut samples, &mut report).await?;
            rig.ensure_running()?;
        }
        let mut line =
            String::from("  single-agent reconnect after the hub's tunnel port is back (ms):");
        for _ in 0..sizes.reconnects {
            let r = rig.hub_reconnect().await?;
            line.push_str(&format!(" {:.0}", r.back_after.as_secs_f64() * 1e3));
            single_reconnects.push(r);
        }
        if rig.rathole_bin().is_some() {
            line.push_str("; rathole client after its server is back (ms):");
            for _ in 0..sizes.reconnects {
                if let Some(d) = rig.rathole_reconnect().await? {
                    line.push_str(&format!(" {:.0}", d.as_secs_f64() * 1e3));
                    rathole_reconnects.push(d);
                }
            }
        }
        report.line(line);
    }
    let request_table = request_path_table(&samples, &paths, &sizes);
    let rathole_bin = rig.rathole_bin().map(Path::to_path_buf);
    drop(rig);

    let scale = if sizes.agents > 0 {
        Some(scale(&sizes, work, &mut report, rathole_bin.as_deref(), &pki).await?)
    } else {
        None
    };

    let mut out = String::new();
    out.push_str(&request_table);
    out.push('\n');
    out.push_str(&reconnect_table(&single_reconnects, &rathole_reconnects));
    if let Some(scale) = scale {
        out.push('\n');
        out.push_str(&scale);
    }
    out.push_str("\nRounds (medians above):\n\n");
    out.push_str(&report.lines.join("\n"));
    out.push('\n');
    println!("\n{out}");
    if let Some(path) = &args.out {
        std::fs::write(path, out)?;
    }
    Ok(())
}

/// Fails early when the descriptor limit cannot hold the run (the script raises it).
fn check_descriptor_limit(sizes: &Sizes) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    // One connection per held watch here; one socket per agent in the hub and the simulator.
    let need = (sizes.watches.max(sizes.agents) + 1024) as u64;
    match soft {
        Some(soft) if soft < need => bail!(
            "the open-files limit is {soft}, this run needs about {need}: raise it (ulimit -n 65536), as hack/bench/tunnel.sh does"
        ),
        _ => Ok(()),
    }
}

/// Every request-path figure of one path in one round. Memory first, each reading on fresh
/// processes (see `Rig::fresh`); then latency, throughput and CPU.
async fn measure_path(
    rig: &mut Rig,
    name: &'static str,
    sizes: &Sizes,
    round: usize,
    samples: &mut Samples,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Held watches, multiplexed (the path's own cost per stream: read once the client
    // connections are up) and one client connection each (everything a kubectl watch costs
    // the path, its connection included).
    let mut held_line = String::new();
    for (mode, per_connection) in [("mux", HELD_STREAMS_PER_CONNECTION), ("conn", 1)] {
        rig.fresh(name).await?;
        let (endpoint, pids) = (rig.endpoint(name).clone(), rig.pids(name));
        // One request first, so that what any first request sets up for good (the agent's
        // pooled connection to the upstream, the hub's caches) is not counted per stream.
        H2Client::connect(&endpoint, 1)
            .await?
            .get_drain("/bench/small")
            .await?;
        tokio::time::sleep(MEMORY_SETTLE).await;
        let measure = || (procs::rss_kib_of(&pids), procs::sockets_of(&pids));
        let mut before = measure();
        let clients = HeldClients::connect(&endpoint, sizes.watches, per_connection).await?;
        if mode == "mux" {
            tokio::time::sleep(MEMORY_SETTLE).await;
            before = measure();
        }
        let held = clients.open_watches(sizes.watches).await?;
        tokio::time::sleep(MEMORY_SETTLE).await;
        let after = measure();
        let w = sizes.watches as f64;
        let kb_per_stream = (after.0 as f64 - before.0 as f64) * 1.024 / w;
        let sockets_per_stream = (after.1 as f64 - before.1 as f64) / w;
        let opens = held.opens_per_second(sizes.watches);
        drop(held);
        samples.add(&format!("{mode} opens/s"), name, opens);
        samples.add(&format!("{mode} KB per stream"), name, kb_per_stream);
        samples.add(
            &format!("{mode} sockets per stream"),
            name,
            sockets_per_stream,
        );
        held_line.push_str(&format!(
            "; {} held watches ({mode}): {opens:.0} opens/s, {kb_per_stream:.1} KB and {sockets_per_stream:.2} sockets each",
            sizes.watches
        ));
    }
    // Let the resets of the held streams go through before latency is measured.
    tokio::time::sleep(MEMORY_SETTLE).await;

    let (endpoint, pids) = (rig.endpoint(name).clone(), rig.pids(name));
    let client = H2Client::connect(&endpoint, 1).await?;
    load::closed_loop(&client, "/bench/small", 8, WARMUP_REQUESTS).await?;
    let c1 = load::closed_loop(&client, "/bench/small", 1, sizes.requests_c1).await?;
    let cpu = procs::cpu_seconds_of(&pids);
    let c64 = load::closed_loop(&client, "/bench/small", CONCURRENCY, sizes.requests_c64).await?;
    let cpu_per_1000 = (procs::cpu_seconds_of(&pids) - cpu) * 1e3 / c64.requests() as f64 * 1000.0;
    samples.add("c1 p50", name, c1.ms(0.5));
    samples.add("c1 p99", name, c1.ms(0.99));
    samples.add("c64 rps", name, c64.rps());
    samples.add("c64 p50", name, c64.ms(0.5));
    samples.add("c64 p99", name, c64.ms(0.99));
    samples.add("cpu ms per 1000", name, cpu_per_1000);

    let cpu = procs::cpu_seconds_of(&pids);
    let mut took = Duration::ZERO;
    for _ in 0..sizes.transfers {
        took += load::transfer(&client, sizes.transfer_bytes).await?;
    }
    let moved = sizes.transfer_bytes as f64 * sizes.transfers as f64;
    let cpu_per_gb = (procs::cpu_seconds_of(&pids) - cpu) / (moved / 1e9);
    let mib_per_s = moved / (1 << 20) as f64 / took.as_secs_f64();
    samples.add("transfer MiB/s", name, mib_per_s);
    samples.add("cpu s per GB", name, cpu_per_gb);

    // A stalled stream: the others' 1-at-a-time latency without and with it, alternated in
    // blocks so that drift in the machine's load falls on both alike.
    let per_block = (sizes.requests_c1 / STALL_BLOCKS).max(1);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..STALL_BLOCKS {
        without.extend(
            load::closed_loop(&client, "/bench/small", 1, per_block)
                .await?
                .latencies,
        );
        let stalled = load::stall(&endpoint, STALL_FILL).await?;
        with.extend(
            load::closed_loop(&client, "/bench/small", 1, per_block)
                .await?
                .latencies,
        );
        drop(stalled);
    }
    without.sort();
    with.sort();
    let (before, during) = (percentile(&without, 0.99), percentile(&with, 0.99));
    let stall_ratio = during.as_secs_f64() / before.as_secs_f64();
    samples.add("stall p99 ratio", name, stall_ratio);

    report.line(format!(
        "  round {round} {name}: c1 p50 {:.3} ms p99 {:.3} ms; c64 {:.0} rps (p99 {:.2} ms), {cpu_per_1000:.1} CPU-ms/1000; {} × {} MiB at {mib_per_s:.0} MiB/s, {cpu_per_gb:.2} CPU-s/GB{held_line}; c1 p99 {:.3} → {:.3} ms with a stalled stream",
        c1.ms(0.5),
        c1.ms(0.99),
        c64.rps(),
        c64.ms(0.99),
        sizes.transfers,
        sizes.transfer_bytes >> 20,
        before.as_secs_f64() * 1e3,
        during.as_secs_f64() * 1e3,
    ));
    Ok(())
}

/// How a figure is judged against its goal (on the tunnel's column).
#[derive(Clone, Copy)]
enum Goal {
    /// tunnel ÷ direct at most this.
    RatioAtMost(f64),
    /// tunnel ÷ direct at least this.
    RatioAtLeast(f64),
    /// The tunnel's own value at most this.
    AtMost(f64),
    /// The tunnel's own value at least this.
    AtLeast(f64),
    None,
}

/// What a row of the request-path table shows.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Measured on every path, compared with direct.
    Compared,
    /// A cost of the processes between client and upstream: none on the direct path.
    Intermediaries,
    /// Already a ratio within each path.
    OwnRatio,
}

struct Row {
    label: String,
    key: &'static str,
    decimals: usize,
    kind: Kind,
    goal: Goal,
}

fn row(
    label: impl Into<String>,
    key: &'static str,
    decimals: usize,
    kind: Kind,
    goal: Goal,
) -> Row {
    Row {
        label: label.into(),
        key,
        decimals,
        kind,
        goal,
    }
}

fn request_path_table(samples: &Samples, paths: &[&str], sizes: &Sizes) -> String {
    let others: Vec<&str> = paths.iter().copied().filter(|p| *p != "direct").collect();
    let mut out = format!(
        "| request path (median of {} rounds) | {} | {} | goal (tunnel) |\n|---|{}{}---|\n",
        sizes.rounds,
        paths.join(" | "),
        others
            .iter()
            .map(|p| format!("{p} ÷ direct"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(paths.len()),
        "---|".repeat(others.len()),
    );
    let w = sizes.watches;
    let c = CONCURRENCY;
    let rows = [
        row(
            "small GET, 1 at a time: p50 latency (ms)",
            "c1 p50",
            3,
            Kind::Compared,
            Goal::RatioAtMost(1.25),
        ),
        row(
            "small GET, 1 at a time: p99 latency (ms)",
            "c1 p99",
            3,
            Kind::Compared,
            Goal::RatioAtMost(1.4),
        ),
        row(
            format!("small GETs, {c} concurrent streams: requests/s"),
            "c64 rps",
            0,
            Kind::Compared,
            Goal::RatioAtLeast(0.8),
        ),
        row(
            format!("small GETs, {c} concurrent streams: p99 latency (ms)"),
            "c64 p99",
            2,
            Kind::Compared,
            Goal::None,
        ),
        row(
            format!("{} MiB transfer: MiB/s", sizes.transfer_bytes >> 20),
            "transfer MiB/s",
            0,
            Kind::Compared,
            Goal::RatioAtLeast(0.7),
        ),
        row(
            "CPU-s per GB transferred (hub + agent)",
            "cpu s per GB",
            2,
            Kind::Intermediaries,
            Goal::AtMost(1.5),
        ),
        row(
            format!("CPU-ms per 1,000 small GETs at {c} concurrent (hub + agent)"),
            "cpu ms per 1000",
            1,
            Kind::Intermediaries,
            Goal::AtMost(12.0),
        ),
        row(
            format!(
                "stream opens/s ({w} watches, {HELD_STREAMS_PER_CONNECTION} per client connection)"
            ),
            "mux opens/s",
            0,
            Kind::Compared,
            Goal::AtLeast(5000.0),
        ),
        row(
            format!("memory per held watch stream, KB (hub + agent RSS delta / {w})"),
            "mux KB per stream",
            1,
            Kind::Intermediaries,
            Goal::AtMost(8.0),
        ),
        row(
            "sockets per held watch stream (hub + agent)",
            "mux sockets per stream",
            2,
            Kind::Intermediaries,
            Goal::AtMost(0.0),
        ),
        row(
            format!("stream opens/s ({w} watches, one client connection each)"),
            "conn opens/s",
            0,
            Kind::Compared,
            Goal::None,
        ),
        row(
            "memory per watch on its own client connection, KB",
            "conn KB per stream",
            1,
            Kind::Intermediaries,
            Goal::None,
        ),
        row(
            "sockets per watch on its own client connection",
            "conn sockets per stream",
            2,
            Kind::Intermediaries,
            Goal::None,
        ),
        row(
            "others' c1 p99 with one stalled stream ÷ without",
            "stall p99 ratio",
            2,
            Kind::OwnRatio,
            Goal::AtMost(1.10),
        ),
    ];
    for r in rows {
        let direct = samples.median(r.key, "direct");
        let cell = |v: Option<f64>| match v {
            Some(v) => format!("{v:.*}", r.decimals),
            None => "—".into(),
        };
        let mut line = format!("| {} |", r.label);
        for p in paths {
            let v = if *p == "direct" && r.kind == Kind::Intermediaries {
                None
            } else {
                samples.median(r.key, p)
            };
            line.push_str(&format!(" {} |", cell(v)));
        }
        for p in &others {
            let ratio = match (samples.median(r.key, p), direct) {
                (Some(v), Some(d)) if r.kind == Kind::Compared && d > 0.0 => {
                    format!("{:.2}×", v / d)
                }
                _ => "—".into(),
            };
            line.push_str(&format!(" {ratio} |"));
        }
        let tunnel = samples.median(r.key, "tunnel");
        let verdict = match (r.goal, tunnel, direct) {
            (Goal::RatioAtMost(g), Some(t), Some(d)) => judge(t / d <= g, &format!("≤ {g:.2}×")),
            (Goal::RatioAtLeast(g), Some(t), Some(d)) => judge(t / d >= g, &format!("≥ {g:.2}×")),
            (Goal::AtMost(g), Some(t), _) => judge(t <= g + 1e-9, &format!("≤ {}", trim(g))),
            (Goal::AtLeast(g), Some(t), _) => judge(t >= g, &format!("≥ {}", trim(g))),
            _ => String::new(),
        };
        line.push_str(&format!(" {verdict} |\n"));
        out.push_str(&line);
    }
    out
}

fn judge(met: bool, goal: &str) -> String {
    format!("{goal} {}", if met { "(met)" } else { "(**missed**)" })
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn reconnect_table(single: &[Reconnect], rathole: &[Duration]) -> String {
    let sorted = |mut v: Vec<Duration>| {
        v.sort();
        v
    };
    let downtimes = sorted(single.iter().map(|r| r.down).collect());
    let single = sorted(single.iter().map(|r| r.back_after).collect());
    let rathole = sorted(rathole.to_vec());
    let stats = |v: &[Duration]| {
        if v.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{} / {} / {}",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(*v.last().expect("not empty"))
            )
        }
    };
    let verdict = if single.is_empty() {
        String::new()
    } else {
        judge(
            percentile(&single, 0.99) <= Duration::from_secs(1),
            "p99 ≤ 1 s",
        )
    };
    format!(
        "| reconnect | edgefleet | rathole | goal |\n|---|---|---|---|\n\
         | one agent back after the hub's tunnel port is back: p50 / p99 / max ({} restarts; hub down {} median, SIGKILL to tunnel port bound) | {} | {} | {} |\n",
        single.len(),
        ms(percentile(&downtimes, 0.5)),
        stats(&single),
        stats(&rathole),
        verdict,
    )
}

/// The scale figures: N simulated agents on a real dev hub, restarts, and rathole's per-agent
/// cost as the baseline.
async fn scale(
    sizes: &Sizes,
    work: &Path,
    report: &mut Report,
    rathole: Option<&Path>,
    pki: &BenchPki,
) -> anyhow::Result<String> {
    let n = sizes.agents;
    report.line(format!(
        "scale: {n} simulated agents (load average {})",
        procs::load_average()
    ));
    let (mut hub, _) = DevHub::start(
        &work.join("scale-data"),
        procs::free_port()?,
        procs::free_port()?,
        &work.join("scale-hub.log"),
    )
    .await?;
    let bootstrap = work.join("fleet");
    let client = hub.client(4).await?;
    devhub::create_environment(&client, FLEET).await?;
    let created = Instant::now();
    let names: Vec<String> = (1..=n).map(|i| format!("site-{i:05}")).collect();
    futures::stream::iter(names.iter())
        .map(|name| {
            let (client, dir) = (client.clone(), bootstrap.join(format!("{FLEET}.{name}")));
            async move {
                let token = devhub::create_cluster_with_token(&client, FLEET, name).await?;
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("token"), format!("{token}\n"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    report.line(format!(
        "  {n} Clusters created with bootstrap tokens through the API in {:.1} s",
        created.elapsed().as_secs_f64()
    ));
    let hub_pid = hub.pid().context("hub pid")?;
    procs::settle(
        hub_pid,
        IDLE_CORES,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let (rss_before, sockets_before) = (procs::rss_kib(hub_pid), procs::sockets(hub_pid));

    let mut cmd = Command::new(binary("edgefleet-agent"));
    cmd.arg("simulate")
        .arg(format!("--hub-address={}", hub.tunnel))
        .arg("--hub-server-name=127.0.0.1")
        .arg("--hub-ca-file")
        .arg(hub.ca_file())
        .arg("--bootstrap-dir")
        .arg(&bootstrap)
        .arg(format!("--count={n}"))
        .env("RUST_LOG", "warn");
    let (simulator, _) = Proc::spawn(
        "edgefleet-agent simulate",
        cmd,
        &work.join("simulate.log"),
        |_| false,
    )?;
    let started = Instant::now();
    let first = all_sessions(
        &mut hub,
        n,
        started + RECONNECT_BUDGET + Duration::from_secs(n as u64 / 100),
    )
    .await;
    if first.len() < n {
        bail!(
            "only {} of {n} simulated agents connected:\n{}",
            first.len(),
            hub.log_tail()
        );
    }
    let enrolled_in = first.values().max().copied().unwrap_or(started) - started;
    let settled = procs::settle(
        hub_pid,
        IDLE_CORES,
        Duration::from_secs(2),
        Duration::from_secs(120),
    )
    .await;
    let (rss_after, sockets_after) = (procs::rss_kib(hub_pid), procs::sockets(hub_pid));
    let simulator_rss = procs::rss_kib(simulator.pid());
    let kib_per_agent = (rss_after as f64 - rss_before as f64) / n as f64;
    let sockets_per_agent = (sockets_after as f64 - sockets_before as f64) / n as f64;
    report.line(format!(
        "  {n} agents enrolled and connected in {:.1} s; hub idle again {:.0} s later; hub RSS {} → {} MiB ({kib_per_agent:.1} KiB per agent), sockets {sockets_before} → {sockets_after}; simulator RSS {} MiB",
        enrolled_in.as_secs_f64(),
        settled.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        simulator_rss / 1024
    ));

    let probe_path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{FLEET}/clusters/site-00001");
    let idle = {
        let stop = Arc::new(AtomicBool::new(false));
        let probe = {
            let (kubeconfig, stop, path) = (hub.kubeconfig(), stop.clone(), probe_path.clone());
            tokio::spawn(async move { probe_until(&kubeconfig, &path, &stop).await })
        };
        tokio::time::sleep(IDLE_PROBE).await;
        stop.store(true, Ordering::Relaxed);
        probe.await??.0
    };
    let mut restarts: Vec<Restart> = Vec::new();
    for round in 0..sizes.rounds {
        hub.kill();
        let killed = Instant::now();
        let started = hub.start_again().await?;
        let back = started.tunnel;
        let stop = Arc::new(AtomicBool::new(false));
        let probe = {
            let (kubeconfig, stop, path) = (hub.kubeconfig(), stop.clone(), probe_path.clone());
            tokio::spawn(async move { probe_until(&kubeconfig, &path, &stop).await })
        };
        let sessions = all_sessions(&mut hub, n, back + RECONNECT_BUDGET).await;
        stop.store(true, Ordering::Relaxed);
        let (latencies, errors) = probe.await??;
        let mut times: Vec<Duration> = sessions
            .values()
            .map(|at| at.saturating_duration_since(back))
            .collect();
        times.sort();
        let restart = Restart {
            down: back - killed,
            back: times.len(),
            p50: percentile(&times, 0.5),
            p99_of_all: nth_of_all(&times, n, 0.99),
            all: (times.len() == n).then(|| *times.last().expect("n > 0")),
            within_goal: times.iter().filter(|t| **t <= RECONNECT_GOAL).count() as f64 / n as f64,
            api_p50: percentile(&latencies, 0.5),
            api_p99: percentile(&latencies, 0.99),
            api_errors: errors,
            api_requests: latencies.len(),
        };
        report.line(format!(
            "  restart {round}: hub down {} (kill to tunnel port bound); {} of {n} back, p50 {}, 99% {}, all {}; {:.1}% within {} s; hub API GET p50 {} / p99 {} meanwhile ({} requests, {} failed)",
            ms(restart.down),
            restart.back,
            ms(restart.p50),
            restart.p99_of_all.map_or("never".into(), ms),
            restart.all.map_or("never".into(), ms),
            restart.within_goal * 100.0,
            RECONNECT_GOAL.as_secs(),
            ms(restart.api_p50),
            ms(restart.api_p99),
            restart.api_requests,
            restart.api_errors,
        ));
        restarts.push(restart);
        if round + 1 < sizes.rounds {
            // Every agent's session must count as healthy before the next restart, as in a
            // fleet whose hub restarts rarely.
            let last = sessions
                .values()
                .max()
                .copied()
                .unwrap_or_else(Instant::now);
            tokio::time::sleep_until(last + HEALTHY_SESSION).await;
        }
    }
    drop(simulator);
    hub.kill();

    let alone = tunnel_alone(pki, work, n).await?;
    report.line(format!(
        "  tunnel alone (bench hub: TunnelServer only): {n} agents connected in {:.1} s; its RSS {:.1} KiB and {:.2} sockets per agent; simulator RSS {:.1} KiB per agent",
        alone.connected_in.as_secs_f64(),
        alone.hub_kib,
        alone.hub_sockets,
        alone.simulator_kib
    ));

    let rathole_cost = match rathole {
        Some(bin) if sizes.rathole_agents > 0 => {
            Some(rathole_per_agent(bin, pki, work, sizes.rathole_agents).await?)
        }
        _ => None,
    };
    if let Some(c) = &rathole_cost {
        report.line(format!(
            "  rathole: {} clients: server RSS {:.1} KiB and {:.1} sockets per client; each client process {:.0} KiB RSS",
            c.clients, c.server_kib, c.server_sockets, c.client_kib
        ));
    }

    let median_of = |f: &dyn Fn(&Restart) -> Duration| {
        let mut v: Vec<Duration> = restarts.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let p99s: Vec<Option<Duration>> = restarts.iter().map(|r| r.p99_of_all).collect();
    let mut p99_sorted: Vec<Duration> = p99s.iter().map(|d| d.unwrap_or(Duration::MAX)).collect();
    p99_sorted.sort();
    let p99 = p99_sorted[p99_sorted.len() / 2];
    let p99_text = if p99 == Duration::MAX {
        "never".to_string()
    } else {
        ms(p99)
    };
    let mut shares: Vec<f64> = restarts.iter().map(|r| r.within_goal).collect();
    shares.sort_by(f64::total_cmp);
    let share = shares[shares.len() / 2];
    let (rathole_kib, rathole_sockets) = match &rathole_cost {
        Some(c) => (
            format!(
                "rathole server: {:.1} KiB per client ({} clients)",
                c.server_kib, c.clients
            ),
            format!("rathole server: {:.1}", c.server_sockets),
        ),
        None => ("—".into(), "—".into()),
    };
    Ok(format!(
        "| scale ({n} simulated agents, one connection each; median of {} restarts) | edgefleet | baseline | goal |\n|---|---|---|---|\n\
         | hub RSS per idle agent (RSS delta / agents: {} → {} MiB) | {kib_per_agent:.1} KiB | {rathole_kib} | ≤ 16 KiB {} |\n\
         | the tunnel's own share: bench hub (TunnelServer only) RSS per idle agent | {:.1} KiB | | |\n\
         | hub sockets per agent | {sockets_per_agent:.2} | {rathole_sockets} | 1 |\n\
         | simulator RSS per agent (agent side, in one process) | {:.1} KiB | {} | |\n\
         | first enrollment of all agents (tokens and CSRs; agents start 1 ms apart, the hub admits ≤ 500/s) | {:.1} s | | |\n\
         | hub restart: down (SIGKILL to its tunnel port bound again) | {} | | |\n\
         | agents back after the hub's tunnel port is back: p50 / 99% | {} / {p99_text} | | 99% ≤ {} s {} |\n\
         | share of agents back within {} s | {:.1}% | | ≥ 99% |\n\
         | hub API GET latency p50 / p99: idle with {n} agents / during the reconnect | {} / {} — {} / {} | | |\n",
        restarts.len(),
        rss_before / 1024,
        rss_after / 1024,
        if kib_per_agent <= 16.0 { "(met)" } else { "(**missed**)" },
        alone.hub_kib,
        simulator_rss as f64 / n as f64,
        rathole_cost.as_ref().map_or("—".into(), |c| format!("rathole client: {:.0} KiB per process", c.client_kib)),
        enrolled_in.as_secs_f64(),
        ms(median_of(&|r| r.down)),
        ms(median_of(&|r| r.p50)),
        RECONNECT_GOAL.as_secs(),
        if p99 <= RECONNECT_GOAL { "(met)" } else { "(**missed**)" },
        RECONNECT_GOAL.as_secs(),
        share * 100.0,
        ms(percentile(&idle, 0.5)),
        ms(percentile(&idle, 0.99)),
        ms(median_of(&|r| r.api_p50)),
        ms(median_of(&|r| r.api_p99)),
    ))
}

/// One hub restart under N agents.
struct Restart {
    down: Duration,
    back: usize,
    p50: Duration,
    /// When 99% of all N agents were back (None if they never were).
    p99_of_all: Option<Duration>,
    all: Option<Duration>,
    within_goal: f64,
    api_p50: Duration,
    api_p99: Duration,
    api_errors: usize,
    api_requests: usize,
}

/// The time by which the `p` share of all `n` agents was back, from the sorted times of those
/// that came back.
fn nth_of_all(sorted: &[Duration], n: usize, p: f64) -> Option<Duration> {
    let needed = ((n as f64) * p).ceil() as usize;
    sorted.get(needed.max(1) - 1).copied()
}

/// Session registrations until `n` distinct agents are in or `deadline`: identity → first time.
async fn all_sessions(hub: &mut DevHub, n: usize, deadline: Instant) -> HashMap<String, Instant> {
    let mut first: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut seen: HashSet<String> = HashSet::with_capacity(n);
    hub.sessions_until(deadline, |s| {
        if seen.insert(s.identity.clone()) {
            first.insert(s.identity.clone(), s.at);
        }
        seen.len() >= n
    })
    .await;
    first
}

/// Small GETs, one every [`PROBE_INTERVAL`], until `stop` (a user of the API, not a load
/// generator); reconnects after failures. Returns the sorted latencies of the successful ones
/// and the number that failed.
async fn probe_until(
    kubeconfig: &Path,
    path: &str,
    stop: &AtomicBool,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut client = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = edgefleet_e2e::client::HubClient::connect(kubeconfig, 1)
                .await
                .ok();
            if client.is_none() {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = client.as_ref().expect("connected above");
        let t0 = Instant::now();
        match c.call(Method::GET, path, None, Bytes::new()).await {
            Ok((StatusCode::OK, _)) => latencies.push(t0.elapsed()),
            _ => {
                errors += 1;
                client = None;
            }
        }
        tokio::time::sleep_until(t0 + PROBE_INTERVAL).await;
    }
    latencies.sort();
    Ok((latencies, errors))
}

/// The tunnel's own cost per idle agent.
struct TunnelAlone {
    connected_in: Duration,
    hub_kib: f64,
    hub_sockets: f64,
    simulator_kib: f64,
}

/// N simulated agents, enrolled beforehand (client certificates from the bench CA), on the
/// bench hub: `TunnelServer` and nothing else (no status controller, no facts streams, no
/// store). Its RSS and sockets with them connected minus without.
async fn tunnel_alone(pki: &BenchPki, work: &Path, n: usize) -> anyhow::Result<TunnelAlone> {
    let dir = work.join("fleet-tunnel");
    let ca = pki.ca()?;
    let enrolling = dir.clone();
    tokio::task::spawn_blocking(move || {
        (1..=n).try_for_each(|i| {
            BenchPki::enroll(
                &ca,
                &format!("cluster:{FLEET}/site-{i:05}"),
                &enrolling.join(format!("{FLEET}.site-{i:05}")),
            )
        })
    })
    .await??;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("static address");
    let hub = BenchHub::start(pki, any, any, &work.join("bench-hub-scale.log")).await?;
    let pid = hub.proc.pid();
    tokio::time::sleep(MEMORY_SETTLE).await;
    let (rss, sockets) = (procs::rss_kib(pid), procs::sockets(pid));
    let mut cmd = Command::new(binary("edgefleet-agent"));
    cmd.arg("simulate")
        .arg(format!("--hub-address={}", hub.tunnel))
        .arg(format!("--hub-server-name={HUB_NAME}"))
        .arg("--hub-ca-file")
        .arg(pki.path("ca.crt"))
        .arg("--bootstrap-dir")
        .arg(&dir)
        .arg(format!("--count={n}"))
        .env("RUST_LOG", "warn");
    let (simulator, _) = Proc::spawn(
        "edgefleet-agent simulate",
        cmd,
        &work.join("simulate-tunnel.log"),
        |_| false,
    )?;
    let started = Instant::now();
    let mut lines = hub.lines;
    for i in 0..n {
        wait_line(
            &mut lines,
            RECONNECT_BUDGET,
            &format!("agent {} of {n} on the bench hub", i + 1),
            |l| l.starts_with("session connected "),
        )
        .await?;
    }
    let connected_in = started.elapsed();
    procs::settle(
        pid,
        IDLE_CORES,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let per_agent = |after: f64, before: f64| (after - before) / n as f64;
    Ok(TunnelAlone {
        connected_in,
        hub_kib: per_agent(procs::rss_kib(pid) as f64, rss as f64),
        hub_sockets: per_agent(procs::sockets(pid) as f64, sockets as f64),
        simulator_kib: procs::rss_kib(simulator.pid()) as f64 / n as f64,
    })
}

/// rathole's cost per connected client at its server.
struct RatholeCost {
    clients: usize,
    server_kib: f64,
    server_sockets: f64,
    client_kib: f64,
}

/// K rathole clients (one process each, as K edge sites would run) with one service each,
/// against one server; the server's RSS and sockets with them connected minus without.
async fn rathole_per_agent(
    bin: &Path,
    pki: &BenchPki,
    work: &Path,
    k: usize,
) -> anyhow::Result<RatholeCost> {
    // Clients forward to nothing here: rathole dials its local service only per visitor.
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("static address");
    let dir = work.join("rathole-agents");
    std::fs::create_dir_all(&dir)?;
    let pkcs12 = rathole::write_pkcs12(pki)?;
    let control = procs::free_port()?;
    let services: Vec<rathole::Service> = (0..k)
        .map(|i| rathole::Service {
            name: format!("site{i}"),
            token: format!("token-{i}"),
            addr: "127.0.0.1:0".parse().expect("static address"),
        })
        .collect();
    let server_config = dir.join("server.toml");
    std::fs::write(
        &server_config,
        rathole::server_config(&pkcs12, control, &services),
    )?;
    let (server, mut lines) = Proc::spawn(
        "rathole server",
        rathole::command(bin, "server", &server_config),
        &dir.join("server.log"),
        rathole_server_lines,
    )?;
    wait_line(&mut lines, READY_TIMEOUT, "rathole's server", |l| {
        l.contains("Listening at")
    })
    .await?;
    tokio::time::sleep(MEMORY_SETTLE).await;
    let (rss, sockets) = (procs::rss_kib(server.pid()), procs::sockets(server.pid()));
    let mut clients = Vec::with_capacity(k);
    for (i, service) in services.iter().enumerate() {
        let config = dir.join(format!("client-{i}.toml"));
        let service = rathole::Service {
            addr: upstream,
            ..service.clone()
        };
        std::fs::write(&config, rathole::client_config(pki, control, &[service]))?;
        let (client, _) = Proc::spawn(
            "rathole client",
            rathole::command(bin, "client", &config),
            &dir.join(format!("client-{i}.log")),
            |_| false,
        )?;
        clients.push(client);
    }
    for _ in 0..k {
        wait_line(&mut lines, READY_TIMEOUT, "rathole control channels", |l| {
            l.contains("Control channel established")
        })
        .await?;
    }
    // The server fills each service's pool of data channels after the control channel.
    procs::settle(
        server.pid(),
        IDLE_CORES,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let server_kib = (procs::rss_kib(server.pid()) as f64 - rss as f64) / k as f64;
    let server_sockets = (procs::sockets(server.pid()) as f64 - sockets as f64) / k as f64;
    let client_kib = clients
        .iter()
        .map(|c| procs::rss_kib(c.pid()) as f64)
        .sum::<f64>()
        / k as f64;
    Ok(RatholeCost {
        clients: k,
        server_kib,
        server_sockets,
        client_kib,
    })
}
