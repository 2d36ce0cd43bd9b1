//! Agents' credentials, kept in storage beside the objects (not as API objects):
//!
//! ```text
//! edgefleet.io/internal/bootstrap-tokens/<id>            one per token: cluster, its uid, SHA-256
//!                                                         of the secret, expiry, when it was used
//! edgefleet.io/internal/agent-certificates/<ns>/<name>   the cluster's uid and the serials of the
//!                                                         certificates issued to its agent
//! ```
//!
//! A token is `<id>.<secret>` (as kubeadm's): the id finds the record, the secret is compared by
//! digest in constant time. Redeeming marks the record used with a compare-and-swap, so of two
//! agents presenting the same token exactly one is admitted. A certificate is accepted only while
//! its serial is recorded for a cluster of the same uid: deleting the Cluster (or re-creating it
//! under the same name) revokes every certificate issued before.

use std::time::Duration;

use bytes::Bytes;
use edgefleet_api::jiff::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::storage::{update_with, DynStorage, StorageError, Update};

const TOKENS_PREFIX: &str = "edgefleet.io/internal/bootstrap-tokens/";
const CERTIFICATES_PREFIX: &str = "edgefleet.io/internal/agent-certificates/";
/// Serials kept per cluster: the current certificate and the ones rotation just replaced (an
/// agent uses a new certificate only from its next connection).
const SERIALS_KEPT: usize = 3;
const TOKEN_ID_LEN: usize = 6;
const TOKEN_SECRET_LEN: usize = 16;
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a credential was not accepted; the text reaches the agent's log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("unknown bootstrap token")]
    UnknownToken,
    #[error("bootstrap token already used at {0}: get a new one from the cluster's bootstrap subresource")]
    TokenUsed(String),
    #[error(
        "bootstrap token expired at {0}: get a new one from the cluster's bootstrap subresource"
    )]
    TokenExpired(String),
    #[error("cluster {0} no longer exists: its credentials are revoked")]
    ClusterGone(String),
    #[error("certificate of cluster {0} is revoked: bootstrap the agent again")]
    CertificateRevoked(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored credential record {0} is not readable")]
    Corrupt(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    namespace: String,
    name: String,
    cluster_uid: String,
    secret_sha256: String,
    expires: Timestamp,
    #[serde(default)]
    used_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CertificateRecord {
    cluster_uid: String,
    serials: Vec<String>,
}

/// The cluster a redeemed token was minted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub namespace: String,
    pub name: String,
    pub cluster_uid: String,
}

fn digest(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn random(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())] as char)
        .collect()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, CredentialError> {
    serde_json::from_slice(value).map_err(|_| CredentialError::Corrupt(key.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("credential records serialize"))
}

/// Agents' credentials over a store.
#[derive(Clone)]
pub struct Credentials {
    store: DynStorage,
}

impl Credentials {
    pub fn new(store: DynStorage) -> Self {
        Credentials { store }
    }

    /// A new single-use token for the cluster `namespace/name` (of `cluster_uid`), valid for `ttl`.
    pub async fn mint_token(
        &self,
        namespace: &str,
        name: &str,
        cluster_uid: &str,
        ttl: Duration,
    ) -> Result<String, CredentialError> {
        loop {
            let (id, secret) = (random(TOKEN_ID_LEN), random(TOKEN_SECRET_LEN));
            let record = TokenRecord {
                namespace: namespace.into(),
                name: name.into(),
                cluster_uid: cluster_uid.into(),
                secret_sha256: digest(&secret),
                expires: Timestamp::now() + ttl,
                used_at: None,
            };
            match self
                .store
                .create(&format!("{TOKENS_PREFIX}{id}"), encode(&record))
                .await
            {
                Ok(_) => return Ok(format!("{id}.{secret}")),
                Err(StorageError::AlreadyExists { .. }) => continue, // an id collision: draw again
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Checks a token and marks it used; returns the cluster it was minted for.
    pub async fn redeem_token(&self, token: &str) -> Result<TokenOwner, CredentialError> {
        let (id, secret) = token.split_once('.').ok_or(Rejected::UnknownToken)?;
        if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| TOKEN_ALPHABET.contains(&b)) {
            return Err(Rejected::UnknownToken.into());
        }
        let key = format!("{TOKENS_PREFIX}{id}");
        let mut owner = None;
        let result = update_with(&*self.store, &key, |kv| {
            let mut record: TokenRecord = decode(&key, &kv.value)?;
            // Digests are compared, not secrets: timing can at most reveal a prefix of a
            // SHA-256 digest, which does not help find the secret.
            if digest(secret) != record.secret_sha256 {
                return Err(Rejected::UnknownToken.into());
            }
            if let Some(used) = record.used_at {
                return Err(Rejected::TokenUsed(used.to_string()).into());
            }
            if record.expires < Timestamp::now() {
                return Err(Rejected::TokenExpired(record.expires.to_string()).into());
            }
            owner = Some(TokenOwner {
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                cluster_uid: record.cluster_uid.clone(),
            });
            record.used_at = Some(Timestamp::now());
            Ok(Update::Put(encode(&record)))
        })
        .await;
        match result {
            Ok(_) => owner.ok_or_else(|| CredentialError::Corrupt(key)),
            Err(CredentialError::Storage(StorageError::NotFound { .. })) => {
                Err(Rejected::UnknownToken.into())
            }
            Err(e) => Err(e),
        }
    }

    fn certificates_key(namespace: &str, name: &str) -> String {
        format!("{CERTIFICATES_PREFIX}{namespace}/{name}")
    }

    /// Records a certificate issued to the cluster's agent. A record of another uid (an older
    /// cluster of the same name) is replaced.
    pub async fn record_certificate(
        &self,
        namespace: &str,
        name: &str,
        cluster_uid: &str,
        serial: &str,
    ) -> Result<(), CredentialError> {
        let key = Self::certificates_key(namespace, name);
        let fresh = CertificateRecord {
            cluster_uid: cluster_uid.into(),
            serials: vec![serial.into()],
        };
        match self.store.create(&key, encode(&fresh)).await {
            Ok(_) => return Ok(()),
            Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        update_with(&*self.store, &key, |kv| {
            let mut record: CertificateRecord = decode(&key, &kv.value).unwrap_or_default();
            if record.cluster_uid != cluster_uid {
                record = CertificateRecord {
                    cluster_uid: cluster_uid.into(),
                    serials: Vec::new(),
                };
            }
            record.serials.retain(|s| s != serial);
            record.serials.push(serial.into());
            let excess = record.serials.len().saturating_sub(SERIALS_KEPT);
            record.serials.drain(..excess);
            Ok::<_, CredentialError>(Update::Put(encode(&record)))
        })
        .await?;
        Ok(())
    }

    /// Whether a certificate with `serial` is (still) valid for the cluster of `cluster_uid`.
    pub async fn certificate_valid(
        &self,
        namespace: &str,
        name: &str,
        cluster_uid: &str,
        serial: &str,
    ) -> Result<bool, CredentialError> {
        let key = Self::certificates_key(namespace, name);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let record: CertificateRecord = decode(&key, &kv.value)?;
        Ok(record.cluster_uid == cluster_uid && record.serials.iter().any(|s| s == serial))
    }

    /// Forgets every certificate issued for the cluster (revocation).
    pub async fn revoke(&self, namespace: &str, name: &str) -> Result<(), CredentialError> {
        match self
            .store
            .delete(&Self::certificates_key(namespace, name), None)
            .await
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::embedded::EmbeddedStore;

    fn credentials() -> (Credentials, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStorage = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        (Credentials::new(store), dir)
    }

    #[tokio::test]
    async fn tokens_are_single_use_and_expire() {
        let (c, _dir) = credentials();
        let token = c
            .mint_token("retail", "edge-1", "uid-1", Duration::from_secs(60))
            .await
            .unwrap();
        let (id, secret) = token.split_once('.').unwrap();
        assert_eq!((id.len(), secret.len()), (TOKEN_ID_LEN, TOKEN_SECRET_LEN));

        let forged = format!("{id}.{}", "x".repeat(TOKEN_SECRET_LEN));
        assert!(matches!(
            c.redeem_token(&forged).await,
            Err(CredentialError::Rejected(Rejected::UnknownToken))
        ));
        let owner = c.redeem_token(&token).await.unwrap();
        assert_eq!(
            owner,
            TokenOwner {
                namespace: "retail".into(),
                name: "edge-1".into(),
                cluster_uid: "uid-1".into()
            }
        );
        let again = c.redeem_token(&token).await.unwrap_err();
        assert!(
            matches!(again, CredentialError::Rejected(Rejected::TokenUsed(_))),
            "{again}"
        );
        assert!(again
            .to_string()
            .starts_with("bootstrap token already used at"));

        let short = c
            .mint_token("retail", "edge-1", "uid-1", Duration::ZERO)
            .await
            .unwrap();
        let expired = c.redeem_token(&short).await.unwrap_err();
        assert!(
            matches!(
                expired,
                CredentialError::Rejected(Rejected::TokenExpired(_))
            ),
            "{expired}"
        );
        for garbage in ["", "nodot", "toolongid.secret", "ABCDEF.secret"] {
            assert!(
                matches!(
                    c.redeem_token(garbage).await,
                    Err(CredentialError::Rejected(Rejected::UnknownToken))
                ),
                "{garbage}"
            );
        }
    }

    #[tokio::test]
    async fn racing_redeemers_admit_one() {
        let (c, _dir) = credentials();
        let token = c
            .mint_token("retail", "edge-1", "uid-1", Duration::from_secs(60))
            .await
            .unwrap();
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let (c, token) = (c.clone(), token.clone());
                tokio::spawn(async move { c.redeem_token(&token).await.is_ok() })
            })
            .collect();
        let mut admitted = 0;
        for a in attempts {
            admitted += usize::from(a.await.unwrap());
        }
        assert_eq!(admitted, 1);
    }

    #[tokio::test]
    async fn certificates_are_valid_until_revoked_or_replaced() {
        let (c, _dir) = credentials();
        c.record_certificate("retail", "edge-1", "uid-1", "01")
            .await
            .unwrap();
        c.record_certificate("retail", "edge-1", "uid-1", "02")
            .await
            .unwrap();
        assert!(c
            .certificate_valid("retail", "edge-1", "uid-1", "01")
            .await
            .unwrap());
        assert!(c
            .certificate_valid("retail", "edge-1", "uid-1", "02")
            .await
            .unwrap());
        assert!(
            !c.certificate_valid("retail", "edge-1", "uid-2", "02")
                .await
                .unwrap(),
            "another cluster of that name"
        );
        for serial in ["03", "04"] {
            c.record_certificate("retail", "edge-1", "uid-1", serial)
                .await
                .unwrap();
        }
        assert!(
            !c.certificate_valid("retail", "edge-1", "uid-1", "01")
                .await
                .unwrap(),
            "old serials age out"
        );
        c.revoke("retail", "edge-1").await.unwrap();
        assert!(!c
            .certificate_valid("retail", "edge-1", "uid-1", "04")
            .await
            .unwrap());
        c.record_certificate("retail", "edge-1", "uid-2", "05")
            .await
            .unwrap();
        assert!(!c
            .certificate_valid("retail", "edge-1", "uid-1", "04")
            .await
            .unwrap());
    }
}
