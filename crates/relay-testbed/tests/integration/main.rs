//! The testbed's own components against the real programs: replication and network
//! namespaces, which the soak and the fleet tests rely on to fail the way production does.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod netns;
mod replication;
