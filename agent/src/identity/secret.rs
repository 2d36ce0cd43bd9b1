//! Reading and writing the one Secret that holds the agent's identity, with the agent's own
//! credentials for its edge kube-apiserver.
//!
//! Only `get`, `create` and `update` (PUT) are used: what the install manifest's Role grants
//! (`get/update/patch` on the Secret by name, `create` on secrets, since `create` cannot be
//! restricted by name). Saving is optimistic concurrency as kube-apiserver defines it:
//!
//! ```text
//!   GET ─┬─ 404 ─────────────────────────► POST (labels, type Opaque, data[identity.pem])
//!        │                                   409 AlreadyExists (someone was faster) ─► GET again
//!        ├─ holds these bytes already ───► done, nothing written
//!        └─ otherwise ───────────────────► PUT with the resourceVersion just read; only
//!                                          data[identity.pem] and one label change, every other
//!                                          key, label and annotation is kept
//!                                            409 Conflict (written in between) ─► GET again
//! ```
//!
//! Responses are decoded here rather than by `kube::Api`, whose decode failures log the whole
//! response body: for a Secret that would be the private key.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{GetParams, PostParams};
use kube::Resource;

use super::{SecretRef, IDENTITY_FILE};

/// The data key of the identity in the Secret: the same bytes as the tunnel's `identity.pem`.
pub const IDENTITY_KEY: &str = IDENTITY_FILE;

/// Label every object edgefleet creates on an edge cluster carries.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "edgefleet");

/// Field manager of the agent's writes (as for everything the agent applies).
const FIELD_MANAGER: &str = "edgefleet-agent";

/// How many times a save re-reads the Secret after losing a race to another writer before it
/// reports failure (and the caller backs off). As client-go's `retry.DefaultRetry`.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Why reading or writing the identity Secret failed. Never carries the Secret's data.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// kube-apiserver refused the request, or it never got there.
    #[error("{verb} the Secret {secret}")]
    Request {
        /// `reading`, `creating` or `updating`.
        verb: &'static str,
        /// `<namespace>/<name>`.
        secret: String,
        /// The cause (a `Status` from kube-apiserver, or the transport's error).
        #[source]
        source: kube::Error,
    },
    /// The response was not a Secret. Only the position is reported: the body holds the key.
    #[error(
        "{verb} the Secret {secret}: the response is not a Secret (JSON {category} error at line {line}, column {column})"
    )]
    Decode {
        /// `reading`, `creating` or `updating`.
        verb: &'static str,
        /// `<namespace>/<name>`.
        secret: String,
        /// serde_json's classification (`syntax`, `data`, ...).
        category: &'static str,
        /// Where in the body.
        line: usize,
        /// Where in the line.
        column: usize,
    },
    /// Another writer changed the Secret between every read and write.
    #[error(
        "the Secret {secret} changed between each of {attempts} reads and the update that followed"
    )]
    Conflicts {
        /// `<namespace>/<name>`.
        secret: String,
        /// How many times the agent tried.
        attempts: u32,
    },
}

/// What a save did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The Secret already held these bytes.
    Unchanged,
    /// The Secret did not exist and was created.
    Created {
        /// Its resourceVersion.
        resource_version: String,
    },
    /// The Secret was updated.
    Updated {
        /// Its new resourceVersion.
        resource_version: String,
    },
}

/// The one Secret, through the agent's client.
#[derive(Clone)]
pub struct Secrets {
    client: kube::Client,
    request: kube::core::Request,
    secret: SecretRef,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The Secret `secret`, read and written with `client`.
    pub fn new(client: kube::Client, secret: SecretRef) -> Self {
        let request = kube::core::Request::new(Secret::url_path(&(), Some(&secret.namespace)));
        Self {
            client,
            request,
            secret,
        }
    }

    /// Which Secret.
    pub fn secret(&self) -> &SecretRef {
        &self.secret
    }

    /// The Secret, or `None` if it does not exist.
    pub async fn get(&self) -> Result<Option<Secret>, SecretError> {
        const VERB: &str = "reading";
        let request = self
            .request
            .get(&self.secret.name, &GetParams::default())
            .map_err(|e| self.error(VERB, kube::Error::BuildRequest(e)))?;
        match self.send(VERB, request).await {
            Ok(secret) => Ok(Some(secret)),
            Err(SecretError::Request {
                source: kube::Error::Api(status),
                ..
            }) if status.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Makes the Secret hold `pem` under [`IDENTITY_KEY`]: creates it, or updates the
    /// resourceVersion it read, re-reading after each lost race (see the module docs).
    pub async fn save(&self, pem: &[u8]) -> Result<Saved, SecretError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let written = match with_identity(self.get().await?, &self.secret, pem) {
                Update::Unchanged => return Ok(Saved::Unchanged),
                Update::Create(secret) => self.create(&secret).await.map(|s| Saved::Created {
                    resource_version: resource_version(&s),
                }),
                Update::Replace(secret) => self.replace(&secret).await.map(|s| Saved::Updated {
                    resource_version: resource_version(&s),
                }),
            };
            match written {
                Err(SecretError::Request {
                    source: kube::Error::Api(status),
                    ..
                }) if status.is_conflict() || status.is_already_exists() => {
                    tracing::debug!(
                        secret = %self.secret,
                        reason = %status.reason,
                        "the identity Secret changed since it was read; reading it again"
                    );
                }
                written => return written,
            }
        }
        Err(SecretError::Conflicts {
            secret: self.secret.to_string(),
            attempts: CONFLICT_ATTEMPTS,
        })
    }

    async fn create(&self, secret: &Secret) -> Result<Secret, SecretError> {
        const VERB: &str = "creating";
        let body =
            serde_json::to_vec(secret).map_err(|e| self.error(VERB, kube::Error::SerdeError(e)))?;
        let request = self
            .request
            .create(&post_params(), body)
            .map_err(|e| self.error(VERB, kube::Error::BuildRequest(e)))?;
        self.send(VERB, request).await
    }

    async fn replace(&self, secret: &Secret) -> Result<Secret, SecretError> {
        const VERB: &str = "updating";
        let body =
            serde_json::to_vec(secret).map_err(|e| self.error(VERB, kube::Error::SerdeError(e)))?;
        let request = self
            .request
            .replace(&self.secret.name, &post_params(), body)
            .map_err(|e| self.error(VERB, kube::Error::BuildRequest(e)))?;
        self.send(VERB, request).await
    }

    /// Sends `request` and decodes the Secret it answers with, never echoing the body.
    async fn send(
        &self,
        verb: &'static str,
        request: http::Request<Vec<u8>>,
    ) -> Result<Secret, SecretError> {
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| self.error(verb, e))?;
        serde_json::from_str(&text).map_err(|e| SecretError::Decode {
            verb,
            secret: self.secret.to_string(),
            category: match e.classify() {
                serde_json::error::Category::Io => "I/O",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "end-of-input",
            },
            line: e.line(),
            column: e.column(),
        })
    }

    fn error(&self, verb: &'static str, source: kube::Error) -> SecretError {
        SecretError::Request {
            verb,
            secret: self.secret.to_string(),
            source,
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

fn resource_version(secret: &Secret) -> String {
    secret.metadata.resource_version.clone().unwrap_or_default()
}

/// The identity bytes a Secret holds, if any.
pub fn identity_of(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()?
        .get(IDENTITY_KEY)
        .map(|bytes| bytes.0.as_slice())
}

/// What to write so that the Secret holds `pem`.
#[derive(Debug, PartialEq)]
pub enum Update {
    /// Nothing: it holds `pem` already.
    Unchanged,
    /// The Secret does not exist: create this one.
    Create(Secret),
    /// Update to this (the read object with the identity and label set; same resourceVersion).
    Replace(Secret),
}

/// The write that makes `existing` (as just read; `None` if absent) hold `pem`. Everything else
/// in an existing Secret is kept: other keys, labels, annotations, its type, its
/// resourceVersion (the precondition of the update).
pub fn with_identity(existing: Option<Secret>, secret: &SecretRef, pem: &[u8]) -> Update {
    let Some(mut existing) = existing else {
        return Update::Create(Secret {
            metadata: ObjectMeta {
                name: Some(secret.name.clone()),
                namespace: Some(secret.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    PART_OF_LABEL.0.to_owned(),
                    PART_OF_LABEL.1.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                IDENTITY_KEY.to_owned(),
                ByteString(pem.to_vec()),
            )])),
            ..Secret::default()
        });
    };
    if identity_of(&existing) == Some(pem) {
        return Update::Unchanged;
    }
    existing
        .data
        .get_or_insert_with(BTreeMap::new)
        .insert(IDENTITY_KEY.to_owned(), ByteString(pem.to_vec()));
    existing
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .entry(PART_OF_LABEL.0.to_owned())
        .or_insert_with(|| PART_OF_LABEL.1.to_owned());
    Update::Replace(existing)
}
