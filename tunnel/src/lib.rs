//! The reverse HTTP/2 tunnel between edge agents and the hub (DESIGN.md §6).
//!
//! Edge clusters sit behind firewalls: nothing connects in. Each agent dials the hub's tunnel
//! port, and after the TLS handshake the roles reverse: the agent **serves** HTTP/2 on the
//! connection it opened, and the hub is the HTTP/2 **client**, opening one stream per forwarded
//! request. One TCP connection per agent carries everything; no socket is opened per request.
//!
//! ```text
//!   edge site (firewalled)                                 hub replica
//!  ┌────────────────────────┐                     ┌─────────────────────────────────────┐
//!  │ TunnelClient           │ ① TCP + TLS 1.3     │ TunnelServer                        │
//!  │  (dials out, backoff   │ ──────────────────► │  accept-rate limit, handshake cap   │
//!  │   with full jitter)    │   ALPN h2, client   │                                     │
//!  │                        │   cert if enrolled  │                                     │
//!  │                        │ ② Hello ──────────► │  Admission::admit (hub's policy)    │
//!  │                        │ ◄────────── Welcome │  (or Refused{reason, retryAfter})   │
//!  │                        │ ③ HTTP/2            │                                     │
//!  │  HTTP/2 SERVER         │ ◄═══ streams ══════ │  HTTP/2 CLIENT                      │
//!  │   reserved paths       │   GET/POST/watch,   │  SessionRegistry: identity → session│
//!  │   (ready, rotation)    │   extended CONNECT  │  Dialer (tower::Service) per agent  │
//!  │   your tower::Service  │ ◄═══ PING ════════► │  events: Connected / Disconnected   │
//!  └────────────────────────┘                     └─────────────────────────────────────┘
//! ```
//!
//! * [`handshake`]: the one-frame-each-way exchange between TLS and HTTP/2 (length-prefixed
//!   JSON, bounded, fuzzed).
//! * Identity is mechanism here and policy in the hub: the hub injects an [`Admission`]; agents
//!   enroll with a bootstrap token and a CSR, then use mutual TLS; the hub rotates certificates
//!   over the tunnel ([`Session::rotate_certificate`]) and revokes by closing the session
//!   ([`SessionRegistry::close`]) and refusing the next Hello. After enrolling, an agent keeps
//!   the connection it enrolled on as its session. See [`identity`].
//! * Hub: [`TunnelServer`] accepts, [`SessionRegistry`] tracks sessions and publishes
//!   [`SessionEvent`]s, [`Dialer`] sends requests and opens upgraded byte streams.
//! * Agent: [`TunnelClient`] runs the connect loop and serves your service.
//! * Both ends forward HTTP messages: [`forwarding`] has the hop-by-hop header list and the
//!   WebSocket accept key they share; [`error_chain`] writes an error and its causes on one line.
//! * Liveness: HTTP/2 PING keepalive on both ends plus a watchdog that tears down a connection
//!   whose peer went silent ([`Keepalive`]); every timeout is in [`timeouts`], every size limit
//!   in [`limits`].
//!
//! What this crate guarantees, and how:
//!
//! * **Agents always come back**: the connect loop never exits; every failure (refusal,
//!   TLS error, hub restart, dead connection) ends in a jittered wait of at most
//!   [`Backoff::cap`] (plus the hub's `retryAfter`, if it sent one).
//! * **No head-of-line blocking**: every request and every upgraded stream is its own HTTP/2
//!   stream with its own flow-control window, and the connection window covers every stream's
//!   window at once, so stalled readers stall only their own streams.
//! * **No leaked streams**: a caller dropping a response body resets its stream; closing a
//!   session cancels every task hyper spawned for it; a peer that goes silent is detected
//!   within [`Keepalive::dead_peer_after`].
//! * **Bounded memory**: a peer can make the other side buffer at most one stream window
//!   ([`limits::STREAM_WINDOW_BYTES`]) per stream whose reader is slow, and nothing for idle
//!   streams; handshake frames are capped at [`limits::MAX_HANDSHAKE_FRAME_BYTES`], header
//!   lists at [`limits::MAX_HEADER_LIST_BYTES`].
//! * **Bad peers hurt only themselves**: malformed frames, garbage instead of TLS, the Hello or
//!   the HTTP/2 preface, oversized headers: each ends that stream or that connection.
//!
//! This crate knows nothing of Kubernetes; the hub (`edgefleet-apiserver`) and the agent
//! (`edgefleet-agent`) give meaning to identities and requests.

pub mod backoff;
pub mod body;
pub mod client;
pub mod dialer;
pub mod error;
pub mod forwarding;
pub mod handshake;
pub mod http2;
pub mod identity;
pub mod limits;
mod rate_limit;
pub mod registry;
pub mod reserved;
pub mod server;
pub mod timeouts;
pub mod tls;

pub use backoff::Backoff;
pub use body::TunnelBody;
pub use client::{AgentStatus, TunnelClient, TunnelClientConfig};
pub use dialer::{Dialer, UpgradeOutcome, UpgradedStream};
pub use error::{error_chain, BoxError, Error, Result};
pub use http2::{Http2Config, Keepalive};
pub use identity::{
    Admission, Admitted, BootstrapToken, CertificateAuthority, CertificateSigner, IdentityStore,
    LeafSpec, PeerCertificates, Refusal, StoredIdentity, Usage,
};
pub use registry::{DisconnectReason, Session, SessionEvent, SessionEventKind, SessionRegistry};
pub use server::{AcceptLimits, ServerStats, TunnelServer, TunnelServerConfig};

// Re-exported so implementors of `Admission` need no direct dependency on the macro crate.
pub use async_trait::async_trait;
