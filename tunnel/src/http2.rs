//! HTTP/2 settings for both ends, and the pieces that make a connection impossible to leak.
//!
//! * [`Http2Config`] and [`Keepalive`] configure hyper's builders (numbers in [`crate::limits`]
//!   and [`crate::timeouts`]).
//! * `SessionExecutor` spawns every task hyper creates for a connection (hyper's client runs
//!   the connection itself and one task per stream on the executor) under the session's
//!   [`CancellationToken`]: closing a session cancels them all, so no stream task outlives its
//!   connection, whatever the user's service or body does.
//! * `Watched` wraps the transport to note when the peer was last heard from and how the
//!   transport ended; `dead_peer_watchdog` tears a connection down when the peer stays silent
//!   past the keepalive deadline even if the HTTP/2 stack is stuck flushing to a dead socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handshake::KeepaliveParams;
use crate::limits;
use crate::registry::DisconnectReason;
use crate::timeouts::{
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_KEEPALIVE_INTERVAL, MIN_KEEPALIVE_INTERVAL,
};

/// Flow control and size limits of the tunnel's HTTP/2 connections (see [`crate::limits`] for
/// why the defaults are what they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http2Config {
    /// Receive window per stream, bytes.
    pub stream_window_bytes: u32,
    /// Receive window per connection, bytes. Keep it at least `stream_window_bytes ×
    /// max_concurrent_streams`, or stalled streams can block the others.
    pub connection_window_bytes: u32,
    /// Streams the hub may open on an agent at once (advertised by the agent).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list accepted, bytes.
    pub max_header_list_bytes: u32,
    /// Send buffer per stream beyond the peer's window, bytes.
    pub max_send_buf_bytes: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            stream_window_bytes: limits::STREAM_WINDOW_BYTES,
            connection_window_bytes: limits::CONNECTION_WINDOW_BYTES,
            max_concurrent_streams: limits::MAX_CONCURRENT_STREAMS,
            max_header_list_bytes: limits::MAX_HEADER_LIST_BYTES,
            max_send_buf_bytes: limits::MAX_SEND_BUF_BYTES,
        }
    }
}

/// HTTP/2 PING keepalive. The hub chooses it and tells the agent in `Welcome`, so both ends of
/// a session detect a dead peer on the same schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// PING after this much silence from the peer.
    pub interval: Duration,
    /// Declare the peer dead when a PING stays unanswered this long.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: KEEPALIVE_INTERVAL,
            timeout: KEEPALIVE_TIMEOUT,
        }
    }
}

impl Keepalive {
    /// The longest a live peer can stay silent: one interval until our PING, one timeout for
    /// its answer. hyper closes a connection silent for longer.
    pub fn dead_peer_after(&self) -> Duration {
        self.interval + self.timeout
    }

    /// When [`dead_peer_watchdog`] tears the connection down regardless: one more timeout past
    /// [`Keepalive::dead_peer_after`], so it only acts when hyper's own close is stuck.
    pub(crate) fn watchdog_after(&self) -> Duration {
        self.dead_peer_after() + self.timeout
    }

    pub(crate) fn to_wire(self) -> KeepaliveParams {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        KeepaliveParams {
            interval_ms: ms(self.interval),
            timeout_ms: ms(self.timeout),
        }
    }

    /// The hub's parameters, clamped so a misconfigured hub cannot make the agent ping in a
    /// busy loop or never notice that the hub is gone.
    pub(crate) fn from_wire(params: KeepaliveParams) -> Self {
        let clamp = |ms: u64| {
            Duration::from_millis(ms).clamp(MIN_KEEPALIVE_INTERVAL, MAX_KEEPALIVE_INTERVAL)
        };
        Self {
            interval: clamp(params.interval_ms),
            timeout: clamp(params.timeout_ms),
        }
    }
}

/// The hub's side: an HTTP/2 client builder.
pub(crate) fn client_builder(
    config: &Http2Config,
    keepalive: Keepalive,
    executor: SessionExecutor,
) -> hyper::client::conn::http2::Builder<SessionExecutor> {
    let mut builder = hyper::client::conn::http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(config.stream_window_bytes)
        .initial_connection_window_size(config.connection_window_bytes)
        .adaptive_window(false)
        .max_header_list_size(config.max_header_list_bytes)
        .max_send_buf_size(config.max_send_buf_bytes)
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        // An idle tunnel is the common case, and exactly the one whose death we must notice.
        .keep_alive_while_idle(true);
    builder
}

/// The agent's side: an HTTP/2 server builder.
pub(crate) fn server_builder(
    config: &Http2Config,
    keepalive: Keepalive,
    executor: SessionExecutor,
) -> hyper::server::conn::http2::Builder<SessionExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(config.stream_window_bytes)
        .initial_connection_window_size(config.connection_window_bytes)
        .adaptive_window(false)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_list_bytes)
        .max_send_buf_size(config.max_send_buf_bytes)
        .keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        // exec/attach/port-forward arrive as RFC 8441 extended CONNECT.
        .enable_connect_protocol()
        // The agent relays its cluster's responses; it adds no headers of its own.
        .auto_date_header(false);
    builder
}

/// Spawns hyper's per-connection and per-stream tasks so that they end when the session does.
#[derive(Clone, Debug)]
pub(crate) struct SessionExecutor {
    closed: CancellationToken,
}

impl SessionExecutor {
    pub(crate) fn new(closed: CancellationToken) -> Self {
        Self { closed }
    }
}

impl<F> hyper::rt::Executor<F> for SessionExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let closed = self.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = future => {}
                () = closed.cancelled() => {}
            }
        });
    }
}

/// How a transport ended, as seen by [`Watched`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TransportEnd {
    /// The peer closed the connection (read returned EOF).
    Eof,
    /// Reading or writing failed.
    Error(String),
}

/// What [`Watched`] observed, shared with the task that owns the session.
#[derive(Debug)]
pub(crate) struct TransportTrace {
    origin: Instant,
    last_read_ms: AtomicU64,
    end: OnceLock<TransportEnd>,
}

impl TransportTrace {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            end: OnceLock::new(),
        })
    }

    fn heard_from_peer(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the peer last sent anything.
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    pub(crate) fn end(&self) -> Option<&TransportEnd> {
        self.end.get()
    }

    fn ended(&self, end: TransportEnd) {
        // The first observation is the cause; later ones are consequences.
        let _ = self.end.set(end);
    }
}

/// A transport that reports to a [`TransportTrace`].
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    trace: Arc<TransportTrace>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, trace: Arc<TransportTrace>) -> Self {
        Self { inner, trace }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.trace.heard_from_peer(),
            Poll::Ready(Ok(())) if buf.remaining() > 0 => this.trace.ended(TransportEnd::Eof),
            Poll::Ready(Err(e)) => this.trace.ended(TransportEnd::Error(e.to_string())),
            _ => {}
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(e)) = &res {
            this.trace.ended(TransportEnd::Error(e.to_string()));
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Err(e)) = &res {
            this.trace.ended(TransportEnd::Error(e.to_string()));
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why an HTTP/2 connection ended, from what the transport saw.
pub(crate) fn classify(
    trace: &TransportTrace,
    keepalive: Keepalive,
    error: Option<hyper::Error>,
) -> DisconnectReason {
    match (trace.end(), error) {
        (Some(TransportEnd::Error(e)), _) => DisconnectReason::ConnectionError(e.clone()),
        (_, Some(e)) if e.is_timeout() => DisconnectReason::KeepaliveTimeout,
        (_, Some(e)) => DisconnectReason::ConnectionError(e.to_string()),
        (Some(TransportEnd::Eof), None) => DisconnectReason::PeerClosed,
        // hyper closes quietly on a keepalive timeout; silence that long means exactly that.
        (None, None) if trace.silent_for() >= keepalive.timeout => {
            DisconnectReason::KeepaliveTimeout
        }
        (None, None) => DisconnectReason::ConnectionError("HTTP/2 connection closed".into()),
    }
}

/// Resolves once the peer has been silent for `limit`.
pub(crate) async fn dead_peer_watchdog(trace: &TransportTrace, limit: Duration) {
    loop {
        let silent = trace.silent_for();
        if silent >= limit {
            return;
        }
        tokio::time::sleep(limit - silent).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn keepalive_from_the_wire_is_clamped() {
        let k = Keepalive::from_wire(KeepaliveParams {
            interval_ms: 0,
            timeout_ms: u64::MAX,
        });
        assert_eq!(k.interval, MIN_KEEPALIVE_INTERVAL);
        assert_eq!(k.timeout, MAX_KEEPALIVE_INTERVAL);
        let k = Keepalive::default();
        assert_eq!(Keepalive::from_wire(k.to_wire()), k);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_fires_only_after_the_peer_is_silent_for_the_limit() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let trace = TransportTrace::new();
        let mut ours = Watched::new(ours, trace.clone());
        let limit = Duration::from_secs(10);
        let watchdog = dead_peer_watchdog(&trace, limit);
        tokio::pin!(watchdog);

        // The peer talks every 6 s: the watchdog keeps waiting.
        for _ in 0..3 {
            tokio::select! {
                () = &mut watchdog => panic!("fired while the peer was talking"),
                () = tokio::time::sleep(Duration::from_secs(6)) => {}
            }
            peer.write_all(b"x").await.unwrap();
            let mut byte = [0_u8; 1];
            ours.read_exact(&mut byte).await.unwrap();
        }
        let silent_since = Instant::now();
        watchdog.await;
        assert_eq!(silent_since.elapsed(), limit);
    }

    #[tokio::test]
    async fn the_trace_records_eof_as_the_end() {
        let (peer, ours) = tokio::io::duplex(1024);
        let trace = TransportTrace::new();
        let mut ours = Watched::new(ours, trace.clone());
        drop(peer);
        let mut buf = Vec::new();
        ours.read_to_end(&mut buf).await.unwrap();
        assert_eq!(trace.end(), Some(&TransportEnd::Eof));
    }
}
