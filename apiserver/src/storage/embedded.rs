//! Placeholder until the embedded backend lands.
