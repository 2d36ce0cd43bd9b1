//! The request-path rig: the upstream and the four paths to it, on fixed loopback ports, each
//! path's processes restartable.
//!
//! Memory is read as the RSS growth of fresh processes: an allocator keeps what a process
//! freed and hands it out again, so a second batch of streams in the same process costs
//! (almost) no new RSS and would read as free. [`Rig::fresh`] restarts a path's processes
//! (agents reconnect to the same ports) before each memory measurement.
//!
//! | path      | processes between client and upstream                     |
//! |-----------|-----------------------------------------------------------|
//! | `direct`  | none                                                      |
//! | `tunnel`  | bench hub (`tunnel-bench serve-hub`), `edgefleet-agent run` |
//! | `hub`     | `edgefleet-apiserver dev`, `edgefleet-agent run`          |
//! | `rathole` | rathole server, rathole client                            |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::Instant;

use super::client::Endpoint;
use super::devhub::{self, DevHub};
use super::pki::{self, BenchPki, HUB_NAME, UPSTREAM_NAME};
use super::rathole;
use crate::hub::binary;
use crate::procs::{self, wait_line, Lines, Proc};

/// How long a component may take to come up or an agent to (re)connect.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The bench hub process (`tunnel-bench serve-hub`) on fixed ports.
pub struct BenchHub {
    pub proc: Proc,
    /// `listening …` and `session connected|disconnected <identity>` lines.
    pub lines: Lines,
    pub tunnel: SocketAddr,
    pub front: SocketAddr,
}

impl BenchHub {
    /// Starts it on `tunnel` and `front` (port 0: any) and waits until it listens.
    pub async fn start(
        pki: &BenchPki,
        tunnel: SocketAddr,
        front: SocketAddr,
        log: &Path,
    ) -> anyhow::Result<BenchHub> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve-hub")
            .arg("--pki")
            .arg(&pki.dir)
            .arg(format!("--tunnel-listen={tunnel}"))
            .arg(format!("--front-listen={front}"));
        let (proc, mut lines) = Proc::spawn("bench hub", cmd, log, |l| {
            l.starts_with("listening ") || l.starts_with("session ")
        })?;
        let line = wait_line(&mut lines, READY_TIMEOUT, "the bench hub", |l| {
            l.starts_with("listening ")
        })
        .await?;
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let value = line
                .text
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .with_context(|| format!("{name} in {:?}", line.text))?;
            Ok(value.parse()?)
        };
        Ok(BenchHub {
            tunnel: field("tunnel=")?,
            front: field("front=")?,
            proc,
            lines,
        })
    }

    /// Waits for `identity`'s next session.
    pub async fn wait_session(&mut self, identity: &str) -> anyhow::Result<()> {
        let expected = format!("session connected {identity}");
        wait_line(&mut self.lines, READY_TIMEOUT, &expected, |l| l == expected)
            .await
            .map(|_| ())
    }
}

/// `edgefleet-agent run` against a hub, forwarding to the upstream of `kubeconfig`.
pub struct AgentArgs {
    pub hub_address: SocketAddr,
    pub hub_server_name: String,
    pub hub_ca: PathBuf,
    pub identity_dir: PathBuf,
    pub token: Option<PathBuf>,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
}

impl AgentArgs {
    pub fn spawn(&self) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(binary("edgefleet-agent"));
        cmd.arg("run")
            .arg(format!("--hub-address={}", self.hub_address))
            .arg(format!("--hub-server-name={}", self.hub_server_name))
            .arg("--hub-ca-file")
            .arg(&self.hub_ca)
            .arg(format!("--cluster={}/{}", pki::ENVIRONMENT, pki::CLUSTER))
            .arg("--identity-dir")
            .arg(&self.identity_dir)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("RUST_LOG", "info");
        if let Some(token) = &self.token {
            cmd.arg("--bootstrap-token-file").arg(token);
        }
        Ok(Proc::spawn("edgefleet-agent run", cmd, &self.log, |_| false)?.0)
    }
}

/// rathole's server and client carrying one service to the upstream.
pub struct Rathole {
    pub bin: PathBuf,
    server_config: PathBuf,
    client_config: PathBuf,
    dir: PathBuf,
    control: SocketAddr,
    pub visitor: SocketAddr,
    pub server: Proc,
    pub client: Proc,
}

/// The rathole server's lines the driver watches.
pub fn rathole_server_lines(l: &str) -> bool {
    l.contains("Listening at") || l.contains("Control channel established")
}

impl Rathole {
    async fn start(
        bin: &Path,
        pki: &BenchPki,
        work: &Path,
        upstream: SocketAddr,
    ) -> anyhow::Result<Rathole> {
        let dir = work.join("rathole");
        std::fs::create_dir_all(&dir)?;
        let pkcs12 = rathole::write_pkcs12(pki)?;
        let (control, visitor) = (procs::free_port()?, procs::free_port()?);
        let service = |addr| rathole::Service {
            name: "upstream".into(),
            token: "bench-token".into(),
            addr,
        };
        let server_config = dir.join("server.toml");
        std::fs::write(
            &server_config,
            rathole::server_config(&pkcs12, control, &[service(visitor)]),
        )?;
        let client_config = dir.join("client.toml");
        std::fs::write(
            &client_config,
            rathole::client_config(pki, control, &[service(upstream)]),
        )?;
        let (server, mut lines) = Self::spawn_server(bin, &server_config, &dir).await?;
        let client = Self::spawn_client(bin, &client_config, &dir)?;
        wait_visitor_port(&mut lines, visitor).await?;
        Ok(Rathole {
            bin: bin.to_path_buf(),
            server_config,
            client_config,
            dir,
            control,
            visitor,
            server,
            client,
        })
    }

    /// Starts the server; returns once it listens for clients, with its watched lines.
    async fn spawn_server(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<(Proc, Lines)> {
        let (server, mut lines) = Proc::spawn(
            "rathole server",
            rathole::command(bin, "server", config),
            &dir.join("server.log"),
            rathole_server_lines,
        )?;
        wait_line(&mut lines, READY_TIMEOUT, "rathole's server", |l| {
            l.contains("Listening at")
        })
        .await?;
        Ok((server, lines))
    }

    fn spawn_client(bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<Proc> {
        Ok(Proc::spawn(
            "rathole client",
            rathole::command(bin, "client", config),
            &dir.join("client.log"),
            |_| false,
        )?
        .0)
    }

    /// Kills the server and starts it again; returns the time from its listening again (the
    /// `Listening at <control address>` line) to the client's control channel being back.
    pub async fn restart_server(&mut self) -> anyhow::Result<Duration> {
        self.server.kill();
        let (server, mut lines) = Proc::spawn(
            "rathole server",
            rathole::command(&self.bin, "server", &self.server_config),
            &self.dir.join("server.log"),
            rathole_server_lines,
        )?;
        self.server = server;
        let control = self.control.to_string();
        let back = wait_line(&mut lines, READY_TIMEOUT, "rathole's server", |l| {
            l.contains("Listening at") && l.contains(&control)
        })
        .await?;
        let connected = wait_line(
            &mut lines,
            READY_TIMEOUT,
            "rathole's control channel",
            |l| l.contains("Control channel established"),
        )
        .await?;
        wait_visitor_port(&mut lines, self.visitor).await?;
        Ok(connected.at.saturating_duration_since(back.at))
    }

    /// Fresh server and client.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.client.kill();
        self.server.kill();
        let (server, mut lines) =
            Self::spawn_server(&self.bin, &self.server_config, &self.dir).await?;
        self.server = server;
        self.client = Self::spawn_client(&self.bin, &self.client_config, &self.dir)?;
        wait_visitor_port(&mut lines, self.visitor).await
    }
}

/// Waits until the server listens on the service's visitor port: it binds it only once the
/// client's control channel is up, a moment after logging that.
async fn wait_visitor_port(lines: &mut Lines, visitor: SocketAddr) -> anyhow::Result<()> {
    let listening = format!("Listening at {visitor}");
    wait_line(lines, READY_TIMEOUT, "rathole's service port", |l| {
        l.contains(&listening)
    })
    .await
    .map(|_| ())
}

/// One single-agent reconnect of the real hub.
#[derive(Clone, Copy, Debug)]
pub struct Reconnect {
    /// SIGKILL to the tunnel port bound again.
    pub down: Duration,
    /// The tunnel port bound again to the agent's session.
    pub back_after: Duration,
}

/// The upstream and the processes of every path.
pub struct Rig {
    pki: BenchPki,
    work: PathBuf,
    _upstream: Proc,
    direct: Endpoint,
    bench_hub: BenchHub,
    tunnel_agent_args: AgentArgs,
    tunnel_agent: Proc,
    tunnel: Endpoint,
    dev: DevHub,
    dev_agent_args: AgentArgs,
    dev_agent: Proc,
    hub: Endpoint,
    rathole: Option<(Rathole, Endpoint)>,
}

impl Rig {
    /// Starts everything (rathole only with its binary) and checks every path answers.
    pub async fn start(
        pki: &BenchPki,
        work: &Path,
        rathole_bin: Option<&Path>,
    ) -> anyhow::Result<Rig> {
        let upstream = {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg("serve-upstream").arg("--pki").arg(&pki.dir);
            let (proc, mut lines) =
                Proc::spawn("upstream", cmd, &work.join("upstream.log"), |l| {
                    l.starts_with("listening on ")
                })?;
            let line = wait_line(&mut lines, READY_TIMEOUT, "the upstream", |_| true).await?;
            let addr: SocketAddr = line.text["listening on ".len()..].parse()?;
            (proc, addr)
        };
        let kubeconfig = pki.write_upstream_kubeconfig(&format!("https://{}", upstream.1))?;
        let roots = pki.roots()?;

        let mut bench_hub = BenchHub::start(
            pki,
            procs::free_port()?,
            procs::free_port()?,
            &work.join("bench-hub.log"),
        )
        .await?;
        let tunnel_agent_args = AgentArgs {
            hub_address: bench_hub.tunnel,
            hub_server_name: HUB_NAME.into(),
            hub_ca: pki.path("ca.crt"),
            identity_dir: pki.agent_identity_dir(),
            token: None,
            kubeconfig: kubeconfig.clone(),
            log: work.join("agent-bench-hub.log"),
        };
        let tunnel_agent = tunnel_agent_args.spawn()?;
        bench_hub
            .wait_session(&pki::identity())
            .await
            .with_context(|| tunnel_agent.log_tail(20))?;

        let (mut dev, _) = DevHub::start(
            &work.join("hub-data"),
            procs::free_port()?,
            procs::free_port()?,
            &work.join("hub.log"),
        )
        .await?;
        let dev_agent_dir = work.join("agent-dev-hub");
        std::fs::create_dir_all(&dev_agent_dir)?;
        let token_file = dev_agent_dir.join("token");
        {
            let client = dev.client(1).await?;
            devhub::create_environment(&client, pki::ENVIRONMENT).await?;
            let token =
                devhub::create_cluster_with_token(&client, pki::ENVIRONMENT, pki::CLUSTER).await?;
            std::fs::write(&token_file, format!("{token}\n"))?;
        }
        let dev_agent_args = AgentArgs {
            hub_address: dev.tunnel,
            hub_server_name: "127.0.0.1".into(),
            hub_ca: dev.ca_file(),
            identity_dir: dev_agent_dir,
            token: Some(token_file),
            kubeconfig,
            log: work.join("agent-dev-hub.log"),
        };
        let dev_agent = dev_agent_args.spawn()?;
        wait_dev_session(&mut dev, &pki::identity()).await?;
        let hub = dev_hub_endpoint(&dev)?;

        let rathole = match rathole_bin {
            Some(bin) => {
                let r = Rathole::start(bin, pki, work, upstream.1).await?;
                let endpoint = Endpoint::new(r.visitor, UPSTREAM_NAME, roots.clone(), None, "")?;
                Some((r, endpoint))
            }
            None => None,
        };
        let rig = Rig {
            pki: pki.clone(),
            work: work.to_path_buf(),
            direct: Endpoint::new(upstream.1, UPSTREAM_NAME, roots.clone(), None, "")?,
            tunnel: Endpoint::new(bench_hub.front, HUB_NAME, roots, None, "")?,
            _upstream: upstream.0,
            bench_hub,
            tunnel_agent_args,
            tunnel_agent,
            dev,
            dev_agent_args,
            dev_agent,
            hub,
            rathole,
        };
        for path in rig.paths() {
            let client = super::client::H2Client::connect(rig.endpoint(path), 1).await?;
            let (status, _) = client.get_drain("/bench/small").await?;
            anyhow::ensure!(
                status == http::StatusCode::OK,
                "{path}: GET /bench/small answered {status}"
            );
        }
        Ok(rig)
    }

    /// The paths, baseline first.
    pub fn paths(&self) -> Vec<&'static str> {
        let mut paths = vec!["direct", "tunnel", "hub"];
        if self.rathole.is_some() {
            paths.push("rathole");
        }
        paths
    }

    pub fn endpoint(&self, path: &str) -> &Endpoint {
        match path {
            "tunnel" => &self.tunnel,
            "hub" => &self.hub,
            "rathole" => {
                &self
                    .rathole
                    .as_ref()
                    .expect("rathole path without rathole")
                    .1
            }
            _ => &self.direct,
        }
    }

    /// The processes between client and upstream on `path`.
    pub fn pids(&self, path: &str) -> Vec<u32> {
        match path {
            "tunnel" => vec![self.bench_hub.proc.pid(), self.tunnel_agent.pid()],
            "hub" => self
                .dev
                .pid()
                .into_iter()
                .chain([self.dev_agent.pid()])
                .collect(),
            "rathole" => self
                .rathole
                .as_ref()
                .map(|(r, _)| vec![r.server.pid(), r.client.pid()])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Restarts `path`'s processes (see the module docs) and waits until it works again.
    pub async fn fresh(&mut self, path: &str) -> anyhow::Result<()> {
        match path {
            "tunnel" => {
                self.tunnel_agent.kill();
                self.bench_hub.proc.kill();
                self.bench_hub = BenchHub::start(
                    &self.pki,
                    self.bench_hub.tunnel,
                    self.bench_hub.front,
                    &self.work.join("bench-hub.log"),
                )
                .await?;
                self.tunnel_agent = self.tunnel_agent_args.spawn()?;
                self.bench_hub.wait_session(&pki::identity()).await?;
            }
            "hub" => {
                self.dev_agent.kill();
                self.dev.kill();
                self.dev.start_again().await?;
                self.dev_agent = self.dev_agent_args.spawn()?;
                wait_dev_session(&mut self.dev, &pki::identity()).await?;
            }
            "rathole" => {
                if let Some((r, _)) = self.rathole.as_mut() {
                    r.restart().await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Kills the real hub and starts it again; the agent reconnects on its own. Afterwards the
    /// agent is restarted too, so the next sample starts from an agent whose backoff is reset
    /// (as a long-lived agent's is after a session of 30 s or more).
    pub async fn hub_reconnect(&mut self) -> anyhow::Result<Reconnect> {
        self.dev.kill();
        let killed = Instant::now();
        let back = self.dev.start_again().await?.tunnel;
        let session = wait_dev_session(&mut self.dev, &pki::identity()).await?;
        self.dev_agent.kill();
        self.dev_agent = self.dev_agent_args.spawn()?;
        wait_dev_session(&mut self.dev, &pki::identity()).await?;
        Ok(Reconnect {
            down: back - killed,
            back_after: session.saturating_duration_since(back),
        })
    }

    /// Kills rathole's server and starts it again (see [`Rathole::restart_server`]).
    pub async fn rathole_reconnect(&mut self) -> anyhow::Result<Option<Duration>> {
        match self.rathole.as_mut() {
            Some((r, _)) => Ok(Some(r.restart_server().await?)),
            None => Ok(None),
        }
    }

    /// Fails if an agent died (a crash would otherwise show up as odd figures).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.tunnel_agent.ensure_running()?;
        self.dev_agent.ensure_running()
    }

    /// The rathole binary, if the baseline runs.
    pub fn rathole_bin(&self) -> Option<&Path> {
        self.rathole.as_ref().map(|(r, _)| r.bin.as_path())
    }
}

/// Waits for `identity`'s next session on the dev hub; returns when the hub logged it.
pub async fn wait_dev_session(dev: &mut DevHub, identity: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let seen = dev
        .sessions_until(deadline, |s| s.identity == identity)
        .await;
    match seen.into_iter().find(|s| s.identity == identity) {
        Some(s) => Ok(s.at),
        None => bail!(
            "{identity} did not connect to the hub within {READY_TIMEOUT:?}:\n{}",
            dev.log_tail()
        ),
    }
}

/// The hub's proxy subresource for the bench cluster, as the admin.
fn dev_hub_endpoint(dev: &DevHub) -> anyhow::Result<Endpoint> {
    let read = |name: &str| std::fs::read_to_string(dev.data_dir.join("pki").join(name));
    let roots = edgefleet_tunnel::tls::root_store_from_pem(&read("ca.crt")?)?;
    Endpoint::new(
        dev.listen,
        "127.0.0.1",
        roots,
        Some((&read("admin.crt")?, &read("admin.key")?)),
        &format!(
            "/apis/edgefleet.io/v1alpha1/namespaces/{}/clusters/{}/proxy",
            pki::ENVIRONMENT,
            pki::CLUSTER
        ),
    )
}
