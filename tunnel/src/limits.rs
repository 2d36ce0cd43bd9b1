//! Sizes and counts that bound the tunnel's memory, with the reasoning behind each number.
//!
//! Memory a peer can make us hold is bounded by HTTP/2 flow control: the receiver of a stream
//! buffers at most [`STREAM_WINDOW_BYTES`] of data its consumer has not read yet. That happens
//! only while the consumer (for the hub: a kubectl client on a slow link) reads slower than the
//! peer sends; an idle session or stream buffers nothing.
//!
//! The connection window is deliberately *not* a second, tighter memory bound: a connection
//! window smaller than the sum of the stream windows lets a few stalled readers use it up, and
//! then every other stream of the tunnel (other users, the status stream) stops: head-of-line
//! blocking, the failure this tunnel must not have. So the bound is per stream, and the hub
//! bounds how many proxied streams it has in flight at its HTTP layer (as kube-apiserver does
//! with `--max-requests-inflight`).
//!
//! Fixed cost, measured with 1,000 idle agents on one hub (debug build): about 41 KB of hub RSS
//! per idle agent, 24 KiB of which are h2's own connection buffers (16 KiB write buffer, 8 KiB
//! read buffer, allocated per connection and not configurable), the rest rustls (≈ 4 KiB read
//! buffer once idle), hyper's connection tasks and the registry entry. A held idle stream costs
//! about 11 KB for both ends together.

/// Largest handshake frame (`Hello`, `Welcome`/`Refused`) either side accepts. A Hello carries
/// at most a token and a CSR (~1 KiB); a Welcome at most a certificate chain (a few KiB).
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 16 * 1024;

/// Per-stream receive window (both ends). 1 MiB lets one stream move ~80 Mbit/s across a
/// 100 ms RTT (window / RTT), enough for `kubectl logs`, `cp` and large lists, while a stream
/// whose reader stalls pins at most 1 MiB.
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;

/// Streams the hub may have open on one agent at once (the agent advertises it). kube-apiserver
/// allows 1000 per connection by default (`--http2-max-streams-per-connection`); we allow a
/// little more so 1000 forwarded watches still leave room for the tunnel's own streams. Further
/// requests queue in the hub instead of failing.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Per-connection receive window (both ends): every stream's full window at once (1 GiB, below
/// the protocol's 2³¹−1 limit), so no number of stalled streams can block the others (see the
/// module docs). It reserves nothing; memory is still bounded per stream. Adaptive (BDP) stream
/// windows stay off: they grow to 16 MiB per stream, which a hub with thousands of agents
/// cannot promise.
pub const CONNECTION_WINDOW_BYTES: u32 = STREAM_WINDOW_BYTES * MAX_CONCURRENT_STREAMS;

/// Largest header list (decoded, per HTTP/2 rules) either end accepts. Requests from kubectl
/// carry a few KiB; impersonation of a user with hundreds of groups stays far below. A larger
/// block gets `431` from the agent or a stream reset at the hub, never a connection error.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// Per-stream send buffer beyond what flow control lets through (both ends). hyper's default is
/// 400 KiB; a quarter of the stream window keeps a sender that outruns its window from holding
/// more than this per stream.
pub const MAX_SEND_BUF_BYTES: usize = 256 * 1024;

/// Largest reserved-path request or response body (CSR, certificate chain).
pub const MAX_RESERVED_BODY_BYTES: usize = 64 * 1024;

/// Capacity of the session-event broadcast. A subscriber that falls further behind gets
/// `Lagged` and must resynchronise from [`crate::SessionRegistry::sessions`]; 16k events cover a
/// reconnect storm of 10,000 agents without lagging a subscriber that keeps up at all.
pub const SESSION_EVENT_CAPACITY: usize = 16 * 1024;

/// Default accept-rate limit of a hub replica: sustained new tunnels per second. A full TLS 1.3
/// handshake with ECDSA P-256 costs the hub roughly 1 ms of CPU, so 500/s spends at most half a
/// core on a reconnect storm and brings 10,000 agents back in ~20 s (agents spread their retries
/// over up to `BACKOFF_CAP` anyway).
pub const ACCEPT_RATE_PER_SECOND: u32 = 500;

/// Default burst of the accept-rate token bucket.
pub const ACCEPT_BURST: u32 = 500;

/// Default cap on connections waiting for an accept-rate token; beyond it new connections are
/// closed at once. Each waiting connection costs a socket and a small task, no TLS state.
pub const MAX_PENDING_ACCEPTS: usize = 4096;

/// Default cap on concurrent TLS + Hello handshakes (each holds TLS state and may wait on the
/// hub's admission decision).
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
