//! End-to-end: the built `relay-sync` binary against a private MariaDB and a private Postfix
//! instance on loopback (relay-testbed). Each test builds its own gateway, so tests can stop
//! and break components without disturbing each other.
//!
//! The document's integration tests: IT-001 (`first_sync_relays_enabled_domains`), IT-002 and
//! IT-003 (`three_added_two_disabled`), IT-004 (`database_stopped_keeps_configuration`).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod gateway;
mod scenarios;
