//! The edgefleet hub.
pub mod storage;
