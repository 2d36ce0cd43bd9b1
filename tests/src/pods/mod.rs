//! A **test double of the kubelet-facing part of a Kubernetes API server**: one running pod
//! (`default/edge-pod`, container `main`) whose `exec`, `attach`, `port-forward`, `log` and so
//! `cp` speak the real wire protocols, so that unmodified kubectl works against it directly
//! and through hub → tunnel → agent. Nothing else of Kubernetes is here: the management verbs
//! run against a real API server (a second `edgefleet-apiserver`) in the tests.
//!
//! ```text
//! HTTPS (h2 or HTTP/1.1), bearer token required, every request recorded (method, URI, headers)
//!   GET /api, /api/v1, /apis, /version                discovery
//!   GET /api/v1/pods, /api/v1/namespaces/default/pods list        GET …/pods/edge-pod
//!   GET …/pods/edge-pod/log[?follow=true]             streamed text, see [`PodServer::log`]
//!   GET|POST …/pods/edge-pod/exec|attach  Upgrade: websocket  v5.channel.k8s.io | v4.channel.k8s.io
//!                                         Upgrade: SPDY/3.1   X-Stream-Protocol-Version: v4.channel.k8s.io
//!   GET|POST …/pods/edge-pod/portforward  Upgrade: SPDY/3.1   portforward.k8s.io
//!                                         Upgrade: websocket  SPDY/3.1+portforward.k8s.io
//! ```
//!
//! [`remotecommand`] and [`portforward`] describe the protocols, [`spdy`] the framing, and
//! [`shell`] what the container can run. The server runs on its own Tokio runtime, so that the
//! (synchronous) end-to-end tests can own one.

pub mod api;
pub mod portforward;
pub mod remotecommand;
pub mod shell;
pub mod spdy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use edgefleet_apiserver::kubeconfig::{self, Credentials};
use edgefleet_apiserver::pki::{self, LeafSpec};
use futures::StreamExt;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use self::remotecommand::{Options, Program};
use self::shell::Filesystem;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The `Upgrade` value of SPDY, as kubectl spells it.
const SPDY_UPGRADE: &str = "SPDY/3.1";

/// One request the test upstream received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl RecordedRequest {
    /// Every value of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// A protocol upgrade the test upstream accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// `exec`, `attach` or `portforward`.
    pub subresource: String,
    /// The request's method.
    pub method: Method,
    /// `websocket` or `SPDY/3.1`.
    pub transport: String,
    /// The subprotocol it answered with (`Sec-WebSocket-Protocol` / `X-Stream-Protocol-Version`).
    pub protocol: String,
}

#[derive(Clone, Debug, Default)]
struct Log {
    lines: Vec<String>,
    ended: bool,
}

struct State {
    token: String,
    server_address: String,
    requests: Mutex<Vec<RecordedRequest>>,
    upgrades: Mutex<Vec<Upgrade>>,
    fs: Arc<Mutex<Filesystem>>,
    log: watch::Sender<Log>,
}

/// The running test upstream (see the module docs). Dropping it stops it.
pub struct PodServer {
    runtime: Option<tokio::runtime::Runtime>,
    state: Arc<State>,
    pub addr: SocketAddr,
    /// PEM of the CA its serving certificate chains to.
    pub ca_pem: String,
    /// The bearer token it accepts (the agent's credential for it).
    pub token: String,
}

impl PodServer {
    /// Serves on an ephemeral loopback port with a fresh CA; the pod's log starts with two lines.
    pub fn start() -> anyhow::Result<PodServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ca = pki::generate_ca("test-upstream-ca")?;
        let serving = ca.issue_leaf(&LeafSpec::server(
            "test-upstream",
            &["localhost"],
            &["127.0.0.1".parse()?],
        ))?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(serving.certificate_chain_pem.as_bytes())
                .collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem().as_bytes())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let token = format!("test-upstream-{}", random_hex());
        let (log, _) = watch::channel(Log {
            lines: vec![
                "edge-app starting".to_string(),
                "edge-app listening on :8080".to_string(),
            ],
            ended: false,
        });
        let state = Arc::new(State {
            token: token.clone(),
            server_address: addr.to_string(),
            requests: Mutex::default(),
            upgrades: Mutex::default(),
            fs: Arc::new(Mutex::new(Filesystem::new(api::POD))),
            log,
        });
        runtime.spawn(accept(
            listener,
            TlsAcceptor::from(Arc::new(tls)),
            state.clone(),
        ));
        Ok(PodServer {
            runtime: Some(runtime),
            state,
            addr,
            ca_pem: ca.certificate_pem().to_string(),
            token,
        })
    }

    /// A kubeconfig with this server, its CA and the token; namespace `default`.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(
            "test-upstream",
            &format!("https://{}", self.addr),
            &self.ca_pem,
            "test-upstream-admin",
            Credentials::Token(&self.token),
            Some(api::NAMESPACE),
        )
    }

    /// Writes [`PodServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig()).with_context(|| format!("{}", path.display()))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every upgrade so far.
    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.state.upgrades.lock().unwrap().clone()
    }

    /// Appends a line to the container's log (followers see it at once).
    pub fn log(&self, line: &str) {
        self.state
            .log
            .send_modify(|log| log.lines.push(line.to_string()));
    }

    /// Ends the log, as when the container exits: `logs -f` returns.
    pub fn end_log(&self) {
        self.state.log.send_modify(|log| log.ended = true);
    }

    /// A file in the container (what `cp` wrote there).
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state.fs.lock().unwrap().read(path)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// 16 random bytes in hex (the token), from the OS through the crypto provider.
fn random_hex() -> String {
    let mut bytes = [0_u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn accept(listener: TcpListener, tls: TlsAcceptor, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, state) = (tls.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(tls) = tls.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &api::status(code.as_u16(), reason, message))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    state.requests.lock().unwrap().push(RecordedRequest {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    let authorized = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(state.token.as_str());
    if !authorized {
        return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let get = req.method() == Method::GET;
    match segments.as_slice() {
        ["api"] if get => json_response(StatusCode::OK, &api::api_versions(&state.server_address)),
        ["apis"] if get => json_response(StatusCode::OK, &api::api_group_list()),
        ["api", "v1"] if get => json_response(StatusCode::OK, &api::core_v1_resources()),
        ["version"] if get => json_response(StatusCode::OK, &api::version()),
        ["api", "v1", "pods"] if get => json_response(StatusCode::OK, &api::pod_list(None)),
        ["api", "v1", "namespaces", ns, "pods"] if get => {
            json_response(StatusCode::OK, &api::pod_list(Some(ns)))
        }
        ["api", "v1", "namespaces", ns, "pods", name, ..]
            if *ns != api::NAMESPACE || *name != api::POD =>
        {
            failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("pods \"{name}\" not found"),
            )
        }
        ["api", "v1", "namespaces", _, "pods", _] if get => {
            json_response(StatusCode::OK, &api::pod())
        }
        ["api", "v1", "namespaces", _, "pods", _, "log"] if get => logs(&state, &req),
        ["api", "v1", "namespaces", _, "pods", _, sub @ ("exec" | "attach" | "portforward")]
            if matches!(*req.method(), Method::GET | Method::POST) =>
        {
            let subresource = sub.to_string();
            upgrade(state, req, &subresource)
        }
        _ => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// `pods/log`: the lines so far, then (with `follow`) each new one until the log ends.
fn logs(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let follow = form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "follow" && (v == "true" || v == "1"));
    let receiver = state.log.subscribe();
    let stream = futures::stream::unfold((receiver, 0_usize), move |(mut rx, sent)| async move {
        loop {
            let (chunk, total, ended) = {
                let log = rx.borrow_and_update();
                let chunk: String = log.lines[sent..].iter().map(|l| format!("{l}\n")).collect();
                (chunk, log.lines.len(), log.ended)
            };
            if !chunk.is_empty() {
                let frame = Frame::data(Bytes::from(chunk));
                return Some((Ok::<_, Infallible>(frame), (rx, total)));
            }
            if ended || !follow || rx.changed().await.is_err() {
                return None;
            }
        }
    });
    let mut response = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn header_tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `exec`, `attach`, `portforward`: answers the upgrade and hands the connection over.
fn upgrade(state: Arc<State>, mut req: Request<Incoming>, subresource: &str) -> Response<Body> {
    let headers = req.headers();
    let upgrading = header_tokens(headers, "connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    let transport = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !upgrading || transport.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Upgrade request required",
        );
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    let options = Options::from_query(&query);
    let program = match subresource {
        "exec" => Program::Exec(options.command.clone()),
        _ => Program::Attach,
    };
    if subresource != "portforward" && !(options.stdin || options.stdout || options.stderr) {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    if subresource == "exec" && options.command.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container",
        );
    }
    let websocket = transport.eq_ignore_ascii_case("websocket");
    let spdy = transport.eq_ignore_ascii_case(SPDY_UPGRADE);
    let (offered, supported): (Vec<String>, &[&str]) = match (websocket, subresource) {
        (true, "portforward") => (
            header_tokens(headers, "sec-websocket-protocol"),
            &[portforward::TUNNELED_PROTOCOL],
        ),
        (true, _) => (
            header_tokens(headers, "sec-websocket-protocol"),
            &[remotecommand::V5, remotecommand::V4],
        ),
        (false, "portforward") if spdy => (
            header_tokens(headers, "x-stream-protocol-version"),
            &[portforward::PROTOCOL],
        ),
        (false, _) if spdy => (
            header_tokens(headers, "x-stream-protocol-version"),
            &[remotecommand::V4],
        ),
        _ => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("unsupported upgrade {transport:?}"),
            )
        }
    };
    // As kube's handshakes do: the client's first protocol that this side speaks.
    let Some(protocol) = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
    else {
        return failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("unable to upgrade: none of the requested protocols {offered:?} is supported; supported: {supported:?}"),
        );
    };
    let websocket_key = headers
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    if websocket && websocket_key.is_none() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "missing Sec-WebSocket-Key",
        );
    }
    state.upgrades.lock().unwrap().push(Upgrade {
        subresource: subresource.to_string(),
        method: req.method().clone(),
        transport: if websocket { "websocket" } else { "SPDY/3.1" }.to_string(),
        protocol: protocol.clone(),
    });

    let on_upgrade = hyper::upgrade::on(&mut req);
    let subresource = subresource.to_string();
    let fs = state.fs.clone();
    let negotiated = protocol.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        if websocket {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            if subresource == "portforward" {
                portforward::over_websocket(ws).await;
            } else {
                remotecommand::over_websocket(ws, &negotiated, options, program, fs).await;
            }
        } else if subresource == "portforward" {
            portforward::serve(spdy::serve(io)).await;
        } else {
            remotecommand::over_spdy(spdy::serve(io), options, program, fs).await;
        }
    });

    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let protocol = HeaderValue::from_str(&protocol).expect("a supported protocol is a header");
    if let Some(accept) = websocket_key {
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_str(&accept).expect("base64"),
        );
        h.insert("sec-websocket-protocol", protocol);
    } else {
        h.insert(UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
        h.insert("x-stream-protocol-version", protocol);
    }
    response
}
