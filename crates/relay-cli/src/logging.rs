//! The log lines of SPEC §8: `[YYYY-MM-DD HH:MM:SS] LEVEL: message`, local time, appended to
//! `LOG_FILE` and copied to stderr.
//!
//! Everything logs through `tracing`; this module installs the one subscriber that turns events
//! into lines. The rules:
//!
//! - LEVEL is `ERROR`, `WARN` or `INFO`; `DEBUG` (which also stands for `TRACE`) only appears
//!   when the maximum level given to [`init`] admits it (a verbose flag).
//! - A line is the event's message followed by its other fields as ` key=value` (string values
//!   with spaces are quoted). Spans are not shown.
//! - Control characters, and the Unicode line separators and bidirectional overrides, are
//!   escaped (`\n`, `\r`, `\t`, `\u{1b}`), so a hostile value such as a domain name read from the
//!   database can never start a forged line or rewrite a terminal.
//! - Each line is written with a single `write` call, and the log file is opened with
//!   `O_APPEND`, so concurrent runs appending to the same file never interleave mid-line.
//! - The log file is created with mode 0640 and its missing parent directory with 0750. A file
//!   that cannot be opened is an error for the caller to handle; a later write failure is
//!   reported once on stderr.
//! - stderr gets every line on a terminal and only `ERROR` lines otherwise, so cron's mail
//!   carries failures and nothing else ([`StderrMode`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Mode of a log file relay-sync creates.
const LOG_FILE_MODE: u32 = 0o640;
/// Mode of a log directory relay-sync creates.
const LOG_DIR_MODE: u32 = 0o750;

/// Which lines go to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StderrMode {
    /// Every line: a person is watching.
    All,
    /// `ERROR` lines only: cron mails whatever reaches stderr.
    ErrorsOnly,
}

impl StderrMode {
    /// [`StderrMode::All`] when stderr is a terminal, [`StderrMode::ErrorsOnly`] otherwise.
    pub(crate) fn detect() -> StderrMode {
        if io::stderr().is_terminal() {
            StderrMode::All
        } else {
            StderrMode::ErrorsOnly
        }
    }
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
    /// [`init`] was called twice, or something else installed a subscriber.
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the process-wide subscriber: lines up to `max_level` (`Level::INFO`, or
/// `Level::DEBUG` when verbose) go to `log_file` when given, and to stderr as `stderr` says.
///
/// Call it once, after the configuration is loaded; before that, report errors with
/// [`early_error`].
pub(crate) fn init(
    log_file: Option<&Path>,
    stderr: StderrMode,
    max_level: Level,
) -> Result<(), LoggingError> {
    let mut sinks = Vec::new();
    if let Some(path) = log_file {
        sinks.push(Sink::file(open_log_file(path)?, path, max_level));
    }
    sinks.push(Sink::stderr(io::stderr(), stderr, max_level));
    let layer = LineLayer::new(sinks, max_level, local_timestamp);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .map_err(|_| LoggingError::AlreadyInstalled)
}

/// Prints `[timestamp] ERROR: message` to stderr, for errors before [`init`] (a configuration
/// error, an unusable log file).
pub(crate) fn early_error(message: &str) {
    let line = format_line(&local_timestamp(), Level::ERROR, message);
    // Nothing better can be done when stderr itself fails.
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Opens `path` for appending; creates it with mode 0640 (and its missing parent directory
/// with 0750) when it does not exist. Both modes are set explicitly, whatever the umask. An
/// existing file keeps its mode.
pub(crate) fn open_log_file(path: &Path) -> Result<File, LoggingError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            let create_dir = |source| LoggingError::CreateDir {
                path: parent.to_owned(),
                source,
            };
            DirBuilder::new()
                .recursive(true)
                .mode(LOG_DIR_MODE)
                .create(parent)
                .map_err(create_dir)?;
            std::fs::set_permissions(parent, Permissions::from_mode(LOG_DIR_MODE))
                .map_err(create_dir)?;
        }
    }
    let open = |source| LoggingError::Open {
        path: path.to_owned(),
        source,
    };
    match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(LOG_FILE_MODE)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(LOG_FILE_MODE))
                .map_err(open)?;
            Ok(file)
        }
        // Another run may create it between the two calls; then it simply exists.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path).map_err(open)
        }
        Err(error) => Err(open(error)),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
fn local_timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Where lines go, and which of them.
pub(crate) struct Sink {
    writer: Mutex<Box<dyn Write + Send>>,
    /// The most verbose level this sink takes.
    level: Level,
    /// For a log file: its path, named when a write fails.
    file: Option<PathBuf>,
    /// Whether a write failure was already reported.
    failed: AtomicBool,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("level", &self.level)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// The log file: every line up to `max_level`.
    pub(crate) fn file(writer: impl Write + Send + 'static, path: &Path, max_level: Level) -> Sink {
        Sink {
            writer: Mutex::new(Box::new(writer)),
            level: max_level,
            file: Some(path.to_owned()),
            failed: AtomicBool::new(false),
        }
    }

    /// stderr: every line up to `max_level`, or only errors.
    pub(crate) fn stderr(
        writer: impl Write + Send + 'static,
        mode: StderrMode,
        max_level: Level,
    ) -> Sink {
        Sink {
            writer: Mutex::new(Box::new(writer)),
            level: match mode {
                StderrMode::All => max_level,
                StderrMode::ErrorsOnly => Level::ERROR,
            },
            file: None,
            failed: AtomicBool::new(false),
        }
    }

    fn write_line(&self, level: Level, line: &str) {
        if level > self.level {
            return;
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // One `write_all` of the whole line: a single write(2) on an O_APPEND file.
        let result = writer.write_all(line.as_bytes());
        drop(writer);
        if let (Err(error), Some(path)) = (result, &self.file) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                early_error(&format!(
                    "cannot write log file {}: {error}",
                    path.display()
                ));
            }
        }
    }
}

/// The layer that formats each event once and hands the line to every sink that takes it.
pub(crate) struct LineLayer {
    sinks: Vec<Sink>,
    max_level: Level,
    timestamp: fn() -> String,
}

impl fmt::Debug for LineLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineLayer")
            .field("sinks", &self.sinks)
            .field("max_level", &self.max_level)
            .finish_non_exhaustive()
    }
}

impl LineLayer {
    /// A layer writing to `sinks`, dropping events above `max_level`, with `timestamp` giving
    /// the time of each line (tests pass a fixed one).
    pub(crate) fn new(sinks: Vec<Sink>, max_level: Level, timestamp: fn() -> String) -> Self {
        LineLayer {
            sinks,
            max_level,
            timestamp,
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max_level))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max_level {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.message.push_str(&fields.extra);
        let line = format_line(&(self.timestamp)(), level, &fields.message);
        for sink in &self.sinks {
            sink.write_line(level, &line);
        }
    }
}

/// An event's message and its other fields, rendered.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    extra: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.is_empty() || value.contains(char::is_whitespace) {
            let _ = write!(self.extra, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.extra, " {}={value}", field.name());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // An error reads best as its message, not as its Debug structure.
        let _ = write!(self.extra, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The message is `format_args!`, whose Debug output is the text itself.
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.extra, " {}={value:?}", field.name());
        }
    }
}

/// `[timestamp] LEVEL: message\n`, the message escaped.
fn format_line(timestamp: &str, level: Level, message: &str) -> String {
    let level = match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        _ => "DEBUG",
    };
    format!("[{timestamp}] {level}: {}\n", escape(message))
}

/// Characters that could end a line, or change what a terminal or viewer shows, when written
/// raw.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes control characters: `\n`, `\r`, `\t`, and `\u{..}` for the others.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
    }

    fn fixed_time() -> String {
        "2025-01-02 03:04:05".to_owned()
    }

    /// Runs `body` under a layer with a file buffer and a stderr buffer; returns both texts.
    fn capture(stderr: StderrMode, max_level: Level, body: impl FnOnce()) -> (String, String) {
        let file = Buffer::default();
        let err = Buffer::default();
        let layer = LineLayer::new(
            vec![
                Sink::file(file.clone(), Path::new("/log"), max_level),
                Sink::stderr(err.clone(), stderr, max_level),
            ],
            max_level,
            fixed_time,
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), body);
        (file.text(), err.text())
    }

    fn all_levels() {
        tracing::error!("Rolling back to previous configuration");
        tracing::warn!("example.com has a hand-written transport line");
        tracing::info!("===== Relay Domains Sync Started =====");
        tracing::debug!("postconf -h relay_domains");
        tracing::trace!("very detailed");
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
        let (file, err) = capture(StderrMode::All, Level::TRACE, all_levels);
        insta::assert_snapshot!(file, @r"
        [2025-01-02 03:04:05] ERROR: Rolling back to previous configuration
        [2025-01-02 03:04:05] WARN: example.com has a hand-written transport line
        [2025-01-02 03:04:05] INFO: ===== Relay Domains Sync Started =====
        [2025-01-02 03:04:05] DEBUG: postconf -h relay_domains
        [2025-01-02 03:04:05] DEBUG: very detailed
        ");
        assert_eq!(file, err);
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
            let error = io::Error::other("disk full");
            tracing::error!(error = &error as &dyn std::error::Error, "Postmap failed");
        });
        insta::assert_snapshot!(file, @r#"
        [2025-01-02 03:04:05] INFO: Postmap successful path=/etc/postfix/transport added=2
        [2025-01-02 03:04:05] INFO: ran command="postfix reload" empty="" ok=true
        [2025-01-02 03:04:05] INFO: debug field name="a\nb"
        [2025-01-02 03:04:05] INFO: explicit message field n=1
        [2025-01-02 03:04:05] ERROR: Postmap failed error=disk full
        "#);
    }

    #[test]
    fn hostile_values_cannot_forge_a_line() {
        let (file, _) = capture(StderrMode::ErrorsOnly, Level::INFO, || {
            let raw = "evil.com\n[2025-01-02 03:04:05] INFO: Rollback successful";
            tracing::error!("Invalid domain skipped: {raw}");
            tracing::error!("cr\rtab\tesc\u{1b}[2Jnul\0del\u{7f}c1\u{85}ls\u{2028}rlo\u{202e}end");
            tracing::error!(value = %"x\ny", "field values too");
        });
        insta::assert_snapshot!(file, @r"
        [2025-01-02 03:04:05] ERROR: Invalid domain skipped: evil.com\n[2025-01-02 03:04:05] INFO: Rollback successful
        [2025-01-02 03:04:05] ERROR: cr\rtab\tesc\u{1b}[2Jnul\u{0}del\u{7f}c1\u{85}ls\u{2028}rlo\u{202e}end
        [2025-01-02 03:04:05] ERROR: field values too value=x\ny
        ");
        assert_eq!(file.lines().count(), 3);
    }

    #[test]
    fn escape_leaves_ordinary_text_alone() {
        assert!(matches!(
            escape("Domain changes detected: +1, -0 (日本.jp)"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape("a\\nb"), "a\\nb");
    }

    #[test]
    fn one_write_per_line() {
        let file = Buffer::default();
        let layer = LineLayer::new(
            vec![Sink::file(file.clone(), Path::new("/log"), Level::INFO)],
            Level::INFO,
            fixed_time,
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(a = 1, b = "two words", "message with {} and fields", "args");
            tracing::info!("second");
        });
        assert_eq!(file.writes(), 2);
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
        let error = open_log_file(dir.path()).unwrap_err();
        assert!(matches!(error, LoggingError::Open { .. }), "{error}");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let error = open_log_file(&blocker.join("sub/relay-sync.log")).unwrap_err();
        let message = error
            .to_string()
            .replace(&*dir.path().to_string_lossy(), "DIR");
        insta::assert_snapshot!(message, @"cannot create log directory DIR/file/sub: Not a directory (os error 20)");
    }

    #[test]
    fn concurrent_writers_never_split_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.log");
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let layer = LineLayer::new(
                        vec![Sink::file(
                            open_log_file(&path).unwrap(),
                            &path,
                            Level::INFO,
                        )],
                        Level::INFO,
                        fixed_time,
                    );
                    let subscriber = tracing_subscriber::registry().with(layer);
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

    #[test]
    fn write_failure_does_not_stop_other_sinks() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = Buffer::default();
        let layer = LineLayer::new(
            vec![
                Sink::file(Broken, Path::new("/log"), Level::INFO),
                Sink::stderr(err.clone(), StderrMode::All, Level::INFO),
            ],
            Level::INFO,
            fixed_time,
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("one");
            tracing::info!("two");
        });
        // The failure notice goes to the real stderr; the other sink got both lines.
        assert_eq!(err.text().lines().count(), 2);
    }

    #[test]
    fn timestamp_format() {
        let stamp = local_timestamp();
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { 'D' } else { c })
            .collect();
        assert_eq!(shape, "DDDD-DD-DD DD:DD:DD");
        let line = format_line(&stamp, Level::ERROR, "x");
        assert_eq!(line, format!("[{stamp}] ERROR: x\n"));
    }

    #[test]
    fn init_installs_the_global_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/relay-sync.log");
        init(Some(&path), StderrMode::ErrorsOnly, Level::INFO).unwrap();
        // Events on a thread without its own subscriber reach the global one.
        std::thread::spawn(|| tracing::info!("Postfix reloaded successfully"))
            .join()
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("] INFO: Postfix reloaded successfully\n"),
            "{text}"
        );
        assert!(matches!(
            init(None, StderrMode::ErrorsOnly, Level::INFO),
            Err(LoggingError::AlreadyInstalled)
        ));
    }
}
