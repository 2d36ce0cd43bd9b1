//! The tunnel alone, hub side (`tunnel-bench serve-hub`): the tunnel crate's `TunnelServer`
//! with an admission that takes the client certificate's CN as the identity, and an HTTPS
//! front (HTTP/2, configured as the hub's own listener) that sends every request to the one
//! agent through its `Dialer`, adding the `Impersonate-User` the agent requires and streaming
//! the response back.
//!
//! It is what the hub's `clusters/{name}/proxy` does minus authentication, authorization,
//! audit and the Cluster lookup, so the difference between this path and the hub's is the
//! hub's request pipeline, and the difference between this path and the direct one is the
//! tunnel.
//!
//! Prints `listening tunnel=<addr> front=<addr>` once both ports are bound, and
//! `session connected <identity>` / `session disconnected <identity>` as agents come and go.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use edgefleet_tunnel::handshake::Hello;
use edgefleet_tunnel::{
    async_trait, Admission, Admitted, PeerCertificates, Refusal, SessionEventKind, SessionRegistry,
    TunnelServer, TunnelServerConfig,
};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::{self, BenchPki};

/// Streams per client connection, as the hub's own listener allows.
const MAX_CONCURRENT_STREAMS: u32 = 1000;
/// The user the agent impersonates upstream.
const BENCH_USER: &str = "bench";

/// Admits any agent whose client certificate chains to the bench CA (rustls checked that),
/// under the certificate's CN.
struct CommonNameAdmission;

#[async_trait]
impl Admission for CommonNameAdmission {
    async fn admit(&self, _hello: &Hello, peer: &PeerCertificates) -> Result<Admitted, Refusal> {
        match peer.common_name() {
            Some(identity) => Ok(Admitted {
                identity,
                issue_certificate: None,
            }),
            None => Err(Refusal::new(
                "the bench hub admits client certificates only",
            )),
        }
    }
}

type FrontBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves until the process ends.
pub async fn serve(
    pki: &BenchPki,
    tunnel_listen: SocketAddr,
    front_listen: SocketAddr,
) -> anyhow::Result<()> {
    let tls = edgefleet_tunnel::tls::server_config(
        &pki.read("hub.crt")?,
        &pki.read("hub.key")?,
        Some(&pki.read("ca.crt")?),
    )?;
    let server = TunnelServer::new(
        TunnelServerConfig::new(tls, "bench"),
        Arc::new(CommonNameAdmission),
    );
    let tunnel = TcpListener::bind(tunnel_listen).await?;
    let front = TcpListener::bind(front_listen).await?;
    let (tunnel_addr, front_addr) = (tunnel.local_addr()?, front.local_addr()?);

    let mut events = server.registry().subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event.kind {
                SessionEventKind::Connected { .. } => {
                    println!("session connected {}", event.identity)
                }
                SessionEventKind::Disconnected { .. } => {
                    println!("session disconnected {}", event.identity)
                }
            }
        }
    });
    let accepting = server.clone();
    tokio::spawn(async move { accepting.serve(tunnel).await });
    println!("listening tunnel={tunnel_addr} front={front_addr}");

    let mut front_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        edgefleet_tunnel::tls::certificates_from_pem(&pki.read("hub.crt")?)?,
        edgefleet_tunnel::tls::private_key_from_pem(&pki.read("hub.key")?)?,
    )?;
    front_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(front_tls));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    let registry = server.registry().clone();
    let identity: Arc<str> = pki::identity().into();
    loop {
        let Ok((tcp, _)) = front.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, builder) = (acceptor.clone(), builder.clone());
        let (registry, identity) = (registry.clone(), identity.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let (registry, identity) = (registry.clone(), identity.clone());
                async move { Ok::<_, Infallible>(forward(&registry, &identity, req).await) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// One request to the agent, response streamed back.
async fn forward(
    registry: &SessionRegistry,
    identity: &str,
    req: Request<Incoming>,
) -> Response<FrontBody> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut out = Request::builder().method(parts.method).uri(path);
    for (name, value) in &parts.headers {
        if name != header::HOST {
            out = out.header(name, value);
        }
    }
    out = out.header("impersonate-user", HeaderValue::from_static(BENCH_USER));
    let request = match out.body(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match registry.dialer(identity).send(request).await {
        Ok(response) => response.map(|b| b.map_err(Into::into).boxed()),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn error(status: StatusCode, message: String) -> Response<FrontBody> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(message)).map_err(Into::into).boxed())
        .expect("a static response")
}
