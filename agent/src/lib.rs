//! `edgefleet-agent`: the edge side of the tunnel (DESIGN.md §5, §6, §9).
//!
//! An agent dials out to the hub's tunnel port ([`edgefleet_tunnel::TunnelClient`]) and then
//! **serves** HTTP/2 on that connection: the hub is the client. What it serves is one
//! [`AgentService`] in front of a backend:
//!
//! ```text
//!  hub ══ tunnel (HTTP/2, agent serves) ══► TunnelClient
//!                                             │ /.well-known/edgefleet-tunnel/*  tunnel's own (ready, rotation)
//!                                             ▼
//!                                           AgentService
//!                                             │ GET /.well-known/edgefleet/facts  NDJSON ClusterFacts + heartbeat
//!                                             │ other /.well-known/edgefleet/*    404, never forwarded
//!                                             ▼
//!                      ┌───────────── backend ──────────────┐
//!   `run`:             │ UpstreamService                     │  `simulate`:  SimulatedService
//!                      │  CONNECT (RFC 8441) ─► HTTP/1.1     │               read-only core API
//!                      │    Upgrade, then splice bytes       │               (/version, discovery,
//!                      │  anything else ─► same request to   │               nodes, namespaces) from
//!                      │    the edge kube-apiserver with the │               in-memory facts
//!                      │    agent's credentials + the hub's  │
//!                      │    Impersonate-* headers, streamed  │
//!                      └─────────────────────────────────────┘
//! ```
//!
//! * [`run`]: one agent for a real edge cluster ([`RunConfig`] → [`EdgeAgent::build`] →
//!   [`EdgeAgent::run`]); facts come from a list+watch of the cluster's nodes ([`facts::watch`]);
//!   its identity lives in a directory or in a Secret of the edge cluster ([`identity`]).
//! * [`simulate`]: many agents in one process, each with its own TLS connection and identity,
//!   each backed by an in-memory cluster ([`SimulateConfig`] → [`Simulation::build`] →
//!   [`Simulation::run`]), for the quickstart, end-to-end tests and scale benchmarks.
//! * Every failure a caller sees is a `metav1.Status`, produced in one place: [`status`].
//! * Every timeout and interval is in [`timeouts`].

pub mod error;
pub mod facts;
pub mod hub;
pub mod identity;
pub mod run;
pub mod service;
pub mod simulate;
pub mod status;
pub mod timeouts;
pub mod upstream;

pub use error::{Error, Result};
pub use hub::HubConfig;
pub use identity::{IdentityStorage, SecretRef, SecretStorage};
pub use run::{ClusterRef, EdgeAgent, RunConfig};
pub use service::AgentService;
pub use simulate::{ClusterShape, SimulateConfig, Simulation};
pub use upstream::{Upstream, UpstreamSource};

/// This agent's version, reported in the tunnel Hello and in [`edgefleet_api::agent::ClusterFacts`].
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(test)]
mod testing;
