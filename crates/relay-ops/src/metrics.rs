//! `METRICS_FILE`: the last run in the Prometheus textfile-collector format (node_exporter's
//! `--collector.textfile.directory`), written after every sync that is not a dry run.
//!
//! The file is replaced atomically (temporary file in the same directory, fsync, rename), so the
//! collector never reads half a file. [`render`] is pure; [`write()`] is the I/O around it.

use std::path::Path;

/// One run, as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RunMetrics {
    /// When the run ended, Unix seconds.
    pub(crate) last_run: i64,
    /// When the last successful run ended, Unix seconds; 0 when none is known.
    pub(crate) last_success: i64,
    /// The exit code (SPEC §8).
    pub(crate) exit: u8,
    /// Domains in the transport file's managed block after the run.
    pub(crate) domains: usize,
    /// Domains added by this run.
    pub(crate) added: usize,
    /// Domains removed by this run.
    pub(crate) removed: usize,
    /// How long the run took, seconds.
    pub(crate) duration: f64,
    /// Failed runs in a row.
    pub(crate) consecutive_failures: u32,
    /// Database rows the last run that read the database rejected as invalid names.
    pub(crate) invalid_rows: usize,
    /// Whether syncs are held (`relay-sync hold`).
    pub(crate) held: bool,
    /// When the hold began, Unix seconds; 0 when syncs are not held.
    pub(crate) held_since: i64,
    /// Recipient validation: entries in the recipients table; `None` when it is off (and the
    /// metric is not written).
    pub(crate) recipients: Option<usize>,
}

/// The metric holding the last success, read back from the previous file.
const LAST_SUCCESS: &str = "relay_sync_last_success_timestamp_seconds";

/// The file's text.
pub(crate) fn render(m: &RunMetrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    metric(
        "relay_sync_last_run_timestamp_seconds",
        "When the last relay-sync run ended (Unix time).",
        m.last_run.to_string(),
    );
    metric(
        LAST_SUCCESS,
        "When the last successful relay-sync run ended (Unix time); 0 if none.",
        m.last_success.to_string(),
    );
    metric(
        "relay_sync_last_exit_code",
        "Exit code of the last run: 0 ok, 3 database, 4 guard, 5 rolled back, 6 critical.",
        m.exit.to_string(),
    );
    metric(
        "relay_sync_last_run_success",
        "1 if the last run succeeded, 0 otherwise.",
        u8::from(m.exit == 0).to_string(),
    );
    metric(
        "relay_sync_managed_domains",
        "Domains in the transport file's managed block after the last run.",
        m.domains.to_string(),
    );
    metric(
        "relay_sync_last_added_domains",
        "Domains added by the last run.",
        m.added.to_string(),
    );
    metric(
        "relay_sync_last_removed_domains",
        "Domains removed by the last run.",
        m.removed.to_string(),
    );
    metric(
        "relay_sync_last_duration_seconds",
        "How long the last run took.",
        format!("{:.3}", m.duration),
    );
    metric(
        "relay_sync_consecutive_failures",
        "Failed runs in a row.",
        m.consecutive_failures.to_string(),
    );
    metric(
        "relay_sync_invalid_rows",
        "Database rows rejected as invalid domain names by the last run that read the database.",
        m.invalid_rows.to_string(),
    );
    metric(
        "relay_sync_held",
        "1 while syncs are held by `relay-sync hold`, 0 otherwise.",
        u8::from(m.held).to_string(),
    );
    metric(
        "relay_sync_held_since_timestamp_seconds",
        "When the hold began (Unix time); 0 when syncs are not held.",
        m.held_since.to_string(),
    );
    if let Some(recipients) = m.recipients {
        metric(
            "relay_sync_recipients",
            "Addresses and catch-alls in the recipients table (RECIPIENTS_MAP) after the last run.",
            recipients.to_string(),
        );
    }
    let name = "relay_sync_build_info";
    out.push_str(&format!(
        "# HELP {name} The relay-sync that wrote this file: its version and cargo features; \
         always 1.\n# TYPE {name} gauge\n{name}{{version=\"{}\",features=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION"),
        features()
    ));
    out
}

/// The cargo features relay-sync can be built with, and whether this build has each.
const FEATURES: &[(&str, bool)] = &[("aws", cfg!(feature = "aws"))];

/// `relay_sync_build_info`'s `features` label: the features this build has, comma-separated.
fn features() -> String {
    FEATURES
        .iter()
        .filter(|(_, on)| *on)
        .map(|(feature, _)| *feature)
        .collect::<Vec<_>>()
        .join(",")
}

/// The last success recorded in an existing metrics file, if any. Read through relay-fs
/// ([`relay_fs::Kind::METRICS`]): never through a link someone else made, never a FIFO or a
/// device (which would hang the run or feed it without end); such a file is refused and
/// logged, naming it, and the last success is then unknown (0).
pub(crate) fn previous_last_success(path: &Path) -> Option<i64> {
    let text = match relay_fs::read_to_string(relay_fs::Kind::METRICS, path) {
        Ok(text) => text?,
        Err(error) => {
            tracing::error!("{error}; the last success it recorded is not carried over");
            return None;
        }
    };
    text.lines()
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.trim().parse().ok())
}

/// Writes `m` to `path` atomically, mode 0644 (the collector runs as another user). Whatever
/// was at `path` (a link, a FIFO) is replaced, never written through.
pub(crate) fn write(path: &Path, m: &RunMetrics) -> Result<(), relay_fs::FsError> {
    // The temporary name (`.NAME.RANDOM.relay-sync.tmp`) does not end in `.prom`, which is
    // all node_exporter reads, so a half-written file is never collected.
    relay_fs::replace(path, render(m).as_bytes(), 0o644)
}

/// The watcher's metrics (`relay-sync watch`), in a file of their own beside `METRICS_FILE`
/// ([`watch_path`]): each run rewrites `METRICS_FILE` whole, and a cron run beside the watcher
/// must not erase them.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WatchMetrics {
    /// Whether the watcher is running (0 in the file it leaves when it stops).
    pub(crate) up: bool,
    /// When the watcher last polled (or tried to), Unix seconds; 0 before its first poll.
    /// The heartbeat: `up` stays 1 in the file a killed watcher leaves, this stops moving.
    pub(crate) last_poll: i64,
    /// Polls of the change signal, failed ones included.
    pub(crate) polls: u64,
    /// Polls that found the enabled set changed.
    pub(crate) changes: u64,
    /// How long from the poll that saw a change to the end of the sync that applied it.
    pub(crate) propagation: Histogram,
}

/// A Prometheus histogram of seconds with fixed buckets.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Histogram {
    /// Observations at most each bound of [`PROPAGATION_BUCKETS`].
    counts: [u64; PROPAGATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Bucket bounds in seconds: the targets (1, 2, 3 s) and the inline floor fall on
/// bounds.
pub(crate) const PROPAGATION_BUCKETS: [f64; 10] =
    [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Histogram {
    /// Adds one observation.
    pub(crate) fn observe(&mut self, seconds: f64) {
        for (bound, count) in PROPAGATION_BUCKETS.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Where the watcher's metrics go: `relay_sync_watch.prom` beside `METRICS_FILE`, so the
/// textfile collector that reads one reads both.
pub(crate) fn watch_path(metrics_file: &Path) -> std::path::PathBuf {
    let stem = metrics_file
        .file_stem()
        .map_or_else(|| "relay_sync".into(), |stem| stem.to_string_lossy());
    metrics_file.with_file_name(format!("{stem}_watch.prom"))
}

/// The watcher's file text.
pub(crate) fn render_watch(m: &WatchMetrics) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "relay_sync_watch_up",
        "gauge",
        "1 while relay-sync watch runs, 0 after it stopped.",
        u8::from(m.up).to_string(),
    );
    metric(
        "relay_sync_watch_last_poll_timestamp_seconds",
        "gauge",
        "When relay-sync watch last polled the database, failed polls included (Unix time); \
         stops moving when the watcher is gone, even killed.",
        m.last_poll.to_string(),
    );
    metric(
        "relay_sync_watch_polls_total",
        "counter",
        "Polls of the change signal since the watcher started, failed ones included.",
        m.polls.to_string(),
    );
    metric(
        "relay_sync_watch_changes_detected_total",
        "counter",
        "Polls that found the enabled domains changed since the watcher started.",
        m.changes.to_string(),
    );
    let name = "relay_sync_watch_propagation_seconds";
    out.push_str(&format!(
        "# HELP {name} From the poll that saw a change to the end of the sync that applied it.\n\
         # TYPE {name} histogram\n"
    ));
    let h = &m.propagation;
    for (bound, count) in PROPAGATION_BUCKETS.iter().zip(h.counts) {
        out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
    }
    out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", h.count));
    out.push_str(&format!(
        "{name}_sum {:.3}\n{name}_count {}\n",
        h.sum, h.count
    ));
    out
}

/// Writes the watcher's metrics to `path` atomically, mode 0644.
pub(crate) fn write_watch(path: &Path, m: &WatchMetrics) -> Result<(), relay_fs::FsError> {
    relay_fs::replace(path, render_watch(m).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const SAMPLE: RunMetrics = RunMetrics {
        last_run: 1_795_000_000,
        last_success: 1_794_999_700,
        exit: 0,
        domains: 4,
        added: 3,
        removed: 1,
        duration: 0.4213,
        consecutive_failures: 0,
        invalid_rows: 2,
        held: false,
        held_since: 0,
        recipients: None,
    };

    #[test]
    fn watch_textfile_format() {
        let mut m = WatchMetrics {
            up: true,
            last_poll: 1_795_000_120,
            polls: 120,
            changes: 3,
            ..WatchMetrics::default()
        };
        for seconds in [0.4, 1.2, 2.5] {
            m.propagation.observe(seconds);
        }
        insta::assert_snapshot!(render_watch(&m));
        assert_eq!(
            watch_path(Path::new("/var/lib/node-exporter/relay_sync.prom")),
            Path::new("/var/lib/node-exporter/relay_sync_watch.prom")
        );
    }

    #[test]
    fn textfile_format() {
        // The features depend on how the test is built (`cargo xtask test` enables aws).
        let text = render(&SAMPLE).replace(
            &format!("features=\"{}\"", features()),
            "features=\"[FEATURES]\"",
        );
        insta::assert_snapshot!(text);
        assert_eq!(features().is_empty(), !cfg!(feature = "aws"));
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay_sync.prom");
        write(&path, &SAMPLE).unwrap();
        assert_eq!(previous_last_success(&path), Some(1_794_999_700));
        let failed = RunMetrics {
            exit: 3,
            consecutive_failures: 1,
            last_success: previous_last_success(&path).unwrap(),
            ..SAMPLE
        };
        write(&path, &failed).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("relay_sync_last_exit_code 3\n"), "{text}");
        assert!(text.contains("relay_sync_last_success_timestamp_seconds 1794999700\n"));
        // Only the file itself is left: no temporary file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(previous_last_success(&dir.path().join("none.prom")), None);
    }
}
