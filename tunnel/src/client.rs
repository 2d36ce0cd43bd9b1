//! The agent's side: dial out, handshake, then serve HTTP/2 to the hub; forever.
//!
//! The connect loop is a two-state machine:
//!
//! ```text
//!            ┌──────────────────────── Dial { failures } ◄───────────────────────┐
//!            │ TCP ─► TLS (client cert if enrolled) ─► Hello ─► Welcome ─► serve  │
//!            ▼                                                                    │
//!   failed, refused, or session shorter than `healthy_session`:                    │
//!       Wait { delay = full_jitter(failures) (+ the hub's retryAfter), failures+1 } ┘
//!   session lasted `healthy_session` or more:
//!       Wait { delay = full_jitter(0), failures = 0 }
//! ```
//!
//! Nothing ends the loop but dropping the [`TunnelClient::run`] future: not a refusal, not a
//! full disk, not a hub that sends garbage. Each failure is logged once, with the hub's reason
//! when it gave one (never with the token).
//!
//! Enrollment: without a stored certificate and with a bootstrap token, the agent sends the
//! token and a CSR; a Welcome carrying a certificate is stored in the [`IdentityStore`]
//! together with the new key. The agent **keeps that connection as its session** (the hub
//! admitted it already; reconnecting just to switch to mutual TLS would double every
//! enrollment's cost during a fleet rollout). Every later connection uses mutual TLS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tower::ServiceExt;

use crate::backoff::Backoff;
use crate::body::{self, TunnelBody};
use crate::error::{error_chain, BoxError, Error, Result};
use crate::handshake::{
    self, Hello, HubReply, Welcome, CAPABILITY_CERTIFICATE_ROTATION, CAPABILITY_EXTENDED_CONNECT,
    PROTOCOL_VERSION,
};
use crate::http2::{
    classify, dead_peer_watchdog, server_builder, Http2Config, Keepalive, SessionExecutor,
    TransportTrace, Watched,
};
use crate::identity::{generate_csr, BootstrapToken, IdentityStore, PendingKey};
use crate::registry::DisconnectReason;
use crate::reserved::{is_reserved, ReservedHandler};
use crate::timeouts::{HANDSHAKE_TIMEOUT, HEALTHY_SESSION, TCP_CONNECT_TIMEOUT};
use crate::tls::{self, ALPN_H2};

/// Configuration of an agent's tunnel.
#[derive(Clone, Debug)]
pub struct TunnelClientConfig {
    /// The hub's tunnel address, `host:port`.
    pub hub_addr: String,
    /// The name the hub's certificate must carry.
    pub server_name: ServerName<'static>,
    /// CAs the agent trusts for the hub's certificate.
    pub hub_roots: Arc<RootCertStore>,
    /// Where the agent's key and certificate live.
    pub identity: IdentityStore,
    /// Identity the agent claims in its Hello (and CSRs), e.g. `cluster:retail/edge-1`.
    pub identity_claim: Option<String>,
    /// Enrollment token, used while the identity store is empty.
    pub bootstrap_token: Option<BootstrapToken>,
    /// Reported to the hub.
    pub agent_version: String,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// A session this long resets the backoff.
    pub healthy_session: Duration,
    /// TCP connect budget.
    pub connect_timeout: Duration,
    /// TLS + Hello/Welcome budget.
    pub handshake_timeout: Duration,
    /// HTTP/2 windows and limits of the agent's server.
    pub http2: Http2Config,
}

impl TunnelClientConfig {
    /// Defaults from [`crate::timeouts`] and [`crate::limits`]; no claim, no token.
    pub fn new(
        hub_addr: impl Into<String>,
        server_name: ServerName<'static>,
        hub_roots: RootCertStore,
        identity: IdentityStore,
    ) -> Self {
        Self {
            hub_addr: hub_addr.into(),
            server_name,
            hub_roots: Arc::new(hub_roots),
            identity,
            identity_claim: None,
            bootstrap_token: None,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            backoff: Backoff::default(),
            healthy_session: HEALTHY_SESSION,
            connect_timeout: TCP_CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            http2: Http2Config::default(),
        }
    }

    /// The longest an agent takes to reconnect once the hub answers again: one full backoff
    /// wait plus one connect and handshake.
    pub fn reconnect_bound(&self) -> Duration {
        self.backoff.cap + self.connect_timeout + self.handshake_timeout
    }
}

/// What the agent's tunnel is doing, for health endpoints and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    /// Dialing; `failures` consecutive attempts have failed before this one.
    Connecting {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Serving a session.
    Connected {
        /// The identity the hub admitted.
        identity: String,
        /// The hub replica holding the session.
        hub_replica: String,
    },
    /// Waiting before the next attempt.
    Waiting {
        /// How long.
        retry_in: Duration,
        /// Why the last attempt or session ended (the hub's reason for a refusal).
        last_error: String,
    },
}

/// The agent's tunnel. See the module docs.
pub struct TunnelClient<S> {
    agent: Agent,
    service: S,
}

impl<S> std::fmt::Debug for TunnelClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelClient")
            .field("hub_addr", &self.agent.config.hub_addr)
            .finish_non_exhaustive()
    }
}

/// Everything but the service; `Sync`, so the loop can borrow it across awaits whatever the
/// service is.
struct Agent {
    config: Arc<TunnelClientConfig>,
    reserved: Arc<ReservedHandler>,
    status: watch::Sender<AgentStatus>,
}

enum State {
    Dial { failures: u32 },
    Wait { failures: u32, delay: Duration },
}

impl<S, B> TunnelClient<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// An agent that serves `service` to the hub. Requests to reserved paths never reach it.
    /// Extended CONNECT requests do: the service answers 2xx and takes the stream over with
    /// `hyper::upgrade::on(&mut request)` (see [`crate::UpgradedStream`]).
    pub fn new(config: TunnelClientConfig, service: S) -> Self {
        let reserved = ReservedHandler::new(config.identity.clone(), config.identity_claim.clone());
        let (status, _) = watch::channel(AgentStatus::Connecting { failures: 0 });
        Self {
            agent: Agent {
                config: Arc::new(config),
                reserved,
                status,
            },
            service,
        }
    }

    /// Follows the tunnel's state.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.agent.status.subscribe()
    }

    /// Runs the connect loop until the future is dropped (which closes the tunnel).
    pub async fn run(self) {
        let Self { agent, service } = self;
        let mut state = State::Dial { failures: 0 };
        loop {
            state = match state {
                State::Dial { failures } => agent.attempt(failures, service.clone()).await,
                State::Wait { failures, delay } => {
                    tokio::time::sleep(delay).await;
                    State::Dial { failures }
                }
            };
        }
    }
}

impl Agent {
    async fn attempt<S, B>(&self, failures: u32, service: S) -> State
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let backoff = self.config.backoff;
        self.status
            .send_replace(AgentStatus::Connecting { failures });
        // Boxed: the handshake's state is large and short-lived; inline, it would stay part of
        // this future for the whole session.
        let (tls, welcome) = match Box::pin(self.dial()).await {
            Ok(connected) => connected,
            Err(Error::Refused {
                reason,
                retry_after,
            }) => {
                tracing::warn!(
                    retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                    "the hub refused this agent: {reason}"
                );
                // Never earlier than the hub asked; jittered so agents refused together do not
                // come back together.
                let delay = retry_after.unwrap_or_default() + backoff.delay(failures);
                return self.wait(failures, delay, format!("refused by the hub: {reason}"));
            }
            Err(error) => {
                let error = error_chain(&error);
                tracing::warn!(failures, "connecting to the hub failed: {error}");
                return self.wait(failures, backoff.delay(failures), error);
            }
        };

        tracing::info!(
            identity = %welcome.identity,
            hub_replica = %welcome.hub_replica,
            "tunnel to the hub established"
        );
        self.status.send_replace(AgentStatus::Connected {
            identity: welcome.identity.clone(),
            hub_replica: welcome.hub_replica.clone(),
        });
        let started = Instant::now();
        let reason = self.serve(tls, &welcome, service).await;
        let lasted = started.elapsed();
        tracing::warn!(
            ?reason,
            lasted_ms = lasted.as_millis() as u64,
            "tunnel to the hub lost"
        );
        let error = format!("session ended: {reason:?}");
        if lasted >= self.config.healthy_session {
            self.wait(0, backoff.delay(0), error)
        } else {
            self.wait(failures, backoff.delay(failures), error)
        }
    }

    fn wait(&self, failures: u32, delay: Duration, last_error: String) -> State {
        self.status.send_replace(AgentStatus::Waiting {
            retry_in: delay,
            last_error,
        });
        State::Wait {
            failures: failures.saturating_add(1),
            delay,
        }
    }

    /// TCP, TLS and the Hello/Welcome exchange.
    async fn dial(&self) -> Result<(TlsStream<TcpStream>, Welcome)> {
        let config = &*self.config;
        let stored = config.identity.load()?;
        let enrollment: Option<(&BootstrapToken, PendingKey, String)> =
            match (&stored, &config.bootstrap_token) {
                (None, Some(token)) => {
                    let (key, csr) = generate_csr(config.identity_claim.as_deref())?;
                    Some((token, key, csr))
                }
                _ => None,
            };
        let client_identity = stored
            .as_ref()
            .map(|id| (id.certificate_chain_pem.as_str(), id.key_pem()));
        let connector = TlsConnector::from(Arc::new(tls::client_config(
            config.hub_roots.clone(),
            client_identity,
        )?));

        let tcp =
            tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.hub_addr))
                .await
                .map_err(|_| Error::Timeout("TCP connect"))?
                .map_err(Error::Connect)?;
        tcp.set_nodelay(true).map_err(Error::Connect)?;

        let handshake = async {
            let mut tls = connector
                .connect(config.server_name.clone(), tcp)
                .await
                .map_err(Error::Connect)?;
            if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(Error::Protocol("the hub did not negotiate ALPN h2".into()));
            }
            let (token, csr_pem) = match &enrollment {
                Some((token, _, csr)) => (Some(token.expose().to_owned()), Some(csr.clone())),
                None => (None, None),
            };
            let hello = Hello {
                protocol_version: PROTOCOL_VERSION,
                agent_version: config.agent_version.clone(),
                identity_claim: config.identity_claim.clone(),
                bootstrap_token: token,
                csr_pem,
                capabilities: vec![
                    CAPABILITY_EXTENDED_CONNECT.to_owned(),
                    CAPABILITY_CERTIFICATE_ROTATION.to_owned(),
                ],
            };
            handshake::write_message(&mut tls, &hello)
                .await
                .map_err(Error::Handshake)?;
            let reply: HubReply = handshake::read_message(&mut tls)
                .await
                .map_err(Error::Handshake)?;
            match reply {
                HubReply::Refused(refused) => Err(Error::Refused {
                    retry_after: refused.retry_after(),
                    reason: refused.reason,
                }),
                HubReply::Welcome(welcome) => Ok((tls, welcome)),
            }
        };
        let (tls, welcome) = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| Error::Timeout("tunnel handshake"))??;

        if let Some(chain) = &welcome.certificate_chain_pem {
            match enrollment {
                Some((_, key, _)) => self.enroll(key, chain.clone()),
                None => tracing::warn!(
                    "the hub sent a certificate this agent did not request; ignoring it"
                ),
            }
        }
        Ok((tls, welcome))
    }

    /// Stores the certificate the hub issued on enrollment. A failure here does not end the
    /// session the hub already admitted; it is logged, and the next connect tries the token again.
    fn enroll(&self, key: PendingKey, chain: String) {
        match key
            .complete(chain)
            .and_then(|identity| self.config.identity.store(&identity))
        {
            Ok(()) => {
                tracing::info!("enrolled: certificate stored; later connections use mutual TLS")
            }
            Err(error) => tracing::error!(
                "storing the enrollment certificate failed: {}",
                error_chain(&error)
            ),
        }
    }

    /// Serves HTTP/2 on the connection until it ends.
    async fn serve<S, B>(
        &self,
        tls: TlsStream<TcpStream>,
        welcome: &Welcome,
        service: S,
    ) -> DisconnectReason
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let keepalive = Keepalive::from_wire(welcome.keepalive);
        let session = CancellationToken::new();
        // Stream tasks hyper spawned for this connection end with it, whatever `service` does.
        let _stop_tasks = session.clone().drop_guard();
        let trace = TransportTrace::new();
        let io = TokioIo::new(Watched::new(tls, trace.clone()));
        let service = AgentService {
            user: service,
            reserved: self.reserved.clone(),
        };
        let connection =
            server_builder(&self.config.http2, keepalive, SessionExecutor::new(session))
                .serve_connection(io, service);
        // The connection runs as a task of its own, on a runtime worker like the stream tasks
        // it hands requests to. Polled inline, it would run wherever the caller runs: an
        // agent's `main` is `block_on`'s thread, not a worker, so every frame between the
        // connection and its streams crossed threads (a futex wake each way and a contended h2
        // lock), a third of a small request's latency through the agent.
        let connection = AbortOnDropHandle::new(tokio::spawn(connection));
        tokio::select! {
            res = connection => match res {
                Ok(res) => classify(&trace, keepalive, res.err()),
                Err(join) => DisconnectReason::ConnectionError(format!("connection task: {join}")),
            },
            () = dead_peer_watchdog(&trace, keepalive.watchdog_after()) => DisconnectReason::KeepaliveTimeout,
        }
    }
}

/// The agent's HTTP/2 service: reserved paths to the tunnel's handler, the rest to the user's.
struct AgentService<S> {
    user: S,
    reserved: Arc<ReservedHandler>,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<TunnelBody>, BoxError>> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for AgentService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<TunnelBody>;
    type Error = BoxError;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if is_reserved(req.uri().path()) {
            let reserved = self.reserved.clone();
            return Box::pin(async move { Ok(reserved.handle(req).await) });
        }
        let user = self.user.clone();
        Box::pin(async move {
            let response = user.oneshot(req).await.map_err(Into::into)?;
            Ok(response.map(body::boxed))
        })
    }
}
