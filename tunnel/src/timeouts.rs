//! Every timeout and interval of the tunnel, in one place.
//!
//! The config structs ([`crate::TunnelServerConfig`], [`crate::TunnelClientConfig`],
//! [`crate::Backoff`], [`crate::Keepalive`]) take their defaults from here; tests shorten them
//! through those structs, never by editing a literal elsewhere.
//!
//! How they relate, for one agent:
//!
//! ```text
//!  agent                                              hub
//!   │ TCP connect ≤ TCP_CONNECT_TIMEOUT                │
//!   │ ─────────────────────────────────────────────►   │ waits ≤ ACCEPT_WAIT_TIMEOUT for an
//!   │                                                  │ accept-rate token, else closes
//!   │ TLS + Hello/Welcome + first HTTP/2 round trip    │
//!   │ all within HANDSHAKE_TIMEOUT (both ends)         │
//!   │ ◄──────── PING every KEEPALIVE_INTERVAL ───────► │ a PING unanswered for
//!   │           of silence                             │ KEEPALIVE_TIMEOUT closes the session
//!   │ connection lost: wait full-jitter backoff in     │
//!   │ [0, min(BACKOFF_CAP, BACKOFF_BASE·2ⁿ)], redial   │
//! ```

use std::time::Duration;

/// How long the agent waits for the hub's TCP handshake.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Budget for everything between TCP accept/connect and a usable session: TLS, the Hello/Welcome
/// exchange (including the hub's admission decision) and the first HTTP/2 round trip. A peer
/// that sends slowly (one byte at a time) is cut off when it runs out, so a slow sender holds a
/// handshake slot for at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accepted TCP connection may wait for an accept-rate token and a handshake slot
/// before the hub closes it unanswered. Closing before TLS is the cheapest refusal there is; the
/// agent's jittered backoff spreads the retry.
pub const ACCEPT_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept(2)` (e.g. `EMFILE`), so the accept loop does not spin while the
/// process is out of file descriptors.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// HTTP/2 PING after this much silence from the peer, on both ends. 20 s keeps NAT and
/// load-balancer idle timers (commonly 60–350 s) from dropping an idle tunnel, and costs a hub
/// with 10,000 agents ~500 tiny frames per second.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// A PING unanswered for this long declares the peer dead. Dead-peer detection therefore takes
/// at most `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` (40 s by default).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Bounds the agent applies to the keepalive parameters the hub sends in `Welcome`, so a
/// misconfigured hub cannot make an agent ping in a busy loop or never notice a dead hub.
pub const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// See [`MIN_KEEPALIVE_INTERVAL`].
pub const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(600);

/// First reconnect delay ceiling; the n-th consecutive failure waits a uniformly random time in
/// `[0, min(BACKOFF_CAP, BACKOFF_BASE · 2ⁿ)]` ("full jitter").
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// Ceiling of any reconnect delay: after a hub outage every agent is back within this (plus one
/// handshake) of the hub answering again.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A session that lasted this long counts as healthy: the backoff starts over afterwards. A
/// shorter one counts as a failed attempt, so a hub that accepts and immediately drops agents
/// does not get hammered at `BACKOFF_BASE` pace.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Budget for one certificate rotation over the tunnel (CSR round trip, signing, delivery).
pub const ROTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long before `not_before` a certificate issued by [`crate::CertificateAuthority`] starts
/// being valid, to absorb clock skew between hub and edge.
pub const CERTIFICATE_BACKDATE: Duration = Duration::from_secs(5 * 60);
