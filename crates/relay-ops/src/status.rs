//! `relay-sync status` (SPEC §9): the state at a glance, from files only: the last result and
//! failure streak (`STATE_DIR`), the managed domains (the transport file's managed block), and
//! the backups. It reaches neither the database nor Postfix, so it answers even when both are
//! down, and it never shows a secret (it does not read one).

use std::path::PathBuf;

use relay_core::{cut_list, TransportFile};
use relay_postfix::list_backups;
use serde::Serialize;

use crate::config::Config;
use crate::failures;

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// The configuration file, when there is one.
    pub(crate) config: Option<PathBuf>,
    /// The last run's exit code, `None` before the first run.
    pub(crate) last_exit: Option<u8>,
    /// The last run's result, one line.
    pub(crate) last_result: String,
    /// When the last run ended (local time), empty before the first run.
    pub(crate) last_run: String,
    /// When the last successful run ended, empty if none.
    pub(crate) last_success: String,
    /// Failed runs in a row.
    pub(crate) consecutive_failures: u32,
    /// Database failures in a row.
    pub(crate) consecutive_db_failures: u32,
    /// The transport file.
    pub(crate) transport_file: PathBuf,
    /// Domains in the managed block, sorted.
    pub(crate) managed_domains: Vec<String>,
    /// The backup directory.
    pub(crate) backup_dir: PathBuf,
    /// Backup stamps, oldest first.
    pub(crate) backups: Vec<String>,
    /// Problems found while reading (an unreadable state or transport file).
    pub(crate) problems: Vec<String>,
}

/// Reads the status for `config`.
pub(crate) fn read(config: &Config) -> Status {
    let mut problems = Vec::new();
    let state_path = config.state_dir.join(failures::STATE_FILE);
    let state = match failures::load(&config.state_dir) {
        Ok(state) => Some(state).filter(|_| state_path.exists()),
        Err(error) => {
            problems.push(error.to_string());
            None
        }
    };
    let managed_domains = match std::fs::read_to_string(&config.transport_file) {
        Ok(text) => match TransportFile::parse(&text) {
            Ok(file) => file
                .managed_entries()
                .map(|(key, _)| key.to_owned())
                .collect(),
            Err(error) => {
                problems.push(format!("{}: {error}", config.transport_file.display()));
                Vec::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            problems.push(format!(
                "cannot read {}: {error}",
                config.transport_file.display()
            ));
            Vec::new()
        }
    };
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
        backup_dir: config.backup_dir.clone(),
        backups,
        problems,
    }
}

impl Status {
    /// The human-readable form.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<17}{value}\n"));
        };
        line(
            "config:",
            self.config.as_ref().map_or_else(
                || "(environment only)".to_owned(),
                |p| p.display().to_string(),
            ),
        );
        match self.last_exit {
            None => line("last run:", "never (no state in STATE_DIR yet)".to_owned()),
            Some(exit) => line(
                "last run:",
                format!(
                    "{} exit {exit} ({})",
                    self.last_run,
                    if exit == 0 { "ok" } else { "FAILED" }
                ),
            ),
        }
        if self.last_exit.is_some() {
            line("last result:", self.last_result.clone());
        }
        line(
            "last success:",
            if self.last_success.is_empty() {
                "never".to_owned()
            } else {
                self.last_success.clone()
            },
        );
        line(
            "failure streak:",
            format!(
                "{} run(s), {} of them database failures",
                self.consecutive_failures, self.consecutive_db_failures
            ),
        );
        line(
            "managed domains:",
            format!(
                "{} in {}{}",
                self.managed_domains.len(),
                self.transport_file.display(),
                if self.managed_domains.is_empty() {
                    String::new()
                } else {
                    format!(": {}", cut_list(&self.managed_domains, 100))
                }
            ),
        );
        line(
            "backups:",
            match self.backups.last() {
                None => format!("none in {}", self.backup_dir.display()),
                Some(newest) => format!(
                    "{} in {}, newest {newest}",
                    self.backups.len(),
                    self.backup_dir.display()
                ),
            },
        );
        for problem in &self.problems {
            line("PROBLEM:", problem.clone());
        }
        out
    }
}
