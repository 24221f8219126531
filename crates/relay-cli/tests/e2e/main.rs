//! End-to-end: the built `relay-sync` binary against a private MariaDB and a private Postfix
//! instance on loopback (relay-testbed). Each test builds its own gateway, so tests can stop
//! and break components without disturbing each other.
//!
//! The document's integration tests: IT-001 (`first_sync_relays_enabled_domains`), IT-002 and
//! IT-003 (`three_added_two_disabled`), IT-004 (`database_stopped_keeps_configuration`).
//! The operational tests OT-001 and OT-002 speak SMTP to the private Postfix (`mail_flow`).
//! Issue "Reliability": `faults`, `crash`, `concurrency`, `hostile`, `alerts`, `tls`, `timeouts`.
//! AWS (the `aws` feature): `sns` alerts and `secrets`, the password from Secrets Manager.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

mod gateway;
mod json;
mod scenarios;

mod operator;
mod ops;
mod packaging;
mod planted;
mod recorded;
mod restore;
mod rollback_order;

mod alerts;
mod concurrency;
mod container;
mod crash;
mod faults;
mod hostile;
mod mail_flow;
mod map_mode;
mod recipients;
mod secrets;
mod sidecar;
mod smtp;
mod sns;
mod takeover;
mod timeouts;
mod tls;
mod watch;
mod watch_postfix;

// Issue 21: a long-running watcher, and a fleet on a replicated database.
mod fleet;
mod long_run;
mod watcher;
