//! Shared fixtures for the tunnel's integration tests: a hub and agents on real loopback TCP
//! with real TLS (the PKI and the hub's `Admission` are `edgefleet_tunnel::testing`'s), an
//! agent-side service with observable state, a TCP proxy that can sever or freeze connections,
//! and event waits with deadlines (polling is `edgefleet_testkit::eventually!`; no fixed sleeps).
#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_tunnel::{
    body, AgentStatus, Backoff, BootstrapToken, IdentityStore, Keepalive, SessionEvent,
    SessionRegistry, StoredIdentity, TunnelBody, TunnelClient, TunnelClientConfig, TunnelServer,
    TunnelServerConfig,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long to wait for something that should happen "soon" when the test does not assert a
/// bound (stretched by the machine's patience where it is used).
pub use edgefleet_testkit::{eventually, PATIENCE};
pub use edgefleet_tunnel::testing::{TestAdmission, TestPki, HUB_NAME};

// ---------------------------------------------------------------------------------------------
// Hub

/// Keepalive used by test hubs: quick enough for the dead-peer test, slow enough that a loaded
/// machine does not miss PONGs.
pub fn test_keepalive() -> Keepalive {
    Keepalive {
        interval: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
    }
}

pub fn hub_config(pki: &TestPki) -> TunnelServerConfig {
    let mut config = TunnelServerConfig::new(pki.server_tls(), "hub-test-0");
    config.keepalive = test_keepalive();
    config.handshake_timeout = Duration::from_secs(5);
    config
}

/// A hub's tunnel server on a loopback port.
pub struct Hub {
    pub server: TunnelServer,
    pub admission: Arc<TestAdmission>,
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Hub {
    pub async fn start(pki: &Arc<TestPki>) -> Self {
        Self::start_with(pki, hub_config(pki)).await
    }

    pub async fn start_with(pki: &Arc<TestPki>, config: TunnelServerConfig) -> Self {
        let admission = TestAdmission::new(pki.clone());
        let server = TunnelServer::new(config, admission.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut hub = Self {
            server,
            admission,
            addr,
            task: None,
        };
        hub.serve(listener);
        hub
    }

    fn serve(&mut self, listener: TcpListener) {
        let server = self.server.clone();
        self.task = Some(tokio::spawn(async move { server.serve(listener).await }));
    }

    pub fn registry(&self) -> &SessionRegistry {
        self.server.registry()
    }

    /// Kills the server task (listener and every session).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Waits until `identity` has a session, and returns its id.
    pub async fn connected(&self, identity: &str, within: Duration) -> u64 {
        eventually!(
            within = within,
            self.registry().get(identity).map(|s| s.id()),
            "{identity} to connect"
        )
    }

    pub async fn get(
        &self,
        identity: &str,
        path: &str,
    ) -> edgefleet_tunnel::Result<(StatusCode, Bytes)> {
        let response = self
            .registry()
            .dialer(identity)
            .send(Request::get(path).body(body::empty()).unwrap())
            .await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(edgefleet_tunnel::Error::Request)?
            .to_bytes();
        Ok((status, bytes))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agent

/// Backoff of test agents: the same shape as production, scaled down.
pub fn test_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(500),
    }
}

pub struct AgentBuilder {
    config: TunnelClientConfig,
}

impl AgentBuilder {
    pub fn new(pki: &TestPki, hub_addr: SocketAddr) -> Self {
        let mut config = TunnelClientConfig::new(
            hub_addr.to_string(),
            ServerName::try_from(HUB_NAME).unwrap().to_owned(),
            pki.hub_roots(),
            IdentityStore::in_memory(),
        );
        config.backoff = test_backoff();
        config.connect_timeout = Duration::from_secs(2);
        config.handshake_timeout = Duration::from_secs(5);
        config.healthy_session = Duration::from_secs(2);
        config.agent_version = "test-agent".into();
        Self { config }
    }

    /// Enrolled already: `identity` is in the agent's store.
    pub fn certificate(self, identity: &StoredIdentity) -> Self {
        self.config.identity.store(identity).unwrap();
        self
    }

    pub fn store(mut self, store: IdentityStore) -> Self {
        self.config.identity = store;
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.config.bootstrap_token = Some(BootstrapToken::new(token));
        self
    }

    pub fn claim(mut self, claim: &str) -> Self {
        self.config.identity_claim = Some(claim.into());
        self
    }

    pub fn spawn(self) -> Agent {
        let state = AgentState::new();
        let client = TunnelClient::new(self.config.clone(), agent_service(state.clone()));
        let status = client.status();
        Agent {
            config: self.config,
            state,
            status,
            task: tokio::spawn(client.run()),
        }
    }
}

pub struct Agent {
    pub config: TunnelClientConfig,
    pub state: Arc<AgentState>,
    pub status: watch::Receiver<AgentStatus>,
    task: JoinHandle<()>,
}

impl Agent {
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Waits until the agent's status satisfies `pred`; returns it.
    pub async fn status_where(
        &self,
        what: &str,
        pred: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        let mut status = self.status.clone();
        let found = tokio::time::timeout(
            edgefleet_testkit::patient(PATIENCE),
            status.wait_for(|s| pred(s)),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "agent status never became {what}; last: {:?}",
                *self.status.borrow()
            )
        });
        // Clone out of the borrow before `status` goes out of scope.
        #[allow(clippy::let_and_return)]
        let found = found.unwrap().clone();
        found
    }

    /// Waits until the agent reports a failure whose text contains `needle`.
    pub async fn last_error_contains(&self, needle: &str) -> AgentStatus {
        self.status_where(
            needle,
            |s| matches!(s, AgentStatus::Waiting { last_error, .. } if last_error.contains(needle)),
        )
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's service

/// What the test service has been doing, observable from the test.
#[derive(Debug)]
pub struct AgentState {
    /// Response bodies alive on the agent (created and not yet dropped).
    pub live_bodies: AtomicUsize,
    /// Bytes produced by `/bytes` bodies.
    pub produced: AtomicU64,
    /// `/slow` bodies wait for a permit here before their second chunk.
    pub gate: Semaphore,
}

impl AgentState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            live_bodies: AtomicUsize::new(0),
            produced: AtomicU64::new(0),
            gate: Semaphore::new(0),
        })
    }

    /// Lets `n` waiting (or future) `/slow` bodies finish.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<TunnelBody>, Infallible>> + Send>>;

/// Routes:
/// * `GET /hello` → `hello`
/// * `POST /echo` → the request body, streamed back
/// * `GET /slow` → `first\n`, then `second\n` once [`AgentState::release`] allows
/// * `GET /bytes?n=N` → N bytes (64 KiB chunks, produced lazily, counted)
/// * `GET /hold` → headers, then a body that never ends (counted while alive)
/// * `GET /big-header` → a response with a 128 KiB header
/// * extended `CONNECT /echo` → upgrade, echo bytes; `CONNECT /forbidden` → 403
pub fn agent_service(
    state: Arc<AgentState>,
) -> tower::util::BoxCloneSyncService<Request<Incoming>, Response<TunnelBody>, Infallible> {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        Box::pin(async move { Ok(route(state, req).await) }) as ServiceFuture
    }))
}

async fn route(state: Arc<AgentState>, mut req: Request<Incoming>) -> Response<TunnelBody> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/hello") => Response::new(body::full("hello")),
        (Method::POST, "/echo") => Response::new(body::boxed(req.into_body())),
        (Method::GET, "/slow") => {
            let (tx, body) = channel_body(&state);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first\n")).await;
                tokio::select! {
                    permit = state.gate.acquire() => {
                        if let Ok(permit) = permit {
                            permit.forget();
                        }
                        let _ = tx.send(Bytes::from_static(b"second\n")).await;
                    }
                    // The hub let go of the response: stop waiting.
                    () = tx.closed() => {}
                }
            });
            Response::new(body)
        }
        (Method::GET, "/bytes") => {
            let n = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Response::new(body::boxed(Generated::new(n, state)))
        }
        (Method::GET, "/hold") => {
            let (tx, body) = channel_body(&state);
            // Keep the body open until the hub lets go of it.
            tokio::spawn(async move { tx.closed().await });
            Response::new(body)
        }
        (Method::GET, "/big-header") => Response::builder()
            .header("x-big", "a".repeat(128 * 1024))
            .body(body::empty())
            .unwrap(),
        (Method::CONNECT, "/echo") => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let (mut reader, mut writer) =
                    tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
            });
            Response::new(body::empty())
        }
        _ => {
            let status = if path == "/forbidden" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::NOT_FOUND
            };
            Response::builder()
                .status(status)
                .body(body::full("no"))
                .unwrap()
        }
    }
}

/// A body fed by a channel; counted in `live_bodies` while it exists.
fn channel_body(state: &Arc<AgentState>) -> (mpsc::Sender<Bytes>, TunnelBody) {
    let (tx, rx) = mpsc::channel(4);
    state.live_bodies.fetch_add(1, Ordering::SeqCst);
    let body = ChannelBody {
        rx,
        _live: LiveGuard(state.clone()),
    };
    (tx, body::boxed(body))
}

struct LiveGuard(Arc<AgentState>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live_bodies.fetch_sub(1, Ordering::SeqCst);
    }
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    _live: LiveGuard,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

const CHUNK_BYTES: usize = 64 * 1024;

/// `n` bytes of a known pattern, produced only when polled.
struct Generated {
    remaining: u64,
    chunk: Bytes,
    state: Arc<AgentState>,
}

impl Generated {
    fn new(n: u64, state: Arc<AgentState>) -> Self {
        let chunk: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i % 251) as u8).collect();
        Self {
            remaining: n,
            chunk: Bytes::from(chunk),
            state,
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(CHUNK_BYTES as u64);
        self.remaining -= len;
        self.state.produced.fetch_add(len, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len as usize)))))
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can cut or freeze the connections passing through it

pub struct TcpProxy {
    pub addr: SocketAddr,
    sever: broadcast::Sender<()>,
    freeze: broadcast::Sender<()>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sever, _) = broadcast::channel(16);
        let (freeze, _) = broadcast::channel(16);
        let (sever_tx, freeze_tx) = (sever.clone(), freeze.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (sever, freeze) = (sever_tx.subscribe(), freeze_tx.subscribe());
                conns.spawn(pipe(inbound, upstream, sever, freeze));
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            sever,
            freeze,
            task,
        }
    }

    /// Closes every connection currently passing through (new ones are forwarded).
    pub fn sever(&self) {
        let _ = self.sever.send(());
    }

    /// Stops forwarding on every current connection while keeping its sockets open: the peers
    /// see silence, not a close.
    pub fn freeze(&self) {
        let _ = self.freeze.send(());
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    mut sever: broadcast::Receiver<()>,
    mut freeze: broadcast::Receiver<()>,
) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = sever.recv() => {}
        _ = freeze.recv() => {
            // Hold both sockets, silently, until severed or the proxy goes away.
            let _ = sever.recv().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Polling and events

/// Receives events until one satisfies `pred`, or panics after `within`.
pub async fn next_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    within: Duration,
    what: &str,
    pred: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    let deadline = Instant::now() + edgefleet_testkit::patient(within);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if pred(&event) => return event,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream failed while waiting for {what}: {e}"),
            Err(_) => panic!("timed out after {within:?} waiting for {what}"),
        }
    }
}

/// The process's resident set size, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let resident_pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    resident_pages * 4096
}

/// Captures `tracing` output of the current thread (use a current-thread runtime so the
/// agent's tasks log on it).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
