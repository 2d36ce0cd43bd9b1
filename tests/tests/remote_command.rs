//! kubectl's streaming commands — `exec`, `attach`, `port-forward`, `logs -f`, `cp` — against
//! the test upstream ([`edgefleet_e2e::pods`], a test double of the kubelet-facing API that
//! speaks the wire protocols exactly), each first DIRECTLY and then through hub → tunnel →
//! agent, over every protocol kubectl 1.32 speaks:
//!
//! | command | default | with `KUBECTL_*_WEBSOCKETS=false` |
//! |---|---|---|
//! | exec, attach, cp | WebSocket `v5.channel.k8s.io` (GET) | SPDY/3.1 `v4.channel.k8s.io` (POST) |
//! | port-forward | WebSocket `SPDY/3.1+portforward.k8s.io` (GET) | SPDY/3.1 `portforward.k8s.io` (POST) |
//! | logs -f | a streamed GET | |
//!
//! `v4.channel.k8s.io` over WebSocket, which kubectl no longer offers but other clients (the
//! Python client, dashboards) do, is driven by a small client here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_e2e::edge::EdgeAgent;
use edgefleet_e2e::hub::{DevConfig, Hub};
use edgefleet_e2e::kubectl::{stop, Kubectl, Lines};
use edgefleet_e2e::pods::api::{CONTAINER, ECHO_PORT, NAMESPACE, POD};
use edgefleet_e2e::pods::remotecommand::{V4, V5};
use edgefleet_e2e::pods::{portforward, PodServer, Upgrade};
use edgefleet_testkit::eventually;
use futures::StreamExt;
use http::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long kubectl may take to print an expected line through hub, tunnel and agent on a
/// busy machine.
const OUTPUT_DEADLINE: Duration = Duration::from_secs(30);

const TOKENS: &str = "\
root-secret-token,root,uid-root,\"system:masters\"
vera-secret-token,vera,uid-vera,\"edgefleet:viewers\"
";

/// The test upstream behind a hub: `retail/pods-1`.
struct Edge {
    pods: PodServer,
    hub: Hub,
    _agent: EdgeAgent,
    direct: Kubectl,
    proxied: Kubectl,
}

impl Edge {
    fn start() -> Edge {
        let pods = PodServer::start().expect("test upstream starts");
        let hub = Hub::dev_with(DevConfig {
            tokens: Some(TOKENS),
            ..DevConfig::default()
        })
        .expect("hub starts");
        let upstream = hub.dir.path().join("upstream.kubeconfig");
        pods.write_kubeconfig(&upstream).unwrap();
        let agent = EdgeAgent::start(&hub, "retail", "pods-1", &upstream).expect("agent");
        let proxied = hub
            .cluster_kubeconfig(&hub.kubeconfig, "retail", "pods-1")
            .unwrap();
        Edge {
            direct: Kubectl::new(&upstream),
            proxied: Kubectl::new(&proxied),
            pods,
            hub,
            _agent: agent,
        }
    }

    /// Directly first, then through the hub.
    fn routes(&self) -> [(&'static str, &Kubectl); 2] {
        [
            ("directly", &self.direct),
            ("through the hub", &self.proxied),
        ]
    }

    /// What `f` made the test upstream upgrade.
    fn upgrades_of(&self, f: impl FnOnce()) -> Vec<Upgrade> {
        let before = self.pods.upgrades().len();
        f();
        self.pods.upgrades()[before..].to_vec()
    }
}

fn websocket(k: &Kubectl) -> Kubectl {
    k.clone()
}

fn spdy(k: &Kubectl) -> Kubectl {
    k.with_env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .with_env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
}

fn assert_upgrades(
    route: &str,
    upgrades: &[Upgrade],
    subresource: &str,
    transport: &str,
    protocol: &str,
    method: Method,
) {
    assert!(
        !upgrades.is_empty(),
        "{route}: no upgrade reached the upstream"
    );
    for u in upgrades {
        assert_eq!(
            (
                u.subresource.as_str(),
                u.transport.as_str(),
                u.protocol.as_str(),
                &u.method
            ),
            (subresource, transport, protocol, &method),
            "{route}: {upgrades:?}"
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A few hundred KiB, more than any HTTP/2 flow-control window on the way.
fn large_input() -> Vec<u8> {
    (0..12_000)
        .flat_map(|i| format!("line {i:05} of the stdin that crosses the tunnel\n").into_bytes())
        .collect()
}

fn exec_scenario(route: &str, k: &Kubectl) {
    assert_eq!(
        k.ok(&["exec", POD, "--", "echo", "hello", "edge"]),
        "hello edge\n",
        "{route}"
    );
    // stdin to its end: `cat` exits when the client closes stdin (v5 CLOSE signal, SPDY FIN).
    let input = large_input();
    let out = k.run(
        &["exec", "-i", POD, "-c", CONTAINER, "--", "cat"],
        Some(&input),
    );
    assert!(out.status.success(), "{route}: {}", text(&out.stderr));
    assert!(
        out.stdout == input,
        "{route}: cat returned {} of {} bytes",
        out.stdout.len(),
        input.len()
    );
    // stdout and stderr apart, and the exit code from the error channel's Status.
    let out = k.run(
        &[
            "exec",
            POD,
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{route}: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-stdout\n", "{route}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("to-stderr\n") && stderr.contains("command terminated with exit code 3"),
        "{route}: {stderr}"
    );
}

#[test]
fn exec_over_websocket_v5() {
    let edge = Edge::start();
    for (route, k) in edge.routes() {
        let upgrades = edge.upgrades_of(|| exec_scenario(route, &websocket(k)));
        assert_upgrades(route, &upgrades, "exec", "websocket", V5, Method::GET);
    }
}

#[test]
fn exec_over_spdy_v4() {
    let edge = Edge::start();
    for (route, k) in edge.routes() {
        let upgrades = edge.upgrades_of(|| exec_scenario(route, &spdy(k)));
        assert_upgrades(route, &upgrades, "exec", "SPDY/3.1", V4, Method::POST);
    }
}

#[test]
fn attach_over_websocket_and_spdy() {
    let edge = Edge::start();
    for (route, k) in edge.routes() {
        for (transport, protocol, method, k) in [
            ("websocket", V5, Method::GET, websocket(k)),
            ("SPDY/3.1", V4, Method::POST, spdy(k)),
        ] {
            let upgrades = edge.upgrades_of(|| {
                let out = k.run(&["attach", "-i", POD], Some(b"hello from attach\n"));
                assert!(
                    out.status.success(),
                    "{route} {transport}: {}",
                    text(&out.stderr)
                );
                assert_eq!(
                    text(&out.stdout),
                    "main: ready\nHELLO FROM ATTACH\nmain: bye\n",
                    "{route} {transport}"
                );
            });
            assert_upgrades(route, &upgrades, "attach", transport, protocol, method);
        }
    }
}

#[test]
fn exec_with_a_terminal_sends_its_size_on_the_resize_channel() {
    let edge = Edge::start();
    for (route, k) in edge.routes() {
        for (transport, k) in [("websocket", websocket(k)), ("SPDY/3.1", spdy(k))] {
            let upgrades = edge.upgrades_of(|| {
                let out = k.in_terminal(33, 111, &["exec", "-it", POD, "--", "stty", "size"]);
                assert!(
                    out.status.success(),
                    "{route} {transport}: {}{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
                // The terminal shows what the pod printed: the size kubectl sent on channel 4.
                assert_eq!(text(&out.stdout).trim(), "33 111", "{route} {transport}");
            });
            assert_eq!(upgrades.len(), 1, "{route} {transport}: {upgrades:?}");
            assert_eq!(upgrades[0].transport, transport);
        }
    }
}

/// kubectl port-forward to the pod's `remote` port on a free local port; returns the child
/// (running) and that port.
fn port_forward(k: &Kubectl, remote: u16) -> (Child, u16, Lines) {
    let mut child = k.spawn(&[
        "port-forward",
        &format!("pod/{POD}"),
        &format!(":{remote}"),
        "--address",
        "127.0.0.1",
    ]);
    let mut lines = Lines::new(child.stdout.take().expect("piped"));
    let line = lines.wait_for(OUTPUT_DEADLINE, |l| {
        l.starts_with("Forwarding from 127.0.0.1:")
    });
    let port = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a local port in {line:?}"));
    (child, port, lines)
}

/// Sends `payload` through the forwarded port, ends the write side, returns what came back.
fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("the local port accepts");
    let mut reader = socket.try_clone().unwrap();
    let back = std::thread::spawn(move || {
        let mut back = Vec::new();
        let _ = reader.read_to_end(&mut back);
        back
    });
    socket.write_all(payload).unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    back.join().unwrap()
}

/// Waits for `child` to exit by itself, or panics after `timeout` (× patience).
fn wait_exit(mut child: Child, timeout: Duration) -> Output {
    eventually!(
        blocking,
        within = timeout,
        child.try_wait().unwrap(),
        "kubectl to exit"
    );
    child.wait_with_output().unwrap()
}

#[test]
fn port_forward_over_websocket_and_spdy() {
    let edge = Edge::start();
    let payload = large_input();
    for (route, k) in edge.routes() {
        for (transport, protocol, method, k) in [
            (
                "websocket",
                portforward::TUNNELED_PROTOCOL,
                Method::GET,
                websocket(k),
            ),
            ("SPDY/3.1", portforward::PROTOCOL, Method::POST, spdy(k)),
        ] {
            let upgrades = edge.upgrades_of(|| {
                let (child, port, _lines) = port_forward(&k, ECHO_PORT);
                // Two connections at once (two stream pairs on one connection), then one more.
                let first = std::thread::spawn({
                    let payload = payload.clone();
                    move || round_trip(port, &payload)
                });
                let second = round_trip(port, b"second connection");
                assert!(
                    first.join().unwrap() == payload,
                    "{route} {transport}: echo"
                );
                assert_eq!(second, b"second connection", "{route} {transport}");
                assert_eq!(round_trip(port, b"third"), b"third", "{route} {transport}");
                stop(child);
            });
            assert_upgrades(route, &upgrades, "portforward", transport, protocol, method);
            assert_eq!(
                upgrades.len(),
                1,
                "one connection carries every forwarded stream"
            );
        }
        // A port nobody listens on: the error stream says so and kubectl gives up.
        let (child, port, _lines) = port_forward(k, 9999);
        assert_eq!(round_trip(port, b"anyone?"), b"");
        let out = wait_exit(child, OUTPUT_DEADLINE);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&format!("error forwarding port 9999 to pod {POD}"))
                && stderr.contains("connection refused"),
            "{route}: {stderr}"
        );
    }
}

#[test]
fn logs_follow_streams_until_the_container_ends() {
    let edge = Edge::start();
    for (route, k) in edge.routes() {
        let logs = k.ok(&["logs", POD]);
        assert!(
            logs.starts_with("edge-app starting\nedge-app listening on :8080\n"),
            "{route}: {logs}"
        );
        let mut child = k.spawn(&["logs", "-f", POD, "-c", CONTAINER]);
        let mut lines = Lines::new(child.stdout.take().unwrap());
        lines.wait_for(OUTPUT_DEADLINE, |l| l == "edge-app listening on :8080");
        // A line written now reaches kubectl while the response is still open.
        let line = format!("served a request ({route})");
        edge.pods.log(&line);
        lines.wait_for(OUTPUT_DEADLINE, |l| l == line);
        stop(child);
    }
    // The container exits: `logs -f` through the hub ends by itself, with everything.
    let mut child = edge.proxied.spawn(&["logs", "-f", POD]);
    let mut lines = Lines::new(child.stdout.take().unwrap());
    lines.wait_for(OUTPUT_DEADLINE, |l| {
        l == "served a request (through the hub)"
    });
    edge.pods.log("shutting down");
    edge.pods.end_log();
    lines.wait_for(OUTPUT_DEADLINE, |l| l == "shutting down");
    assert!(lines.rest().is_empty());
    let out = wait_exit(child, OUTPUT_DEADLINE);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn cp_copies_files_into_and_out_of_the_pod() {
    let edge = Edge::start();
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<u8> = (0..50_000_u32).flat_map(|i| i.to_le_bytes()).collect();
    let local = dir.path().join("model.bin");
    std::fs::write(&local, &contents).unwrap();
    for (i, (route, k)) in edge.routes().into_iter().enumerate() {
        for (transport, k) in [("websocket", websocket(k)), ("SPDY/3.1", spdy(k))] {
            // To a file path (`test -d` says it is none, then `tar -xmf - -C /tmp`).
            let remote = format!("/tmp/model-{i}-{}.bin", transport.len());
            k.ok(&["cp", &local.to_string_lossy(), &format!("{POD}:{remote}")]);
            assert!(
                edge.pods.file(&remote).as_deref() == Some(&contents[..]),
                "{route} {transport}: {remote} in the pod"
            );
            // Into a directory.
            k.ok(&[
                "cp",
                &local.to_string_lossy(),
                &format!("{NAMESPACE}/{POD}:/data"),
            ]);
            assert!(edge.pods.file("/data/model.bin").as_deref() == Some(&contents[..]));
            // And out (`tar cf - <path>`), byte for byte.
            let back = dir.path().join(format!("back-{i}-{}.bin", transport.len()));
            k.ok(&["cp", &format!("{POD}:{remote}"), &back.to_string_lossy()]);
            assert!(
                std::fs::read(&back).unwrap() == contents,
                "{route} {transport}: copied back"
            );
            let report = dir
                .path()
                .join(format!("report-{i}-{}.txt", transport.len()));
            k.ok(&[
                "cp",
                &format!("{POD}:/data/report.txt"),
                &report.to_string_lossy(),
            ]);
            assert_eq!(
                std::fs::read_to_string(&report).unwrap(),
                "edge report: all green\n"
            );
        }
    }
}

#[test]
fn a_viewer_may_read_logs_but_not_exec_attach_or_port_forward() {
    let edge = Edge::start();
    let base = edge
        .hub
        .token_kubeconfig("vera", "vera-secret-token")
        .unwrap();
    let vera = Kubectl::new(
        &edge
            .hub
            .cluster_kubeconfig(&base, "retail", "pods-1")
            .unwrap(),
    );
    assert!(vera.ok(&["logs", POD]).contains("edge-app starting"));
    let forward = format!("pod/{POD}");
    let upgrades = edge.upgrades_of(|| {
        for k in [websocket(&vera), spdy(&vera)] {
            // WebSocket upgrades are GETs, but a shell is not reading: `create` is required.
            for args in [
                &["exec", POD, "--", "echo", "x"][..],
                &["attach", POD][..],
                &["port-forward", &forward, ":8080"][..],
            ] {
                let denied = k.fails(args);
                assert!(
                    denied.contains(
                        r#"clusters.edgefleet.io "pods-1" is forbidden: User "vera" cannot create resource "clusters/proxy" in API group "edgefleet.io" in the namespace "retail""#
                    ),
                    "{args:?}: {denied}"
                );
            }
        }
    });
    assert!(
        upgrades.is_empty(),
        "nothing reached the edge: {upgrades:?}"
    );
}

/// Where a WebSocket client connects: server, CA, bearer token, path prefix.
struct Route {
    name: &'static str,
    server: String,
    ca_pem: String,
    token: String,
    prefix: String,
}

fn websocket_routes(edge: &Edge) -> [Route; 2] {
    [
        Route {
            name: "directly",
            server: edge.pods.addr.to_string(),
            ca_pem: edge.pods.ca_pem.clone(),
            token: edge.pods.token.clone(),
            prefix: String::new(),
        },
        Route {
            name: "through the hub",
            server: edge.hub.addr.to_string(),
            ca_pem: edge.hub.ca_pem().unwrap(),
            token: "root-secret-token".to_string(),
            prefix: "/apis/edgefleet.io/v1alpha1/namespaces/retail/clusters/pods-1/proxy".into(),
        },
    ]
}

/// A TLS connection to `route`'s server speaking HTTP/1.1 (WebSocket upgrades are HTTP/1.1).
async fn connect(route: &Route) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(route.ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&route.server).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// One session over WebSocket offering only `protocol`: the negotiated protocol and every
/// (channel, payload) message until the server closes.
async fn websocket_session(
    route: &Route,
    path: &str,
    protocol: &str,
) -> (String, Vec<(u8, Vec<u8>)>) {
    let stream = connect(route).await;
    let mut request = format!("wss://{}{}{path}", route.server, route.prefix)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {}", route.token).parse().unwrap(),
    );
    headers.insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the WebSocket handshake succeeds");
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|p| p.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut messages = Vec::new();
    while let Some(message) = ws.next().await {
        match message.expect("a clean session") {
            Message::Binary(data) if !data.is_empty() => {
                messages.push((data[0], data[1..].to_vec()))
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (protocol, messages)
}

#[test]
fn exec_over_websocket_v4_reports_the_exit_code_in_a_status() {
    let edge = Edge::start();
    let exec = format!(
        "/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec?command=sh&command=-c&command=echo%20v4%20here%3B%20exit%207&stdout=true&stderr=true"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for route in websocket_routes(&edge) {
        let route_name = route.name;
        let (protocol, messages) = runtime.block_on(websocket_session(&route, &exec, V4));
        assert_eq!(protocol, V4, "{route_name}");
        let stdout: Vec<u8> = messages
            .iter()
            .filter(|(c, _)| *c == 1)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(text(&stdout), "v4 here\n", "{route_name}: {messages:?}");
        let status: Vec<&Vec<u8>> = messages
            .iter()
            .filter(|(c, d)| *c == 3 && !d.is_empty())
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            status.len(),
            1,
            "{route_name}: one Status on the error channel"
        );
        let status: Value = serde_json::from_slice(status[0]).unwrap();
        assert_eq!(status["status"], "Failure", "{route_name}: {status}");
        assert_eq!(
            status["reason"], "NonZeroExitCode",
            "{route_name}: {status}"
        );
        assert_eq!(
            status["details"]["causes"][0],
            serde_json::json!({"reason": "ExitCode", "message": "7"}),
            "{route_name}"
        );
    }
}

#[test]
fn an_upgrade_the_upstream_refuses_reaches_the_client_as_the_upstreams_answer() {
    let edge = Edge::start();
    let exec = format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec?command=true&stdout=true");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for route in websocket_routes(&edge) {
        // A protocol the upstream does not speak: it answers 403 with a Status, not 101.
        let (status, body) = runtime.block_on(async {
            let io = hyper_util::rt::TokioIo::new(connect(&route).await);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection.with_upgrades());
            let request = http::Request::get(format!("{}{exec}", route.prefix))
                .header("host", &route.server)
                .header("authorization", format!("Bearer {}", route.token))
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-protocol", "channel.k8s.io")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, body)
        });
        assert_eq!(status, http::StatusCode::FORBIDDEN, "{}", route.name);
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["kind"], "Status", "{}", route.name);
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("none of the requested protocols"),
            "{}: {status}",
            route.name
        );
    }
}
