//! `METRICS_FILE`: the last run in the Prometheus textfile-collector format (node_exporter's
//! `--collector.textfile.directory`), written after every sync that is not a dry run.
//!
//! The file is replaced atomically (temporary file in the same directory, fsync, rename), so the
//! collector never reads half a file. [`render`] is pure; [`write()`] is the I/O around it.

use std::fs;
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
    out
}

/// The last success recorded in an existing metrics file, if any.
pub(crate) fn previous_last_success(path: &Path) -> Option<i64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.trim().parse().ok())
}

/// Writes `m` to `path` atomically, mode 0644 (the collector runs as another user).
pub(crate) fn write(path: &Path, m: &RunMetrics) -> Result<(), relay_postfix::PostfixError> {
    // The temporary name (`.NAME.relay-sync.tmp`) does not end in `.prom`, which is all
    // node_exporter reads, so a half-written file is never collected.
    relay_postfix::replace_file(path, render(m).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
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
    };

    #[test]
    fn textfile_format() {
        insta::assert_snapshot!(render(&SAMPLE));
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
