//! One CA for the benchmark and the certificates every component presents, written to a
//! directory the child processes read:
//!
//! ```text
//! <dir>/ca.crt, ca.key          trusted by everyone (a throwaway CA: its key stays here)
//! <dir>/hub.crt, hub.key        the bench hub's tunnel port and front, rathole's server
//!                               (names hub.bench, 127.0.0.1)
//! <dir>/upstream.crt, .key      the upstream (upstream.bench, 127.0.0.1)
//! <dir>/agent/identity.pem      the agent's client certificate, CN cluster:bench/edge, in the
//!                               tunnel's IdentityStore layout: the agent starts enrolled
//! <dir>/upstream.kubeconfig     the agent's kubeconfig for the upstream
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use edgefleet_testkit::kubeconfig::Kubeconfig;
use edgefleet_tunnel::identity::Usage;
use edgefleet_tunnel::{CertificateAuthority, IdentityStore, LeafSpec};
use rustls::RootCertStore;

/// The name on the bench hub's (and rathole server's) certificate.
pub const HUB_NAME: &str = "hub.bench";
/// The name on the upstream's certificate.
pub const UPSTREAM_NAME: &str = "upstream.bench";
/// The environment and name of the benchmark's edge cluster (identity `cluster:bench/edge`).
pub const ENVIRONMENT: &str = "bench";
pub const CLUSTER: &str = "edge";
/// The bearer token in the agent's upstream kubeconfig (the upstream does not check it).
const UPSTREAM_TOKEN: &str = "bench-agent";

const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Paths of a written bench PKI.
#[derive(Clone, Debug)]
pub struct BenchPki {
    pub dir: PathBuf,
}

impl BenchPki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<BenchPki> {
        std::fs::create_dir_all(dir)?;
        let ca = CertificateAuthority::generate("edgefleet tunnel-bench CA", VALIDITY)?;
        let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let server = |name: &str| {
            let mut spec = LeafSpec::server(name, &[name], &localhost);
            spec.validity = VALIDITY;
            ca.issue_leaf(&spec)
        };
        let hub = server(HUB_NAME)?;
        let upstream = server(UPSTREAM_NAME)?;
        std::fs::write(dir.join("ca.crt"), ca.certificate_pem())?;
        std::fs::write(dir.join("ca.key"), ca.key_pem())?;
        for (name, pair) in [("hub", &hub), ("upstream", &upstream)] {
            std::fs::write(dir.join(format!("{name}.crt")), &pair.certificate_chain_pem)?;
            std::fs::write(dir.join(format!("{name}.key")), pair.key_pem())?;
        }
        BenchPki::enroll(&ca, &identity(), &dir.join("agent"))?;
        Ok(BenchPki {
            dir: dir.to_path_buf(),
        })
    }

    /// An existing bench PKI (in a child process).
    pub fn open(dir: &Path) -> BenchPki {
        BenchPki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        std::fs::read_to_string(self.path(name))
            .with_context(|| format!("reading {}", self.path(name).display()))
    }

    /// Roots holding the bench CA.
    pub fn roots(&self) -> anyhow::Result<RootCertStore> {
        Ok(edgefleet_tunnel::tls::root_store_from_pem(
            &self.read("ca.crt")?,
        )?)
    }

    /// The bench CA, to issue more certificates.
    pub fn ca(&self) -> anyhow::Result<CertificateAuthority> {
        Ok(CertificateAuthority::from_pem(
            &self.read("ca.crt")?,
            &self.read("ca.key")?,
        )?)
    }

    /// Writes an enrolled identity (client certificate, CN `identity`) into `dir`, in the
    /// tunnel's IdentityStore layout, so an agent started on `dir` connects with mutual TLS.
    pub fn enroll(ca: &CertificateAuthority, identity: &str, dir: &Path) -> anyhow::Result<()> {
        let pair = ca.issue(identity, &[], Usage::Client, VALIDITY)?;
        IdentityStore::directory(dir).store(&pair)?;
        Ok(())
    }

    /// The agent's identity directory (already enrolled).
    pub fn agent_identity_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// Writes the agent's kubeconfig for the upstream at `server` (`https://127.0.0.1:port`).
    pub fn write_upstream_kubeconfig(&self, server: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("upstream.kubeconfig");
        Kubeconfig::new(server, &self.read("ca.crt")?)
            .tls_server_name(UPSTREAM_NAME)
            .token(UPSTREAM_TOKEN)
            .write(&path);
        Ok(path)
    }
}

/// The tunnel identity of the benchmark's agent.
pub fn identity() -> String {
    format!("cluster:{ENVIRONMENT}/{CLUSTER}")
}
