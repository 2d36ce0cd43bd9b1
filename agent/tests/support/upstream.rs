//! A fake edge kube-apiserver over HTTPS on loopback.
//!
//! This is a test double: no real kube-apiserver runs in these tests. It follows the real wire
//! format for what the agent touches: `/version` (version Info), node list (`NodeList` with a
//! resourceVersion) and watch (newline-delimited `WatchEvent`s), a streamed watch of ConfigMaps
//! whose events the test sends one by one, a POST that echoes its body with 201, WebSocket
//! (RFC 6455 handshake, `Sec-WebSocket-Accept`) and SPDY/3.1 upgrades that echo bytes, and
//! `Status` 404s. It serves HTTP/2 and HTTP/1.1 (ALPN), as kube-apiserver does, and records
//! every request's method, URI and headers.
//!
//! Secrets (`GET/POST /api/v1/namespaces/{ns}/secrets`, `GET/PUT …/secrets/{name}`) are kept in
//! memory with kube-apiserver's semantics for what the agent relies on: one resourceVersion
//! counter bumped by every write (not by an update that changes nothing); create answers 201,
//! or 409 `AlreadyExists`, or 500 when the body carries a resourceVersion; update answers 404
//! for a missing Secret, 400 when the body names another object, 409 `Conflict` when the body's
//! resourceVersion is not the current one, and is unconditional without one (as for Secrets);
//! `stringData` is merged into `data`; uid and creationTimestamp are the server's. Everything in
//! [`FORBIDDEN_NAMESPACE`] is 403, as an edge cluster's RBAC would answer. A test can play
//! another writer ([`FakeUpstream::interfere_after_next_get`]) to provoke a real conflict.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use edgefleet_tunnel::forwarding::websocket_accept;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
use k8s_openapi::ByteString;
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
    secrets: Mutex<SecretStore>,
}

/// Secrets by (namespace, name), and the cluster's resourceVersion counter.
#[derive(Default)]
struct SecretStore {
    objects: BTreeMap<(String, String), Secret>,
    resource_version: u64,
    /// Secrets another writer changes right after their next GET is answered.
    interfere: Vec<(String, String)>,
    /// How many updates were answered 409 Conflict.
    conflicts: usize,
}

impl SecretStore {
    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
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

    /// The Secret `namespace/name`, as a GET would return it.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let store = self.state.secrets.lock().unwrap();
        store
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Creates or replaces a Secret, as someone else with access to the cluster would.
    pub fn put_secret(&self, mut secret: Secret) {
        let key = (
            secret.metadata.namespace.clone().unwrap(),
            secret.metadata.name.clone().unwrap(),
        );
        let mut store = self.state.secrets.lock().unwrap();
        secret.metadata.resource_version = Some(store.next_resource_version());
        store.objects.insert(key, secret);
    }

    /// After the next GET of `namespace/name` is answered, another writer annotates the Secret
    /// (a new resourceVersion), so an update based on that GET conflicts.
    pub fn interfere_after_next_get(&self, namespace: &str, name: &str) {
        let mut store = self.state.secrets.lock().unwrap();
        store
            .interfere
            .push((namespace.to_owned(), name.to_owned()));
    }

    /// How many Secret updates were answered 409 Conflict.
    pub fn conflicts(&self) -> usize {
        self.state.secrets.lock().unwrap().conflicts
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
    if let Some((namespace, name)) = secrets_path(req.uri().path()) {
        let (namespace, name) = (namespace.to_owned(), name.map(str::to_owned));
        let method = req.method().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        return secrets(state, &method, &namespace, name.as_deref(), &body);
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

/// `/api/v1/namespaces/{ns}/secrets[/{name}]` → (ns, name).
fn secrets_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    match rest.strip_prefix("secrets")? {
        "" => Some((namespace, None)),
        name => {
            let name = name.strip_prefix('/')?;
            (!name.is_empty() && !name.contains('/')).then_some((namespace, Some(name)))
        }
    }
}

/// The Secrets API (see the module docs).
fn secrets(
    state: &State,
    method: &Method,
    namespace: &str,
    name: Option<&str>,
    body: &[u8],
) -> Response<FakeBody> {
    let verb = match (method, name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            )
        }
    };
    if namespace == FORBIDDEN_NAMESPACE {
        let message = format!(
            "secrets{} is forbidden: User \"system:serviceaccount:edgefleet-system:edgefleet-agent\" \
             cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"{namespace}\"",
            name.map(|n| format!(" \"{n}\"")).unwrap_or_default()
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message, name);
    }
    let mut store = state.secrets.lock().unwrap();
    if let Some(name) = name.filter(|_| verb == "get") {
        let key = (namespace.to_owned(), name.to_owned());
        let Some(found) = store.objects.get(&key).cloned() else {
            return not_found(name);
        };
        if let Some(i) = store.interfere.iter().position(|k| *k == key) {
            store.interfere.remove(i);
            let resource_version = store.next_resource_version();
            let other = store.objects.get_mut(&key).unwrap();
            other
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert("example.com/other-writer".into(), "was here".into());
            other.metadata.resource_version = Some(resource_version);
        }
        return object(StatusCode::OK, &found);
    }

    let Ok(mut secret) = serde_json::from_slice::<Secret>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body of the request was in an unknown format",
            None,
        );
    };
    match secret.metadata.namespace.as_deref() {
        Some(ns) if ns != namespace => return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        ),
        _ => secret.metadata.namespace = Some(namespace.to_owned()),
    }
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    let Some(object_name) = secret.metadata.name.clone().filter(|n| !n.is_empty()) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Secret \"\" is invalid: metadata.name: Required value: name or generateName is required",
            None,
        );
    };
    let key = (namespace.to_owned(), object_name.clone());

    match name {
        // Create.
        None => {
            if secret.metadata.resource_version.is_some() {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "resourceVersion should not be set on objects to be created",
                    None,
                );
            }
            if store.objects.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("secrets \"{object_name}\" already exists"),
                    Some(&object_name),
                );
            }
            secret.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
            secret.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            secret.metadata.resource_version = Some(store.next_resource_version());
            store.objects.insert(key, secret.clone());
            object(StatusCode::CREATED, &secret)
        }
        // Update.
        Some(name) => {
            if object_name != name {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "the name of the object ({object_name}) does not match the name on the URL ({name})"
                    ),
                    None,
                );
            }
            let Some(current) = store.objects.get(&key).cloned() else {
                return not_found(name);
            };
            let current_version = current.metadata.resource_version.clone();
            if secret
                .metadata
                .resource_version
                .as_ref()
                .is_some_and(|rv| Some(rv) != current_version.as_ref())
            {
                store.conflicts += 1;
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on secrets \"{name}\": the object has been \
                         modified; please apply your changes to the latest version and try again"
                    ),
                    Some(name),
                );
            }
            secret.metadata.uid = current.metadata.uid.clone();
            secret.metadata.creation_timestamp = current.metadata.creation_timestamp.clone();
            secret.metadata.resource_version = current_version;
            if secret == current {
                return object(StatusCode::OK, &current);
            }
            secret.metadata.resource_version = Some(store.next_resource_version());
            store.objects.insert(key, secret.clone());
            object(StatusCode::OK, &secret)
        }
    }
}

fn object(code: StatusCode, secret: &Secret) -> Response<FakeBody> {
    json(code, serde_json::to_value(secret).unwrap())
}

fn not_found(name: &str) -> Response<FakeBody> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("secrets \"{name}\" not found"),
        Some(name),
    )
}

/// A `metav1.Status` failure, as kube-apiserver writes it.
fn status(code: StatusCode, reason: &str, message: &str, name: Option<&str>) -> Response<FakeBody> {
    let mut value = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(name) = name {
        value["details"] = serde_json::json!({"name": name, "kind": "secrets"});
    }
    json(code, value)
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
