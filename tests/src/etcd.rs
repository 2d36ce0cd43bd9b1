//! A real etcd (`/usr/bin/etcd`, Debian's 3.4) for tests: one single-member cluster per
//! [`EtcdProcess`], on free loopback ports, with its data in a temporary directory, killed and
//! removed when dropped.
//!
//! ```text
//!  start ─► pick two free ports ─► spawn etcd (stdout+stderr → <dir>/etcd.log)
//!             ▲                      │ poll: exited? / answers a status request?
//!             └── port taken ◄───────┤ exited with "address already in use" (another process
//!                 (retry)            │ grabbed the port between our probe and etcd's bind)
//!                                    ▼ answers ─► ready        deadline passed / other exit ─► error + log tail
//! ```
//!
//! Ports are found by binding port 0; a process-wide set keeps one test binary from handing the
//! same port out twice, and a collision with another process is retried with fresh ports.
//! `ETCD_*` variables of the caller's environment are not passed on: etcd reads them as flags.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _};
use edgefleet_apiserver::storage::etcd::EtcdConfig;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::pki::{self, LeafSpec};

const ETCD_BINARY: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often to ask whether it answers yet.
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The budget of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Fresh ports to try when another process took ours.
const PORT_ATTEMPTS: usize = 5;
/// Log lines shown when a test using the process fails.
const LOG_TAIL_LINES: usize = 40;

/// Ports this process has handed out.
static ISSUED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Client credentials for an etcd started with TLS and client-certificate auth.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How to start etcd.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// Serve clients over TLS and require client certificates.
    pub tls: bool,
    /// etcd's progress notification interval for watches (its default is 10 minutes).
    pub progress_notify_interval: Option<Duration>,
}

/// A running etcd, killed and deleted when dropped.
pub struct EtcdProcess {
    child: Child,
    endpoint: String,
    tls: Option<ClientTls>,
    log: PathBuf,
    // Last, so the directory outlives the process.
    dir: TempDir,
}

impl EtcdProcess {
    /// A plain-HTTP etcd.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(EtcdOptions::default()).await
    }

    /// An etcd serving TLS and requiring client certificates; [`EtcdProcess::client_tls`] has
    /// the credentials.
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(EtcdOptions {
            tls: true,
            ..EtcdOptions::default()
        })
        .await
    }

    pub async fn start_with(options: EtcdOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("edgefleet-etcd-")
            .tempdir()?;
        let tls = if options.tls {
            Some(write_pki(dir.path())?)
        } else {
            None
        };
        let mut last_error = None;
        for attempt in 0..PORT_ATTEMPTS {
            match launch(dir.path(), attempt, &options, tls.as_ref()).await {
                Ok(Launch::Ready {
                    child,
                    endpoint,
                    log,
                }) => {
                    let client = tls.as_ref().map(|(client, _)| client.clone());
                    return Ok(EtcdProcess {
                        child,
                        endpoint,
                        tls: client,
                        log,
                        dir,
                    });
                }
                Ok(Launch::PortTaken(error)) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// The client URL, `http://127.0.0.1:<port>` or `https://…`.
    /// The etcd process id (for its CPU and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// The temporary directory holding etcd's data, log and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where etcd's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The hub's configuration for this etcd, with the default `/registry/` prefix.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints(),
            ca_file: self.tls.as_ref().map(|t| t.ca_file.clone()),
            cert_file: self.tls.as_ref().map(|t| t.cert_file.clone()),
            key_file: self.tls.as_ref().map(|t| t.key_file.clone()),
            ..EtcdConfig::default()
        }
    }

    /// A raw etcd client, for checking what the hub stored.
    pub async fn client(&self) -> anyhow::Result<Client> {
        connect(&self.endpoint, self.tls.as_ref()).await
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of etcd's log ({}) ---\n{}",
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }
}

enum Launch {
    Ready {
        child: Child,
        endpoint: String,
        log: PathBuf,
    },
    PortTaken(anyhow::Error),
}

async fn launch(
    dir: &Path,
    attempt: usize,
    options: &EtcdOptions,
    tls: Option<&(ClientTls, ServerTls)>,
) -> anyhow::Result<Launch> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = dir.join(format!("etcd-{attempt}.log"));
    let output = File::create(&log).with_context(|| format!("creating {}", log.display()))?;

    let mut command = Command::new(ETCD_BINARY);
    command
        .args(["--name", "edgefleet-test"])
        .arg("--data-dir")
        .arg(dir.join(format!("data-{attempt}")))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("edgefleet-test={peer}")])
        .args(["--initial-cluster-state", "new"])
        // A single member has nobody to wait for: short timeouts make it lead at once.
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    if let Some((_, server)) = tls {
        command
            .arg("--cert-file")
            .arg(&server.cert_file)
            .arg("--key-file")
            .arg(&server.key_file)
            .arg("--trusted-ca-file")
            .arg(&server.ca_file)
            .arg("--client-cert-auth");
    }
    if let Some(interval) = options.progress_notify_interval {
        command.arg(format!(
            "--experimental-watch-progress-notify-interval={}ms",
            interval.as_millis()
        ));
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCD_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {ETCD_BINARY}"))?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = log_tail(&log);
            let error = anyhow::anyhow!("etcd exited with {status} while starting:\n{tail}");
            if tail.contains("address already in use") {
                return Ok(Launch::PortTaken(error));
            }
            return Err(error);
        }
        if probe(&endpoint, tls.map(|(client, _)| client)).await {
            return Ok(Launch::Ready {
                child,
                endpoint,
                log,
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "etcd did not answer within {STARTUP_TIMEOUT:?}:\n{}",
                log_tail(&log)
            );
        }
        tokio::time::sleep(STARTUP_POLL_INTERVAL).await;
    }
}

/// Whether etcd answers a status request.
async fn probe(endpoint: &str, tls: Option<&ClientTls>) -> bool {
    let attempt = async {
        let mut client = connect(endpoint, tls).await?;
        client.status().await?;
        anyhow::Ok(())
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Ok(()))
    )
}

async fn connect(endpoint: &str, tls: Option<&ClientTls>) -> anyhow::Result<Client> {
    let mut options = ConnectOptions::new().with_connect_timeout(PROBE_TIMEOUT);
    if let Some(tls) = tls {
        options = options.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca_file)?))
                .identity(Identity::from_pem(
                    std::fs::read(&tls.cert_file)?,
                    std::fs::read(&tls.key_file)?,
                )),
        );
    }
    Ok(Client::connect([endpoint], Some(options)).await?)
}

/// A loopback port nobody in this process has been given.
fn free_port() -> anyhow::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if ISSUED_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
}

struct ServerTls {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A CA, a serving certificate for loopback and a client certificate, written to `dir`.
fn write_pki(dir: &Path) -> anyhow::Result<(ClientTls, ServerTls)> {
    let ca = pki::generate_ca("edgefleet-test-etcd-ca")?;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.certificate_pem())?;
    let server = ca.issue_leaf(&LeafSpec::server(
        "etcd",
        &["localhost"],
        &["127.0.0.1".parse()?],
    ))?;
    let (server_cert, server_key) = pki::write(&server, dir, "etcd-server")?;
    let client = ca.issue_leaf(&LeafSpec::client("edgefleet-apiserver", &[]))?;
    let (client_cert, client_key) = pki::write(&client, dir, "etcd-client")?;
    Ok((
        ClientTls {
            ca_file: ca_file.clone(),
            cert_file: client_cert,
            key_file: client_key,
        },
        ServerTls {
            ca_file,
            cert_file: server_cert,
            key_file: server_key,
        },
    ))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
