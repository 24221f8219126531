//! `relay-sync status` (SPEC §9): the state at a glance, from files only: the last result and
//! failure streak (`STATE_DIR`), the managed domains (the transport file's managed block), and
//! the backups. It reaches neither the database nor Postfix, so it answers even when both are
//! down, and it never shows a secret (it does not read one).

use std::path::PathBuf;
use std::time::Duration;

use relay_core::TransportFile;
use relay_fs::Kind;
use relay_postfix::list_backups;
use serde::Serialize;

use crate::config::Config;
use crate::failures;

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The configuration file, when there is one.
    pub config: Option<PathBuf>,
    /// The last run's exit code, `None` before the first run.
    pub last_exit: Option<u8>,
    /// The last run's result, one line.
    pub last_result: String,
    /// When the last run ended (local time), empty before the first run.
    pub last_run: String,
    /// When the last successful run ended, empty if none.
    pub last_success: String,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
    /// Database failures in a row.
    pub consecutive_db_failures: u32,
    /// The transport file.
    pub transport_file: PathBuf,
    /// Domains in the managed block, sorted.
    pub managed_domains: Vec<String>,
    /// Recipient validation: addresses and catch-alls in the recipients table
    /// (`RECIPIENTS_MAP`); `None` when `RECIPIENTS_QUERY` is not set.
    pub recipients: Option<usize>,
    /// The backup directory.
    pub backup_dir: PathBuf,
    /// Backup stamps, oldest first.
    pub backups: Vec<String>,
    /// The database rows the last run that read the database rejected as invalid names, as
    /// the database returned them (escape them for a terminal).
    pub invalid_rows: Vec<String>,
    /// The hold, while syncs are held (`relay-sync hold`).
    pub hold: Option<crate::Hold>,
    /// Problems found while reading (an unreadable state or transport file).
    pub problems: Vec<String>,
}

impl Status {
    /// How long ago the last successful run ended; `None` when none is recorded (or its time
    /// cannot be read). `relay-sync status --max-age` compares it with the limit.
    pub fn last_success_age(&self) -> Option<std::time::Duration> {
        let ended = chrono::NaiveDateTime::parse_from_str(&self.last_success, "%Y-%m-%d %H:%M:%S")
            .ok()?
            .and_local_timezone(chrono::Local)
            .earliest()?;
        // A clock set back reads as "just now" rather than as no success at all.
        Some((chrono::Local::now() - ended).to_std().unwrap_or_default())
    }

    /// Whether the last successful sync ended within `max_age` (`status --max-age`, a
    /// container HEALTHCHECK); [`Health::Healthy`] when no limit is given.
    pub fn health(&self, max_age: Option<Duration>) -> Health {
        let Some(max_age) = max_age else {
            return Health::Healthy;
        };
        match self.last_success_age() {
            Some(age) if age <= max_age => Health::Healthy,
            Some(age) => Health::Stale { age, max_age },
            None => Health::NeverSynced { max_age },
        }
    }
}

/// `status --max-age`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last successful sync is recent enough, or no limit was asked for.
    Healthy,
    /// The last successful sync ended `age` ago, more than `max_age`.
    Stale {
        /// How long ago it ended.
        age: Duration,
        /// The limit.
        max_age: Duration,
    },
    /// No successful sync is recorded.
    NeverSynced {
        /// The limit.
        max_age: Duration,
    },
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Healthy => f.write_str("healthy"),
            Health::Stale { age, max_age } => write!(
                f,
                "unhealthy: the last successful sync ended {} s ago, more than {} s",
                age.as_secs(),
                max_age.as_secs()
            ),
            Health::NeverSynced { max_age } => write!(
                f,
                "unhealthy: no successful sync is recorded (limit {} s)",
                max_age.as_secs()
            ),
        }
    }
}

/// Reads the status for `config`.
pub fn read(config: &Config) -> Status {
    let mut problems = Vec::new();
    let state_path = config.state_dir.join(failures::STATE_FILE);
    let state = match failures::load(&config.state_dir) {
        Ok(state) => Some(state).filter(|_| state_path.exists()),
        Err(error) => {
            problems.push(error.to_string());
            None
        }
    };
    let managed_domains = match relay_fs::read_to_string(Kind::MAP_SOURCE, &config.transport_file) {
        Ok(Some(text)) => match TransportFile::parse(&text) {
            Ok(file) => file
                .managed_entries()
                .map(|(key, _)| key.to_owned())
                .collect(),
            Err(error) => {
                problems.push(format!("{}: {error}", config.transport_file.display()));
                Vec::new()
            }
        },
        Ok(None) => Vec::new(),
        Err(error) => {
            problems.push(error.to_string());
            Vec::new()
        }
    };
    let recipients = config.recipients_query.as_ref().map(|_| {
        recipients_in_table(&config.recipients_map).unwrap_or_else(|error| {
            problems.push(error);
            0
        })
    });
    let backups = match list_backups(&config.backup_dir) {
        Ok(generations) => generations.into_iter().map(|g| g.stamp).collect(),
        Err(error) => {
            problems.push(error.to_string());
            Vec::new()
        }
    };
    let state = state.unwrap_or_default();
    let ran = !state.last_run.is_empty();
    Status {
        config: config.file.clone(),
        last_exit: ran.then_some(state.last_exit),
        last_result: state.last_result,
        last_run: state.last_run,
        last_success: state.last_success,
        consecutive_failures: state.consecutive_failures,
        consecutive_db_failures: state.consecutive_db_failures,
        transport_file: config.transport_file.clone(),
        managed_domains,
        recipients,
        backup_dir: config.backup_dir.clone(),
        backups,
        hold: crate::hold::read(&config.state_dir).unwrap_or_else(|error| {
            problems.push(error.to_string());
            None
        }),
        invalid_rows: failures::load_invalid_rows(&config.state_dir)
            .unwrap_or_else(|error| {
                problems.push(error.to_string());
                None
            })
            .map(|rows| rows.into_iter().collect())
            .unwrap_or_default(),
        problems,
    }
}

/// The entries of the recipients table's source at `path` (0 when it does not exist yet), or
/// what made it unreadable. Read a line at a time: at a million addresses the file is 30 MB,
/// and `status` and every run's metrics count it. Opened through relay-fs
/// ([`Kind::MAP_SOURCE`]): a FIFO or a device there is refused, not read.
pub(crate) fn recipients_in_table(path: &std::path::Path) -> Result<usize, String> {
    use std::io::BufRead;
    let unreadable = |error: std::io::Error| format!("cannot read {}: {error}", path.display());
    let file = match relay_fs::open(Kind::MAP_SOURCE, path) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(0),
        Err(error) => return Err(error.to_string()),
    };
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        if relay_core::entry_key(&line.map_err(unreadable)?).is_some() {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn recipients_are_counted_as_relay_core_reads_the_table() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("relay_recipients");
        assert_eq!(super::recipients_in_table(&path), Ok(0));
        let text = format!(
            "{}\na@x.example OK\n\n# note\n  continued\n@y.example OK\n",
            relay_core::RECIPIENTS_HEADER
        );
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let table = relay_core::RecipientsTable::new("", "", Some(&text));
        assert_eq!(super::recipients_in_table(&path), Ok(table.keys().count()));
        assert_eq!(super::recipients_in_table(&path), Ok(2));
    }
}
