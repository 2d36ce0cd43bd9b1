//! Every timeout and interval of the agent, in one place. The tunnel's own (connect, handshake,
//! keepalive, backoff) live in [`edgefleet_tunnel::timeouts`].

use std::time::Duration;

use edgefleet_api::agent::FACTS_HEARTBEAT_SECONDS;

/// How often the facts stream repeats an unchanged line. Two thirds of the hub's
/// [`FACTS_HEARTBEAT_SECONDS`], so scheduling and network delays never stretch the silence the
/// hub sees beyond that bound.
pub const FACTS_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(FACTS_HEARTBEAT_SECONDS * 2 / 3);

/// TCP connect budget to the edge kube-apiserver. Running out answers the caller 504.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Budget from sending a request upstream to receiving its response headers (TLS included).
/// kube-apiserver answers every short request within its own 60 s request timeout and sends a
/// long-running one's headers (watch, logs -f, exec's 101) at once, so only a hung upstream runs
/// out of this; the caller then gets 504. The body is never timed: watches stream for as long
/// as the hub reads them.
pub const UPSTREAM_RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(120);

/// HTTP/2 PING interval on pooled upstream connections, so a dead one is noticed and not reused.
pub const UPSTREAM_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Idle pooled upstream connections are closed after this long.
pub const UPSTREAM_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Server-side timeout of one node watch (`timeoutSeconds`); the agent re-watches from the last
/// resource version and re-reads `/version` each time, so a Kubernetes upgrade shows up within
/// this bound even if the watch survives it. Just under 5 minutes, as client-go's reflector.
pub const NODE_WATCH_TIMEOUT_SECONDS: u32 = 290;

/// Page size when listing nodes.
pub const NODE_LIST_PAGE_SIZE: u32 = 500;

/// First wait before relisting nodes after a failure; doubles per consecutive failure.
pub const NODE_WATCH_RETRY_BASE: Duration = Duration::from_secs(1);

/// Longest wait before relisting nodes after failures.
pub const NODE_WATCH_RETRY_CAP: Duration = Duration::from_secs(30);

/// Simulated agents start this far apart (1 s per 1,000 agents), so a large `--count` does not
/// hit the hub's accept-rate limit all at once.
pub const SIMULATED_START_SPREAD_PER_AGENT: Duration = Duration::from_millis(1);

/// A watch on a simulated cluster (nothing ever changes there) stays open this long unless the
/// caller's `timeoutSeconds` is shorter, like kube-apiserver's `--min-request-timeout` default.
pub const SIMULATED_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often `simulate` logs how many of its agents are connected (only when it changed).
pub const SIMULATION_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// How often, with `--identity-secret`, the agent compares its working copy of `identity.pem`
/// with what the Secret holds. Enrollment is saved at once (it changes the tunnel's status); a
/// rotation over the tunnel changes nothing the agent is told of, so it reaches the Secret
/// within this bound. The certificate it replaces stays valid for a third of its lifetime, so
/// a restart within this window still reconnects.
pub const IDENTITY_SECRET_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// First wait before writing the identity Secret again after a failure; doubles per
/// consecutive failure.
pub const IDENTITY_SECRET_RETRY_BASE: Duration = Duration::from_secs(1);

/// Longest wait before writing the identity Secret again after failures.
pub const IDENTITY_SECRET_RETRY_CAP: Duration = Duration::from_secs(30);
