//! The two ways the agent talks to its kube-apiserver, both behind the agent's own credentials:
//!
//! * **pooled**: a hyper client with a connection pool (HTTP/2 when the server offers it, as
//!   client-go does, else HTTP/1.1). Bodies stream both ways; nothing is buffered.
//! * **upgrade**: one fresh HTTP/1.1 connection per request, because protocol upgrades
//!   (`Connection: Upgrade`, 101) exist only in HTTP/1.1; the connection is driven with
//!   upgrades enabled so the caller can take the socket over after a 101.
//!
//! Both are `tower` services from an absolute-URI request to a response, wrapped in kube-rs's
//! authentication layer, which sets `Authorization` from the kubeconfig or service account
//! (static token, token file re-read every minute, exec plugin); client certificates are in the
//! TLS configuration instead. TLS is verified against the kubeconfig's CA or the service
//! account's `ca.crt` (re-read as it rotates), honouring `tls-server-name`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use edgefleet_tunnel::{body, BoxError, TunnelBody};
use http::{header, HeaderValue, Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kube::client::ConfigExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::error::{Error, Result};
use crate::timeouts::{
    UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_KEEPALIVE_INTERVAL, UPSTREAM_POOL_IDLE_TIMEOUT,
};

/// A request to the upstream (absolute URI) and its response.
pub type Transport = BoxCloneSyncService<Request<TunnelBody>, Response<TunnelBody>, BoxError>;

/// Sends `req` on `transport`. The boxed, named future type keeps the compiler from having to
/// prove `Send` for the oneshot future over every lifetime of `BoxError` in async callers.
pub(crate) fn send(
    transport: &Transport,
    req: Request<TunnelBody>,
) -> Pin<Box<dyn Future<Output = Result<Response<TunnelBody>, BoxError>> + Send>> {
    Box::pin(transport.clone().oneshot(req))
}

/// Both transports of one upstream.
#[derive(Clone)]
pub struct Transports {
    /// Ordinary requests.
    pub pooled: Transport,
    /// Protocol upgrades.
    pub upgrade: Transport,
}

impl Transports {
    /// Builds both transports from a kube-rs configuration (kubeconfig or in-cluster).
    pub fn from_config(config: &kube::Config) -> Result<Self> {
        let tls = config
            .rustls_client_config()
            .map_err(Error::UpstreamClient)?;
        let server_name = match &config.tls_server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| Error::UpstreamUrl(format!("tls-server-name {name}")))?,
            ),
            None => None,
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
        let mut https = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http();
        if let Some(name) = &server_name {
            https = https.with_server_name_resolver(FixedServerNameResolver::new(name.clone()));
        }
        let https = https.enable_http1().enable_http2().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE_TIMEOUT)
            .http2_keep_alive_interval(UPSTREAM_KEEPALIVE_INTERVAL)
            .build::<_, TunnelBody>(https);
        let pooled = client
            .map_response(|response| response.map(body::boxed))
            .map_err(BoxError::from);

        let mut http1_tls = tls;
        http1_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let upgrade = UpgradeConnector {
            tls: TlsConnector::from(Arc::new(http1_tls)),
            server_name,
        };
        let upgrade = tower::service_fn(move |req| upgrade.clone().send(req));

        let auth = config.auth_layer().map_err(Error::UpstreamClient)?;
        Ok(Self::with_auth(auth, pooled, upgrade))
    }

    /// Wraps two inner transports in `auth` (tests use this with in-memory transports).
    pub fn with_auth<P, U>(
        auth: Option<kube::client::middleware::AuthLayer>,
        pooled: P,
        upgrade: U,
    ) -> Self
    where
        P: tower::Service<Request<TunnelBody>, Response = Response<TunnelBody>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        P::Future: Send + 'static,
        U: tower::Service<Request<TunnelBody>, Response = Response<TunnelBody>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        U::Future: Send + 'static,
    {
        match auth {
            Some(auth) => Self {
                pooled: BoxCloneSyncService::new(auth.layer(pooled)),
                upgrade: BoxCloneSyncService::new(auth.layer(upgrade)),
            },
            None => Self {
                pooled: BoxCloneSyncService::new(pooled),
                upgrade: BoxCloneSyncService::new(upgrade),
            },
        }
    }
}

/// Opens one HTTP/1.1 connection per request, with upgrades enabled.
#[derive(Clone)]
struct UpgradeConnector {
    tls: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl UpgradeConnector {
    async fn send(self, mut req: Request<TunnelBody>) -> Result<Response<TunnelBody>, BoxError> {
        let uri = req.uri().clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported upstream scheme {other:?}").into()),
        };
        let host = uri.host().ok_or("upstream URI without a host")?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });

        let tcp = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if https {
            let name = match &self.server_name {
                Some(name) => name.clone(),
                None => ServerName::try_from(host.to_owned())?,
            };
            Box::new(self.tls.connect(name, tcp).await?)
        } else {
            Box::new(tcp)
        };

        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream upgrade connection ended");
            }
        });

        // HTTP/1.1 origin form, with the upstream's own Host.
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()?;
        *req.uri_mut() = path;
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&authority)?);
        let response = sender.send_request(req).await?;
        Ok(response.map(body::boxed))
    }
}
