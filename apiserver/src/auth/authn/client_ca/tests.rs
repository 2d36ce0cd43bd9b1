//! Real TLS handshakes over in-memory pipes: the socket is not what is tested.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::http::tls::{certs_from_pem, provider};
use crate::pki::{self, CertificateAuthority, LeafSpec};

struct Pki {
    serving_ca: CertificateAuthority,
    server: Arc<rustls::ServerConfig>,
}

fn der(ca: &CertificateAuthority) -> CertificateDer<'static> {
    certs_from_pem(ca.certificate_pem().as_bytes())
        .unwrap()
        .remove(0)
}

impl Pki {
    fn new(verifier: Arc<ClientCertificateAuthorities>) -> Pki {
        let serving_ca = pki::generate_ca("serving-ca").unwrap();
        let serving = pki::issue(&serving_ca, &LeafSpec::server("hub", &["hub"], &[])).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs_from_pem(serving.certificate_chain_pem.as_bytes()).unwrap(),
                PrivateKeyDer::from_pem_slice(serving.key_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        Pki {
            serving_ca,
            server: Arc::new(server),
        }
    }

    /// Handshakes as a client holding a certificate from `client_ca` (if any); returns the
    /// chain the server saw, or the handshake error.
    async fn connect(
        &self,
        client_ca: Option<&CertificateAuthority>,
    ) -> Result<Vec<CertificateDer<'static>>, std::io::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(der(&self.serving_ca)).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client = match client_ca {
            Some(ca) => {
                let leaf = pki::issue(ca, &LeafSpec::client("alice", &[])).unwrap();
                builder
                    .with_client_auth_cert(
                        certs_from_pem(leaf.certificate_chain_pem.as_bytes()).unwrap(),
                        PrivateKeyDer::from_pem_slice(leaf.key_pem().as_bytes()).unwrap(),
                    )
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(self.server.clone());
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await?;
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .unwrap_or_default()
                .to_vec();
            // One byte each way proves the session works.
            let mut byte = [0];
            tls.read_exact(&mut byte).await?;
            tls.write_all(&byte).await?;
            tls.flush().await?;
            Ok::<_, std::io::Error>(chain)
        });
        let connector = TlsConnector::from(Arc::new(client));
        let handshake = async {
            let mut tls = connector
                .connect(ServerName::try_from("hub").unwrap(), client_io)
                .await?;
            tls.write_all(b"x").await?;
            tls.flush().await?;
            let mut byte = [0];
            tls.read_exact(&mut byte).await?;
            Ok::<_, std::io::Error>(())
        };
        let client_result = handshake.await;
        let server_result = server.await.unwrap();
        client_result?;
        server_result
    }
}

#[tokio::test]
async fn fixed_and_cluster_cas_are_trusted_and_the_cluster_part_follows_changes() {
    let file_ca = pki::generate_ca("file-ca").unwrap();
    let cluster_ca = pki::generate_ca("cluster-ca").unwrap();
    let rotated_ca = pki::generate_ca("rotated-ca").unwrap();
    let stranger = pki::generate_ca("stranger").unwrap();

    let cas = Arc::new(ClientCertificateAuthorities::new(vec![der(&file_ca)]).unwrap());
    let pki = Pki::new(cas.clone());

    assert_eq!(pki.connect(Some(&file_ca)).await.unwrap().len(), 1);
    assert!(
        pki.connect(Some(&cluster_ca)).await.is_err(),
        "not trusted yet"
    );
    assert!(
        pki.connect(None).await.unwrap().is_empty(),
        "no certificate: left to the other authenticators"
    );

    cas.set_dynamic(&[der(&cluster_ca)]).unwrap();
    assert_eq!(cas.certificates(), vec![der(&file_ca), der(&cluster_ca)]);
    assert_eq!(pki.connect(Some(&cluster_ca)).await.unwrap().len(), 1);
    assert!(pki.connect(Some(&stranger)).await.is_err());

    // The cluster rotates its CA: the old one is no longer trusted, the file's still is.
    cas.set_dynamic(&[der(&rotated_ca)]).unwrap();
    assert!(pki.connect(Some(&cluster_ca)).await.is_err());
    assert_eq!(pki.connect(Some(&rotated_ca)).await.unwrap().len(), 1);
    assert_eq!(pki.connect(Some(&file_ca)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn with_no_ca_at_all_no_certificate_is_asked_for() {
    let cas = Arc::new(ClientCertificateAuthorities::new(Vec::new()).unwrap());
    assert!(!cas.offer_client_auth());
    let pki = Pki::new(cas.clone());
    let anyone = pki::generate_ca("anyone").unwrap();
    assert!(
        pki.connect(Some(&anyone)).await.unwrap().is_empty(),
        "the client was not asked, so it sent nothing"
    );

    cas.set_dynamic(&[der(&anyone)]).unwrap();
    assert!(cas.offer_client_auth());
    assert_eq!(pki.connect(Some(&anyone)).await.unwrap().len(), 1);
}

#[test]
fn an_unusable_ca_keeps_the_previous_set() {
    let ca = pki::generate_ca("ca").unwrap();
    let cas = ClientCertificateAuthorities::new(Vec::new()).unwrap();
    cas.set_dynamic(&[der(&ca)]).unwrap();
    let garbage = CertificateDer::from(b"not a certificate".to_vec());
    assert!(cas.set_dynamic(&[garbage]).is_err());
    assert_eq!(cas.certificates(), vec![der(&ca)]);
}
