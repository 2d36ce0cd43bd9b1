//! The HTTP surface: the TLS listener, the request path as a stack of tower layers, routing
//! and handlers.
//!
//! ```text
//!  server (TLS, HTTP/1.1 + HTTP/2, hyper) ──► stack: layers ──► router ──► resources (registry)
//!                                                                    ├──► proxy (edge clusters)
//!                                                                    └──► discovery, OpenAPI, health
//! ```
//!
//! - [`server`]: connections; the one place hyper's types appear; runs switched connections.
//! - [`stack`]: the order of the [`layers`], in one place, each with its reason.
//! - [`router`]: dispatch, and the subresources registered with their own handlers.
//! - [`proxy`] and [`upgrade`]: `clusters/{name}/proxy`, and the connections exec and
//!   port-forward switch to; [`websocket_frames`] reads what they carry for recordings.
//! - [`body`]: the body type, responses, and the error that travels with an error response.

pub mod body;
pub mod core;
pub mod decode;

pub mod discovery;
pub mod layers;
pub mod openapi;
pub mod params;
pub mod proxy;
pub mod resources;
pub mod router;
pub mod server;
pub mod stack;
pub mod tls;
pub mod upgrade;
pub mod websocket_frames;
