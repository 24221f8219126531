//! One sync as an operator runs it (SPEC §2): the lock, the preflight around the engine (the
//! password, the Postfix commands and `transport_maps`, a killed run's leftovers), the engine's
//! run, and then the record of it (state, streak, alerts, metrics).
//!
//! Every run that got as far as a readable config is recorded, whatever its exit code: a
//! password source that fails, a Postfix command that is missing or a `transport_maps` that does
//! not read the transport file count toward the failure streak and show in `status` and the
//! metrics like a database outage does. The only run not recorded is one that stepped aside
//! because another holds the lock: it did nothing, and the holder records its own result.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_core::{DomainName, GuardSettings, Refusal};
use relay_db::{DbError, DomainSource, Fingerprint, MariaDbSource};
use relay_engine::{Outcome, Prepared, SyncSettings};
use relay_postfix::{PostfixCli, PostfixError};

use crate::alert::AlertSink;
use crate::config::{Config, ConfigError, RelayDomainsMode};
use crate::failures::AlertRule;
use crate::hold::Hold;
use crate::journal::Journaled;
use crate::lock::{self, LockError};
use crate::password::{self, Logins};
use crate::{check, failures, metrics, outbox, state_dir};

/// What a caller may change about one sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Lift the safety guard's removal limit for this run (`--force`).
    pub force: bool,
}

/// How a run ended, as far as the gateway is concerned.
///
/// [`RunOutcome::exit_status`] (in `exit.rs`, beside every other command's) classifies it for
/// SPEC §8.
#[derive(Debug)]
pub enum RunOutcome {
    /// The engine ran: fetch, plan, guard, apply, verify (and roll back on failure).
    Sync(Outcome),
    /// Another run holds the lock; this one did nothing.
    Skipped(lock::Held),
    /// Syncs are held (`relay-sync hold`); this one changed nothing.
    Held(Hold),
    /// The database password could not be had (`DB_PASSWORD_FILE` unreadable,
    /// `DB_PASSWORD_COMMAND` failing, `DB_PASSWORD_SECRET` not readable): the database cannot
    /// be reached, nothing was touched.
    PasswordFailed(ConfigError),
    /// This host is not set up to sync: nothing was touched.
    NotReady(NotReady),
    /// relay-sync itself could not work (the lock file cannot be created, no thread or
    /// runtime could be started).
    Internal(String),
}

/// Why a host is not ready to sync ([`RunOutcome::NotReady`], exit 2).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A Postfix command is missing.
    #[error(transparent)]
    Postfix(PostfixError),
    /// `transport_maps` does not read the transport map relay-sync builds.
    #[error("{0}")]
    TransportMaps(String),
    /// A file relay-sync keeps in `STATE_DIR`, its lock or its log is not what relay-sync may
    /// read or write (a link, a FIFO, another user's file, a directory others can write):
    /// relay-fs names it and the fix.
    #[error(transparent)]
    File(relay_fs::FsError),
}

impl std::fmt::Display for RunOutcome {
    /// One line for the state file, `status` and alerts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunOutcome::Sync(outcome) => outcome.fmt(f),
            RunOutcome::Skipped(held) => write!(f, "skipped: {held}"),
            RunOutcome::Held(hold) => write!(f, "held: {hold}"),
            RunOutcome::PasswordFailed(error) => write!(f, "database failed: {error}"),
            RunOutcome::NotReady(error) => write!(f, "not ready to sync: {error}"),
            RunOutcome::Internal(error) => write!(f, "internal error: {error}"),
        }
    }
}

/// One sync, as it ended.
#[derive(Debug)]
pub struct RunRecord {
    /// How it ended.
    pub outcome: RunOutcome,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Local>,
    /// How long it took.
    pub duration: Duration,
}

impl RunRecord {
    /// Domains the run added and removed (empty unless it applied a change).
    pub fn changes(&self) -> (Vec<&str>, Vec<&str>) {
        match &self.outcome {
            RunOutcome::Sync(Outcome::Applied(applied)) => (
                applied.added.iter().map(DomainName::as_str).collect(),
                applied.removed.iter().map(DomainName::as_str).collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        }
    }
}

/// What a dry run found.
#[derive(Debug)]
pub enum DryRun {
    /// A change is due: the plan and the guard's verdict on it.
    Planned {
        /// The plan and what it was computed from.
        prepared: Box<Prepared>,
        /// `Err` when the guard would refuse it.
        verdict: Result<(), Refusal>,
    },
    /// Postfix already matches the database.
    NoChange,
    /// The dry run could not plan (database, Postfix or config failure).
    Failed(RunOutcome),
}

/// Runs one sync under the lock and records it. Blocking; see [`crate::Gateway::sync`].
pub(crate) fn sync(
    config: &Config,
    logins: &Arc<Logins>,
    alerts: &[Arc<dyn AlertSink>],
    options: SyncOptions,
) -> RunRecord {
    let rule = AlertRule::AfterRuns(config.alert_after_failures);
    sync_with(config, logins, alerts, options, rule, false).0
}

/// [`sync`] with the watcher's alert rule, and the [`Fingerprint`] of the names the run read
/// from the database (when `fingerprint` is asked for and the fetch succeeded): the watcher
/// compares later polls with exactly what this run planned from.
pub(crate) fn sync_with(
    config: &Config,
    logins: &Arc<Logins>,
    alerts: &[Arc<dyn AlertSink>],
    options: SyncOptions,
    rule: AlertRule,
    fingerprint: bool,
) -> (RunRecord, Option<Fingerprint>) {
    let started_at = chrono::Local::now();
    let started = Instant::now();
    let outcome = match lock::take(&config.lock_file) {
        Err(LockError::Held(held)) => {
            if held.is_stuck(stuck_after(config)) {
                tracing::error!(
                    "Another sync is running and {held}; it may be stuck: check `ps` for \
                     relay-sync and the postfix or docker commands it runs"
                );
            } else {
                tracing::info!("Another sync is running, skipping ({held})");
            }
            // Not recorded: this run did nothing, and the holder records its own result.
            let record = RunRecord {
                outcome: RunOutcome::Skipped(held),
                started_at,
                duration: started.elapsed(),
            };
            return (record, None);
        }
        Err(LockError::Refused(error)) => {
            tracing::error!("{error}");
            (RunOutcome::NotReady(NotReady::File(error)), None)
        }
        Err(error) => {
            tracing::error!("{error}");
            (RunOutcome::Internal(error.to_string()), None)
        }
        Ok(_lock) => {
            match log_file_refusal(config).map_or_else(|| state_dir::read(&config.state_dir), Err) {
                Ok(kept) => match kept.hold {
                    Some(hold) => {
                        tracing::warn!(
                        "Syncs are {hold}; nothing changed (`relay-sync release` lifts the hold)"
                    );
                        (RunOutcome::Held(hold), None)
                    }
                    None => locked_sync(config, logins, options, fingerprint, kept),
                },
                // The operator's intent (a hold) or the run's memory is unknown: change nothing,
                // and say so.
                Err(error) => {
                    tracing::error!("{error}");
                    tracing::error!("Keeping current configuration");
                    (RunOutcome::NotReady(NotReady::File(error)), None)
                }
            }
        }
    };
    let (outcome, fingerprint) = outcome;
    record(config, alerts, &outcome, started, rule);
    let record = RunRecord {
        outcome,
        started_at,
        duration: started.elapsed(),
    };
    (record, fingerprint)
}

/// Records a database failure the watcher met while polling (no run was started): state,
/// streak, alerts and metrics show the outage as they would a failed cron run.
pub(crate) fn record_poll_failure(
    config: &Config,
    alerts: &[Arc<dyn AlertSink>],
    outcome: RunOutcome,
    rule: AlertRule,
) {
    record(config, alerts, &outcome, Instant::now(), rule);
}

/// Why `LOG_FILE` is not a file relay-sync may append to, when it is not (a FIFO, a device,
/// someone else's link): relay-cli then logs to stderr only, and the run is refused, so that
/// the refusal is recorded and alerted rather than only printed.
fn log_file_refusal(config: &Config) -> Option<relay_fs::FsError> {
    if config.logs_to_stdout() {
        return None;
    }
    relay_fs::check_writable(&config.log_file)
        .err()
        .filter(relay_fs::FsError::is_refusal)
}

/// How long a lock may be held before the run stepping aside calls it stuck: twice the bound of
/// every command, plus the database's timeouts.
fn stuck_after(config: &Config) -> Duration {
    2 * config.command_timeout + config.db_connect_timeout + config.db_query_timeout
}

/// The sync proper, under the lock; with the fingerprint of the rows read when asked for.
fn locked_sync(
    config: &Config,
    logins: &Arc<Logins>,
    options: SyncOptions,
    want_fingerprint: bool,
    kept: state_dir::Kept,
) -> (RunOutcome, Option<Fingerprint>) {
    let Preflight {
        settings,
        postfix,
        source,
        runtime,
    } = match Preflight::run(config, logins, true) {
        Ok(prepared) => prepared,
        Err(outcome) => return (outcome, None),
    };
    let known = kept.remembered;
    let fingerprint = want_fingerprint.then(|| source.fingerprint()).flatten();
    let settings = SyncSettings {
        guard: GuardSettings {
            force: options.force,
            ..settings.guard
        },
        reload_pending: kept.reload_pending,
        known_rejected: known.as_ref().map(|known| known.rows.clone()),
        known_noted: known.as_ref().and_then(|known| known.noted.clone()),
        ..settings
    };
    // Under the lock: what a run killed mid-write left goes now, not at the next change.
    if let Err(error) = postfix.remove_leftovers() {
        tracing::warn!("{error}");
    }
    let postfix = Journaled::new(postfix, &config.state_dir);
    let since = relay_postfix::newest_backup_sequence(&config.backup_dir);
    let (outcome, report) =
        runtime.block_on(relay_engine::run_reported(&settings, &source, &postfix));
    finish_backups(config, since, &outcome);
    // What the run saw replaces what was remembered; what it did not get to see stays.
    let saw = report.rejected.is_some() || report.noted.is_some();
    let mut remembered = known.clone().unwrap_or_default();
    if let Some(rejected) = &report.rejected {
        // Recipient rows are remembered beside the domain rows, told apart by a prefix.
        remembered.rows = relay_engine::rejected_keys(rejected, &report.rejected_recipients)
            .map(std::borrow::Cow::into_owned)
            .collect();
    }
    if let Some(noted) = report.noted {
        remembered.noted = Some(noted);
    }
    // Written only when something changed: a run with nothing to do writes as little as it
    // can.
    if saw && known.as_ref() != Some(&remembered) {
        if let Err(error) = failures::save_remembered(&config.state_dir, &remembered) {
            tracing::error!("Rejected rows not remembered: {error}");
        }
    }
    (RunOutcome::Sync(outcome), fingerprint)
}

/// Gives the generation this run wrote (if any) its origin, and rotates: a run that failed and
/// rolled back wrote one that holds the state still in place, which must not push out the
/// generations of runs that worked (see `relay_postfix::finish_backups`).
fn finish_backups(config: &Config, since: Result<u64, PostfixError>, outcome: &Outcome) {
    let since = match since {
        Ok(since) => since,
        Err(error) => {
            tracing::warn!("Backup generations not rotated: {error}");
            return;
        }
    };
    let wrote = relay_postfix::newest_backup_sequence(&config.backup_dir)
        .is_ok_and(|newest| newest > since);
    if !wrote {
        return;
    }
    let origin = match outcome {
        Outcome::RolledBack(_) | Outcome::Critical { .. } => relay_postfix::Origin::Failed,
        _ => relay_postfix::Origin::Sync,
    };
    if let Err(error) =
        relay_postfix::finish_backups(&config.backup_dir, since, origin, config.backup_keep)
    {
        tracing::warn!("Backup generations not rotated: {error}");
    }
}

/// Plans a sync without changing anything, not even the log file, the lock or the state.
pub(crate) fn dry_run(config: &Config, logins: &Arc<Logins>) -> DryRun {
    let Preflight {
        settings,
        postfix,
        source,
        runtime,
    } = match Preflight::run(config, logins, false) {
        Ok(prepared) => prepared,
        Err(outcome) => return DryRun::Failed(outcome),
    };
    match runtime.block_on(relay_engine::dry_run(&settings, &source, &postfix)) {
        Ok((prepared, verdict)) => DryRun::Planned {
            prepared: Box::new(prepared),
            verdict,
        },
        Err(Outcome::NoChange) => DryRun::NoChange,
        Err(outcome) => DryRun::Failed(RunOutcome::Sync(outcome)),
    }
}

/// What the engine needs, ready: its settings, Postfix read once, and the database rows.
struct Preflight {
    settings: SyncSettings,
    postfix: PostfixCli,
    source: Prefetched<MariaDbSource>,
    runtime: tokio::runtime::Runtime,
}

impl Preflight {
    /// Turns the config into the engine's settings, resolves the login (the one `logins`
    /// keeps from a secret), and runs the database query beside Postfix's first postconf; a
    /// password from a secret that MariaDB refuses is read again once (`password`). `real` is
    /// false for a dry run, which writes nothing (not even the postconf cache).
    #[allow(clippy::result_large_err)] // As the engine's `prepare`: once per run.
    fn run(config: &Config, logins: &Arc<Logins>, real: bool) -> Result<Preflight, RunOutcome> {
        let settings = sync_settings(config);
        let login = logins.current(config).map_err(|error| {
            tracing::error!("{error}");
            tracing::error!("Keeping current configuration");
            RunOutcome::PasswordFailed(error)
        })?;
        let source = MariaDbSource::new(config.db_settings(login.clone()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                let message = format!("cannot start the async runtime: {error}");
                tracing::error!("{message}");
                RunOutcome::Internal(message)
            })?;
        // A real run keeps postconf's answers in STATE_DIR while main.cf stays the same file; a
        // dry run writes nothing, so it always asks postconf.
        let cache = real.then(|| config.state_dir.join(state_dir::POSTCONF_CACHE));
        let (postfix, fetched) =
            runtime.block_on(prefetch(&source, config.postfix_settings(), cache));
        let postfix = match postfix {
            Ok(postfix) => postfix
                .with_relay_domains_map(config.relay_domains_map.clone())
                .with_recipients_map(config.recipients_map.clone()),
            Err(error @ PostfixError::CommandMissing { .. }) => {
                tracing::error!("{error}");
                return Err(RunOutcome::NotReady(NotReady::Postfix(error)));
            }
            Err(error) => {
                tracing::error!("Cannot read the current Postfix configuration: {error}");
                tracing::error!("Keeping current configuration");
                return Err(RunOutcome::Sync(Outcome::ReadFailed(error)));
            }
        };
        if let Err(problem) = check::transport_maps_verdict(config, &postfix) {
            tracing::error!("{problem}");
            tracing::error!("Keeping current configuration");
            return Err(RunOutcome::NotReady(NotReady::TransportMaps(problem)));
        }
        // A refused password from a secret: it may have been rotated since it was read.
        let (source, fetched) = match fetched {
            Some(Err(error)) => {
                let retry = |login| {
                    let source = MariaDbSource::new(config.db_settings(login));
                    async move {
                        let fetched = source.fetch().await?;
                        Ok((source, fetched))
                    }
                };
                let retried = runtime.block_on(password::retry_refused(
                    logins, config, &login, error, retry,
                ));
                match retried {
                    Ok((renewed, fetched)) => (renewed, Some(Ok(fetched))),
                    Err(error) => (source, Some(Err(error))),
                }
            }
            fetched => (source, fetched),
        };
        Ok(Preflight {
            settings,
            postfix,
            source: Prefetched {
                rows: Mutex::new(fetched),
                source,
            },
            runtime,
        })
    }
}

/// Builds the [`PostfixCli`] (its one postconf) on a blocking thread while the database query
/// runs: each takes a few milliseconds, and a no-change run is little else. The query's result
/// is `None` when the postconf failed first: the run ends there, and the query is dropped.
async fn prefetch<S: DomainSource + Sync>(
    source: &S,
    settings: relay_postfix::PostfixSettings,
    cache: Option<PathBuf>,
) -> (
    Result<PostfixCli, PostfixError>,
    Option<Result<relay_db::Fetched, DbError>>,
) {
    let mut postfix = tokio::task::spawn_blocking(move || match cache {
        Some(cache) => PostfixCli::with_postconf_cache(settings, &cache),
        None => PostfixCli::new(settings),
    });
    let fetch = source.fetch();
    tokio::pin!(fetch);
    let mut fetched = None;
    let postfix = loop {
        tokio::select! {
            joined = &mut postfix => break joined,
            rows = &mut fetch, if fetched.is_none() => fetched = Some(rows),
        }
    };
    let postfix = match postfix {
        Ok(postfix) => postfix,
        // The closure does not panic; if it ever did, say so rather than abort the process.
        Err(error) => Err(PostfixError::Invalid {
            path: PathBuf::from("postconf"),
            detail: format!("reading the Postfix configuration stopped: {error}"),
        }),
    };
    if postfix.is_ok() && fetched.is_none() {
        fetched = Some(fetch.await);
    }
    (postfix, fetched)
}

/// A [`DomainSource`] whose first fetch returns the rows [`prefetch`] already has.
struct Prefetched<S> {
    rows: Mutex<Option<Result<relay_db::Fetched, DbError>>>,
    source: S,
}

impl<S> Prefetched<S> {
    /// The fingerprint of the rows fetched ahead, when the fetch succeeded.
    fn fingerprint(&self) -> Option<Fingerprint> {
        let rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rows.as_ref()? {
            Ok(fetched) => Some(fetched.fingerprint()),
            Err(_) => None,
        }
    }
}

impl<S: DomainSource + Sync> DomainSource for Prefetched<S> {
    async fn fetch_names(&self) -> Result<Vec<String>, DbError> {
        Ok(self.fetch().await?.names)
    }

    async fn fetch(&self) -> Result<relay_db::Fetched, DbError> {
        let rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match rows {
            Some(rows) => rows,
            None => self.source.fetch().await,
        }
    }
}

/// The engine's settings: the config has parsed every value already.
fn sync_settings(config: &Config) -> SyncSettings {
    SyncSettings {
        next_hop: config.next_hop.clone(),
        preserve: config.preserve_domains.clone(),
        guard: GuardSettings {
            max_remove_percent: config.max_remove_percent,
            allow_empty: config.allow_empty,
            force: false,
        },
        mode: match config.relay_domains_mode {
            RelayDomainsMode::Inline => relay_core::RelayDomainsMode::Inline,
            RelayDomainsMode::Map => relay_core::RelayDomainsMode::Map,
        },
        reload_pending: false,
        known_rejected: None,
        known_noted: None,
    }
}

/// SPEC §7: records the run in `STATE_DIR`, sends the alerts it calls for and writes the
/// metrics. Nothing here changes the run's outcome.
fn record(
    config: &Config,
    sinks: &[Arc<dyn AlertSink>],
    outcome: &RunOutcome,
    started: Instant,
    rule: AlertRule,
) {
    if let RunOutcome::Held(_) = outcome {
        // A held run is not a run: the streak and the last result stay as they were, and only
        // the metrics say the gateway is held.
        if let Some(path) = &config.metrics_file {
            let previous = failures::load(&config.state_dir).unwrap_or_default();
            write_metrics(config, path, outcome, &previous, started);
        }
        return;
    }
    let host = crate::host_name();
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let (previous, rule) = match failures::load(&config.state_dir) {
        Ok(previous) => (previous, rule),
        // The streak cannot be counted: a failed run alerts at once, as the first of its
        // streak would with ALERT_AFTER_FAILURES=1, rather than never.
        Err(error) => {
            tracing::error!("{error}");
            (failures::RunState::default(), AlertRule::AfterRuns(1))
        }
    };
    let summary = outcome.to_string();
    let postfix_checks = crate::check::postfix_checks(config);
    let result = failures::RunResult {
        exit: outcome.exit_code(),
        summary: &summary,
        now: &now,
        host: &host,
        postfix_checks: &postfix_checks,
    };
    let (state, alerts) = failures::advance(&previous, result, rule);
    // The watcher logs an outage once when it starts and once when it ends instead.
    let per_run_lines = matches!(rule, AlertRule::AfterRuns(_));
    if per_run_lines && state.consecutive_db_failures >= failures::DB_FAILURES_LOGGED_AFTER {
        tracing::error!(
            "Database unreachable for {} consecutive runs",
            state.consecutive_db_failures
        );
    }
    if let Err(error) = failures::save(&config.state_dir, &state) {
        tracing::error!("Failure tracking not saved: {error}");
    }
    // After the state: its directory exists now, and the outbox lives beside it.
    outbox::deliver(&config.state_dir, sinks, alerts);
    if let Some(path) = &config.metrics_file {
        write_metrics(config, path, outcome, &state, started);
    }
}

/// Writes `METRICS_FILE` for this run; a failure is logged and changes nothing else.
fn write_metrics(
    config: &Config,
    path: &Path,
    outcome: &RunOutcome,
    state: &failures::RunState,
    started: Instant,
) {
    let now = chrono::Utc::now().timestamp();
    let (added, removed) = match outcome {
        RunOutcome::Sync(Outcome::Applied(applied)) => (applied.added.len(), applied.removed.len()),
        _ => (0, 0),
    };
    // What Postfix routes now: the managed block as it is on disk after the run.
    let domains = relay_fs::read_to_string(relay_fs::Kind::MAP_SOURCE, &config.transport_file)
        .ok()
        .flatten()
        .and_then(|text| {
            relay_core::TransportFile::parse(&text)
                .ok()
                .map(|file| file.managed_entries().len())
        })
        .unwrap_or(0);
    let exit = outcome.exit_code();
    let metrics = metrics::RunMetrics {
        last_run: now,
        last_success: if outcome.is_success() && !matches!(outcome, RunOutcome::Held(_)) {
            now
        } else {
            metrics::previous_last_success(path).unwrap_or(0)
        },
        exit,
        domains,
        added,
        removed,
        duration: started.elapsed().as_secs_f64(),
        consecutive_failures: state.consecutive_failures,
        invalid_rows: failures::load_invalid_rows(&config.state_dir)
            .ok()
            .flatten()
            .map_or(0, |rows| rows.len()),
        held: matches!(outcome, RunOutcome::Held(_)),
        held_since: match outcome {
            RunOutcome::Held(hold) => chrono::DateTime::parse_from_rfc3339(&hold.since)
                .map_or(0, |since| since.timestamp()),
            _ => 0,
        },
        recipients: config
            .recipients_query
            .as_ref()
            .and_then(|_| crate::status::recipients_in_table(&config.recipients_map).ok()),
    };
    if let Err(error) = metrics::write(path, &metrics) {
        tracing::error!("Metrics not written to {}: {error}", path.display());
    }
}
