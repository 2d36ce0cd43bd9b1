//! A test double of the management cluster's kube-apiserver, for the delegated authentication
//! and authorization tests.
//!
//! No kube-apiserver runs in this test environment, so this stands in for the three calls the
//! hub makes to it, speaking the same wire format over real HTTPS on loopback (a test CA signs
//! its serving certificate for 127.0.0.1):
//!
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: a `TokenReview` in, the same object with
//!   `status` out;
//! - `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: likewise for
//!   `SubjectAccessReview`;
//! - `GET /api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication`.
//!
//! Failures are `metav1.Status` objects with kube's reasons. Every request is recorded (path,
//! `Authorization`, `Content-Type`, JSON body) so tests can count calls and check what the hub
//! sent, field by field.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::pki::{self, LeafSpec};

pub(crate) const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
pub(crate) const SUBJECT_ACCESS_REVIEWS: &str =
    "/apis/authorization.k8s.io/v1/subjectaccessreviews";
pub(crate) const AUTHENTICATION_CONFIGMAP: &str =
    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";

/// What the double answers to a review.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// 201 with this `status`.
    Status(Value),
    /// An error `Status` with this code and reason.
    Fail(u16, &'static str),
}

/// One request as the double received it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

type Handler = Box<dyn FnMut(&Value) -> Answer + Send>;

struct State {
    received: Vec<Received>,
    token_review: Handler,
    subject_access_review: Handler,
    configmap: Option<BTreeMap<String, String>>,
    /// Requests without `Authorization: Bearer <this>` get 401, as the hub's own credential
    /// would be checked.
    required_bearer: Option<String>,
}

/// The running double; stops serving when dropped.
pub(crate) struct TestApiserver {
    pub addr: SocketAddr,
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl Drop for TestApiserver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApiserver {
    /// Serves on a free loopback port. Until told otherwise, it rejects every token, answers
    /// every SubjectAccessReview with "no opinion", and has no ConfigMap.
    pub async fn start() -> TestApiserver {
        let ca = pki::generate_ca("test-kube-apiserver-ca").expect("test CA");
        let serving = pki::issue(
            &ca,
            &LeafSpec::server(
                "kube-apiserver",
                &["localhost"],
                &["127.0.0.1".parse().expect("IP")],
            ),
        )
        .expect("serving certificate");
        let chain = crate::http::tls::certs_from_pem(serving.certificate_chain_pem.as_bytes())
            .expect("serving chain");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(serving.key_pem().as_bytes())
            .expect("serving key");
        let mut tls = rustls::ServerConfig::builder_with_provider(crate::http::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("serving config");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            received: Vec::new(),
            token_review: Box::new(|_| Answer::Status(json!({"authenticated": false}))),
            subject_access_review: Box::new(|_| Answer::Status(json!({"allowed": false}))),
            configmap: None,
            required_bearer: None,
        }));
        let server = tokio::spawn(serve(listener, acceptor, state.clone()));
        TestApiserver {
            addr,
            ca_pem: ca.certificate_pem().to_string(),
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("test state")
    }

    /// How TokenReviews are answered; the handler sees the request's `spec`.
    pub fn on_token_review(&self, handler: impl FnMut(&Value) -> Answer + Send + 'static) {
        self.state().token_review = Box::new(handler);
    }

    /// Authenticates `token` as `user` (a TokenReview `status.user`); every other token is
    /// rejected with kube's message.
    pub fn accept_token(&self, token: &'static str, user: Value) {
        self.on_token_review(move |spec| {
            if spec["token"] == token {
                Answer::Status(json!({"authenticated": true, "user": user.clone()}))
            } else {
                Answer::Status(json!({"authenticated": false, "error": "invalid bearer token"}))
            }
        });
    }

    /// How SubjectAccessReviews are answered; the handler sees the request's `spec`.
    pub fn on_subject_access_review(&self, handler: impl FnMut(&Value) -> Answer + Send + 'static) {
        self.state().subject_access_review = Box::new(handler);
    }

    /// The `data` of `kube-system/extension-apiserver-authentication` (`None`: 404).
    pub fn set_configmap(&self, data: Option<BTreeMap<String, String>>) {
        self.state().configmap = data;
    }

    /// Refuse requests that do not carry this bearer token (the hub's own credential).
    pub fn require_bearer(&self, token: &str) {
        self.state().required_bearer = Some(token.to_string());
    }

    /// Every request received at `path`, oldest first.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.received(path).len()
    }

    /// Writes `ca.crt` and a kubeconfig (CA by relative file name, `token` as the user's
    /// credential) into `dir`, as an operator would hand the hub `--authentication-kubeconfig`.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).expect("write CA");
        let path = dir.join("kubeconfig");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: management\n  cluster:\n    server: {url}\n    certificate-authority: ca.crt\n\
             users:\n- name: hub\n  user:\n    token: {token}\n\
             contexts:\n- name: hub@management\n  context:\n    cluster: management\n    user: hub\n\
             current-context: hub@management\n",
            url = self.url(),
        );
        std::fs::write(&path, kubeconfig).expect("write kubeconfig");
        path
    }

    /// A client of this double, authenticating as `token`.
    pub async fn client(&self, token: &str) -> kube::Client {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = self.write_kubeconfig(dir.path(), token);
        crate::auth::delegation::client_from_kubeconfig(&path)
            .await
            .expect("client from kubeconfig")
    }
}

/// An address nothing listens on: the management API is down.
pub(crate) async fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("https://{addr}")
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<Mutex<State>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn respond(code: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body");
    };
    let body = body.to_bytes();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let received = Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        authorization: header(http::header::AUTHORIZATION),
        content_type: header(http::header::CONTENT_TYPE),
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        },
    };
    let mut state = state.lock().expect("test state");
    state.received.push(received.clone());

    if let Some(required) = &state.required_bearer {
        if received.authorization.as_deref() != Some(&format!("Bearer {required}")) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }

    match (&received.method, received.path.as_str()) {
        (&Method::POST, path @ (TOKEN_REVIEWS | SUBJECT_ACCESS_REVIEWS)) => {
            if received.content_type.as_deref() != Some("application/json") {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format",
                );
            }
            let (kind, api_version) = if path == TOKEN_REVIEWS {
                ("TokenReview", "authentication.k8s.io/v1")
            } else {
                ("SubjectAccessReview", "authorization.k8s.io/v1")
            };
            if received.body["kind"] != kind || received.body["apiVersion"] != api_version {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("expected a {api_version} {kind}"),
                );
            }
            let spec = received.body["spec"].clone();
            let handler = if path == TOKEN_REVIEWS {
                &mut state.token_review
            } else {
                &mut state.subject_access_review
            };
            match handler(&spec) {
                Answer::Status(review_status) => respond(
                    StatusCode::CREATED,
                    json!({
                        "kind": kind,
                        "apiVersion": api_version,
                        "metadata": {"creationTimestamp": null},
                        "spec": spec,
                        "status": review_status,
                    }),
                ),
                Answer::Fail(code, reason) => status(
                    StatusCode::from_u16(code).expect("status code"),
                    reason,
                    &format!("the test double was told to fail with {code}"),
                ),
            }
        }
        (&Method::GET, AUTHENTICATION_CONFIGMAP) => match &state.configmap {
            Some(data) => respond(
                StatusCode::OK,
                json!({
                    "kind": "ConfigMap",
                    "apiVersion": "v1",
                    "metadata": {
                        "name": "extension-apiserver-authentication",
                        "namespace": "kube-system",
                        "resourceVersion": "1",
                    },
                    "data": data,
                }),
            ),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "configmaps \"extension-apiserver-authentication\" not found",
            ),
        },
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}
