//! The hub's tunnel acceptor.
//!
//! Per accepted TCP connection, in order, each step bounded:
//!
//! ```text
//!  accept ─► pending slot? ─no─► close (cheapest refusal: no TLS spent)
//!              │ yes
//!              ▼
//!           rate token + handshake slot within ACCEPT_WAIT_TIMEOUT? ─no─► close
//!              │ yes                       ┌──────── HANDSHAKE_TIMEOUT ────────┐
//!              ▼                           │                                   │
//!           TLS 1.3 (ALPN h2) ─► Hello ─► Admission::admit ─► Welcome ─► HTTP/2 client
//!              │ refused: Refused{reason, retryAfter}, close                     │
//!              │                           │ probe GET …/ready ◄─ 204 ───────────┘
//!              ▼
//!           registry.register(identity) ─► session runs until: peer closes, keepalive
//!           fails, the registry closes/replaces it, or the server stops
//! ```
//!
//! The accept loop owns everything it spawns: dropping the [`TunnelServer::serve`] future
//! stops accepting and closes every session it accepted (each emits `Disconnected` with
//! [`DisconnectReason::HubShutdown`]). Calling `serve` again (e.g. on a new listener bound to
//! the same port) starts over with the same registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{error_chain, Error, Result};
use crate::handshake::{self, Hello, HubReply, Refused, Welcome, PROTOCOL_VERSION};
use crate::http2::{
    classify, client_builder, dead_peer_watchdog, Http2Config, Keepalive, SessionExecutor,
    TransportEnd, TransportTrace, Watched,
};
use crate::identity::{Admission, PeerCertificates, Refusal};
use crate::limits;
use crate::rate_limit::TokenBucket;
use crate::registry::{DisconnectReason, Session, SessionParts, SessionRegistry};
use crate::timeouts::{ACCEPT_ERROR_PAUSE, ACCEPT_WAIT_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::tls::ALPN_H2;

/// Limits on how fast and how many new tunnels a hub replica takes on.
#[derive(Clone, Debug, PartialEq)]
pub struct AcceptLimits {
    /// Sustained new tunnels per second (token bucket rate).
    pub rate_per_second: u32,
    /// Token bucket size.
    pub burst: u32,
    /// Connections waiting for a token; more are closed at once.
    pub max_pending: usize,
    /// TLS + Hello handshakes in progress at once.
    pub max_concurrent_handshakes: usize,
    /// How long a connection may wait for a token and a handshake slot.
    pub wait_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            rate_per_second: limits::ACCEPT_RATE_PER_SECOND,
            burst: limits::ACCEPT_BURST,
            max_pending: limits::MAX_PENDING_ACCEPTS,
            max_concurrent_handshakes: limits::MAX_CONCURRENT_HANDSHAKES,
            wait_timeout: ACCEPT_WAIT_TIMEOUT,
        }
    }
}

/// Counters of a tunnel server since it was created, for the hub's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections that became sessions.
    pub admitted: u64,
    /// Connections the hub refused in the handshake (`Refused` sent).
    pub refused: u64,
    /// Connections closed unanswered by the accept limits (before any TLS).
    pub shed: u64,
    /// Handshakes that failed otherwise (TLS errors, garbage, timeouts, no HTTP/2).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    refused: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
}

/// Configuration of a hub's tunnel acceptor.
#[derive(Clone, Debug)]
pub struct TunnelServerConfig {
    /// TLS for the tunnel port (see [`crate::tls::server_config`]); [`TunnelServerConfig::new`]
    /// forces ALPN to `h2`.
    pub tls: Arc<ServerConfig>,
    /// This replica's name, sent to agents in `Welcome`.
    pub hub_replica: String,
    /// Keepalive for every session (told to the agent, too).
    pub keepalive: Keepalive,
    /// Budget for TLS + Hello + admission + first HTTP/2 round trip.
    pub handshake_timeout: Duration,
    /// Accept-rate and concurrency limits.
    pub accept: AcceptLimits,
    /// HTTP/2 windows and limits.
    pub http2: Http2Config,
}

impl TunnelServerConfig {
    /// Defaults from [`crate::timeouts`] and [`crate::limits`].
    pub fn new(mut tls: ServerConfig, hub_replica: impl Into<String>) -> Self {
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        Self {
            tls: Arc::new(tls),
            hub_replica: hub_replica.into(),
            keepalive: Keepalive::default(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            accept: AcceptLimits::default(),
            http2: Http2Config::default(),
        }
    }
}

/// The hub's tunnel acceptor. Cheap to clone.
#[derive(Clone)]
pub struct TunnelServer {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    config: TunnelServerConfig,
    admission: Arc<dyn Admission>,
    registry: SessionRegistry,
    acceptor: TlsAcceptor,
    bucket: TokenBucket,
    pending: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    counters: Counters,
}

impl std::fmt::Debug for TunnelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelServer")
            .field("hub_replica", &self.inner.config.hub_replica)
            .field("sessions", &self.inner.registry.len())
            .finish_non_exhaustive()
    }
}

/// A connection that completed the handshake, before it is registered.
struct Established {
    identity: Arc<str>,
    agent_version: String,
    send: hyper::client::conn::http2::SendRequest<crate::body::TunnelBody>,
    connection: hyper::client::conn::http2::Connection<
        TokioIo<Watched<TlsStream<TcpStream>>>,
        crate::body::TunnelBody,
        SessionExecutor,
    >,
    trace: Arc<TransportTrace>,
}

impl TunnelServer {
    /// A server with a fresh, empty [`SessionRegistry`].
    pub fn new(config: TunnelServerConfig, admission: Arc<dyn Admission>) -> Self {
        let accept = &config.accept;
        let inner = ServerInner {
            acceptor: TlsAcceptor::from(config.tls.clone()),
            bucket: TokenBucket::new(accept.rate_per_second, accept.burst),
            pending: Arc::new(Semaphore::new(accept.max_pending.max(1))),
            handshakes: Arc::new(Semaphore::new(accept.max_concurrent_handshakes.max(1))),
            registry: SessionRegistry::new(),
            counters: Counters::default(),
            admission,
            config,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The registry of this server's sessions.
    pub fn registry(&self) -> &SessionRegistry {
        &self.inner.registry
    }

    /// Counters since the server was created.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        ServerStats {
            admitted: c.admitted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Accepts tunnels on `listener` until the returned future is dropped; dropping it closes
    /// every session it accepted. It never returns on its own: accept errors (e.g. out of file
    /// descriptors) are logged and retried after [`ACCEPT_ERROR_PAUSE`].
    pub async fn serve(&self, listener: TcpListener) {
        let shutdown = CancellationToken::new();
        let _close_all_on_drop = shutdown.clone().drop_guard();
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(%error, "accepting a tunnel connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(pending) = self.inner.pending.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many connections waiting; closing");
                self.inner.counters.shed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let inner = self.inner.clone();
            let shutdown = shutdown.clone();
            let span = tracing::debug_span!("tunnel", %peer);
            tokio::spawn(
                async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = inner.handle(tcp, peer, pending, shutdown.child_token()) => {}
                    }
                }
                .instrument(span),
            );
        }
    }
}

impl ServerInner {
    async fn handle(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        pending: OwnedSemaphorePermit,
        session_token: CancellationToken,
    ) {
        let slot = tokio::time::timeout(
            self.config.accept.wait_timeout,
            Box::pin(async {
                self.bucket.acquire().await;
                self.handshakes.clone().acquire_owned().await
            }),
        )
        .await;
        let Ok(Ok(handshake_slot)) = slot else {
            tracing::debug!("accept rate limit: closing before TLS");
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        drop(pending);

        // hyper's tasks for this connection run under `session_token`; make sure they stop
        // however this function ends.
        let _stop_tasks = session_token.clone().drop_guard();
        let deadline = Instant::now() + self.config.handshake_timeout;
        // Boxed: the handshake's state (TLS, admission) is large and short-lived; inline, it
        // would stay part of this task's allocation for the whole life of the session.
        let establish = Box::pin(self.establish(tcp, peer, &session_token));
        let established = tokio::time::timeout_at(deadline, establish).await;
        drop(handshake_slot);
        let mut established = match established {
            Ok(Ok(established)) => established,
            // Refusals were logged with their reason where they were decided. Other failures
            // (scanners, garbage, timeouts) are the peer's problem: debug, so a flood of them
            // cannot flood the hub's log.
            Ok(Err(Error::Refused { .. })) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(error)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %error_chain(&error), "tunnel handshake failed");
                return;
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("tunnel handshake timed out");
                return;
            }
        };

        let registration = self.registry.register(SessionParts {
            identity: established.identity.clone(),
            peer_addr: peer,
            agent_version: established.agent_version.clone(),
            send: established.send.clone(),
            extended_connect: established
                .connection
                .is_extended_connect_protocol_enabled(),
            close: session_token.clone(),
        });
        // The registry holds the only long-lived handle; ours would keep the dispatcher alive.
        drop(established.send);
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(identity = %established.identity, "agent connected");

        let keepalive = self.config.keepalive;
        let reason = tokio::select! {
            // Checked first: once the token is cancelled, the connection failing is a
            // consequence, not the cause.
            biased;
            // Either the registry closed or replaced the session (it has reported that, and our
            // report below is ignored because we are no longer current), or the server stopped.
            () = session_token.cancelled() => DisconnectReason::HubShutdown,
            res = &mut established.connection => classify(&established.trace, keepalive, res.err()),
            () = dead_peer_watchdog(&established.trace, keepalive.watchdog_after()) => {
                DisconnectReason::KeepaliveTimeout
            }
        };
        tracing::info!(identity = %established.identity, ?reason, "agent disconnected");
        registration.ended(reason);
    }

    async fn establish(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        session_token: &CancellationToken,
    ) -> Result<Established> {
        // Interactive traffic (kubectl exec keystrokes) must not wait for Nagle.
        tcp.set_nodelay(true).map_err(Error::Connect)?;
        let mut tls = self.acceptor.accept(tcp).await.map_err(Error::Connect)?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(ALPN_H2) {
            return Err(refuse(&mut tls, Refusal::new("the tunnel requires ALPN h2")).await);
        }
        // The caller's rustls config might allow TLS 1.2; the tunnel does not.
        if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Err(refuse(&mut tls, Refusal::new("the tunnel requires TLS 1.3")).await);
        }
        let peer_certs = PeerCertificates::new(
            conn.peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        );

        let hello: Hello = match handshake::read_message(&mut tls).await {
            Ok(hello) => hello,
            Err(error @ handshake::FrameError::Io(_)) => return Err(Error::Handshake(error)),
            Err(error) => {
                let reason = format!("malformed hello: {error}");
                refuse(&mut tls, Refusal::new(reason)).await;
                return Err(Error::Handshake(error));
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let reason = format!(
                "unsupported tunnel protocol version {} (this hub speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            );
            return Err(refuse(&mut tls, Refusal::new(reason)).await);
        }
        let admitted = match self.admission.admit(&hello, &peer_certs).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::info!(
                    reason = %refusal.reason,
                    claim = hello.identity_claim.as_deref().unwrap_or(""),
                    "agent refused"
                );
                return Err(refuse(&mut tls, refusal).await);
            }
        };
        let welcome = HubReply::Welcome(Welcome {
            identity: admitted.identity.clone(),
            certificate_chain_pem: admitted.issue_certificate,
            hub_replica: self.config.hub_replica.clone(),
            keepalive: self.config.keepalive.to_wire(),
        });
        handshake::write_message(&mut tls, &welcome)
            .await
            .map_err(Error::Handshake)?;

        // Roles reverse here: the agent dialed, but the hub is the HTTP/2 client.
        let trace = TransportTrace::new();
        let io = TokioIo::new(Watched::new(tls, trace.clone()));
        let executor = SessionExecutor::new(session_token.clone());
        let (mut send, mut connection) =
            client_builder(&self.config.http2, self.config.keepalive, executor)
                .handshake(io)
                .await
                .map_err(Error::Http2)?;
        // One round trip before the session is announced: proves the agent speaks HTTP/2 and
        // has sent its SETTINGS (so extended CONNECT support is known), and keeps peers that
        // send garbage instead of an HTTP/2 preface out of the registry.
        tokio::select! {
            res = Session::probe(&mut send) => res?,
            res = &mut connection => {
                return Err(Error::Protocol(match res {
                    Ok(()) => format!("connection closed before the readiness probe ({})", describe_end(&trace)),
                    Err(e) => format!("HTTP/2 failed before the readiness probe: {e}"),
                }));
            }
        }
        tracing::debug!(?peer, identity = %admitted.identity, "agent answered the readiness probe");
        Ok(Established {
            identity: Arc::from(admitted.identity),
            agent_version: hello.agent_version,
            send,
            connection,
            trace,
        })
    }
}

/// Sends `Refused` (best effort: the peer may not speak the protocol) and closes TLS.
async fn refuse(tls: &mut TlsStream<TcpStream>, refusal: Refusal) -> Error {
    let retry_after_ms = refusal
        .retry_after
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let reply = HubReply::Refused(Refused {
        reason: refusal.reason.clone(),
        retry_after_ms,
    });
    if handshake::write_message(tls, &reply).await.is_ok() {
        let _ = tokio::io::AsyncWriteExt::shutdown(tls).await;
    }
    Error::Refused {
        reason: refusal.reason,
        retry_after: refusal.retry_after,
    }
}

fn describe_end(trace: &TransportTrace) -> &'static str {
    match trace.end() {
        Some(TransportEnd::Eof) => "peer closed",
        Some(TransportEnd::Error(_)) => "transport error",
        None => "HTTP/2 error",
    }
}
