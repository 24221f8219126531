//! `relay-sync check` (SPEC §9): is this host ready to sync? Config and its permissions, the
//! password source, the database and the DB user's grants, the Postfix commands, that
//! `transport_maps` names `TRANSPORT_FILE`, and that every file and directory relay-sync writes
//! is writable, that the files relay-sync keeps in `STATE_DIR` are its own, and, with SNS
//! alerts, that AWS credentials resolve and the topic answers. It changes nothing (a probe file
//! it creates to test a directory, of a random name and `O_EXCL|O_NOFOLLOW` through relay-fs,
//! is removed at once; an existing file is opened for appending without writing, never
//! through someone else's link and never waiting on a FIFO) and never shows a secret.
//!
//! Each check ends `ok`, `warn` or `fail`; the command exits 1 when any check failed, 0
//! otherwise. Grants beyond `SELECT` on the domains table (and, for recipient validation,
//! `SELECT` on the `email` and `enabled` columns of the users table) are a loud warning, not a
//! failure: syncing still works, but the document asks for a read-only user. With
//! `RECIPIENTS_QUERY` set, check also runs it once and says how many rows it returned.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use relay_db::{ordinal, DomainSource, MariaDbSource};
use relay_postfix::{PostfixCli, PostfixRead as _};
use serde::Serialize;

use crate::config::{Config, PasswordSource, RelayDomainsMode, NAME};
use crate::login::DbLogin;
use crate::password;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but should be fixed.
    Warn,
    /// relay-sync cannot work like this.
    Fail,
}

/// What one check is about: a stable snake_case identifier, `check --json`'s
/// `checks[].name`, which scripts and monitoring match on. A check is never renamed within a
/// schema version; new ones may be added.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckId {
    /// The config file and its mode (or that a config could not be loaded at all).
    Config,
    /// The password source gives a password.
    Password,
    /// `DB_PASSWORD_SECRET`: the secret resolves and the gateway's role may read it.
    DbSecret,
    /// The database answers `DB_QUERY`.
    Database,
    /// With several `DB_HOST`s: each one answers on its own.
    DbHosts,
    /// `RECIPIENTS_QUERY` runs and returns rows (recipient validation).
    Recipients,
    /// Every relayed domain has a recipient or a catch-all (recipient validation).
    RecipientDomains,
    /// How the database connection is protected (TLS, verified or not).
    DbTransport,
    /// The database user may do no more than read what relay-sync reads.
    Grants,
    /// `postconf`, `postmap` and `postfix` run.
    Postfix,
    /// `transport_maps` reads `TRANSPORT_FILE`.
    TransportMaps,
    /// Container mode: the transport file's directory is the same through the prefix.
    Container,
    /// `TRANSPORT_FILE` can be written.
    TransportFile,
    /// `TRANSPORT_FILE`'s directory can be written (temporary files, map databases).
    TransportDir,
    /// `BACKUP_DIR` can be written.
    BackupDir,
    /// `LOG_FILE` can be written.
    LogFile,
    /// `STATE_DIR` can be written.
    StateDir,
    /// `LOCK_FILE` can be written.
    LockFile,
    /// The files a sync keeps in `STATE_DIR` (state, hold, outbox, journal, rejected rows)
    /// pass relay-fs's rules for a file relay-sync keeps.
    StateFiles,
    /// `main.cf` can be written (inline mode changes `relay_domains` there).
    MainCf,
    /// Map mode: `RELAY_DOMAINS_MAP` can be written.
    RelayDomainsMap,
    /// Recipient validation: `RECIPIENTS_MAP` can be written.
    RecipientsMap,
    /// `METRICS_FILE` can be written.
    MetricsFile,
    /// SNS alerts: AWS credentials resolve.
    SnsCredentials,
    /// SNS alerts: the topic answers.
    SnsTopic,
    /// Syncs are held (`relay-sync hold`).
    Hold,
}

impl CheckId {
    /// Every check, in the order `check` runs them.
    pub const ALL: [CheckId; 26] = [
        CheckId::Config,
        CheckId::Password,
        CheckId::DbSecret,
        CheckId::Database,
        CheckId::DbHosts,
        CheckId::Recipients,
        CheckId::RecipientDomains,
        CheckId::DbTransport,
        CheckId::Grants,
        CheckId::Postfix,
        CheckId::TransportMaps,
        CheckId::Container,
        CheckId::TransportFile,
        CheckId::TransportDir,
        CheckId::BackupDir,
        CheckId::LogFile,
        CheckId::StateDir,
        CheckId::LockFile,
        CheckId::StateFiles,
        CheckId::MainCf,
        CheckId::RelayDomainsMap,
        CheckId::RecipientsMap,
        CheckId::MetricsFile,
        CheckId::SnsCredentials,
        CheckId::SnsTopic,
        CheckId::Hold,
    ];

    /// The identifier, as `check --json` and the text report print it.
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckId::Config => "config",
            CheckId::Password => "password",
            CheckId::DbSecret => "db_secret",
            CheckId::Database => "database",
            CheckId::DbHosts => "db_hosts",
            CheckId::Recipients => "recipients",
            CheckId::RecipientDomains => "recipient_domains",
            CheckId::DbTransport => "db_transport",
            CheckId::Grants => "grants",
            CheckId::Postfix => "postfix",
            CheckId::TransportMaps => "transport_maps",
            CheckId::Container => "container",
            CheckId::TransportFile => "transport_file",
            CheckId::TransportDir => "transport_dir",
            CheckId::BackupDir => "backup_dir",
            CheckId::LogFile => "log_file",
            CheckId::StateDir => "state_dir",
            CheckId::LockFile => "lock_file",
            CheckId::StateFiles => "state_files",
            CheckId::MainCf => "main_cf",
            CheckId::RelayDomainsMap => "relay_domains_map",
            CheckId::RecipientsMap => "recipients_map",
            CheckId::MetricsFile => "metrics_file",
            CheckId::SnsCredentials => "sns_credentials",
            CheckId::SnsTopic => "sns_topic",
            CheckId::Hold => "hold",
        }
    }
}

impl std::fmt::Display for CheckId {
    /// The identifier; a width pads it (`{:<16}`, the text report's column).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(transform = crate::json_schema::every_field_required)]
pub struct Item {
    /// What was checked.
    pub name: CheckId,
    /// Its result.
    pub status: Level,
    /// What was found, or what to do; never a secret.
    pub detail: String,
}

/// Every check's result, in the order they ran.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
#[schemars(transform = crate::json_schema::every_field_required)]
pub struct Report {
    /// `false` when any check failed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Item>,
}

impl Report {
    fn push(&mut self, name: CheckId, status: Level, detail: impl Into<String>) {
        self.checks.push(Item {
            name,
            status,
            detail: detail.into(),
        });
        self.ok = self.checks.iter().all(|item| item.status != Level::Fail);
    }
}

/// A report for a configuration that could not be loaded at all.
pub fn config_failed(error: &str) -> Report {
    let mut report = Report::default();
    report.push(CheckId::Config, Level::Fail, error);
    report
}

/// Runs every check against `config`.
pub fn run(config: &Config) -> Report {
    let mut report = Report::default();
    check_config_file(config, &mut report);
    check_database(config, &mut report);
    let postfix = check_postfix(config, &mut report);
    if let Some(postfix) = &postfix {
        check_transport_maps(config, postfix, &mut report);
        if !config.postfix_command_prefix.is_empty() {
            check_shared_transport_dir(config, postfix, &mut report);
        }
    }
    check_writable(config, &mut report);
    // Without the feature, loading the config has refused ALERT_SNS_TOPIC_ARN.
    #[cfg(feature = "aws")]
    if let Some(settings) = &config.alert_sns {
        check_sns(settings, config.command_timeout, &mut report);
    }
    // What a sync reads from STATE_DIR before it syncs, read the same way: a refusal there
    // fails the sync (exit 2), so it fails the check.
    match crate::state_dir::read(&config.state_dir) {
        Ok(kept) => {
            if let Some(hold) = kept.hold {
                report.push(
                    CheckId::Hold,
                    Level::Warn,
                    format!("syncs are {hold}; `relay-sync release` lifts it"),
                );
            }
        }
        Err(error) => report.push(CheckId::StateFiles, Level::Fail, error.to_string()),
    }
    report
}

/// SNS alerts: whether credentials resolve (`sns_credentials`) and whether the topic answers
/// (`sns_topic`, asked only with credentials).
#[cfg(feature = "aws")]
fn check_sns(
    settings: &crate::config::SnsSettings,
    timeout: std::time::Duration,
    report: &mut Report,
) {
    let probe = crate::alert::sns::probe(settings, timeout);
    let mut push = |name, found: Result<String, String>| match found {
        Ok(detail) => report.push(name, Level::Ok, detail),
        Err(detail) => report.push(name, Level::Fail, detail),
    };
    push(CheckId::SnsCredentials, probe.credentials);
    if let Some(topic) = probe.topic {
        push(CheckId::SnsTopic, topic);
    }
}

fn check_config_file(config: &Config, report: &mut Report) {
    let Some(path) = &config.file else {
        report.push(
            CheckId::Config,
            Level::Ok,
            "no config file; every key comes from RELAY_SYNC_* variables",
        );
        return;
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 == 0 {
                report.push(
                    CheckId::Config,
                    Level::Ok,
                    format!("{} (mode {mode:04o})", path.display()),
                );
            } else {
                report.push(
                    CheckId::Config,
                    Level::Warn,
                    format!(
                        "{} is mode {mode:04o}: run `chmod 600 {}` (it names the database and may hold its password)",
                        path.display(),
                        relay_fs::shell_word(path)
                    ),
                );
            }
        }
        Err(error) => report.push(
            CheckId::Config,
            Level::Fail,
            format!("cannot inspect {}: {error}", path.display()),
        ),
    }
}

/// Where the password comes from, and that it can be had (`password`); for
/// `DB_PASSWORD_SECRET`, whether the secret resolves and the gateway's role may read it
/// (`db_secret`, a denial naming the IAM action), and what it holds. The login, when it could
/// be had.
fn check_password(config: &Config, report: &mut Report) -> Option<DbLogin> {
    if let PasswordSource::Secret(settings) = &config.db_password {
        let read = password::read_current_secret(settings, &config.db_user, config.command_timeout);
        return match read {
            Ok((login, arn, shape)) => {
                let via = settings
                    .endpoint
                    .as_ref()
                    .map_or_else(String::new, |endpoint| format!(" via {endpoint}"));
                report.push(
                    CheckId::DbSecret,
                    Level::Ok,
                    format!("{arn} is readable{via}: {shape}"),
                );
                Some(login)
            }
            Err(error) => {
                // The error names the secret and what was denied, never its value.
                report.push(CheckId::DbSecret, Level::Fail, error.to_string());
                None
            }
        };
    }
    let source_name = config.db_password.describe();
    match config.resolve_login() {
        Ok(login) => {
            report.push(CheckId::Password, Level::Ok, format!("from {source_name}"));
            Some(login)
        }
        Err(error) => {
            // The error names the source (file or command), never the secret.
            report.push(CheckId::Password, Level::Fail, error.to_string());
            None
        }
    }
}

fn check_database(config: &Config, report: &mut Report) {
    let Some(login) = check_password(config, report) else {
        return;
    };
    let user = login.user.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report.push(
                CheckId::Database,
                Level::Fail,
                format!("cannot start the async runtime: {error}"),
            );
            return;
        }
    };
    let settings = config.db_settings(login);
    let source = MariaDbSource::new(settings.clone());
    let answered = match runtime.block_on(source.fetch_names()) {
        Ok(rows) => {
            let answered = source.answered().cloned().unwrap_or_else(|| {
                // A fetch that worked connected somewhere: the first host, to be safe.
                config.db_host[0].clone()
            });
            let which = match config.db_host.iter().position(|host| *host == answered) {
                Some(index) if config.db_host.len() > 1 => {
                    format!(" ({} host of DB_HOST)", ordinal(index))
                }
                _ => String::new(),
            };
            report.push(
                CheckId::Database,
                Level::Ok,
                format!(
                    "MariaDB at {}{which} as {}: DB_QUERY returned {} rows",
                    answered.addr(config.db_port),
                    user,
                    rows.len()
                ),
            );
            answered
        }
        Err(error) => {
            report.push(CheckId::Database, Level::Fail, error.to_string());
            return;
        }
    };
    let addr = answered.addr(config.db_port);
    if config.db_host.len() > 1 {
        let (level, detail) = hosts_verdict(config, &settings, &answered, &runtime);
        report.push(CheckId::DbHosts, level, detail);
    }
    if config.recipients_query.is_some() {
        let fetched = runtime.block_on(source.fetch());
        let uncovered = fetched
            .as_ref()
            .ok()
            .and_then(|fetched| uncovered_verdict(fetched, &config.preserve_domains));
        let (level, detail) = recipients_verdict(fetched);
        report.push(CheckId::Recipients, level, detail);
        if let Some((level, detail)) = uncovered {
            report.push(CheckId::RecipientDomains, level, detail);
        }
    }
    if let Some(protection) = source.protection() {
        let (level, detail) = transport_verdict(protection, &answered.name, &addr);
        report.push(CheckId::DbTransport, level, detail);
    }
    // The same connection code (timeouts, TLS) with another one-column query.
    let grants = MariaDbSource::new(relay_db::DbSettings {
        query: "SHOW GRANTS FOR CURRENT_USER()".to_owned(),
        ..settings
    });
    match runtime.block_on(grants.fetch_names()) {
        Ok(lines) => {
            let excess = excess_grants(&lines, &config.db_name);
            let recipients = lines
                .iter()
                .any(|line| users_columns(line, &config.db_name).is_some());
            if excess.is_empty() {
                let users = if recipients {
                    format!(" and SELECT on email, enabled of {}.users", config.db_name)
                } else {
                    String::new()
                };
                report.push(
                    CheckId::Grants,
                    Level::Ok,
                    format!(
                        "{user} has SELECT on {}.domains{users} and nothing more",
                        config.db_name
                    ),
                );
            } else {
                report.push(
                    CheckId::Grants,
                    Level::Warn,
                    format!(
                        "WARNING: {user} may do more than SELECT on {}.domains; relay-sync only reads, \
                         use a read-only user (/usr/share/relay-sync/create-user.sql): {}",
                        config.db_name,
                        excess.join("; ")
                    ),
                );
            }
        }
        Err(error) => report.push(
            CheckId::Grants,
            Level::Warn,
            format!("cannot read the user's grants: {error}"),
        ),
    }
}

/// How `check` rates a `DB_HOST` that lists several hosts: each one is asked on its own (a
/// later one is where the gateway falls back to, so one that refuses is a warning now rather
/// than an outage later).
fn hosts_verdict(
    config: &Config,
    settings: &relay_db::DbSettings,
    answered: &relay_db::DbHost,
    runtime: &tokio::runtime::Runtime,
) -> (Level, String) {
    let mut silent = Vec::new();
    for (index, host) in config.db_host.iter().enumerate() {
        if host == answered {
            continue;
        }
        let alone = MariaDbSource::new(relay_db::DbSettings {
            hosts: vec![host.clone()],
            ..settings.clone()
        });
        if let Err(error) = runtime.block_on(alone.fetch_names()) {
            silent.push(format!("the {} host ({error})", ordinal(index)));
        }
    }
    let addr = answered.addr(config.db_port);
    if silent.is_empty() {
        (
            Level::Ok,
            format!(
                "each of the {} hosts of DB_HOST answers; they are tried in order, and {addr} \
                 answered first",
                config.db_host.len()
            ),
        )
    } else {
        (
            Level::Warn,
            format!(
                "not every host of DB_HOST answers, so the gateway reads {addr}: {}",
                silent.join("; ")
            ),
        )
    }
}

/// How `check` rates what [`DomainSource::fetch`] returned with `RECIPIENTS_QUERY` set: the row
/// count, a warning when there is none (every address would be unknown), or the error, always
/// naming the key.
fn recipients_verdict(fetched: Result<relay_db::Fetched, relay_db::DbError>) -> (Level, String) {
    match fetched.map(|fetched| fetched.recipients.map(|rows| rows.len())) {
        Ok(Some(0)) => (
            Level::Warn,
            "RECIPIENTS_QUERY returned no rows: no recipient address would be known".to_owned(),
        ),
        Ok(Some(rows)) => (Level::Ok, format!("RECIPIENTS_QUERY returned {rows} rows")),
        Ok(None) => (
            Level::Fail,
            "RECIPIENTS_QUERY is set but the database source did not run it".to_owned(),
        ),
        Err(error) => {
            let error = error.to_string();
            if error.contains(NAME.recipients_query) {
                (Level::Fail, error)
            } else {
                (Level::Fail, format!("RECIPIENTS_QUERY: {error}"))
            }
        }
    }
}

/// Relayed domains (the database's and `PRESERVE_DOMAINS`) for which `RECIPIENTS_QUERY` names
/// no address and no catch-all: all their mail would be refused. A warning, not a failure: a
/// new domain may not have users yet. `None` when the query did not run.
fn uncovered_verdict(
    fetched: &relay_db::Fetched,
    preserve: &std::collections::BTreeSet<relay_core::DomainName>,
) -> Option<(Level, String)> {
    let recipients = relay_core::normalize_recipients(fetched.recipients.clone()?).valid;
    let covered: std::collections::HashSet<&str> = recipients
        .iter()
        .map(relay_core::Recipient::domain)
        .collect();
    let relayed = relay_core::normalize_rows(&fetched.names).valid;
    let uncovered: Vec<&relay_core::DomainName> = relayed
        .iter()
        .chain(preserve.difference(&relayed))
        .filter(|domain| !covered.contains(domain.as_str()))
        .collect();
    Some(if uncovered.is_empty() {
        (
            Level::Ok,
            format!(
                "every relayed domain ({}) has a recipient or a catch-all",
                relayed.union(preserve).count()
            ),
        )
    } else {
        (
            Level::Warn,
            format!(
                "{} relayed domain(s) have no recipient and no catch-all in RECIPIENTS_QUERY, so all their mail is refused: {}",
                uncovered.len(),
                relay_core::cut_list(uncovered.iter().map(|d| d.as_str()), 20)
            ),
        )
    })
}

/// How `check` rates the database connection: weak protection (plain, or TLS without a
/// verified certificate) is a warning unless the database is on this machine, where there is no
/// path to attack.
fn transport_verdict(protection: relay_db::Protection, host: &str, addr: &str) -> (Level, String) {
    if protection.is_weak() && !is_loopback(host) {
        (
            Level::Warn,
            format!(
                "{protection} to {addr}: someone on the path could read or change the domain \
                 list; set DB_TLS=verify-full with DB_TLS_CA, unless a tunnel (WireGuard, \
                 Tailscale) already protects the path"
            ),
        )
    } else {
        (Level::Ok, format!("{protection} to {addr}"))
    }
}

/// Whether `host` names this machine: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The grants in `SHOW GRANTS` output beyond `USAGE`, `SELECT` on `DB_NAME.domains` and
/// `SELECT` on some of the columns `email` and `enabled` of `DB_NAME.users` (recipient
/// validation's opt-in grant), with any password hash removed.
pub fn excess_grants(lines: &[String], db_name: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| !grant_is_read_only(line, db_name))
        .map(|line| redact_grant(line))
        .collect()
}

fn grant_is_read_only(line: &str, db_name: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    if upper.contains("WITH GRANT OPTION") || upper.contains("WITH ADMIN OPTION") {
        return false;
    }
    let Some(rest) = upper.strip_prefix("GRANT ") else {
        return false;
    };
    let Some((privileges, after)) = rest.split_once(" ON ") else {
        // `GRANT role TO user`: a role may carry anything.
        return false;
    };
    let target: String = after
        .split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != '`' && *c != '\'' && *c != '"')
        .collect();
    let privileges = strip_column_lists(privileges);
    let all = |p: &str| {
        privileges
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .all(|s| s == p)
    };
    if target == "*.*" {
        return all("USAGE");
    }
    let wanted = format!("{}.DOMAINS", db_name.to_ascii_uppercase());
    (target == wanted && all("SELECT")) || users_columns(line, db_name).is_some()
}

/// The columns of the opt-in grant for recipient validation, upper case, when `line` is one:
/// `SELECT (c, …) ON DB_NAME.users` with every column `email` or `enabled` (any order, case or
/// quoting) and nothing else in the line's privileges. The users table holds password hashes,
/// so a grant on the whole table, or on any other column, is not it.
fn users_columns(line: &str, db_name: &str) -> Option<Vec<String>> {
    let upper = line.to_ascii_uppercase();
    if upper.contains("WITH GRANT OPTION") || upper.contains("WITH ADMIN OPTION") {
        return None;
    }
    let (privileges, after) = upper.strip_prefix("GRANT ")?.split_once(" ON ")?;
    let target: String = after
        .split_whitespace()
        .next()?
        .chars()
        .filter(|c| *c != '`' && *c != '\'' && *c != '"')
        .collect();
    if target != format!("{}.USERS", db_name.to_ascii_uppercase()) {
        return None;
    }
    let mut columns = Vec::new();
    for (privilege, listed) in privilege_items(privileges) {
        if privilege != "SELECT" {
            return None;
        }
        for column in listed? {
            if column != "EMAIL" && column != "ENABLED" {
                return None;
            }
            columns.push(column);
        }
    }
    (!columns.is_empty()).then_some(columns)
}

/// `SELECT (a, b), INSERT` → `[("SELECT", Some([A, B])), ("INSERT", None)]`: each privilege with
/// its column list (unquoted, trimmed), split at the commas outside the lists.
fn privilege_items(privileges: &str) -> Vec<(String, Option<Vec<String>>)> {
    let mut items = Vec::new();
    let (mut name, mut list, mut columns, mut depth) =
        (String::new(), String::new(), None::<Vec<String>>, 0u32);
    let mut finish = |name: &mut String, columns: &mut Option<Vec<String>>| {
        if !name.trim().is_empty() || columns.is_some() {
            items.push((name.trim().to_owned(), columns.take()));
        }
        name.clear();
    };
    for c in privileges.chars() {
        match (c, depth) {
            ('(', 0) => {
                depth = 1;
                list.clear();
            }
            ('(', _) => depth += 1,
            (')', 1) => {
                depth = 0;
                columns = Some(
                    list.split(',')
                        .map(|column| column.trim().trim_matches('`').trim().to_owned())
                        .collect(),
                );
            }
            (')', _) => depth = depth.saturating_sub(1),
            (',', 0) => finish(&mut name, &mut columns),
            (_, 0) => name.push(c),
            _ => list.push(c),
        }
    }
    finish(&mut name, &mut columns);
    items
}

/// `SELECT (name, enabled)` → `SELECT`: column lists hold commas that are not separators.
fn strip_column_lists(privileges: &str) -> String {
    let mut out = String::new();
    let mut depth = 0u32;
    for c in privileges.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Cuts a grant line before `IDENTIFIED`: MariaDB shows the password hash there.
fn redact_grant(line: &str) -> String {
    match line.to_ascii_uppercase().find(" IDENTIFIED ") {
        Some(at) => format!("{} IDENTIFIED … (not shown)", &line[..at]),
        None => line.to_owned(),
    }
}

fn check_postfix(config: &Config, report: &mut Report) -> Option<PostfixCli> {
    let postfix = match PostfixCli::new(config.postfix_settings()) {
        Ok(postfix) => postfix,
        Err(error) => {
            report.push(CheckId::Postfix, Level::Fail, error.to_string());
            return None;
        }
    };
    let how = if config.postfix_command_prefix.is_empty() {
        format!("in {}", config.postfix_command_dir.display())
    } else {
        format!(
            "in {} through `{}`",
            config.postfix_command_dir.display(),
            config.postfix_command_prefix.join(" ")
        )
    };
    match postfix.postconf_value("relay_domains") {
        Ok(_) => report.push(
            CheckId::Postfix,
            Level::Ok,
            format!(
                "postconf, postmap, postfix {how}; config {}; map type {}",
                config.postfix_config_dir.display(),
                postfix.map_type()
            ),
        ),
        Err(error) => {
            report.push(CheckId::Postfix, Level::Fail, error.to_string());
            return None;
        }
    }
    Some(postfix)
}

fn check_transport_maps(config: &Config, postfix: &PostfixCli, report: &mut Report) {
    match transport_maps_verdict(config, postfix) {
        Ok(found) => report.push(CheckId::TransportMaps, Level::Ok, found),
        Err(problem) => report.push(CheckId::TransportMaps, Level::Fail, problem),
    }
}

/// Whether Postfix reads the transport map relay-sync builds: `Ok` with what was found, or the
/// problem and what to run. `sync` refuses to run on a problem, since every domain it added would be accepted
/// but routed by DNS instead of to the next hop.
pub fn transport_maps_verdict(config: &Config, postfix: &PostfixCli) -> Result<String, String> {
    let value = postfix.transport_maps();
    let wanted = format!("{}:{}", postfix.map_type(), config.transport_file.display());
    if transport_maps_include(value, &config.postfix_config_dir, &wanted) {
        Ok(format!("includes {wanted}"))
    } else {
        // The maps already listed stay, after relay-sync's: the first map that has a domain
        // routes it.
        let fixed = if value.trim().is_empty() {
            format!("transport_maps = {wanted}")
        } else {
            format!("transport_maps = {wanted}, {}", value.trim())
        };
        // A table that transport_maps names but Postfix cannot open fails every lookup: Postfix
        // would answer 451 to every recipient, until the first sync builds it. So when there is
        // no map yet, the fix builds one (empty, or from the source already there) first.
        let mut commands = Vec::new();
        if !postfix.transport_database().exists() {
            if !config.transport_file.exists() {
                let file = config.transport_file.to_string_lossy();
                let words = ["touch", file.as_ref()];
                commands.push(shlex::try_join(words).unwrap_or_else(|_| words.join(" ")));
            }
            commands.push(postfix.shell_command("postmap", &[&wanted]));
        }
        commands.push(postfix.shell_command("postconf", &["-e", &fixed]));
        let commands: Vec<String> = commands.iter().map(|c| format!("`{c}`")).collect();
        Err(format!(
            "transport_maps = {value:?} does not include {wanted}: domains relay-sync adds would be accepted \
             but not routed to the next hop; run {} and `{}`, in this order, or set MAP_TYPE and \
             TRANSPORT_FILE to the table transport_maps names",
            commands.join(", "),
            postfix.shell_command("postfix", &["reload"]),
        ))
    }
}

/// The commands that show what Postfix runs with on this gateway, as a critical alert asks
/// its reader to run them: `postfix status` and `postconf -h relay_domains`, with `-c` and the
/// container prefix when the config sets them.
pub(crate) fn postfix_checks(config: &Config) -> String {
    let settings = config.postfix_settings();
    format!(
        "`{}` and `{}`",
        settings.shell_command("postfix", &["status"]),
        settings.shell_command("postconf", &["-h", "relay_domains"])
    )
}

/// Whether `transport_maps` (raw, as `postconf -h` prints it) lists `wanted` (`type:path`).
/// `$config_directory` is expanded to `config_dir`, the only variable commonly used there.
pub fn transport_maps_include(value: &str, config_dir: &Path, wanted: &str) -> bool {
    let dir = config_dir.display().to_string();
    value
        .split([',', ' ', '\t', '\n'])
        .filter(|token| !token.is_empty())
        .map(|token| {
            token
                .replace("${config_directory}", &dir)
                .replace("$(config_directory)", &dir)
                .replace("$config_directory", &dir)
        })
        .any(|token| token == wanted)
}

/// Container mode: relay-sync writes `TRANSPORT_FILE` on this host and runs `postmap` on it in
/// the container, so its directory must be bind-mounted at the same path in both. A probe file
/// created here must be visible through the prefix.
fn check_shared_transport_dir(config: &Config, postfix: &PostfixCli, report: &mut Report) {
    let Some(dir) = config.transport_file.parent() else {
        return;
    };
    // A random name, created O_EXCL|O_NOFOLLOW: a link planted at a predictable name in this
    // shared directory is never written through. Removed when dropped, after the look.
    let probe = match relay_fs::Probe::create_in(dir) {
        Ok(probe) => probe,
        Err(error) => {
            report.push(CheckId::Container, Level::Fail, error.to_string());
            return;
        }
    };
    let result = postfix.container_sees(probe.path());
    drop(probe);
    match result {
        Ok(()) => report.push(
            CheckId::Container,
            Level::Ok,
            format!(
                "{} is the same directory on this host and through the prefix",
                dir.display()
            ),
        ),
        Err(relay_postfix::PostfixError::CommandFailed {
            command, status, ..
        }) => report.push(
            CheckId::Container,
            Level::Fail,
            format!(
                "`{command}` failed ({status}): bind-mount {} into the container at the same path",
                dir.display()
            ),
        ),
        Err(error) => report.push(CheckId::Container, Level::Fail, error.to_string()),
    }
}

fn check_writable(config: &Config, report: &mut Report) {
    let mut targets: Vec<(CheckId, PathBuf, Kind)> = vec![
        (
            CheckId::TransportFile,
            config.transport_file.clone(),
            Kind::File,
        ),
        (
            CheckId::TransportDir,
            config
                .transport_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            Kind::Dir,
        ),
        (CheckId::BackupDir, config.backup_dir.clone(), Kind::Dir),
        (CheckId::LogFile, config.log_file.clone(), Kind::File),
        (CheckId::StateDir, config.state_dir.clone(), Kind::Dir),
        (CheckId::LockFile, config.lock_file.clone(), Kind::File),
    ];
    // `LOG_FILE=-` is standard output: nothing to create.
    if config.logs_to_stdout() {
        targets.retain(|(what, _, _)| *what != CheckId::LogFile);
    }
    if config.postfix_command_prefix.is_empty() {
        targets.push((
            CheckId::MainCf,
            config.postfix_config_dir.join("main.cf"),
            Kind::File,
        ));
    }
    if config.relay_domains_mode == RelayDomainsMode::Map {
        targets.push((
            CheckId::RelayDomainsMap,
            config.relay_domains_map.clone(),
            Kind::File,
        ));
    }
    if config.recipients_query.is_some() {
        targets.push((
            CheckId::RecipientsMap,
            config.recipients_map.clone(),
            Kind::File,
        ));
    }
    if let Some(metrics) = &config.metrics_file {
        targets.push((CheckId::MetricsFile, metrics.clone(), Kind::File));
    }
    for (name, path, kind) in targets {
        // The lock is a file relay-sync keeps: a sync refuses it where it refuses a kept file
        // (someone else's, in a directory others can write), and so does check.
        let kept = match name {
            CheckId::LockFile => relay_fs::inspect(relay_fs::Kind::LOCK, &path)
                .map(drop)
                .map_err(|error| error.to_string()),
            _ => Ok(()),
        };
        match kept.and_then(|()| writable(&path, kind, Makes::of(name))) {
            Ok(detail) => report.push(name, Level::Ok, detail),
            Err(detail) => report.push(name, Level::Fail, detail),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    File,
    Dir,
}

/// What relay-sync creates of a path that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Makes {
    /// The path and any missing directory above it: its own files and directories
    /// (`STATE_DIR`, `BACKUP_DIR`, `LOG_FILE`, `LOCK_FILE`).
    WithParents,
    /// The file, in a directory that must exist: what it writes for Postfix and for
    /// monitoring, which are theirs to lay out.
    InItsDirectory,
    /// Nothing: `TRANSPORT_FILE`'s directory is Postfix's to lay out, and a sync writes the
    /// map in it without creating it, so a missing one fails like the map does.
    NoDirectory,
    /// Nothing: `main.cf` is Postfix's, and a missing one means `POSTFIX_CONFIG_DIR` is not
    /// Postfix's configuration directory.
    Nothing,
}

impl Makes {
    fn of(id: CheckId) -> Makes {
        match id {
            CheckId::BackupDir | CheckId::StateDir | CheckId::LogFile | CheckId::LockFile => {
                Makes::WithParents
            }
            CheckId::TransportDir => Makes::NoDirectory,
            CheckId::MainCf => Makes::Nothing,
            _ => Makes::InItsDirectory,
        }
    }
}

/// Whether relay-sync can write `path`: an existing file is opened for appending (nothing is
/// written; never through someone else's link, never waiting on a FIFO, and it must be a
/// regular file), a directory gets a probe file that is removed at once, and a missing one is
/// judged by what relay-sync `makes` of it and the directory it would be created in.
fn writable(path: &Path, kind: Kind, makes: Makes) -> Result<String, String> {
    let exists = path.exists() || std::fs::symlink_metadata(path).is_ok();
    match (kind, exists) {
        (Kind::File, true) => relay_fs::check_writable(path)
            .map(|()| format!("{} is writable", path.display()))
            .map_err(|e| e.to_string()),
        (Kind::Dir, true) => probe_dir(path).map(|()| format!("{} is writable", path.display())),
        (_, false) => missing(path, makes),
    }
}

/// What becomes of `path`, which does not exist, when a sync needs it.
fn missing(path: &Path, makes: Makes) -> Result<String, String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    if makes == Makes::Nothing {
        return Err(format!(
            "{} does not exist: POSTFIX_CONFIG_DIR must be Postfix's configuration directory, \
             the one holding main.cf (`postconf -h config_directory` names it)",
            path.display()
        ));
    }
    if makes == Makes::NoDirectory {
        return Err(format!(
            "{} does not exist, and relay-sync creates no directory for TRANSPORT_FILE \
             (`mkdir -p {}`, or set TRANSPORT_FILE to a path in an existing directory)",
            path.display(),
            relay_fs::shell_word(path)
        ));
    }
    if parent.is_dir() {
        return probe_dir(parent).map(|()| {
            format!(
                "{} does not exist yet; relay-sync will create it in {}",
                path.display(),
                parent.display()
            )
        });
    }
    if makes == Makes::InItsDirectory {
        return Err(format!(
            "{} cannot be created: its directory {} does not exist, and relay-sync creates \
             none for it (`mkdir -p {}`, or set the key to a path in an existing directory)",
            path.display(),
            parent.display(),
            relay_fs::shell_word(parent)
        ));
    }
    let mut ancestor = parent.parent();
    while let Some(dir) = ancestor {
        if dir.is_dir() {
            return probe_dir(dir).map(|()| {
                format!(
                    "{} does not exist yet; relay-sync will create it and {} (in {})",
                    path.display(),
                    parent.display(),
                    dir.display()
                )
            });
        }
        ancestor = dir.parent();
    }
    Err(format!(
        "{}: no existing directory above it",
        path.display()
    ))
}

/// Whether relay-sync can create files in `dir`: a probe of a random name, created
/// `O_EXCL|O_NOFOLLOW` and removed at once.
fn probe_dir(dir: &Path) -> Result<(), String> {
    relay_fs::Probe::create_in(dir)
        .map(drop)
        .map_err(|error| format!("cannot create files in {}: {error}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_database_protection_warns_only_off_this_machine() {
        use relay_db::Protection::*;
        for (protection, host, level) in [
            (Plain, "127.0.0.1", Level::Ok),
            (Plain, "localhost", Level::Ok),
            (Plain, "::1", Level::Ok),
            (Plain, "100.110.222.53", Level::Warn),
            (TlsUnverified, "db.example.com", Level::Warn),
            (TlsVerifiedCa, "db.example.com", Level::Ok),
            (TlsVerifiedFull, "db.example.com", Level::Ok),
        ] {
            let (got, detail) = transport_verdict(protection, host, &format!("{host}:3306"));
            assert_eq!(got, level, "{protection:?} to {host}: {detail}");
            if got == Level::Warn {
                assert!(detail.contains("DB_TLS=verify-full"), "{detail}");
            }
        }
    }

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn read_only_grants_pass() {
        let ok = lines(&[
            "GRANT USAGE ON *.* TO `relay_sync`@`127.0.0.1` IDENTIFIED BY PASSWORD '*0123ABCD'",
            "GRANT SELECT ON `mailserver_usermgmt`.`domains` TO `relay_sync`@`127.0.0.1`",
            "GRANT SELECT (name, enabled) ON `mailserver_usermgmt`.`domains` TO `relay_sync`@`%`",
        ]);
        assert_eq!(
            excess_grants(&ok, "mailserver_usermgmt"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn anything_more_is_reported_without_the_hash() {
        let bad = lines(&[
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`%` IDENTIFIED BY PASSWORD '*SECRETHASH' WITH GRANT OPTION",
            "GRANT SELECT ON `mailserver_usermgmt`.* TO `relay_sync`@`%`",
            "GRANT SELECT, INSERT ON `mailserver_usermgmt`.`domains` TO `relay_sync`@`%`",
            "GRANT SELECT ON `mailserver_usermgmt`.`domains` TO `relay_sync`@`%` WITH GRANT OPTION",
            "GRANT SELECT ON `other`.`domains` TO `relay_sync`@`%`",
            "GRANT `admin` TO `relay_sync`@`%`",
            "GRANT SELECT ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
        ]);
        let excess = excess_grants(&bad, "mailserver_usermgmt");
        assert_eq!(excess.len(), bad.len(), "{excess:#?}");
        assert!(!excess.join("\n").contains("SECRETHASH"));
        insta::assert_snapshot!(excess.join("\n"));
    }

    #[test]
    fn the_opt_in_users_grant_passes() {
        let ok = lines(&[
            "GRANT USAGE ON *.* TO `relay_sync`@`127.0.0.1` IDENTIFIED BY PASSWORD '*0123ABCD'",
            "GRANT SELECT ON `mailserver_usermgmt`.`domains` TO `relay_sync`@`127.0.0.1`",
            "GRANT SELECT (email, enabled) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`127.0.0.1`",
            "GRANT SELECT (`enabled`, `email`) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            "grant select (Email) on mailserver_usermgmt.Users to 'relay_sync'@'%'",
            "GRANT SELECT (enabled) ON `Mailserver_UserMgmt`.`users` TO `relay_sync`@`%`",
        ]);
        assert_eq!(
            excess_grants(&ok, "mailserver_usermgmt"),
            Vec::<String>::new()
        );
        assert_eq!(
            users_columns(&ok[3], "mailserver_usermgmt"),
            Some(vec!["ENABLED".to_owned(), "EMAIL".to_owned()])
        );
        assert_eq!(users_columns(&ok[1], "mailserver_usermgmt"), None);
    }

    #[test]
    fn more_than_the_opt_in_users_grant_is_reported() {
        let bad = lines(&[
            // The whole table: the password hashes too.
            "GRANT SELECT ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            // Another column.
            "GRANT SELECT (email, password) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            "GRANT SELECT (`password`) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            // The columns, and the table besides.
            "GRANT SELECT, SELECT (email) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            // Another privilege, on the allowed columns or beside them.
            "GRANT SELECT (email), UPDATE (enabled) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            "GRANT INSERT (email) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            "GRANT SELECT (email), INSERT ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
            // Another table or database.
            "GRANT SELECT (email, enabled) ON `mailserver_usermgmt`.`admins` TO `relay_sync`@`%`",
            "GRANT SELECT (email, enabled) ON `other`.`users` TO `relay_sync`@`%`",
            "GRANT SELECT (email, enabled) ON `mailserver_usermgmt`.* TO `relay_sync`@`%`",
            // Handing it on.
            "GRANT SELECT (email) ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%` WITH GRANT OPTION",
            // An empty column list is no column-limited grant.
            "GRANT SELECT () ON `mailserver_usermgmt`.`users` TO `relay_sync`@`%`",
        ]);
        let excess = excess_grants(&bad, "mailserver_usermgmt");
        assert_eq!(excess, bad);
    }

    #[test]
    fn relayed_domains_without_recipients_are_a_warning() {
        let preserve = [relay_core::DomainName::parse("kept.example").unwrap()]
            .into_iter()
            .collect();
        let fetched = relay_db::Fetched {
            names: lines(&["a.example", "B.example", "c.example"]),
            recipients: Some(lines(&["x@a.example", "@b.example", "y@elsewhere.example"])),
        };
        let (level, detail) = uncovered_verdict(&fetched, &preserve).unwrap();
        assert_eq!(level, Level::Warn);
        assert!(
            detail.ends_with("all their mail is refused: c.example, kept.example"),
            "{detail}"
        );
        let fetched = relay_db::Fetched {
            names: lines(&["a.example"]),
            recipients: Some(lines(&["@a.example"])),
        };
        let (level, _) = uncovered_verdict(&fetched, &Default::default()).unwrap();
        assert_eq!(level, Level::Ok);
        let off = relay_db::Fetched {
            names: lines(&["a.example"]),
            recipients: None,
        };
        assert_eq!(uncovered_verdict(&off, &Default::default()), None);
    }

    #[test]
    fn recipients_query_is_reported_by_name() {
        let fetched = |recipients: Option<Vec<String>>| {
            Ok(relay_db::Fetched {
                names: vec!["example.com".to_owned()],
                recipients,
            })
        };
        assert_eq!(
            recipients_verdict(fetched(Some(lines(&["a@example.com", "@example.org"])))),
            (Level::Ok, "RECIPIENTS_QUERY returned 2 rows".to_owned())
        );
        let (level, detail) = recipients_verdict(fetched(Some(Vec::new())));
        assert_eq!(level, Level::Warn);
        assert!(
            detail.starts_with("RECIPIENTS_QUERY returned no rows"),
            "{detail}"
        );
        let (level, detail) = recipients_verdict(Err(relay_db::DbError::Query {
            addr: "db:3306".to_owned(),
            detail: "the query returned 2 columns; it must return exactly one (RECIPIENTS_QUERY)"
                .to_owned(),
        }));
        assert_eq!(level, Level::Fail);
        assert_eq!(
            detail,
            "query failed on MariaDB at db:3306: the query returned 2 columns; it must return \
             exactly one (RECIPIENTS_QUERY)"
        );
        let (level, detail) = recipients_verdict(Err(relay_db::DbError::Unreachable {
            addr: "db:3306".to_owned(),
            detail: "connection refused".to_owned(),
        }));
        assert_eq!(level, Level::Fail);
        assert_eq!(
            detail,
            "RECIPIENTS_QUERY: cannot reach MariaDB at db:3306: connection refused"
        );
    }

    #[test]
    fn transport_maps_match() {
        let dir = Path::new("/etc/postfix");
        let wanted = "hash:/etc/postfix/transport";
        assert!(transport_maps_include(
            "hash:/etc/postfix/transport",
            dir,
            wanted
        ));
        assert!(transport_maps_include(
            "lmdb:/etc/postfix/other, hash:$config_directory/transport",
            dir,
            wanted
        ));
        assert!(transport_maps_include(
            "hash:${config_directory}/transport",
            dir,
            wanted
        ));
        assert!(!transport_maps_include("", dir, wanted));
        assert!(!transport_maps_include(
            "lmdb:/etc/postfix/transport",
            dir,
            wanted
        ));
        assert!(!transport_maps_include(
            "hash:/etc/postfix/transport.db",
            dir,
            wanted
        ));
    }

    #[test]
    fn writability() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(writable(&file, Kind::File, Makes::InItsDirectory).is_ok());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
        assert!(writable(dir.path(), Kind::Dir, Makes::WithParents).is_ok());
        let missing = dir.path().join("a/b/c.log");
        let detail = writable(&missing, Kind::File, Makes::WithParents).unwrap();
        assert_eq!(
            detail,
            format!(
                "{} does not exist yet; relay-sync will create it and {} (in {})",
                missing.display(),
                dir.path().join("a/b").display(),
                dir.path().display()
            )
        );
        let beside = dir.path().join("transport");
        let detail = writable(&beside, Kind::File, Makes::InItsDirectory).unwrap();
        assert!(
            detail.ends_with(&format!("will create it in {}", dir.path().display())),
            "{detail}"
        );
        // A map in a directory that is not there is not created "in" some grandparent: a sync
        // would fail to write it.
        let detail = writable(&missing, Kind::File, Makes::InItsDirectory).unwrap_err();
        assert!(
            detail.contains("relay-sync creates none for it"),
            "{detail}"
        );
        let main_cf = dir.path().join("main.cf");
        let detail = writable(&main_cf, Kind::File, Makes::Nothing).unwrap_err();
        assert!(detail.contains("POSTFIX_CONFIG_DIR must be"), "{detail}");
        // TRANSPORT_FILE's directory is not created either, even where its parent exists: the
        // check fails with the `mkdir` that makes it, as the map's own check does.
        let transport_dir = dir.path().join("postfix dir");
        let detail =
            writable(&transport_dir, Kind::Dir, Makes::of(CheckId::TransportDir)).unwrap_err();
        assert_eq!(
            detail,
            format!(
                "{} does not exist, and relay-sync creates no directory for TRANSPORT_FILE \
                 (`mkdir -p {}`, or set TRANSPORT_FILE to a path in an existing directory)",
                transport_dir.display(),
                relay_fs::shell_word(&transport_dir)
            )
        );
        assert!(!transport_dir.exists());
        // No probe file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The `chmod` a readable config file is given can be pasted as it is printed.
    #[test]
    fn the_chmod_for_a_readable_config_file_is_quoted_for_a_shell() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay sync.conf");
        std::fs::write(&path, "DB_HOST=db\nDELL_RELAY_IP=192.0.2.25\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let env: [(&str, &str); 0] = [];
        let config = Config::load(Some(&path), env).unwrap();
        let mut report = Report::default();
        check_config_file(&config, &mut report);
        let detail = &report.checks[0].detail;
        assert!(
            detail.contains(&format!("run `chmod 600 '{}'`", path.display())),
            "{detail}"
        );
    }
}
