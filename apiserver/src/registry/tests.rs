//! Registry tests run against the embedded store.
