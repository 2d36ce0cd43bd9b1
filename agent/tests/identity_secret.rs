//! `run --identity-secret`: the identity survives restarts in a Secret of the edge cluster.
//! Hub (the tunnel's server) → tunnel → agent → the fake edge kube-apiserver
//! (`support::upstream`, a test double that keeps Secrets with kube-apiserver's
//! resourceVersion semantics), all on loopback with real TLS.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edgefleet_agent::identity::secret::{identity_of, IDENTITY_KEY, PART_OF_LABEL};
use edgefleet_agent::{
    ClusterRef, EdgeAgent, IdentityStorage, RunConfig, SecretStorage, UpstreamSource,
};
use edgefleet_tunnel::testing::TestSigner;
use edgefleet_tunnel::{IdentityStore, PeerCertificates, StoredIdentity};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use support::upstream::{node, FakeUpstream, AGENT_TOKEN, FORBIDDEN_NAMESPACE};
use support::*;
use tokio::task::JoinHandle;

const EDGE: &str = "cluster:retail/edge-1";
const NAMESPACE: &str = "edgefleet-system";
const NAME: &str = "edgefleet-agent-identity";
const TOKEN: &str = "edge-1-token";
/// Short, so a rotation reaches the Secret quickly; correctness never depends on it.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A hub that knows the bootstrap token, a fake edge cluster, and a directory holding the
/// token file, the CA bundle and the kubeconfig.
struct Edge {
    dir: tempfile::TempDir,
    pki: std::sync::Arc<TestPki>,
    hub: Hub,
    upstream: FakeUpstream,
    kubeconfig: PathBuf,
    token_file: PathBuf,
}

impl Edge {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let hub = Hub::start(&pki, dir.path()).await;
        hub.admission.add_token(TOKEN, EDGE);
        let upstream = FakeUpstream::start(&pki, vec![node("n1").build()]).await;
        let kubeconfig = upstream.kubeconfig(&pki, dir.path());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        Self {
            dir,
            pki,
            hub,
            upstream,
            kubeconfig,
            token_file,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, identity: IdentityStorage) -> RunConfig {
        RunConfig {
            hub: self.hub.agent_config(),
            cluster: "retail/edge-1".parse::<ClusterRef>().unwrap(),
            bootstrap_token_file: Some(self.token_file.clone()),
            identity,
            upstream: UpstreamSource::Kubeconfig(self.kubeconfig.clone()),
        }
    }

    /// Builds and runs an agent keeping its identity in the Secret through `work_dir`; returns
    /// once the hub has a session from it other than `not`.
    async fn start_agent(&self, work_dir: &Path, not: Option<u64>) -> (JoinHandle<()>, u64) {
        self.start_agent_polling(work_dir, POLL_INTERVAL, not).await
    }

    async fn start_agent_polling(
        &self,
        work_dir: &Path,
        poll_interval: Duration,
        not: Option<u64>,
    ) -> (JoinHandle<()>, u64) {
        let agent = EdgeAgent::build(self.config(secret_storage(work_dir, poll_interval)))
            .await
            .unwrap();
        let task = tokio::spawn(agent.run());
        let session = self.hub.connected(EDGE, not).await;
        (task, session)
    }

    /// The identity the Secret holds, once it holds one for which `accept` is true.
    async fn secret_identity_where(
        &self,
        what: &str,
        accept: impl Fn(&StoredIdentity) -> bool,
    ) -> (Secret, Vec<u8>, StoredIdentity) {
        eventually!(
            (|| {
                let secret = self.upstream.secret(NAMESPACE, NAME)?;
                let pem = identity_of(&secret)?.to_vec();
                let identity = parse_identity(&pem);
                accept(&identity).then_some((secret, pem, identity))
            })(),
            "{what}"
        )
    }

    async fn rotate(&self) {
        self.hub
            .registry()
            .get(EDGE)
            .unwrap()
            .rotate_certificate(&TestSigner(self.pki.clone()))
            .await
            .unwrap();
    }

    fn last_presented_serial(&self) -> Option<String> {
        self.hub.admission.certificate_serials().last().cloned()
    }
}

fn secret_storage(work_dir: &Path, poll_interval: Duration) -> IdentityStorage {
    IdentityStorage::Secret(SecretStorage {
        work_dir: Some(work_dir.to_owned()),
        poll_interval,
        ..SecretStorage::new(format!("{NAMESPACE}/{NAME}").parse().unwrap())
    })
}

/// `identity.pem` bytes as the tunnel's store reads them (chain and key checked to match).
fn parse_identity(pem: &[u8]) -> StoredIdentity {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.pem"), pem).unwrap();
    IdentityStore::directory(dir.path())
        .load()
        .unwrap()
        .expect("an identity")
}

fn serial(identity: &StoredIdentity) -> String {
    identity.serial_hex().unwrap()
}

fn common_name(identity: &StoredIdentity) -> Option<String> {
    let chain =
        edgefleet_tunnel::tls::certificates_from_pem(&identity.certificate_chain_pem).unwrap();
    PeerCertificates::new(chain).common_name()
}

async fn stop(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

#[tokio::test]
async fn the_first_start_enrolls_and_saves_the_identity_in_a_new_secret() {
    let edge = Edge::start().await;
    let work_dir = edge.path("work");
    let (_agent, _) = edge.start_agent(&work_dir, None).await;

    let (secret, pem, identity) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;
    assert_eq!(common_name(&identity).as_deref(), Some(EDGE));
    assert_eq!(edge.hub.admission.enrolled(), [EDGE]);
    // The Secret holds exactly the tunnel's file.
    assert_eq!(std::fs::read(work_dir.join("identity.pem")).unwrap(), pem);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[PART_OF_LABEL.0],
        PART_OF_LABEL.1
    );
    assert_eq!(secret.data.as_ref().unwrap().len(), 1);

    // Written with the agent's own credentials, never as anyone else, as its field manager.
    let collection = format!("/api/v1/namespaces/{NAMESPACE}/secrets");
    let item = format!("{collection}/{NAME}");
    let requests: Vec<_> = [
        edge.upstream.requests_to(&collection),
        edge.upstream.requests_to(&item),
    ]
    .concat();
    let create = requests
        .iter()
        .find(|r| r.method == http::Method::POST)
        .expect("a create");
    assert!(create
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "fieldManager=edgefleet-agent")));
    for request in &requests {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {AGENT_TOKEN}").as_str()
        );
        assert!(request.headers.get("impersonate-user").is_none());
    }
}

#[tokio::test]
async fn a_restart_with_an_empty_directory_and_no_token_restores_the_identity_from_the_secret() {
    let edge = Edge::start().await;
    let (agent, first) = edge.start_agent(&edge.path("work-1"), None).await;
    let (secret, pem, identity) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;
    stop(agent).await;
    std::fs::remove_file(&edge.token_file).unwrap();

    // A new pod: a new, empty working directory; the token is gone (and spent anyway).
    let work_dir = edge.path("work-2");
    let (_agent, second) = edge.start_agent(&work_dir, Some(first)).await;
    assert_ne!(second, first);
    assert_eq!(edge.hub.admission.enrolled(), [EDGE]);
    assert_eq!(edge.hub.admission.by_certificate(), [EDGE]);
    assert_eq!(edge.last_presented_serial(), Some(serial(&identity)));
    assert_eq!(std::fs::read(work_dir.join("identity.pem")).unwrap(), pem);
    // Restoring writes nothing back.
    assert_eq!(
        edge.upstream
            .secret(NAMESPACE, NAME)
            .unwrap()
            .metadata
            .resource_version,
        secret.metadata.resource_version
    );
}

#[tokio::test]
async fn a_rotation_over_the_tunnel_updates_the_secret_and_survives_a_restart() {
    let edge = Edge::start().await;
    let work_dir = edge.path("work-1");
    let (agent, first) = edge.start_agent(&work_dir, None).await;
    let (_, _, enrolled) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;

    edge.rotate().await;
    let (_, pem, rotated) = edge
        .secret_identity_where("the rotated identity in the Secret", |id| {
            serial(id) != serial(&enrolled)
        })
        .await;
    assert_ne!(rotated.key_pem(), enrolled.key_pem());
    assert_eq!(std::fs::read(work_dir.join("identity.pem")).unwrap(), pem);

    // A new pod reconnects with the rotated certificate.
    stop(agent).await;
    let (_agent, _) = edge.start_agent(&edge.path("work-2"), Some(first)).await;
    assert_eq!(edge.last_presented_serial(), Some(serial(&rotated)));
}

#[tokio::test]
async fn an_update_that_conflicts_with_another_writer_is_retried_and_keeps_its_changes() {
    let edge = Edge::start().await;
    let (_agent, _) = edge.start_agent(&edge.path("work"), None).await;
    let (_, _, enrolled) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;

    // Between the agent's read and its update, someone else annotates the Secret.
    edge.upstream.interfere_after_next_get(NAMESPACE, NAME);
    edge.rotate().await;
    let (secret, _, _) = edge
        .secret_identity_where("the rotated identity in the Secret", |id| {
            serial(id) != serial(&enrolled)
        })
        .await;
    assert_eq!(edge.upstream.conflicts(), 1);
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["example.com/other-writer"],
        "was here"
    );
}

#[tokio::test]
async fn an_identity_left_in_the_working_directory_wins_over_an_older_secret() {
    // A container restart inside the same pod: the emptyDir keeps a rotation the Secret
    // never got (the agent stopped before its next look).
    let edge = Edge::start().await;
    let work_dir = edge.path("work");
    let an_hour = Duration::from_secs(3600);
    let (agent, first) = edge.start_agent_polling(&work_dir, an_hour, None).await;
    let (_, _, enrolled) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;
    edge.rotate().await;
    stop(agent).await;
    let rotated = parse_identity(&std::fs::read(work_dir.join("identity.pem")).unwrap());
    assert_ne!(serial(&rotated), serial(&enrolled));
    let secret = edge.upstream.secret(NAMESPACE, NAME).unwrap();
    assert_eq!(
        serial(&parse_identity(identity_of(&secret).unwrap())),
        serial(&enrolled),
        "precondition: the rotation has not reached the Secret"
    );

    let (_agent, _) = edge.start_agent(&work_dir, Some(first)).await;
    assert_eq!(edge.last_presented_serial(), Some(serial(&rotated)));
    edge.secret_identity_where("the Secret to catch up", |id| {
        serial(id) == serial(&rotated)
    })
    .await;
}

#[tokio::test]
async fn an_existing_secret_without_an_identity_is_updated_not_replaced() {
    let edge = Edge::start().await;
    edge.upstream.put_secret(Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NAMESPACE.into()),
            annotations: Some([("team".to_owned(), "edge".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("note".to_owned(), ByteString(b"keep me".to_vec()))].into()),
        ..Secret::default()
    });
    let (_agent, _) = edge.start_agent(&edge.path("work"), None).await;

    let (secret, _, _) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["note"].0, b"keep me");
    assert!(data.contains_key(IDENTITY_KEY));
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["team"],
        "edge"
    );
}

/// `EdgeAgent::build`'s error with its causes, as `main` prints it.
async fn build_error(edge: &Edge, identity: IdentityStorage) -> String {
    let error = EdgeAgent::build(edge.config(identity))
        .await
        .expect_err("building should fail");
    format!("{:#}", anyhow::Error::from(error))
}

#[tokio::test]
async fn building_fails_clearly_without_any_way_to_connect() {
    let edge = Edge::start().await;
    std::fs::remove_file(&edge.token_file).unwrap();
    let message = build_error(&edge, secret_storage(&edge.path("work"), POLL_INTERVAL)).await;
    assert!(
        message.contains(&format!(
            "no identity is stored in the Secret {NAMESPACE}/{NAME} and no bootstrap token"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn building_fails_clearly_when_the_secret_may_not_be_read() {
    let edge = Edge::start().await;
    let identity = IdentityStorage::Secret(SecretStorage {
        work_dir: Some(edge.path("work")),
        ..SecretStorage::new(format!("{FORBIDDEN_NAMESPACE}/{NAME}").parse().unwrap())
    });
    let message = build_error(&edge, identity).await;
    assert!(
        message.contains(&format!("reading the Secret {FORBIDDEN_NAMESPACE}/{NAME}")),
        "{message}"
    );
    assert!(message.contains("is forbidden"), "{message}");
    assert!(edge.hub.admission.enrolled().is_empty());
}

#[tokio::test]
async fn building_fails_clearly_when_the_secret_holds_no_usable_identity() {
    let edge = Edge::start().await;
    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    edge.upstream.put_secret(Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        data: Some([(IDENTITY_KEY.to_owned(), ByteString(garbage.into()))].into()),
        ..Secret::default()
    });
    let work_dir = edge.path("work");
    let message = build_error(&edge, secret_storage(&work_dir, POLL_INTERVAL)).await;
    assert!(
        message.contains(&format!(
            "the Secret {NAMESPACE}/{NAME} holds an unusable identity.pem; delete the Secret"
        )),
        "{message}"
    );
    assert!(!message.contains("c2VjcmV0LWtleS1ieXRlcw"), "{message}");
    assert!(!work_dir.join("identity.pem").exists());
    assert!(edge.hub.admission.enrolled().is_empty());
}

// ---------------------------------------------------------------------------------------------
// As a process, as the install manifest runs it

/// The files under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            files.push(path.strip_prefix(dir).unwrap().to_owned());
        }
    }
    files.sort();
    files
}

/// `edgefleet-agent run --identity-secret …` with `$TMPDIR`, `$HOME` and its working directory
/// in fresh directories under `root`, so every file it writes outside its identity directory
/// shows up there. Logs at debug level go to `root/stderr`.
fn spawn_agent(edge: &Edge, root: &Path, extra: &[String]) -> tokio::process::Child {
    for dir in ["tmp", "home", "cwd"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let stderr = std::fs::File::create(root.join("stderr")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_edgefleet-agent"))
        .arg("run")
        .args(["--hub-address", &edge.hub.addr.to_string()])
        .args(["--hub-server-name", HUB_NAME])
        .arg("--hub-ca-file")
        .arg(edge.path("ca.pem"))
        .args(["--cluster", "retail/edge-1"])
        .arg("--bootstrap-token-file")
        .arg(&edge.token_file)
        .arg("--kubeconfig")
        .arg(&edge.kubeconfig)
        .arg(format!("--identity-secret={NAMESPACE}/{NAME}"))
        .args(extra)
        .env_clear()
        .env("TMPDIR", root.join("tmp"))
        .env("HOME", root.join("home"))
        .env("RUST_LOG", "debug")
        .current_dir(root.join("cwd"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// SIGTERM, as the kubelet sends it, then the exit status.
async fn terminate(mut child: tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(patient(PATIENCE), child.wait())
        .await
        .expect("the agent did not stop on SIGTERM")
        .unwrap()
}

#[tokio::test]
async fn as_a_process_it_writes_nothing_outside_its_identity_directory_and_logs_no_secret() {
    let edge = Edge::start().await;

    // First start, no --identity-dir: a private directory under $TMPDIR, removed on SIGTERM.
    let first = edge.path("first");
    let agent = spawn_agent(&edge, &first, &[]);
    let session = edge.hub.connected(EDGE, None).await;
    let (_, pem, _) = edge
        .secret_identity_where("the identity Secret", |_| true)
        .await;
    let in_tmp = files_under(&first.join("tmp"));
    assert_eq!(in_tmp.len(), 2, "{in_tmp:?}");
    assert!(in_tmp[0].to_str().unwrap().starts_with("edgefleet-agent-"));
    assert_eq!(in_tmp[1], in_tmp[0].join("identity.pem"));
    assert!(terminate(agent).await.success());
    for dir in ["tmp", "home", "cwd"] {
        let files = files_under(&first.join(dir));
        assert!(files.is_empty(), "left in {dir}: {files:?}");
    }

    // Restart as the install manifest runs it: --identity-dir on an emptyDir, the token spent.
    std::fs::remove_file(&edge.token_file).unwrap();
    let second = edge.path("second");
    let identity_dir = second.join("var-run-edgefleet");
    let agent = spawn_agent(
        &edge,
        &second,
        &[format!("--identity-dir={}", identity_dir.display())],
    );
    edge.hub.connected(EDGE, Some(session)).await;
    assert_eq!(edge.hub.admission.by_certificate(), [EDGE]);
    assert_eq!(
        std::fs::read(identity_dir.join("identity.pem")).unwrap(),
        pem
    );
    assert_eq!(files_under(&identity_dir), [PathBuf::from("identity.pem")]);
    for dir in ["tmp", "home", "cwd"] {
        let files = files_under(&second.join(dir));
        assert!(files.is_empty(), "written to {dir}: {files:?}");
    }
    assert!(terminate(agent).await.success());

    // Neither the key nor the token reached the logs, in any encoding.
    let identity = parse_identity(&pem);
    let key_body: String = identity
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let secret_data = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&pem)
    };
    for root in [&first, &second] {
        let log = std::fs::read_to_string(root.join("stderr")).unwrap();
        assert!(log.contains("identity"), "no log at all?");
        for secret in [
            "PRIVATE KEY",
            &key_body[..40],
            &secret_data[..40],
            &secret_data[secret_data.len() - 40..],
            TOKEN,
        ] {
            assert!(!log.contains(secret), "the log shows {secret:?}");
        }
    }
}
