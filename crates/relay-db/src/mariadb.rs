//! [`MariaDbSource`]: the admin panel's MariaDB through `mysql_async`, one connection per fetch.
//!
//! A fetch is: connect (TCP, TLS per [`TlsMode`], authentication) under `connect_timeout`, run
//! the query once under `query_timeout`, read the first column of every row, disconnect. With
//! `RECIPIENTS_QUERY` set, [`DomainSource::fetch`] runs it next on the same connection, under
//! its own `query_timeout`, by the same rules. There is no pool (a run makes one connection) and
//! no extra round trip: the driver's post-connect
//! `SELECT @@max_allowed_packet, @@wait_timeout, @@socket` is avoided by setting those options.
//!
//! Failures are classified by phase: anything before the login succeeded is
//! [`DbError::Unreachable`], except the server's refusal of the account or database
//! ([`DbError::Auth`]); anything after it is [`DbError::Query`].

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, IoError, Opts, OptsBuilder, Row, SslOpts, Value};

use crate::{DbError, DbHost, DbSettings, DomainSource, Fetched, Protection, TlsMode};

/// Server errors at login that mean "wrong account, password or database" rather than "cannot
/// reach": access denied (1045), access denied to the database (1044), unknown database (1049),
/// host not allowed to connect (1130), and access denied by a plugin such as `unix_socket`
/// (1698).
const AUTH_ERROR_CODES: &[u16] = &[1044, 1045, 1049, 1130, 1698];

/// How long a clean disconnect may take after a successful query. `COM_QUIT` needs no answer,
/// so this only matters when the network stalls.
pub(crate) const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The client-side packet limit. Setting it (with `wait_timeout`) keeps the driver from asking
/// the server for both right after login, which would be a second round trip per fetch.
const MAX_ALLOWED_PACKET: usize = 64 * 1024 * 1024;
/// The server's default `wait_timeout`, told to the driver for the same reason.
const WAIT_TIMEOUT_SECS: usize = 28_800;

/// A TLS server name that works around mysql_async 0.37.1 ignoring
/// `with_danger_skip_domain_validation` with rustls 0.23
/// (<https://github.com/blackbeam/mysql_async/issues/404>, fixed upstream by PR #408, not
/// released yet). The driver recognizes a name mismatch by looking for `NotValidForName` in the
/// error's text, which rustls no longer prints; it does print the expected name, though. So
/// `verify-ca` asks for this name, which no certificate carries: the chain is still verified
/// against `DB_TLS_CA`, and the inevitable name mismatch is then recognized and skipped, as
/// `verify-ca` requires. With the upstream fix the name stays harmless. The TLS tests
/// (`verify_ca_*`) fail if this stops working.
const VERIFY_CA_SERVER_NAME: &str = "NotValidForName.relay-sync.invalid";

/// Reads domain names from MariaDB (or MySQL) with the settings it was made with.
///
/// With several hosts in [`DbSettings::hosts`] (`DB_HOST=replica, primary`), each connection
/// tries them in order, each under `connect_timeout`; a host that does not answer, or refuses
/// the login, is logged at WARN and the next one is tried. `Connected to MariaDB (HOST)` names
/// the host that answered, as `DB_HOST` writes it, and [`MariaDbSource::answered`] tells it.
///
/// ```no_run
/// use std::time::Duration;
/// use relay_db::{DbHost, DbSettings, DomainSource, MariaDbSource, Secret, TlsMode};
///
/// # async fn example() -> Result<(), relay_db::DbError> {
/// let source = MariaDbSource::new(DbSettings {
///     hosts: vec![DbHost::new("10.0.0.6"), DbHost::new("10.0.0.5")],
///     port: 3306,
///     database: "mailserver_usermgmt".into(),
///     user: "relay_sync".into(),
///     password: Some(Secret::new("…")),
///     query: "SELECT name FROM domains WHERE enabled = 1".into(),
///     recipients_query: None,
///     tls: TlsMode::Disabled,
///     tls_ca: None,
///     connect_timeout: Duration::from_secs(3),
///     query_timeout: Duration::from_secs(3),
/// });
/// let names = source.fetch_names().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MariaDbSource {
    settings: DbSettings,
    last: std::sync::Mutex<Last>,
}

/// How a connection attempt reports a host that failed before it tries the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// At WARN: a poll or a run is failing over.
    Warn,
    /// At DEBUG: an attempt beside the polls to get back to an earlier host, every
    /// [`crate::RETURN_EVERY`] for as long as it is down.
    Debug,
}

/// What the last connection was: the host that answered (its index in `DB_HOST`) and how the
/// connection was protected.
#[derive(Debug, Clone, Copy, Default)]
struct Last {
    host: Option<usize>,
    protection: Option<Protection>,
}

impl Clone for MariaDbSource {
    fn clone(&self) -> Self {
        MariaDbSource {
            settings: self.settings.clone(),
            last: std::sync::Mutex::new(self.last()),
        }
    }
}

impl MariaDbSource {
    /// A source that connects with `settings` on every fetch.
    pub fn new(settings: DbSettings) -> Self {
        MariaDbSource {
            settings,
            last: std::sync::Mutex::new(Last::default()),
        }
    }

    /// The same source with other `settings` (a renewed login), remembering which host it
    /// last reached, so that an error on a connection kept from before still names that host.
    pub(crate) fn with_settings(&self, settings: DbSettings) -> Self {
        MariaDbSource {
            settings,
            last: std::sync::Mutex::new(self.last()),
        }
    }

    fn last(&self) -> Last {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How the last connection was protected; `None` before one was made.
    pub fn protection(&self) -> Option<Protection> {
        self.last().protection
    }

    /// The host of `DB_HOST` the last connection was made to; `None` before one was made.
    pub fn answered(&self) -> Option<&DbHost> {
        self.settings.hosts.get(self.last().host?)
    }

    /// Records a connection to the host at `index` (made by this source or a clone of it).
    pub(crate) fn note_connected(&self, host: usize, protection: Protection) {
        self.connected(host, protection);
    }

    fn connected(&self, host: usize, protection: Protection) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Last {
            host: Some(host),
            protection: Some(protection),
        };
    }

    /// The settings it connects with.
    pub fn settings(&self) -> &DbSettings {
        &self.settings
    }

    /// `host:port` of the host at `index` in `DB_HOST`, with an IPv6 address in brackets.
    pub(crate) fn addr_of(&self, index: usize) -> String {
        match self.settings.hosts.get(index) {
            Some(host) => host.addr(self.settings.port),
            None => "(no DB_HOST)".to_owned(),
        }
    }

    /// `host:port` of the host the last connection was made to (the first host before one was
    /// made), for error messages.
    pub(crate) fn addr(&self) -> String {
        self.addr_of(self.last().host.unwrap_or(0))
    }

    pub(crate) fn unreachable_at(&self, index: usize, detail: impl Into<String>) -> DbError {
        DbError::Unreachable {
            addr: self.addr_of(index),
            detail: detail.into(),
        }
    }

    /// A failed query on the connection last made.
    pub(crate) fn query_error(&self, detail: impl Into<String>) -> DbError {
        DbError::Query {
            addr: self.addr(),
            detail: detail.into(),
        }
    }

    /// Connects to the first host of `DB_HOST` that lets the user in; see
    /// [`MariaDbSource::connect_in`].
    pub(crate) async fn connect(&self) -> Result<(Conn, usize), DbError> {
        self.connect_in(0..self.settings.hosts.len(), Said::Warn)
            .await
    }

    /// Connects to the first of the hosts of `DB_HOST` at `order` (indexes, tried in that
    /// order) that lets the user in, each under `connect_timeout`, and returns the connection
    /// with the host's index. A host that fails is logged (at WARN, or DEBUG with
    /// [`Said::Debug`]) when another one follows; when all fail, the error names each host and
    /// what it said (an `Auth` error when any of them refused the login, since a password or a
    /// grant is then what to fix).
    pub(crate) async fn connect_in(
        &self,
        order: impl IntoIterator<Item = usize>,
        said: Said,
    ) -> Result<(Conn, usize), DbError> {
        let timeout = self.settings.connect_timeout;
        let mut failures: Vec<(usize, DbError)> = Vec::new();
        let mut order = order.into_iter().peekable();
        while let Some(index) = order.next() {
            let attempt = tokio::time::timeout(timeout, self.connect_to(index)).await;
            let error = match attempt {
                Ok(Ok(conn)) => return Ok((conn, index)),
                Ok(Err(error)) => error,
                Err(_) => self.unreachable_at(
                    index,
                    format!(
                        "no connection within the connect timeout ({})",
                        seconds(timeout)
                    ),
                ),
            };
            if let Some(&next) = order.peek() {
                let line = format!(
                    "{error}; trying {} ({} host of DB_HOST)",
                    self.addr_of(next),
                    ordinal(next)
                );
                match said {
                    Said::Warn => tracing::warn!("{line}"),
                    Said::Debug => tracing::debug!("{line}"),
                }
            }
            failures.push((index, error));
        }
        Err(self.all_failed(failures))
    }

    /// One error for a connection that no host of `DB_HOST` accepted.
    fn all_failed(&self, mut failures: Vec<(usize, DbError)>) -> DbError {
        if failures.len() <= 1 {
            return match failures.pop() {
                Some((_, error)) => error,
                None => self.unreachable_at(0, "DB_HOST names no host"),
            };
        }
        let said = |failures: &[(usize, DbError)], skip: Option<usize>| -> String {
            failures
                .iter()
                .filter(|(index, _)| Some(*index) != skip)
                .map(|(index, error)| format!("{}: {}", self.addr_of(*index), error_detail(error)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let refused = failures
            .iter()
            .find(|(_, error)| matches!(error, DbError::Auth { .. }))
            .map(|(index, _)| *index);
        match refused {
            Some(at) => {
                let others = said(&failures, Some(at));
                let (_, error) = failures.swap_remove(
                    failures
                        .iter()
                        .position(|(index, _)| *index == at)
                        .unwrap_or(0),
                );
                match error {
                    DbError::Auth {
                        addr,
                        user,
                        code,
                        detail,
                    } => DbError::Auth {
                        addr,
                        user,
                        code,
                        detail: format!("{detail}; also tried {others}"),
                    },
                    other => other,
                }
            }
            None => DbError::Unreachable {
                addr: failures
                    .iter()
                    .map(|(index, _)| self.addr_of(*index))
                    .collect::<Vec<_>>()
                    .join(" or "),
                detail: said(&failures, None),
            },
        }
    }

    /// One fetch: connect, `DB_QUERY`, then `RECIPIENTS_QUERY` when `with_recipients` and it
    /// is set, each under `query_timeout`, on the one connection; then disconnect.
    async fn read(&self, with_recipients: bool) -> Result<Fetched, DbError> {
        let settings = &self.settings;
        let (conn, host) = self.connect().await?;
        // As `DB_HOST` writes the host: with several, the log says which one answered.
        tracing::info!("Connected to MariaDB ({})", settings.hosts[host]);

        let (mut conn, names) = self
            .read_column(conn, &settings.query, Key::DbQuery)
            .await?;
        let mut recipients = None;
        if let Some(query) = settings
            .recipients_query
            .as_deref()
            .filter(|_| with_recipients)
        {
            let (kept, rows) = self.read_column(conn, query, Key::RecipientsQuery).await?;
            (conn, recipients) = (kept, Some(rows));
        }
        // The rows are in; a failing goodbye changes nothing.
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
        Ok(Fetched { names, recipients })
    }

    /// Runs `query` on `conn` under `query_timeout` and hands the connection back with the
    /// rows. On failure the connection is closed and the error names `key` where the query is
    /// at fault.
    async fn read_column(
        &self,
        mut conn: Conn,
        query: &str,
        key: Key,
    ) -> Result<(Conn, Vec<String>), DbError> {
        let query_timeout = self.settings.query_timeout;
        let read = read_first_column(&mut conn, query, key);
        match tokio::time::timeout(query_timeout, read).await {
            Ok(Ok(rows)) => Ok((conn, rows)),
            Ok(Err(failure)) => {
                let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
                Err(self.query_error(failure.to_string()))
            }
            Err(_) => {
                // The query is still running and its result would have to be read before
                // `COM_QUIT`. Polling `disconnect` once marks the connection as closed, so
                // dropping it closes the socket at once instead of leaving a task behind that
                // drains the result.
                let _ = tokio::time::timeout(Duration::ZERO, conn.disconnect()).await;
                Err(self.query_error(format!(
                    "no result within the query timeout ({}){}",
                    seconds(query_timeout),
                    key.suffix()
                )))
            }
        }
    }

    /// Connects to the host at `index` of `DB_HOST` per the TLS mode (without a time limit:
    /// the caller sets it); `preferred` tries TLS first and plain TCP when the server does not
    /// offer TLS.
    async fn connect_to(&self, index: usize) -> Result<Conn, DbError> {
        let ssl_opts = self.ssl_opts(index).await?;
        let prefer_plain_fallback = self.settings.tls == TlsMode::Preferred;
        match Conn::new(self.opts(index, ssl_opts)).await {
            Ok(conn) => {
                self.connected(
                    index,
                    match self.settings.tls {
                        TlsMode::Disabled => Protection::Plain,
                        TlsMode::Preferred | TlsMode::Required => Protection::TlsUnverified,
                        TlsMode::VerifyCa => Protection::TlsVerifiedCa,
                        TlsMode::VerifyFull => Protection::TlsVerifiedFull,
                    },
                );
                Ok(conn)
            }
            Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer))
                if prefer_plain_fallback =>
            {
                // Someone on the path could add domains to what the gateway relays: say so,
                // every run, until the operator decides (a WARN goes to the log, not cron mail).
                tracing::warn!(
                    "MariaDB at {} does not offer TLS; connecting without it (DB_TLS=preferred): \
                     the domain list travels in clear text and could be altered on the way; \
                     enable TLS on the server and set DB_TLS=verify-full with DB_TLS_CA, or \
                     reach it through a tunnel (WireGuard, Tailscale)",
                    self.addr_of(index)
                );
                let conn = Conn::new(self.opts(index, None))
                    .await
                    .map_err(|err| self.login_error(index, err))?;
                self.connected(index, Protection::Plain);
                Ok(conn)
            }
            Err(err) => Err(self.login_error(index, err)),
        }
    }

    /// The driver's options for the host at `index`: its name is also the name a
    /// `verify-full` certificate must carry.
    fn opts(&self, index: usize, ssl_opts: Option<SslOpts>) -> Opts {
        let settings = &self.settings;
        let (name, port) = match settings.hosts.get(index) {
            Some(host) => (host.name.clone(), host.port_or(settings.port)),
            None => (String::new(), settings.port),
        };
        OptsBuilder::default()
            .ip_or_hostname(name)
            .tcp_port(port)
            .user(Some(settings.user.clone()))
            .pass(
                settings
                    .password
                    .as_ref()
                    .map(|secret| secret.expose().to_owned()),
            )
            .db_name(Some(settings.database.clone()))
            .ssl_opts(ssl_opts)
            // The driver would otherwise look up `@@socket` and reconnect over it when the host
            // is local: another account (`user@localhost`), and another round trip.
            .prefer_socket(false)
            .max_allowed_packet(Some(MAX_ALLOWED_PACKET))
            .wait_timeout(Some(WAIT_TIMEOUT_SECS))
            .into()
    }

    /// The driver's TLS options for the configured mode. The CA file is read here, so that a
    /// missing or empty one is reported with its path before anything is sent.
    async fn ssl_opts(&self, index: usize) -> Result<Option<SslOpts>, DbError> {
        let without_checks = || {
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true)
        };
        let opts = match self.settings.tls {
            TlsMode::Disabled => None,
            TlsMode::Preferred | TlsMode::Required => Some(without_checks()),
            TlsMode::VerifyCa => Some(
                self.trusted_roots(index)
                    .await?
                    .with_danger_skip_domain_validation(true)
                    .with_danger_tls_hostname_override(Some(VERIFY_CA_SERVER_NAME)),
            ),
            TlsMode::VerifyFull => Some(self.trusted_roots(index).await?),
        };
        Ok(opts)
    }

    /// TLS options that trust `DB_TLS_CA` alone, or the built-in public roots when no CA is
    /// configured.
    async fn trusted_roots(&self, index: usize) -> Result<SslOpts, DbError> {
        let Some(path) = &self.settings.tls_ca else {
            return Ok(SslOpts::default());
        };
        // Through relay-fs, as every file root reads: a FIFO planted there fails at once
        // rather than hang the run, and a link to /dev/zero is refused rather than read.
        let pem = match relay_fs::read(relay_fs::Kind::CA_CERT, path) {
            Ok(Some(pem)) => pem,
            Ok(None) => {
                return Err(self.unreachable_at(
                    index,
                    format!(
                        "the CA certificate {} (DB_TLS_CA) does not exist",
                        path.display()
                    ),
                ))
            }
            Err(err) => {
                return Err(self.unreachable_at(
                    index,
                    format!(
                        "cannot read the CA certificate {} (DB_TLS_CA): {err}",
                        path.display()
                    ),
                ))
            }
        };
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|window| window == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(self.unreachable_at(
                index,
                format!(
                    "the CA certificate {} (DB_TLS_CA) holds no PEM certificate",
                    path.display()
                ),
            ));
        }
        Ok(SslOpts::default()
            .with_root_certs(vec![pem.into()])
            .with_disable_built_in_roots(true))
    }

    /// Classifies a failure to connect and log in.
    fn login_error(&self, index: usize, err: mysql_async::Error) -> DbError {
        match err {
            mysql_async::Error::Server(server) if AUTH_ERROR_CODES.contains(&server.code) => {
                DbError::Auth {
                    addr: self.addr_of(index),
                    user: self.settings.user.clone(),
                    code: server.code,
                    detail: server.to_string(),
                }
            }
            other => self.unreachable_at(index, describe(&other)),
        }
    }
}

impl DomainSource for MariaDbSource {
    /// `DB_QUERY` alone, even when `RECIPIENTS_QUERY` is set.
    async fn fetch_names(&self) -> Result<Vec<String>, DbError> {
        Ok(self.read(false).await?.names)
    }

    /// `DB_QUERY`, then `RECIPIENTS_QUERY` when it is set, on one connection.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, DbError>> + Send {
        self.read(true)
    }
}

/// Which configured query a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    DbQuery,
    RecipientsQuery,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::DbQuery => "DB_QUERY",
            Key::RecipientsQuery => "RECIPIENTS_QUERY",
        }
    }

    /// What follows a driver's or timeout's message: nothing for `DB_QUERY` (as before
    /// `RECIPIENTS_QUERY` existed), ` (RECIPIENTS_QUERY)` for the other.
    fn suffix(self) -> &'static str {
        match self {
            Key::DbQuery => "",
            Key::RecipientsQuery => " (RECIPIENTS_QUERY)",
        }
    }
}

/// What was wrong with the query or its result.
#[derive(Debug)]
enum QueryFailure {
    Driver(mysql_async::Error, Key),
    Columns(usize, Key),
    MoreResultSets(Key),
}

impl std::fmt::Display for QueryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryFailure::Driver(err, key) => write!(f, "{}{}", describe(err), key.suffix()),
            QueryFailure::Columns(0, key) => write!(
                f,
                "the query returned no result set; it must return exactly one column ({})",
                key.name()
            ),
            QueryFailure::Columns(n, key) => write!(
                f,
                "the query returned {n} columns; it must return exactly one ({})",
                key.name()
            ),
            QueryFailure::MoreResultSets(key) => write!(
                f,
                "the query returned more than one result set; it must be a single SELECT ({})",
                key.name()
            ),
        }
    }
}

/// Runs `query` once (one `COM_QUERY`) and returns the first column of every row as text.
async fn read_first_column(
    conn: &mut Conn,
    query: &str,
    key: Key,
) -> Result<Vec<String>, QueryFailure> {
    let driver = |err| QueryFailure::Driver(err, key);
    let mut result = conn.query_iter(query).await.map_err(driver)?;
    let columns = result.columns_ref().len();
    if columns != 1 {
        result.drop_result().await.map_err(driver)?;
        return Err(QueryFailure::Columns(columns, key));
    }
    let rows: Vec<Row> = result.collect().await.map_err(driver)?;
    let more_result_sets = !result.is_empty();
    result.drop_result().await.map_err(driver)?;
    if more_result_sets {
        return Err(QueryFailure::MoreResultSets(key));
    }
    let names = rows
        .into_iter()
        .map(|mut row| text(row.take(0).unwrap_or(Value::NULL)))
        .collect();
    Ok(names)
}

/// A column value as text: bytes as (lossy) UTF-8, `NULL` as the empty string, anything else
/// (only the binary protocol produces it) as its SQL literal.
fn text(value: Value) -> String {
    match value {
        Value::NULL => String::new(),
        Value::Bytes(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        },
        other => other.as_sql(true),
    }
}

/// The driver's error without its wrapping ("Input/output error: Input/output error: …").
pub(crate) fn describe(err: &mysql_async::Error) -> String {
    match err {
        mysql_async::Error::Server(server) => server.to_string(),
        mysql_async::Error::Io(IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Io(IoError::Tls(tls)) => format!("TLS: {tls}"),
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS (DB_TLS requires it)".to_owned()
        }
        mysql_async::Error::Driver(driver) => driver.to_string(),
        other => other.to_string(),
    }
}

/// What an error said, without the host it names (the caller names it).
fn error_detail(error: &DbError) -> String {
    match error {
        DbError::Unreachable { detail, .. } | DbError::Query { detail, .. } => detail.clone(),
        DbError::Auth { user, detail, .. } => format!("refused login for user {user}: {detail}"),
    }
}

/// `1st`, `2nd`, `3rd`, `4th`… for the host at `index` (0-based) of `DB_HOST`, as the log
/// lines and `check` name it.
pub fn ordinal(index: usize) -> String {
    let n = index + 1;
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A timeout as operators write it in the config: whole seconds when it is whole.
pub(crate) fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.3} s", duration.as_secs_f64())
    }
}
