//! Watch mode (`relay-sync watch`): a long-running loop that runs the same sync as cron (same
//! lock, engine, guard, backups, verification and records) whenever the domains in the database
//! change, and a full sync at least every `RECONCILE_INTERVAL`.
//!
//! Each cycle polls the change signal (relay-db's [`ChangeSignal`] over a kept connection: a
//! probe of the tables' `UPDATE_TIME`, and the fingerprint of the names only when the probe
//! says a table may have been written), asks the pure [`decide::Decider`] whether to sync, and syncs on tokio's
//! blocking pool. Cycles never overlap, which is the coalescing rule: changes that arrive while
//! a sync runs are all seen by the next poll, which comes `POLL_INTERVAL` after the sync ended,
//! and applied together by one sync. So a burst costs at most one sync per `POLL_INTERVAL`
//! plus the length of a sync, however many rows it touches. `sync_now` requests made during a
//! sync likewise collapse into one more sync.
//!
//! Each poll also reads Postfix's [`PostfixMark`] (a digest of `main.cf` and of the master's
//! pid and start time), and syncs when it is not what the last sync left: a container
//! recreated from its image (whose `main.cf` lost inline mode's domains), a restart, an edit,
//! or a return after the last sync could not reach Postfix is repaired within `POLL_INTERVAL`
//! plus one sync, not at the next `RECONCILE_INTERVAL`. On this host the mark is two small
//! reads (main.cf and `/proc`); through `POSTFIX_COMMAND_PREFIX` it is one command in the
//! container (about 50 ms of CPU with podman), so it is read at most every
//! [`MARK_EVERY_THROUGH_PREFIX`] there, whatever `POLL_INTERVAL` is: the database is polled
//! more often than Postfix's mark.
//!
//! With several hosts in `DB_HOST`, the polls run on the first that answers (relay-db's
//! [`ChangeSignal`] moves along the list and back), and a sync reads the host the poll that
//! decided it reached, so that what it applies is what the poll saw.
//!
//! A sync that did not apply what it read (a full `BACKUP_DIR`, a reload that failed, another
//! run holding the lock) is retried after a back-off (see [`decide`], rule 5): a change that
//! met a short fault is applied seconds after the fault ends.
//!
//! A database outage touches nothing (Postfix keeps serving the domains it has): polls back off
//! from `POLL_INTERVAL`, doubling up to `RECONCILE_INTERVAL`, the outage is logged once when it
//! starts and once when it ends, and each failed poll is recorded like a failed cron run (state,
//! metrics), with the warning alert sent once the failures have lasted `ALERT_AFTER_SECONDS`.

pub mod decide;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay_db::{ChangeSignal, DbError, DbHost, Fingerprint, MariaDbSource};
use relay_postfix::{MarkReader, PostfixMark};
use tokio::sync::Notify;

use crate::failures::AlertRule;
use crate::login::DbLogin;
use crate::metrics::{self, WatchMetrics};
use crate::password;
use crate::sync::{self, RunOutcome};
use crate::{off_the_executor, Config, Gateway, SyncOptions};
use decide::{Decider, Polled, Reason, Synced};

/// How long the watcher waits after a sync before it polls again (`POLL_INTERVAL` when that is
/// longer). One change after a quiet spell is applied at the next poll, a quarter second at
/// most; changes that keep arriving (an admin enabling 50 domains over 10 s) are gathered for
/// this long and applied together, about one sync a second, not one per row.
pub const AFTER_A_SYNC: Duration = Duration::from_secs(1);

/// How often Postfix's mark is read through `POSTFIX_COMMAND_PREFIX` (one command in the
/// container); without a prefix it is read at every poll.
pub const MARK_EVERY_THROUGH_PREFIX: Duration = Duration::from_secs(10);

/// A fingerprint that took longer than this is not computed after a write: the sync reads the
/// rows instead ([`Polled::Written`]), and in the seconds after a write the fingerprint waits
/// for a settled probe ([`decide::Decider::settling`]) rather than being computed at every
/// poll. The database hashes every row for it (about 0.1 s at 100,000 rows), which costs it
/// more than sending them, and the propagation the time of the query; at a hundred rows it
/// takes well under a millisecond and is always computed, so that a write that changes no
/// enabled domain (a quota) costs no sync.
pub const FINGERPRINT_BUDGET: Duration = Duration::from_millis(30);

/// The shortest time between two writes of the watch metrics while nothing happens (a sync
/// writes them at once): the heartbeat is in whole seconds, and each write is an fsync.
pub const METRICS_EVERY: Duration = Duration::from_secs(2);

/// What the watcher has done so far, for a supervisor (systemd's `READY`, `WATCHDOG`,
/// `STATUS`), a health check or an embedder waiting for a sync it asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchStatus {
    /// Whether the first sync has ended (whatever its result), or the first poll failed (the
    /// database is down at start-up: the watcher is up, and waits for it).
    pub ready: bool,
    /// Cycles run: one per poll, so a supervisor sees the loop turn.
    pub cycles: u64,
    /// Polls of the change signal, failed ones included.
    pub polls: u64,
    /// Polls that found the enabled set changed.
    pub changes: u64,
    /// Syncs run (stepped-aside ones included).
    pub syncs: u64,
    /// The last sync's exit code (SPEC §8).
    pub last_exit: Option<u8>,
    /// One line: the last sync's result, or the database outage in progress.
    pub last_result: String,
    /// Whether a change signal is in use (`false`: `DB_QUERY` gives none, every poll syncs).
    pub signal: bool,
}

/// How the watcher ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchEnd {
    /// What it had done.
    pub status: WatchStatus,
}

#[derive(Debug)]
struct Shared {
    sync_now: Notify,
    reconfigure: Notify,
    next_gateway: Mutex<Option<Gateway>>,
    status: tokio::sync::watch::Sender<WatchStatus>,
}

/// Pokes a running watcher; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    shared: Arc<Shared>,
}

impl WatchHandle {
    /// Asks for a sync at once, whatever the signal says (an admin tool calls this after it
    /// saved a domain; `SIGUSR1` does the same). Asked during a sync, one more sync follows it;
    /// several asks before it starts are one sync.
    pub fn sync_now(&self) {
        self.shared.sync_now.notify_one();
    }

    /// Replaces the gateway (a reloaded config) from the next cycle on, and syncs with it.
    pub fn reconfigure(&self, gateway: Gateway) {
        *self
            .shared
            .next_gateway
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(gateway);
        self.shared.reconfigure.notify_one();
    }

    /// The status now.
    pub fn status(&self) -> WatchStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change (each cycle, each sync).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<WatchStatus> {
        self.shared.status.subscribe()
    }
}

/// A running watcher: its handle, and the task to await for its end.
#[derive(Debug)]
pub struct Watch {
    handle: WatchHandle,
    task: tokio::task::JoinHandle<WatchEnd>,
}

impl Watch {
    /// A handle to poke it with.
    pub fn handle(&self) -> WatchHandle {
        self.handle.clone()
    }

    /// Waits until the watcher has stopped (after its shutdown future completed and the sync in
    /// progress, if any, ended).
    pub async fn finished(self) -> WatchEnd {
        match self.task.await {
            Ok(end) => end,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("the relay-sync watcher was cancelled: {error}"),
        }
    }
}

/// Starts the watcher on the current tokio runtime (see [`Gateway::watch`]).
pub(crate) fn start(
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Watch {
    let (status, _) = tokio::sync::watch::channel(WatchStatus::default());
    let shared = Arc::new(Shared {
        sync_now: Notify::new(),
        reconfigure: Notify::new(),
        next_gateway: Mutex::new(None),
        status,
    });
    let task = tokio::spawn(run(gateway, Arc::clone(&shared), shutdown));
    Watch {
        handle: WatchHandle { shared },
        task,
    }
}

/// The change signal as the watcher holds it.
enum Signal {
    /// Not connected yet (or the config changed): the password is resolved at the next poll.
    Pending,
    /// Polling over a kept connection.
    Ready(Box<ChangeSignal>),
    /// `DB_QUERY` gives none: every poll is a sync.
    Unavailable,
}

/// Why a poll failed.
enum PollFailure {
    Database(DbError),
    Password(crate::ConfigError),
}

impl From<DbError> for PollFailure {
    fn from(error: DbError) -> Self {
        PollFailure::Database(error)
    }
}

impl std::fmt::Display for PollFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollFailure::Database(error) => error.fmt(f),
            PollFailure::Password(error) => error.fmt(f),
        }
    }
}

/// The loop's state that is not the decision.
struct Watcher {
    gateway: Gateway,
    shared: Arc<Shared>,
    started: Instant,
    decider: Decider,
    signal: Signal,
    /// Reads Postfix's mark (main.cf, the master) at each poll (through a prefix, every
    /// [`MARK_EVERY_THROUGH_PREFIX`]) and after each sync.
    postfix: Arc<MarkReader>,
    /// The login the change signal connected with, for a refused password (`password`).
    login: Option<DbLogin>,
    /// When the mark was last read at a poll.
    mark_read: Option<Instant>,
    /// The host of `DB_HOST` the last probe was read from.
    probed_on: Option<DbHost>,
    /// How long the last fingerprint took; `None` before the first.
    fingerprint_took: Option<Duration>,
    metrics: WatchMetrics,
    metrics_written: Option<Instant>,
    /// When the current failure streak began (this watcher's view), for `ALERT_AFTER_SECONDS`.
    failing_since: Option<Instant>,
    /// When the last result was recorded.
    last_recorded: Option<Instant>,
    /// The outage in progress: when it began and how many polls failed in a row.
    outage: Option<(Instant, u32)>,
}

async fn run(
    gateway: Gateway,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> WatchEnd {
    let config = gateway.config();
    tracing::info!(
        "Watching the database for domain changes (POLL_INTERVAL {}, RECONCILE_INTERVAL {})",
        seconds(config.poll_interval),
        seconds(config.reconcile_interval)
    );
    let mut watcher = Watcher {
        decider: Decider::new(config.poll_interval, config.reconcile_interval),
        signal: Signal::Pending,
        postfix: Arc::new(MarkReader::new(config.postfix_settings())),
        login: None,
        mark_read: None,
        probed_on: None,
        fingerprint_took: None,
        gateway,
        shared,
        started: Instant::now(),
        metrics: WatchMetrics {
            up: true,
            ..WatchMetrics::default()
        },
        metrics_written: None,
        failing_since: None,
        last_recorded: None,
        outage: None,
    };
    watcher.check_signal();
    tokio::pin!(shutdown);
    let mut wait = Duration::ZERO;
    loop {
        let mut requested = false;
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = watcher.shared.reconfigure.notified() => {
                watcher.reconfigure();
                requested = true;
            }
            () = watcher.shared.sync_now.notified() => requested = true,
            () = tokio::time::sleep(wait) => {}
        }
        wait = watcher.cycle(requested).await;
    }
    tracing::info!("Watcher stopping");
    if let Signal::Ready(signal) = &mut watcher.signal {
        signal.close().await;
    }
    watcher.metrics.up = false;
    watcher.write_metrics(true);
    let status = watcher.shared.status.borrow().clone();
    WatchEnd { status }
}

impl Watcher {
    /// Says at start-up (and after a reload) when `DB_QUERY` gives no change signal.
    fn check_signal(&mut self) {
        let config = self.gateway.config();
        match relay_db::signal_query_with_recipients(
            &config.db_query,
            config.recipients_query.as_deref(),
        ) {
            Ok(_) => self.signal = Signal::Pending,
            Err(unavailable) => {
                tracing::warn!(
                    "{unavailable}; syncing in full every {} instead (POLL_INTERVAL, at least {})",
                    seconds(self.decider.full_sync_every()),
                    seconds(decide::FULL_SYNC_EVERY)
                );
                self.signal = Signal::Unavailable;
            }
        }
        let signal = !matches!(self.signal, Signal::Unavailable);
        self.shared
            .status
            .send_modify(|status| status.signal = signal);
    }

    fn reconfigure(&mut self) {
        let next = self
            .shared
            .next_gateway
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(gateway) = next {
            let config = gateway.config();
            self.decider
                .set_intervals(config.poll_interval, config.reconcile_interval);
            self.postfix = Arc::new(MarkReader::new(config.postfix_settings()));
            self.mark_read = None;
            self.gateway = gateway;
            self.check_signal();
            tracing::info!("Configuration reloaded");
        }
    }

    /// One cycle: poll, decide, maybe sync. Returns the wait before the next one.
    async fn cycle(&mut self, requested: bool) -> Duration {
        let config = self.gateway.config().clone();
        // The heartbeat: every cycle polls (or fails to), so monitoring can tell a loop that
        // turns from a watcher that was killed and left `relay_sync_watch_up 1` behind.
        self.metrics.last_poll = chrono::Utc::now().timestamp();
        // Postfix is read beside the database: through a container's exec it takes a while.
        let (polled, postfix) = if self.mark_due(&config) {
            self.mark_read = Some(Instant::now());
            let reader = Arc::clone(&self.postfix);
            tokio::join!(self.poll(), read_postfix(reader))
        } else {
            (self.poll().await, None)
        };
        let polled = match polled {
            Ok(polled) => polled,
            Err(failure) => return self.poll_failed(failure).await,
        };
        // After an outage, a full sync at once: it records the recovery (state, metrics, the
        // recovery notice) instead of leaving `status` failing until the next reconcile.
        let requested = self.outage_over() || requested;
        let now = self.started.elapsed();
        let decision = self.decider.decide(now, polled, postfix, requested);
        if matches!(decision, Some(Reason::Changed | Reason::Written)) {
            self.metrics.changes += 1;
        }
        self.shared.status.send_modify(|status| {
            status.cycles += 1;
            status.polls = self.metrics.polls;
            status.changes = self.metrics.changes;
        });
        match decision {
            None => {
                self.write_metrics(false);
                config.poll_interval
            }
            Some(reason) => {
                self.sync(reason).await;
                config.poll_interval.max(AFTER_A_SYNC)
            }
        }
    }

    /// Whether this poll reads Postfix's mark: always on this host, every
    /// [`MARK_EVERY_THROUGH_PREFIX`] through a prefix.
    fn mark_due(&self, config: &Config) -> bool {
        config.postfix_command_prefix.is_empty()
            || self
                .mark_read
                .is_none_or(|read| read.elapsed() >= MARK_EVERY_THROUGH_PREFIX)
    }

    /// Polls the change signal. When MariaDB refuses a password read from a secret, the
    /// secret may have been rotated: it is read again (at most once per `RECONCILE_INTERVAL`
    /// while refused) and the poll made once more with what it holds.
    async fn poll(&mut self) -> Result<Polled, PollFailure> {
        match self.poll_once().await {
            Err(PollFailure::Database(error)) if error.is_password_refused() => {
                let Some(login) = self.login.clone() else {
                    return Err(PollFailure::Database(error));
                };
                let config = self.gateway.config().clone();
                let logins = Arc::clone(&self.gateway.logins);
                // The renewed login is the one `logins` keeps now: the poll connects with it.
                let this = &mut *self;
                // Moved into the call, so the poll may borrow the watcher for as long as it runs.
                let again = move |_| {
                    let this = this;
                    this.poll_once()
                };
                password::retry_refused(&logins, &config, &login, error, again).await
            }
            polled => polled,
        }
    }

    /// Polls the change signal once, connecting (and resolving the login) when needed.
    async fn poll_once(&mut self) -> Result<Polled, PollFailure> {
        if matches!(self.signal, Signal::Unavailable) {
            return Ok(Polled::NoSignal);
        }
        self.metrics.polls += 1;
        // A sync renewed the login since the signal connected (a rotated secret): its next
        // reconnect logs in with the new one, while the connection it keeps stays.
        if let (Signal::Ready(signal), Some(kept)) = (&mut self.signal, self.gateway.logins.kept())
        {
            if self.login.as_ref() != Some(&kept) {
                signal.set_login(kept.user.clone(), kept.password.clone());
                self.login = Some(kept);
            }
        }
        if matches!(self.signal, Signal::Pending) {
            let gateway = self.gateway.clone();
            let login = off_the_executor(move || gateway.logins.current(gateway.config()))
                .await
                .map_err(PollFailure::Password)?;
            self.login = Some(login.clone());
            let source = MariaDbSource::new(self.gateway.config().db_settings(login));
            match ChangeSignal::new(source) {
                Ok(signal) => self.signal = Signal::Ready(Box::new(signal)),
                Err(_) => {
                    // check_signal said so already.
                    self.signal = Signal::Unavailable;
                    return Ok(Polled::NoSignal);
                }
            }
        }
        let Signal::Ready(signal) = &mut self.signal else {
            return Ok(Polled::NoSignal);
        };
        let probed = match signal.probe().await {
            Ok(probe) => probe,
            Err(error) => {
                // A fresh connection (and password) at the next poll.
                self.signal = Signal::Pending;
                return Err(PollFailure::Database(error));
            }
        };
        // Another host's `UPDATE_TIME`s prove nothing about what the last one saw.
        let host = signal.host().cloned();
        if host != self.probed_on {
            self.decider.forget_probe();
            self.probed_on = host;
        }
        if !self.decider.needs_fingerprint(probed) {
            return Ok(Polled::Unchanged);
        }
        let expensive = self
            .fingerprint_took
            .is_some_and(|took| took > FINGERPRINT_BUDGET);
        if expensive && self.decider.settling(probed) {
            // Once the probe is settled, one fingerprint finds a commit of the same second.
            return Ok(Polled::Unchanged);
        }
        if expensive && self.decider.written(probed) {
            // The sync reads the rows after this probe.
            self.decider.checked(probed);
            return Ok(Polled::Written);
        }
        match signal.poll().await {
            Ok(fingerprint) => {
                // The query alone: a poll that also reconnected or compared an earlier host's
                // rows took longer, which says nothing about what a fingerprint costs.
                let took = signal.last_query_took();
                self.fingerprint_took = took.or(self.fingerprint_took);
                self.decider.checked(probed);
                tracing::debug!(
                    "Change signal: {fingerprint} ({} ms)",
                    took.unwrap_or_default().as_millis()
                );
                Ok(Polled::Signal(fingerprint))
            }
            Err(error) => {
                self.signal = Signal::Pending;
                Err(PollFailure::Database(error))
            }
        }
    }

    /// A failed poll: logged once per outage, recorded, and the next poll backed off.
    async fn poll_failed(&mut self, failure: PollFailure) -> Duration {
        let config = self.gateway.config().clone();
        let failed = match &mut self.outage {
            Some((_, failed)) => {
                *failed += 1;
                *failed
            }
            None => {
                tracing::error!(
                    "Database unreachable: {failure}; Postfix keeps its current configuration \
                     and mail for the domains it has keeps flowing; polls back off up to \
                     RECONCILE_INTERVAL ({}) until it answers",
                    seconds(config.reconcile_interval)
                );
                self.outage = Some((Instant::now(), 1));
                1
            }
        };
        let summary = format!("database unreachable: {failure}");
        let outcome = match failure {
            PollFailure::Database(error) => {
                RunOutcome::Sync(relay_engine::Outcome::DatabaseFailed(error))
            }
            PollFailure::Password(error) => RunOutcome::PasswordFailed(error),
        };
        let rule = self.alert_rule();
        let gateway = self.gateway.clone();
        off_the_executor(move || {
            sync::record_poll_failure(gateway.config(), &gateway.sinks, outcome, rule)
        })
        .await;
        self.recorded(false);
        self.shared.status.send_modify(|status| {
            // A database down at start-up must not keep a supervisor waiting for READY: Postfix
            // serves what it has, and STATUS says why nothing is synced.
            status.ready = true;
            status.cycles += 1;
            status.polls = self.metrics.polls;
            status.last_exit = Some(3);
            status.last_result = summary;
        });
        self.write_metrics(false);
        decide::poll_backoff(config.poll_interval, config.reconcile_interval, failed)
    }

    /// Logs the end of an outage, once; whether one ended.
    fn outage_over(&mut self) -> bool {
        let Some((since, failed)) = self.outage.take() else {
            return false;
        };
        tracing::info!(
            "Database reachable again after {} ({failed} failed poll(s))",
            seconds_whole(since.elapsed())
        );
        true
    }

    /// Runs one sync on the blocking pool and records what it read.
    async fn sync(&mut self, reason: Reason) {
        tracing::info!("Syncing: {reason}");
        let detected = Instant::now();
        let rule = self.alert_rule();
        let gateway = self.gateway.clone();
        // The host the poll reached, first: the sync applies what the poll saw.
        let reached = match &self.signal {
            Signal::Ready(signal) => signal.host().cloned(),
            _ => None,
        };
        let (record, read) = off_the_executor(move || {
            let config = reading_first(gateway.config(), reached.as_ref());
            sync::sync_with(
                &config,
                &gateway.logins,
                &gateway.sinks,
                SyncOptions::default(),
                rule,
                true,
            )
        })
        .await;
        // What this sync left Postfix like: the next polls compare with it.
        let postfix = read_postfix(Arc::clone(&self.postfix)).await;
        self.mark_read = Some(Instant::now());
        let synced = synced(&record.outcome, read);
        let now = self.started.elapsed();
        let readable = postfix.is_some();
        self.decider.synced(now, synced, postfix);
        if let Synced::Owed(_) = synced {
            match self.decider.retry_due() {
                Some(due) => tracing::info!(
                    "The sync did not apply its changes; retrying in {} unless the database \
                     changes again first",
                    seconds(due.saturating_sub(now))
                ),
                None if !readable => tracing::info!(
                    "The sync did not apply its changes and Postfix cannot be read; syncing \
                     again when it answers"
                ),
                None => {}
            }
        }
        let exit = record.exit_code();
        if !matches!(record.outcome, RunOutcome::Skipped(_)) {
            self.recorded(exit == 0);
        }
        let (added, removed) = record.changes();
        if matches!(reason, Reason::Changed | Reason::Written)
            && !(added.is_empty() && removed.is_empty())
        {
            self.metrics
                .propagation
                .observe(detected.elapsed().as_secs_f64());
        }
        let result = record.outcome.to_string();
        self.shared.status.send_modify(|status| {
            status.ready = true;
            status.syncs += 1;
            status.last_exit = Some(exit);
            status.last_result = result;
        });
        self.write_metrics(true);
    }

    /// The alert rule for the result about to be recorded (`ALERT_AFTER_SECONDS`).
    fn alert_rule(&mut self) -> AlertRule {
        let now = Instant::now();
        // A streak starts with its first recorded failure ([`Watcher::recorded`]); until then
        // this result would be its first, failing for no time yet.
        let since = self.failing_since.unwrap_or(now);
        let before = self.last_recorded.unwrap_or(now);
        AlertRule::AfterTime {
            after: self.gateway.config().alert_after,
            failing_for: now.saturating_duration_since(since),
            failing_for_before: before.saturating_duration_since(since),
        }
    }

    /// Notes that a result was recorded: a success ends the failure streak.
    fn recorded(&mut self, success: bool) {
        let now = Instant::now();
        self.last_recorded = Some(now);
        if success {
            self.failing_since = None;
        } else {
            self.failing_since.get_or_insert(now);
        }
    }

    /// Writes the watcher's metrics: at most once per `POLL_INTERVAL` (and per
    /// [`METRICS_EVERY`]), and always when `now`.
    fn write_metrics(&mut self, now: bool) {
        let config = self.gateway.config();
        let Some(path) = config.metrics_file.as_deref().map(metrics::watch_path) else {
            return;
        };
        let every = config.poll_interval.max(METRICS_EVERY);
        let due = self
            .metrics_written
            .is_none_or(|written| written.elapsed() >= every);
        if !(now || due) {
            return;
        }
        self.metrics_written = Some(Instant::now());
        write_watch_metrics(&path, &self.metrics);
    }
}

/// How a sync ended for the decision: settled when Postfix holds what it read (applied, nothing
/// to apply) or the guard refused it; otherwise a retry is owed.
fn synced(outcome: &RunOutcome, read: Option<Fingerprint>) -> Synced {
    use relay_engine::Outcome;
    match (outcome, read) {
        (
            RunOutcome::Sync(Outcome::NoChange | Outcome::Applied(_) | Outcome::Refused(_)),
            Some(read),
        ) => Synced::Done(read),
        (_, read) => Synced::Owed(read),
    }
}

/// `config` with `host` first in `DB_HOST` (the rest in their order), when it is one of them.
fn reading_first(config: &Config, host: Option<&DbHost>) -> Config {
    let mut config = config.clone();
    if let Some(at) = host.and_then(|host| config.db_host.iter().position(|h| h == host)) {
        let host = config.db_host.remove(at);
        config.db_host.insert(0, host);
    }
    config
}

/// Postfix's mark now, read on the blocking pool (through `POSTFIX_COMMAND_PREFIX`, one
/// command in the container); `None` when Postfix cannot be read, which decides nothing (a
/// sync would fail the same way, and says why).
async fn read_postfix(reader: Arc<MarkReader>) -> Option<PostfixMark> {
    match off_the_executor(move || reader.read()).await {
        Ok(mark) => Some(mark),
        Err(error) => {
            tracing::debug!("Postfix's main.cf and master not read: {error}");
            None
        }
    }
}

fn write_watch_metrics(path: &Path, m: &WatchMetrics) {
    if let Err(error) = metrics::write_watch(path, m) {
        tracing::error!("Watch metrics not written to {}: {error}", path.display());
    }
}

/// A duration as operators write it in the config.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.3} s", duration.as_secs_f64())
    }
}

fn seconds_whole(duration: Duration) -> String {
    format!("{} s", duration.as_secs())
}
