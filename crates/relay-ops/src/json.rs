//! The JSON documents `relay-sync … --json` prints, for scripts and monitoring: each carries a
//! `"schema"` name with a version, and every time is RFC 3339 with its offset. Their shapes are
//! documented in `docs/json.md`; a change that breaks a reader bumps the version.
//!
//! - `status --json` is [`status()`], schema `relay-sync.status/1`: counts by default, the
//!   managed domains only when asked (`--domains`), since a million-domain gateway would print
//!   a million lines.
//! - `check --json` is [`check()`], schema `relay-sync.check/1`.

use serde::Serialize;

use crate::check::Report;
use crate::status::Status;
use crate::Hold;

/// The schema of `status --json`.
pub const STATUS_SCHEMA: &str = "relay-sync.status/1";
/// The schema of `check --json`.
pub const CHECK_SCHEMA: &str = "relay-sync.check/1";

/// `status --json`.
#[derive(Debug, Serialize)]
pub struct StatusDocument<'a> {
    /// [`STATUS_SCHEMA`].
    pub schema: &'static str,
    /// The configuration file, `null` when configured by environment only.
    pub config: Option<String>,
    /// The last run, `null` before the first one.
    pub last_run: Option<LastRun<'a>>,
    /// When the last successful run ended, `null` if none is known.
    pub last_success: Option<String>,
    /// Failed runs in a row, and how many of them could not read the database.
    pub consecutive_failures: u32,
    /// Database failures in a row.
    pub consecutive_db_failures: u32,
    /// The hold, while syncs are held.
    pub hold: Option<&'a Hold>,
    /// The transport file.
    pub transport_file: String,
    /// How many domains its managed block routes.
    pub managed_domain_count: usize,
    /// The managed domains, sorted; present only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_domains: Option<&'a [String]>,
    /// Recipient validation: entries in the recipients table; absent when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<usize>,
    /// The backup directory.
    pub backup_dir: String,
    /// Backup generations, oldest first (their stamps, for `rollback --to`).
    pub backups: &'a [String],
    /// Rows the last run that read the database rejected, as the database returned them.
    pub invalid_rows: &'a [String],
    /// Problems found while reading the files `status` reads.
    pub problems: &'a [String],
}

/// The last run, in [`StatusDocument`].
#[derive(Debug, Serialize)]
pub struct LastRun<'a> {
    /// When it ended.
    pub ended_at: Option<String>,
    /// Its exit code (SPEC §8).
    pub exit_code: u8,
    /// One line describing its result.
    pub result: &'a str,
}

/// `status --json`; `domains` adds the managed domains.
pub fn status(status: &Status, domains: bool) -> StatusDocument<'_> {
    StatusDocument {
        schema: STATUS_SCHEMA,
        config: status
            .config
            .as_ref()
            .map(|path| path.display().to_string()),
        last_run: status.last_exit.map(|exit_code| LastRun {
            ended_at: rfc3339(&status.last_run),
            exit_code,
            result: &status.last_result,
        }),
        last_success: rfc3339(&status.last_success),
        consecutive_failures: status.consecutive_failures,
        consecutive_db_failures: status.consecutive_db_failures,
        hold: status.hold.as_ref(),
        transport_file: status.transport_file.display().to_string(),
        managed_domain_count: status.managed_domains.len(),
        managed_domains: domains.then_some(status.managed_domains.as_slice()),
        recipient_count: status.recipients,
        backup_dir: status.backup_dir.display().to_string(),
        backups: &status.backups,
        invalid_rows: &status.invalid_rows,
        problems: &status.problems,
    }
}

/// `check --json`.
#[derive(Debug, Serialize)]
pub struct CheckDocument<'a> {
    /// [`CHECK_SCHEMA`].
    pub schema: &'static str,
    /// The report: `ok` (false when any check failed) and `checks` (`name`, `status` of
    /// `ok`/`warn`/`fail`, `detail`).
    #[serde(flatten)]
    pub report: &'a Report,
}

/// `check --json`.
pub fn check(report: &Report) -> CheckDocument<'_> {
    CheckDocument {
        schema: CHECK_SCHEMA,
        report,
    }
}

/// A time of the state file (RFC 3339 since this version, `YYYY-MM-DD HH:MM:SS` local time
/// before) as RFC 3339 with the offset; `None` for an empty or unreadable one. In the hour a
/// clock goes back twice, the earlier reading is taken.
pub fn rfc3339(time: &str) -> Option<String> {
    use chrono::TimeZone;
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(time) {
        return Some(parsed.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S").ok()?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|local| local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_rfc3339_with_an_offset() {
        let converted = rfc3339("2026-11-30 12:34:56").unwrap();
        assert!(converted.starts_with("2026-11-30T12:34:56"), "{converted}");
        assert!(
            converted.ends_with('Z') || converted[19..].starts_with(['+', '-']),
            "{converted}"
        );
        assert_eq!(
            rfc3339("2026-11-30T12:34:56+09:00").as_deref(),
            Some("2026-11-30T12:34:56+09:00")
        );
        assert_eq!(rfc3339(""), None);
        assert_eq!(rfc3339("yesterday"), None);
    }
}
