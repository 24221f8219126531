//! e2e (being written).
