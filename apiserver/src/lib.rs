//! The edgefleet hub.
pub mod apply;
