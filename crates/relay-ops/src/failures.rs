//! Failure tracking across runs (SPEC §7): consecutive failures and the last result, kept in
//! `STATE_DIR`, and which alerts a run's result calls for.
//!
//! [`advance`] is pure: it takes the previous state and this run's result and returns the next
//! state and the alerts to send. [`load`] and [`save`] are the I/O around it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use relay_fs::Kind;
use serde::{Deserialize, Serialize};

/// The state file's name inside `STATE_DIR`.
pub(crate) const STATE_FILE: &str = "state";

/// Database failures in a row before the monitoring line of the document is logged.
pub(crate) const DB_FAILURES_LOGGED_AFTER: u32 = 3;

/// What is remembered between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct RunState {
    /// Failed runs in a row (exit 3, 4, 5, 6).
    pub consecutive_failures: u32,
    /// Runs in a row that could not read the database (exit 3).
    pub consecutive_db_failures: u32,
    /// Whether an alert was sent during the current failure streak (a recovery notice is owed).
    #[serde(with = "yes_no")]
    pub alerted: bool,
    /// Exit code of the last run.
    pub last_exit: u8,
    /// One line describing the last run's result.
    pub last_result: String,
    /// When the last run ended, `YYYY-MM-DD HH:MM:SS` local time.
    pub last_run: String,
    /// When the last successful run ended.
    pub last_success: String,
}

/// serde_ini has no booleans: the state file says `yes` or `no`.
mod yes_no {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &bool, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if *value { "yes" } else { "no" })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<bool, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "expected yes or no, not {other:?}"
            ))),
        }
    }
}

/// How urgent an alert is; passed to `ALERT_COMMAND` as `RELAY_SYNC_ALERT_SEVERITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `postfix reload` or a rollback failed: someone must look now.
    Critical,
    /// Runs keep failing.
    Warning,
    /// A streak that was alerted on has ended.
    Recovery,
}

impl Severity {
    /// The word passed to `ALERT_COMMAND`: `critical`, `warning` or `recovery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Recovery => "recovery",
        }
    }
}

/// An alert to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// How urgent it is.
    pub severity: Severity,
    /// One line: the mail subject, `RELAY_SYNC_ALERT_SUBJECT`.
    pub subject: String,
    /// The text: the mail body, the command's stdin.
    pub body: String,
}

/// This run's result, as failure tracking sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunResult<'a> {
    /// The exit code (SPEC §8).
    pub(crate) exit: u8,
    /// One line describing the result.
    pub(crate) summary: &'a str,
    /// When the run ended.
    pub(crate) now: &'a str,
    /// The host name, for alert subjects.
    pub(crate) host: &'a str,
    /// The commands that show what Postfix runs with, written for this instance (`-c`, a
    /// container prefix): the critical alert asks the reader to run them.
    pub(crate) postfix_checks: &'a str,
}

/// When a failure streak calls for the warning alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertRule {
    /// Cron and one-off runs: when the streak reaches `ALERT_AFTER_FAILURES` runs.
    AfterRuns(u32),
    /// Watch mode, where runs come at any pace: when the streak has lasted `after`
    /// (`ALERT_AFTER_SECONDS`). `failing_for` is how long it has lasted at this run, and
    /// `failing_for_before` at the previous one, so the alert is sent once, by the run that
    /// crosses the threshold.
    AfterTime {
        after: std::time::Duration,
        failing_for: std::time::Duration,
        failing_for_before: std::time::Duration,
    },
}

impl AlertRule {
    /// Whether a failed run that makes the streak `failures` long calls for the warning.
    fn warns(self, failures: u32) -> bool {
        match self {
            AlertRule::AfterRuns(after) => failures == after,
            AlertRule::AfterTime {
                after,
                failing_for,
                failing_for_before,
            } => failing_for >= after && (failures == 1 || failing_for_before < after),
        }
    }
}

/// The next state and the alerts that `result` calls for under `rule`.
pub(crate) fn advance(
    previous: &RunState,
    result: RunResult<'_>,
    rule: impl Into<AlertRule>,
) -> (RunState, Vec<Alert>) {
    let rule = rule.into();
    let host = result.host;
    let mut alerts = Vec::new();
    let mut next = RunState {
        last_exit: result.exit,
        // The state file is KEY=VALUE lines: a multi-line error (postmap's stderr) must not
        // break it, or the streak would restart at every run and never alert.
        last_result: one_line(result.summary),
        last_run: result.now.to_owned(),
        ..previous.clone()
    };
    if result.exit == 0 {
        if previous.alerted {
            alerts.push(Alert {
                severity: Severity::Recovery,
                subject: format!("relay-sync on {host}: recovered"),
                body: format!(
                    "relay-sync on {host} succeeded again at {} after {} failed run(s).\n\nResult: {}\n",
                    result.now, previous.consecutive_failures, result.summary
                ),
            });
        }
        next.consecutive_failures = 0;
        next.consecutive_db_failures = 0;
        next.alerted = false;
        next.last_success = result.now.to_owned();
        return (next, alerts);
    }

    next.consecutive_failures = previous.consecutive_failures.saturating_add(1);
    next.consecutive_db_failures = if result.exit == 3 {
        previous.consecutive_db_failures.saturating_add(1)
    } else {
        0
    };
    let last_success = if previous.last_success.is_empty() {
        "never (since state was first kept)".to_owned()
    } else {
        previous.last_success.clone()
    };
    if result.exit == 6 {
        alerts.push(Alert {
            severity: Severity::Critical,
            subject: format!("relay-sync on {host}: CRITICAL, manual intervention required"),
            body: format!(
                "relay-sync on {host} could not reload Postfix or roll back at {}.\n\n\
                 Result: {}\n\nCheck {}; the backups are in BACKUP_DIR. Last successful \
                 run: {last_success}.\n",
                result.now, result.summary, result.postfix_checks
            ),
        });
    }
    if rule.warns(next.consecutive_failures) {
        alerts.push(Alert {
            severity: Severity::Warning,
            subject: format!(
                "relay-sync on {host}: {} consecutive failed runs",
                next.consecutive_failures
            ),
            body: format!(
                "relay-sync on {host} has failed {} times in a row (exit {}).\n\n\
                 Last result: {}\nLast successful run: {last_success}.\n\n\
                 Mail for domains already configured keeps flowing; new or disabled domains \
                 are not being synced.\n",
                next.consecutive_failures, result.exit, result.summary
            ),
        });
    }
    next.alerted |= !alerts.is_empty();
    (next, alerts)
}

impl From<u32> for AlertRule {
    fn from(runs: u32) -> AlertRule {
        AlertRule::AfterRuns(runs)
    }
}

/// `text` on one line: line breaks and other control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error(
        "{path} is not a relay-sync state file ({detail}); delete it to start counting afresh"
    )]
    Parse { path: PathBuf, detail: String },
    /// relay-fs refused the state file or could not read or write it; it names the file and
    /// the fix.
    #[error(transparent)]
    File(#[from] relay_fs::FsError),
}

/// The file in `STATE_DIR` where a run remembers, for the next, what it reports only when it
/// changes ([`Remembered`]); a JSON document, since the rejected rows are hostile and may
/// hold any character. Its name is that of its first content.
pub(crate) const INVALID_ROWS_FILE: &str = "invalid-rows.json";

/// What a run remembers for the next in [`INVALID_ROWS_FILE`], so that a condition that stays
/// as it is is not reported at the same level on every run: the rows the database returned
/// that were rejected (an ERROR only when that set changes, `status` lists them) and the steady
/// conditions an operator chose, such as a hand-written transport line (a WARN only when one
/// appears or changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    /// The raw values of the rows the last run that read the database rejected.
    pub(crate) rows: BTreeSet<String>,
    /// The keys of the steady conditions the last run that planned reported
    /// ([`relay_engine::SyncSettings::known_noted`]); `None` in a file an earlier version
    /// wrote.
    #[serde(default)]
    pub(crate) noted: Option<BTreeSet<String>>,
}

/// [`INVALID_ROWS_FILE`] as read: earlier versions kept the rejected rows alone, as an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Rows(BTreeSet<String>),
    Remembered(Remembered),
}

/// What the last run remembered; `None` before any run that read the database, or when the
/// file does not parse (logged). A file relay-sync keeps ([`Kind::INVALID_ROWS`]): a link, a
/// FIFO or another user's file there is refused.
pub(crate) fn load_remembered(state_dir: &Path) -> Result<Option<Remembered>, relay_fs::FsError> {
    let path = state_dir.join(INVALID_ROWS_FILE);
    let Some(bytes) = relay_fs::read(Kind::INVALID_ROWS, &path)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes)
        .map(|stored| match stored {
            Stored::Rows(rows) => Remembered { rows, noted: None },
            Stored::Remembered(remembered) => remembered,
        })
        .map_err(|error| {
            tracing::warn!("Ignoring {}: {error}", path.display());
        })
        .ok())
}

/// The rows the last run that read the database rejected (see [`load_remembered`]).
pub(crate) fn load_invalid_rows(
    state_dir: &Path,
) -> Result<Option<BTreeSet<String>>, relay_fs::FsError> {
    Ok(load_remembered(state_dir)?.map(|remembered| remembered.rows))
}

/// Remembers what this run reported, for the next run and `status`. A set too large to be
/// read back ([`Kind::INVALID_ROWS`]'s limit: a hostile database) is not remembered: the file
/// is removed, and every run then logs the rejected rows as new.
pub(crate) fn save_remembered(state_dir: &Path, remembered: &Remembered) -> Result<(), StateError> {
    let path = state_dir.join(INVALID_ROWS_FILE);
    relay_fs::create_dir(state_dir, 0o700)?;
    let bytes = serde_json::to_vec(remembered).map_err(|e| StateError::Parse {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if bytes.len() as u64 > Kind::INVALID_ROWS.limit() {
        tracing::warn!(
            "{} rejected rows are too many to remember ({} bytes); each run logs them as new",
            remembered.rows.len(),
            bytes.len()
        );
        return match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(relay_fs::FsError::Io {
                    action: "remove",
                    path,
                    source: error,
                }
                .into())
            }
            _ => Ok(()),
        };
    }
    relay_fs::replace(&path, &bytes, 0o600)?;
    Ok(())
}

/// Reads the state; a missing file is a fresh state. A file relay-sync keeps
/// ([`Kind::STATE`]): a link, a FIFO, a device or another user's file there is refused.
pub(crate) fn load(state_dir: &Path) -> Result<RunState, StateError> {
    let path = state_dir.join(STATE_FILE);
    match relay_fs::read_to_string(Kind::STATE, &path)? {
        Some(text) => serde_ini::from_str(&text).map_err(|e| StateError::Parse {
            path,
            detail: e.to_string(),
        }),
        None => Ok(RunState::default()),
    }
}

/// Writes the state atomically ([`relay_fs::replace`]), creating `state_dir` (0700).
pub(crate) fn save(state_dir: &Path, state: &RunState) -> Result<(), StateError> {
    let path = state_dir.join(STATE_FILE);
    relay_fs::create_dir(state_dir, 0o700)?;
    let text = serde_ini::to_string(state).map_err(|e| StateError::Parse {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    relay_fs::replace(&path, text.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rejected rows and the noted conditions survive a round trip; a file of an earlier
    /// version (the rows alone, an array) still gives its rows, and no noted condition.
    #[test]
    fn remembered_rows_and_conditions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_remembered(dir.path()).unwrap(), None);
        let remembered = Remembered {
            rows: BTreeSet::from(["bad\nrow".to_owned(), "recipient:x".to_owned()]),
            noted: Some(BTreeSet::from(["hand-written:a.example".to_owned()])),
        };
        save_remembered(dir.path(), &remembered).unwrap();
        assert_eq!(
            load_remembered(dir.path()).unwrap(),
            Some(remembered.clone())
        );
        assert_eq!(
            load_invalid_rows(dir.path()).unwrap(),
            Some(remembered.rows)
        );

        std::fs::write(dir.path().join(INVALID_ROWS_FILE), r#"["old row"]"#).unwrap();
        assert_eq!(
            load_remembered(dir.path()).unwrap(),
            Some(Remembered {
                rows: BTreeSet::from(["old row".to_owned()]),
                noted: None,
            })
        );
    }

    fn result(exit: u8) -> RunResult<'static> {
        RunResult {
            exit,
            summary: "something",
            now: "2026-11-23 12:00:00",
            host: "mx1",
            postfix_checks: "`postfix status` and `postconf -h relay_domains`",
        }
    }

    /// Runs a sequence of exit codes; returns the severities alerted at each run.
    fn check(exits: &[u8], alert_after: u32) -> Vec<Vec<Severity>> {
        let mut state = RunState::default();
        exits
            .iter()
            .map(|&exit| {
                let (next, alerts) = advance(&state, result(exit), alert_after);
                state = next;
                alerts.iter().map(|a| a.severity).collect()
            })
            .collect()
    }

    #[test]
    fn warning_once_at_the_threshold_and_recovery_after() {
        use Severity::*;
        assert_eq!(
            check(&[3, 3, 3, 3, 3, 3, 0, 0], 5),
            vec![
                vec![],
                vec![],
                vec![],
                vec![],
                vec![Warning],
                vec![],
                vec![Recovery],
                vec![]
            ]
        );
    }

    /// Watch mode: a failure every 30 s for 40 minutes warns once, when the streak crosses
    /// 25 minutes, however many runs that took; a recovery follows the first success.
    #[test]
    fn watch_mode_warns_once_when_the_streak_lasts_long_enough() {
        use std::time::Duration;
        let after = Duration::from_secs(25 * 60);
        let mut state = RunState::default();
        let mut warned_at = Vec::new();
        for run in 0..80u64 {
            let rule = AlertRule::AfterTime {
                after,
                failing_for: Duration::from_secs(run * 30),
                failing_for_before: Duration::from_secs(run.saturating_sub(1) * 30),
            };
            let (next, alerts) = advance(&state, result(3), rule);
            state = next;
            if alerts.iter().any(|a| a.severity == Severity::Warning) {
                warned_at.push(run * 30);
            }
        }
        assert_eq!(warned_at, [1500]);
        let rule = AlertRule::AfterTime {
            after,
            failing_for: Duration::ZERO,
            failing_for_before: Duration::ZERO,
        };
        let (_, alerts) = advance(&state, result(0), rule);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].severity, Severity::Recovery);
    }

    #[test]
    fn every_critical_alerts_and_owes_a_recovery() {
        use Severity::*;
        assert_eq!(
            check(&[6, 6, 0, 5, 0], 5),
            vec![
                vec![Critical],
                vec![Critical],
                vec![Recovery],
                vec![],
                vec![]
            ]
        );
    }

    #[test]
    fn no_recovery_for_a_streak_that_never_alerted() {
        assert_eq!(check(&[4, 4, 0], 5), vec![vec![], vec![], vec![]]);
    }

    #[test]
    fn database_failures_count_only_in_a_row() {
        let mut state = RunState::default();
        for exit in [3, 3, 5, 3, 3, 3] {
            state = advance(&state, result(exit), 5).0;
        }
        assert_eq!(state.consecutive_db_failures, 3);
        assert_eq!(state.consecutive_failures, 6);
    }

    #[test]
    fn a_multi_line_error_keeps_the_state_file_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = RunState::default();
        for _ in 0..3 {
            let result = RunResult {
                summary: "postmap: warning: x\npostmap: fatal: y\r\n",
                ..result(5)
            };
            state = advance(&state, result, 5).0;
            save(dir.path(), &state).unwrap();
            state = load(dir.path()).unwrap();
        }
        assert_eq!(state.consecutive_failures, 3);
        assert_eq!(state.last_result, "postmap: warning: x postmap: fatal: y");
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(load(&state_dir).unwrap(), RunState::default());
        let (state, _) = advance(&RunState::default(), result(3), 5);
        save(&state_dir, &state).unwrap();
        assert_eq!(load(&state_dir).unwrap(), state);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&state_dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }
}
