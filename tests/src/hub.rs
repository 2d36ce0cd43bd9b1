//! A real `edgefleet-apiserver` process for end-to-end tests, and kubectl pointed at it.
//!
//! ```text
//! Hub::dev()        edgefleet-apiserver dev --data-dir <tmp> --listen 127.0.0.1:0
//! Hub::dev_with(c)  the same, with --agents, --token-auth-file and rbac.yaml additions from `c`
//! Hub::etcd(&etcd)  edgefleet-apiserver serve --storage etcd ... with certificates made here
//! hub.kubectl()     kubectl --kubeconfig <admin kubeconfig> ...
//! hub.cluster_kubeconfig(base, env, name)   edgefleet-apiserver kubeconfig --cluster env/name
//! ```
//! The binaries are the workspace's debug builds: `hack/test.sh` builds them before the tests
//! run (`cargo build --workspace --bins`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use edgefleet_apiserver::kubeconfig::{self, Credentials};
use edgefleet_apiserver::pki::{self, LeafSpec};
use edgefleet_testkit::eventually;

use crate::etcd::EtcdProcess;

/// Tunnel keepalive of test hubs: a silent agent is declared dead after twice this.
pub const TEST_KEEPALIVE: &str = "1s";

/// How long a hub may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a hub may take to stop on SIGTERM (it closes its audit trail first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A workspace binary of the running profile (`target/<profile>/<name>`), found from the
/// running executable: a test in `target/<profile>/deps/` or a tool in `target/<profile>/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe.parent().expect("an executable lives in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let path = dir.join(name);

    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, as hack/test.sh does)",
        path.display()
    );
    path
}

/// The workspace root (for `config/samples`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// How the hub stores objects.
enum Mode {
    Dev,
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// A running hub.
pub struct Hub {
    child: Option<Child>,
    mode: Mode,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Admin kubeconfig (group `system:masters`).
    pub kubeconfig: PathBuf,
    log: PathBuf,
    /// Simulated agents a dev hub starts.
    agents: usize,
    /// Where agents dial (dev hubs).
    pub tunnel_addr: Option<SocketAddr>,
    /// `--token-auth-file` (dev hubs).
    token_file: Option<PathBuf>,
    /// More flags for `edgefleet-apiserver dev`.
    extra_args: Vec<String>,
}

/// What a dev hub is set up with before it starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct DevConfig<'a> {
    /// Simulated agents (`--agents`).
    pub agents: usize,
    /// A static token file (kube's format: `token,user,uid,"group1,group2"` per line), passed as
    /// `--token-auth-file`.
    pub tokens: Option<&'a str>,
    /// RBAC objects (YAML documents) appended to the standalone bindings in
    /// `<data-dir>/rbac.yaml`.
    pub rbac: Option<&'a str>,
    /// More flags for `edgefleet-apiserver dev` (`--audit-segment-max-bytes=4096`).
    pub args: &'a [&'a str],
}

impl Hub {
    /// `edgefleet-apiserver dev` on an ephemeral port with a fresh data directory.
    pub fn dev() -> anyhow::Result<Hub> {
        Self::dev_with_agents(0)
    }

    /// A dev hub that also starts `agents` simulated edge clusters (`--agents`).
    pub fn dev_with_agents(agents: usize) -> anyhow::Result<Hub> {
        Self::dev_with(DevConfig {
            agents,
            ..DevConfig::default()
        })
    }

    /// A dev hub set up as `config` says.
    pub fn dev_with(config: DevConfig<'_>) -> anyhow::Result<Hub> {
        let dir = tempfile::tempdir()?;
        let token_file = match config.tokens {
            Some(tokens) => {
                let path = dir.path().join("tokens.csv");
                std::fs::write(&path, tokens)?;
                Some(path)
            }
            None => None,
        };
        if let Some(rbac) = config.rbac {
            // The hub keeps an existing rbac.yaml; it starts with this one.
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data)?;
            std::fs::write(
                data.join("rbac.yaml"),
                format!(
                    "{}---\n{rbac}",
                    edgefleet_apiserver::dev::standalone_bindings_yaml()
                ),
            )?;
        }
        let agents = config.agents;
        let mut hub = Hub {
            child: None,
            mode: Mode::Dev,
            kubeconfig: dir.path().join("data/admin.kubeconfig"),
            log: dir.path().join("hub.log"),
            addr: "127.0.0.1:0".parse()?,
            dir,
            agents,
            tunnel_addr: None,
            token_file,
            extra_args: config.args.iter().map(|a| a.to_string()).collect(),
        };
        hub.start()?;
        Ok(hub)
    }

    /// `edgefleet-apiserver serve --storage etcd` against `etcd`, with its own certificates.
    pub fn etcd(etcd: &EtcdProcess) -> anyhow::Result<Hub> {
        Self::etcd_with(etcd, &[])
    }

    /// [`Hub::etcd`] with more `serve` flags (`--audit-log-dir=…`).
    pub fn etcd_with(etcd: &EtcdProcess, args: &[String]) -> anyhow::Result<Hub> {
        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        let ca = pki::generate_ca("e2e-ca")?;
        let serving = ca.issue_leaf(&LeafSpec::server(
            "hub",
            &["localhost"],
            &["127.0.0.1".parse()?],
        ))?;
        let admin = ca.issue_leaf(&LeafSpec::client("e2e-admin", &["system:masters"]))?;
        for (name, contents) in [
            ("ca.crt", ca.certificate_pem()),
            ("ca.key", &ca.key_pem()),
            ("apiserver.crt", &serving.certificate_chain_pem),
            ("apiserver.key", serving.key_pem()),
            ("admin.crt", &admin.certificate_chain_pem),
            ("admin.key", admin.key_pem()),
        ] {
            std::fs::write(pki.join(name), contents)?;
        }
        std::fs::write(
            pki.join("rbac.yaml"),
            edgefleet_apiserver::dev::standalone_bindings_yaml(),
        )?;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("/e2e-{}-{n}/", std::process::id());
        let mut hub = Hub {
            child: None,
            mode: Mode::Etcd {
                endpoints: etcd.endpoints(),
                prefix,
            },
            kubeconfig: dir.path().join("admin.kubeconfig"),
            log: dir.path().join("hub.log"),
            addr: "127.0.0.1:0".parse()?,
            dir,
            agents: 0,
            tunnel_addr: None,
            token_file: None,
            extra_args: args.to_vec(),
        };
        hub.start()?;
        Ok(hub)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(binary("edgefleet-apiserver"));
        let listen = if self.addr.port() == 0 {
            "127.0.0.1:0".to_string()
        } else {
            self.addr.to_string()
        };
        match &self.mode {
            Mode::Dev => {
                cmd.args([
                    "dev",
                    "--agents",
                    &self.agents.to_string(),
                    "--tunnel-keepalive",
                    TEST_KEEPALIVE,
                    "--listen",
                    &listen,
                    "--data-dir",
                ])
                .arg(self.dir.path().join("data"));
                if let Some(tokens) = &self.token_file {
                    cmd.arg("--token-auth-file").arg(tokens);
                }
                // A restart keeps its tunnel port too (agents redial it); with a fixed
                // --listen and no --tunnel-listen, dev would derive it (listen port + 1689),
                // which another test's hub may hold.
                if let Some(tunnel) = self.tunnel_addr {
                    cmd.arg(format!("--tunnel-listen={tunnel}"));
                }
                cmd.args(&self.extra_args);
            }
            Mode::Etcd { endpoints, prefix } => {
                let pki = self.dir.path().join("pki");
                let (ip, port) = listen.rsplit_once(':').expect("host:port");
                cmd.args([
                    "serve",
                    "--storage",
                    "etcd",
                    "--etcd-endpoints",
                    &endpoints.join(","),
                ])
                .args([
                    "--etcd-prefix",
                    prefix,
                    "--bind-address",
                    ip,
                    "--secure-port",
                    port,
                ])
                .arg("--tls-cert-file")
                .arg(pki.join("apiserver.crt"))
                .arg("--tls-private-key-file")
                .arg(pki.join("apiserver.key"))
                .arg("--client-ca-file")
                .arg(pki.join("ca.crt"))
                .arg("--authorization-rbac-file")
                .arg(pki.join("rbac.yaml"))
                .args(&self.extra_args);
            }
        }
        cmd
    }

    /// Starts (or restarts) the process and waits until it serves.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = self
            .command()
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting edgefleet-apiserver")?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("serving on https://").nth(1) {
                        if let Some(tunnel) = line.split("agents dial ").nth(1) {
                            self.tunnel_addr = tunnel.trim().parse().ok();
                        }
                        let addr = rest.split([',', ' ']).next().unwrap_or_default();
                        break addr
                            .parse::<SocketAddr>()
                            .with_context(|| format!("address in {line:?}"))?;
                    }
                }
                Err(_) => bail!("the hub did not start serving:\n{}", self.log_tail()),
            }
        };
        self.addr = addr;
        if let Mode::Etcd { .. } = self.mode {
            self.write_etcd_kubeconfig()?;
        }
        self.wait_ready(deadline)
    }

    fn write_etcd_kubeconfig(&self) -> anyhow::Result<()> {
        let pki = self.dir.path().join("pki");
        let read = |n: &str| std::fs::read_to_string(pki.join(n));
        let config = kubeconfig::render(
            "e2e",
            &format!("https://{}", self.addr),
            &read("ca.crt")?,
            "e2e-admin",
            Credentials::ClientCertificate {
                cert_pem: &read("admin.crt")?,
                key_pem: &read("admin.key")?,
            },
            None,
        );
        std::fs::write(&self.kubeconfig, config)?;
        Ok(())
    }

    fn wait_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the hub never became ready: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the hub's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The process id of the running hub.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as an orderly stop (the hub closes its audit trail with a final checkpoint),
    /// waiting for the process to exit.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {} failed", child.id());
        eventually!(
            blocking,
            within = STOP_TIMEOUT,
            child.try_wait().unwrap(),
            "the hub to stop on SIGTERM\n--- hub log ---\n{}",
            self.log_tail()
        );
    }

    /// A dev hub's audit trail (`<data-dir>/audit`).
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("data/audit")
    }

    /// A dev hub's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kills the process and starts it again on the same address and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start()
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_as(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with `kubeconfig`, feeding `stdin`.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Output> {
        self.kubectl_env(kubeconfig, args, stdin, &[])
    }

    /// Runs kubectl with `kubeconfig`, `stdin` and extra environment variables.
    pub fn kubectl_env(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .envs(env.iter().copied());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running kubectl")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None)
    }

    /// kubectl with stdin that must succeed; returns stdout.
    pub fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self
            .kubectl_as(&self.kubeconfig, args, stdin)
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n--- hub log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts kubectl in the background with stdout piped (for `get -w`, `wait`).
    pub fn spawn_kubectl(&self, args: &[&str]) -> anyhow::Result<Child> {
        Ok(Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self
            .kubectl_as(&self.kubeconfig, args, stdin)
            .expect("kubectl runs");
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed, printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A kubeconfig for `user` in `groups`, signed by the hub's client CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        let server = format!("https://{}", self.addr);
        let config = match &self.mode {
            Mode::Dev => {
                let out = Command::new(binary("edgefleet-apiserver"))
                    .args([
                        "kubeconfig",
                        "--user",
                        user,
                        "--server",
                        &server,
                        "--data-dir",
                    ])
                    .arg(self.dir.path().join("data"))
                    .args(groups.iter().flat_map(|g| ["--group", g]))
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "minting a kubeconfig: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout)?
            }
            Mode::Etcd { .. } => {
                let pki = self.dir.path().join("pki");
                let ca = pki::load_ca(
                    &std::fs::read_to_string(pki.join("ca.crt"))?,
                    &std::fs::read_to_string(pki.join("ca.key"))?,
                )?;
                let leaf = ca.issue_leaf(&LeafSpec::client(user, groups))?;
                kubeconfig::render(
                    "e2e",
                    &server,
                    ca.certificate_pem(),
                    user,
                    Credentials::ClientCertificate {
                        cert_pem: &leaf.certificate_chain_pem,
                        key_pem: leaf.key_pem(),
                    },
                    None,
                )
            }
        };
        std::fs::write(&path, config)?;
        Ok(path)
    }
}

impl Hub {
    /// The CA of a dev hub's serving certificate (and of its users' certificates).
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        let path = self.dir.path().join("data/pki/ca.crt");
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// A kubeconfig for a user of the hub's token file, authenticating with `token`.
    pub fn token_kubeconfig(&self, user: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("{user}.token.kubeconfig"));
        let config = kubeconfig::render(
            "e2e",
            &format!("https://{}", self.addr),
            &self.ca_pem()?,
            user,
            Credentials::Token(token),
            None,
        );
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// `edgefleet-apiserver kubeconfig --cluster <environment>/<cluster> --kubeconfig <base>`:
    /// `base`'s current context, pointed at the cluster's proxy subresource.
    pub fn cluster_kubeconfig(
        &self,
        base: &Path,
        environment: &str,
        cluster: &str,
    ) -> anyhow::Result<PathBuf> {
        let out = Command::new(binary("edgefleet-apiserver"))
            .args([
                "kubeconfig",
                "--cluster",
                &format!("{environment}/{cluster}"),
            ])
            .arg("--kubeconfig")
            .arg(base)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "edgefleet-apiserver kubeconfig --cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stem = base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = self
            .dir
            .path()
            .join(format!("{stem}.{environment}.{cluster}.kubeconfig"));
        std::fs::write(&path, out.stdout)?;
        Ok(path)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}
