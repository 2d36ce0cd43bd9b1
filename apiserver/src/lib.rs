//! The edgefleet hub.

pub mod auth;
