//! Signed checkpoints of the chain head, and the Ed25519 keys that sign them.
//!
//! A checkpoint states "replica R's trail had head (seq, hash) at time T", signed by the
//! replica's key. It is kept in two places: appended to the trail as a record of the chain
//! (so the signatures themselves are chained), and stored outside the trail in the hub's storage
//! under [`CHECKPOINT_KEY_PREFIX`]`<replica>`, so that cutting records off the end of the files
//! is detectable: the trail must still contain record `seq` with hash `hash`.
//!
//! The signed message is the ASCII line [`SIGNING_DOMAIN`] followed by the canonical JSON of
//! `{"hash","keyId","replica","seq","time"}`; `keyId` is the SHA-256 (hex) of the raw 32-byte
//! public key. Keys are files: the private key is PKCS#8 in PEM (`openssl genpkey -algorithm
//! ed25519` writes the same), the public key a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

use super::canonical;
use crate::storage::{Storage, StorageError, Update};

/// Storage key prefix of the latest checkpoint of each replica.
pub const CHECKPOINT_KEY_PREFIX: &str = "edgefleet.io/internal/audit-checkpoints/";
/// Domain separation: a checkpoint signature can never be mistaken for another signed message.
pub const SIGNING_DOMAIN: &[u8] = b"edgefleet.io/audit-checkpoint/v1\n";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM PKCS#8 Ed25519 private key")]
    BadPrivateKey { path: String },
    #[error("{path} is not a PEM Ed25519 public key")]
    BadPublicKey { path: String },
    #[error("generating an Ed25519 key failed")]
    Generate,
}

/// The key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key, and its PKCS#8 document (to be stored).
    pub fn generate() -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let key = Self::from_pkcs8_der(pkcs8.as_ref()).ok_or(KeyError::Generate)?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// From PKCS#8 DER (v1 as OpenSSL writes it, or v2 as ring writes it).
    pub fn from_pkcs8_der(der: &[u8]) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).ok()?;
        let public = PublicKey(pair.public_key().as_ref().try_into().ok()?);
        Some(SigningKey { pair, public })
    }

    /// Reads a PEM PKCS#8 private key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .ok()
            .and_then(|der| Self::from_pkcs8_der(der.secret_pkcs8_der()))
            .ok_or_else(|| KeyError::BadPrivateKey {
                path: path.display().to_string(),
            })
    }

    /// Reads the key at `path`, or, if there is no file, generates one there (mode 0600) and
    /// writes its public key next to it as `<path>.pub`. Returns whether it generated.
    pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), KeyError> {
        match Self::load(path) {
            Ok(key) => Ok((key, false)),
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let key = generate_key_files(path, &public_key_path(path))?;
                Ok((key, true))
            }
            Err(other) => Err(other),
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// `<private key path>.pub`.
pub fn public_key_path(private_key: &Path) -> std::path::PathBuf {
    let mut name = private_key.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}

/// Generates a key: the private key to `private_path` (PEM PKCS#8, mode 0600, never
/// overwriting a file) and the public key to `public_path` (PEM). For `audit keygen`.
pub fn generate_key_files(private_path: &Path, public_path: &Path) -> Result<SigningKey, KeyError> {
    let (key, pkcs8) = SigningKey::generate()?;
    write_new(private_path, pem("PRIVATE KEY", &pkcs8).as_bytes(), 0o600)?;
    write_new(public_path, key.public.to_pem().as_bytes(), 0o644)?;
    Ok(key)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An Ed25519 public key that verifies checkpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 (hex) of the raw key: names the key in checkpoints.
    pub fn key_id(&self) -> String {
        canonical::sha256_hex(&self.0)
    }

    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    /// From PEM `PUBLIC KEY` text.
    pub fn from_pem(pem: &[u8]) -> Option<Self> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).ok()?;
        let bytes: &[u8] = der.as_ref();
        let key = bytes.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        Some(PublicKey(key.try_into().ok()?))
    }

    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem).ok_or_else(|| KeyError::BadPublicKey {
            path: path.display().to_string(),
        })
    }
}

/// A signed statement of a trail's head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The hub replica whose trail this is.
    pub replica: String,
    /// The sequence number of the head record.
    pub seq: u64,
    /// The hash of the head record.
    pub hash: String,
    /// When the checkpoint was taken (RFC 3339, microseconds, UTC).
    pub time: String,
    /// SHA-256 (hex) of the public key that verifies `signature`.
    pub key_id: String,
    /// Ed25519 signature (standard base64) over [`SignedCheckpoint::signing_input`].
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the checkpoint names key {found}, not the given key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("the checkpoint signature is not valid base64")]
    Encoding,
    #[error("the checkpoint signature does not verify")]
    Invalid,
}

impl SignedCheckpoint {
    /// Signs the head `(seq, hash)` of `replica`'s trail.
    pub fn sign(key: &SigningKey, replica: &str, seq: u64, hash: &str, time: String) -> Self {
        let mut checkpoint = SignedCheckpoint {
            replica: replica.to_string(),
            seq,
            hash: hash.to_string(),
            time,
            key_id: key.public.key_id(),
            signature: String::new(),
        };
        checkpoint.signature = STANDARD.encode(key.sign(&checkpoint.signing_input()));
        checkpoint
    }

    /// The bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        let unsigned = serde_json::json!({
            "hash": self.hash,
            "keyId": self.key_id,
            "replica": self.replica,
            "seq": self.seq,
            "time": self.time,
        });
        let mut input = SIGNING_DOMAIN.to_vec();
        canonical::write(&unsigned, &mut input);
        input
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if self.key_id != key.key_id() {
            return Err(SignatureError::WrongKey {
                expected: key.key_id(),
                found: self.key_id.clone(),
            });
        }
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|_| SignatureError::Encoding)?;
        UnparsedPublicKey::new(&ED25519, key.as_bytes())
            .verify(&self.signing_input(), &signature)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Canonical JSON, as the checkpoint record of the trail carries it.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        canonical::to_vec_of(self).expect("a checkpoint serializes")
    }
}

/// The storage key of `replica`'s checkpoint.
pub fn checkpoint_key(replica: &str) -> String {
    format!("{CHECKPOINT_KEY_PREFIX}{replica}")
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointStoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored audit checkpoint of {replica} is unreadable: {source}")]
    Decode {
        replica: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "refusing to replace the stored audit checkpoint at seq {stored} with one at seq {new}: \
         the trail would go backwards"
    )]
    Backwards { stored: u64, new: u64 },
}

/// The latest checkpoint stored for `replica`.
pub async fn load_checkpoint(
    storage: &dyn Storage,
    replica: &str,
) -> Result<Option<SignedCheckpoint>, CheckpointStoreError> {
    let Some(kv) = storage.get(&checkpoint_key(replica)).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&kv.value)
        .map(Some)
        .map_err(|source| CheckpointStoreError::Decode {
            replica: replica.to_string(),
            source,
        })
}

/// Stores `checkpoint` as its replica's latest, never replacing a later one.
pub async fn store_checkpoint(
    storage: &dyn Storage,
    checkpoint: &SignedCheckpoint,
) -> Result<(), CheckpointStoreError> {
    let key = checkpoint_key(&checkpoint.replica);
    let value =
        bytes::Bytes::from(serde_json::to_vec(checkpoint).expect("a checkpoint serializes"));
    match storage.create(&key, value.clone()).await {
        Ok(_) => return Ok(()),
        Err(StorageError::AlreadyExists { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    crate::storage::update_with(storage, &key, |current| {
        let stored: SignedCheckpoint =
            serde_json::from_slice(&current.value).map_err(|source| {
                CheckpointStoreError::Decode {
                    replica: checkpoint.replica.clone(),
                    source,
                }
            })?;
        if stored.seq > checkpoint.seq {
            return Err(CheckpointStoreError::Backwards {
                stored: stored.seq,
                new: checkpoint.seq,
            });
        }
        Ok(Update::Put(value.clone()))
    })
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let (key, generated) = SigningKey::load_or_generate(&path).unwrap();
        assert!(generated);
        let (again, generated) = SigningKey::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(key.public_key(), again.public_key());
        let public = PublicKey::load(&public_key_path(&path)).unwrap();
        assert_eq!(&public, key.public_key());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let cp = SignedCheckpoint::sign(
            &key,
            "hub-0",
            7,
            GENESIS,
            "2024-01-01T00:00:00.000000Z".into(),
        );
        assert_eq!(cp.verify(&public), Ok(()));
        let mut forged = cp.clone();
        forged.seq = 8;
        assert_eq!(forged.verify(&public), Err(SignatureError::Invalid));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(matches!(
            cp.verify(other.public_key()),
            Err(SignatureError::WrongKey { .. })
        ));
    }

    const GENESIS: &str = super::super::segment::GENESIS_HASH;
}
