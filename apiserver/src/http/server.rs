//! The HTTPS listener: TLS handshakes, HTTP/1.1 and HTTP/2 on one port, graceful shutdown.
//!
//! The one place that knows hyper's connection types: each request (`Request<Incoming>`) gets
//! the connection's [`ConnectionInfo`] and goes to the stack, which is generic over the body;
//! a 101 that carries a [`PendingUpgrade`] is run once it has been sent.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::body::Body;
use super::layers::Next;
use super::upgrade::PendingUpgrade;

/// A TLS handshake that has not finished by then is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish after shutdown begins (watches are cut).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Concurrent HTTP/2 streams per connection: enough for thousands of watches over a few
/// connections (kube-apiserver allows 250 by default; watch-heavy clients need more).
pub const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// Who is on the other end of a connection; put in every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct ConnectionInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain, leaf first, as TLS verified it (empty if none).
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// What the server serves: the stack, for hyper's request bodies.
pub trait HubService: Next<Incoming> + Sync {}

impl<S: Next<Incoming> + Sync> HubService for S {}

/// The HTTP/1.1 and HTTP/2 settings of every connection.
pub fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .enable_connect_protocol();
    builder
}

/// Serves one request of a connection: the stack's answer, and the switched connection of a
/// 101 run in the background (it waits for hyper to hand over the client's side).
pub async fn serve_request<S: HubService>(
    service: S,
    info: Arc<ConnectionInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    req.extensions_mut().insert(info);
    let mut response = service.oneshot(req).await?;
    if let Some(upgrade) = response
        .extensions_mut()
        .remove::<PendingUpgrade>()
        .and_then(|p| p.take())
    {
        tokio::spawn(upgrade.run());
    }
    Ok(response)
}

/// Serves one connection (TLS already done, or in-memory I/O in tests) until it closes.
pub async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    info: Arc<ConnectionInfo>,
    service: S,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HubService,
{
    let hyper_service = service_fn(move |req| serve_request(service.clone(), info.clone(), req));
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), hyper_service)
        .await
}

/// Accepts connections on `listener` until `shutdown` resolves, then drains.
pub async fn serve<S: HubService>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: S,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder());
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%remote, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let info = Arc::new(ConnectionInfo {
                remote: Some(remote),
                peer_certificates: tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(<[_]>::to_vec)
                    .unwrap_or_default(),
            });
            let hyper_service =
                service_fn(move |req| serve_request(service.clone(), info.clone(), req));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), hyper_service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open after the shutdown grace period; closing them");
    }
}
