//! The HTTP surface: TLS listener, the request pipeline, routing and handlers.

pub mod audited;
pub mod body;
pub mod core;
pub mod decode;

pub mod discovery;
pub mod openapi;
pub mod params;
pub mod pipeline;
pub mod proxy;
pub mod resources;
pub mod router;
pub mod server;
pub mod tls;
pub mod websocket_frames;
