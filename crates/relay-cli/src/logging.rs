//! The log lines of SPEC §8: `[YYYY-MM-DD HH:MM:SS] LEVEL: message`, local time, appended to
//! `LOG_FILE` and copied to stderr.
//!
//! Everything logs through `tracing`; this module installs the one subscriber that turns events
//! into lines: tracing-subscriber's `fmt` layer, with [`LineFormat`] and [`LineFields`] for
//! the format and its `MakeWriterExt` combinators choosing where each line goes. The rules:
//!
//! - LEVEL is `ERROR`, `WARN` or `INFO`; `DEBUG` (which also stands for `TRACE`) only appears
//!   when the maximum level given to [`init`] admits it (`--verbose`), and only from
//!   relay-sync's own crates: the libraries' events (the AWS SDK's above all, whose DEBUG lines
//!   print the credentials it resolved, access key ID included) stop at `WARN` ([`filter`]).
//! - A line is the event's message followed by its other fields as ` key=value` (string values
//!   that are empty or hold spaces are quoted). Spans are not shown.
//! - Control characters, and the Unicode line separators and bidirectional controls, are
//!   escaped (`\n`, `\r`, `\t`, `\u{1b}`) by relay-core's one log escaper
//!   ([`relay_core::escape_log_line`]), so a hostile value such as a domain name read from the
//!   database can never start a forged line or rewrite a terminal.
//! - Each line is written with a single `write` call, and the log file is opened with
//!   `O_APPEND`, so concurrent runs appending to the same file never interleave mid-line.
//! - The log file is created with mode 0640 and its missing parent directory with 0750. It is
//!   opened through relay-fs, never blocking: a FIFO, a device or someone else's link at
//!   `LOG_FILE` is refused, named on stderr, and the lines go to stderr only (relay-ops then
//!   refuses the sync itself, so the refusal is recorded and alerted). A file that cannot be
//!   opened for another reason is an error for the caller to handle; a later write failure is
//!   reported once on stderr.
//! - A rotated log file is followed: before each line, the file at `LOG_FILE` is compared
//!   (device and inode) with the one open, and when logrotate renamed it (or it is gone) the
//!   line goes to the file now at `LOG_FILE`, created 0640 when missing. A watcher runs for
//!   weeks, and would otherwise write to `relay-sync.log.1` until `delaycompress` deletes it.
//!   `SIGHUP` needs nothing of its own for that: its line is the first one written after it.
//!   A `SIGHUP` whose config names another `LOG_FILE` moves the lines to that file
//!   ([`switch_log_file`]); a change to or from `-` (standard output) waits for a restart, and
//!   says so.
//! - stderr gets every line on a terminal and only `ERROR` lines otherwise, so cron's mail
//!   carries failures and nothing else ([`StderrMode`]).

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use relay_core::{escape_for_log, escape_log_line};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{ChronoLocal, FormatTime};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// Mode of a log file relay-sync creates.
const LOG_FILE_MODE: u32 = 0o640;
/// Mode of a log directory relay-sync creates.
const LOG_DIR_MODE: u32 = 0o750;
/// The timestamp of a line, in local time.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Which lines go to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StderrMode {
    /// Every line: a person is watching.
    All,
    /// `ERROR` lines only: cron mails whatever reaches stderr.
    ErrorsOnly,
    /// stderr is the systemd journal: every line, with the `<N>` priority prefix journald
    /// reads and no timestamp of its own (the journal keeps the time).
    Journal,
}

impl StderrMode {
    /// [`StderrMode::Journal`] when stderr is the stream systemd named in `JOURNAL_STREAM`,
    /// [`StderrMode::All`] when it is a terminal, [`StderrMode::ErrorsOnly`] otherwise.
    pub(crate) fn detect() -> StderrMode {
        if stderr_is_journal() {
            StderrMode::Journal
        } else if io::stderr().is_terminal() {
            StderrMode::All
        } else {
            StderrMode::ErrorsOnly
        }
    }

    /// The most verbose level stderr takes of the lines the subscriber lets through.
    fn max_level(self) -> Level {
        match self {
            StderrMode::All | StderrMode::Journal => Level::TRACE,
            StderrMode::ErrorsOnly => Level::ERROR,
        }
    }
}

/// Whether stderr is the stream systemd named in `JOURNAL_STREAM`: then journald reads a
/// line's priority from a `<N>` prefix, and a line without one is stored as info.
pub(crate) fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::env::var("JOURNAL_STREAM").ok().is_some_and(|stream| {
        // fstat(2) of our own stderr: the journal's stream is that device and inode.
        std::fs::metadata("/proc/self/fd/2")
            .is_ok_and(|meta| journal_stream_is(&stream, meta.dev(), meta.ino()))
    })
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoggingError {
    /// The log file's directory is missing and cannot be created.
    #[error("cannot create log directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The log file cannot be opened for appending (or created).
    #[error("cannot open log file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// What is at `LOG_FILE` is not a file relay-sync may append to (a FIFO, a device, a link
    /// someone else made): relay-fs names it and the fix.
    #[error(transparent)]
    Refused(relay_fs::FsError),
    /// [`init`] was called twice, or something else installed a subscriber.
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the process-wide subscriber: lines up to `max_level` (`Level::INFO`, or
/// `Level::DEBUG` when verbose) go to `log_file` when given (standard output when it is `-`),
/// and to stderr as `stderr` says (nothing when the log is standard output).
///
/// Call it once, after the configuration is loaded; before that, report errors with
/// [`early_error`].
pub(crate) fn init(
    log_file: Option<&Path>,
    stderr: StderrMode,
    max_level: Level,
) -> Result<(), LoggingError> {
    let (file, stderr_writer) = match log_file {
        // `LOG_FILE=-` (a container): every line to stdout, the same format; stderr gets none,
        // or a container log would show each ERROR twice.
        Some(path) if path.as_os_str() == "-" => {
            (BoxMakeWriter::new(io::stdout), BoxMakeWriter::new(io::sink))
        }
        Some(path) => match open_log_file(path) {
            Ok(file) => {
                let log = Arc::new(LogFile::new(file, path));
                // Only the first `init` installs a subscriber; a second one fails below.
                let _ = INSTALLED.set(Arc::clone(&log));
                (BoxMakeWriter::new(log), BoxMakeWriter::new(io::stderr))
            }
            // Never a FIFO that would hang every run before it records anything: the operator
            // hears of it on stderr, and relay-ops refuses (and records) the sync itself.
            Err(LoggingError::Refused(error)) => {
                early_error(&format!("{error}; logging to stderr only"));
                (BoxMakeWriter::new(io::sink), BoxMakeWriter::new(io::stderr))
            }
            Err(error) => return Err(error),
        },
        None => (BoxMakeWriter::new(io::sink), BoxMakeWriter::new(io::stderr)),
    };
    let subscriber = subscriber(file, stderr_writer, stderr, max_level, local_time());
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadyInstalled)
}

/// The log file [`init`] installed, when the lines go to one: [`switch_log_file`] moves them.
static INSTALLED: OnceLock<Arc<LogFile>> = OnceLock::new();

/// What [`switch_log_file`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Switched {
    /// The path is the one in use: nothing to do.
    Same,
    /// The next lines go to the new file.
    Moved,
    /// No file is in use (the lines go to standard output or stderr only): the new path is
    /// taken at the next start.
    NotAFile,
}

/// Moves the log lines to `path` from the next line on (a SIGHUP whose config names another
/// `LOG_FILE`). The new file is opened as the first one was; when that fails, the lines keep
/// going to the file in use and the error says why.
pub(crate) fn switch_log_file(path: &Path) -> Result<Switched, LoggingError> {
    match INSTALLED.get() {
        Some(log) => log.switch(path),
        None => Ok(Switched::NotAFile),
    }
}

/// Prints `[timestamp] ERROR: message` to stderr, for errors before [`init`] (a configuration
/// error, an unusable log file); `<3>ERROR: message` when stderr is the journal, as the
/// subscriber writes it, so that `journalctl -p err` finds the errors an operator makes first.
pub(crate) fn early_error(message: &str) {
    let line = if stderr_is_journal() {
        journal_line(Level::ERROR, message)
    } else {
        format_line(&local_time(), Level::ERROR, message)
    };
    // Nothing better can be done when stderr itself fails.
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Prints `text`, a message of several lines that is not a log line (clap's report of a usage
/// error), to stderr for the journal: each line that is not empty with the `<N>` prefix of
/// `level`, since journald stores every line as an entry of its own.
pub(crate) fn journal_text(level: Level, text: &str) {
    let text: String = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("<{}>{}\n", priority(level), escape_log_line(line)))
        .collect();
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// `<N>LEVEL: message\n`, the message escaped: a line as [`LineFormat`] writes it for the
/// journal, for a message that is not an event.
fn journal_line(level: Level, message: &str) -> String {
    let mut line = format!("<{}>{}: ", priority(level), level_word(level));
    let _ = EscapeLine(&mut line).write_str(message);
    line.push('\n');
    line
}

/// The syslog priority journald reads from a line's `<N>` prefix: 3 error, 4 warning, 6 info,
/// 7 debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Opens `path` for appending; creates it with mode 0640 (and its missing parent directory
/// with 0750) when it does not exist. Both modes are set explicitly, whatever the umask. An
/// existing file keeps its mode. relay-fs opens it and creates the directory: never through a
/// symbolic link someone other than root made (`O_NOFOLLOW`, unless root owns the link), never
/// blocking (`O_NONBLOCK`), and only a regular file ([`LoggingError::Refused`] otherwise).
pub(crate) fn open_log_file(path: &Path) -> Result<File, LoggingError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        relay_fs::create_dir(parent, LOG_DIR_MODE).map_err(|error| match error {
            relay_fs::FsError::Io { path, source, .. } => LoggingError::CreateDir { path, source },
            other => LoggingError::Refused(other),
        })?;
    }
    relay_fs::open_append(path, LOG_FILE_MODE).map_err(|error| match error {
        relay_fs::FsError::Io { source, .. } => LoggingError::Open {
            path: path.to_owned(),
            source,
        },
        other => LoggingError::Refused(other),
    })
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, as systemd sets it) names the stream with `dev`
/// and `ino`: only then is stderr the journal, not a pipe a child inherited.
fn journal_stream_is(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// The clock of every line: `YYYY-MM-DD HH:MM:SS` in local time.
fn local_time() -> ChronoLocal {
    ChronoLocal::new(TIMESTAMP_FORMAT.to_owned())
}

/// The subscriber [`init`] installs, with its writers and clock as parameters so that tests
/// can capture the lines and fix the time.
///
/// Events above `max_level` are dropped before they are formatted. Each line that is left is
/// formatted once into the `fmt` layer's buffer and handed to `file` and then to `stderr`
/// (which takes only `ERROR` lines unless `mode` is [`StderrMode::All`]), each with one
/// `write_all`. A failing `file` does not keep the line from stderr: the `fmt` layer's `and`
/// writes to both before it looks at either result.
fn subscriber<F, E, T>(
    file: F,
    stderr: E,
    mode: StderrMode,
    max_level: Level,
    timer: T,
) -> impl Subscriber + Send + Sync
where
    F: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    E: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    T: FormatTime + Send + Sync + 'static,
{
    // Under the journal, stderr gets lines of its own format from a second layer; otherwise the
    // file's lines are copied to it.
    let (writer, journal) = if mode == StderrMode::Journal {
        let journal = tracing_subscriber::fmt::layer()
            .event_format(LineFormat {
                timer: (),
                journal: true,
            })
            .fmt_fields(LineFields)
            .with_writer(stderr);
        (BoxMakeWriter::new(file), Some(journal))
    } else {
        let writer = file.and(stderr.with_max_level(mode.max_level()));
        (BoxMakeWriter::new(writer), None)
    };
    let layer = tracing_subscriber::fmt::layer()
        .event_format(LineFormat {
            timer,
            journal: false,
        })
        .fmt_fields(LineFields)
        .with_writer(writer)
        // The log file reports its own failure, once; the layer would repeat it on every line.
        .log_internal_errors(false);
    tracing_subscriber::registry()
        .with(filter(max_level))
        .with(layer)
        .with(journal)
}

/// Which events become lines: relay-sync's own (targets `relay_…`: its crates and the
/// `relay_sync` binary) up to `max_level`, every library's up to `WARN` whatever `max_level`
/// is. A library's DEBUG event is written for its developers, not vetted for a log file: the
/// AWS SDK's print the resolved credentials (the secret redacted, the access key ID not), and
/// `--verbose` is for relay-sync's own steps.
fn filter(max_level: Level) -> Targets {
    Targets::new()
        .with_default(LevelFilter::WARN.min(LevelFilter::from_level(max_level)))
        .with_target("relay_", max_level)
}

/// The open log file. A failed write is reported once on stderr, naming the file: the run goes
/// on (its lines still reach stderr), and a full disk does not print a notice per line.
#[derive(Debug)]
struct LogFile {
    /// The file lines go to, replaced when `path` names another file ([`LogFile::follow`]).
    open: RwLock<OpenLog>,
    /// `LOG_FILE`; another one after a SIGHUP ([`LogFile::switch`]).
    path: RwLock<PathBuf>,
    /// Whether a write failure was already reported.
    failed: AtomicBool,
    /// Where the failure goes: [`early_error`], except in tests.
    report: fn(&str),
}

/// Which file a path names: its device and inode, or `None` when there is none.
type Identity = Option<(u64, u64)>;

/// The open log file and what is known of the file at its path.
#[derive(Debug)]
struct OpenLog {
    file: File,
    /// The open file's identity.
    identity: Identity,
    /// What the path named when reopening it last failed: not tried again until that changes,
    /// so a path that cannot be opened costs a `stat` per line, not an `open` and a report.
    refused: Option<Identity>,
}

impl LogFile {
    fn new(file: File, path: &Path) -> LogFile {
        LogFile {
            open: RwLock::new(OpenLog {
                identity: identity_of(&file),
                file,
                refused: None,
            }),
            path: RwLock::new(path.to_owned()),
            failed: AtomicBool::new(false),
            report: early_error,
        }
    }

    fn path(&self) -> PathBuf {
        self.path.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Moves the lines to `path` (see [`switch_log_file`]).
    fn switch(&self, path: &Path) -> Result<Switched, LoggingError> {
        let mut current = self.path.write().unwrap_or_else(|p| p.into_inner());
        if *current == path {
            return Ok(Switched::Same);
        }
        let file = open_log_file(path)?;
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = OpenLog {
            identity: identity_of(&file),
            file,
            refused: None,
        };
        *current = path.to_owned();
        // A write failure of the old file says nothing about the new one.
        self.failed.store(false, Ordering::Relaxed);
        Ok(Switched::Moved)
    }

    /// Reopens `path` when it no longer names the open file: logrotate renamed it (and maybe
    /// created a new one), or someone removed it. The new file is opened like the first one
    /// ([`open_log_file`]: no link but root's own followed, created 0640). When that fails, the
    /// lines keep going to the open file and the failure is reported once per file seen.
    fn follow(&self) {
        use std::os::unix::fs::MetadataExt;
        // stat(2), not lstat(2): a root-owned link in LOG_FILE names its target's file, which
        // is the one open.
        let path = self.path();
        let now = match std::fs::metadata(&path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            // Nothing can be told (e.g. a directory became unsearchable): keep the open file.
            Err(_) => return,
        };
        let current = |open: &OpenLog| {
            (open.identity.is_some() && now == open.identity) || open.refused == Some(now)
        };
        if current(&self.open.read().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        // Another thread may have reopened it while this one waited for the lock, or a SIGHUP
        // moved the lines to another path.
        if current(&open) || self.path() != path {
            return;
        }
        match open_log_file(&path) {
            Ok(file) => {
                *open = OpenLog {
                    identity: identity_of(&file),
                    file,
                    refused: None,
                };
            }
            Err(error) => {
                open.refused = Some(now);
                (self.report)(&format!(
                    "{error}; log lines keep going to the file opened before it was rotated"
                ));
            }
        }
    }
}

/// The device and inode of an open file (`None` if fstat(2) fails: then every line tries to
/// reopen the path until a file whose identity is known is open).
fn identity_of(file: &File) -> Identity {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|meta| (meta.dev(), meta.ino()))
}

/// `Arc<LogFile>` is the `fmt` layer's writer factory: each line borrows the shared file. A
/// `&File` writes without a lock of its own (the read lock only keeps a rotation from closing
/// it meanwhile): with `O_APPEND` the kernel puts each `write` at the end of the file as a
/// whole, whoever else appends.
impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.follow();
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        (&open.file).write(buf).inspect_err(|error| {
            if !self.failed.swap(true, Ordering::Relaxed) {
                (self.report)(&format!(
                    "cannot write log file {}: {error}",
                    self.path().display()
                ));
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The event format of SPEC §8: `[timestamp] LEVEL: message key=value…`, escaped, one line.
/// For the journal (`journal`): `<N>LEVEL: message…`, with the syslog priority journald reads
/// (3 error, 4 warning, 6 info, 7 debug) and no timestamp, since the journal keeps the time.
#[derive(Debug)]
struct LineFormat<T> {
    timer: T,
    journal: bool,
}

impl<S, N, T> FormatEvent<S, N> for LineFormat<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journal {
            write!(writer, "<{}>{}: ", priority(level), level_word(level))?;
        } else {
            write_prefix(&mut writer, &self.timer, level)?;
        }
        // Everything after the prefix may come from outside: it is escaped as it is written.
        ctx.format_fields(Writer::new(&mut EscapeLine(&mut writer)), event)?;
        writeln!(writer)
    }
}

/// How a level is named in a line.
fn level_word(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// `[timestamp] LEVEL: `.
fn write_prefix(writer: &mut Writer<'_>, timer: &impl FormatTime, level: Level) -> fmt::Result {
    writer.write_char('[')?;
    timer.format_time(writer)?;
    write!(writer, "] {}: ", level_word(level))
}

/// `[timestamp] LEVEL: message\n`, the message escaped: a line as [`LineFormat`] writes it, for
/// a message that is not an event.
fn format_line(timer: &impl FormatTime, level: Level, message: &str) -> String {
    let mut line = String::new();
    let mut writer = Writer::new(&mut line);
    // Writing to a `String` fails only when the clock cannot be formatted; then the line goes
    // out without its time rather than not at all.
    let _ = write_prefix(&mut writer, timer, level);
    let _ = EscapeLine(&mut writer).write_str(message);
    line.push('\n');
    line
}

/// Passes text on with [`escape_log_line`] applied. The escaper works character by character,
/// so escaping each piece as it is formatted is escaping the whole line.
struct EscapeLine<W>(W);

impl<W: fmt::Write> fmt::Write for EscapeLine<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.write_str(&escape_log_line(text))
    }
}

/// The fields of a line: the message first, wherever the event declared it, then every other
/// field as ` key=value`.
#[derive(Debug, Clone, Copy)]
struct LineFields;

impl<'w> FormatFields<'w> for LineFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Fields::default();
        fields.record(&mut visitor);
        write!(writer, "{}{}", visitor.message, visitor.others)
    }
}

/// An event's message and its other fields, rendered.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    others: String,
}

// Writing to a `String` cannot fail, hence the ignored results.
impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.is_empty() || value.contains(char::is_whitespace) {
            // Quoted, so that the value reads as one token.
            let _ = write!(self.others, " {}={}", field.name(), escape_for_log(value));
        } else {
            let _ = write!(self.others, " {}={value}", field.name());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // An error reads best as its message, not as its Debug structure.
        let _ = write!(self.others, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The message is `format_args!`, whose Debug output is the text itself.
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.others, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    /// A writer tests can read back; it records each `write` call separately.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        /// A writer factory for the `fmt` layer: every line goes to this buffer.
        fn make(&self) -> impl Fn() -> Buffer + Send + Sync + 'static {
            let buffer = self.clone();
            move || buffer.clone()
        }
    }

    /// The clock of the tests.
    struct FixedTime;

    impl FormatTime for FixedTime {
        fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
            writer.write_str("2025-01-02 03:04:05")
        }
    }

    /// Runs `body` under the subscriber [`init`] builds, with a file buffer and a stderr buffer;
    /// returns both texts.
    fn capture(stderr: StderrMode, max_level: Level, body: impl FnOnce()) -> (String, String) {
        let file = Buffer::default();
        let err = Buffer::default();
        let subscriber = subscriber(file.make(), err.make(), stderr, max_level, FixedTime);
        tracing::subscriber::with_default(subscriber, body);
        (file.text(), err.text())
    }

    fn all_levels() {
        tracing::error!("Rolling back to previous configuration");
        tracing::warn!("example.com has a hand-written transport line");
        tracing::info!("===== Relay Domains Sync Started =====");
        tracing::debug!("postconf -h relay_domains");
        tracing::trace!("very detailed");
    }

    /// Under systemd, `journalctl -u relay-sync -p err` must find the errors: every line goes to
    /// the journal with its priority and without a second timestamp, while the log file keeps
    /// the document's format.
    #[test]
    fn journal_lines_carry_their_priority_and_no_timestamp() {
        let (file, err) = capture(StderrMode::Journal, Level::INFO, || {
            all_levels();
            tracing::error!("hostile {}", "evil\n<0>forged");
        });
        insta::assert_snapshot!(err, @r"
        <3>ERROR: Rolling back to previous configuration
        <4>WARN: example.com has a hand-written transport line
        <6>INFO: ===== Relay Domains Sync Started =====
        <3>ERROR: hostile evil\n<0>forged
        ");
        assert!(
            file.starts_with("[2025-01-02 03:04:05] ERROR: Rolling back"),
            "{file}"
        );
        assert_eq!(file.lines().count(), 4, "{file}");
    }

    #[test]
    fn journal_stream_names_a_device_and_an_inode() {
        assert!(journal_stream_is("8:1234", 8, 1234));
        assert!(!journal_stream_is("8:1234", 8, 1235));
        assert!(!journal_stream_is("", 8, 1234));
        assert!(!journal_stream_is("8", 8, 1234));
    }

    #[test]
    fn format_of_each_level() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::INFO, all_levels);
        insta::assert_snapshot!(file, @r"
        [2025-01-02 03:04:05] ERROR: Rolling back to previous configuration
        [2025-01-02 03:04:05] WARN: example.com has a hand-written transport line
        [2025-01-02 03:04:05] INFO: ===== Relay Domains Sync Started =====
        ");
    }

    #[test]
    fn verbose_adds_debug_lines() {
        let (file, err) = capture(StderrMode::All, Level::DEBUG, all_levels);
        insta::assert_snapshot!(file, @r"
        [2025-01-02 03:04:05] ERROR: Rolling back to previous configuration
        [2025-01-02 03:04:05] WARN: example.com has a hand-written transport line
        [2025-01-02 03:04:05] INFO: ===== Relay Domains Sync Started =====
        [2025-01-02 03:04:05] DEBUG: postconf -h relay_domains
        ");
        assert_eq!(file, err);
    }

    /// A library's events stop at WARN even with `--verbose`: the AWS SDK's DEBUG lines name
    /// the access key ID. relay-sync's own DEBUG lines stay.
    #[test]
    fn libraries_log_warnings_only_even_when_verbose() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::TRACE, || {
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "AKIDEXAMPLE");
            tracing::info!(target: "aws_config::meta::credentials", "AKIDEXAMPLE");
            tracing::trace!(target: "hyper_util::client", "AKIDEXAMPLE");
            tracing::warn!(target: "aws_smithy_runtime", "clock skew");
            tracing::debug!(target: "relay_postfix::cli", "postconf took 6 ms");
            tracing::debug!("relay-sync's own");
        });
        assert!(!file.contains("AKIDEXAMPLE"), "{file}");
        insta::assert_snapshot!(file, @r"
        [2025-01-02 03:04:05] WARN: clock skew
        [2025-01-02 03:04:05] DEBUG: postconf took 6 ms
        [2025-01-02 03:04:05] DEBUG: relay-sync's own
        ");
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::ERROR, || {
            tracing::warn!(target: "aws_smithy_runtime", "clock skew");
            tracing::error!(target: "aws_smithy_runtime", "failed");
        });
        assert_eq!(file, "[2025-01-02 03:04:05] ERROR: failed\n");
    }

    #[test]
    fn trace_lines_read_as_debug() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::TRACE, all_levels);
        assert!(
            file.ends_with("] DEBUG: very detailed\n") && file.lines().count() == 5,
            "{file}"
        );
    }

    #[test]
    fn stderr_gets_everything_on_a_terminal() {
        let (file, err) = capture(StderrMode::All, Level::INFO, all_levels);
        assert_eq!(file, err);
        assert_eq!(err.lines().count(), 3);
    }

    #[test]
    fn stderr_gets_only_errors_under_cron() {
        let (file, err) = capture(StderrMode::ErrorsOnly, Level::DEBUG, all_levels);
        assert_eq!(file.lines().count(), 4);
        assert_eq!(
            err,
            "[2025-01-02 03:04:05] ERROR: Rolling back to previous configuration\n"
        );
    }

    #[test]
    fn fields_follow_the_message() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::INFO, || {
            let path = Path::new("/etc/postfix/transport");
            tracing::info!(path = %path.display(), added = 2, "Postmap successful");
            tracing::info!(command = "postfix reload", empty = "", ok = true, "ran");
            tracing::info!(name = ?"a\nb", "debug field");
            tracing::info!(message = "explicit message field", n = 1);
            tracing::info!(n = 1, message = "message declared last");
            let error = io::Error::other("disk full");
            tracing::error!(error = &error as &dyn std::error::Error, "Postmap failed");
        });
        insta::assert_snapshot!(file, @r#"
        [2025-01-02 03:04:05] INFO: Postmap successful path=/etc/postfix/transport added=2
        [2025-01-02 03:04:05] INFO: ran command="postfix reload" empty="" ok=true
        [2025-01-02 03:04:05] INFO: debug field name="a\nb"
        [2025-01-02 03:04:05] INFO: explicit message field n=1
        [2025-01-02 03:04:05] INFO: message declared last n=1
        [2025-01-02 03:04:05] ERROR: Postmap failed error=disk full
        "#);
    }

    #[test]
    fn hostile_values_cannot_forge_a_line() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::INFO, || {
            let raw = "evil.com\n[2025-01-02 03:04:05] INFO: Rollback successful";
            tracing::error!("Invalid domain skipped: {raw}");
            tracing::error!("Invalid domain skipped: {}", escape_for_log(raw));
            tracing::error!("cr\rtab\tesc\u{1b}[2Jnul\0del\u{7f}c1\u{85}ls\u{2028}rlo\u{202e}end");
            tracing::error!(value = %"x\ny", "field values too");
            tracing::error!(value = "a \"b\"\n\u{2066}", "quoted field values too");
            tracing::error!(
                error = &io::Error::other("x\ny") as &dyn std::error::Error,
                "errors"
            );
        });
        insta::assert_snapshot!(file, @r#"
        [2025-01-02 03:04:05] ERROR: Invalid domain skipped: evil.com\n[2025-01-02 03:04:05] INFO: Rollback successful
        [2025-01-02 03:04:05] ERROR: Invalid domain skipped: "evil.com\n[2025-01-02 03:04:05] INFO: Rollback successful"
        [2025-01-02 03:04:05] ERROR: cr\rtab\tesc\u{1b}[2Jnul\0del\u{7f}c1\u{85}ls\u{2028}rlo\u{202e}end
        [2025-01-02 03:04:05] ERROR: field values too value=x\ny
        [2025-01-02 03:04:05] ERROR: quoted field values too value="a \"b\"\n\u{2066}"
        [2025-01-02 03:04:05] ERROR: errors error=x\ny
        "#);
        assert_eq!(file.lines().count(), 6);
    }

    #[test]
    fn one_write_per_line() {
        let file = Buffer::default();
        let err = Buffer::default();
        let subscriber = subscriber(
            file.make(),
            err.make(),
            StderrMode::All,
            Level::INFO,
            FixedTime,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(a = 1, b = "two words", "message with {} and fields", "args");
            tracing::info!("second");
        });
        assert_eq!((file.writes(), err.writes()), (2, 2));
    }

    #[test]
    fn early_error_reads_like_a_logged_error() {
        assert_eq!(
            format_line(&FixedTime, Level::ERROR, "unknown key \"X\"\nin line 3"),
            "[2025-01-02 03:04:05] ERROR: unknown key \"X\"\\nin line 3\n"
        );
    }

    #[test]
    fn early_journal_lines_carry_their_priority() {
        assert_eq!(
            journal_line(Level::ERROR, "invalid DB_PORT \"abc\"\nline 2"),
            "<3>ERROR: invalid DB_PORT \"abc\"\\nline 2\n"
        );
        assert_eq!(journal_line(Level::WARN, "w"), "<4>WARN: w\n");
    }

    #[test]
    fn timestamp_format() {
        let line = format_line(&local_time(), Level::ERROR, "x");
        let shape: String = line
            .chars()
            .map(|c| if c.is_ascii_digit() { 'D' } else { c })
            .collect();
        assert_eq!(shape, "[DDDD-DD-DD DD:DD:DD] ERROR: x\n");
    }

    #[test]
    fn log_file_is_created_0640_in_a_0750_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/log/mailserver/relay-sync.log");
        let mut file = open_log_file(&path).unwrap();
        file.write_all(b"first\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o640);
        assert_eq!(mode(path.parent().unwrap()), 0o750);

        // An existing file is appended to and keeps its mode.
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        open_log_file(&path)
            .unwrap()
            .write_all(b"second\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn unusable_log_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the log file should be: refused, never removed.
        let error = open_log_file(dir.path()).unwrap_err();
        assert!(matches!(error, LoggingError::Refused(_)), "{error}");
        assert!(error.to_string().contains("run `mv "), "{error}");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let error = open_log_file(&blocker.join("sub/relay-sync.log")).unwrap_err();
        let message = error
            .to_string()
            .replace(&*dir.path().to_string_lossy(), "DIR");
        insta::assert_snapshot!(message, @"cannot create log directory DIR/file/sub: Not a directory (os error 20)");
    }

    #[test]
    fn a_fifo_or_a_device_at_the_log_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("relay-sync.log");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|status| status.success()), "mkfifo");
        for path in [fifo.as_path(), Path::new("/dev/null")] {
            let error = open_log_file(path).unwrap_err();
            assert!(matches!(error, LoggingError::Refused(_)), "{error}");
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("not a regular file"), "{text}");
        }
    }

    #[test]
    fn concurrent_writers_never_split_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.log");
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread opens the file itself, like a separate run would.
                    let file = LogFile::new(open_log_file(&path).unwrap(), &path);
                    let subscriber = subscriber(
                        Arc::new(file),
                        io::sink,
                        StderrMode::ErrorsOnly,
                        Level::INFO,
                        FixedTime,
                    );
                    tracing::subscriber::with_default(subscriber, || {
                        for i in 0..500 {
                            tracing::info!("writer {n} line {i} {}", "x".repeat(200));
                        }
                    });
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for line in text.lines() {
            assert!(
                line.starts_with("[2025-01-02 03:04:05] INFO: writer "),
                "{line}"
            );
            assert!(line.ends_with(&"x".repeat(200)), "{line}");
        }
    }

    /// logrotate's `create` (rename, then a new empty file) and a rename by hand without a new
    /// file: the next line goes to a file at `LOG_FILE`, none to the rotated one.
    #[test]
    fn a_rotated_log_file_is_reopened_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.log");
        let rotated = dir.path().join("relay-sync.log.1");
        let file = LogFile::new(open_log_file(&path).unwrap(), &path);
        let subscriber = subscriber(
            Arc::new(file),
            io::sink,
            StderrMode::ErrorsOnly,
            Level::INFO,
            FixedTime,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before the rotation");
            std::fs::rename(&path, &rotated).unwrap();
            std::fs::File::create(&path).unwrap();
            tracing::info!("after logrotate");
            std::fs::rename(&path, &rotated).unwrap();
            tracing::info!("after a rename by hand");
        });
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&rotated),
            "[2025-01-02 03:04:05] INFO: after logrotate\n"
        );
        assert_eq!(
            read(&path),
            "[2025-01-02 03:04:05] INFO: after a rename by hand\n"
        );
        // The file relay-sync created again has the mode of a new log file.
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    /// A SIGHUP with another LOG_FILE: the next lines go to the new file (created 0640), none
    /// to the old one; a path that cannot be opened keeps the old file.
    #[test]
    fn a_switched_log_file_gets_the_next_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.log");
        let moved = dir.path().join("elsewhere/relay-sync.log");
        let file = Arc::new(LogFile::new(open_log_file(&path).unwrap(), &path));
        let subscriber = subscriber(
            Arc::clone(&file),
            io::sink,
            StderrMode::ErrorsOnly,
            Level::INFO,
            FixedTime,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            assert_eq!(file.switch(&path).unwrap(), Switched::Same);
            assert!(file.switch(dir.path()).is_err());
            tracing::info!("still here");
            assert_eq!(file.switch(&moved).unwrap(), Switched::Moved);
            tracing::info!("after");
        });
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&path),
            "[2025-01-02 03:04:05] INFO: before\n[2025-01-02 03:04:05] INFO: still here\n"
        );
        assert_eq!(read(&moved), "[2025-01-02 03:04:05] INFO: after\n");
        let mode = std::fs::metadata(&moved).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    /// What the log file in [`a_log_file_that_cannot_be_reopened_keeps_the_old_one`] reported.
    static REOPEN_REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A path that cannot be opened after the rotation (here a directory): the lines keep
    /// going to the file open before, and the failure is reported once, naming the path.
    #[test]
    fn a_log_file_that_cannot_be_reopened_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.log");
        let rotated = dir.path().join("relay-sync.log.1");
        let file = LogFile {
            report: |message| REOPEN_REPORTS.lock().unwrap().push(message.to_owned()),
            ..LogFile::new(open_log_file(&path).unwrap(), &path)
        };
        let subscriber = subscriber(
            Arc::new(file),
            io::sink,
            StderrMode::ErrorsOnly,
            Level::INFO,
            FixedTime,
        );
        tracing::subscriber::with_default(subscriber, || {
            std::fs::rename(&path, &rotated).unwrap();
            std::fs::create_dir(&path).unwrap();
            tracing::info!("one");
            tracing::info!("two");
        });
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "[2025-01-02 03:04:05] INFO: one\n[2025-01-02 03:04:05] INFO: two\n"
        );
        let reports = REOPEN_REPORTS.lock().unwrap();
        assert_eq!(reports.len(), 1, "{reports:?}");
        let report = reports[0].replace(&*dir.path().to_string_lossy(), "DIR");
        insta::assert_snapshot!(report, @"refusing DIR/relay-sync.log: the log file is a directory, not a regular file; run `mv DIR/relay-sync.log DIR/relay-sync.log.moved-aside`; log lines keep going to the file opened before it was rotated");
    }

    /// What the log file in [`write_failure_is_reported_once_and_stderr_still_gets_the_lines`]
    /// reported.
    static REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[test]
    fn write_failure_is_reported_once_and_stderr_still_gets_the_lines() {
        // Every write to /dev/full fails with ENOSPC. (It is a device, which open_log_file
        // refuses: it is opened here directly.)
        let path = Path::new("/dev/full");
        let device = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        let file = LogFile {
            report: |message| REPORTS.lock().unwrap().push(message.to_owned()),
            ..LogFile::new(device, path)
        };
        let err = Buffer::default();
        let subscriber = subscriber(
            Arc::new(file),
            err.make(),
            StderrMode::All,
            Level::INFO,
            FixedTime,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("one");
            tracing::info!("two");
        });
        assert_eq!(
            *REPORTS.lock().unwrap(),
            ["cannot write log file /dev/full: No space left on device (os error 28)"]
        );
        assert_eq!(err.text().lines().count(), 2);
    }

    #[test]
    fn init_installs_the_global_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/relay-sync.log");
        init(Some(&path), StderrMode::ErrorsOnly, Level::INFO).unwrap();
        // Events on a thread without its own subscriber reach the global one.
        std::thread::spawn(|| {
            tracing::info!("Postfix reloaded successfully");
            tracing::debug!("not without --verbose");
        })
        .join()
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let shape: String = text
            .chars()
            .map(|c| if c.is_ascii_digit() { 'D' } else { c })
            .collect();
        assert_eq!(
            shape,
            "[DDDD-DD-DD DD:DD:DD] INFO: Postfix reloaded successfully\n"
        );
        assert!(matches!(
            init(None, StderrMode::ErrorsOnly, Level::INFO),
            Err(LoggingError::AlreadyInstalled)
        ));
    }
}
