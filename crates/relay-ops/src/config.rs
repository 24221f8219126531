//! `relay-sync.conf` and `RELAY_SYNC_*`: the typed [`Config`] of SPEC §5.
//!
//! Every key, its default and its conversion are in this module; the rest of the program only
//! sees [`Config`]. The rules, including those SPEC §5 leaves open:
//!
//! - The file is `KEY=VALUE` lines, read with `serde_ini`'s line parser: whitespace around keys
//!   and values is ignored, lines starting with `#` or `;` are comments, blank lines are allowed.
//!   There are no inline comments: a `#` after the `=` belongs to the value (passwords may hold
//!   one). Keys are upper case, as in SPEC §5.
//! - One pair of matching quotes around a whole value is removed (`"a b"`, `'a b'`), so that a
//!   value may keep leading or trailing spaces. Nothing else is interpreted: no escapes, no `$`
//!   expansion (`TRANSPORT_FILE=$POSTFIX_CONFIG_DIR/x` is refused as not an absolute path).
//! - Sections (`[name]`), keys set twice and unknown keys are errors naming the file and line;
//!   an unknown key close to a known one gets a "did you mean" suggestion.
//! - `RELAY_SYNC_<KEY>` from the environment wins over the file. Its value is used verbatim (no
//!   trimming, no quote removal: the shell or systemd has already done that). An unknown
//!   `RELAY_SYNC_*` variable is an error too, except `RELAY_SYNC_ALERT_SEVERITY` and
//!   `RELAY_SYNC_ALERT_SUBJECT` ([`RESERVED_ENV`]), which relay-sync itself sets for
//!   `ALERT_COMMAND`.
//! - An empty value is the same as not setting the key: the default applies, or the key is
//!   missing when it is required. So `RELAY_SYNC_ALERT_COMMAND=` switches off a file's command.
//! - `--config PATH` must exist. The default path ([`DEFAULT_CONFIG_FILE`]) may be absent when
//!   the environment supplies every required key (a container configured by environment only).
//! - Paths must be absolute: cron's working directory is not something to depend on.
//! - Enumerated values and booleans are case-insensitive (`Smtp`, `YES`).
//! - Timeouts are seconds, fractions allowed (`0.5`), more than 0 and at most 3600.
//! - A file holding a non-empty `DB_PASSWORD` must not be readable by group or others
//!   (`mode & 0o044 == 0`), whatever the environment says.
//! - Errors never contain a password: a bad `DB_PASSWORD` value is not shown, and
//!   `DB_PASSWORD_COMMAND`'s stdout never appears in an error.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_db::{DbSettings, Secret, TlsMode};
use relay_postfix::PostfixSettings;
use serde_ini::parse::{Error as IniError, SyntaxError};
use serde_ini::Item;

use relay_process::{excerpt, RunError};

/// Where the configuration file is when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/opt/mailserver/config/relay-sync.conf";

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "RELAY_SYNC_";

/// `RELAY_SYNC_*` variables that are not configuration keys: relay-sync sets them for
/// `ALERT_COMMAND` (SPEC §5), so they may be inherited when an alert command runs relay-sync.
pub const RESERVED_ENV: &[&str] = &["RELAY_SYNC_ALERT_SEVERITY", "RELAY_SYNC_ALERT_SUBJECT"];

/// Every key of SPEC §5, in the order of its table.
const KEYS: &[&str] = &[
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASSWORD",
    "DB_PASSWORD_FILE",
    "DB_PASSWORD_COMMAND",
    "DB_QUERY",
    "DB_TLS",
    "DB_TLS_CA",
    "DB_CONNECT_TIMEOUT",
    "DB_QUERY_TIMEOUT",
    "DELL_RELAY_IP",
    "DELL_RELAY_PORT",
    "RELAY_TRANSPORT",
    "PRESERVE_DOMAINS",
    "POSTFIX_CONFIG_DIR",
    "POSTFIX_COMMAND_DIR",
    "POSTFIX_COMMAND_PREFIX",
    "COMMAND_TIMEOUT",
    "TRANSPORT_FILE",
    "MAP_TYPE",
    "RELAY_DOMAINS_MODE",
    "RELAY_DOMAINS_MAP",
    "BACKUP_DIR",
    "BACKUP_KEEP",
    "LOG_FILE",
    "STATE_DIR",
    "LOCK_FILE",
    "MAX_REMOVE_PERCENT",
    "ALLOW_EMPTY",
    "ALERT_COMMAND",
    "ALERT_EMAIL_TO",
    "ALERT_SMTP_HOST",
    "ALERT_SMTP_PORT",
    "ALERT_EMAIL_FROM",
    "ALERT_AFTER_FAILURES",
    "METRICS_FILE",
];

/// Keys whose values are never shown in an error.
const SECRET_KEYS: &[&str] = &["DB_PASSWORD"];

/// The password keys; at most one may be set.
const PASSWORD_KEYS: [&str; 3] = ["DB_PASSWORD", "DB_PASSWORD_FILE", "DB_PASSWORD_COMMAND"];

/// The defaults of SPEC §5's table, in one place.
mod default {
    use super::{RelayDomainsMode, RelayTransport};
    use relay_db::TlsMode;
    use std::time::Duration;

    pub(super) const DB_PORT: u16 = 3306;
    pub(super) const DB_NAME: &str = "mailserver_usermgmt";
    pub(super) const DB_USER: &str = "relay_sync";
    pub(super) const DB_QUERY: &str = "SELECT name FROM domains WHERE enabled = 1";
    pub(super) const DB_TLS: TlsMode = TlsMode::Disabled;
    pub(super) const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub(super) const DB_QUERY_TIMEOUT: Duration = Duration::from_secs(3);
    pub(super) const DELL_RELAY_PORT: u16 = 2525;
    pub(super) const RELAY_TRANSPORT: RelayTransport = RelayTransport::Smtp;
    pub(super) const POSTFIX_CONFIG_DIR: &str = "/etc/postfix";
    pub(super) const POSTFIX_COMMAND_DIR: &str = "/usr/sbin";
    pub(super) const COMMAND_TIMEOUT: Duration = relay_process::DEFAULT_TIMEOUT;
    /// `TRANSPORT_FILE` is this name in `POSTFIX_CONFIG_DIR`.
    pub(super) const TRANSPORT_FILE_NAME: &str = "transport";
    pub(super) const RELAY_DOMAINS_MODE: RelayDomainsMode = RelayDomainsMode::Inline;
    /// `RELAY_DOMAINS_MAP` is this name in `POSTFIX_CONFIG_DIR`.
    pub(super) const RELAY_DOMAINS_MAP_NAME: &str = "relay_domains";
    pub(super) const BACKUP_DIR: &str = "/opt/mailserver/backup";
    pub(super) const BACKUP_KEEP: usize = 5;
    pub(super) const LOG_FILE: &str = "/var/log/mailserver/relay-sync.log";
    pub(super) const STATE_DIR: &str = "/var/lib/relay-sync";
    /// `LOCK_FILE` is this name in `STATE_DIR`.
    pub(super) const LOCK_FILE_NAME: &str = "relay-sync.lock";
    pub(super) const MAX_REMOVE_PERCENT: u8 = 50;
    pub(super) const ALLOW_EMPTY: bool = false;
    pub(super) const ALERT_SMTP_HOST: &str = "localhost";
    pub(super) const ALERT_SMTP_PORT: u16 = 25;
    pub(super) const ALERT_AFTER_FAILURES: u32 = 5;
}

/// The whole configuration, typed and checked (SPEC §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The configuration file read, or `None` when the default file does not exist.
    pub file: Option<PathBuf>,
    /// `DB_HOST` (required): an IP address or a host name.
    pub db_host: String,
    /// `DB_PORT`.
    pub db_port: u16,
    /// `DB_NAME`.
    pub db_name: String,
    /// `DB_USER`.
    pub db_user: String,
    /// `DB_PASSWORD`, `DB_PASSWORD_FILE` or `DB_PASSWORD_COMMAND`; see
    /// [`Config::resolve_password`].
    pub db_password: PasswordSource,
    /// `DB_QUERY`.
    pub db_query: String,
    /// `DB_TLS`.
    pub db_tls: TlsMode,
    /// `DB_TLS_CA`; always set when `db_tls` is `verify-ca` or `verify-full`.
    pub db_tls_ca: Option<PathBuf>,
    /// `DB_CONNECT_TIMEOUT`.
    pub db_connect_timeout: Duration,
    /// `DB_QUERY_TIMEOUT`.
    pub db_query_timeout: Duration,
    /// `DELL_RELAY_IP` (required): the next hop's IP address or host name, without brackets.
    pub dell_relay_ip: String,
    /// `DELL_RELAY_PORT`.
    pub dell_relay_port: u16,
    /// `RELAY_TRANSPORT`.
    pub relay_transport: RelayTransport,
    /// `PRESERVE_DOMAINS`, split on commas and whitespace; not validated here (relay-core
    /// parses them as domain names).
    pub preserve_domains: Vec<String>,
    /// `POSTFIX_CONFIG_DIR`.
    pub postfix_config_dir: PathBuf,
    /// `POSTFIX_COMMAND_DIR`.
    pub postfix_command_dir: PathBuf,
    /// `POSTFIX_COMMAND_PREFIX`, split on whitespace (no shell quoting).
    pub postfix_command_prefix: Vec<String>,
    /// `COMMAND_TIMEOUT`: the limit of every command relay-sync runs (Postfix's, through the
    /// prefix, `DB_PASSWORD_COMMAND` and `ALERT_COMMAND`), after which its process group is
    /// killed.
    pub command_timeout: Duration,
    /// `TRANSPORT_FILE`, by default `POSTFIX_CONFIG_DIR/transport`.
    pub transport_file: PathBuf,
    /// `MAP_TYPE`, lower case; `None` means Postfix's `default_database_type`.
    pub map_type: Option<String>,
    /// `RELAY_DOMAINS_MODE`.
    pub relay_domains_mode: RelayDomainsMode,
    /// `RELAY_DOMAINS_MAP`, by default `POSTFIX_CONFIG_DIR/relay_domains`.
    pub relay_domains_map: PathBuf,
    /// `BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// `BACKUP_KEEP`, at least 1.
    pub backup_keep: usize,
    /// `LOG_FILE`.
    pub log_file: PathBuf,
    /// `STATE_DIR`.
    pub state_dir: PathBuf,
    /// `LOCK_FILE`, by default `STATE_DIR/relay-sync.lock`.
    pub lock_file: PathBuf,
    /// `MAX_REMOVE_PERCENT`, 0 to 100.
    pub max_remove_percent: u8,
    /// `ALLOW_EMPTY`.
    pub allow_empty: bool,
    /// `ALERT_COMMAND`, run through `/bin/sh -c`.
    pub alert_command: Option<String>,
    /// `ALERT_EMAIL_TO`: one address.
    pub alert_email_to: Option<String>,
    /// `ALERT_SMTP_HOST`.
    pub alert_smtp_host: String,
    /// `ALERT_SMTP_PORT`.
    pub alert_smtp_port: u16,
    /// `ALERT_EMAIL_FROM`; `None` means `relay-sync@<hostname>`, computed by the alert code.
    pub alert_email_from: Option<String>,
    /// `ALERT_AFTER_FAILURES`, at least 1.
    pub alert_after_failures: u32,
    /// `METRICS_FILE`: a Prometheus textfile-collector file written after every run; `None`
    /// writes none.
    pub metrics_file: Option<PathBuf>,
}

/// Where the database password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password.
    None,
    /// `DB_PASSWORD`.
    Literal(Secret),
    /// `DB_PASSWORD_FILE`: a file whose content is the password.
    File(PathBuf),
    /// `DB_PASSWORD_COMMAND`: a shell command whose stdout is the password.
    Command(String),
}

/// `RELAY_TRANSPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTransport {
    /// `smtp`.
    Smtp,
    /// `lmtp`.
    Lmtp,
}

/// `RELAY_DOMAINS_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDomainsMode {
    /// `relay_domains` holds the domains (`postconf -e`).
    Inline,
    /// `relay_domains` names a lookup table kept by relay-sync (`RELAY_DOMAINS_MAP`).
    Map,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// Its full name, `RELAY_SYNC_...`.
        var: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// Why the configuration cannot be used. The binary exits 2 on any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be opened or read (or, for `--config`, does not exist).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A line that is not `KEY=VALUE`, a comment or blank.
    #[error("{} line {line}: {detail}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the line itself, which may hold a password).
        detail: &'static str,
    },
    /// The file holds `DB_PASSWORD` and group or others may read it.
    #[error(
        "{} holds DB_PASSWORD but is readable by group or others (mode {mode:04o}): run `chmod 600 {}` or move the password to DB_PASSWORD_FILE",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key in the file that SPEC §5 does not know.
    #[error("unknown key {key} in {} line {line}{}", path.display(), did_you_mean(*suggestion))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The known key it probably meant.
        suggestion: Option<&'static str>,
    },
    /// A `RELAY_SYNC_*` variable that names no key (and is not one of [`RESERVED_ENV`]).
    #[error(
        "unknown environment variable {var}{}: relay-sync reads {ENV_PREFIX}<KEY> for the keys of its config file",
        did_you_mean(suggestion.map(|key| format!("{ENV_PREFIX}{key}")))
    )]
    UnknownEnv {
        /// The variable's name.
        var: String,
        /// The known key it probably meant.
        suggestion: Option<&'static str>,
    },
    /// A key set twice in the file.
    #[error("{key} is set twice in {}: line {first} and line {second}", path.display())]
    DuplicateKey {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Line of the first setting.
        first: usize,
        /// Line of the second setting.
        second: usize,
    },
    /// A required key is not set anywhere.
    #[error(
        "{key} is not set: add {key}=... to {}{} or set {ENV_PREFIX}{key}",
        path.display(),
        if *file_found { "" } else { " (which does not exist)" }
    )]
    Missing {
        /// The key.
        key: &'static str,
        /// The configuration file.
        path: PathBuf,
        /// Whether that file exists.
        file_found: bool,
    },
    /// A value that cannot be converted.
    #[error("invalid {key} {} in {origin}: expected {expected}", shown(value.as_deref()))]
    Invalid {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value, or `None` for a secret.
        value: Option<String>,
        /// What the key accepts.
        expected: &'static str,
    },
    /// More than one of `DB_PASSWORD`, `DB_PASSWORD_FILE`, `DB_PASSWORD_COMMAND`.
    #[error(
        "{first_key} ({first}) and {second_key} ({second}) are both set: keep only one of DB_PASSWORD, DB_PASSWORD_FILE and DB_PASSWORD_COMMAND"
    )]
    PasswordSources {
        /// One key.
        first_key: &'static str,
        /// Where it was set.
        first: Origin,
        /// Another key.
        second_key: &'static str,
        /// Where it was set.
        second: Origin,
    },
    /// `DB_TLS=verify-ca` or `verify-full` without `DB_TLS_CA`.
    #[error("DB_TLS={mode} ({origin}) needs DB_TLS_CA, the CA certificate (PEM) that signed the server's certificate")]
    TlsCaMissing {
        /// `verify-ca` or `verify-full`.
        mode: &'static str,
        /// Where `DB_TLS` was set.
        origin: Origin,
    },
    /// Map mode's table would be the transport file.
    #[error(
        "RELAY_DOMAINS_MAP {} is the transport file {}: map mode keeps the domains in a table of their own; set RELAY_DOMAINS_MAP to another path (by default POSTFIX_CONFIG_DIR/relay_domains)",
        map.display(),
        transport.display()
    )]
    TableIsTransport {
        /// `RELAY_DOMAINS_MAP`.
        map: PathBuf,
        /// `TRANSPORT_FILE`.
        transport: PathBuf,
    },
    /// `DB_PASSWORD_FILE` cannot be read.
    #[error("cannot read DB_PASSWORD_FILE {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `DB_PASSWORD_FILE` is empty or `DB_PASSWORD_COMMAND` printed nothing.
    #[error("{what} gave an empty password")]
    PasswordEmpty {
        /// `DB_PASSWORD_FILE PATH` or ``DB_PASSWORD_COMMAND `CMD` ``.
        what: String,
    },
    /// The password is not UTF-8.
    #[error("{what} gave a password that is not valid UTF-8")]
    PasswordNotUtf8 {
        /// `DB_PASSWORD_FILE PATH` or ``DB_PASSWORD_COMMAND `CMD` ``.
        what: String,
    },
    /// `DB_PASSWORD_COMMAND` could not be started.
    #[error("cannot run DB_PASSWORD_COMMAND `{command}`: {source}")]
    PasswordCommandSpawn {
        /// The command.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// `DB_PASSWORD_COMMAND` failed. Its stdout is never kept: it may hold the secret.
    #[error(
        "DB_PASSWORD_COMMAND `{command}` failed ({status}){}",
        stderr_suffix(stderr)
    )]
    PasswordCommandFailed {
        /// The command.
        command: String,
        /// Exit status or signal.
        status: String,
        /// What it wrote to stderr, trimmed and shortened.
        stderr: String,
    },
    /// `DB_PASSWORD_COMMAND` ran past `COMMAND_TIMEOUT`; its process group was killed.
    #[error("DB_PASSWORD_COMMAND `{command}` still running after {}s (COMMAND_TIMEOUT); its process group was killed", timeout.as_secs_f64())]
    PasswordCommandTimeout {
        /// The command.
        command: String,
        /// The limit.
        timeout: Duration,
    },
}

fn did_you_mean(suggestion: Option<impl fmt::Display>) -> String {
    suggestion.map_or_else(String::new, |key| format!(" (did you mean {key}?)"))
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "value (not shown)".to_owned(), |v| format!("{v:?}"))
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        " with nothing on stderr".to_owned()
    } else {
        format!(": {stderr}")
    }
}

/// The configuration file as read: its text and permission bits. No `Debug`: the text may
/// hold a password.
struct FileContents {
    text: String,
    mode: u32,
}

impl Config {
    /// Reads the configuration file (`--config PATH`, or [`DEFAULT_CONFIG_FILE`] when `None`)
    /// and overlays the `RELAY_SYNC_*` variables of `env` (pass `std::env::vars_os()`).
    pub fn load<I, K, V>(config: Option<&Path>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let (path, explicit) = match config {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_FILE), false),
        };
        let contents = match read_config_file(path) {
            Ok(contents) => Some(contents),
            Err(error) if !explicit && error.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let env = env
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()));
        Config::from_parts(path, contents.as_ref(), env)
    }

    /// Builds the configuration from the file's contents (if it exists) and the environment.
    fn from_parts(
        path: &Path,
        file: Option<&FileContents>,
        env: impl Iterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let mut values = Values {
            entries: BTreeMap::new(),
            path,
            file_found: file.is_some(),
            read: RefCell::new(BTreeSet::new()),
        };
        if let Some(file) = file {
            let lines = parse_lines(path, &file.text)?;
            check_permissions(path, file.mode, &lines)?;
            values.add_file_lines(path, lines)?;
        }
        values.add_env(env)?;
        let config = values.to_config()?;
        debug_assert_eq!(
            values.read.borrow().len(),
            KEYS.len(),
            "every key of KEYS must be read by Values::to_config"
        );
        Ok(config)
    }

    /// The database password: `DB_PASSWORD` itself, the content of `DB_PASSWORD_FILE`, or the
    /// stdout of `DB_PASSWORD_COMMAND` (run through `/bin/sh -c`, its process group killed
    /// after `COMMAND_TIMEOUT`). Trailing line breaks are removed from the file and the
    /// stdout; an empty result is an error rather than an empty password.
    pub fn resolve_password(&self) -> Result<Option<Secret>, ConfigError> {
        match &self.db_password {
            PasswordSource::None => Ok(None),
            PasswordSource::Literal(secret) => Ok(Some(secret.clone())),
            PasswordSource::File(path) => read_password_file(path).map(Some),
            PasswordSource::Command(command) => {
                run_password_command(command, self.command_timeout).map(Some)
            }
        }
    }

    /// What relay-db needs, with the password resolved by [`Config::resolve_password`].
    pub fn db_settings(&self, password: Option<Secret>) -> DbSettings {
        DbSettings {
            host: self.db_host.clone(),
            port: self.db_port,
            database: self.db_name.clone(),
            user: self.db_user.clone(),
            password,
            query: self.db_query.clone(),
            tls: self.db_tls,
            tls_ca: self.db_tls_ca.clone(),
            connect_timeout: self.db_connect_timeout,
            query_timeout: self.db_query_timeout,
        }
    }

    /// What relay-postfix needs.
    pub fn postfix_settings(&self) -> PostfixSettings {
        PostfixSettings {
            config_dir: self.postfix_config_dir.clone(),
            command_dir: self.postfix_command_dir.clone(),
            command_prefix: self.postfix_command_prefix.clone(),
            transport_file: self.transport_file.clone(),
            map_type: self.map_type.clone(),
            backup_dir: self.backup_dir.clone(),
            backup_keep: self.backup_keep,
            command_timeout: self.command_timeout,
        }
    }
}

/// Opens the file once, so that the mode checked is that of the text read.
fn read_config_file(path: &Path) -> io::Result<FileContents> {
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(FileContents { text, mode })
}

/// One `KEY=VALUE` line of the file, quotes removed. No `Debug`: the value may be a password.
struct Line {
    number: usize,
    key: String,
    value: String,
}

/// Splits the file into `KEY=VALUE` lines with `serde_ini`'s parser, which yields exactly one
/// item per line. Lines are trimmed first so that indented comments are comments.
fn parse_lines(path: &Path, text: &str) -> Result<Vec<Line>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |line: usize, detail: &'static str| ConfigError::Syntax {
        path: path.to_owned(),
        line,
        detail,
    };
    let trimmed = text.lines().map(|line| Ok::<_, Infallible>(line.trim()));
    let mut lines = Vec::new();
    for (index, item) in serde_ini::Parser::new(trimmed).enumerate() {
        let number = index + 1;
        match item {
            Ok(Item::Value { key, value }) => {
                if key.is_empty() {
                    return Err(syntax(
                        number,
                        "expected KEY=VALUE, found nothing before `=`",
                    ));
                }
                lines.push(Line {
                    number,
                    key,
                    value: unquote(&value).to_owned(),
                });
            }
            Ok(Item::Empty | Item::Comment { .. }) => {}
            Ok(Item::Section { .. })
            | Err(IniError::Syntax(SyntaxError::SectionName | SyntaxError::SectionNotClosed)) => {
                return Err(syntax(
                    number,
                    "sections like [name] are not supported: write plain KEY=VALUE lines",
                ));
            }
            Err(IniError::Syntax(SyntaxError::MissingEquals)) => {
                return Err(syntax(
                    number,
                    "expected KEY=VALUE, a comment starting with # or a blank line",
                ));
            }
            Err(IniError::Inner(never)) => match never {},
        }
    }
    Ok(lines)
}

/// Removes one pair of matching quotes around the whole value.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// SPEC §5: a file holding a password must be readable by its owner only.
fn check_permissions(path: &Path, mode: u32, lines: &[Line]) -> Result<(), ConfigError> {
    let holds_password = lines
        .iter()
        .any(|line| line.key == "DB_PASSWORD" && !line.value.is_empty());
    if holds_password && mode & 0o044 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The known key closest to `key` (case-insensitive, at most two edits away; an `export `
/// prefix is ignored).
fn suggest(key: &str) -> Option<&'static str> {
    let key = key.strip_prefix("export ").unwrap_or(key).trim();
    let key = key.to_ascii_uppercase();
    KEYS.iter()
        .map(|known| (levenshtein(&key, known), *known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Edit distance between two strings, counted in characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

fn known_key(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|known| **known == key).copied()
}

/// One raw value and where it came from. No `Debug`: the value may be a password.
struct Entry {
    value: String,
    origin: Origin,
}

/// The raw values after the environment overlay, and the conversions.
struct Values<'a> {
    entries: BTreeMap<&'static str, Entry>,
    path: &'a Path,
    file_found: bool,
    /// The keys looked at, so a debug build can check that no key is forgotten.
    read: RefCell<BTreeSet<&'static str>>,
}

/// Converts a raw value, or says what the key expects.
type Convert<T> = fn(&str) -> Result<T, &'static str>;

impl Values<'_> {
    fn add_file_lines(&mut self, path: &Path, lines: Vec<Line>) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        for line in lines {
            let origin = Origin::File {
                path: path.to_owned(),
                line: line.number,
            };
            let Some(key) = known_key(&line.key) else {
                return Err(ConfigError::UnknownKey {
                    suggestion: suggest(&line.key),
                    key: line.key,
                    path: path.to_owned(),
                    line: line.number,
                });
            };
            if let Some(first) = seen.insert(key, line.number) {
                return Err(ConfigError::DuplicateKey {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    first,
                    second: line.number,
                });
            }
            self.entries.insert(
                key,
                Entry {
                    value: line.value,
                    origin,
                },
            );
        }
        Ok(())
    }

    fn add_env(
        &mut self,
        env: impl Iterator<Item = (OsString, OsString)>,
    ) -> Result<(), ConfigError> {
        // Sorted, so that the error reported among several is always the same one.
        let mut vars = BTreeMap::new();
        for (name, value) in env {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with(ENV_PREFIX) && !RESERVED_ENV.contains(&name.as_str()) {
                vars.insert(name, value);
            }
        }
        for (var, value) in vars {
            let suffix = &var[ENV_PREFIX.len()..];
            let Some(key) = known_key(suffix) else {
                return Err(ConfigError::UnknownEnv {
                    suggestion: suggest(suffix),
                    var,
                });
            };
            let origin = Origin::Env { var };
            let Ok(value) = value.into_string() else {
                return Err(ConfigError::Invalid {
                    key,
                    origin,
                    value: None,
                    expected: "valid UTF-8 text",
                });
            };
            self.entries.insert(key, Entry { value, origin });
        }
        Ok(())
    }

    /// The entry for `key` if it is set and not empty.
    fn get(&self, key: &'static str) -> Option<&Entry> {
        debug_assert!(KEYS.contains(&key), "{key} is missing from KEYS");
        self.read.borrow_mut().insert(key);
        self.entries
            .get(key)
            .filter(|entry| !entry.value.is_empty())
    }

    fn invalid(&self, key: &'static str, entry: &Entry, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            key,
            origin: entry.origin.clone(),
            value: (!SECRET_KEYS.contains(&key)).then(|| entry.value.clone()),
            expected,
        }
    }

    fn text(&self, key: &'static str, default: &str) -> String {
        self.get(key)
            .map_or_else(|| default.to_owned(), |entry| entry.value.clone())
    }

    fn optional_text(&self, key: &'static str) -> Option<String> {
        self.get(key).map(|entry| entry.value.clone())
    }

    fn optional<T>(
        &self,
        key: &'static str,
        convert: Convert<T>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|entry| {
                convert(&entry.value).map_err(|expected| self.invalid(key, entry, expected))
            })
            .transpose()
    }

    fn or_default<T>(
        &self,
        key: &'static str,
        default: T,
        convert: Convert<T>,
    ) -> Result<T, ConfigError> {
        Ok(self.optional(key, convert)?.unwrap_or(default))
    }

    fn required<T>(&self, key: &'static str, convert: Convert<T>) -> Result<T, ConfigError> {
        self.optional(key, convert)?
            .ok_or_else(|| ConfigError::Missing {
                key,
                path: self.path.to_owned(),
                file_found: self.file_found,
            })
    }

    fn to_config(&self) -> Result<Config, ConfigError> {
        let db_tls = self.or_default("DB_TLS", default::DB_TLS, parse_tls)?;
        let db_tls_ca = self.optional("DB_TLS_CA", parse_absolute_path)?;
        if db_tls_ca.is_none() {
            let mode = match db_tls {
                TlsMode::VerifyCa => Some("verify-ca"),
                TlsMode::VerifyFull => Some("verify-full"),
                _ => None,
            };
            if let (Some(mode), Some(entry)) = (mode, self.get("DB_TLS")) {
                return Err(ConfigError::TlsCaMissing {
                    mode,
                    origin: entry.origin.clone(),
                });
            }
        }
        let relay_domains_mode = self.or_default(
            "RELAY_DOMAINS_MODE",
            default::RELAY_DOMAINS_MODE,
            parse_mode,
        )?;
        let postfix_config_dir = self.or_default(
            "POSTFIX_CONFIG_DIR",
            PathBuf::from(default::POSTFIX_CONFIG_DIR),
            parse_absolute_path,
        )?;
        let state_dir = self.or_default(
            "STATE_DIR",
            PathBuf::from(default::STATE_DIR),
            parse_absolute_path,
        )?;
        let config = Config {
            file: self.file_found.then(|| self.path.to_owned()),
            db_host: self.required("DB_HOST", parse_host)?,
            db_port: self.or_default("DB_PORT", default::DB_PORT, parse_port)?,
            db_name: self.text("DB_NAME", default::DB_NAME),
            db_user: self.text("DB_USER", default::DB_USER),
            db_password: self.password_source()?,
            db_query: self.text("DB_QUERY", default::DB_QUERY),
            db_tls,
            db_tls_ca,
            db_connect_timeout: self.or_default(
                "DB_CONNECT_TIMEOUT",
                default::DB_CONNECT_TIMEOUT,
                parse_seconds,
            )?,
            db_query_timeout: self.or_default(
                "DB_QUERY_TIMEOUT",
                default::DB_QUERY_TIMEOUT,
                parse_seconds,
            )?,
            dell_relay_ip: self.required("DELL_RELAY_IP", parse_host)?,
            dell_relay_port: self.or_default(
                "DELL_RELAY_PORT",
                default::DELL_RELAY_PORT,
                parse_port,
            )?,
            relay_transport: self.or_default(
                "RELAY_TRANSPORT",
                default::RELAY_TRANSPORT,
                parse_transport,
            )?,
            preserve_domains: self
                .get("PRESERVE_DOMAINS")
                .map(|entry| split_list(&entry.value))
                .unwrap_or_default(),
            postfix_command_dir: self.or_default(
                "POSTFIX_COMMAND_DIR",
                PathBuf::from(default::POSTFIX_COMMAND_DIR),
                parse_absolute_path,
            )?,
            postfix_command_prefix: self
                .get("POSTFIX_COMMAND_PREFIX")
                .map(|entry| entry.value.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            command_timeout: self.or_default(
                "COMMAND_TIMEOUT",
                default::COMMAND_TIMEOUT,
                parse_seconds,
            )?,
            transport_file: self.or_default(
                "TRANSPORT_FILE",
                postfix_config_dir.join(default::TRANSPORT_FILE_NAME),
                parse_absolute_path,
            )?,
            map_type: self.optional("MAP_TYPE", parse_map_type)?,
            relay_domains_mode,
            relay_domains_map: self.or_default(
                "RELAY_DOMAINS_MAP",
                postfix_config_dir.join(default::RELAY_DOMAINS_MAP_NAME),
                parse_absolute_path,
            )?,
            postfix_config_dir,
            backup_dir: self.or_default(
                "BACKUP_DIR",
                PathBuf::from(default::BACKUP_DIR),
                parse_absolute_path,
            )?,
            backup_keep: self.or_default("BACKUP_KEEP", default::BACKUP_KEEP, parse_keep)?,
            log_file: self.or_default(
                "LOG_FILE",
                PathBuf::from(default::LOG_FILE),
                parse_absolute_path,
            )?,
            lock_file: self.or_default(
                "LOCK_FILE",
                state_dir.join(default::LOCK_FILE_NAME),
                parse_absolute_path,
            )?,
            state_dir,
            max_remove_percent: self.or_default(
                "MAX_REMOVE_PERCENT",
                default::MAX_REMOVE_PERCENT,
                parse_percent,
            )?,
            allow_empty: self.or_default("ALLOW_EMPTY", default::ALLOW_EMPTY, parse_bool)?,
            alert_command: self.optional_text("ALERT_COMMAND"),
            alert_email_to: self.optional("ALERT_EMAIL_TO", parse_email)?,
            alert_smtp_host: self.or_default(
                "ALERT_SMTP_HOST",
                default::ALERT_SMTP_HOST.to_owned(),
                parse_host,
            )?,
            alert_smtp_port: self.or_default(
                "ALERT_SMTP_PORT",
                default::ALERT_SMTP_PORT,
                parse_port,
            )?,
            alert_email_from: self.optional("ALERT_EMAIL_FROM", parse_email)?,
            alert_after_failures: self.or_default(
                "ALERT_AFTER_FAILURES",
                default::ALERT_AFTER_FAILURES,
                parse_count,
            )?,
            metrics_file: self.optional("METRICS_FILE", parse_absolute_path)?,
        };
        // Both are written and built by relay-sync; one file cannot hold both texts.
        let (map, transport) = (&config.relay_domains_map, &config.transport_file);
        // The same path, or (both existing) the same file by a link of either kind.
        let same_file = || {
            use std::os::unix::fs::MetadataExt;
            matches!(
                (std::fs::metadata(map), std::fs::metadata(transport)),
                (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino())
            )
        };
        if config.relay_domains_mode == RelayDomainsMode::Map && (map == transport || same_file()) {
            return Err(ConfigError::TableIsTransport {
                map: map.clone(),
                transport: transport.clone(),
            });
        }
        Ok(config)
    }

    fn password_source(&self) -> Result<PasswordSource, ConfigError> {
        // Look at all three, so that two of them set is an error whichever they are.
        let set: Vec<(&'static str, &Entry)> = PASSWORD_KEYS
            .iter()
            .filter_map(|key| self.get(key).map(|entry| (*key, entry)))
            .collect();
        if let [(first_key, first), (second_key, second), ..] = set[..] {
            return Err(ConfigError::PasswordSources {
                first_key,
                first: first.origin.clone(),
                second_key,
                second: second.origin.clone(),
            });
        }
        Ok(match set.first() {
            None => PasswordSource::None,
            Some(("DB_PASSWORD", entry)) => PasswordSource::Literal(Secret::new(&entry.value)),
            Some(("DB_PASSWORD_FILE", entry)) => PasswordSource::File(
                parse_absolute_path(&entry.value)
                    .map_err(|expected| self.invalid("DB_PASSWORD_FILE", entry, expected))?,
            ),
            Some((_, entry)) => PasswordSource::Command(entry.value.clone()),
        })
    }
}

fn parse_port(value: &str) -> Result<u16, &'static str> {
    const EXPECTED: &str = "a port number from 1 to 65535";
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(EXPECTED),
        Ok(port) => Ok(port),
    }
}

fn parse_seconds(value: &str) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "a number of seconds above 0 and at most 3600, such as 3 or 0.5";
    let seconds: f64 = value.parse().map_err(|_| EXPECTED)?;
    // `!(x > 0.0)` also refuses NaN.
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(EXPECTED);
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// An IP address or a plausible host name (letters, digits, `-`, `_`; `_` because container
/// service names use it). A dotted name whose last label is all digits is a mistyped address.
fn parse_host(value: &str) -> Result<String, &'static str> {
    const EXPECTED: &str = "an IP address or a host name, without brackets or port";
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > 253 {
        return Err(EXPECTED);
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name.split('.').all(label_ok) {
        return Err(EXPECTED);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if name.contains('.') && last.chars().all(|c| c.is_ascii_digit()) {
        return Err(EXPECTED);
    }
    Ok(value.to_owned())
}

fn parse_absolute_path(value: &str) -> Result<PathBuf, &'static str> {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err("an absolute path")
    }
}

fn parse_tls(value: &str) -> Result<TlsMode, &'static str> {
    match value.to_ascii_lowercase().as_str() {
        "disabled" => Ok(TlsMode::Disabled),
        "preferred" => Ok(TlsMode::Preferred),
        "required" => Ok(TlsMode::Required),
        "verify-ca" => Ok(TlsMode::VerifyCa),
        "verify-full" => Ok(TlsMode::VerifyFull),
        _ => Err("disabled, preferred, required, verify-ca or verify-full"),
    }
}

fn parse_transport(value: &str) -> Result<RelayTransport, &'static str> {
    match value.to_ascii_lowercase().as_str() {
        "smtp" => Ok(RelayTransport::Smtp),
        "lmtp" => Ok(RelayTransport::Lmtp),
        _ => Err("smtp or lmtp"),
    }
}

fn parse_map_type(value: &str) -> Result<String, &'static str> {
    let value = value.to_ascii_lowercase();
    match value.as_str() {
        "hash" | "lmdb" | "cdb" | "btree" => Ok(value),
        _ => Err("hash, lmdb, cdb or btree"),
    }
}

fn parse_mode(value: &str) -> Result<RelayDomainsMode, &'static str> {
    match value.to_ascii_lowercase().as_str() {
        "inline" => Ok(RelayDomainsMode::Inline),
        "map" => Ok(RelayDomainsMode::Map),
        _ => Err("inline or map"),
    }
}

fn parse_keep(value: &str) -> Result<usize, &'static str> {
    match value.parse::<usize>() {
        Ok(keep) if keep >= 1 => Ok(keep),
        _ => Err("a whole number of at least 1"),
    }
}

fn parse_count(value: &str) -> Result<u32, &'static str> {
    match value.parse::<u32>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("a whole number of at least 1"),
    }
}

fn parse_percent(value: &str) -> Result<u8, &'static str> {
    match value.parse::<u8>() {
        Ok(percent) if percent <= 100 => Ok(percent),
        _ => Err("a whole number from 0 to 100"),
    }
}

fn parse_bool(value: &str) -> Result<bool, &'static str> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err("yes, no, true, false, 1 or 0"),
    }
}

/// One address, `local@domain`, with nothing that could break a mail header.
fn parse_email(value: &str) -> Result<String, &'static str> {
    const EXPECTED: &str = "one email address such as ops@example.com";
    let plain = !value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    match value.rsplit_once('@') {
        Some((local, domain)) if plain && !local.is_empty() && parse_host(domain).is_ok() => {
            Ok(value.to_owned())
        }
        _ => Err(EXPECTED),
    }
}

/// `PRESERVE_DOMAINS`: comma or whitespace separated.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Removes the line breaks a file or a command's output ends with, and nothing else: spaces
/// may belong to the password.
fn strip_line_end(value: &str) -> &str {
    value.trim_end_matches(['\n', '\r'])
}

fn password_from_bytes(bytes: Vec<u8>, what: impl Fn() -> String) -> Result<Secret, ConfigError> {
    let text =
        String::from_utf8(bytes).map_err(|_| ConfigError::PasswordNotUtf8 { what: what() })?;
    let password = strip_line_end(&text);
    if password.is_empty() {
        return Err(ConfigError::PasswordEmpty { what: what() });
    }
    Ok(Secret::new(password))
}

fn read_password_file(path: &Path) -> Result<Secret, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    password_from_bytes(bytes, || format!("DB_PASSWORD_FILE {}", path.display()))
}

/// Runs `DB_PASSWORD_COMMAND` under `/bin/sh -c` with no stdin, and returns its stdout.
fn run_password_command(command: &str, timeout: Duration) -> Result<Secret, ConfigError> {
    let output = relay_process::Command::shell(command)
        .timeout(timeout)
        .run()
        .map_err(|error| match error {
            RunError::Timeout { after, .. } => ConfigError::PasswordCommandTimeout {
                command: command.to_owned(),
                timeout: after,
            },
            RunError::Spawn { source, .. } | RunError::Wait { source, .. } => {
                ConfigError::PasswordCommandSpawn {
                    command: command.to_owned(),
                    source,
                }
            }
            other => ConfigError::PasswordCommandSpawn {
                command: command.to_owned(),
                source: io::Error::other(other.to_string()),
            },
        })?;
    if !output.status.success() {
        return Err(ConfigError::PasswordCommandFailed {
            command: command.to_owned(),
            status: output.status.to_string(),
            stderr: excerpt(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    password_from_bytes(output.stdout, || format!("DB_PASSWORD_COMMAND `{command}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::time::Instant;

    const PATH: &str = "/etc/relay-sync.conf";
    const MINIMAL: &str = "DB_HOST=db.example.net\nDELL_RELAY_IP=100.110.222.53\n";

    /// Loads `text` as the file at [`PATH`] with mode `mode`, plus `env`.
    fn load(text: &str, mode: u32, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file = FileContents {
            text: text.to_owned(),
            mode,
        };
        let env = env
            .iter()
            .map(|(key, value)| (OsString::from(key), OsString::from(value)));
        Config::from_parts(Path::new(PATH), Some(&file), env)
    }

    fn ok(text: &str, env: &[(&str, &str)]) -> Config {
        match load(text, 0o600, env) {
            Ok(config) => config,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        match load(text, 0o600, env) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(error) => error.to_string(),
        }
    }

    /// Runs every case and renders `input => error` blocks for one snapshot.
    fn errors(cases: &[(&str, &[(&str, &str)])]) -> String {
        let mut out = String::new();
        for (text, env) in cases {
            let error = err(text, env);
            let _ = writeln!(out, "--- file:\n{}", text.trim_end());
            if !env.is_empty() {
                let _ = writeln!(out, "--- env: {env:?}");
            }
            let _ = writeln!(out, "=> {error}\n");
        }
        out
    }

    /// Checks one key: `VALUE` in the file gives the field `expect` renders.
    fn check(key_value: &str, field: impl Fn(&Config) -> String, expect: &str) {
        let config = ok(&format!("{MINIMAL}{key_value}\n"), &[]);
        assert_eq!(field(&config), expect, "for {key_value}");
    }

    #[test]
    fn defaults() {
        let config = ok(MINIMAL, &[]);
        insta::assert_debug_snapshot!(config);
    }

    #[test]
    fn map_mode_is_accepted() {
        let mode = |c: &Config| {
            format!(
                "{:?} {}",
                c.relay_domains_mode,
                c.relay_domains_map.display()
            )
        };
        check(
            "RELAY_DOMAINS_MODE=map",
            mode,
            "Map /etc/postfix/relay_domains",
        );
        check(
            "RELAY_DOMAINS_MODE=inline",
            mode,
            "Inline /etc/postfix/relay_domains",
        );
    }

    #[test]
    fn every_key_parses() {
        let text = r#"
# Every key of SPEC §5, none at its default.
DB_HOST = 10.0.0.5
DB_PORT = 3307
DB_NAME = panel
DB_USER = sync_reader
DB_PASSWORD_FILE = /run/credentials/relay-sync/db
DB_QUERY = SELECT domain FROM mail_domains WHERE active
DB_TLS = verify-full
DB_TLS_CA = /etc/ssl/db-ca.pem
DB_CONNECT_TIMEOUT = 0.5
DB_QUERY_TIMEOUT = 10
DELL_RELAY_IP = mailbox.internal
DELL_RELAY_PORT = 24
RELAY_TRANSPORT = lmtp
PRESERVE_DOMAINS = kuma8088.com, example.org other.example
POSTFIX_CONFIG_DIR = /etc/postfix-mx
POSTFIX_COMMAND_DIR = /opt/postfix/sbin
POSTFIX_COMMAND_PREFIX = docker exec  mailserver-postfix
COMMAND_TIMEOUT = 30
TRANSPORT_FILE = /etc/postfix-mx/transport.relay
MAP_TYPE = LMDB
RELAY_DOMAINS_MODE = inline
RELAY_DOMAINS_MAP = /etc/postfix-mx/relay_domains.map
BACKUP_DIR = /srv/backup
BACKUP_KEEP = 10
LOG_FILE = /srv/log/relay-sync.log
STATE_DIR = /srv/state
LOCK_FILE = /run/relay-sync.lock
MAX_REMOVE_PERCENT = 20
ALLOW_EMPTY = yes
ALERT_COMMAND = logger -t relay-sync
ALERT_EMAIL_TO = ops@example.com
ALERT_SMTP_HOST = 100.110.222.53
ALERT_SMTP_PORT = 587
ALERT_EMAIL_FROM = relay-sync@mx.example.com
ALERT_AFTER_FAILURES = 3
METRICS_FILE = /var/lib/node_exporter/textfile/relay_sync.prom
"#;
        insta::assert_debug_snapshot!(ok(text, &[]));
    }

    #[test]
    fn derived_defaults_follow_their_directory() {
        let config = ok(
            &format!("{MINIMAL}POSTFIX_CONFIG_DIR=/srv/pf\nSTATE_DIR=/srv/st\n"),
            &[],
        );
        assert_eq!(config.transport_file, Path::new("/srv/pf/transport"));
        assert_eq!(config.relay_domains_map, Path::new("/srv/pf/relay_domains"));
        assert_eq!(config.lock_file, Path::new("/srv/st/relay-sync.lock"));
        // The directory from the environment counts too.
        let config = ok(MINIMAL, &[("RELAY_SYNC_POSTFIX_CONFIG_DIR", "/env/pf")]);
        assert_eq!(config.transport_file, Path::new("/env/pf/transport"));
    }

    #[test]
    fn map_mode_refuses_a_table_that_is_the_transport_file() {
        let same = format!(
            "{MINIMAL}RELAY_DOMAINS_MODE=map\nTRANSPORT_FILE=/srv/pf/t\nRELAY_DOMAINS_MAP=/srv/pf/t\n"
        );
        assert_eq!(
            err(&same, &[]),
            "RELAY_DOMAINS_MAP /srv/pf/t is the transport file /srv/pf/t: map mode keeps the \
             domains in a table of their own; set RELAY_DOMAINS_MAP to another path (by default \
             POSTFIX_CONFIG_DIR/relay_domains)"
        );
        // The same file through a symbolic link.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let transport = dir.path().join("transport");
        std::fs::write(&transport, "").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("relay_domains");
        std::os::unix::fs::symlink(&transport, &link).unwrap_or_else(|e| panic!("{e}"));
        let linked = format!(
            "{MINIMAL}RELAY_DOMAINS_MODE=map\nTRANSPORT_FILE={}\nRELAY_DOMAINS_MAP={}\n",
            transport.display(),
            link.display()
        );
        assert!(err(&linked, &[]).contains("is the transport file"));
        // And through a hard link.
        let hard = dir.path().join("relay_domains.hard");
        std::fs::hard_link(&transport, &hard).unwrap_or_else(|e| panic!("{e}"));
        let hard_linked = format!(
            "{MINIMAL}RELAY_DOMAINS_MODE=map\nTRANSPORT_FILE={}\nRELAY_DOMAINS_MAP={}\n",
            transport.display(),
            hard.display()
        );
        assert!(err(&hard_linked, &[]).contains("is the transport file"));
        // Inline mode never writes the table.
        ok(&same.replace("=map", "=inline"), &[]);
    }

    #[test]
    fn values() {
        for host in [
            "2001:db8::1",
            "mailbox",
            "mail-box.example.com.",
            "mailserver_dovecot",
        ] {
            let config = ok(&format!("DB_HOST=db\nDELL_RELAY_IP={host}"), &[]);
            assert_eq!(config.dell_relay_ip, host);
        }
        let transport = |c: &Config| format!("{:?}", c.relay_transport);
        check("RELAY_TRANSPORT=SMTP", transport, "Smtp");
        check("RELAY_TRANSPORT=lmtp", transport, "Lmtp");
        let tls = |c: &Config| format!("{:?}", c.db_tls);
        check("DB_TLS=disabled", tls, "Disabled");
        check("DB_TLS=Preferred", tls, "Preferred");
        check("DB_TLS=required", tls, "Required");
        let allow = |c: &Config| c.allow_empty.to_string();
        for (value, expect) in [
            ("yes", "true"),
            ("TRUE", "true"),
            ("1", "true"),
            ("no", "false"),
            ("False", "false"),
            ("0", "false"),
        ] {
            check(&format!("ALLOW_EMPTY={value}"), allow, expect);
        }
        let timeout = |c: &Config| format!("{:?}", c.db_query_timeout);
        check("DB_QUERY_TIMEOUT=0.25", timeout, "250ms");
        check("DB_QUERY_TIMEOUT=3600", timeout, "3600s");
        let percent = |c: &Config| c.max_remove_percent.to_string();
        check("MAX_REMOVE_PERCENT=0", percent, "0");
        check("MAX_REMOVE_PERCENT=100", percent, "100");
        let preserve = |c: &Config| c.preserve_domains.join("|");
        check("PRESERVE_DOMAINS=a.com,b.com", preserve, "a.com|b.com");
        check(
            "PRESERVE_DOMAINS= a.com ,, b.com\tc.com ",
            preserve,
            "a.com|b.com|c.com",
        );
        check("PRESERVE_DOMAINS=", preserve, "");
        let prefix = |c: &Config| c.postfix_command_prefix.join("|");
        check("POSTFIX_COMMAND_PREFIX=", prefix, "");
        check("POSTFIX_COMMAND_PREFIX=sudo -n", prefix, "sudo|-n");
        let map_type = |c: &Config| format!("{:?}", c.map_type);
        check("MAP_TYPE=", map_type, "None");
        check("MAP_TYPE=cdb", map_type, "Some(\"cdb\")");
        let query = |c: &Config| c.db_query.clone();
        // A `#` after `=` is part of the value, and `=` may appear in it.
        check(
            "DB_QUERY=SELECT n FROM d WHERE e = 1 # x",
            query,
            "SELECT n FROM d WHERE e = 1 # x",
        );
    }

    #[test]
    fn quotes_are_removed_once() {
        let name = |c: &Config| c.db_name.clone();
        check(r#"DB_NAME="panel""#, name, "panel");
        check("DB_NAME='panel'", name, "panel");
        check(r#"DB_NAME="'panel'""#, name, "'panel'");
        check(r#"DB_NAME=""panel"""#, name, "\"panel\"");
        check(r#"DB_NAME="panel"#, name, "\"panel");
        check(r#"DB_NAME="panel'"#, name, "\"panel'");
        check(r#"DB_NAME=pa"n"el"#, name, "pa\"n\"el");
        check(r#"DB_NAME=""#, name, "\"");
        // Quotes keep spaces that would otherwise be trimmed.
        let password = |c: &Config| match &c.db_password {
            PasswordSource::Literal(secret) => format!("[{}]", secret.expose()),
            other => format!("{other:?}"),
        };
        check(r#"DB_PASSWORD=" s3cret ""#, password, "[ s3cret ]");
        check("DB_PASSWORD=a#b;c", password, "[a#b;c]");
        // An empty quoted value is an empty value: not set.
        check(r#"DB_PASSWORD="""#, password, "None");
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let text = "\u{feff}# comment\n  ; another\n\n   \n\tDB_HOST =  db  \r\n  # indented comment\nDELL_RELAY_IP=10.1.1.1\n";
        let config = ok(text, &[]);
        assert_eq!(config.db_host, "db");
        assert_eq!(config.dell_relay_ip, "10.1.1.1");
    }

    #[test]
    fn environment_wins_over_file() {
        let text = format!("{MINIMAL}DB_PORT=3307\nALERT_COMMAND=notify\nDB_NAME=file\n");
        let config = ok(
            &text,
            &[
                ("RELAY_SYNC_DB_PORT", "3308"),
                ("RELAY_SYNC_DB_USER", "env_user"),
                // An empty variable unsets the file's value.
                ("RELAY_SYNC_ALERT_COMMAND", ""),
                // Values from the environment are used verbatim: no quote removal.
                ("RELAY_SYNC_DB_NAME", "'quoted'"),
                // Not relay-sync's variables.
                ("RELAY_SYNCED", "x"),
                ("PATH", "/usr/bin"),
                // Set by relay-sync for ALERT_COMMAND; ignored.
                ("RELAY_SYNC_ALERT_SEVERITY", "critical"),
                ("RELAY_SYNC_ALERT_SUBJECT", "x"),
            ],
        );
        assert_eq!(config.db_port, 3308);
        assert_eq!(config.db_user, "env_user");
        assert_eq!(config.alert_command, None);
        assert_eq!(config.db_name, "'quoted'");
    }

    #[test]
    fn environment_alone() {
        let env = [
            ("RELAY_SYNC_DB_HOST", "db"),
            ("RELAY_SYNC_DELL_RELAY_IP", "10.0.0.1"),
        ];
        let config = Config::load(None::<&Path>, env).map(|c| c.file);
        // The default path does not exist on a build machine, and that is allowed.
        if !Path::new(DEFAULT_CONFIG_FILE).exists() {
            assert!(matches!(config, Ok(None)), "{config:?}");
        }
    }

    #[test]
    fn file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        let error = Config::load(Some(&missing), [("RELAY_SYNC_DB_HOST", "db")]).unwrap_err();
        let message = error
            .to_string()
            .replace(&*dir.path().to_string_lossy(), "DIR");
        insta::assert_snapshot!("explicit_file_missing", message);

        let error = Config::load(Some(dir.path()), Vec::<(OsString, OsString)>::new()).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");

        let latin1 = dir.path().join("latin1.conf");
        std::fs::write(&latin1, b"DB_NAME=caf\xe9\n").unwrap();
        let error = Config::load(Some(&latin1), Vec::<(OsString, OsString)>::new()).unwrap_err();
        assert!(error.to_string().contains("latin1.conf"), "{error}");
    }

    #[test]
    fn missing_required_keys() {
        insta::assert_snapshot!(errors(&[
            ("DELL_RELAY_IP=10.0.0.1", &[]),
            ("DB_HOST=db", &[]),
            ("DB_HOST=\nDELL_RELAY_IP=10.0.0.1", &[]),
            (MINIMAL, &[("RELAY_SYNC_DB_HOST", "")]),
        ]));
        let error = Config::from_parts(Path::new(PATH), None, std::iter::empty()).unwrap_err();
        insta::assert_snapshot!("missing_file_and_key", error.to_string());
    }

    #[test]
    fn syntax_errors() {
        insta::assert_snapshot!(errors(&[
            ("[main]\nDB_HOST=db", &[]),
            ("DB_HOST=db\n[main", &[]),
            ("DB_HOST=db\nhunter2", &[]),
            ("=db", &[]),
        ]));
    }

    #[test]
    fn unknown_and_duplicate_keys() {
        insta::assert_snapshot!(errors(&[
            ("DB_HOTS=db", &[]),
            ("db_host=db", &[]),
            ("export DB_HOST=db", &[]),
            ("RELAY_DOMAINS=a.com", &[]),
            ("COMPLETELY_UNRELATED=1", &[]),
            (MINIMAL, &[("RELAY_SYNC_DB_PASWORD", "x")]),
            (MINIMAL, &[("RELAY_SYNC_VERBOSE", "1")]),
            ("DB_HOST=a\nDELL_RELAY_IP=10.0.0.1\n# again\nDB_HOST=b", &[]),
        ]));
    }

    #[test]
    fn bad_values() {
        let bad = |line: &str| format!("{MINIMAL}{line}");
        let cases: Vec<String> = [
            "DB_PORT=0",
            "DB_PORT=65536",
            "DB_PORT=33o6",
            "DB_CONNECT_TIMEOUT=0",
            "DB_CONNECT_TIMEOUT=-1",
            "DB_CONNECT_TIMEOUT=3s",
            "DB_QUERY_TIMEOUT=NaN",
            "DB_QUERY_TIMEOUT=inf",
            "DB_QUERY_TIMEOUT=3601",
            "DB_TLS=on",
            "DB_TLS_CA=ca.pem",
            "RELAY_TRANSPORT=relay",
            "MAP_TYPE=dbm",
            "RELAY_DOMAINS_MODE=file",
            "BACKUP_KEEP=0",
            "BACKUP_KEEP=-1",
            "MAX_REMOVE_PERCENT=101",
            "MAX_REMOVE_PERCENT=50%",
            "ALLOW_EMPTY=maybe",
            "ALERT_AFTER_FAILURES=0",
            "ALERT_SMTP_PORT=smtp",
            "ALERT_EMAIL_TO=ops",
            "ALERT_EMAIL_TO=a@example.com, b@example.com",
            "ALERT_EMAIL_FROM=Relay <relay@example.com>",
            "TRANSPORT_FILE=$POSTFIX_CONFIG_DIR/transport",
            "LOG_FILE=relay-sync.log",
            "DB_PASSWORD_FILE=secret.txt",
            "ALERT_SMTP_HOST=smtp host",
        ]
        .iter()
        .map(|line| bad(line))
        .collect();
        let cases: Vec<(&str, &[(&str, &str)])> =
            cases.iter().map(|text| (text.as_str(), &[][..])).collect();
        insta::assert_snapshot!(errors(&cases));
    }

    #[test]
    fn bad_hosts() {
        for host in [
            "[100.110.222.53]",
            "100.110.222.53:2525",
            "100.110.222.530",
            "1.2.3",
            "smtp:[10.0.0.1]",
            "mail box",
            "-mail",
            "mail..example",
            "fe80::1%eth0",
            ".",
        ] {
            let error = err(&format!("DB_HOST=db\nDELL_RELAY_IP={host}"), &[]);
            assert!(
                error.starts_with("invalid DELL_RELAY_IP"),
                "{host}: {error}"
            );
        }
        let long = format!("DB_HOST=db\nDELL_RELAY_IP={}.com", "a".repeat(64));
        assert!(err(&long, &[]).contains("invalid DELL_RELAY_IP"));
    }

    #[test]
    fn environment_value_errors() {
        insta::assert_snapshot!(errors(&[
            (MINIMAL, &[("RELAY_SYNC_DB_PORT", " 3306")]),
            (MINIMAL, &[("RELAY_SYNC_DELL_RELAY_PORT", "x\ny")]),
        ]));
    }

    #[test]
    fn env_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let file = FileContents {
            text: MINIMAL.to_owned(),
            mode: 0o600,
        };
        let env = [(
            OsString::from("RELAY_SYNC_DB_PASSWORD"),
            OsString::from_vec(b"caf\xe9".to_vec()),
        )];
        let error = Config::from_parts(Path::new(PATH), Some(&file), env.into_iter()).unwrap_err();
        insta::assert_snapshot!(error.to_string());
    }

    #[test]
    fn cross_key_rules() {
        insta::assert_snapshot!(errors(&[
            (&format!("{MINIMAL}DB_TLS=verify-ca"), &[]),
            (MINIMAL, &[("RELAY_SYNC_DB_TLS", "verify-full")]),
            (
                &format!("{MINIMAL}DB_PASSWORD=hunter2\nDB_PASSWORD_COMMAND=pass db"),
                &[]
            ),
            (
                &format!("{MINIMAL}DB_PASSWORD_FILE=/run/secret"),
                &[("RELAY_SYNC_DB_PASSWORD_COMMAND", "pass db")]
            ),
        ]));
        // An empty variable removes the file's source, leaving one.
        let config = ok(
            &format!("{MINIMAL}DB_PASSWORD_FILE=/run/secret"),
            &[
                ("RELAY_SYNC_DB_PASSWORD_FILE", ""),
                ("RELAY_SYNC_DB_PASSWORD_COMMAND", "pass db"),
            ],
        );
        assert_eq!(
            config.db_password,
            PasswordSource::Command("pass db".into())
        );
        let config = ok(
            &format!("{MINIMAL}DB_TLS=verify-ca\nDB_TLS_CA=/etc/ssl/ca.pem"),
            &[],
        );
        assert_eq!(config.db_tls, TlsMode::VerifyCa);
    }

    #[test]
    fn errors_never_show_the_password() {
        let secret = "hunter2-\u{1b}[31m";
        let cases = [
            format!("{MINIMAL}DB_PASSWORD={secret}\nDB_PASSWORD_FILE=/x"),
            format!("{MINIMAL}DB_PASSWORD={secret}\nDB_PASSWORD={secret}"),
            format!("{MINIMAL}DB_PASSWORD={secret}\nDB_PASSWRD={secret}"),
            format!("{MINIMAL}DB_PASSWORD={secret}\n{secret}"),
        ];
        for text in &cases {
            let error = err(text, &[]);
            assert!(!error.contains("hunter2"), "{error}");
        }
        let error = load(&format!("{MINIMAL}DB_PASSWORD={secret}"), 0o644, &[]).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let debug = format!("{:?}", ok(&format!("{MINIMAL}DB_PASSWORD={secret}"), &[]));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn password_in_a_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.conf");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let no_env = Vec::<(OsString, OsString)>::new;
        let with_password = format!("{MINIMAL}DB_PASSWORD=hunter2\n");

        write(&with_password, 0o644);
        let error = Config::load(Some(&path), no_env()).unwrap_err();
        let message = error
            .to_string()
            .replace(&*dir.path().to_string_lossy(), "DIR");
        insta::assert_snapshot!("password_file_mode_0644", message);
        assert!(!message.contains("hunter2"));

        for mode in [0o640, 0o604, 0o660] {
            write(&with_password, mode);
            let error = Config::load(Some(&path), no_env()).unwrap_err();
            assert!(
                matches!(error, ConfigError::Permissions { .. }),
                "{mode:o}: {error}"
            );
        }
        // Owner-only is fine, and so is execute or write for others (not reading).
        for mode in [0o600, 0o400, 0o700, 0o622] {
            write(&with_password, mode);
            let config = Config::load(Some(&path), no_env()).unwrap();
            assert_eq!(config.file.as_deref(), Some(path.as_path()));
        }
        // Without a password, the file may be world-readable.
        for text in [
            MINIMAL,
            &format!("{MINIMAL}DB_PASSWORD_FILE=/run/secret\nDB_PASSWORD=\n"),
        ] {
            write(text, 0o644);
            Config::load(Some(&path), no_env()).unwrap();
        }
    }

    fn with_source(source: PasswordSource) -> Config {
        let mut config = ok(MINIMAL, &[]);
        config.db_password = source;
        config
    }

    #[test]
    fn password_literal_and_none() {
        assert_eq!(
            with_source(PasswordSource::None)
                .resolve_password()
                .unwrap(),
            None
        );
        let secret = Secret::new("s3cret");
        let resolved = with_source(PasswordSource::Literal(secret.clone())).resolve_password();
        assert_eq!(resolved.unwrap(), Some(secret));
    }

    #[test]
    fn password_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-password");
        let resolve = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            with_source(PasswordSource::File(path.clone())).resolve_password()
        };
        assert_eq!(resolve(b"s3cret\n").unwrap(), Some(Secret::new("s3cret")));
        assert_eq!(
            resolve(b"s3cret\r\n\n").unwrap(),
            Some(Secret::new("s3cret"))
        );
        assert_eq!(
            resolve(b" s3 cret ").unwrap(),
            Some(Secret::new(" s3 cret "))
        );
        let redact = |error: ConfigError| {
            error
                .to_string()
                .replace(&*dir.path().to_string_lossy(), "DIR")
        };
        let empty = redact(resolve(b"\n").unwrap_err());
        let latin1 = redact(resolve(b"caf\xe9\n").unwrap_err());
        std::fs::remove_file(&path).unwrap();
        let missing = redact(
            with_source(PasswordSource::File(path.clone()))
                .resolve_password()
                .unwrap_err(),
        );
        insta::assert_snapshot!(format!("{empty}\n{latin1}\n{missing}"));
    }

    #[test]
    fn password_command() {
        let resolve = |command: &str| {
            with_source(PasswordSource::Command(command.to_owned())).resolve_password()
        };
        assert_eq!(
            resolve("printf 's3cret\\n'").unwrap(),
            Some(Secret::new("s3cret"))
        );
        assert_eq!(
            resolve("echo 'warning: slow' >&2; echo s3cret").unwrap(),
            Some(Secret::new("s3cret"))
        );
        // Plenty of output on both pipes does not block the command.
        assert!(resolve("head -c 200000 /dev/zero | tr '\\0' x >&2; echo s3cret").is_ok());

        // The secret on stdout is `hunter2`; the commands spell it differently.
        let failed =
            resolve("echo hunter$((1+1)); echo 'secret not found' >&2; exit 3").unwrap_err();
        let empty = resolve("true").unwrap_err();
        let silent = resolve("echo hunter$((1+1)); exit 1").unwrap_err();
        let killed = resolve("echo hunter$((1+1)); kill -9 $$").unwrap_err();
        let messages = [&failed, &empty, &silent, &killed].map(ToString::to_string);
        for message in &messages {
            assert!(!message.contains("hunter2"), "{message}");
        }
        insta::assert_snapshot!(messages.join("\n"));
    }

    #[test]
    fn password_command_timeout() {
        let start = Instant::now();
        let error =
            run_password_command("echo hunter$((1+1)); sleep 10", Duration::from_millis(200))
                .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!error.to_string().contains("hunter2"), "{error}");
        insta::assert_snapshot!(error.to_string());
    }

    #[test]
    fn password_command_long_stderr_is_cut() {
        let error = run_password_command(
            "head -c 5000 /dev/zero | tr '\\0' e >&2; exit 1",
            relay_process::DEFAULT_TIMEOUT,
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.len() < 1200, "{}", message.len());
        assert!(message.ends_with("e…"), "{message}");
    }

    #[test]
    fn settings_for_other_crates() {
        let config = ok(
            &format!("{MINIMAL}DB_TLS=verify-ca\nDB_TLS_CA=/ca.pem\nMAP_TYPE=lmdb\nPOSTFIX_COMMAND_PREFIX=docker exec pf"),
            &[],
        );
        let db = config.db_settings(Some(Secret::new("pw")));
        assert_eq!(db.host, "db.example.net");
        assert_eq!(db.port, 3306);
        assert_eq!(db.database, "mailserver_usermgmt");
        assert_eq!(db.user, "relay_sync");
        assert_eq!(db.password, Some(Secret::new("pw")));
        assert_eq!(db.query, "SELECT name FROM domains WHERE enabled = 1");
        assert_eq!(db.tls, TlsMode::VerifyCa);
        assert_eq!(db.tls_ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(db.connect_timeout, Duration::from_secs(3));
        assert_eq!(db.query_timeout, Duration::from_secs(3));
        let postfix = config.postfix_settings();
        assert_eq!(postfix.config_dir, Path::new("/etc/postfix"));
        assert_eq!(postfix.command_dir, Path::new("/usr/sbin"));
        assert_eq!(postfix.command_prefix, ["docker", "exec", "pf"]);
        assert_eq!(postfix.transport_file, Path::new("/etc/postfix/transport"));
        assert_eq!(postfix.map_type.as_deref(), Some("lmdb"));
        assert_eq!(postfix.backup_dir, Path::new("/opt/mailserver/backup"));
        assert_eq!(postfix.backup_keep, 5);
        assert_eq!(postfix.command_timeout, Duration::from_secs(120));
        let postfix = ok(&format!("{MINIMAL}COMMAND_TIMEOUT=2.5"), &[]).postfix_settings();
        assert_eq!(postfix.command_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("DB_HOTS"), Some("DB_HOST"));
        assert_eq!(suggest("db_host"), Some("DB_HOST"));
        assert_eq!(suggest("LOGFILE"), Some("LOG_FILE"));
        assert_eq!(suggest("DATABASE_HOST"), None);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    /// packaging/relay-sync.conf documents every key (set or commented out), and nothing else.
    #[test]
    fn sample_config_documents_every_key() {
        let sample = include_str!("../../../packaging/relay-sync.conf");
        let documented: BTreeSet<&str> = sample
            .lines()
            .map(|line| line.strip_prefix('#').unwrap_or(line))
            .filter_map(|line| line.split_once('=').map(|(key, _)| key))
            .filter(|key| {
                !key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            })
            .collect();
        let known: BTreeSet<&str> = KEYS.iter().copied().collect();
        assert_eq!(documented, known);
        // As shipped, it loads (with its password file not yet created).
        ok(sample, &[]);
    }
}
