//! Paths the tunnel keeps for itself, under `/.well-known/edgefleet-tunnel`.
//!
//! The agent answers them itself and never forwards them to its cluster; the hub's dialer
//! refuses to send them on a caller's behalf, so a kubectl user proxying through the hub cannot
//! reach them. Both sides use the same literal prefix test ([`is_reserved`]) so they always
//! agree on what is reserved.
//!
//! | method + path                     | answer                                              |
//! |-----------------------------------|-----------------------------------------------------|
//! | `GET  …/ready`                    | `204`: the hub's probe before it registers a session |
//! | `POST …/csr`                      | `200`, a CSR for a freshly generated key (kept pending) |
//! | `PUT  …/certificate`              | `204` once the chain for the pending key is stored   |

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body::{self, TunnelBody};
use crate::error::{BoxError, Error, Result};
use crate::identity::{generate_csr, IdentityStore, PendingKey};
use crate::limits::MAX_RESERVED_BODY_BYTES;

/// Prefix of every reserved path.
pub const RESERVED_PREFIX: &str = "/.well-known/edgefleet-tunnel";
pub(crate) const READY_PATH: &str = "/.well-known/edgefleet-tunnel/ready";
pub(crate) const CSR_PATH: &str = "/.well-known/edgefleet-tunnel/csr";
pub(crate) const CERTIFICATE_PATH: &str = "/.well-known/edgefleet-tunnel/certificate";

/// Whether `path` belongs to the tunnel rather than to the agent's cluster.
pub fn is_reserved(path: &str) -> bool {
    path.starts_with(RESERVED_PREFIX)
}

/// The agent's handler for reserved paths.
#[derive(Debug)]
pub(crate) struct ReservedHandler {
    store: IdentityStore,
    identity_claim: Option<String>,
    /// The key of a rotation in progress: generated on `POST …/csr`, stored with its certificate
    /// on `PUT …/certificate`. A second CSR request replaces it (the hub retried).
    pending: Mutex<Option<PendingKey>>,
}

impl ReservedHandler {
    pub(crate) fn new(store: IdentityStore, identity_claim: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            store,
            identity_claim,
            pending: Mutex::new(None),
        })
    }

    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<TunnelBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        match (req.method(), req.uri().path()) {
            (&Method::GET, READY_PATH) => status(StatusCode::NO_CONTENT),
            (&Method::POST, CSR_PATH) => match generate_csr(self.identity_claim.as_deref()) {
                Ok((key, csr)) => {
                    *self.pending_slot() = Some(key);
                    tracing::info!("hub requested a certificate rotation; new key generated");
                    Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/pkcs10")
                        .body(body::full(csr))
                        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR))
                }
                Err(error) => {
                    tracing::warn!(%error, "generating a key for certificate rotation failed");
                    status(StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
            (&Method::PUT, CERTIFICATE_PATH) => self.install_certificate(req.into_body()).await,
            _ => status(StatusCode::NOT_FOUND),
        }
    }

    async fn install_certificate<B>(&self, body: B) -> Response<TunnelBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let chain = match read_limited(body).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE),
        };
        let Some(key) = self.pending_slot().take() else {
            return status(StatusCode::CONFLICT);
        };
        let stored = key
            .complete(chain)
            .and_then(|identity| self.store.store(&identity).map(|()| identity));
        match stored {
            Ok(identity) => {
                tracing::info!(
                    serial = identity.serial_hex().unwrap_or_default(),
                    "rotated certificate stored; it is used from the next connection"
                );
                status(StatusCode::NO_CONTENT)
            }
            Err(error) => {
                tracing::warn!(%error, "refusing the rotated certificate");
                status(StatusCode::BAD_REQUEST)
            }
        }
    }

    fn pending_slot(&self) -> std::sync::MutexGuard<'_, Option<PendingKey>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn status(code: StatusCode) -> Response<TunnelBody> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = code;
    response
}

/// Reads a control body of at most [`MAX_RESERVED_BODY_BYTES`].
pub(crate) async fn read_limited<B>(body: B) -> Result<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    Limited::new(body, MAX_RESERVED_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(Error::ControlBody)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_test_is_literal() {
        assert!(is_reserved("/.well-known/edgefleet-tunnel/csr"));
        assert!(is_reserved("/.well-known/edgefleet-tunnel"));
        assert!(!is_reserved("/api/v1/namespaces"));
        // Not the literal prefix: the agent forwards it (to a cluster that serves no such
        // path), so the hub may send it too. Both sides agree because they share this test.
        assert!(!is_reserved("//.well-known/edgefleet-tunnel/csr"));
        assert!(!is_reserved("/./.well-known/edgefleet-tunnel/csr"));
    }

    #[tokio::test]
    async fn rotation_needs_a_pending_key_and_a_matching_certificate() {
        let handler = ReservedHandler::new(IdentityStore::in_memory(), Some("cluster:a/b".into()));
        let put = |chain: String| {
            Request::put(CERTIFICATE_PATH)
                .body(http_body_util::Full::new(Bytes::from(chain)))
                .unwrap()
        };
        // No CSR was requested: nothing to pair a certificate with.
        assert_eq!(
            handler.handle(put("x".into())).await.status(),
            StatusCode::CONFLICT
        );

        let ca = crate::CertificateAuthority::generate("ca", std::time::Duration::from_secs(3600))
            .unwrap();
        let csr_response = handler
            .handle(
                Request::post(CSR_PATH)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await;
        assert_eq!(csr_response.status(), StatusCode::OK);
        let csr = read_limited(csr_response.into_body()).await.unwrap();
        let csr = std::str::from_utf8(&csr).unwrap();

        // A certificate for some other key is refused and nothing is stored.
        let (_, other_csr) = generate_csr(None).unwrap();
        let wrong = ca
            .sign_csr(
                &other_csr,
                "cluster:a/b",
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            handler.handle(put(wrong)).await.status(),
            StatusCode::BAD_REQUEST
        );
        assert!(handler.store.load().unwrap().is_none());

        // The pending key was consumed by the failed attempt; the hub starts over.
        let csr_response = handler
            .handle(
                Request::post(CSR_PATH)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await;
        let csr2 = read_limited(csr_response.into_body()).await.unwrap();
        assert_ne!(csr.as_bytes(), &csr2[..], "a fresh key per rotation");
        let right = ca
            .sign_csr(
                std::str::from_utf8(&csr2).unwrap(),
                "cluster:a/b",
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            handler.handle(put(right.clone())).await.status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            handler.store.load().unwrap().unwrap().certificate_chain_pem,
            right
        );
    }

    #[tokio::test]
    async fn unknown_reserved_paths_are_not_found() {
        let handler = ReservedHandler::new(IdentityStore::in_memory(), None);
        let res = handler
            .handle(
                Request::get("/.well-known/edgefleet-tunnel/anything")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
