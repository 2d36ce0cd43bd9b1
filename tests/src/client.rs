//! A raw HTTP/2 client for the hub, configured from a kubeconfig: for benchmarks and for tests
//! that need more than kubectl (thousands of watch streams, exact status codes).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Several HTTP/2 connections to the hub, used round-robin.
#[derive(Clone)]
pub struct HubClient {
    senders: Arc<Vec<SendRequest<Full<Bytes>>>>,
    next: Arc<AtomicUsize>,
    base: String,
}

struct Kubeconfig {
    server: String,
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_kubeconfig(path: &Path) -> anyhow::Result<Kubeconfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value = serde_yaml_ng::from_str(&text)?;
    let field = |v: &serde_json::Value| -> anyhow::Result<Vec<u8>> {
        Ok(STANDARD.decode(v.as_str().context("missing kubeconfig field")?)?)
    };
    Ok(Kubeconfig {
        server: config["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("no server")?
            .to_string(),
        ca: field(&config["clusters"][0]["cluster"]["certificate-authority-data"])?,
        cert: field(&config["users"][0]["user"]["client-certificate-data"])?,
        key: field(&config["users"][0]["user"]["client-key-data"])?,
    })
}

impl HubClient {
    /// Opens `connections` HTTP/2 connections with the kubeconfig's server and client certificate.
    pub async fn connect(kubeconfig: &Path, connections: usize) -> anyhow::Result<HubClient> {
        let config = read_kubeconfig(kubeconfig)?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&config.ca) {
            roots.add(ca?)?;
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&config.cert).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(&config.key)?;
        let mut tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_client_auth_cert(certs, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let authority = config
            .server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .to_string();
        let server_name = ServerName::try_from(host)?;
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let tcp = TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name.clone(), tcp).await?;
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(16 << 20)
                .handshake(TokioIo::new(tls))
                .await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        Ok(HubClient {
            senders: Arc::new(senders),
            next: Arc::new(AtomicUsize::new(0)),
            base: format!("https://{authority}"),
        })
    }

    fn sender(&self) -> SendRequest<Full<Bytes>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        self.senders[i].clone()
    }

    /// Sends a request and returns the response head and streaming body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let mut sender = self.sender();
        sender.ready().await?;
        Ok(sender.send_request(req.body(Full::new(body))?).await?)
    }

    /// Sends a request and reads the whole body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, content_type, body).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}
