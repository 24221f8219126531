//! The Postfix side of relay-sync: `postconf`, `postmap`, `postfix reload`, the transport file,
//! and backups.
//!
//! Two traits form the boundary the sync engine depends on. [`PostfixRead`] only looks;
//! [`PostfixWrite`] changes things. A dry run is handed something that is only `PostfixRead`, so
//! it cannot write by construction. [`PostfixCli`] implements both with the real commands; tests
//! of the engine use an in-memory implementation instead.
//!
//! Architecture invariant: every file this crate writes is replaced atomically (temporary file in
//! the same directory, fsync, rename, directory fsync) and keeps the previous owner and mode; map
//! databases are built under a temporary name and renamed into place, never rebuilt in place.
//! No file or directory is read, created, changed or chmodded through a path someone other than
//! root controls: every file goes through [`relay_fs`].
#![warn(clippy::print_stdout, clippy::print_stderr)]
// Unit tests set files up by path in temporary directories of their own.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Read-only access to the Postfix configuration.
pub trait PostfixRead {
    /// The raw value of `relay_domains` as `postconf -h relay_domains` prints it (no `$`
    /// expansion), without the trailing newline.
    fn relay_domains(&self) -> Result<String, PostfixError>;

    /// The transport map's source file, or `None` when it does not exist yet.
    fn read_transport(&self) -> Result<Option<String>, PostfixError>;

    /// Whether the transport map's database exists and is not older than its source file.
    /// A missing source file counts as fresh (there is nothing to build).
    fn transport_map_is_fresh(&self) -> Result<bool, PostfixError>;

    /// `postmap -q KEY TYPE:TRANSPORT_FILE`: the value Postfix would find, or `None`.
    fn lookup_transport(&self, key: &str) -> Result<Option<String>, PostfixError>;

    /// Looks up several keys in the transport map: the value of each, in order, or `None`.
    /// The default runs [`PostfixRead::lookup_transport`] once per key.
    fn lookup_transports(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        keys.iter().map(|key| self.lookup_transport(key)).collect()
    }

    /// The transport map as Postfix names it, e.g. `hash:/etc/postfix/transport`, for logs.
    fn transport_map_name(&self) -> String;

    /// Map mode's relay-domains table: its map type and source file (`RELAY_DOMAINS_MAP`).
    fn relay_domains_table(&self) -> (String, PathBuf);

    /// The relay-domains table's source file, or `None` when it does not exist.
    fn read_relay_domains_map(&self) -> Result<Option<String>, PostfixError>;

    /// Whether the relay-domains table's database exists and is not older than its source.
    /// A missing source file counts as fresh.
    fn relay_domains_map_is_fresh(&self) -> Result<bool, PostfixError>;

    /// The raw value of `relay_recipient_maps` (`postconf -h`), without the trailing newline.
    fn relay_recipient_maps(&self) -> Result<String, PostfixError>;

    /// Recipient validation's table: its map type and source file (`RECIPIENTS_MAP`).
    fn recipients_table(&self) -> (String, PathBuf);

    /// The recipients table's source file, or `None` when it does not exist.
    fn read_recipients_map(&self) -> Result<Option<String>, PostfixError>;

    /// Whether the recipients table's database exists and is not older than its source. A
    /// missing source file counts as fresh.
    fn recipients_map_is_fresh(&self) -> Result<bool, PostfixError>;

    /// The first line of the recipients table's source (at most 4 KiB of it), or `None` when it
    /// does not exist or cannot be read: enough to tell relay-sync's table by its header
    /// without reading a million lines. The default reads the whole source.
    fn recipients_map_header(&self) -> Option<String> {
        let text = self.read_recipients_map().ok()??;
        text.lines().next().map(str::to_owned)
    }

    /// Looks up several keys in the recipients table (`postmap -q`): the value of each, in
    /// order, or `None`.
    fn lookup_recipients(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError>;

    /// How an operator runs `program` with `args` on this Postfix instance, for a fix a log
    /// line suggests ([`PostfixSettings::shell_command`]). The default is the plain command.
    fn shell_command(&self, program: &str, args: &[&str]) -> String {
        let mut words = vec![program];
        words.extend(args);
        shlex::try_join(words.iter().copied()).unwrap_or_else(|_| words.join(" "))
    }
}

/// Changing the Postfix configuration. Every method either completes or leaves the previous
/// version of what it touches in place.
pub trait PostfixWrite: PostfixRead {
    /// Saves the current `relay_domains` value and transport file (SPEC §6) under a fresh stamp,
    /// then deletes generations beyond `BACKUP_KEEP`.
    fn backup(&self, relay_domains: &str, transport: Option<&str>) -> Result<Backup, PostfixError>;

    /// Atomically replaces the transport file with `text` and rebuilds its map database under a
    /// temporary name, renaming both into place.
    fn write_transport(&self, text: &str) -> Result<(), PostfixError>;

    /// Rebuilds the map database from the current source file (used when the database is older
    /// than its source), under a temporary name like [`PostfixWrite::write_transport`].
    fn rebuild_transport_map(&self) -> Result<(), PostfixError>;

    /// Atomically replaces the relay-domains table's source with `text` and rebuilds its
    /// database under a temporary name, as [`PostfixWrite::write_transport`] does.
    fn write_relay_domains_map(&self, text: &str) -> Result<(), PostfixError>;

    /// Builds, ahead and at once where the implementation can, the databases that the coming
    /// [`PostfixWrite::write_transport`], [`PostfixWrite::write_relay_domains_map`] and
    /// [`PostfixWrite::write_recipients_map`] calls
    /// with exactly these texts will install. Nothing is installed here, and the writes keep
    /// their order and their contract; a write of another text builds its own. A failed build
    /// is reported by the write that would have used it. The default builds nothing ahead.
    fn prepare_maps(
        &self,
        transport: Option<&str>,
        relay_domains_map: Option<&str>,
        recipients_map: Option<&str>,
    ) {
        let _ = (transport, relay_domains_map, recipients_map);
    }

    /// Removes what [`PostfixWrite::prepare_maps`] built and no write installed (a run that
    /// failed before installing it).
    fn discard_prepared(&self) {}

    /// Saves the relay-domains table's source as part of the backup generation `stamp`
    /// (returned by [`PostfixWrite::backup`]) and returns the file written.
    fn backup_relay_domains_map(&self, stamp: &str, text: &str) -> Result<PathBuf, PostfixError>;

    /// `postconf -e "relay_domains = VALUE"`.
    fn set_relay_domains(&self, value: &str) -> Result<(), PostfixError>;

    /// Atomically replaces the recipients table's source with `text` and rebuilds its database
    /// under a temporary name, as [`PostfixWrite::write_transport`] does.
    fn write_recipients_map(&self, text: &str) -> Result<(), PostfixError>;

    /// `postconf -e "relay_recipient_maps = VALUE"`.
    fn set_relay_recipient_maps(&self, value: &str) -> Result<(), PostfixError>;

    /// Saves `relay_recipient_maps` and the recipients table's source (when there is one) as
    /// part of the backup generation `stamp`, and returns the files written.
    fn backup_recipients(
        &self,
        stamp: &str,
        relay_recipient_maps: &str,
        table: Option<&str>,
    ) -> Result<Vec<PathBuf>, PostfixError>;

    /// `postfix reload`.
    fn reload(&self) -> Result<(), PostfixError>;
}

/// One backup generation, as written by [`PostfixWrite::backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// `YYYYMMDD-HHMMSS`, with a `-N` suffix when that second was already taken.
    pub stamp: String,
    /// The files written, for the `Backup created: PATH` log lines.
    pub files: Vec<PathBuf>,
}

/// Where Postfix and its files are.
#[derive(Debug, Clone)]
pub struct PostfixSettings {
    /// `POSTFIX_CONFIG_DIR`; passed as `-c DIR` to every command unless it is `/etc/postfix`.
    pub config_dir: PathBuf,
    /// `POSTFIX_COMMAND_DIR`: where `postconf`, `postmap` and `postfix` are.
    pub command_dir: PathBuf,
    /// `POSTFIX_COMMAND_PREFIX`, split into words (e.g. `docker exec mailserver-postfix`); empty
    /// when Postfix runs on this host.
    pub command_prefix: Vec<String>,
    /// `TRANSPORT_FILE`, the transport map's source.
    pub transport_file: PathBuf,
    /// `MAP_TYPE`; `None` means Postfix's `default_database_type`.
    pub map_type: Option<String>,
    /// `BACKUP_DIR`, created with mode 0700 when missing.
    pub backup_dir: PathBuf,
    /// `BACKUP_KEEP`: generations kept of each kind.
    pub backup_keep: usize,
    /// `RECIPIENTS_QUERY` is set: the startup postconf also reads `relay_recipient_maps`.
    /// Without it, that postconf is the same command as before recipient validation existed.
    pub recipient_validation: bool,
    /// `COMMAND_TIMEOUT`: how long one Postfix command (with its prefix) may run before its
    /// process group is killed and it fails with [`PostfixError::Timeout`].
    pub command_timeout: Duration,
}

/// `POSTFIX_COMMAND_DIR`'s usual value: a suggested command names its program without a path
/// there, since root's `PATH` has it.
const DEFAULT_COMMAND_DIR: &str = "/usr/sbin";

impl PostfixSettings {
    /// The command line an operator types to run `program` with `args` against this Postfix
    /// instance: `POSTFIX_COMMAND_PREFIX` first, the program (by its full path unless
    /// `POSTFIX_COMMAND_DIR` is `/usr/sbin`), `-c POSTFIX_CONFIG_DIR` unless it is
    /// `/etc/postfix`, then `args`, each word quoted for a POSIX shell where it needs it. Every
    /// Postfix command relay-sync suggests is written with it, so that a command copied from a
    /// log line or a check changes this instance's `main.cf` and no other.
    ///
    /// ```
    /// # use std::path::PathBuf;
    /// # let settings = relay_postfix::PostfixSettings {
    /// #     config_dir: PathBuf::from("/etc/postfix-out"), command_dir: PathBuf::from("/usr/sbin"),
    /// #     command_prefix: vec!["docker".into(), "exec".into(), "mx".into()],
    /// #     transport_file: PathBuf::from("/etc/postfix-out/transport"), map_type: None,
    /// #     backup_dir: PathBuf::new(), backup_keep: 10, recipient_validation: false,
    /// #     command_timeout: std::time::Duration::from_secs(120),
    /// # };
    /// assert_eq!(
    ///     settings.shell_command("postconf", &["-e", "transport_maps = hash:/etc/postfix-out/transport"]),
    ///     "docker exec mx postconf -c /etc/postfix-out -e 'transport_maps = hash:/etc/postfix-out/transport'"
    /// );
    /// ```
    pub fn shell_command(&self, program: &str, args: &[&str]) -> String {
        let program = if self.command_dir == Path::new(DEFAULT_COMMAND_DIR) {
            program.to_owned()
        } else {
            self.command_dir
                .join(program)
                .to_string_lossy()
                .into_owned()
        };
        let config_dir = self.config_dir.to_string_lossy();
        let mut words: Vec<&str> = self.command_prefix.iter().map(String::as_str).collect();
        words.push(&program);
        if self.config_dir != Path::new(cli::DEFAULT_CONFIG_DIR) {
            words.extend(["-c", &config_dir]);
        }
        words.extend(args);
        // Only a NUL byte cannot be quoted, and no setting or Postfix value holds one; the
        // words are then shown as they are rather than not at all.
        shlex::try_join(words.iter().copied()).unwrap_or_else(|_| words.join(" "))
    }
}

/// What went wrong talking to Postfix or its files. Each variant names the command or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostfixError {
    /// A Postfix command is not where `POSTFIX_COMMAND_DIR` says.
    #[error("{path} not found: set POSTFIX_COMMAND_DIR to the directory holding postconf, postmap and postfix, or install postfix (apt-get install postfix)")]
    CommandMissing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, as run.
        command: String,
        /// Exit status or signal.
        status: String,
        /// What it wrote to stderr (trimmed), or stdout when stderr was empty.
        stderr: String,
    },
    /// A command ran past `COMMAND_TIMEOUT`; it and everything it started were killed. The
    /// engine treats it like any failed step: rolled back, critical for `postfix reload`.
    #[error("`{command}` still running after {}s; its process group was killed", after.as_secs_f64())]
    Timeout {
        /// The command line, as run.
        command: String,
        /// The limit it ran into.
        after: Duration,
    },
    /// A command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `write`, `rename into place`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not what it must be (not UTF-8, an unknown map type, …).
    #[error("{path}: {detail}")]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// relay-fs refused a file or could not read or write it (a link someone else planted, a
    /// FIFO, a backup in a directory others can write, …); it names the file and the fix.
    /// Boxed: the error travels in every `Result` of a run, and stays as small as it was.
    #[error(transparent)]
    File(Box<relay_fs::FsError>),
}

impl From<relay_fs::FsError> for PostfixError {
    fn from(error: relay_fs::FsError) -> PostfixError {
        PostfixError::File(Box::new(error))
    }
}

mod backup;
mod cli;
mod mark;
mod postconf_cache;
mod prefix;

impl From<relay_process::RunError> for PostfixError {
    fn from(error: relay_process::RunError) -> PostfixError {
        match error {
            relay_process::RunError::Timeout { command, after } => {
                PostfixError::Timeout { command, after }
            }
            relay_process::RunError::Spawn { command, source }
            | relay_process::RunError::Wait { command, source } => {
                PostfixError::Spawn { command, source }
            }
            // A kind of failure the runner learns later is still a command that did not run.
            other => PostfixError::Spawn {
                command: other.command().to_owned(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

pub use backup::{
    finish_backups, list_backups, newest_backup_sequence, read_backup, read_generation,
    BackupContents, BackupGeneration, Origin, GENERATIONS_INDEX,
};

pub use cli::PostfixCli;
pub use mark::{MarkReader, PostfixMark};

/// A [`PostfixError::Io`] naming what was being done to which file.
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
    source: std::io::Error,
) -> PostfixError {
    PostfixError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config_dir: &str, command_dir: &str, prefix: &[&str]) -> PostfixSettings {
        PostfixSettings {
            config_dir: PathBuf::from(config_dir),
            command_dir: PathBuf::from(command_dir),
            command_prefix: prefix.iter().map(|word| (*word).to_owned()).collect(),
            transport_file: PathBuf::from("/etc/postfix/transport"),
            map_type: None,
            backup_dir: PathBuf::new(),
            backup_keep: 10,
            recipient_validation: false,
            command_timeout: Duration::from_secs(120),
        }
    }

    /// A suggested command names the instance only when it is not Postfix's default, goes
    /// through the prefix, and is quoted so that a shell passes each word as it is (`$` in a
    /// Postfix value included).
    #[test]
    fn suggested_commands_name_the_instance_and_the_prefix() {
        let reload = ["reload"];
        let set = ["-e", "transport_maps = hash:$config_directory/transport"];
        for (settings, program, args, wanted) in [
            (
                settings("/etc/postfix", "/usr/sbin", &[]),
                "postfix",
                &reload[..],
                "postfix reload",
            ),
            (
                settings("/etc/postfix-out", "/usr/sbin", &[]),
                "postfix",
                &reload,
                "postfix -c /etc/postfix-out reload",
            ),
            (
                settings("/etc/postfix", "/usr/sbin", &[]),
                "postconf",
                &set,
                "postconf -e 'transport_maps = hash:$config_directory/transport'",
            ),
            (
                settings("/etc/postfix", "/opt/postfix/sbin", &["podman", "exec", "mx"]),
                "postfix",
                &reload,
                "podman exec mx /opt/postfix/sbin/postfix reload",
            ),
            (
                settings("/srv/post fix", "/usr/sbin", &["docker", "exec", "mx"]),
                "postmap",
                &["-q", "a.example", "hash:/srv/post fix/transport"],
                "docker exec mx postmap -c '/srv/post fix' -q a.example 'hash:/srv/post fix/transport'",
            ),
        ] {
            assert_eq!(settings.shell_command(program, args), wanted);
        }
    }
}
