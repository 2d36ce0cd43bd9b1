//! Load shapes: a closed loop of small GETs, one large transfer, many held (watch) streams, and
//! a stream whose reader stops. Each returns what was measured; CPU and memory are read around
//! them by the caller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use http::StatusCode;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::client::{Endpoint, H2Client};

/// Streams per client connection when holding many (the hub and the upstream allow 1000).
pub const HELD_STREAMS_PER_CONNECTION: usize = 900;
/// Streams being opened at once while opening held streams.
const OPEN_CONCURRENCY: usize = 256;

/// Latencies of a closed-loop run, sorted.
#[derive(Clone, Debug)]
pub struct Run {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Run {
    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-quantile latency in milliseconds (nearest rank).
    pub fn ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1e3
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `requests` GETs of `path` from `concurrency` workers, each sending its next request when
/// the previous response is fully read. Any non-200 answer fails the run.
pub async fn closed_loop(
    client: &H2Client,
    path: &str,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Run> {
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, path, issued) = (client.clone(), path.to_string(), issued.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while issued.fetch_add(1, Ordering::Relaxed) < requests {
                    let t0 = Instant::now();
                    let (status, _) = client.get_drain(&path).await?;
                    if status != StatusCode::OK {
                        bail!("GET {path}: {status}");
                    }
                    latencies.push(t0.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run { latencies, elapsed })
}

/// One GET of `bytes` bytes; returns the time to read all of it.
pub async fn transfer(client: &H2Client, bytes: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (status, got) = client
        .get_drain(&format!("/bench/blob?bytes={bytes}"))
        .await?;
    if status != StatusCode::OK || got != bytes {
        bail!("transfer: {status}, {got} of {bytes} bytes");
    }
    Ok(started.elapsed())
}

/// Client connections for held streams, opened before any stream so that opening streams and
/// the memory they cost can be measured apart from the connections.
pub struct HeldClients {
    clients: Vec<H2Client>,
}

impl HeldClients {
    /// Enough connections for `count` streams, `per_connection` on each:
    /// [`HELD_STREAMS_PER_CONNECTION`] for multiplexing clients, 1 for one connection per
    /// watch (as separate kubectl processes have).
    pub async fn connect(
        endpoint: &Endpoint,
        count: usize,
        per_connection: usize,
    ) -> anyhow::Result<HeldClients> {
        let connections = count.div_ceil(per_connection.max(1));
        let clients = futures::stream::iter(0..connections)
            .map(|_| H2Client::connect(endpoint, 1))
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        Ok(HeldClients { clients })
    }

    /// Opens `count` watches (`GET /bench/watch`) across the connections and holds them, bodies
    /// unread.
    pub async fn open_watches(self, count: usize) -> anyhow::Result<Held> {
        let started = Instant::now();
        let clients = &self.clients;
        let bodies: Vec<Incoming> = futures::stream::iter(0..count)
            .map(|i| {
                let client = clients[i % clients.len()].clone();
                async move {
                    let response = client.get("/bench/watch").await?;
                    if response.status() != StatusCode::OK {
                        bail!("watch: {}", response.status());
                    }
                    anyhow::Ok(response.into_body())
                }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        Ok(Held {
            opened_in: started.elapsed(),
            _clients: self.clients,
            _bodies: bodies,
        })
    }
}

/// Streams held open (their bodies unread); dropping this resets them all and closes their
/// connections.
pub struct Held {
    _clients: Vec<H2Client>,
    _bodies: Vec<Incoming>,
    /// Time from the first request to the last response head.
    pub opened_in: Duration,
}

impl Held {
    pub fn opens_per_second(&self, count: usize) -> f64 {
        count as f64 / self.opened_in.as_secs_f64()
    }
}

/// A stream whose reader has stopped: a GET of a body far larger than any window, on its own
/// connection, whose body is never read. Dropping it resets the stream.
pub struct Stalled {
    _client: H2Client,
    _body: Incoming,
}

/// How much the stalled stream asks for: more than every window and buffer on the way.
const STALLED_BYTES: u64 = 1 << 40;

/// Starts a stalled stream and waits `fill` for the windows on its way to fill up.
pub async fn stall(endpoint: &Endpoint, fill: Duration) -> anyhow::Result<Stalled> {
    let client = H2Client::connect(endpoint, 1).await?;
    let response = client
        .get(&format!("/bench/blob?bytes={STALLED_BYTES}"))
        .await?;
    if response.status() != StatusCode::OK {
        bail!("stalled stream: {}", response.status());
    }
    tokio::time::sleep(fill).await;
    Ok(Stalled {
        _client: client,
        _body: response.into_body(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
