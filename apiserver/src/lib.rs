//! The edgefleet hub.
