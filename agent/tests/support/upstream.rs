//! A fake edge kube-apiserver over HTTPS on loopback.
//!
//! This is a test double: no real kube-apiserver runs in these tests. It follows the real wire
//! format for what the agent touches: `/version` (version Info), node list (`NodeList` with a
//! resourceVersion) and watch (newline-delimited `WatchEvent`s), a streamed watch of ConfigMaps
//! whose events the test sends one by one, a POST that echoes its body with 201, WebSocket
//! (RFC 6455 handshake, `Sec-WebSocket-Accept`) and SPDY/3.1 upgrades that echo bytes, and
//! `Status` 404s. It serves HTTP/2 and HTTP/1.1 (ALPN), as kube-apiserver does, and records
//! every request's method, URI and headers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use edgefleet_agent::upstream::upgrade::websocket_accept;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{wait_for, Pki, UPSTREAM_NAME};

/// The bearer token the agent's kubeconfig holds.
pub const AGENT_TOKEN: &str = "agent-secret-token";
/// The `gitVersion` the fake reports.
pub const VERSION: &str = "v1.30.2";

type FakeBody = BoxBody<Bytes, Infallible>;

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    nodes: Mutex<Vec<Node>>,
    seen: Mutex<Vec<Seen>>,
    node_watches: Mutex<Vec<mpsc::Sender<Bytes>>>,
    configmap_watches: Mutex<Vec<mpsc::Sender<Bytes>>>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start(pki: &Pki, nodes: Vec<Node>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                edgefleet_tunnel::tls::certificates_from_pem(&pki.upstream.certificate_chain_pem)
                    .unwrap(),
                edgefleet_tunnel::tls::private_key_from_pem(pki.upstream.key_pem()).unwrap(),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            nodes: Mutex::new(nodes),
            ..State::default()
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// Writes a kubeconfig for this upstream (CA data, `tls-server-name`, the agent's token).
    pub fn kubeconfig(&self, pki: &Pki, dir: &Path) -> PathBuf {
        write_kubeconfig(pki, dir, &format!("https://127.0.0.1:{}", self.addr.port()))
    }

    /// Requests received for `path`, in order.
    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.path() == path)
            .cloned()
            .collect()
    }

    /// Replaces a node and tells every open node watch.
    pub async fn modify_node(&self, node: Node) {
        let name = node.metadata.name.clone();
        {
            let mut nodes = self.state.nodes.lock().unwrap();
            nodes.retain(|n| n.metadata.name != name);
            nodes.push(node.clone());
        }
        let event = watch_event("MODIFIED", &node);
        let watches = wait_for("a node watch", || {
            let watches = self.state.node_watches.lock().unwrap().clone();
            (!watches.is_empty()).then_some(watches)
        })
        .await;
        for watch in watches {
            let _ = watch.send(event.clone()).await;
        }
    }

    /// The sending end of the next ConfigMap watch a client opens.
    pub async fn configmap_watch(&self) -> mpsc::Sender<Bytes> {
        wait_for("a ConfigMap watch", || {
            self.state.configmap_watches.lock().unwrap().pop()
        })
        .await
    }
}

/// A kubeconfig for `server`, trusting the test CA for `kubernetes.test` and authenticating
/// with [`AGENT_TOKEN`]. JSON is YAML, so no YAML writer is needed.
pub fn write_kubeconfig(pki: &Pki, dir: &Path, server: &str) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca.certificate_pem());
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edge", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
            "tls-server-name": UPSTREAM_NAME,
        }}],
        "users": [{"name": "agent", "user": {"token": AGENT_TOKEN}}],
        "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "agent"}}],
        "current-context": "edge",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig).unwrap()).unwrap();
    path
}

async fn route(state: &State, mut req: Request<Incoming>) -> Response<FakeBody> {
    state.seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    if req.headers().contains_key(http::header::UPGRADE) {
        return upgrade(&mut req);
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/version") => json(
            StatusCode::OK,
            serde_json::json!({
                "major": "1", "minor": "30", "gitVersion": VERSION, "gitCommit": "abc",
                "gitTreeState": "clean", "buildDate": "2024-06-11T00:00:00Z",
                "goVersion": "go1.22.4", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        (Method::GET, "/api/v1/nodes") if watch => {
            let (tx, body) = channel_body();
            state.node_watches.lock().unwrap().push(tx);
            streaming(body)
        }
        (Method::GET, "/api/v1/nodes") => {
            let items = state.nodes.lock().unwrap().clone();
            let list = k8s_openapi::List {
                items,
                metadata: ListMeta {
                    resource_version: Some("10".into()),
                    ..ListMeta::default()
                },
            };
            json(StatusCode::OK, serde_json::to_value(list).unwrap())
        }
        (Method::GET, "/api/v1/namespaces/default/configmaps") if watch => {
            let (tx, body) = channel_body();
            state.configmap_watches.lock().unwrap().push(tx);
            streaming(body)
        }
        (Method::POST, "/api/v1/namespaces/default/configmaps") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::builder()
                .status(StatusCode::CREATED)
                .header("content-type", "application/json")
                .body(Full::new(body).boxed())
                .unwrap()
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404,
                "message": "the server could not find the requested resource"}),
        ),
    }
}

/// Namespace where the fake's RBAC forbids everything (for refused upgrades).
pub const FORBIDDEN_NAMESPACE: &str = "kube-system";

/// Answers an HTTP/1.1 upgrade with 101 and echoes bytes on the upgraded connection; in
/// [`FORBIDDEN_NAMESPACE`], answers 403 as edge RBAC would.
fn upgrade(req: &mut Request<Incoming>) -> Response<FakeBody> {
    if req
        .uri()
        .path()
        .starts_with(&format!("/api/v1/namespaces/{FORBIDDEN_NAMESPACE}/"))
    {
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Forbidden", "code": 403,
                "message": "pods \"p\" is forbidden: User \"alice@example.com\" cannot create resource \"pods/exec\""}),
        );
    }
    let headers = req.headers();
    let upgrade = headers[http::header::UPGRADE].to_str().unwrap().to_owned();
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", &upgrade);
    if upgrade.eq_ignore_ascii_case("websocket") {
        let Some(key) = headers.get("sec-websocket-key") else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"message": "no key"}),
            );
        };
        assert_eq!(headers["sec-websocket-version"], "13");
        let chosen = headers
            .get("sec-websocket-protocol")
            .and_then(|p| p.to_str().ok())
            .and_then(|p| p.split(',').next())
            .unwrap_or("")
            .trim()
            .to_owned();
        response = response
            .header(
                "sec-websocket-accept",
                websocket_accept(key.to_str().unwrap()),
            )
            .header("sec-websocket-protocol", chosen);
    } else {
        let chosen = headers
            .get("x-stream-protocol-version")
            .and_then(|p| p.to_str().ok())
            .unwrap_or("")
            .to_owned();
        response = response.header("x-stream-protocol-version", chosen);
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
    });
    response.body(Full::new(Bytes::new()).boxed()).unwrap()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&value).unwrap())).boxed())
        .unwrap()
}

fn streaming(body: FakeBody) -> Response<FakeBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn channel_body() -> (mpsc::Sender<Bytes>, FakeBody) {
    let (tx, rx) = mpsc::channel(16);
    let stream = ReceiverStream::new(rx).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    (tx, StreamBody::new(stream).boxed())
}

/// One watch event line, as kube-apiserver writes it.
pub fn watch_event(kind: &str, object: &impl serde::Serialize) -> Bytes {
    let mut line =
        serde_json::to_vec(&serde_json::json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

/// `node("gpu-1").gpus("NVIDIA-L4", 4, 3).build()`: a node of the fake cluster.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        name: name.into(),
        ready: true,
        resource_version: 10,
        gpus: None,
    }
}

pub struct NodeBuilder {
    name: String,
    ready: bool,
    resource_version: u64,
    gpus: Option<(String, u32, u32)>,
}

impl NodeBuilder {
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    pub fn gpus(mut self, model: &str, capacity: u32, allocatable: u32) -> Self {
        self.gpus = Some((model.into(), capacity, allocatable));
        self
    }

    pub fn resource_version(mut self, rv: u64) -> Self {
        self.resource_version = rv;
        self
    }

    pub fn build(self) -> Node {
        let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_owned(), self.name.clone())]);
        let (mut capacity, mut allocatable) = (BTreeMap::new(), BTreeMap::new());
        if let Some((model, cap, alloc)) = self.gpus {
            labels.insert("nvidia.com/gpu.product".into(), model);
            capacity.insert("nvidia.com/gpu".to_owned(), Quantity(cap.to_string()));
            allocatable.insert("nvidia.com/gpu".to_owned(), Quantity(alloc.to_string()));
        }
        Node {
            metadata: ObjectMeta {
                name: Some(self.name),
                labels: Some(labels),
                resource_version: Some(self.resource_version.to_string()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                capacity: Some(capacity),
                allocatable: Some(allocatable),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if self.ready { "True" } else { "False" }.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }
}
