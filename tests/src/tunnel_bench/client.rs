//! The load generator's HTTP/2 client: the same client (TLS 1.3 by rustls with ring, ALPN h2,
//! the same windows as the hub's test client) for every path, so paths differ only in what
//! stands between the client and the upstream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Receive window per stream (as `edgefleet_e2e::client::HubClient`).
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Receive window per connection.
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// Where a client connects and how it authenticates.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    pub tls: Arc<ClientConfig>,
    /// Prefixed to every request path (the hub's `…/clusters/{name}/proxy`).
    pub prefix: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint trusting `roots`, with an optional client certificate (PEM chain and key).
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        roots: RootCertStore,
        client_identity: Option<(&str, &str)>,
        prefix: &str,
    ) -> anyhow::Result<Endpoint> {
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
        let mut tls = match client_identity {
            Some((chain, key)) => {
                let certs: Vec<CertificateDer<'static>> =
                    edgefleet_tunnel::tls::certificates_from_pem(chain)?;
                let key: PrivateKeyDer<'static> = edgefleet_tunnel::tls::private_key_from_pem(key)?;
                builder.with_client_auth_cert(certs, key)?
            }
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Endpoint {
            addr,
            server_name: ServerName::try_from(server_name.to_string())?,
            tls: Arc::new(tls),
            prefix: prefix.to_string(),
        })
    }
}

/// Several HTTP/2 connections to one endpoint, used round-robin. Cheap to clone.
#[derive(Clone)]
pub struct H2Client {
    senders: Arc<Vec<SendRequest<Empty<Bytes>>>>,
    next: Arc<AtomicUsize>,
    base: Arc<str>,
}

impl H2Client {
    /// Opens `connections` connections.
    pub async fn connect(endpoint: &Endpoint, connections: usize) -> anyhow::Result<H2Client> {
        let connector = TlsConnector::from(endpoint.tls.clone());
        let mut senders = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let tcp = TcpStream::connect(endpoint.addr)
                .await
                .with_context(|| format!("connecting to {}", endpoint.addr))?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(endpoint.server_name.clone(), tcp)
                .await
                .with_context(|| format!("TLS to {}", endpoint.addr))?;
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .handshake(TokioIo::new(tls))
                .await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        let host = match &endpoint.server_name {
            ServerName::DnsName(name) => name.as_ref().to_string(),
            _ => endpoint.addr.ip().to_string(),
        };
        Ok(H2Client {
            senders: Arc::new(senders),
            next: Arc::new(AtomicUsize::new(0)),
            base: format!("https://{host}:{}{}", endpoint.addr.port(), endpoint.prefix).into(),
        })
    }

    /// Sends `GET <prefix><path>` and returns the response with its streaming body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response<Incoming>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let mut sender = self.senders[i].clone();
        sender.ready().await?;
        let req = Request::get(format!("{}{path}", self.base)).body(Empty::new())?;
        Ok(sender.send_request(req).await?)
    }

    /// `GET`, reading and discarding the whole body; returns the status and the body's size.
    pub async fn get_drain(&self, path: &str) -> anyhow::Result<(StatusCode, u64)> {
        let response = self.get(path).await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = 0_u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        Ok((status, bytes))
    }
}
