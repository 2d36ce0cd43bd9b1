//! The hub's session registry: identity → the live HTTP/2 connection to that agent.
//!
//! ```text
//!        register(new) ─────────────► ┌──────────────────────────────┐
//!   (replaces and closes the old)     │ RwLock<HashMap<identity,     │ ◄── get(identity): read lock,
//!        close(identity) ───────────► │   Entry{Session, close}>>    │     clone an Arc; no I/O
//!        (revocation)                 └──────────────┬───────────────┘
//!        session ended ──────────────►               │ every change, under the write lock
//!        (only if still current)                     ▼
//!                                      broadcast<SessionEvent>  ──► the hub's status writer
//! ```
//!
//! Events are sent while the write lock is held, so their order is the order of the map's
//! changes: a replaced session's `Disconnected` always precedes its successor's `Connected`,
//! and a session that ends after it was replaced emits nothing. A subscriber that lags behind
//! the broadcast buffer gets `RecvError::Lagged` and resynchronises from
//! [`SessionRegistry::sessions`] (the same pattern as a Kubernetes watch relisting).
//!
//! A session is identified by `(identity, session_id)`; ids grow monotonically per registry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::body::{self, TunnelBody};
use crate::dialer::Dialer;
use crate::error::{Error, Result};
use crate::identity::CertificateSigner;
use crate::limits::SESSION_EVENT_CAPACITY;
use crate::reserved::{self, CERTIFICATE_PATH, CSR_PATH};
use crate::timeouts::ROTATION_TIMEOUT;

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// A newer session for the same identity took its place.
    Replaced,
    /// The hub closed it ([`SessionRegistry::close`], e.g. the Cluster was deleted).
    Closed,
    /// The hub's tunnel server stopped.
    HubShutdown,
    /// The agent closed the connection.
    PeerClosed,
    /// The agent stopped answering HTTP/2 PINGs.
    KeepaliveTimeout,
    /// The connection failed (I/O error, HTTP/2 protocol error).
    ConnectionError(String),
}

/// A change in the set of connected agents.
#[derive(Clone, Debug)]
pub struct SessionEvent {
    /// The agent's identity.
    pub identity: Arc<str>,
    /// Which session of that identity.
    pub session_id: u64,
    /// Wall-clock time of the change (what `Cluster.status` records).
    pub at: SystemTime,
    /// What happened.
    pub kind: SessionEventKind,
}

/// See [`SessionEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The agent completed the handshake and answers HTTP/2.
    Connected {
        /// Where it connected from.
        peer_addr: SocketAddr,
        /// The version it reported in its Hello.
        agent_version: String,
    },
    /// The session ended.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
}

/// Registry of live sessions on one hub replica. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    sessions: RwLock<HashMap<Arc<str>, Entry>>,
    events: broadcast::Sender<SessionEvent>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    /// Cancels the session's connection and every task hyper spawned for it.
    close: CancellationToken,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(SESSION_EVENT_CAPACITY);
        Self {
            inner: Arc::new(RegistryInner {
                sessions: RwLock::new(HashMap::new()),
                events,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The live session of `identity`.
    pub fn get(&self, identity: &str) -> Option<Session> {
        self.read().get(identity).map(|entry| entry.session.clone())
    }

    /// Whether `identity` has a live session.
    pub fn is_connected(&self, identity: &str) -> bool {
        self.read().contains_key(identity)
    }

    /// Every live session (for resynchronising after a lagged subscription).
    pub fn sessions(&self) -> Vec<Session> {
        self.read()
            .values()
            .map(|entry| entry.session.clone())
            .collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Subscribes to connect/disconnect events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Closes `identity`'s session at once (in-flight streams fail). Returns whether there was
    /// one. Revocation is this plus the hub's [`crate::Admission`] refusing the agent when it
    /// reconnects.
    pub fn close(&self, identity: &str) -> bool {
        let mut sessions = self.write();
        let Some(entry) = sessions.remove(identity) else {
            return false;
        };
        entry.close.cancel();
        self.emit_disconnected(&entry.session, DisconnectReason::Closed);
        true
    }

    /// A [`tower::Service`] that sends requests to `identity`'s agent, whichever session it
    /// has at the time of each call.
    pub fn dialer(&self, identity: &str) -> Dialer {
        Dialer::new(self.clone(), Arc::from(identity))
    }

    /// Adds a session, replacing (and closing) the identity's previous one.
    pub(crate) fn register(&self, parts: SessionParts) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            inner: Arc::new(SessionInner {
                id,
                identity: parts.identity.clone(),
                peer_addr: parts.peer_addr,
                agent_version: parts.agent_version,
                connected_at: SystemTime::now(),
                extended_connect: parts.extended_connect,
                send: parts.send,
            }),
        };
        let mut sessions = self.write();
        if let Some(old) = sessions.remove(&parts.identity) {
            old.close.cancel();
            self.emit_disconnected(&old.session, DisconnectReason::Replaced);
        }
        self.emit(SessionEvent {
            identity: parts.identity.clone(),
            session_id: id,
            at: session.inner.connected_at,
            kind: SessionEventKind::Connected {
                peer_addr: parts.peer_addr,
                agent_version: session.inner.agent_version.clone(),
            },
        });
        sessions.insert(
            parts.identity.clone(),
            Entry {
                session: session.clone(),
                close: parts.close,
            },
        );
        Registration {
            registry: self.clone(),
            identity: parts.identity,
            id,
            reason: DisconnectReason::HubShutdown,
        }
    }

    fn unregister(&self, identity: &str, id: u64, reason: DisconnectReason) {
        let mut sessions = self.write();
        if sessions
            .get(identity)
            .is_some_and(|entry| entry.session.id() == id)
        {
            if let Some(entry) = sessions.remove(identity) {
                entry.close.cancel();
                self.emit_disconnected(&entry.session, reason);
            }
        }
    }

    fn emit_disconnected(&self, session: &Session, reason: DisconnectReason) {
        self.emit(SessionEvent {
            identity: session.inner.identity.clone(),
            session_id: session.id(),
            at: SystemTime::now(),
            kind: SessionEventKind::Disconnected { reason },
        });
    }

    fn emit(&self, event: SessionEvent) {
        // No subscriber is fine: nobody is interested yet.
        let _ = self.inner.events.send(event);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Entry>> {
        // The map is only mutated by complete insert/remove calls, so a panic elsewhere while
        // the lock was held cannot have left it inconsistent.
        self.inner
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Entry>> {
        self.inner
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the server hands the registry for a new session.
pub(crate) struct SessionParts {
    pub(crate) identity: Arc<str>,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) agent_version: String,
    pub(crate) send: hyper::client::conn::http2::SendRequest<TunnelBody>,
    pub(crate) extended_connect: bool,
    pub(crate) close: CancellationToken,
}

/// Keeps a session registered while the task that runs its connection is alive; unregisters it
/// (if it is still the identity's current session) when dropped, including when that task is
/// cancelled because the server stopped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: SessionRegistry,
    identity: Arc<str>,
    id: u64,
    reason: DisconnectReason,
}

impl Registration {
    /// Records why the connection ended; reported when this is dropped.
    pub(crate) fn ended(mut self, reason: DisconnectReason) {
        self.reason = reason;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let reason = std::mem::replace(&mut self.reason, DisconnectReason::HubShutdown);
        self.registry.unregister(&self.identity, self.id, reason);
    }
}

/// One agent's connection, as the hub uses it. Cheap to clone; a clone of a session that has
/// ended fails its requests with [`Error::Request`].
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    id: u64,
    identity: Arc<str>,
    peer_addr: SocketAddr,
    agent_version: String,
    connected_at: SystemTime,
    extended_connect: bool,
    send: hyper::client::conn::http2::SendRequest<TunnelBody>,
}

impl Session {
    /// The identity the agent was admitted as.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// Which session of that identity (increases with every new session).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The agent's address as the hub saw it.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// The version the agent reported.
    pub fn agent_version(&self) -> &str {
        &self.inner.agent_version
    }

    /// When the session was registered.
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Whether the agent accepts extended CONNECT (RFC 8441) streams.
    pub fn supports_extended_connect(&self) -> bool {
        self.inner.extended_connect
    }

    /// Sends `req` to the agent and returns its (streaming) response. Reserved paths are
    /// refused.
    pub async fn send(&self, req: Request<TunnelBody>) -> Result<Response<Incoming>> {
        if reserved::is_reserved(req.uri().path()) {
            return Err(Error::ReservedPath {
                path: req.uri().path().to_owned(),
            });
        }
        self.send_unchecked(req).await
    }

    pub(crate) async fn send_unchecked(
        &self,
        req: Request<TunnelBody>,
    ) -> Result<Response<Incoming>> {
        // SendRequest clones share one dispatch channel into the connection; cloning is an
        // Arc increment, and lets concurrent callers send without locking each other out.
        let mut send = self.inner.send.clone();
        // The connection can end before the registry drops its session: that is "not
        // connected" (503 at once), not a failed request.
        if send.is_closed() {
            return Err(Error::NotConnected {
                identity: self.identity().to_owned(),
            });
        }
        send.send_request(req).await.map_err(|err| {
            // A closed dispatch channel means the request never left; anything later may
            // have reached the agent, so it stays a failed request (502), never a retryable 503.
            if err.is_closed() {
                Error::NotConnected {
                    identity: self.identity().to_owned(),
                }
            } else {
                Error::Request(err)
            }
        })
    }

    /// Rotates the agent's client certificate over this session: asks the agent for a CSR for
    /// a new key, has `signer` sign it, and delivers the certificate. The agent stores it and
    /// presents it from its next connection on; this session carries on undisturbed.
    pub async fn rotate_certificate(&self, signer: &dyn CertificateSigner) -> Result<()> {
        tokio::time::timeout(ROTATION_TIMEOUT, self.rotate(signer))
            .await
            .map_err(|_| Error::Timeout("certificate rotation"))?
    }

    async fn rotate(&self, signer: &dyn CertificateSigner) -> Result<()> {
        let csr = self
            .control(Method::POST, CSR_PATH, Bytes::new(), "csr", StatusCode::OK)
            .await?;
        let csr = std::str::from_utf8(&csr).map_err(|_| Error::Pem("CSR is not UTF-8".into()))?;
        let chain = signer
            .sign(self.identity(), csr)
            .await
            .map_err(Error::Signer)?;
        self.control(
            Method::PUT,
            CERTIFICATE_PATH,
            Bytes::from(chain),
            "certificate",
            StatusCode::NO_CONTENT,
        )
        .await?;
        tracing::info!(identity = %self.identity(), "agent certificate rotated");
        Ok(())
    }

    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        step: &'static str,
        expect: StatusCode,
    ) -> Result<Bytes> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(body::full(body))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let response = self.send_unchecked(req).await?;
        if response.status() != expect {
            return Err(Error::Rotation {
                step,
                status: response.status(),
            });
        }
        reserved::read_limited(response.into_body()).await
    }

    /// Probes the agent with the reserved `ready` request (before registration).
    pub(crate) async fn probe(
        send: &mut hyper::client::conn::http2::SendRequest<TunnelBody>,
    ) -> Result<()> {
        let req = Request::get(reserved::READY_PATH)
            .body(body::empty())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let response = send.send_request(req).await.map_err(Error::Request)?;
        if response.status() != StatusCode::NO_CONTENT {
            return Err(Error::Protocol(format!(
                "readiness probe answered {}",
                response.status()
            )));
        }
        Ok(())
    }
}
