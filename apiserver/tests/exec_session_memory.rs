//! The exec session recorder holds at most its limit whatever a WebSocket frame announces: a
//! client sends one frame announcing 2⁶² bytes and streams 100 MiB through an exec session,
//! and the hub's resident memory grows by no more than [`RSS_GROWTH_BOUND`].
//!
//! One test in its own binary, so no other test's allocations move the RSS it reads. The hub
//! is the real stack served by the real server code over in-memory I/O (no socket); the edge
//! is the harness's tunnel double, which reads and counts what the session carries. The
//! figure is printed (`--nocapture`) for BENCHMARKS.md.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use edgefleet_apiserver::http::server::{self, ConnectionInfo};
use edgefleet_testkit::eventually;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

const MIB: u64 = 1024 * 1024;
/// What the client streams after the frame header.
const TRANSFER_BYTES: u64 = 100 * MIB;
const CHUNK_BYTES: usize = 64 * 1024;
/// The recorder may hold one message (1 MiB) and a queue of chunks (1 MiB); the rest is the
/// in-flight windows of the splice, the allocator's slack and the test's own buffers.
const RSS_GROWTH_BOUND: u64 = 16 * MIB;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// A client frame header (masked, as RFC 6455 requires of clients) announcing `len` bytes.
fn binary_frame_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    header
}

/// Opens an exec session through the hub over in-memory I/O; returns the client's stream.
async fn exec_session(hub: &TestHub) -> TokioIo<hyper::upgrade::Upgraded> {
    let (client_io, hub_io) = tokio::io::duplex(256 * 1024);
    let service = hub.service.clone();
    tokio::spawn(async move {
        let info = Arc::new(ConnectionInfo {
            remote: Some("127.0.0.1:50001".parse().unwrap()),
            peer_certificates: Vec::new(),
        });
        let _ =
            server::serve_connection(&server::connection_builder(), hub_io, info, service).await;
    });
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    let exec = format!(
        "{GROUP_VERSION}/namespaces/retail/clusters/edge-1/proxy/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true"
    );
    let response = sender
        .send_request(
            Request::get(exec)
                .header("host", "hub")
                .header("authorization", "Bearer root-secret-token")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-protocol", "v5.channel.k8s.io")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    TokioIo::new(hyper::upgrade::on(response).await.unwrap())
}

/// Streams `bytes` of payload after a header announcing 2⁶²; returns the largest RSS seen.
async fn stream(hub: &TestHub, bytes: u64) -> u64 {
    let before = hub.tunnels.upgraded_bytes.load(Ordering::Relaxed);
    let mut client = exec_session(hub).await;
    let header = binary_frame_header(1 << 62);
    client.write_all(&header).await.unwrap();
    let chunk = vec![0x5a_u8; CHUNK_BYTES];
    let mut peak = rss_bytes();
    for i in 0..bytes / CHUNK_BYTES as u64 {
        client.write_all(&chunk).await.unwrap();
        if i % 64 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    client.flush().await.unwrap();
    let expected = before + header.len() as u64 + bytes;
    eventually!(
        { (hub.tunnels.upgraded_bytes.load(Ordering::Relaxed) >= expected).then_some(()) },
        "the edge to read everything the client sent"
    );
    peak = peak.max(rss_bytes());
    client.shutdown().await.unwrap();
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_announcing_two_to_the_sixty_two_bytes_and_100_mib_leave_the_hub_s_memory_bounded()
{
    let hub = hub().await;
    hub.cluster("retail", "edge-1").await;
    hub.tunnels.connect("retail", "edge-1");

    // Warm up allocator arenas, the trail and lazily initialised state with a small session,
    // so the baseline is not measured against a cold process.
    stream(&hub, 4 * MIB).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let baseline = rss_bytes();
    let peak = stream(&hub, TRANSFER_BYTES).await;
    let growth = peak.saturating_sub(baseline);
    println!(
        "exec session, one frame announcing 2^62 bytes, {} MiB streamed: hub RSS {:.1} MiB -> peak {:.1} MiB (growth {:.1} MiB; bound {} MiB)",
        TRANSFER_BYTES / MIB,
        baseline as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        RSS_GROWTH_BOUND / MIB
    );
    assert!(
        growth <= RSS_GROWTH_BOUND,
        "the hub's RSS grew by {:.1} MiB streaming {} MiB in one announced frame",
        growth as f64 / MIB as f64,
        TRANSFER_BYTES / MIB
    );

    // The session is recorded and completed in the trail like any other.
    let completes = eventually!(
        {
            let done: Vec<_> = hub
                .events()
                .into_iter()
                .filter(|e| {
                    e["stage"] == "ResponseComplete" && e["objectRef"]["subresource"] == "exec"
                })
                .collect();
            (done.len() == 2).then_some(done)
        },
        "both sessions' ResponseComplete"
    );
    for complete in completes {
        assert!(
            complete["annotations"]["edgefleet.io/session-recording-sha256"].is_string(),
            "{complete}"
        );
    }
}
