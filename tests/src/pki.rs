//! Certificates for tests, made with the hub's own CA code ([`edgefleet_apiserver::pki`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
pub use edgefleet_apiserver::pki::{
    generate_ca, issue, load_ca, CertificateAuthority, LeafSpec, StoredIdentity,
};

/// Writes `<name>.crt` and `<name>.key` into `dir`; returns their paths.
pub fn write(pair: &StoredIdentity, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pair.certificate_chain_pem)
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&key, pair.key_pem()).with_context(|| format!("writing {}", key.display()))?;
    Ok((cert, key))
}
