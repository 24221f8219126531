//! relay-ops as an admin tool embeds it, against a private MariaDB and Postfix (relay-testbed):
//! the facade from inside an embedder's multi-threaded tokio runtime, and the `admin` example.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

mod embed;
