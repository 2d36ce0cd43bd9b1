//! Who may hold a tunnel: the hub's [`Admission`] and [`CertificateSigner`].
//!
//! ```text
//! Hello + client certificate CN=cluster:<env>/<name>
//!     ─► the Cluster exists and the certificate's serial is recorded for its uid ─► admitted
//! Hello + bootstrap token + CSR (no certificate)
//!     ─► token redeemed (single use, not expired) ─► the Cluster still has the token's uid
//!     ─► sign the CSR for cluster:<env>/<name>, record its serial ─► admitted, certificate sent
//! anything else ─► refused, with a reason the agent logs
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_api::agent::{agent_identity, parse_agent_identity};
use edgefleet_api::jiff::Timestamp;
use edgefleet_tunnel::handshake::Hello;
use edgefleet_tunnel::{
    async_trait, Admission, Admitted, BoxError, CertificateAuthority, CertificateSigner,
    PeerCertificates, Refusal,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::credentials::{CredentialError, Credentials, Rejected};
use crate::errors::ApiError;
use crate::registry::Registry;

/// How long a refused agent waits before trying again when the refusal is about storage, not
/// about its credentials.
const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(5);

/// The certificate an admitted agent presented (or was just issued): when it expires.
#[derive(Clone, Copy, Debug)]
pub struct Presented {
    pub not_after: Timestamp,
}

/// Admits agents by certificate or bootstrap token, and signs their certificates.
pub struct HubAdmission {
    pub registry: Registry,
    pub credentials: Credentials,
    pub ca: Arc<CertificateAuthority>,
    pub certificate_validity: Duration,
    /// The certificate each identity holds, for rotation.
    pub presented: Arc<Mutex<HashMap<String, Presented>>>,
}

fn refusal(err: CredentialError) -> Refusal {
    match err {
        CredentialError::Rejected(r) => Refusal::new(r.to_string()),
        other => {
            tracing::warn!(%other, "admission could not read credentials");
            Refusal::new("the hub cannot check credentials right now")
                .retry_after(RETRY_AFTER_UNAVAILABLE)
        }
    }
}

/// Serial (lowercase hex) and expiry of the leaf of a PEM chain or a DER certificate.
fn leaf_facts(der: &[u8]) -> Option<(String, Timestamp)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let serial = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let not_after = Timestamp::from_second(cert.validity().not_after.timestamp()).ok()?;
    Some((serial, not_after))
}

fn pem_leaf_facts(chain_pem: &str) -> Option<(String, Timestamp)> {
    let certs = edgefleet_tunnel::tls::certificates_from_pem(chain_pem).ok()?;
    leaf_facts(certs.first()?)
}

impl HubAdmission {
    /// The uid of the Cluster `namespace/name`, if it exists.
    async fn cluster_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, Refusal> {
        let clusters = self
            .registry
            .resource("clusters")
            .expect("clusters are registered");
        match clusters.get(namespace, name, None).await {
            Ok(obj) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&obj.json).unwrap_or_default();
                Ok(value["metadata"]["uid"].as_str().map(String::from))
            }
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(err) => {
                tracing::warn!(%err, "admission could not read the cluster");
                Err(Refusal::new("the hub cannot read clusters right now")
                    .retry_after(RETRY_AFTER_UNAVAILABLE))
            }
        }
    }

    /// Signs `csr_pem` for the cluster and records the certificate.
    async fn issue(
        &self,
        namespace: &str,
        name: &str,
        cluster_uid: &str,
        csr_pem: &str,
    ) -> Result<String, BoxError> {
        let identity = agent_identity(namespace, name);
        let chain = self
            .ca
            .sign_csr(csr_pem, &identity, self.certificate_validity)?;
        let (serial, not_after) =
            pem_leaf_facts(&chain).ok_or("the issued certificate cannot be read")?;
        self.credentials
            .record_certificate(namespace, name, cluster_uid, &serial)
            .await?;
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(identity, Presented { not_after });
        Ok(chain)
    }

    async fn admit_certificate(
        &self,
        peer: &PeerCertificates,
        common_name: &str,
    ) -> Result<Admitted, Refusal> {
        let (namespace, name) = parse_agent_identity(common_name).ok_or_else(|| {
            Refusal::new(format!(
                "certificate subject {common_name:?} is not an agent identity"
            ))
        })?;
        let cluster = format!("{namespace}/{name}");
        let Some(uid) = self.cluster_uid(namespace, name).await? else {
            return Err(Refusal::new(Rejected::ClusterGone(cluster).to_string()));
        };
        let (serial, not_after) = peer
            .leaf()
            .and_then(|c| leaf_facts(c))
            .ok_or_else(|| Refusal::new("unreadable client certificate"))?;
        let valid = self
            .credentials
            .certificate_valid(namespace, name, &uid, &serial)
            .await
            .map_err(refusal)?;
        if !valid {
            return Err(Refusal::new(
                Rejected::CertificateRevoked(cluster).to_string(),
            ));
        }
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(common_name.to_string(), Presented { not_after });
        Ok(Admitted {
            identity: common_name.to_string(),
            issue_certificate: None,
        })
    }

    async fn admit_token(&self, hello: &Hello, token: &str) -> Result<Admitted, Refusal> {
        let csr = hello
            .csr_pem
            .as_deref()
            .ok_or_else(|| Refusal::new("a bootstrap token needs a CSR"))?;
        let owner = self
            .credentials
            .redeem_token(token)
            .await
            .map_err(refusal)?;
        let cluster = format!("{}/{}", owner.namespace, owner.name);
        if self
            .cluster_uid(&owner.namespace, &owner.name)
            .await?
            .as_deref()
            != Some(owner.cluster_uid.as_str())
        {
            return Err(Refusal::new(Rejected::ClusterGone(cluster).to_string()));
        }
        let identity = agent_identity(&owner.namespace, &owner.name);
        if let Some(claim) = hello.identity_claim.as_deref().filter(|c| *c != identity) {
            tracing::warn!(%claim, %identity, "an agent claimed another identity than its token's; using the token's");
        }
        let chain = self
            .issue(&owner.namespace, &owner.name, &owner.cluster_uid, csr)
            .await
            .map_err(|e| {
                Refusal::new(format!(
                    "the hub could not sign the agent's certificate: {e}"
                ))
            })?;
        tracing::info!(%identity, "agent enrolled");
        Ok(Admitted {
            identity,
            issue_certificate: Some(chain),
        })
    }
}

#[async_trait]
impl Admission for HubAdmission {
    async fn admit(&self, hello: &Hello, peer: &PeerCertificates) -> Result<Admitted, Refusal> {
        if let Some(common_name) = peer.common_name() {
            return self.admit_certificate(peer, &common_name).await;
        }
        match hello.bootstrap_token.as_deref() {
            Some(token) => self.admit_token(hello, token).await,
            None => Err(Refusal::new("no client certificate and no bootstrap token")),
        }
    }
}

#[async_trait]
impl CertificateSigner for HubAdmission {
    async fn sign(&self, identity: &str, csr_pem: &str) -> Result<String, BoxError> {
        let (namespace, name) = parse_agent_identity(identity).ok_or("not an agent identity")?;
        let uid = self
            .cluster_uid(namespace, name)
            .await
            .map_err(|r| r.reason)?
            .ok_or("the cluster no longer exists")?;
        self.issue(namespace, name, &uid, csr_pem).await
    }
}
