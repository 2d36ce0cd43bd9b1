//! Where `run` keeps the agent's enrolled identity (certificate chain + key, the tunnel's
//! `identity.pem`) between restarts.
//!
//! The tunnel's [`IdentityStore`] keeps it in a directory. In a pod that directory does not
//! outlive the pod, and the bootstrap token is single-use: a rescheduled agent would be locked
//! out. So with a Secret the **Secret is the record** and the directory a private working copy:
//!
//! ```text
//!  IdentityStorage::Directory(D)     D/identity.pem is the record; nothing else is involved
//!
//!  IdentityStorage::Secret           build (before the tunnel starts):
//!    { secret: NS/NAME,                work dir W = the given directory, or a fresh one (0700)
//!      work_dir, poll_interval }         under $TMPDIR, removed when the agent stops
//!                                      GET the Secret (it may not exist: first start)
//!                                      W/identity.pem exists ─► keep it: the newest this pod
//!                                        wrote (an emptyDir outlives container restarts); the
//!                                        Secret catches up below
//!                                      else the Secret holds identity.pem ─► restore it to W
//!                                        (0600, atomic), refuse to start if it is unusable
//!                                      else: not enrolled, the bootstrap token is needed
//!                                    run: SecretSync writes W/identity.pem to the Secret each
//!                                      time it changes (enrollment, rotation over the tunnel)
//! ```
//!
//! Nothing is written outside W, so the agent runs with a read-only root filesystem as long as
//! W (or `$TMPDIR`) is a writable volume.

pub mod secret;
pub mod sync;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use edgefleet_api::validation::{is_dns1123_label, is_dns1123_subdomain};
use edgefleet_tunnel::IdentityStore;
use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::timeouts::IDENTITY_SECRET_POLL_INTERVAL;
use secret::{identity_of, Secrets};
pub use sync::SecretSync;

/// The file the tunnel's directory store keeps the identity in.
pub const IDENTITY_FILE: &str = "identity.pem";

/// Where `run` keeps its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityStorage {
    /// `identity.pem` in this directory, which must outlive the agent.
    Directory(PathBuf),
    /// A Secret on the edge cluster, through a private working directory.
    Secret(SecretStorage),
}

/// [`IdentityStorage::Secret`]'s settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretStorage {
    /// The Secret.
    pub secret: SecretRef,
    /// The working directory; a new directory under `$TMPDIR` (removed on exit) when `None`.
    pub work_dir: Option<PathBuf>,
    /// How often the working copy is compared with the Secret, so that a rotation over the
    /// tunnel reaches the Secret within this bound (tests shorten it).
    pub poll_interval: Duration,
}

impl SecretStorage {
    /// The Secret `secret`, a temporary working directory, the default poll interval.
    pub fn new(secret: SecretRef) -> Self {
        Self {
            secret,
            work_dir: None,
            poll_interval: IDENTITY_SECRET_POLL_INTERVAL,
        }
    }
}

/// A Secret: `<namespace>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Its namespace (a DNS-1123 label).
    pub namespace: String,
    /// Its name (a DNS-1123 subdomain).
    pub name: String,
}

impl FromStr for SecretRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |why: &str| Error::SecretRef {
            value: s.to_owned(),
            why: why.to_owned(),
        };
        let (namespace, name) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected <namespace>/<name>"))?;
        if !is_dns1123_label(namespace).is_empty() {
            return Err(invalid(
                "the namespace must be a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
            ));
        }
        if !is_dns1123_subdomain(name).is_empty() {
            return Err(invalid(
                "the name must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253)",
            ));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The identity storage of a built agent.
pub(crate) struct PreparedIdentity {
    /// The tunnel's store.
    pub store: IdentityStore,
    /// Where an identity would have been found, for "no identity is stored in …".
    pub location: String,
    /// Keeps the Secret current, with [`IdentityStorage::Secret`].
    pub sync: Option<SecretSync>,
    /// A temporary working directory, removed when dropped.
    pub temp_dir: Option<TempDir>,
}

impl IdentityStorage {
    /// Sets the storage up; with a Secret, restores the identity from it (module docs).
    pub(crate) async fn prepare(&self, client: &kube::Client) -> Result<PreparedIdentity> {
        let config = match self {
            Self::Directory(dir) => {
                return Ok(PreparedIdentity {
                    store: IdentityStore::directory(dir),
                    location: dir.display().to_string(),
                    sync: None,
                    temp_dir: None,
                })
            }
            Self::Secret(config) => config,
        };
        let (dir, temp_dir) = work_dir(config.work_dir.as_deref())?;
        let secrets = Secrets::new(client.clone(), config.secret.clone());
        let stored = secrets.get().await.map_err(Error::IdentitySecret)?;
        let in_secret = stored.as_ref().and_then(identity_of).map(<[u8]>::to_vec);
        let store = IdentityStore::directory(&dir);
        let file = dir.join(IDENTITY_FILE);
        let local = read_if_exists(&file)?;

        match (&local, &in_secret) {
            (Some(local), _) => tracing::info!(
                dir = %dir.display(),
                secret = %config.secret,
                secret_is_current = in_secret.as_ref() == Some(local),
                "using the identity already in the working directory"
            ),
            (None, Some(pem)) => {
                write_private(&dir, pem)?;
                // The same check as every later load: a chain and the key it certifies.
                if let Err(source) = store.load() {
                    let _ = std::fs::remove_file(&file);
                    return Err(Error::UnusableSecretIdentity {
                        secret: config.secret.to_string(),
                        source,
                    });
                }
                tracing::info!(secret = %config.secret, "identity restored from the Secret");
            }
            (None, None) => tracing::info!(
                secret = %config.secret,
                exists = stored.is_some(),
                "no identity in the Secret yet"
            ),
        }

        Ok(PreparedIdentity {
            store,
            location: format!("the Secret {}", config.secret),
            sync: Some(SecretSync::new(
                secrets,
                file,
                in_secret,
                config.poll_interval,
            )),
            temp_dir,
        })
    }
}

/// The working directory: `given` (created if missing), or a new private one under `$TMPDIR`.
fn work_dir(given: Option<&Path>) -> Result<(PathBuf, Option<TempDir>)> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::WorkDir {
                path: dir.to_owned(),
                source,
            })?;
            Ok((dir.to_owned(), None))
        }
        None => {
            let mut builder = tempfile::Builder::new();
            builder.prefix("edgefleet-agent-");
            // Only the agent may look inside (tempfile's default would be 0777 less the umask).
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
            let temp = builder.tempdir().map_err(|source| Error::WorkDir {
                path: std::env::temp_dir(),
                source,
            })?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}

fn read_if_exists(file: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(file) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadFile {
            what: "stored identity",
            path: file.to_owned(),
            source,
        }),
    }
}

/// Writes `pem` to `dir/identity.pem` as the tunnel's store does: mode 0600, through a
/// temporary file and a rename, so the file is never seen half-written.
fn write_private(dir: &Path, pem: &[u8]) -> Result<()> {
    use std::io::Write;

    let tmp = dir.join(format!(".{IDENTITY_FILE}.restore"));
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::WorkDir { path, source }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(pem).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(IDENTITY_FILE);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

#[cfg(test)]
mod tests;
