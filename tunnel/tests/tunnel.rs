//! The tunnel end to end: a hub and agents on loopback TCP with real TLS.

mod support;

use std::time::Duration;

use bytes::Bytes;
use edgefleet_tunnel::handshake::{self, Hello, HubReply, PROTOCOL_VERSION};
use edgefleet_tunnel::testing::{TestSigner, TEST_RETRY_AFTER};
use edgefleet_tunnel::{
    body, AcceptLimits, AgentStatus, DisconnectReason, Error, IdentityStore, SessionEventKind,
    UpgradeOutcome,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const EDGE_1: &str = "cluster:retail/edge-1";

/// A hub and one enrolled agent, connected.
async fn connected_pair() -> (std::sync::Arc<TestPki>, Hub, Agent) {
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    let agent = AgentBuilder::new(&pki, hub.addr)
        .certificate(&pki.client(EDGE_1))
        .spawn();
    hub.connected(EDGE_1, PATIENCE).await;
    (pki, hub, agent)
}

#[tokio::test]
async fn an_agent_that_only_dials_out_serves_the_hub() {
    let (_pki, hub, agent) = connected_pair().await;
    let dialer = hub.registry().dialer(EDGE_1);

    let (status, bytes) = hub.get(EDGE_1, "/hello").await.unwrap();
    assert_eq!((status, &bytes[..]), (StatusCode::OK, &b"hello"[..]));

    // POST with a body larger than every window, echoed back byte for byte.
    let upload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    let response = dialer
        .send(
            Request::post("/echo")
                .body(body::full(upload.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        echoed == upload,
        "echo differs ({} bytes back)",
        echoed.len()
    );

    // A streaming response: the first chunk arrives while the agent is still holding the
    // second back.
    let response = dialer
        .send(Request::get("/slow").body(body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first\n");
    agent.state.release(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second\n");

    // The same dialer as a tower::Service.
    use tower::ServiceExt;
    let response = dialer
        .clone()
        .oneshot(
            Request::get("/hello")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_identities_and_reserved_paths_fail_at_once() {
    let (_pki, hub, _agent) = connected_pair().await;

    let err = hub
        .get("cluster:retail/nowhere", "/hello")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotConnected { ref identity } if identity == "cluster:retail/nowhere"),
        "{err:?}"
    );

    // A caller proxying through the hub cannot reach the tunnel's own endpoints.
    let err = hub
        .get(EDGE_1, "/.well-known/edgefleet-tunnel/csr")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReservedPath { .. }), "{err:?}");
}

#[tokio::test]
async fn the_agent_is_back_within_its_backoff_bound_after_the_hub_restarts() {
    let (_pki, mut hub, agent) = connected_pair().await;
    let mut events = hub.registry().subscribe();
    let first = hub.registry().get(EDGE_1).unwrap().id();

    hub.stop().await;
    let event = next_event(&mut events, PATIENCE, "disconnect on hub shutdown", |e| {
        e.session_id == first
    })
    .await;
    assert_eq!(
        event.kind,
        SessionEventKind::Disconnected {
            reason: DisconnectReason::HubShutdown
        }
    );
    agent
        .status_where("disconnected", |s| {
            !matches!(s, AgentStatus::Connected { .. })
        })
        .await;
    // While the hub is down the agent keeps failing and backing off.
    agent.last_error_contains("connect").await;

    hub.restart().await;
    let restarted = Instant::now();
    let second = hub.connected(EDGE_1, agent.config.reconnect_bound()).await;
    assert_ne!(second, first);
    assert!(restarted.elapsed() <= agent.config.reconnect_bound());
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_connection_cut_mid_response_fails_the_caller_and_the_next_request_succeeds() {
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    let proxy = TcpProxy::start(hub.addr).await;
    let agent = AgentBuilder::new(&pki, proxy.addr)
        .certificate(&pki.client(EDGE_1))
        .spawn();
    let first = hub.connected(EDGE_1, PATIENCE).await;

    let response = hub
        .registry()
        .dialer(EDGE_1)
        .send(Request::get("/slow").body(body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&chunk[..], b"first\n");

    proxy.sever();
    let rest = body.collect().await;
    assert!(rest.is_err(), "the caller must see the cut, got {rest:?}");

    // Requests succeed again once the agent is back, within its backoff bound.
    // An asserted bound: `until`, which the machine's patience does not stretch.
    let deadline = Instant::now() + agent.config.reconnect_bound();
    eventually!(
        until = deadline,
        match hub.get(EDGE_1, "/hello").await {
            Ok((StatusCode::OK, _)) => Ok(()),
            other => Err(other),
        },
        "recovery within the reconnect bound"
    );
    assert_ne!(hub.registry().get(EDGE_1).unwrap().id(), first);
}

#[tokio::test]
async fn an_extended_connect_stream_carries_bytes_both_ways() {
    let (_pki, hub, _agent) = connected_pair().await;
    let dialer = hub.registry().dialer(EDGE_1);

    let outcome = dialer
        .upgrade("websocket", Request::get("/echo").body(()).unwrap())
        .await
        .unwrap();
    let UpgradeOutcome::Upgraded { head, stream } = outcome else {
        panic!("expected an upgrade, got {outcome:?}");
    };
    assert_eq!(head.status, StatusCode::OK);
    let (mut reader, mut writer) = tokio::io::split(stream);

    writer.write_all(b"ping").await.unwrap();
    let mut pong = [0_u8; 4];
    reader.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");

    // More than the windows in flight at once, in both directions concurrently.
    let payload: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 239) as u8).collect();
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

    // A refusal by the edge is relayed, not turned into an error.
    let outcome = dialer
        .upgrade("spdy/3.1", Request::get("/forbidden").body(()).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, UpgradeOutcome::Rejected(r) if r.status() == StatusCode::FORBIDDEN),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_agent_without_certificate_or_token_is_refused_and_the_hub_stays_healthy() {
    let (pki, hub, _good) = connected_pair().await;
    let anonymous = AgentBuilder::new(&pki, hub.addr)
        .claim("cluster:retail/anon")
        .spawn();
    anonymous
        .last_error_contains("no client certificate or bootstrap token")
        .await;
    assert!(!hub.registry().is_connected("cluster:retail/anon"));
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_tls_and_the_hub_stays_healthy() {
    let (pki, hub, _good) = connected_pair().await;
    let forger = AgentBuilder::new(&pki, hub.addr)
        .certificate(&pki.forged_client("cluster:retail/edge-2"))
        .spawn();
    // rustls on the hub rejects the chain; the agent learns it from the TLS alert.
    forger.last_error_contains("UnknownCA").await;
    assert!(!hub.registry().is_connected("cluster:retail/edge-2"));
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

// Current-thread runtime: the agent's tasks log on this thread, where the capture is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_reused_or_expired_token_is_refused_and_logged_without_the_token() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    hub.admission.add_token("tok-edge-1-s3cr3t", EDGE_1);
    hub.admission
        .add_expired_token("tok-edge-3-0ld", "cluster:retail/edge-3");

    let enrolled = AgentBuilder::new(&pki, hub.addr)
        .token("tok-edge-1-s3cr3t")
        .spawn();
    hub.connected(EDGE_1, PATIENCE).await;

    // A second agent with the same token and no certificate of its own.
    let copycat = AgentBuilder::new(&pki, hub.addr)
        .token("tok-edge-1-s3cr3t")
        .spawn();
    copycat
        .last_error_contains("bootstrap token already used")
        .await;
    let expired = AgentBuilder::new(&pki, hub.addr)
        .token("tok-edge-3-0ld")
        .spawn();
    expired.last_error_contains("bootstrap token expired").await;

    // The enrolled agent's session was not disturbed.
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
    drop((enrolled, copycat, expired));

    let text = logs.text();
    let agent_line = |needle: &str| {
        text.lines()
            .any(|l| l.contains("edgefleet_tunnel::client") && l.contains(needle))
    };
    assert!(
        agent_line("the hub refused this agent: bootstrap token already used"),
        "{text}"
    );
    assert!(
        agent_line("the hub refused this agent: bootstrap token expired"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t") && !text.contains("0ld"),
        "a token leaked into the log:\n{text}"
    );
}

#[tokio::test]
async fn garbage_instead_of_tls_or_the_hello_is_refused_and_the_hub_stays_healthy() {
    let (pki, hub, _good) = connected_pair().await;

    // Not TLS at all.
    let mut tcp = TcpStream::connect(hub.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the hub must close the connection");

    // TLS, then an HTTP request instead of the Hello: the hub explains, then closes.
    let mut tls = tls_to_hub(&pki, hub.addr, None).await;
    tls.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reply: HubReply = handshake::read_message(&mut tls).await.unwrap();
    let HubReply::Refused(refused) = reply else {
        panic!("expected a refusal, got {reply:?}")
    };
    assert!(
        refused.reason.starts_with("malformed hello"),
        "{}",
        refused.reason
    );
    assert_closed(&mut tls).await;

    // A well-formed frame of the wrong protocol version.
    let mut tls = tls_to_hub(&pki, hub.addr, None).await;
    let mut hello = hello();
    hello.protocol_version = 99;
    handshake::write_message(&mut tls, &hello).await.unwrap();
    let reply: HubReply = handshake::read_message(&mut tls).await.unwrap();
    assert!(
        matches!(&reply, HubReply::Refused(r) if r.reason.contains("unsupported tunnel protocol version 99")),
        "{reply:?}"
    );

    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_hello_is_cut_off_by_the_handshake_timeout() {
    let pki = TestPki::new();
    let mut config = hub_config(&pki);
    config.handshake_timeout = Duration::from_secs(1);
    let hub = Hub::start_with(&pki, config.clone()).await;
    let _good = AgentBuilder::new(&pki, hub.addr)
        .certificate(&pki.client(EDGE_1))
        .spawn();
    hub.connected(EDGE_1, PATIENCE).await;

    // Two bytes of the length prefix, then nothing, with the connection held open.
    let started = Instant::now();
    let mut tls = tls_to_hub(&pki, hub.addr, None).await;
    tls.write_all(&[0, 0]).await.unwrap();
    tls.flush().await.unwrap();
    assert_closed(&mut tls).await;
    // Cut off by the deadline, not by the partial frame.
    assert!(started.elapsed() >= config.handshake_timeout);
    assert_eq!(hub.server.stats().failed, 1);
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn garbage_instead_of_the_http2_preface_never_becomes_a_session() {
    let (pki, hub, _good) = connected_pair().await;
    let mut events = hub.registry().subscribe();
    let intruder = "cluster:retail/garbled";

    let mut tls = tls_to_hub(&pki, hub.addr, Some(&pki.client(intruder))).await;
    handshake::write_message(&mut tls, &hello()).await.unwrap();
    let reply: HubReply = handshake::read_message(&mut tls).await.unwrap();
    assert!(matches!(reply, HubReply::Welcome(_)), "{reply:?}");
    // The hub now speaks HTTP/2 as the client; answer with noise instead of SETTINGS.
    tls.write_all(&[0xff; 64]).await.unwrap();
    tls.flush().await.unwrap();
    assert_closed(&mut tls).await;

    assert!(!hub.registry().is_connected(intruder));
    // No event was ever published for it: the good agent's next event is all there is.
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
    while let Ok(event) = events.try_recv() {
        assert_ne!(&*event.identity, intruder, "{event:?}");
    }
}

#[tokio::test]
async fn oversized_header_blocks_fail_only_their_own_stream() {
    let (_pki, hub, _agent) = connected_pair().await;
    let session = hub.registry().get(EDGE_1).unwrap().id();
    let dialer = hub.registry().dialer(EDGE_1);

    // Hub → agent: the agent refuses the header block with 431.
    let request = Request::get("/hello")
        .header("x-big", "a".repeat(128 * 1024))
        .body(body::empty())
        .unwrap();
    let response = dialer.send(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // Agent → hub: the hub refuses the response headers; only that stream fails.
    let err = hub.get(EDGE_1, "/big-header").await.unwrap_err();
    assert!(matches!(err, Error::Request(_)), "{err:?}");

    // Same session, still serving.
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
    assert_eq!(hub.registry().get(EDGE_1).unwrap().id(), session);
}

#[tokio::test]
async fn stalled_readers_do_not_block_the_other_streams_of_the_tunnel() {
    let (_pki, hub, agent) = connected_pair().await;
    let dialer = hub.registry().dialer(EDGE_1);
    // More stalled streams than "connection window / stream window" would allow with a tight
    // connection window: each gets a full stream window of data nobody reads.
    let stalled = 8;
    let mut unread = Vec::new();
    for _ in 0..stalled {
        let response = dialer
            .send(
                Request::get("/bytes?n=67108864")
                    .body(body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        unread.push(response);
    }
    let window = u64::from(edgefleet_tunnel::limits::STREAM_WINDOW_BYTES);
    eventually!(
        agent
            .state
            .produced
            .load(std::sync::atomic::Ordering::SeqCst)
            >= stalled * window,
        "every stalled stream to fill its window"
    );

    // Other streams still flow, both ways.
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
    let response = dialer
        .send(
            Request::post("/echo")
                .body(body::full(vec![7_u8; 2 * 1024 * 1024]))
                .unwrap(),
        )
        .await
        .unwrap();
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), 2 * 1024 * 1024);
    drop(unread);
}

#[tokio::test]
async fn a_silent_agent_is_disconnected_within_the_dead_peer_timeout_and_comes_back() {
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    let proxy = TcpProxy::start(hub.addr).await;
    let agent = AgentBuilder::new(&pki, proxy.addr)
        .certificate(&pki.client(EDGE_1))
        .spawn();
    let first = hub.connected(EDGE_1, PATIENCE).await;
    let mut events = hub.registry().subscribe();

    // The agent's host vanishes without closing anything.
    proxy.freeze();
    let frozen = Instant::now();
    let keepalive = test_keepalive();
    // hyper gives up after `dead_peer_after`; the watchdog one timeout later at the latest.
    let bound = keepalive.dead_peer_after() + keepalive.timeout * 2;
    let event = next_event(&mut events, bound, "the dead-peer disconnect", |e| {
        e.session_id == first
    })
    .await;
    assert_eq!(
        event.kind,
        SessionEventKind::Disconnected {
            reason: DisconnectReason::KeepaliveTimeout
        }
    );
    assert!(
        frozen.elapsed() >= keepalive.interval,
        "detected before any PING could fail"
    );
    assert!(hub.registry().get(EDGE_1).is_none_or(|s| s.id() != first));

    // The agent noticed too, and reconnected through the proxy on a fresh connection.
    let second = hub
        .connected(EDGE_1, bound + agent.config.reconnect_bound())
        .await;
    assert_ne!(second, first);
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn enrollment_then_mutual_tls_then_rotation_over_the_tunnel() {
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    hub.admission.add_token("tok-1", EDGE_1);
    let dir = tempfile::tempdir().unwrap();
    let store = IdentityStore::directory(dir.path());
    let agent = AgentBuilder::new(&pki, hub.addr)
        .claim(EDGE_1)
        .token("tok-1")
        .store(store.clone())
        .spawn();

    // Enrollment: the token session is kept, and the certificate is on disk.
    let first = hub.connected(EDGE_1, PATIENCE).await;
    let enrolled = eventually!(store.load().unwrap(), "the enrollment certificate");
    assert_eq!(hub.get(EDGE_1, "/hello").await.unwrap().0, StatusCode::OK);
    assert_eq!(hub.registry().get(EDGE_1).unwrap().id(), first);

    // Rotation over the tunnel, without disturbing the session.
    let session = hub.registry().get(EDGE_1).unwrap();
    session
        .rotate_certificate(&TestSigner(pki.clone()))
        .await
        .unwrap();
    let rotated = store.load().unwrap().unwrap();
    assert_ne!(
        rotated.serial_hex().unwrap(),
        enrolled.serial_hex().unwrap()
    );
    assert_ne!(rotated.key_pem(), enrolled.key_pem());
    assert_eq!(hub.registry().get(EDGE_1).unwrap().id(), first);

    // The next connection presents the rotated certificate (mutual TLS, no token).
    let mut events = hub.registry().subscribe();
    assert!(hub.registry().close(EDGE_1));
    let event = next_event(&mut events, PATIENCE, "the close", |e| {
        e.session_id == first
    })
    .await;
    assert_eq!(
        event.kind,
        SessionEventKind::Disconnected {
            reason: DisconnectReason::Closed
        }
    );
    hub.connected(EDGE_1, PATIENCE).await;
    assert_eq!(
        hub.admission.last_serial_of(EDGE_1),
        Some(rotated.serial_hex().unwrap())
    );
    drop(agent);
}

#[tokio::test]
async fn closing_a_revoked_agents_session_keeps_it_out() {
    let (_pki, hub, agent) = connected_pair().await;
    hub.admission.revoke(EDGE_1);
    assert!(hub.registry().close(EDGE_1));
    let status = agent.last_error_contains("certificate revoked").await;
    // The hub's retry hint is honoured (plus jitter).
    assert!(
        matches!(status, AgentStatus::Waiting { retry_in, .. } if retry_in >= TEST_RETRY_AFTER),
        "{status:?}"
    );
    assert!(!hub.registry().is_connected(EDGE_1));
    assert!(matches!(
        hub.get(EDGE_1, "/hello").await,
        Err(Error::NotConnected { .. })
    ));
}

#[tokio::test]
async fn a_new_session_for_an_identity_replaces_the_old_one() {
    let (pki, hub, first_agent) = connected_pair().await;
    let first = hub.registry().get(EDGE_1).unwrap().id();
    let mut events = hub.registry().subscribe();

    let second_agent = AgentBuilder::new(&pki, hub.addr)
        .certificate(&pki.client(EDGE_1))
        .spawn();
    let replaced = next_event(&mut events, PATIENCE, "the replacement", |e| {
        e.session_id == first
    })
    .await;
    assert_eq!(
        replaced.kind,
        SessionEventKind::Disconnected {
            reason: DisconnectReason::Replaced
        }
    );
    // The successor's Connected comes after the predecessor's Disconnected.
    let connected = next_event(&mut events, PATIENCE, "the successor", |e| {
        matches!(e.kind, SessionEventKind::Connected { .. })
    })
    .await;
    assert!(connected.session_id > first);
    drop((first_agent, second_agent));
}

#[tokio::test]
async fn an_accept_rate_limit_sheds_a_burst_and_every_agent_still_gets_in() {
    let pki = TestPki::new();
    let mut config = hub_config(&pki);
    config.accept = AcceptLimits {
        rate_per_second: 20,
        burst: 1,
        max_pending: 2,
        max_concurrent_handshakes: 2,
        wait_timeout: Duration::from_millis(100),
    };
    let hub = Hub::start_with(&pki, config).await;
    let agents: Vec<_> = (0..12)
        .map(|i| {
            AgentBuilder::new(&pki, hub.addr)
                .certificate(&pki.client(&format!("cluster:storm/edge-{i}")))
                .spawn()
        })
        .collect();
    eventually!(
        hub.registry().len() == agents.len(),
        "every agent to get in"
    );
    // The burst was more than the limits let through at once: some connections were closed
    // before TLS, and their agents came back on their own.
    let stats = hub.server.stats();
    assert!(stats.shed > 0, "{stats:?}");
    assert_eq!(stats.admitted, agents.len() as u64, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------

fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "raw".into(),
        identity_claim: None,
        bootstrap_token: None,
        csr_pem: None,
        capabilities: vec![],
    }
}

/// A raw TLS connection to the hub, as a misbehaving agent would open.
async fn tls_to_hub(
    pki: &TestPki,
    addr: std::net::SocketAddr,
    identity: Option<&edgefleet_tunnel::StoredIdentity>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = edgefleet_tunnel::tls::client_config(
        std::sync::Arc::new(pki.hub_roots()),
        identity.map(|id| (id.certificate_chain_pem.as_str(), id.key_pem())),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(HUB_NAME)
                .unwrap()
                .to_owned(),
            tcp,
        )
        .await
        .unwrap()
}

/// Reads until the hub closes the connection (EOF or error), within [`PATIENCE`].
async fn assert_closed(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) {
    let mut buf = [0_u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the hub did not close the connection");
}
