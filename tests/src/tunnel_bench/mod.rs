//! Pieces of the tunnel's benchmark (`tunnel-bench`, run by `hack/bench/tunnel.sh`).
//!
//! Every component is a real process on loopback with real TLS, so each one's CPU time and
//! memory can be read from `/proc` on its own:
//!
//! ```text
//!                      ┌──────────── direct HTTP/2 + TLS ─────────────┐
//!                      │                                              ▼
//!  load generator ─────┼─► bench hub (TunnelServer) ══ tunnel ══► edgefleet-agent run ─► upstream
//!  (tunnel-bench,      │     [harness]                                   (--kubeconfig)   (serve-upstream,
//!   HTTP/2 + TLS)      ├─► edgefleet-apiserver dev ══ tunnel ══► edgefleet-agent run ─►  HTTPS, h2 +
//!                      │     clusters/{name}/proxy                                         http/1.1)
//!                      └─► rathole server ══ TLS ══► rathole client ────────────────────►
//! ```
//!
//! * [`procs`]: child processes whose output lines are timestamped as they arrive, and what
//!   `/proc` says about them (CPU seconds, RSS, sockets).
//! * [`pki`]: one CA and the certificates every component uses.
//! * [`upstream`]: the HTTPS server every path ends at (a stand-in for an edge kube-apiserver).
//! * [`harness`]: the hub side of the tunnel alone: `TunnelServer` plus an HTTPS front that
//!   forwards each request to the agent through its `Dialer`.
//! * [`client`] and [`load`]: HTTP/2 clients and the load shapes (closed loop, transfer, held
//!   streams).
//! * [`rathole`]: the baseline tunnel's configuration.
//! * [`devhub`]: the real hub (`edgefleet-apiserver dev`) on fixed ports, restartable.
//! * [`rig`]: the upstream and the four paths to it, each path's processes restartable so
//!   that memory is always read on fresh processes.

pub mod client;
pub mod devhub;
pub mod harness;
pub mod load;
pub mod pki;
pub mod rathole;
pub mod rig;
pub mod upstream;
