//! The hub in process, without a socket (kubewarden policy-server style): [`hub`] returns the
//! request stack over an embedded store in a temporary directory, with the dev PKI, RBAC and
//! the audit trail on, exactly as `edgefleet-apiserver dev` assembles them, and tests drive it
//! with `oneshot`.
//!
//! The one test double is the agents' side of the tunnel ([`FakeTunnels`]): an agent cannot
//! run inside the hub's test binary (nothing may depend on the agent crate). It follows the
//! tunnel's contract as the proxy uses it — one request in, its response out; an upgrade in,
//! a byte stream out — and keeps the head of everything it was sent, which is what the edge
//! would receive.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgefleet_apiserver::audit::{AuditConfig, Auditor, SigningKey};
use edgefleet_apiserver::auth::flags::{
    AuthenticationFlags, AuthorizationFlags, AuthorizationMode,
};
use edgefleet_apiserver::dev::{self, DevLayout};
use edgefleet_apiserver::http::body::{self, Body};
use edgefleet_apiserver::http::proxy::{EdgeUpgrade, Tunnels};
use edgefleet_apiserver::http::router::Router;
use edgefleet_apiserver::http::server::ConnectionInfo;
use edgefleet_apiserver::http::stack::{self, Hub, StackParts};
use edgefleet_apiserver::registry::{Registry, RegistryConfig};
use edgefleet_apiserver::storage::embedded::EmbeddedStore;
use edgefleet_apiserver::storage::DynStorage;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tower::ServiceExt as _;

/// How long a test waits for something asynchronous before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Static tokens of the test hub (kube's token file): users in the dev RBAC groups.
pub const TOKENS: &str = "\
root-secret-token,root,uid-root,\"system:masters\"
alice-secret-token,alice,uid-alice,\"edgefleet:admins\"
vera-secret-token,vera,uid-vera,\"edgefleet:viewers\"
";

pub const GROUP_VERSION: &str = "/apis/edgefleet.io/v1alpha1";

/// Added to the dev hub's RBAC file: group `team-b` reads in environment `retail`.
pub const EXTRA_RBAC: &str = "\
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: team-b
  namespace: retail
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: edgefleet-viewer
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: team-b
";

/// A hub in process.
pub struct TestHub {
    /// The stack, as the server serves it.
    pub service: Hub,
    pub registry: Registry,
    pub auditor: Auditor,
    /// The agents' side of the tunnel.
    pub tunnels: Arc<FakeTunnels>,
    pub audit_dir: PathBuf,
    pub layout: DevLayout,
    _dir: tempfile::TempDir,
}

/// Starts a hub (see the module docs).
pub async fn hub() -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let layout = DevLayout::new(dir.path()).unwrap();
    layout.ca().unwrap(); // the dev CA, written to pki/ca.crt
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, dev::standalone_bindings_yaml() + EXTRA_RBAC).unwrap();

    let authentication = AuthenticationFlags {
        client_ca_file: Some(layout.pki.join("ca.crt")),
        token_auth_file: Some(tokens),
        standalone: true,
        ..AuthenticationFlags::default()
    }
    .build()
    .await
    .unwrap();
    let authorization = AuthorizationFlags {
        authorization_mode: vec![AuthorizationMode::Rbac],
        authorization_rbac_file: Some(rbac),
        ..AuthorizationFlags::default()
    }
    .build()
    .await
    .unwrap();

    let store: DynStorage = Arc::new(EmbeddedStore::open(&layout.store()).unwrap());
    let registry = Registry::new(store.clone(), RegistryConfig::default());
    let audit_dir = layout.audit_dir();
    let mut audit = AuditConfig::new(&audit_dir, "test", SigningKey::generate().unwrap().0);
    // Checkpoints only when a test takes them: the trail holds exactly what requests wrote.
    audit.checkpoint_interval = Duration::ZERO;
    audit.checkpoint_storage = Some(store);
    let auditor = Auditor::open(audit).await.unwrap();

    let tunnels = Arc::new(FakeTunnels::default());
    let router = Router::new(
        registry.clone(),
        None,
        Some(tunnels.clone() as Arc<dyn Tunnels>),
        Some(auditor.clone()),
    );
    let service = stack::build(StackParts {
        authenticator: authentication.authenticator,
        authorizer: authorization.authorizer,
        auditor: Some(auditor.clone()),
        router: Arc::new(router),
    });
    let hub = TestHub {
        service,
        registry,
        auditor,
        tunnels,
        audit_dir,
        layout,
        _dir: dir,
    };
    edgefleet_testkit::eventually!(hub.registry.is_ready(), "the watch caches to sync");
    hub
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", self.status, self.body))
    }

    pub fn audit_id(&self) -> String {
        self.headers
            .get("audit-id")
            .expect("every response names its audit record")
            .to_str()
            .unwrap()
            .to_string()
    }
}

impl TestHub {
    /// A request from 127.0.0.1 with a bearer token (or none).
    pub fn request(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
    ) -> http::request::Builder {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .extension(Arc::new(ConnectionInfo {
                remote: Some("127.0.0.1:50000".parse().unwrap()),
                peer_certificates: Vec::new(),
            }));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req
    }

    /// Sends a request through the stack; the response as it would leave the hub.
    pub async fn call(&self, req: Request<Body>) -> Response<Body> {
        let response: Result<Response<Body>, Infallible> = self.service.clone().oneshot(req).await;
        response.unwrap()
    }

    /// Sends a request and reads the response whole.
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let (parts, body) = self.call(req).await.into_parts();
        let body = tokio::time::timeout(PATIENCE, body.collect())
            .await
            .expect("the response body ends")
            .unwrap()
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `method uri` as `token`'s user, with a JSON body (or none).
    pub async fn as_user(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        json: Option<Value>,
    ) -> Answer {
        let mut req = self.request(method, uri, Some(token));
        let body = match json {
            Some(v) => {
                req = req.header("content-type", "application/json");
                body::full(serde_json::to_vec(&v).unwrap())
            }
            None => body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    /// The Environment `name` and, in it, the Cluster `cluster`, created as root.
    pub async fn cluster(&self, env: &str, cluster: &str) {
        let created = self
            .as_user(
                "root-secret-token",
                Method::POST,
                &format!("{GROUP_VERSION}/environments"),
                Some(serde_json::json!({
                    "apiVersion": "edgefleet.io/v1alpha1", "kind": "Environment",
                    "metadata": {"name": env}, "spec": {}
                })),
            )
            .await;
        assert!(
            created.status == StatusCode::CREATED || created.status == StatusCode::CONFLICT,
            "{created:?}"
        );
        let created = self
            .as_user(
                "root-secret-token",
                Method::POST,
                &format!("{GROUP_VERSION}/namespaces/{env}/clusters"),
                Some(serde_json::json!({
                    "apiVersion": "edgefleet.io/v1alpha1", "kind": "Cluster",
                    "metadata": {"name": cluster, "namespace": env}, "spec": {}
                })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        // The proxy reads clusters from the watch cache: wait until it has this one.
        let clusters = self.registry.resource("clusters").unwrap().clone();
        edgefleet_testkit::eventually!(
            clusters.get(env, cluster, Some("0")).await.is_ok(),
            "{env}/{cluster} in the watch cache"
        );
    }

    /// Every audit event in the trail, in order.
    pub fn events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let Ok(segments) = edgefleet_apiserver::audit::segment::list_segments(&self.audit_dir)
        else {
            return events;
        };
        for (_, path) in segments {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let record: Value = serde_json::from_str(line).unwrap();
                if let Some(event) = record.get("event") {
                    events.push(event.clone());
                }
            }
        }
        events
    }

    /// The events of one request, in order.
    pub fn events_of(&self, audit_id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["auditID"] == audit_id)
            .collect()
    }
}

/// The agents' side of the tunnel, as the proxy sees it (see the module docs): agents that
/// are connected, the head of every request and upgrade they were sent, and for an upgrade an
/// edge that reads (and counts) everything the client sends.
#[derive(Default)]
pub struct FakeTunnels {
    connected: Mutex<HashSet<String>>,
    sent: Mutex<Vec<http::request::Parts>>,
    /// Bytes the edge side of upgraded streams has read.
    pub upgraded_bytes: Arc<AtomicU64>,
}

impl FakeTunnels {
    /// `cluster:<env>/<name>`'s agent has a tunnel.
    pub fn connect(&self, env: &str, cluster: &str) {
        self.connected
            .lock()
            .unwrap()
            .insert(edgefleet_api::agent::agent_identity(env, cluster));
    }

    /// Heads of what was sent to agents, in order.
    pub fn sent(&self) -> Vec<http::request::Parts> {
        self.sent.lock().unwrap().clone()
    }
}

impl Tunnels for FakeTunnels {
    fn is_connected(&self, identity: &str) -> bool {
        self.connected.lock().unwrap().contains(identity)
    }

    fn send(
        &self,
        _identity: &str,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, edgefleet_tunnel::Error>> {
        self.sent.lock().unwrap().push(req.into_parts().0);
        Box::pin(async {
            Ok(Response::builder()
                .header("content-type", "application/json")
                .body(body::full(
                    r#"{"kind":"PodList","apiVersion":"v1","items":[]}"#,
                ))
                .unwrap())
        })
    }

    fn upgrade(
        &self,
        _identity: &str,
        protocol: &str,
        head: Request<()>,
    ) -> BoxFuture<'static, Result<EdgeUpgrade, edgefleet_tunnel::Error>> {
        self.sent.lock().unwrap().push(head.into_parts().0);
        let counted = self.upgraded_bytes.clone();
        let protocol = protocol.to_string();
        Box::pin(async move {
            // The tunnel's stream window bounds what is in flight, as an HTTP/2 stream would.
            let (hub_side, mut edge_side) =
                tokio::io::duplex(edgefleet_tunnel::limits::STREAM_WINDOW_BYTES as usize);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = edge_side.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
            let mut head = Response::builder().status(StatusCode::OK);
            if protocol == "websocket" {
                head = head.header("sec-websocket-protocol", "v5.channel.k8s.io");
            }
            Ok(EdgeUpgrade::Upgraded {
                head: head.body(()).unwrap().into_parts().0,
                stream: Box::new(hub_side),
            })
        })
    }
}
