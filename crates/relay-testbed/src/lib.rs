//! Throwaway real components for relay-sync's end-to-end tests, `cargo xtask demo`,
//! `cargo xtask bench` and `cargo xtask soak`: a private MariaDB ([`MariaDb`]), a primary and a
//! replica with GTID replication ([`Replication`]), a network namespace whose link can fail
//! ([`NetNs`]), a private Postfix instance ([`Postfix`]), Postfix in a real container and images
//! built from Debian's packages ([`PostfixContainer`], [`Image`], [`Pod`]), Postfix's
//! `smtp-sink` standing in for the mailbox host ([`SmtpSink`]), and stand-ins for two AWS
//! services, each checking SigV4 signatures and recording what it was asked: Amazon SNS
//! ([`SnsStandIn`]) and AWS Secrets Manager ([`SecretsManagerStandIn`]).
//!
//! Everything lives under its own temporary directory, listens on 127.0.0.1 (or inside a
//! namespace of its own) only, and is stopped and removed on drop. A missing package is an
//! error that names the `apt-get install` command.
//!
//! Architecture invariant: nothing here touches the system's own Postfix or MariaDB, their
//! configuration, or any address but loopback and a namespace's private /30 (whose packets
//! never leave the host).

// A test tool: it sets up files and directories by path inside private temporary directories
// of its own, which no other user can reach (SECURITY.md).
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

mod aws;
mod container;
mod mariadb;
mod netns;
mod postfix;
mod replica;
mod secrets_manager;
mod sns;
pub mod takeover;

pub use container::{
    cache_dir, podman, podman_run, require_container_tools, unique_name, Image, Pod,
    PostfixContainer, CONTAINER_PACKAGES,
};
pub use mariadb::{command_types, MariaDb, ServerOptions};
pub use netns::NetNs;
pub use postfix::{Postfix, SmtpSink};
pub use replica::{Lag, Replication};
pub use secrets_manager::{
    Behaviour as SecretsBehaviour, SecretsManagerStandIn, Seen as SecretsSeen,
    ACCOUNT as SECRETS_ACCOUNT,
};
pub use sns::{Behaviour as SnsBehaviour, Published as SnsPublished, Seen as SnsSeen, SnsStandIn};

/// The repository's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The repository's `packaging/` directory.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it back).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Fails, naming the install command, when `program` is not at `path`.
pub fn require(path: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(path);
    if path.exists() {
        Ok(path)
    } else {
        anyhow::bail!(
            "{} is missing: install it with `apt-get install -y {package}` (see .ci/run)",
            path.display()
        )
    }
}
