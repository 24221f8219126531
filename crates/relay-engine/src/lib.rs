//! One relay-sync run (SPEC §2): fetch → plan → guard → back up → apply → verify → roll back.
//!
//! The engine is generic over the two boundaries, [`relay_db::DomainSource`] and
//! [`relay_postfix::PostfixWrite`], so another Rust tool can run a sync in-process and tests can
//! drive it with in-memory fakes. It returns an [`Outcome`]: data, from which relay-ops derives
//! the exit code in one place.
//!
//! A dry run ([`dry_run`]) takes only a [`relay_postfix::PostfixRead`]: it cannot write, by
//! construction.
//!
//! Every list of steps that changes Postfix (a sync's, its recovery's, a rollback's) is planned
//! by relay-core and run by [`execute`], the one executor; what each caller logs and reads back
//! is its [`Observer`].
//!
//! Architecture invariant: the engine decides the phases of a run and what to log; it never
//! touches a file or runs a command itself. Postfix work happens only through the traits, and
//! only [`execute`] turns a step into a Postfix call.
//!
//! ```no_run
//! # async fn example(db: relay_db::MariaDbSource, postfix: relay_postfix::PostfixCli) {
//! use relay_core::{GuardSettings, NextHop, Transport};
//! use relay_engine::{run, SyncSettings};
//! let settings = SyncSettings {
//!     next_hop: NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap(),
//!     preserve: Default::default(),
//!     guard: GuardSettings::default(),
//!     mode: Default::default(),
//!     reload_pending: false,
//!     known_rejected: None,
//!     known_noted: None,
//! };
//! let outcome = run(&settings, &db, &postfix).await;
//! println!("synced: {}", outcome.is_success());
//! # }
//! ```
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod apply;
mod execute;
mod outcome;
mod prepare;

use std::collections::BTreeSet;
use std::time::Instant;

use relay_core::{DomainName, GuardSettings, NextHop, RelayDomainsMode};
use relay_db::DomainSource;
use relay_postfix::{PostfixRead, PostfixWrite};

pub use apply::{apply, VERIFY_SAMPLE};
pub use execute::{execute, prepare_maps, Halted, Observer};
pub use outcome::{Applied, FailedStep, FailureCause, Outcome, StepFailure};
pub use prepare::{
    prepare, prepare_fetched, rejected_changed, rejected_keys, Prepared, RECIPIENT_ROW_PREFIX,
};

/// What a run needs besides the two boundaries.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The next hop written for every database domain.
    pub next_hop: NextHop,
    /// `PRESERVE_DOMAINS`.
    pub preserve: BTreeSet<DomainName>,
    /// The guard's limits and overrides.
    pub guard: GuardSettings,
    /// `RELAY_DOMAINS_MODE`: domains inline in `relay_domains`, or in the relay-domains table.
    pub mode: RelayDomainsMode,
    /// An earlier run wrote but was stopped before `postfix reload` succeeded: Postfix's
    /// running processes may still use the old `relay_domains`. The run then reloads (and
    /// verifies) even when the files already match the database.
    pub reload_pending: bool,
    /// The raw values of the rows the previous run rejected, when known: a rejected row is an
    /// ERROR only in a run where that set changes, a WARN otherwise.
    pub known_rejected: Option<BTreeSet<String>>,
    /// The keys of the steady conditions the previous run reported (a hand-written transport
    /// line, …), when known: each is a WARN in the run where it first appears or changes, and
    /// a DEBUG while it stays as it is. `None`: every condition is new.
    pub known_noted: Option<BTreeSet<String>>,
}

/// What a run saw besides its outcome, for the caller to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The rows the database returned that are not valid names, in its order; `None` when the
    /// run got no rows (the database failed).
    pub rejected: Option<Vec<relay_core::Rejected>>,
    /// The `RECIPIENTS_QUERY` rows that are not valid recipients, in its order; empty when
    /// recipient validation is off or the database failed.
    pub rejected_recipients: Vec<relay_core::RejectedRecipient>,
    /// The keys of the steady conditions this run reported ([`SyncSettings::known_noted`]);
    /// `None` when the run ended before it could see them (it did not get as far as a plan).
    pub noted: Option<BTreeSet<String>>,
}

/// Lists in log lines are cut after this many entries (SPEC §8).
pub const LOG_LIST_MAX: usize = 100;

/// Runs one sync: the whole of SPEC §2 from step 2 on (the caller holds the lock).
pub async fn run<S, P>(settings: &SyncSettings, source: &S, postfix: &P) -> Outcome
where
    S: DomainSource + Sync,
    P: PostfixWrite + Sync,
{
    run_reported(settings, source, postfix).await.0
}

/// [`run`], and what the run saw besides its outcome ([`RunReport`]).
pub async fn run_reported<S, P>(
    settings: &SyncSettings,
    source: &S,
    postfix: &P,
) -> (Outcome, RunReport)
where
    S: DomainSource + Sync,
    P: PostfixWrite + Sync,
{
    let started = Instant::now();
    tracing::info!("===== Relay Domains Sync Started =====");
    let mut report = RunReport::default();
    let outcome = match source.fetch().await {
        Err(error) => {
            tracing::error!("{error}");
            tracing::error!("Keeping current configuration");
            Outcome::DatabaseFailed(error)
        }
        Ok(fetched) => {
            let normalized = relay_core::normalize_owned(fetched.names);
            let recipients = fetched
                .recipients
                .map(prepare::normalize_recipients_in_halves);
            report.rejected = Some(normalized.rejected.clone());
            report.rejected_recipients = recipients
                .as_ref()
                .map(|r| r.rejected.clone())
                .unwrap_or_default();
            let mut noted = prepare::Noted::new(settings.known_noted.as_ref());
            let prepared =
                prepare::prepare_normalized(settings, normalized, recipients, postfix, &mut noted);
            report.noted = noted.seen();
            match prepared {
                Err(outcome) => outcome,
                Ok(prepared) => apply(settings, prepared, postfix),
            }
        }
    };
    finish(&outcome, started);
    (outcome, report)
}

/// Plans a sync without changing anything: fetch, plan and guard, then stop.
///
/// Returns the prepared plan and the guard's verdict, or the outcome that ended the run early
/// (database failure, unreadable Postfix state, nothing to do).
#[allow(clippy::result_large_err)] // As `prepare`: the outcome is returned once per run.
pub async fn dry_run<S, P>(
    settings: &SyncSettings,
    source: &S,
    postfix: &P,
) -> Result<(Prepared, Result<(), relay_core::Refusal>), Outcome>
where
    S: DomainSource + Sync,
    P: PostfixRead,
{
    let fetched = source.fetch().await.map_err(|error| {
        tracing::error!("{error}");
        Outcome::DatabaseFailed(error)
    })?;
    let prepared = prepare_fetched(settings, fetched, postfix)?;
    let verdict = relay_core::guard(&prepared.plan, settings.guard);
    Ok((prepared, verdict))
}

fn finish(outcome: &Outcome, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    if outcome.is_success() {
        tracing::info!("===== Sync completed in {seconds:.2} seconds =====");
    } else {
        tracing::error!("===== Sync failed in {seconds:.2} seconds =====");
    }
}
