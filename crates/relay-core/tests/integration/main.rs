//! relay-core's tests, in one binary: domain rules, rendering snapshots, and properties.
//!
//! The document's unit tests (UT-001…UT-012) are mapped to tests in relay-engine's test module;
//! the ones that concern only the pure core are covered here too:
//! UT-004 (added domain reaches relay_domains), UT-005 (disabled domain leaves it), UT-006 (no
//! change → empty plan), UT-007 (transport line for a new domain).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

mod domains;
mod log_escape;
mod map_mode;
mod model;
mod props;
mod recipients;
mod recovery;
mod render;
mod rollback;
mod strategies;
