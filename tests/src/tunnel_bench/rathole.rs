//! The baseline tunnel: rathole (crates.io `rathole`, built by `hack/bench/tunnel.sh` outside
//! the repository), a TCP-level reverse tunnel, with its TLS transport (native-tls) so that
//! its link is encrypted as ours is. Configuration per rathole's README:
//!
//! ```text
//! client ──TLS (end to end)──► rathole server  [server.services.<svc>.bind_addr]
//!                                 ║ control channel + data channels, TLS, [server.bind_addr]
//!                              rathole client ──TCP──► upstream  [client.services.<svc>.local_addr]
//! ```
//!
//! rathole carries each client connection as its own data channel (a TCP + TLS connection
//! between its server and client); it keeps a pool of 8 idle data channels per service. The
//! server's TLS identity is a PKCS#12 archive, made with the `openssl` command from the bench
//! certificate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use super::pki::{BenchPki, HUB_NAME};

/// Password of the PKCS#12 archive (a throwaway).
const PKCS12_PASSWORD: &str = "bench";

/// One service of a rathole server or client.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub token: String,
    /// Server side: where visitors connect. Client side: the upstream.
    pub addr: SocketAddr,
}

/// Writes `<pki>/hub.pfx` from the hub certificate and key; returns its path.
pub fn write_pkcs12(pki: &BenchPki) -> anyhow::Result<PathBuf> {
    let out = pki.path("hub.pfx");
    if out.exists() {
        return Ok(out);
    }
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-out"])
        .arg(&out)
        .arg("-inkey")
        .arg(pki.path("hub.key"))
        .arg("-in")
        .arg(pki.path("hub.crt"))
        .arg("-certfile")
        .arg(pki.path("ca.crt"))
        .args(["-passout", &format!("pass:{PKCS12_PASSWORD}")])
        .status()
        .context("running openssl (needed for rathole's PKCS#12 identity)")?;
    if !status.success() {
        bail!("openssl pkcs12 -export failed: {status}");
    }
    Ok(out)
}

/// A server configuration: control channel on `control`, the given services.
pub fn server_config(pkcs12: &Path, control: SocketAddr, services: &[Service]) -> String {
    let mut toml = format!(
        "[server]\nbind_addr = \"{control}\"\n\n[server.transport]\ntype = \"tls\"\n\n\
         [server.transport.tls]\npkcs12 = \"{}\"\npkcs12_password = \"{PKCS12_PASSWORD}\"\n",
        pkcs12.display()
    );
    for s in services {
        let _ = write!(
            toml,
            "\n[server.services.{}]\ntoken = \"{}\"\nbind_addr = \"{}\"\n",
            s.name, s.token, s.addr
        );
    }
    toml
}

/// A client configuration dialing `control`, trusting the bench CA for [`HUB_NAME`].
pub fn client_config(pki: &BenchPki, control: SocketAddr, services: &[Service]) -> String {
    let mut toml = format!(
        "[client]\nremote_addr = \"{control}\"\n\n[client.transport]\ntype = \"tls\"\n\n\
         [client.transport.tls]\ntrusted_root = \"{}\"\nhostname = \"{HUB_NAME}\"\n",
        pki.path("ca.crt").display()
    );
    for s in services {
        let _ = write!(
            toml,
            "\n[client.services.{}]\ntoken = \"{}\"\nlocal_addr = \"{}\"\n",
            s.name, s.token, s.addr
        );
    }
    toml
}

/// `rathole --server <config>` or `rathole --client <config>`, logging at info (the driver
/// watches for `Listening at` and `Control channel established`).
pub fn command(bin: &Path, role: &str, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--{role}"))
        .arg(config)
        .env("RUST_LOG", "info");
    cmd
}
