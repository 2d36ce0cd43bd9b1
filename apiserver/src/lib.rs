//! `edgefleet-apiserver`: the hub — an aggregated Kubernetes API server for the `edgefleet.io`
//! kinds (DESIGN.md §1–§4).
//!
//! ```text
//! TLS ─► http::stack (tower layers): request info ─► authentication ─► audit ─► impersonation
//!        ─► authorization ─► body capture ─► router ─┬─► registry ─► watch cache ─► storage
//!                                   │                ├─► proxy ─► tunnel port (agents)
//!                          audit trail (files)       └─► discovery, OpenAPI, health
//! ```

pub mod agents;
pub mod app;
pub mod audit;
pub mod auth;
pub mod controllers;
pub mod dev;
pub mod errors;
pub mod http;
pub mod kubeconfig;
pub mod negotiation;
pub mod pki;
pub mod registry;
pub mod storage;
pub mod structural;
pub mod tasks;
