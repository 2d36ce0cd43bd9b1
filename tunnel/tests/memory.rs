//! Memory and concurrency bounds of one tunnel: 1,000 concurrent long-lived streams and a
//! 100 MiB transfer through one connection.
//!
//! One test in its own binary, so no other test's allocations move the process RSS it reads.
//! Hub and agent share the process, so the numbers are for both ends together.

mod support;

use edgefleet_tunnel::{body, limits, Http2Config};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use support::*;
use tokio::task::JoinSet;

const EDGE: &str = "cluster:bench/edge-1";
const STREAMS: usize = 1_000;
const TRANSFER_BYTES: u64 = 100 * 1024 * 1024;
const CHUNK_BYTES: u64 = 64 * 1024;
const MIB: u64 = 1024 * 1024;

/// The most a `/bytes` producer can be ahead of the hub's consumer: the hub's stream window,
/// the agent's per-stream send buffer, and the chunk in hand on either side.
fn in_flight_bound(http2: &Http2Config) -> u64 {
    u64::from(http2.stream_window_bytes) + http2.max_send_buf_bytes as u64 + 2 * CHUNK_BYTES
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_and_a_100_mib_transfer_stay_within_bounded_memory() {
    let pki = TestPki::new();
    let hub = Hub::start(&pki).await;
    let agent = AgentBuilder::new(&pki, hub.addr)
        .certificate(&pki.client(EDGE))
        .spawn();
    hub.connected(EDGE, PATIENCE).await;
    let dialer = hub.registry().dialer(EDGE);
    let http2 = Http2Config::default();
    assert!(STREAMS as u32 <= limits::MAX_CONCURRENT_STREAMS);

    // Warm up allocator arenas and lazily initialised state with a few requests, so the RSS
    // baseline is not measured against a cold process.
    for _ in 0..20 {
        assert_eq!(hub.get(EDGE, "/hello").await.unwrap().0, StatusCode::OK);
    }

    // --- 1,000 concurrent long-lived streams -------------------------------------------------
    let rss_before_streams = rss_bytes();
    let mut opening = JoinSet::new();
    for _ in 0..STREAMS {
        let dialer = dialer.clone();
        opening.spawn(async move {
            let response = dialer
                .send(Request::get("/slow").body(body::empty()).unwrap())
                .await
                .unwrap();
            let mut body = response.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(&first[..], b"first\n");
            body
        });
    }
    let mut held = Vec::with_capacity(STREAMS);
    while let Some(body) = opening.join_next().await {
        held.push(body.unwrap());
    }
    assert_eq!(agent.state.live_bodies.load(Ordering::SeqCst), STREAMS);
    let per_stream = rss_bytes().saturating_sub(rss_before_streams) / STREAMS as u64;
    eprintln!("RSS per held stream (hub + agent): {per_stream} bytes");
    // Both ends together: h2 stream state, hyper's per-stream tasks and the test service's
    // channel and task. A leak of a window-sized buffer per stream would be ≥ 1 MiB.
    assert!(
        per_stream <= 24 * 1024,
        "{per_stream} bytes per held stream"
    );

    // The held streams do not block anything else on the connection.
    assert_eq!(hub.get(EDGE, "/hello").await.unwrap().0, StatusCode::OK);

    // --- 100 MiB through the same tunnel, next to the held streams --------------------------
    let rss_before_transfer = rss_bytes();
    let response = dialer
        .send(
            Request::get(format!("/bytes?n={TRANSFER_BYTES}"))
                .body(body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();

    // Read nothing for a while: flow control must stop the producer.
    let mut last = u64::MAX;
    let mut unchanged = 0;
    let stalled_at = eventually!(
        {
            let now = agent.state.produced.load(Ordering::SeqCst);
            unchanged = if now == last && now > 0 {
                unchanged + 1
            } else {
                0
            };
            last = now;
            // Unchanged over 10 consecutive polls (≥ 100 ms) while nothing is consumed.
            (unchanged >= 10).then_some(now)
        },
        "the producer to stall"
    );
    eprintln!("producer stalled {stalled_at} bytes ahead of a reader that read nothing");
    assert!(
        stalled_at <= in_flight_bound(&http2),
        "{stalled_at} bytes in flight"
    );

    let mut consumed = 0_u64;
    let mut max_in_flight = 0_u64;
    let mut peak_rss = rss_bytes();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        consumed += data.len() as u64;
        let produced = agent.state.produced.load(Ordering::SeqCst);
        max_in_flight = max_in_flight.max(produced.saturating_sub(consumed));
        if consumed % MIB < data.len() as u64 {
            peak_rss = peak_rss.max(rss_bytes());
        }
    }
    assert_eq!(consumed, TRANSFER_BYTES);
    let growth = peak_rss.saturating_sub(rss_before_transfer);
    eprintln!(
        "100 MiB transfer: max {max_in_flight} bytes in flight, peak RSS growth {} KiB",
        growth / 1024
    );
    assert!(
        max_in_flight <= in_flight_bound(&http2),
        "{max_in_flight} bytes in flight"
    );
    // Had the tunnel buffered the transfer rather than streamed it, growth would approach
    // 100 MiB; the flow-control bound is a few MiB. 16 MiB leaves room for allocator slack.
    assert!(growth <= 16 * MIB, "RSS grew by {growth} bytes");

    // --- the held streams complete -------------------------------------------------------------
    agent.state.release(STREAMS);
    let mut finishing = JoinSet::new();
    for body in held {
        finishing.spawn(async move { body.collect().await.unwrap().to_bytes() });
    }
    while let Some(rest) = finishing.join_next().await {
        assert_eq!(&rest.unwrap()[..], b"second\n");
    }

    // --- abandoned streams do not leak on the agent ---------------------------------------------
    let mut abandoned = Vec::new();
    for _ in 0..200 {
        let response = dialer
            .send(Request::get("/hold").body(body::empty()).unwrap())
            .await
            .unwrap();
        abandoned.push(response);
    }
    eventually!(
        agent.state.live_bodies.load(Ordering::SeqCst) == 200,
        "the held bodies to exist"
    );
    drop(abandoned);
    eventually!(
        agent.state.live_bodies.load(Ordering::SeqCst) == 0,
        "every abandoned stream to be released on the agent"
    );
    assert_eq!(hub.get(EDGE, "/hello").await.unwrap().0, StatusCode::OK);
}
