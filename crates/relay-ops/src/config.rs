//! `relay-sync.conf` and `RELAY_SYNC_*`: the typed [`Config`] of SPEC §5.
//!
//! Every key is declared once, in the table of `config/keys.rs`: its name, value type, default,
//! sample value and doc comment. The table generates the raw struct the file and the environment
//! fill, its defaults, and the documentation ([`SECTIONS`]), from which the sample config file,
//! docs/configuration.md's table and relay-sync.conf(5) are rendered. The rules between keys are
//! in `Raw::into_config`, here. The rest of the program only sees [`Config`].
//! The rules, including those SPEC §5 leaves open:
//!
//! - The file is `KEY=VALUE` lines: whitespace around keys and values is ignored, lines starting
//!   with `#` or `;` are comments, blank lines are allowed. There are no inline comments: a `#`
//!   after the `=` belongs to the value (passwords may hold one). Keys are upper case, as in
//!   SPEC §5.
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
//! - With none of the required keys set (the sample config file as shipped), relay-sync is not
//!   configured: [`ConfigError::NotConfigured`] names them all. Like every configuration error,
//!   it ends a run before anything is recorded or alerted.
//! - `--config PATH` must exist. The default path ([`DEFAULT_CONFIG_FILE`]) may be absent when
//!   the environment supplies every required key (a container configured by environment only).
//! - Paths must be absolute: cron's working directory is not something to depend on.
//! - Enumerated values and booleans are case-insensitive (`Smtp`, `YES`).
//! - Timeouts are seconds, fractions allowed (`0.5`), more than 0 and at most 3600.
//! - A file holding a non-empty `DB_PASSWORD` must not be readable by group or others
//!   (`mode & 0o044 == 0`), whatever the environment says.
//! - Errors never contain a password: a bad value of a secret [`Key`] is not shown, and
//!   `DB_PASSWORD_COMMAND`'s stdout never appears in an error.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_core::{DomainName, NextHop};
use relay_db::{DbHost, DbSettings, Secret, TlsMode};

use crate::login::DbLogin;
use relay_postfix::PostfixSettings;

mod declare;
mod keys;
mod render;
mod source;
mod trust;
mod values;

pub use declare::{Key, Sample, Section, Shown};
pub use keys::SECTIONS;
pub use render::{man_page, markdown_table, sample_config};

use keys::Raw;
pub(crate) use keys::NAME;
use source::{Line, Values};
use values::{Arn, SecretRef};

/// Where the configuration file is when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/opt/mailserver/config/relay-sync.conf";

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "RELAY_SYNC_";

/// `RELAY_SYNC_*` variables that are not configuration keys: relay-sync sets them for
/// `ALERT_COMMAND` (SPEC §5), so they may be inherited when an alert command runs relay-sync.
pub const RESERVED_ENV: &[&str] = &["RELAY_SYNC_ALERT_SEVERITY", "RELAY_SYNC_ALERT_SUBJECT"];

/// The whole configuration, typed and checked (SPEC §5).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The configuration file read, or `None` when the default file does not exist.
    pub file: Option<PathBuf>,
    /// `DB_HOST` (required): the hosts, tried in order (a replica, then the primary); each an
    /// IP address or a host name, with its own port or at `DB_PORT`.
    pub db_host: Vec<DbHost>,
    /// `DB_PORT`: the port of each host of `DB_HOST` that names none.
    pub db_port: u16,
    /// `DB_NAME`.
    pub db_name: String,
    /// `DB_USER` (a JSON `DB_PASSWORD_SECRET`'s `username` replaces it when `DB_USER` is not
    /// set; see [`SecretSettings::user_from_secret`]).
    pub db_user: String,
    /// `DB_PASSWORD`, `DB_PASSWORD_FILE`, `DB_PASSWORD_COMMAND` or `DB_PASSWORD_SECRET`; see
    /// [`Config::resolve_login`].
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
    /// `RELAY_TRANSPORT:[DELL_RELAY_IP]:DELL_RELAY_PORT`, where mail for the synced domains goes
    /// (`DELL_RELAY_IP` is required: an IP address or a host name, without brackets).
    pub next_hop: NextHop,
    /// `PRESERVE_DOMAINS`: always in `relay_domains`.
    pub preserve_domains: BTreeSet<DomainName>,
    /// `POSTFIX_CONFIG_DIR`.
    pub postfix_config_dir: PathBuf,
    /// `POSTFIX_COMMAND_DIR`.
    pub postfix_command_dir: PathBuf,
    /// `POSTFIX_COMMAND_PREFIX`, split on whitespace (no shell quoting).
    pub postfix_command_prefix: Vec<String>,
    /// `TRANSPORT_FILE`, by default `POSTFIX_CONFIG_DIR/transport`.
    pub transport_file: PathBuf,
    /// `MAP_TYPE`, lower case; `None` means Postfix's `default_database_type`.
    pub map_type: Option<String>,
    /// `RELAY_DOMAINS_MODE`.
    pub relay_domains_mode: RelayDomainsMode,
    /// `RELAY_DOMAINS_MAP`, by default `POSTFIX_CONFIG_DIR/relay_domains`.
    pub relay_domains_map: PathBuf,
    /// `RECIPIENTS_QUERY`: the valid recipients, one text column; `None` (the default, or an
    /// empty value) leaves recipient validation off.
    pub recipients_query: Option<String>,
    /// `RECIPIENTS_MAP`, by default `POSTFIX_CONFIG_DIR/relay_recipients`: the source of the
    /// table `relay_recipient_maps` names, kept by relay-sync when `recipients_query` is set.
    pub recipients_map: PathBuf,
    /// `BACKUP_DIR`.
    pub backup_dir: PathBuf,
    /// `BACKUP_KEEP`, at least 1.
    pub backup_keep: usize,
    /// `LOG_FILE`; `-` means standard output (a container's log), see
    /// [`Config::logs_to_stdout`].
    pub log_file: PathBuf,
    /// `STATE_DIR`.
    pub state_dir: PathBuf,
    /// `LOCK_FILE`, by default `STATE_DIR/relay-sync.lock`.
    pub lock_file: PathBuf,
    /// `MAX_REMOVE_PERCENT`, 0 to 100.
    pub max_remove_percent: u8,
    /// `ALLOW_EMPTY`.
    pub allow_empty: bool,
    /// `COMMAND_TIMEOUT`: how long any command relay-sync runs may take before its process
    /// group is killed (SPEC §11).
    pub command_timeout: Duration,
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
    /// `ALERT_SNS_TOPIC_ARN` with `ALERT_SNS_REGION` and `ALERT_SNS_ENDPOINT`: alerts published to
    /// an Amazon SNS topic. Only a build with the `aws` feature accepts it.
    pub alert_sns: Option<SnsSettings>,
    /// `ALERT_AFTER_FAILURES`, at least 1.
    pub alert_after_failures: u32,
    /// `METRICS_FILE`: a Prometheus textfile-collector file written after every run; `None`
    /// writes none.
    pub metrics_file: Option<PathBuf>,
    /// `ALERT_AFTER_SECONDS`: in watch mode, how long failures must last before an alert
    /// (the time `ALERT_AFTER_FAILURES` cron runs take).
    pub alert_after: Duration,
    /// `POLL_INTERVAL`: how often the watcher polls the change signal.
    pub poll_interval: Duration,
    /// `RECONCILE_INTERVAL`: the watcher's full sync at least this often, whatever the signal
    /// says; also the longest back-off of polls during a database outage.
    pub reconcile_interval: Duration,
}

/// Where SNS alerts go. It holds no credential: those come from AWS's standard chain when an
/// alert is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsSettings {
    /// `ALERT_SNS_TOPIC_ARN`: `arn:aws:sns:REGION:ACCOUNT:NAME`, a standard topic.
    pub topic_arn: String,
    /// `ALERT_SNS_REGION`, by default the region in the topic's ARN.
    pub region: String,
    /// `ALERT_SNS_ENDPOINT`: the SNS endpoint to use instead of the region's (a VPC endpoint,
    /// or a stand-in for tests).
    pub endpoint: Option<String>,
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
    /// `DB_PASSWORD_SECRET`: a secret in AWS Secrets Manager, the password or RDS-style JSON.
    /// Only a build with the `aws` feature accepts it.
    Secret(SecretSettings),
}

/// Where the database password is read from in AWS Secrets Manager. It holds no credential:
/// those come from AWS's standard chain when the secret is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSettings {
    /// `DB_PASSWORD_SECRET`: the secret's ARN or name, as `GetSecretValue` is asked for it.
    pub id: String,
    /// `DB_PASSWORD_SECRET_REGION`, by default the region in the secret's ARN; `None` (a name
    /// without the key) leaves it to AWS's standard chain (`AWS_REGION`, profiles, instance
    /// metadata).
    pub region: Option<String>,
    /// `DB_PASSWORD_SECRET_ENDPOINT`: the Secrets Manager endpoint to use instead of the
    /// region's (a VPC endpoint, or a stand-in for tests).
    pub endpoint: Option<String>,
    /// Whether a JSON secret's `username` is the database user: `DB_USER` is not set.
    pub user_from_secret: bool,
}

impl PasswordSource {
    /// Where the password comes from, for a message: the key and the file or command, never
    /// the password itself.
    pub fn describe(&self) -> String {
        match self {
            PasswordSource::None => "no password".to_owned(),
            PasswordSource::Literal(_) => NAME.db_password.to_owned(),
            PasswordSource::File(path) => format!("{} {}", NAME.db_password_file, path.display()),
            PasswordSource::Command(command) => {
                format!("{} `{command}`", NAME.db_password_command)
            }
            PasswordSource::Secret(settings) => {
                format!("{} {}", NAME.db_password_secret, settings.id)
            }
        }
    }
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
    /// The config file or `DB_PASSWORD_FILE` is not a file relay-sync may read: a FIFO or a
    /// device (which would hang a run or feed it without end), a link someone other than root
    /// made, or a file past its size limit. The refusal names the file and what to run.
    #[error(transparent)]
    Refused(relay_fs::FsError),
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
        relay_fs::shell_word(path)
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The config file, or a file or directory it names that root acts on, may be changed
    /// by someone other than root (or, for a secret, read by them).
    #[error(
        "{what} {} is {problem}: relay-sync runs as root and trusts it, so it must be root's alone; run `{fix}`",
        path.display()
    )]
    Untrusted {
        /// Which setting names it: `config file`, `DB_PASSWORD_FILE`, …
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, with its mode.
        problem: String,
        /// The command that fixes it.
        fix: String,
    },
    /// A program a command key runs as root (`DB_PASSWORD_COMMAND`, `ALERT_COMMAND`, the
    /// first word of `POSTFIX_COMMAND_PREFIX`), its interpreter, or a `PATH` directory searched
    /// for it, may be changed by someone other than root.
    #[error(
        "{key}'s {role} {} is {problem}: relay-sync runs {key} as root, so it must be root's alone; run `{fix}`",
        path.display()
    )]
    UntrustedCommand {
        /// The key whose command it is.
        key: &'static str,
        /// What the file is to the command: `program`, `interpreter`, `PATH directory`.
        role: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, with its mode.
        problem: String,
        /// The command that fixes it.
        fix: String,
    },
    /// A shell command whose first program cannot be told, and so cannot be vetted.
    #[error(
        "{key} cannot be vetted: {reason}; relay-sync runs it as root and checks the program it runs first, so start it with that program's path or name, unquoted (or put the commands in a script root owns, and name the script)"
    )]
    Unvetted {
        /// The key: `DB_PASSWORD_COMMAND` or `ALERT_COMMAND`.
        key: &'static str,
        /// Why, naming the first word (never the whole command, which may hold a token).
        reason: String,
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
    /// None of the required keys is set anywhere: the sample config file as shipped, or no
    /// configuration at all. A configuration error like the others (the binary exits 2 and
    /// records nothing); its own variant so that it names every key to set at once.
    #[error(
        "not configured: set {} in {}{}",
        and_list(keys.iter()),
        path.display(),
        if *file_found {
            String::new()
        } else {
            format!(
                " (which does not exist) or as {}",
                and_list(keys.iter().map(|key| format!("{ENV_PREFIX}{key}")))
            )
        }
    )]
    NotConfigured {
        /// The required keys.
        keys: Vec<&'static str>,
        /// The configuration file.
        path: PathBuf,
        /// Whether that file exists.
        file_found: bool,
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
        expected: String,
    },
    /// More than one of `DB_PASSWORD`, `DB_PASSWORD_FILE`, `DB_PASSWORD_COMMAND`,
    /// `DB_PASSWORD_SECRET`.
    #[error(
        "{first_key} ({first}) and {second_key} ({second}) are both set: keep only one of DB_PASSWORD, DB_PASSWORD_FILE, DB_PASSWORD_COMMAND and DB_PASSWORD_SECRET"
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
    /// The recipient table would be the transport file or map mode's domain table.
    #[error(
        "RECIPIENTS_MAP {} is the {other} {}: recipient validation keeps the addresses in a table of their own; set RECIPIENTS_MAP to another path (by default POSTFIX_CONFIG_DIR/relay_recipients)",
        map.display(),
        path.display()
    )]
    RecipientsTableClash {
        /// `RECIPIENTS_MAP`.
        map: PathBuf,
        /// What it would be: `transport file` (`TRANSPORT_FILE`) or `domain table`
        /// (`RELAY_DOMAINS_MAP`).
        other: &'static str,
        /// That file's path.
        path: PathBuf,
    },
    /// `ALERT_SNS_TOPIC_ARN` is set, but this binary was built without the `aws` feature.
    #[error(
        "ALERT_SNS_TOPIC_ARN is set ({origin}) but this relay-sync was built without AWS support (cargo feature `aws`): install a package built with it, or alert through ALERT_COMMAND or ALERT_EMAIL_TO instead"
    )]
    SnsNotBuilt {
        /// Where `ALERT_SNS_TOPIC_ARN` was set.
        origin: Origin,
    },
    /// `ALERT_SNS_REGION` or `ALERT_SNS_ENDPOINT` without `ALERT_SNS_TOPIC_ARN`.
    #[error(
        "{key} is set ({origin}) but ALERT_SNS_TOPIC_ARN is not: SNS alerts need the topic's ARN"
    )]
    SnsWithoutTopic {
        /// The key that is set.
        key: &'static str,
        /// Where it was set.
        origin: Origin,
    },
    /// `DB_PASSWORD_SECRET` is set, but this binary was built without the `aws` feature.
    #[error(
        "DB_PASSWORD_SECRET is set ({origin}) but this relay-sync was built without AWS support (cargo feature `aws`): install a package built with it, or give the password through DB_PASSWORD_FILE or DB_PASSWORD_COMMAND instead"
    )]
    SecretNotBuilt {
        /// Where `DB_PASSWORD_SECRET` was set.
        origin: Origin,
    },
    /// `DB_PASSWORD_SECRET_REGION` or `DB_PASSWORD_SECRET_ENDPOINT` without `DB_PASSWORD_SECRET`.
    #[error("{key} is set ({origin}) but DB_PASSWORD_SECRET is not: it names the secret to read")]
    SecretWithoutId {
        /// The key that is set.
        key: &'static str,
        /// Where it was set.
        origin: Origin,
    },
    /// `DB_PASSWORD_SECRET` cannot be read, or holds no password. Never holds the secret's
    /// text.
    #[error("cannot read DB_PASSWORD_SECRET {id}: {detail}")]
    PasswordSecret {
        /// The secret's ARN or name.
        id: String,
        /// What went wrong; for a denial, the IAM action the gateway's role lacks.
        detail: String,
    },
    /// `DB_PASSWORD_FILE` cannot be read.
    #[error("cannot read DB_PASSWORD_FILE {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `DB_PASSWORD_FILE` is empty, `DB_PASSWORD_COMMAND` printed nothing or
    /// `DB_PASSWORD_SECRET` holds nothing.
    #[error("{what} gave an empty password")]
    PasswordEmpty {
        /// `DB_PASSWORD_FILE PATH`, ``DB_PASSWORD_COMMAND `CMD` `` or
        /// `DB_PASSWORD_SECRET ID`.
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

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: impl Iterator<Item = impl fmt::Display>) -> String {
    let items: Vec<String> = items.map(|item| item.to_string()).collect();
    match &items[..] {
        [init @ .., last] if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        _ => items.concat(),
    }
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
    uid: u32,
}

impl Config {
    /// Whether `LOG_FILE` is `-`: log lines go to standard output, in the same format, for a
    /// container's log.
    pub fn logs_to_stdout(&self) -> bool {
        self.log_file.as_os_str() == "-"
    }

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
            Ok(Some(contents)) => Some(contents),
            Ok(None) if !explicit => None,
            Ok(None) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source: not_found(),
                })
            }
            Err(trust::Unreadable::Io(source)) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(trust::Unreadable::Refused(error)) => return Err(ConfigError::Refused(error)),
        };
        let env = env
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()));
        let config = Config::from_parts(path, contents.as_ref(), env)?;
        if contents.is_some() {
            trust::check_parent("config file", path)?;
        }
        config.check_trusted_paths()?;
        Ok(config)
    }

    /// What the config names and root acts on must be root's alone (see `trust`): the
    /// password file (private too), the CA certificate, and the Postfix commands and their
    /// directory.
    fn check_trusted_paths(&self) -> Result<(), ConfigError> {
        use trust::{check_path, Trust};
        if let PasswordSource::File(path) = &self.db_password {
            check_password_file(path)?;
        }
        if let Some(path) = &self.db_tls_ca {
            check_path(NAME.db_tls_ca, path, Trust::File)?;
        }
        check_path(
            NAME.postfix_command_dir,
            &self.postfix_command_dir,
            Trust::File,
        )?;
        for program in ["postconf", "postmap", "postfix"] {
            check_path(
                NAME.postfix_command_dir,
                &self.postfix_command_dir.join(program),
                Trust::File,
            )?;
        }
        self.check_commands(std::env::var_os("PATH").as_deref())
    }

    /// The programs relay-sync runs as root are vetted like the files: see
    /// `trust::command`. `path` is the `PATH` they are found through (the children inherit
    /// relay-sync's own).
    fn check_commands(&self, path: Option<&std::ffi::OsStr>) -> Result<(), ConfigError> {
        use trust::{check_command, Launch};
        if let PasswordSource::Command(command) = &self.db_password {
            check_command(NAME.db_password_command, Launch::Shell(command), path)?;
        }
        if let Some(command) = &self.alert_command {
            check_command(NAME.alert_command, Launch::Shell(command), path)?;
        }
        if let Some(program) = self.postfix_command_prefix.first() {
            check_command(NAME.postfix_command_prefix, Launch::Program(program), path)?;
        }
        Ok(())
    }

    /// Builds the configuration from the file's contents (if it exists) and the environment.
    fn from_parts(
        path: &Path,
        file: Option<&FileContents>,
        env: impl Iterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let mut values = Values::default();
        if let Some(file) = file {
            let lines = source::parse_lines(path, &file.text)?;
            check_permissions(path, file.mode, &lines)?;
            trust::check_mode("config file", path, file.uid, file.mode, trust::Trust::File)?;
            values.add_file_lines(path, lines)?;
        }
        values.add_env(env);
        values.read()?.into_config(&values, path, file.is_some())
    }

    /// What relay-db needs, with the login resolved by [`Config::resolve_login`].
    pub fn db_settings(&self, login: DbLogin) -> DbSettings {
        DbSettings {
            hosts: self.db_host.clone(),
            port: self.db_port,
            database: self.db_name.clone(),
            user: login.user,
            password: login.password,
            query: self.db_query.clone(),
            recipients_query: self.recipients_query.clone(),
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
            recipient_validation: self.recipients_query.is_some(),
        }
    }
}

/// Reads the config file through relay-fs ([`relay_fs::Kind::CONFIG`]: no FIFO or device, no
/// link someone other than root made, at most 1 MiB), opened once, so that the owner and mode
/// checked are those of the descriptor the text was read from; `None` when nothing is there.
fn read_config_file(path: &Path) -> Result<Option<FileContents>, trust::Unreadable> {
    let Some((bytes, meta)) = trust::read_file(relay_fs::Kind::CONFIG, path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        trust::Unreadable::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    Ok(Some(FileContents {
        text,
        mode: meta.permissions().mode(),
        uid: std::os::unix::fs::MetadataExt::uid(&meta),
    }))
}

/// What `open(2)` says of a name with nothing there, for the messages that said it before
/// relay-fs read these files (`No such file or directory (os error 2)`).
fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// `DB_PASSWORD_FILE`, as the config is loaded: what is there may be read (relay-fs: no FIFO,
/// device or link someone else made, at most 64 KiB) and is root's alone and private, as its
/// descriptor says ([`Trust::Secret`](trust::Trust::Secret)), in a directory root's alone. A
/// file missing, or that cannot be opened, is left to the read, which names it.
fn check_password_file(path: &Path) -> Result<(), ConfigError> {
    let reader = match trust::open_file(relay_fs::Kind::PASSWORD_FILE, path) {
        Ok(Some(reader)) => reader,
        Ok(None) | Err(trust::Unreadable::Io(_)) => return Ok(()),
        Err(trust::Unreadable::Refused(error)) => return Err(ConfigError::Refused(error)),
    };
    if let Ok(meta) = reader.metadata() {
        check_secret_mode(path, &meta)?;
    }
    trust::check_parent(NAME.db_password_file, path)
}

/// `DB_PASSWORD_FILE`'s owner and mode, as `fstat` gave them: root's alone and private.
fn check_secret_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    trust::check_mode(
        NAME.db_password_file,
        path,
        meta.uid(),
        meta.mode(),
        trust::Trust::Secret,
    )
}

/// The bytes of `DB_PASSWORD_FILE`, read through relay-fs ([`relay_fs::Kind::PASSWORD_FILE`])
/// and checked again on the descriptor read (the file may have changed since the config was
/// loaded: a watcher reads it at every connection).
pub(crate) fn read_password_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let unreadable = |source| ConfigError::PasswordFile {
        path: path.to_owned(),
        source,
    };
    let (bytes, meta) = match trust::read_file(relay_fs::Kind::PASSWORD_FILE, path) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(unreadable(not_found())),
        Err(trust::Unreadable::Io(source)) => return Err(unreadable(source)),
        Err(trust::Unreadable::Refused(error)) => return Err(ConfigError::Refused(error)),
    };
    check_secret_mode(path, &meta)?;
    Ok(bytes)
}

/// SPEC §5: a file holding a password must be readable by its owner only.
fn check_permissions(path: &Path, mode: u32, lines: &[Line]) -> Result<(), ConfigError> {
    let holds_password = lines
        .iter()
        .any(|line| line.key == NAME.db_password && !line.value.is_empty());
    if holds_password && mode & 0o044 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

impl Raw {
    /// The rules between keys: required keys, derived defaults, the password source, the next
    /// hop, and TLS and map mode's preconditions.
    fn into_config(
        self,
        values: &Values,
        path: &Path,
        file_found: bool,
    ) -> Result<Config, ConfigError> {
        // Every field by name: a key added to the table is a compile error here until a rule
        // or a `Config` field uses it.
        let Raw {
            db_host,
            db_port,
            db_name,
            db_user,
            db_password,
            db_password_file,
            db_password_command,
            db_password_secret,
            db_password_secret_region,
            db_password_secret_endpoint,
            db_query,
            db_tls,
            db_tls_ca,
            db_connect_timeout,
            db_query_timeout,
            dell_relay_ip,
            dell_relay_port,
            relay_transport,
            preserve_domains,
            postfix_config_dir,
            postfix_command_dir,
            postfix_command_prefix,
            transport_file,
            map_type,
            relay_domains_mode,
            relay_domains_map,
            recipients_query,
            recipients_map,
            backup_dir,
            backup_keep,
            log_file,
            state_dir,
            lock_file,
            metrics_file,
            max_remove_percent,
            allow_empty,
            command_timeout,
            alert_command,
            alert_email_to,
            alert_smtp_host,
            alert_smtp_port,
            alert_email_from,
            alert_sns_topic_arn,
            alert_sns_region,
            alert_sns_endpoint,
            alert_after_failures,
            alert_after_seconds,
            poll_interval,
            reconcile_interval,
        } = self;
        let required: Vec<&'static str> = source::keys()
            .filter(|key| key.default == Shown::Required)
            .map(|key| key.name)
            .collect();
        if !required.iter().any(|key| values.is_set(key)) {
            return Err(ConfigError::NotConfigured {
                keys: required,
                path: path.to_owned(),
                file_found,
            });
        }
        let missing = |key: &'static str| ConfigError::Missing {
            key,
            path: path.to_owned(),
            file_found,
        };
        let db_host = db_host.ok_or_else(|| missing(NAME.db_host))?;
        let dell_relay_ip = dell_relay_ip.ok_or_else(|| missing(NAME.dell_relay_ip))?;
        let tls_mode = match db_tls {
            TlsMode::VerifyCa => Some("verify-ca"),
            TlsMode::VerifyFull => Some("verify-full"),
            _ => None,
        };
        if let (Some(mode), None) = (tls_mode, &db_tls_ca) {
            return Err(ConfigError::TlsCaMissing {
                mode,
                origin: values.origin_of(NAME.db_tls),
            });
        }
        // `Host` and `NextHop` share relay_core::is_host_name, so this holds any host read.
        let next_hop = NextHop::new(relay_transport, &dell_relay_ip, dell_relay_port)
            .map_err(|error| values.invalid(NAME.dell_relay_ip, error.to_string()))?;
        // A region key overrides the one in the resource's ARN.
        let alert_sns = aws_resource(
            values,
            &SNS_KEYS,
            alert_sns_topic_arn,
            alert_sns_region,
            alert_sns_endpoint,
            |topic: Arn, region, endpoint| SnsSettings {
                topic_arn: topic.arn,
                region: region.unwrap_or(topic.region),
                endpoint,
            },
        )?;
        // A JSON secret's `username` is the database user unless `DB_USER` is set.
        let secret = aws_resource(
            values,
            &SECRET_KEYS,
            db_password_secret,
            db_password_secret_region,
            db_password_secret_endpoint,
            |secret: SecretRef, region, endpoint| SecretSettings {
                id: secret.id,
                region: region.or(secret.region),
                endpoint,
                user_from_secret: !values.is_set(NAME.db_user),
            },
        )?;
        let or_in =
            |path: Option<PathBuf>, dir: &Path, name: &str| path.unwrap_or_else(|| dir.join(name));
        let config = Config {
            file: file_found.then(|| path.to_owned()),
            db_host,
            db_port,
            db_name,
            db_user,
            db_password: password_source(
                values,
                db_password,
                db_password_file,
                db_password_command,
                secret,
            )?,
            db_query,
            db_tls,
            db_tls_ca,
            db_connect_timeout,
            db_query_timeout,
            next_hop,
            preserve_domains: preserve_domains.unwrap_or_default(),
            postfix_command_dir,
            postfix_command_prefix: postfix_command_prefix.unwrap_or_default(),
            transport_file: or_in(transport_file, &postfix_config_dir, "transport"),
            map_type,
            relay_domains_mode,
            relay_domains_map: or_in(relay_domains_map, &postfix_config_dir, "relay_domains"),
            recipients_query,
            recipients_map: or_in(recipients_map, &postfix_config_dir, "relay_recipients"),
            postfix_config_dir,
            backup_dir,
            backup_keep,
            log_file,
            lock_file: or_in(lock_file, &state_dir, "relay-sync.lock"),
            state_dir,
            max_remove_percent,
            allow_empty,
            command_timeout,
            alert_command,
            alert_email_to,
            alert_smtp_host,
            alert_smtp_port,
            alert_email_from,
            alert_sns,
            alert_after_failures,
            metrics_file,
            alert_after: alert_after_seconds,
            poll_interval,
            reconcile_interval,
        };
        // Both are written and built by relay-sync; one file cannot hold both texts.
        let (map, transport) = (&config.relay_domains_map, &config.transport_file);
        let map_mode = config.relay_domains_mode == RelayDomainsMode::Map;
        if map_mode && same_file(map, transport) {
            return Err(ConfigError::TableIsTransport {
                map: map.clone(),
                transport: transport.clone(),
            });
        }
        // The same for the recipient table, which exists only when the feature is on: with it
        // off, RECIPIENTS_MAP is never read, so no configuration that loads today is refused.
        if config.recipients_query.is_some() {
            let recipients = &config.recipients_map;
            let clash = if same_file(recipients, transport) {
                Some(("transport file", transport))
            } else if map_mode && same_file(recipients, map) {
                Some(("domain table", map))
            } else {
                None
            };
            if let Some((other, path)) = clash {
                return Err(ConfigError::RecipientsTableClash {
                    map: recipients.clone(),
                    other,
                    path: path.clone(),
                });
            }
        }
        Ok(config)
    }
}

/// Whether `a` and `b` are the same path, or (both existing) the same file by a link of either
/// kind.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    a == b
        || matches!(
            (std::fs::metadata(a), std::fs::metadata(b)),
            (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino())
        )
}

/// One AWS resource's keys: the key that names the resource, and its region and endpoint keys,
/// which mean nothing without it.
struct AwsKeys {
    /// The key that names the resource and turns the feature on.
    resource: &'static str,
    /// The region to use instead of the resource's ARN's.
    region: &'static str,
    /// The endpoint to use instead of the region's.
    endpoint: &'static str,
    /// The error for the region or endpoint key set without the resource.
    stray: fn(&'static str, Origin) -> ConfigError,
    /// The error for the resource in a build without the `aws` feature.
    not_built: fn(Origin) -> ConfigError,
}

/// `ALERT_SNS_*`: a build without the `aws` feature refuses the topic rather than ignore it, as
/// alerts the operator counts on would silently go nowhere.
const SNS_KEYS: AwsKeys = AwsKeys {
    resource: NAME.alert_sns_topic_arn,
    region: NAME.alert_sns_region,
    endpoint: NAME.alert_sns_endpoint,
    stray: |key, origin| ConfigError::SnsWithoutTopic { key, origin },
    not_built: |origin| ConfigError::SnsNotBuilt { origin },
};

/// `DB_PASSWORD_SECRET*`: a build without the `aws` feature refuses the secret rather than
/// ignore it, as the password would silently be missing.
const SECRET_KEYS: AwsKeys = AwsKeys {
    resource: NAME.db_password_secret,
    region: NAME.db_password_secret_region,
    endpoint: NAME.db_password_secret_endpoint,
    stray: |key, origin| ConfigError::SecretWithoutId { key, origin },
    not_built: |origin| ConfigError::SecretNotBuilt { origin },
};

/// The settings `build` makes of the AWS resource `keys` name and its region and endpoint keys'
/// values, or `None` when the resource is not set. The region and endpoint keys need the
/// resource, and the resource needs a build with the `aws` feature.
fn aws_resource<R, T>(
    values: &Values,
    keys: &AwsKeys,
    resource: Option<R>,
    region: Option<String>,
    endpoint: Option<String>,
    build: impl FnOnce(R, Option<String>, Option<String>) -> T,
) -> Result<Option<T>, ConfigError> {
    let Some(resource) = resource else {
        let stray = [(keys.region, &region), (keys.endpoint, &endpoint)]
            .into_iter()
            .find_map(|(key, value)| value.as_ref().map(|_| key));
        return stray.map_or(Ok(None), |key| {
            Err((keys.stray)(key, values.origin_of(key)))
        });
    };
    if !cfg!(feature = "aws") {
        return Err((keys.not_built)(values.origin_of(keys.resource)));
    }
    Ok(Some(build(resource, region, endpoint)))
}

/// At most one of `DB_PASSWORD`, `DB_PASSWORD_FILE`, `DB_PASSWORD_COMMAND` and
/// `DB_PASSWORD_SECRET`.
fn password_source(
    values: &Values,
    literal: Option<String>,
    file: Option<PathBuf>,
    command: Option<String>,
    secret: Option<SecretSettings>,
) -> Result<PasswordSource, ConfigError> {
    let set: Vec<(&'static str, PasswordSource)> = [
        literal.map(|password| {
            let source = PasswordSource::Literal(Secret::new(password));
            (NAME.db_password, source)
        }),
        file.map(|path| (NAME.db_password_file, PasswordSource::File(path))),
        command.map(|command| (NAME.db_password_command, PasswordSource::Command(command))),
        secret.map(|secret| (NAME.db_password_secret, PasswordSource::Secret(secret))),
    ]
    .into_iter()
    .flatten()
    .collect();
    match &set[..] {
        [(first_key, _), (second_key, _), ..] => Err(ConfigError::PasswordSources {
            first_key,
            first: values.origin_of(first_key),
            second_key,
            second: values.origin_of(second_key),
        }),
        _ => Ok(set
            .into_iter()
            .next()
            .map_or(PasswordSource::None, |(_, source)| source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::run_password_command;
    use std::fmt::Write as _;
    use std::time::Instant;

    const PATH: &str = "/etc/relay-sync.conf";
    const MINIMAL: &str = "DB_HOST=db.example.net\nDELL_RELAY_IP=100.110.222.53\n";

    /// Loads `text` as the file at [`PATH`] with mode `mode`, plus `env`.
    fn load(text: &str, mode: u32, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file = FileContents {
            text: text.to_owned(),
            mode,
            uid: 0,
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
TRANSPORT_FILE = /etc/postfix-mx/transport.relay
MAP_TYPE = LMDB
RELAY_DOMAINS_MODE = inline
RELAY_DOMAINS_MAP = /etc/postfix-mx/relay_domains.map
RECIPIENTS_QUERY = SELECT address FROM mailboxes WHERE active
RECIPIENTS_MAP = /etc/postfix-mx/relay_recipients.map
BACKUP_DIR = /srv/backup
BACKUP_KEEP = 10
LOG_FILE = /srv/log/relay-sync.log
STATE_DIR = /srv/state
LOCK_FILE = /run/relay-sync.lock
MAX_REMOVE_PERCENT = 20
ALLOW_EMPTY = yes
COMMAND_TIMEOUT = 30.5
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

    /// `ALERT_SNS_*`: the ARN's shape, the region from the ARN, keys that need the ARN, and a
    /// build without the `aws` feature refusing the ARN.
    #[test]
    fn sns_keys() {
        const ARN: &str = "arn:aws:sns:eu-central-1:123456789012:relay-sync-alerts";
        let with = |extra: &str| format!("{MINIMAL}{extra}\n");
        for bad in [
            "arn:aws:sqs:eu-central-1:123456789012:queue",
            "arn:aws:sns:eu-central-1:1234:short-account",
            "arn:aws:sns::123456789012:no-region",
            "arn:aws:sns:eu-central-1:123456789012:alerts.fifo",
            "arn:aws:sns:eu-central-1:123456789012:a:b",
            "relay-sync-alerts",
        ] {
            let error = err(&with(&format!("ALERT_SNS_TOPIC_ARN={bad}")), &[]);
            assert!(
                error.starts_with("invalid ALERT_SNS_TOPIC_ARN")
                    && error.contains("standard topic"),
                "{bad}: {error}"
            );
        }
        let error = err(&with("ALERT_SNS_ENDPOINT=sns.local:4566"), &[]);
        assert!(error.starts_with("invalid ALERT_SNS_ENDPOINT"), "{error}");
        let error = err(&with("ALERT_SNS_ENDPOINT=http://sns.internal:4566"), &[]);
        assert!(
            error.starts_with("invalid ALERT_SNS_ENDPOINT") && error.contains("https://"),
            "{error}"
        );
        let error = err(&with("ALERT_SNS_REGION=eu-west-1"), &[]);
        assert_eq!(
            error,
            "ALERT_SNS_REGION is set (/etc/relay-sync.conf line 3) but ALERT_SNS_TOPIC_ARN is not: SNS alerts need the topic's ARN"
        );
        let text = with(&format!("ALERT_SNS_TOPIC_ARN={ARN}"));
        #[cfg(feature = "aws")]
        {
            let settings = ok(&text, &[]).alert_sns;
            assert_eq!(
                settings,
                Some(SnsSettings {
                    topic_arn: ARN.to_owned(),
                    region: "eu-central-1".to_owned(),
                    endpoint: None,
                })
            );
            let env = [
                ("RELAY_SYNC_ALERT_SNS_REGION", "eu-west-1"),
                ("RELAY_SYNC_ALERT_SNS_ENDPOINT", "http://127.0.0.1:4566"),
            ];
            let settings = ok(&text, &env).alert_sns;
            assert_eq!(
                settings,
                Some(SnsSettings {
                    topic_arn: ARN.to_owned(),
                    region: "eu-west-1".to_owned(),
                    endpoint: Some("http://127.0.0.1:4566".to_owned()),
                })
            );
        }
        #[cfg(not(feature = "aws"))]
        assert_eq!(
            err(&text, &[]),
            "ALERT_SNS_TOPIC_ARN is set (/etc/relay-sync.conf line 3) but this relay-sync was built without AWS support (cargo feature `aws`): install a package built with it, or alert through ALERT_COMMAND or ALERT_EMAIL_TO instead"
        );
    }

    /// `DB_PASSWORD_SECRET*`: an ARN (its region used) or a name, the keys that need it, the
    /// other password sources it excludes, whether DB_USER leaves the user to the secret, and
    /// a build without the `aws` feature refusing it.
    #[test]
    fn secret_keys() {
        const ARN: &str =
            "arn:aws:secretsmanager:eu-central-1:123456789012:secret:relay-sync/db-AbCdEf";
        let with = |extra: &str| format!("{MINIMAL}{extra}\n");
        for bad in [
            "arn:aws:ssm:eu-central-1:123456789012:parameter/relay-sync/db",
            "arn:aws:secretsmanager:eu-central-1:1234:secret:short-account",
            "arn:aws:secretsmanager::123456789012:secret:no-region",
            "arn:aws:secretsmanager:eu-central-1:123456789012:secret:",
            "arn:aws:secretsmanager:eu-central-1:123456789012:key:relay-sync",
            "relay sync db",
            "relay-sync/db;rm",
            &"x".repeat(513),
        ] {
            let error = err(&with(&format!("DB_PASSWORD_SECRET={bad}")), &[]);
            assert!(
                error.starts_with("invalid DB_PASSWORD_SECRET")
                    && error.contains("Secrets Manager secret's ARN"),
                "{bad}: {error}"
            );
        }
        let error = err(&with("DB_PASSWORD_SECRET_ENDPOINT=secrets.local:4566"), &[]);
        assert!(
            error.starts_with("invalid DB_PASSWORD_SECRET_ENDPOINT"),
            "{error}"
        );
        let error = err(&with("DB_PASSWORD_SECRET_REGION=eu-west-1"), &[]);
        assert_eq!(
            error,
            "DB_PASSWORD_SECRET_REGION is set (/etc/relay-sync.conf line 3) but DB_PASSWORD_SECRET is not: it names the secret to read"
        );
        let text = with(&format!("DB_PASSWORD_SECRET={ARN}"));
        #[cfg(feature = "aws")]
        {
            // One password source only (without the feature, the secret is refused first).
            let error = err(
                &with(&format!(
                    "DB_PASSWORD_FILE=/run/pw\nDB_PASSWORD_SECRET={ARN}"
                )),
                &[],
            );
            assert_eq!(
                error,
                "DB_PASSWORD_FILE (/etc/relay-sync.conf line 3) and DB_PASSWORD_SECRET (/etc/relay-sync.conf line 4) are both set: keep only one of DB_PASSWORD, DB_PASSWORD_FILE, DB_PASSWORD_COMMAND and DB_PASSWORD_SECRET"
            );
            let secret = |text: &str, env: &[(&str, &str)]| match ok(text, env).db_password {
                PasswordSource::Secret(settings) => settings,
                other => panic!("{other:?}"),
            };
            let expected = SecretSettings {
                id: ARN.to_owned(),
                region: Some("eu-central-1".to_owned()),
                endpoint: None,
                user_from_secret: true,
            };
            assert_eq!(secret(&text, &[]), expected);
            assert_eq!(
                ok(&text, &[]).db_password.describe(),
                format!("DB_PASSWORD_SECRET {ARN}")
            );
            // DB_USER set anywhere, even to its default, keeps the user.
            for (text, env) in [
                (
                    with(&format!("DB_USER=relay_sync\nDB_PASSWORD_SECRET={ARN}")),
                    &[][..],
                ),
                (text.clone(), &[("RELAY_SYNC_DB_USER", "reader")][..]),
            ] {
                assert!(!secret(&text, env).user_from_secret, "{text} {env:?}");
            }
            let env = [
                ("RELAY_SYNC_DB_PASSWORD_SECRET_REGION", "eu-west-1"),
                (
                    "RELAY_SYNC_DB_PASSWORD_SECRET_ENDPOINT",
                    "http://127.0.0.1:4566",
                ),
            ];
            assert_eq!(
                secret(&text, &env),
                SecretSettings {
                    region: Some("eu-west-1".to_owned()),
                    endpoint: Some("http://127.0.0.1:4566".to_owned()),
                    ..expected
                }
            );
            // A name leaves the region to the key, or to AWS's standard chain.
            let name = with("DB_PASSWORD_SECRET=relay-sync/db");
            assert_eq!(secret(&name, &[]).region, None);
            assert_eq!(
                secret(
                    &name,
                    &[("RELAY_SYNC_DB_PASSWORD_SECRET_REGION", "ap-northeast-1")]
                )
                .region
                .as_deref(),
                Some("ap-northeast-1")
            );
        }
        #[cfg(not(feature = "aws"))]
        assert_eq!(
            err(&text, &[]),
            "DB_PASSWORD_SECRET is set (/etc/relay-sync.conf line 3) but this relay-sync was built without AWS support (cargo feature `aws`): install a package built with it, or give the password through DB_PASSWORD_FILE or DB_PASSWORD_COMMAND instead"
        );
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

    /// `RECIPIENTS_QUERY` is off when unset or empty and taken as written otherwise;
    /// `RECIPIENTS_MAP` follows POSTFIX_CONFIG_DIR and must be absolute.
    #[test]
    fn recipient_keys() {
        assert_eq!(ok(MINIMAL, &[]).recipients_query, None);
        assert_eq!(
            ok(&format!("{MINIMAL}RECIPIENTS_QUERY=\n"), &[]).recipients_query,
            None
        );
        let query = |c: &Config| format!("{:?}", c.recipients_query);
        check(
            "RECIPIENTS_QUERY=SELECT email FROM users WHERE enabled = 1",
            query,
            "Some(\"SELECT email FROM users WHERE enabled = 1\")",
        );
        let map = |c: &Config| c.recipients_map.display().to_string();
        check(
            "POSTFIX_CONFIG_DIR=/srv/pf",
            map,
            "/srv/pf/relay_recipients",
        );
        check("RECIPIENTS_MAP=/srv/r.map", map, "/srv/r.map");
        let error = err(&format!("{MINIMAL}RECIPIENTS_MAP=relay_recipients\n"), &[]);
        assert!(error.starts_with("invalid RECIPIENTS_MAP"), "{error}");
        let settings = ok(
            &format!("{MINIMAL}RECIPIENTS_QUERY=SELECT email FROM users\n"),
            &[],
        )
        .db_settings(DbLogin {
            user: "relay_sync".into(),
            password: None,
        });
        assert_eq!(
            settings.recipients_query.as_deref(),
            Some("SELECT email FROM users")
        );
        assert_eq!(
            ok(MINIMAL, &[])
                .db_settings(DbLogin {
                    user: "relay_sync".into(),
                    password: None,
                })
                .recipients_query,
            None
        );
    }

    #[test]
    fn recipients_map_must_be_a_table_of_its_own() {
        const ON: &str = "RECIPIENTS_QUERY=SELECT email FROM users\n";
        let transport =
            format!("{MINIMAL}{ON}TRANSPORT_FILE=/srv/pf/t\nRECIPIENTS_MAP=/srv/pf/t\n");
        assert_eq!(
            err(&transport, &[]),
            "RECIPIENTS_MAP /srv/pf/t is the transport file /srv/pf/t: recipient validation \
             keeps the addresses in a table of their own; set RECIPIENTS_MAP to another path (by \
             default POSTFIX_CONFIG_DIR/relay_recipients)"
        );
        let domains = format!(
            "{MINIMAL}{ON}RELAY_DOMAINS_MODE=map\nRELAY_DOMAINS_MAP=/srv/pf/d\nRECIPIENTS_MAP=/srv/pf/d\n"
        );
        assert!(
            err(&domains, &[])
                .starts_with("RECIPIENTS_MAP /srv/pf/d is the domain table /srv/pf/d:"),
            "{}",
            err(&domains, &[])
        );
        // Inline mode never writes the domain table.
        ok(&domains.replace("=map", "=inline"), &[]);
        // The same file through a symbolic link.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("transport");
        std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("relay_recipients");
        std::os::unix::fs::symlink(&file, &link).unwrap_or_else(|e| panic!("{e}"));
        let linked = format!(
            "{MINIMAL}{ON}TRANSPORT_FILE={}\nRECIPIENTS_MAP={}\n",
            file.display(),
            link.display()
        );
        assert!(err(&linked, &[]).contains("is the transport file"));
        // With the feature off RECIPIENTS_MAP is never used, so it refuses nothing.
        ok(&transport.replace(ON, ""), &[]);
    }

    #[test]
    fn values() {
        for (host, written) in [
            ("2001:db8::1", "2001:db8::1"),
            ("mailbox", "mailbox"),
            ("mail-box.example.com.", "mail-box.example.com"),
            ("mailserver_dovecot", "mailserver_dovecot"),
        ] {
            let config = ok(&format!("DB_HOST=db\nDELL_RELAY_IP={host}"), &[]);
            assert_eq!(
                config.next_hop.to_string(),
                format!("smtp:[{written}]:2525")
            );
        }
        let next_hop = |c: &Config| c.next_hop.to_string();
        check(
            "RELAY_TRANSPORT=SMTP",
            next_hop,
            "smtp:[100.110.222.53]:2525",
        );
        check(
            "RELAY_TRANSPORT=lmtp\nDELL_RELAY_PORT=24",
            next_hop,
            "lmtp:[100.110.222.53]:24",
        );
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
        let preserve = |c: &Config| {
            let names: Vec<&str> = c.preserve_domains.iter().map(DomainName::as_str).collect();
            names.join("|")
        };
        check("PRESERVE_DOMAINS=b.com,a.com", preserve, "a.com|b.com");
        check(
            "PRESERVE_DOMAINS=A.com a.com. xn--caf-dma.example",
            preserve,
            "a.com|xn--caf-dma.example",
        );
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

    /// `DB_HOST` lists hosts in order, each with its own port or at `DB_PORT`; anything else
    /// is refused, naming the entry.
    #[test]
    fn db_host_is_a_list_tried_in_order() {
        let config = ok(
            "DB_HOST = replica.example, primary.example:3307 10.0.0.5 [2001:db8::5]:3308 2001:db8::6\n\
             DB_PORT=3310\nDELL_RELAY_IP=10.1.1.1\n",
            &[],
        );
        assert_eq!(
            config.db_host,
            [
                DbHost::new("replica.example"),
                DbHost::new("primary.example").with_port(3307),
                DbHost::new("10.0.0.5"),
                DbHost::new("2001:db8::5").with_port(3308),
                DbHost::new("2001:db8::6"),
            ]
        );
        let settings = config.db_settings(DbLogin {
            user: config.db_user.clone(),
            password: None,
        });
        let addrs: Vec<String> = settings
            .hosts
            .iter()
            .map(|h| h.addr(settings.port))
            .collect();
        assert_eq!(
            addrs,
            [
                "replica.example:3310",
                "primary.example:3307",
                "10.0.0.5:3310",
                "[2001:db8::5]:3308",
                "[2001:db8::6]:3310"
            ]
        );
        let env = ok(MINIMAL, &[("RELAY_SYNC_DB_HOST", "a.example,b.example")]);
        assert_eq!(
            env.db_host,
            [DbHost::new("a.example"), DbHost::new("b.example")]
        );
        for (value, named) in [
            ("replica.example, primary.example:0", "primary.example:0"),
            ("replica.example:port", "replica.example:port"),
            ("a.example, a.example", "a.example is listed twice"),
            ("[2001:db8::5", "[2001:db8::5"),
            ("[db.example]:3306", "[db.example]:3306"),
            ("bad_host!", "bad_host!"),
            ("smtp:[10.0.0.1]:25", "smtp:[10.0.0.1]:25"),
        ] {
            let error = err(&format!("DB_HOST={value}\nDELL_RELAY_IP=10.1.1.1\n"), &[]);
            assert!(error.contains("DB_HOST"), "{value}: {error}");
            assert!(error.contains(named), "{value}: {error}");
        }
    }

    #[test]
    fn comments_blanks_and_whitespace() {
        let text = "\u{feff}# comment\n  ; another\n\n   \n\tDB_HOST =  db  \r\n  # indented comment\nDELL_RELAY_IP=10.1.1.1\n";
        let config = ok(text, &[]);
        assert_eq!(config.db_host, [DbHost::new("db")]);
        assert_eq!(config.next_hop.to_string(), "smtp:[10.1.1.1]:2525");
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

    /// `f`'s result, or a failure when it has not returned within 20 seconds: a read that hangs
    /// on a FIFO fails the test instead of stalling it (the thread is left blocked; the test
    /// process ends it).
    fn within_20_s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || send.send(f()));
        receive
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("hung: still reading after 20 s")
    }

    /// The refusal's text, with `dir` shown as `DIR`, or a panic naming what came instead.
    fn refused(result: Result<impl fmt::Debug, ConfigError>, dir: &Path) -> String {
        match result {
            Err(error @ ConfigError::Refused(_)) => {
                error.to_string().replace(&*dir.to_string_lossy(), "DIR")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn fifo(path: &Path) {
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo(3) touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    }

    /// A FIFO at the config path (root's, mode 0600, so the owner and mode checks pass). Before:
    /// `relay-sync check`, a sync, anything that loads the config blocked in open(2) until
    /// something wrote to it, that is, forever under cron.
    #[test]
    fn a_fifo_as_the_config_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.conf");
        fifo(&path);
        let load = {
            let path = path.clone();
            within_20_s(move || Config::load(Some(&path), Vec::<(OsString, OsString)>::new()))
        };
        assert_eq!(
            refused(load, dir.path()),
            "refusing DIR/relay-sync.conf: the config file is a FIFO (named pipe), not a regular \
             file; check that DIR/relay-sync.conf is the file meant: the config file must be a \
             regular file (replace it with one, or name one in the setting that names it)"
        );
    }

    /// A FIFO at `DB_PASSWORD_FILE`: refused as the config is loaded (so `check` and every
    /// command say so), and by the read itself when one appears later. Before: the load passed
    /// and every run that read the password hung.
    #[test]
    fn a_fifo_as_the_password_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("db-password");
        fifo(&password);
        let config = dir.path().join("relay-sync.conf");
        let text = format!("{MINIMAL}DB_PASSWORD_FILE={}\n", password.display());
        std::fs::write(&config, text).unwrap();
        let load =
            within_20_s(move || Config::load(Some(&config), Vec::<(OsString, OsString)>::new()));
        let expected = "refusing DIR/db-password: DB_PASSWORD_FILE is a FIFO (named pipe), not a \
                        regular file; check that DIR/db-password is the file meant: \
                        DB_PASSWORD_FILE must be a regular file (replace it with one, or name \
                        one in the setting that names it)";
        assert_eq!(refused(load, dir.path()), expected);
        let resolve = within_20_s(move || {
            with_source(PasswordSource::File(password))
                .resolve_login()
                .map(|login| login.password.is_some())
        });
        assert_eq!(refused(resolve, dir.path()), expected);
    }

    /// A config or password file past its limit (1 MiB, 64 KiB), or a root-owned link to
    /// `/dev/zero`, is refused before it is read, and the operator is asked to check the file,
    /// never to delete it. Before: the config was read whole, and a link to `/dev/zero` took
    /// memory until the kernel killed something; a password file was read whole as well.
    #[test]
    fn an_endless_or_oversize_config_or_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let no_env = Vec::<(OsString, OsString)>::new;
        let config = dir.path().join("relay-sync.conf");
        let mut text = format!("{MINIMAL}#");
        text.push_str(&"x".repeat((1 << 20) - text.len()));
        std::fs::write(&config, &text).unwrap();
        Config::load(Some(&config), no_env()).unwrap();
        text.push('\n');
        std::fs::write(&config, &text).unwrap();
        assert_eq!(
            refused(Config::load(Some(&config), no_env()), dir.path()),
            "refusing DIR/relay-sync.conf: the config file holds 1048577 bytes, more than the \
             1 MiB it may hold; check that DIR/relay-sync.conf is the file meant: the config \
             file may hold at most 1 MiB"
        );

        let zero = dir.path().join("zero.conf");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let load = {
            let zero = zero.clone();
            within_20_s(move || Config::load(Some(&zero), Vec::<(OsString, OsString)>::new()))
        };
        assert_eq!(
            refused(load, dir.path()),
            "refusing DIR/zero.conf: the config file is a character device, not a regular \
             file; check that DIR/zero.conf is the file meant: the config file must be a regular \
             file (replace it with one, or name one in the setting that names it)"
        );

        let password = dir.path().join("db-password");
        std::fs::write(&password, vec![b'p'; 64 << 10]).unwrap();
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        let resolve = || {
            with_source(PasswordSource::File(password.clone()))
                .resolve_login()
                .map(|login| login.password.is_some())
        };
        assert!(resolve().unwrap());
        std::fs::write(&password, vec![b'p'; (64 << 10) + 1]).unwrap();
        assert_eq!(
            refused(resolve(), dir.path()),
            "refusing DIR/db-password: DB_PASSWORD_FILE holds 65537 bytes, more than the 64 KiB \
             it may hold; check that DIR/db-password is the file meant: DB_PASSWORD_FILE may hold \
             at most 64 KiB"
        );
        let text = format!("{MINIMAL}DB_PASSWORD_FILE={}\n", password.display());
        std::fs::write(&config, text).unwrap();
        assert!(refused(Config::load(Some(&config), no_env()), dir.path()).contains("65537 bytes"));

        std::fs::remove_file(&password).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &password).unwrap();
        let resolve = within_20_s(move || {
            with_source(PasswordSource::File(password))
                .resolve_login()
                .map(|login| login.password.is_some())
        });
        assert!(
            refused(resolve, dir.path()).contains("DB_PASSWORD_FILE is a character device"),
            "device"
        );
    }

    /// The owner and mode checks of the config and password files are those of the descriptor
    /// read, through a link root made to a file root owns (configuration management's
    /// `/etc/relay-sync.conf -> /etc/relay-sync/site.conf`), which keeps working; a link another
    /// user made is refused, wherever it points.
    #[test]
    fn a_link_root_made_is_followed_and_checked_on_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let no_env = Vec::<(OsString, OsString)>::new;
        let password = dir.path().join("db-password.real");
        std::fs::write(&password, "s3cret\n").unwrap();
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        let password_link = dir.path().join("db-password");
        std::os::unix::fs::symlink(&password, &password_link).unwrap();
        let real = dir.path().join("site.conf");
        let text = format!("{MINIMAL}DB_PASSWORD_FILE={}\n", password_link.display());
        std::fs::write(&real, text).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("relay-sync.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let config = Config::load(Some(&link), no_env()).unwrap();
        assert_eq!(config.file.as_deref(), Some(link.as_path()));
        let login = config.resolve_login().unwrap();
        assert_eq!(login.password, Some(Secret::new("s3cret")));

        // The target's mode is what counts, at the load and at the read.
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = config.resolve_login().unwrap_err();
        assert!(matches!(error, ConfigError::Untrusted { .. }), "{error}");
        let error = Config::load(Some(&link), no_env()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("readable by group or others (mode 0640)"),
            "{error}"
        );
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = Config::load(Some(&link), no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::Untrusted { .. }), "{error}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();

        assert!(
            running_as_root(),
            "this test chowns a link to nobody: run it as root"
        );
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let text = refused(Config::load(Some(&link), no_env()), dir.path());
        assert!(
            text.starts_with(
                "refusing DIR/relay-sync.conf: a symbolic link to DIR/site.conf owned by uid 65534"
            ),
            "{text}"
        );
    }

    fn running_as_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn missing_required_keys() {
        insta::assert_snapshot!(errors(&[
            ("DELL_RELAY_IP=10.0.0.1", &[]),
            ("DB_HOST=db", &[]),
            ("DB_HOST=\nDELL_RELAY_IP=10.0.0.1", &[]),
            (MINIMAL, &[("RELAY_SYNC_DB_HOST", "")]),
        ]));
        // Nothing at all: not configured, and the file that was looked for does not exist.
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
            "COMMAND_TIMEOUT=0",
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
            "PRESERVE_DOMAINS=kuma8088.com, mail_box.example",
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
            (
                MINIMAL,
                &[("RELAY_SYNC_PRESERVE_DOMAINS", "a.example,b\u{7}.example")]
            ),
        ]));
    }

    #[test]
    fn env_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let file = FileContents {
            text: MINIMAL.to_owned(),
            mode: 0o600,
            uid: 0,
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
        // Owner-only is fine, and so is execute for others.
        for mode in [0o600, 0o400, 0o700, 0o611] {
            write(&with_password, mode);
            let config = Config::load(Some(&path), no_env()).unwrap();
            assert_eq!(config.file.as_deref(), Some(path.as_path()));
        }
        // Writing is not: the file names commands root runs (issue "hardened" finding 3).
        write(&with_password, 0o622);
        let error = Config::load(Some(&path), no_env()).unwrap_err();
        assert!(matches!(error, ConfigError::Untrusted { .. }), "{error}");
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
                .resolve_login()
                .map(|login| login.password)
                .unwrap(),
            None
        );
        let secret = Secret::new("s3cret");
        let resolved = with_source(PasswordSource::Literal(secret.clone()))
            .resolve_login()
            .map(|login| login.password);
        assert_eq!(resolved.unwrap(), Some(secret));
    }

    #[test]
    fn password_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-password");
        let resolve = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            // A secret's mode, as the read checks on its descriptor.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            with_source(PasswordSource::File(path.clone()))
                .resolve_login()
                .map(|login| login.password)
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
                .resolve_login()
                .map(|login| login.password)
                .unwrap_err(),
        );
        insta::assert_snapshot!(format!("{empty}\n{latin1}\n{missing}"));
    }

    #[test]
    fn password_command() {
        let resolve = |command: &str| {
            with_source(PasswordSource::Command(command.to_owned()))
                .resolve_login()
                .map(|login| login.password)
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
        let db = config.db_settings(DbLogin {
            user: config.db_user.clone(),
            password: Some(Secret::new("pw")),
        });
        assert_eq!(db.hosts, [DbHost::new("db.example.net")]);
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
    }

    #[test]
    fn suggestions() {
        assert_eq!(source::suggest("DB_HOTS"), Some("DB_HOST"));
        assert_eq!(source::suggest("db_host"), Some("DB_HOST"));
        assert_eq!(source::suggest("LOGFILE"), Some("LOG_FILE"));
        assert_eq!(source::suggest("DATABASE_HOST"), None);
    }

    /// The rendered page is roff that groff reads without a warning, and its text names every
    /// key with its default and example.
    #[test]
    fn the_man_page_documents_every_key_from_the_same_table() {
        let page = man_page("0.0.0");
        assert!(
            page.contains("\n.TH RELAY-SYNC.CONF 5 \"\" \"relay-sync 0.0.0\" \"File Formats\"\n"),
            "{page}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.conf.5");
        std::fs::write(&path, &page).unwrap();
        // Plain text (no overstriking), no hyphenation, and wide lines, so that words are whole.
        let groff = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-rHY=0", "-rLL=300n", "-P-cbou"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap_or_else(|error| panic!("groff: {error}: apt-get install -y groff-base"));
        let stderr = String::from_utf8_lossy(&groff.stderr);
        assert!(groff.status.success() && stderr.is_empty(), "{stderr}");
        let text = String::from_utf8_lossy(&groff.stdout);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for key in source::keys() {
            assert!(text.contains(key.name), "{} missing:\n{text}", key.name);
        }
        for expected in [
            "DB_HOST",
            "Host name or IP address of MariaDB; or several, comma separated, tried in order",
            "Required. Example: 192.0.2.10",
            "TCP port of MariaDB (of each DB_HOST that names none). Default: 3306.",
            "the admin panel's MariaDB",
            "Default: $POSTFIX_CONFIG_DIR/transport.",
            "Example: docker exec mailserver-postfix",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
    }

    #[test]
    fn only_the_password_is_secret() {
        let secret: Vec<&str> = source::keys()
            .filter(|key| key.secret)
            .map(|key| key.name)
            .collect();
        assert_eq!(secret, ["DB_PASSWORD"]);
    }

    /// A default the table shows is the default `Config` has: setting a key to it changes
    /// nothing. And every example is a value its key accepts.
    #[test]
    fn table_shows_the_real_defaults() {
        let defaults = ok(MINIMAL, &[]);
        assert_eq!(defaults.command_timeout, relay_process::DEFAULT_TIMEOUT);
        for key in source::keys() {
            if let Shown::Value(value) = key.default {
                let config = ok(&format!("{MINIMAL}{}={value}\n", key.name), &[]);
                assert_eq!(config, defaults, "{}={value} is not the default", key.name);
            }
            if let Some(Sample::Example(value) | Sample::Shipped(value)) = key.sample {
                let mut raw = Raw::default();
                assert_eq!(raw.set(key.name, value), Ok(()), "{}={value}", key.name);
            }
        }
    }

    /// The sample config file as shipped sets nothing site-specific: every key it sets is a
    /// packaged path, and loading it says what to set. With the required keys' examples
    /// uncommented, it loads.
    #[test]
    fn the_sample_config_runs_nothing_until_configured() {
        let sample = sample_config();
        let set: Vec<&str> = sample
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .collect();
        assert_eq!(
            set,
            ["DB_PASSWORD_FILE=/opt/mailserver/config/relay-sync.db-password"]
        );
        assert_eq!(
            err(&sample, &[]),
            "not configured: set DB_HOST and DELL_RELAY_IP in /etc/relay-sync.conf"
        );
        let configured = sample
            .replace("#DB_HOST=192.0.2.10", "DB_HOST=192.0.2.10")
            .replace("#DELL_RELAY_IP=192.0.2.25", "DELL_RELAY_IP=192.0.2.25");
        let config = ok(&configured, &[]);
        assert_eq!(config.db_host, [DbHost::new("192.0.2.10")]);
        assert_eq!(config.next_hop.to_string(), "smtp:[192.0.2.25]:2525");
        assert_eq!(
            config.db_password,
            PasswordSource::File("/opt/mailserver/config/relay-sync.db-password".into())
        );
        // One required key set, by the file or the environment: the other is missing, as
        // before, and not "not configured".
        let one = ok(
            &configured.replace("DB_HOST=192.0.2.10", "#"),
            &[("RELAY_SYNC_DB_HOST", "db")],
        );
        assert_eq!(one.db_host, [DbHost::new("db")]);
        let error = err(&sample, &[("RELAY_SYNC_DELL_RELAY_IP", "10.0.0.1")]);
        assert!(error.starts_with("DB_HOST is not set"), "{error}");
        // An empty value is no value.
        let error = err(&sample, &[("RELAY_SYNC_DB_HOST", "")]);
        assert!(error.starts_with("not configured"), "{error}");
    }

    /// Whether `token` (a word of a setting's value) names no live host: an IPv4 address in
    /// a documentation range (RFC 5737) or loopback, a name under `example` (RFC 2606:
    /// `.example`, `example.com`, `.net`, `.org`), an ARN of AWS's documentation account;
    /// anything else that is not a host name (a path, a number, a word) passes.
    fn is_documentation_value(token: &str) -> bool {
        let token = token.trim_matches(|c: char| "[]\"'<>".contains(c));
        if let Some(account) = token.strip_prefix("arn:").map(|arn| arn.split(':').nth(3)) {
            return account == Some("123456789012");
        }
        let host = token.rsplit_once('@').map_or(token, |(_, host)| host);
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            let [a, b, c, _] = ip.octets();
            return matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
                || ip.is_loopback();
        }
        let looks_like_a_name = host.contains('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && host
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() > 1 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        !looks_like_a_name
            || host.ends_with(".example")
            || ["example.com", "example.net", "example.org"]
                .iter()
                .any(|doc| host == *doc || host.ends_with(&format!(".{doc}")))
    }

    /// The container files relay-sync ships (compose.yaml, the ECS task definition, the
    /// Containerfile, the wrapper) set no live value either, as the sample config file: every
    /// `RELAY_SYNC_*` value they set names only documentation hosts, domains and accounts, and
    /// no IPv4 address in them is a real one.
    #[test]
    fn the_shipped_container_files_carry_no_live_values() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging");
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("container"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files.push(root.join("relay-sync.conf"));
        assert!(files.len() > 3, "{files:?}");
        let mut settings: Vec<(String, String)> = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let name = file.display();
            // Every IPv4 address anywhere in the file, values and comments alike.
            for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                if word.parse::<std::net::Ipv4Addr>().is_ok() {
                    assert!(is_documentation_value(word), "{name}: {word}");
                }
            }
            // `RELAY_SYNC_KEY: value` (compose) and `KEY=value` (the sample config).
            for line in text.lines().map(str::trim) {
                let setting = line
                    .split_once(": ")
                    .filter(|(key, _)| key.starts_with(ENV_PREFIX))
                    .or_else(|| line.split_once('=').filter(|_| !line.starts_with('#')));
                if let Some((key, value)) = setting {
                    settings.push((format!("{name} {key}"), value.to_owned()));
                }
            }
            if file.extension().is_some_and(|ext| ext == "json") {
                let task: serde_json::Value = serde_json::from_str(&text).unwrap();
                for container in task["containerDefinitions"].as_array().unwrap() {
                    for variable in container["environment"].as_array().into_iter().flatten() {
                        settings.push((
                            format!("{name} {}", variable["name"]),
                            variable["value"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
        assert!(
            settings.iter().any(|(key, _)| key.contains("json")),
            "{settings:?}"
        );
        for (key, value) in &settings {
            for token in value.split(|c: char| c == ',' || c.is_whitespace()) {
                assert!(
                    is_documentation_value(token),
                    "{key} is set to {value:?}: a live value; use a documentation one \
                     (192.0.2.x, example.com)"
                );
            }
        }
    }

    /// The sample config file, docs/configuration.md's table and relay-sync.conf(5) are rendered
    /// from the table. With `UPDATE_EXPECT=1` the test rewrites them instead of failing.
    #[test]
    fn documentation_is_rendered_from_the_table() {
        const BEGIN: &str =
            "<!-- BEGIN config keys: generated from crates/relay-ops/src/config/keys.rs -->\n";
        const END: &str = "<!-- END config keys -->";
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1");
        let check = |file: &str, expected: String, actual: String| {
            if expected == actual {
                return;
            }
            let path = root.join(file);
            if update {
                std::fs::write(&path, expected).unwrap();
            } else {
                panic!(
                    "{file} is not what crates/relay-ops/src/config/keys.rs renders; \
                     regenerate it with `UPDATE_EXPECT=1 cargo test -p relay-ops config::`"
                );
            }
        };
        let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
        check(
            "packaging/relay-sync.conf",
            sample_config(),
            read("packaging/relay-sync.conf"),
        );
        check(
            "docs/relay-sync.conf.5",
            man_page(env!("CARGO_PKG_VERSION")),
            read("docs/relay-sync.conf.5"),
        );
        let page = read("docs/configuration.md");
        let (before, rest) = page
            .split_once(BEGIN)
            .expect("docs/configuration.md has the BEGIN marker");
        let (_, after) = rest
            .split_once(END)
            .expect("docs/configuration.md has the END marker");
        let rendered = format!("{before}{BEGIN}{}{END}{after}", markdown_table());
        check("docs/configuration.md", rendered, page);
    }
}
