//! `run` mode end to end: hub (the tunnel's server) → tunnel → agent → a fake edge
//! kube-apiserver over HTTPS, all on loopback with real TLS. The upstream is a test double
//! (`support::upstream`) because no real kube-apiserver runs here; it speaks the real wire
//! format for everything the agent touches.

mod support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use edgefleet_agent::{ClusterRef, EdgeAgent, IdentityStorage, RunConfig, UpstreamSource};
use edgefleet_api::agent::{ClusterFacts, FACTS_PATH};
use edgefleet_tunnel::{body, UpgradeOutcome};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Node;
use serde_json::Value;
use support::upstream::{node, write_kubeconfig, FakeUpstream, AGENT_TOKEN, VERSION};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EDGE: &str = "cluster:retail/edge-1";

/// Builds and starts a `run` agent for `kubeconfig`, enrolled with a fresh token.
async fn start_agent(hub: &Hub, dir: &Path, kubeconfig: PathBuf) -> tokio::task::JoinHandle<()> {
    let token_file = dir.join("token");
    std::fs::write(&token_file, "edge-1-token\n").unwrap();
    hub.admission.add_token("edge-1-token", EDGE);
    let agent = EdgeAgent::build(RunConfig {
        hub: hub.agent_config(),
        cluster: "retail/edge-1".parse::<ClusterRef>().unwrap(),
        bootstrap_token_file: Some(token_file),
        identity: IdentityStorage::Directory(dir.join("identity")),
        upstream: UpstreamSource::Kubeconfig(kubeconfig),
    })
    .await
    .unwrap();
    let task = tokio::spawn(agent.run());
    hub.connected(EDGE, None).await;
    task
}

/// What every test here starts from: a hub, a fake edge kube-apiserver, and a `run` agent
/// enrolled with the hub and pointed at the fake.
struct Fixture {
    hub: Hub,
    upstream: FakeUpstream,
    _agent: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// An edge cluster of one node.
    async fn start() -> Self {
        Self::with_nodes(vec![node("n1").build()]).await
    }

    /// An edge cluster of `nodes`.
    async fn with_nodes(nodes: Vec<Node>) -> Self {
        Self::with(nodes, |pki, dir, upstream| upstream.kubeconfig(pki, dir)).await
    }

    /// An agent whose kubeconfig is `kubeconfig(pki, dir, upstream)` (one that points
    /// elsewhere, or trusts another CA).
    async fn with_kubeconfig(
        kubeconfig: impl FnOnce(&TestPki, &Path, &FakeUpstream) -> PathBuf,
    ) -> Self {
        Self::with(vec![node("n1").build()], kubeconfig).await
    }

    async fn with(
        nodes: Vec<Node>,
        kubeconfig: impl FnOnce(&TestPki, &Path, &FakeUpstream) -> PathBuf,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let hub = Hub::start(&pki, dir.path()).await;
        let upstream = FakeUpstream::start(&pki, nodes).await;
        let kubeconfig = kubeconfig(&pki, dir.path(), &upstream);
        let agent = start_agent(&hub, dir.path(), kubeconfig).await;
        Fixture {
            hub,
            upstream,
            _agent: agent,
            _dir: dir,
        }
    }
}

/// A request as the hub's proxy forwards it: the caller's identity as Impersonate-* headers.
/// It also carries an `Authorization` header, as a hub that forgot to strip the caller's would.
fn proxied(method: http::Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("impersonate-user", "alice@example.com")
        .header("impersonate-group", "devs")
        .header("impersonate-group", "system:authenticated")
        .header("impersonate-uid", "u-42")
        .header("impersonate-extra-scopes", "view")
        .header("authorization", "Bearer the-callers-token")
}

#[tokio::test]
async fn requests_are_forwarded_with_impersonation_and_the_agents_credentials() {
    let fixture = Fixture::start().await;
    let (hub, upstream) = (&fixture.hub, &fixture.upstream);

    // GET.
    let response = hub
        .send(
            EDGE,
            proxied(http::Method::GET, "/version")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let version: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(version["gitVersion"], VERSION);

    // POST with a body, answered with the upstream's own status.
    let payload = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#;
    let response = hub
        .send(
            EDGE,
            proxied(
                http::Method::POST,
                "/api/v1/namespaces/default/configmaps?fieldManager=kubectl",
            )
            .header("content-type", "application/json")
            .body(body::full(payload))
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&echoed[..], payload.as_bytes());

    // What the upstream saw: the caller's identity to impersonate, the agent's credentials,
    // never the caller's.
    let seen = upstream.requests_to("/api/v1/namespaces/default/configmaps");
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.uri.query(), Some("fieldManager=kubectl"));
    let authorization: Vec<_> = request.headers.get_all("authorization").iter().collect();
    assert_eq!(authorization, [format!("Bearer {AGENT_TOKEN}").as_str()]);
    assert_eq!(request.headers["impersonate-user"], "alice@example.com");
    let groups: Vec<_> = request
        .headers
        .get_all("impersonate-group")
        .iter()
        .collect();
    assert_eq!(groups, ["devs", "system:authenticated"]);
    assert_eq!(request.headers["impersonate-uid"], "u-42");
    assert_eq!(request.headers["impersonate-extra-scopes"], "view");
}

#[tokio::test]
async fn a_watch_streams_through_incrementally() {
    let fixture = Fixture::start().await;
    let (hub, upstream) = (&fixture.hub, &fixture.upstream);

    let response = hub
        .send(
            EDGE,
            proxied(
                http::Method::GET,
                "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=5",
            )
            .body(body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = response.into_body();
    let events = upstream.configmap_watch().await;

    // Each event reaches the hub before the upstream sends the next one.
    for i in 0..3 {
        let line = Bytes::from(format!(
            "{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm-{i}\"}}}}}}\n"
        ));
        events.send(line.clone()).await.unwrap();
        let mut received = Vec::new();
        while received.len() < line.len() {
            received.extend_from_slice(&next_chunk(&mut watch).await);
        }
        assert_eq!(received, line);
    }
}

#[tokio::test]
async fn websocket_and_spdy_upgrades_carry_bytes_both_ways() {
    let fixture = Fixture::start().await;
    let (hub, upstream) = (&fixture.hub, &fixture.upstream);
    let dialer = hub.registry().dialer(EDGE);

    // WebSocket (kubectl exec, v5.channel.k8s.io), as the hub sends it: extended CONNECT with
    // the original path, query and protocol headers.
    let exec = "/api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true&stdout=true";
    let outcome = dialer
        .upgrade(
            "websocket",
            proxied(http::Method::GET, exec)
                .header(
                    "sec-websocket-protocol",
                    "v5.channel.k8s.io, v4.channel.k8s.io",
                )
                .header("sec-websocket-version", "13")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    let UpgradeOutcome::Upgraded { head, stream } = outcome else {
        panic!("expected an upgrade, got {outcome:?}");
    };
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["sec-websocket-protocol"], "v5.channel.k8s.io");
    assert!(head.headers.get("sec-websocket-accept").is_none());
    echo_round_trip(stream).await;

    let seen = upstream.requests_to("/api/v1/namespaces/default/pods/p/exec");
    let ws = &seen[0];
    assert_eq!(ws.method, http::Method::GET);
    assert_eq!(ws.uri.query(), Some("command=sh&stdin=true&stdout=true"));
    assert_eq!(ws.headers["upgrade"], "websocket");
    assert_eq!(ws.headers["impersonate-user"], "alice@example.com");
    assert_eq!(
        ws.headers["authorization"],
        format!("Bearer {AGENT_TOKEN}").as_str()
    );

    // SPDY/3.1 (older kubectl): POST upstream, X-Stream-Protocol-Version passed back.
    let outcome = dialer
        .upgrade(
            "SPDY/3.1",
            proxied(
                http::Method::POST,
                "/api/v1/namespaces/default/pods/p/portforward",
            )
            .header("x-stream-protocol-version", "portforward.k8s.io")
            .body(())
            .unwrap(),
        )
        .await
        .unwrap();
    let UpgradeOutcome::Upgraded { head, stream } = outcome else {
        panic!("expected an upgrade, got {outcome:?}");
    };
    assert_eq!(
        head.headers["x-stream-protocol-version"],
        "portforward.k8s.io"
    );
    echo_round_trip(stream).await;
    let spdy = &upstream.requests_to("/api/v1/namespaces/default/pods/p/portforward")[0];
    assert_eq!(spdy.method, http::Method::POST);
    assert_eq!(spdy.headers["upgrade"], "SPDY/3.1");

    // An upgrade the edge cluster refuses is relayed as it answered it.
    let outcome = dialer
        .upgrade(
            "websocket",
            proxied(
                http::Method::GET,
                "/api/v1/namespaces/kube-system/pods/p/exec?command=sh",
            )
            .body(())
            .unwrap(),
        )
        .await
        .unwrap();
    let UpgradeOutcome::Rejected(response) = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let status: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(status["reason"], "Forbidden");
}

async fn echo_round_trip(stream: edgefleet_tunnel::UpgradedStream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    writer.write_all(b"ls -l\n").await.unwrap();
    let mut echoed = [0_u8; 6];
    reader.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ls -l\n");

    // More than one window's worth, both directions at once.
    let payload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let send = tokio::spawn(async move {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    send.await.unwrap();
    assert!(
        received == expected,
        "echo differs ({} bytes back)",
        received.len()
    );
}

#[tokio::test]
async fn the_facts_follow_the_clusters_nodes() {
    let fixture = Fixture::with_nodes(vec![
        node("gpu-1").gpus("NVIDIA-L4", 4, 3).build(),
        node("gpu-2").gpus("NVIDIA-L4", 4, 4).not_ready().build(),
        node("cpu-1").build(),
    ])
    .await;
    let (hub, upstream) = (&fixture.hub, &fixture.upstream);

    let response = hub
        .send(EDGE, Request::get(FACTS_PATH).body(body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body();
    let facts: ClusterFacts = serde_json::from_slice(&next_chunk(&mut stream).await).unwrap();
    assert_eq!(facts.kubernetes_version, VERSION);
    assert_eq!((facts.nodes.ready, facts.nodes.total), (2, 3));
    assert_eq!(facts.gpus.len(), 1);
    assert_eq!((facts.gpus[0].count, facts.gpus[0].allocatable), (8, 7));

    // gpu-2 becomes Ready: the watch delivers it and a new line follows.
    upstream
        .modify_node(
            node("gpu-2")
                .gpus("NVIDIA-L4", 4, 4)
                .resource_version(11)
                .build(),
        )
        .await;
    let facts: ClusterFacts = serde_json::from_slice(&next_chunk(&mut stream).await).unwrap();
    assert_eq!((facts.nodes.ready, facts.nodes.total), (3, 3));

    // The facts queries ran with the agent's own credentials and no impersonation.
    let list = &upstream.requests_to("/api/v1/nodes")[0];
    assert_eq!(
        list.headers["authorization"],
        format!("Bearer {AGENT_TOKEN}").as_str()
    );
    assert!(list.headers.get("impersonate-user").is_none());
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_status() {
    // A port nothing listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let fixture = Fixture::with_kubeconfig(|pki, dir, _| {
        write_kubeconfig(pki, dir, &format!("https://127.0.0.1:{port}"))
    })
    .await;
    let hub = &fixture.hub;

    let response = hub
        .send(
            EDGE,
            proxied(http::Method::GET, "/api/v1/pods")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["content-type"], "application/json");
    let status: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 502);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("https://127.0.0.1:{port}")),
        "{message}"
    );

    // Upgrades fail the same way, relayed as a rejection rather than a broken stream.
    let outcome = hub
        .registry()
        .dialer(EDGE)
        .upgrade(
            "websocket",
            proxied(http::Method::GET, "/api/v1/namespaces/default/pods/p/exec")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    let UpgradeOutcome::Rejected(response) = outcome else {
        panic!("expected a rejection, got {outcome:?}");
    };
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_upstream_whose_certificate_the_kubeconfig_does_not_trust_is_a_502_status() {
    // A kubeconfig trusting some other CA for the same server.
    let other = TestPki::new();
    let fixture = Fixture::with_kubeconfig(|_, dir, upstream| {
        write_kubeconfig(
            &other,
            dir,
            &format!("https://127.0.0.1:{}", upstream.addr.port()),
        )
    })
    .await;
    let (hub, upstream) = (&fixture.hub, &fixture.upstream);

    let response = hub
        .send(
            EDGE,
            proxied(http::Method::GET, "/version")
                .body(body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let status: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert!(upstream.requests_to("/version").is_empty());
}
