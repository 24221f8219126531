//! The database side of relay-sync: the admin panel's MariaDB, read-only.
//!
//! [`DomainSource`] is the boundary the sync engine depends on; [`MariaDbSource`] implements it
//! with `mysql_async`, under connect and query timeouts, with optional TLS. Tests of the engine
//! use an in-memory implementation instead.
//!
//! `DB_HOST` may list several hosts ([`DbSettings::hosts`], e.g. a replica, then the primary):
//! a connection tries them in order, each under the connect timeout, and the first that lets
//! the user in is the one read (see [`MariaDbSource`] and [`ChangeSignal`]).
//!
//! Architecture invariant: this crate only ever reads. It runs exactly one query per fetch (two,
//! on one connection, when `RECIPIENTS_QUERY` is set) and never retries a query (the next cron
//! run is the retry, SPEC §2 step 2); trying the next host of `DB_HOST` after one that did not
//! answer is connecting, not retrying.
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Where the desired domain names come from.
///
/// A fetch returns the raw first column of every row, unvalidated: normalization and validation
/// belong to `relay-core`. A `NULL` or non-UTF-8 value is returned lossily (a `NULL` as an empty
/// string) so that validation rejects and logs it rather than the fetch failing as a whole.
pub trait DomainSource {
    /// Runs the query once and returns the raw names, in the order the database sent them.
    fn fetch_names(&self) -> impl Future<Output = Result<Vec<String>, DbError>> + Send;

    /// Both queries: `DB_QUERY`'s rows and, when `RECIPIENTS_QUERY` is set, its rows.
    ///
    /// The provided method knows no recipients query: it returns [`DomainSource::fetch_names`]
    /// with `recipients: None`, so a source that reads only domains needs nothing more.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, DbError>> + Send
    where
        Self: Sync,
    {
        async {
            Ok(Fetched {
                names: self.fetch_names().await?,
                recipients: None,
            })
        }
    }
}

/// What one fetch returned: the raw rows of both queries.
///
/// Like the names, the recipients are the raw first column of every row, unvalidated: an
/// address `user@domain` or a catch-all `@domain`, a `NULL` as the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// `DB_QUERY`'s rows: the domain names.
    pub names: Vec<String>,
    /// `RECIPIENTS_QUERY`'s rows; `None` when it is not set.
    pub recipients: Option<Vec<String>>,
}

impl Fetched {
    /// The [`Fingerprint`] the watcher's [`ChangeSignal`] polls for the same rows: the names'
    /// alone when there is no recipients query, so it equals `Fingerprint::of(names)` then.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_both(
            self.names.iter().map(String::as_str),
            self.recipients
                .as_deref()
                .map(|recipients| recipients.iter().map(String::as_str)),
        )
    }
}

/// How to reach MariaDB and what to ask it.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// `DB_HOST`: the hosts to try, in order (at least one; e.g. a replica, then the primary).
    pub hosts: Vec<DbHost>,
    /// `DB_PORT`: the TCP port of every host that names none, 3306 by default.
    pub port: u16,
    /// Database (schema) name.
    pub database: String,
    /// User name.
    pub user: String,
    /// The password, already resolved from `DB_PASSWORD`, `DB_PASSWORD_FILE`,
    /// `DB_PASSWORD_COMMAND` or `DB_PASSWORD_SECRET`. Never logged: [`Secret`]'s `Debug` prints
    /// a placeholder.
    pub password: Option<Secret>,
    /// The query; it must return one text column.
    pub query: String,
    /// `RECIPIENTS_QUERY`: the valid recipient addresses, one text column; `None` when
    /// recipient validation is off (the default).
    pub recipients_query: Option<String>,
    /// Transport security.
    pub tls: TlsMode,
    /// CA certificate (PEM) for `verify-ca` and `verify-full`.
    pub tls_ca: Option<PathBuf>,
    /// Limit for establishing the connection, TLS and authentication included.
    pub connect_timeout: Duration,
    /// Limit for running the query and reading all rows.
    pub query_timeout: Duration,
}

/// `DB_TLS`: how the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain TCP.
    Disabled,
    /// TLS when the server offers it, without certificate checks; plain TCP otherwise.
    Preferred,
    /// TLS or fail; the certificate is not checked.
    Required,
    /// TLS, and the server certificate must chain to `DB_TLS_CA`; the host name is not checked.
    VerifyCa,
    /// TLS, the certificate must chain to `DB_TLS_CA` and name the host connected to (each
    /// host of `DB_HOST` is checked against its own name).
    VerifyFull,
}

/// One host of `DB_HOST`: a host name or an IP address, and the port when the entry names one
/// (`replica.example:3307`, `[2001:db8::5]:3306`).
///
/// ```
/// use relay_db::DbHost;
/// let host = DbHost::new("replica.example").with_port(3307);
/// assert_eq!(host.to_string(), "replica.example:3307");
/// assert_eq!(host.addr(3306), "replica.example:3307");
/// assert_eq!(DbHost::new("2001:db8::5").addr(3306), "[2001:db8::5]:3306");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DbHost {
    /// The host name or IP address (an IPv6 address without brackets).
    pub name: String,
    /// The port the entry names; `None`: `DB_PORT`.
    pub port: Option<u16>,
}

impl DbHost {
    /// A host at `DB_PORT`.
    pub fn new(name: impl Into<String>) -> DbHost {
        DbHost {
            name: name.into(),
            port: None,
        }
    }

    /// The same host at `port`.
    pub fn with_port(self, port: u16) -> DbHost {
        DbHost {
            port: Some(port),
            ..self
        }
    }

    /// The port connected to: its own, or `default_port` (`DB_PORT`).
    pub fn port_or(&self, default_port: u16) -> u16 {
        self.port.unwrap_or(default_port)
    }

    /// `host:port` for messages, with an IPv6 address in brackets.
    pub fn addr(&self, default_port: u16) -> String {
        bracketed(&self.name, self.port_or(default_port))
    }
}

/// The entry as `DB_HOST` writes it: `host`, or `host:port` when it names a port (an IPv6
/// address in brackets then).
impl std::fmt::Display for DbHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            None => f.write_str(&self.name),
            Some(port) => f.write_str(&bracketed(&self.name, port)),
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn bracketed(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// How a connection to the database was protected, as it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protection {
    /// Plain TCP: readable and alterable by anyone on the path.
    Plain,
    /// TLS without a certificate check: encrypted, but anyone on the path could pose as the
    /// server.
    TlsUnverified,
    /// TLS with a certificate chaining to `DB_TLS_CA`; the host name is not checked.
    TlsVerifiedCa,
    /// TLS with a certificate chaining to `DB_TLS_CA` and naming `DB_HOST`.
    TlsVerifiedFull,
}

impl Protection {
    /// Whether someone on the path could read or alter what the gateway is told.
    pub fn is_weak(self) -> bool {
        matches!(self, Protection::Plain | Protection::TlsUnverified)
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protection::Plain => "unencrypted (plain TCP)",
            Protection::TlsUnverified => "TLS, server certificate not verified",
            Protection::TlsVerifiedCa => {
                "TLS, certificate verified against DB_TLS_CA (host name not checked)"
            }
            Protection::TlsVerifiedFull => "TLS, certificate and host name verified",
        })
    }
}

/// A secret string whose `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to the driver and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a fetch failed. Every variant names `host:port` (when every host of `DB_HOST` failed,
/// each of them, with what each said); none carries the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// TCP connect failed or timed out, or TLS could not be established.
    #[error("cannot reach MariaDB at {addr}: {detail}")]
    Unreachable {
        /// `host:port` (`host:port or host:port` when several hosts were tried).
        addr: String,
        /// What the driver or the timeout said.
        detail: String,
    },
    /// The server refused the user, password or database (when several hosts were tried, at
    /// least one refused it, and none let the user in).
    #[error("MariaDB at {addr} refused login for user {user}: {detail}")]
    Auth {
        /// `host:port` of the host that refused.
        addr: String,
        /// The user name (not secret).
        user: String,
        /// The server's error code: 1045 for a wrong password (see
        /// [`DbError::is_password_refused`]), 1044 or 1049 for the database, 1130 or 1698 for
        /// the account.
        code: u16,
        /// The server's message.
        detail: String,
    },
    /// The query failed, timed out or returned something other than one text column.
    #[error("query failed on MariaDB at {addr}: {detail}")]
    Query {
        /// `host:port`.
        addr: String,
        /// The server's message or what was wrong with the result.
        detail: String,
    },
}

impl DbError {
    /// Whether the server refused the password (`ERROR 1045`, access denied): the error a
    /// password rotated since it was read gives, which a password source that can be asked
    /// again (AWS Secrets Manager) may cure by reading the password anew.
    pub fn is_password_refused(&self) -> bool {
        matches!(self, DbError::Auth { code: 1045, .. })
    }
}

mod kept;
mod mariadb;
pub use kept::RETURN_EVERY;
pub use mariadb::{ordinal, MariaDbSource};

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that knows only `fetch_names`, as the engine's fakes do.
    struct Names(Vec<String>);

    impl DomainSource for Names {
        async fn fetch_names(&self) -> Result<Vec<String>, DbError> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn the_provided_fetch_is_the_names_without_recipients() {
        let source = Names(vec!["example.com".to_owned()]);
        let fetched = source.fetch().await.unwrap();
        assert_eq!(
            fetched,
            Fetched {
                names: vec!["example.com".to_owned()],
                recipients: None
            }
        );
        assert_eq!(fetched.fingerprint(), Fingerprint::of(["example.com"]));
    }
}

mod signal;
pub use signal::{
    signal_query, signal_query_with_recipients, tables_of, ChangeSignal, Fingerprint, Probe,
    SignalUnavailable,
};
