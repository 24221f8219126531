//! Steps 6–9 of a run: guard, back up, apply in the safe order, verify, and recover on failure.
//!
//! The steps are relay-core's ([`Prepared::steps`], [`RecoveryPlan`]); they run through the
//! one executor ([`execute`]). What is particular to a sync is its [`Observer`]: the log lines
//! of SPEC §8 and the verification (SPEC §2 step 7, last paragraph); what is particular to its
//! recovery is that a failed reload does not stop it.

use relay_core::{cut_list, guard, RecoveryPlan, RelayDomains, Step, StepKind};
use relay_postfix::{PostfixError, PostfixRead, PostfixWrite};

use crate::execute::{execute, prepare_maps, Observer};
use crate::outcome::FailureCause;
use crate::{Applied, FailedStep, Outcome, Prepared, StepFailure, SyncSettings, LOG_LIST_MAX};

/// At most this many added domains are looked up with `postmap -q` after a change.
pub const VERIFY_SAMPLE: usize = 100;

/// Guards, backs up and applies a prepared plan through `postfix`; recovers on failure.
pub fn apply<P: PostfixWrite + Sync>(
    settings: &SyncSettings,
    prepared: Prepared,
    postfix: &P,
) -> Outcome {
    let plan = &prepared.plan;
    if let Err(refusal) = guard(plan, settings.guard) {
        tracing::error!("Refusing to apply: {refusal}");
        tracing::error!("Keeping current configuration");
        return Outcome::Refused(refusal);
    }

    let write_backup = || {
        postfix
            .backup(
                &prepared.relay_domains_before,
                prepared.transport_before.as_deref(),
            )
            .and_then(|mut backup| {
                // Map mode's table is part of the same generation.
                if let Some(text) = &prepared.relay_domains_map_before {
                    let file = postfix.backup_relay_domains_map(&backup.stamp, text)?;
                    backup.files.push(file);
                }
                // So is recipient validation's side, when the run plans it.
                if plan.recipients.is_some() {
                    let files = postfix.backup_recipients(
                        &backup.stamp,
                        &prepared.relay_recipient_maps_before,
                        prepared.recipients_map_before.as_deref(),
                    )?;
                    backup.files.extend(files);
                }
                Ok(backup)
            })
    };
    // The maps the steps will write are built ahead (under temporary names: nothing is
    // installed) while the backup is written: a run's first fsync waits for the file
    // system's journal, tens of milliseconds on a busy disk, and postmap is a process that
    // mostly waits too.
    let steps = prepared.steps();
    let ((), backup) = alongside(write_backup, || prepare_maps(postfix, &steps));
    let backup = match backup {
        Some(Ok(backup)) => backup,
        failed => {
            postfix.discard_prepared();
            let failure = StepFailure {
                step: FailedStep::Backup,
                cause: match failed {
                    Some(Err(error)) => error.into(),
                    _ => FailureCause::Stopped("writing the backup"),
                },
            };
            tracing::error!("{failure}");
            tracing::error!("Nothing was changed; keeping current configuration");
            return Outcome::RolledBack(failure);
        }
    };
    for file in &backup.files {
        tracing::info!("Backup created: {}", file.display());
    }

    let result = execute(postfix, &steps, &mut SyncRun::new(settings, &prepared));
    // Whatever a failed run built ahead and did not install goes now.
    postfix.discard_prepared();
    if let Err(halted) = result {
        return fail(halted.failure, &prepared, &steps[..halted.done], postfix);
    }

    tracing::info!(
        "Sync summary: {} domains relayed, +{} -{}, {} invalid rows skipped, {} duplicate rows",
        plan.relayed_count,
        plan.added.len(),
        plan.removed.len(),
        prepared.rejected.len(),
        prepared.duplicates
    );
    if let Some(r) = plan.recipients.as_ref().filter(|r| r.enabled) {
        tracing::info!(
            "Recipient summary: {} recipients accepted, +{} -{}, {} invalid rows skipped, {} duplicate rows, {} at domains not relayed, {} relayed domains without recipients",
            r.entries,
            r.added,
            r.removed,
            prepared.rejected_recipients.len(),
            prepared.duplicate_recipients,
            r.outside,
            r.domains_without_recipients.len()
        );
    }
    Outcome::Applied(Applied {
        added: plan.added.clone(),
        removed: plan.removed.clone(),
        backup,
    })
}

/// A sync's side of the execution: SPEC §8's log lines for each step, and the verification
/// (SPEC §2 step 7, last paragraph) of what the steps changed.
///
/// The verification runs during `postfix reload`, since both are processes that mostly wait.
/// It reads what reload does not change (main.cf through postconf, the map files through
/// postmap), so it sees what it would see after the reload. A map written after it (the final
/// transport after a union, the final recipients table) is checked again at the end: it is the
/// map that stays.
struct SyncRun<'r> {
    settings: &'r SyncSettings,
    prepared: &'r Prepared,
    /// The verification ran during a reload.
    verified: bool,
    /// The transport file was written after that verification.
    routes_rewritten: bool,
    /// The recipients table was written after that verification.
    recipients_rewritten: bool,
}

impl<'r> SyncRun<'r> {
    fn new(settings: &'r SyncSettings, prepared: &'r Prepared) -> SyncRun<'r> {
        SyncRun {
            settings,
            prepared,
            verified: false,
            routes_rewritten: false,
            recipients_rewritten: false,
        }
    }
}

impl<P: PostfixRead + Sync> Observer<P> for SyncRun<'_> {
    type Failure = StepFailure;

    fn wrote_transport(&mut self, postfix: &P, text: &str) {
        let plan = &self.prepared.plan;
        self.routes_rewritten = self.verified;
        tracing::info!("Postmap successful: {}", postfix.transport_map_name());
        if text == plan.transport_final {
            tracing::info!(
                "Updated transport file: added {}, removed {}",
                plan.transport_added,
                plan.transport_removed
            );
        }
    }

    fn rebuilt_transport_map(&mut self, postfix: &P) {
        tracing::info!("Postmap successful: {}", postfix.transport_map_name());
    }

    fn wrote_relay_domains_map(&mut self, postfix: &P, _text: &str) {
        let plan = &self.prepared.plan;
        let (map_type, path) = postfix.relay_domains_table();
        tracing::info!("Postmap successful: {map_type}:{}", path.display());
        tracing::info!(
            "Updated relay domains map {}: added {}, removed {}",
            path.display(),
            plan.added.len(),
            plan.removed.len()
        );
    }

    fn wrote_recipients_map(&mut self, postfix: &P, _text: &str) {
        self.recipients_rewritten = self.verified;
        let (map_type, path) = postfix.recipients_table();
        tracing::info!("Postmap successful: {map_type}:{}", path.display());
    }

    fn set_relay_domains(&mut self, value: &str) {
        tracing::info!(
            "Updated relay_domains: {}",
            cut_list(value.split(", "), LOG_LIST_MAX)
        );
    }

    fn set_relay_recipient_maps(&mut self, value: &str) {
        tracing::info!("Updated relay_recipient_maps: {value}");
    }

    fn reloaded(&mut self) {
        tracing::info!("Postfix reloaded successfully");
        // The verification beside it answers before the next step, or stops the steps.
        self.verified = true;
    }

    fn failed(&mut self, step: FailedStep, error: PostfixError) -> Result<(), StepFailure> {
        Err(StepFailure {
            step,
            cause: error.into(),
        })
    }

    fn around_reload(
        &self,
        postfix: &P,
        reload: impl FnOnce() -> Result<(), PostfixError>,
    ) -> (Result<(), PostfixError>, Result<(), StepFailure>) {
        let (settings, prepared) = (self.settings, self.prepared);
        let (reload, verified) = alongside(|| verify(settings, prepared, postfix, true), reload);
        let verified = verified.unwrap_or(Err(StepFailure {
            step: FailedStep::Verify,
            cause: FailureCause::Stopped("the verification"),
        }));
        (reload, verified)
    }

    fn finish(&mut self, postfix: &P) -> Result<(), StepFailure> {
        if !self.verified || self.routes_rewritten || self.recipients_rewritten {
            verify(self.settings, self.prepared, postfix, !self.verified)?;
        }
        Ok(())
    }
}

/// A failed run's recovery: silent step by step (its log lines are the rollback's own), and
/// not stopped by a failed reload, which is what it reports once the files are back.
#[derive(Debug, Default)]
struct Recovery {
    reload_failure: Option<StepFailure>,
}

impl<P: PostfixRead> Observer<P> for Recovery {
    type Failure = StepFailure;

    fn failed(&mut self, step: FailedStep, error: PostfixError) -> Result<(), StepFailure> {
        let failure = StepFailure {
            step,
            cause: error.into(),
        };
        if step != FailedStep::Plan(StepKind::Reload) {
            return Err(failure);
        }
        // The files still go back: Postfix reads them when it starts again.
        self.reload_failure.get_or_insert(failure);
        Ok(())
    }

    fn finish(&mut self, _postfix: &P) -> Result<(), StepFailure> {
        self.reload_failure.take().map_or(Ok(()), Err)
    }
}

/// Runs `side` on a thread of its own while `main` runs on this one, and returns what each
/// returned (`None`: `side` panicked). When no thread can be started (a process or memory
/// limit of the cron job), `side` runs here after `main`: slower, but never a panic halfway
/// through a change.
pub(crate) fn alongside<A: Send, B>(
    side: impl FnOnce() -> A + Send,
    main: impl FnOnce() -> B,
) -> (B, Option<A>) {
    alongside_with(side, main, true)
}

/// [`alongside`]; with `threads` false, as if no thread could be started.
fn alongside_with<A: Send, B>(
    side: impl FnOnce() -> A + Send,
    main: impl FnOnce() -> B,
    threads: bool,
) -> (B, Option<A>) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Mutex, PoisonError};
    // The thread takes `side` out of the slot; when the thread cannot start, it is still here.
    let slot = Mutex::new(Some(side));
    let take = || slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    std::thread::scope(|scope| {
        let thread = if threads {
            std::thread::Builder::new().spawn_scoped(scope, || take().map(|side| side()))
        } else {
            Err(std::io::Error::other("threads switched off"))
        };
        let main = main();
        let side = match thread {
            Ok(thread) => thread.join().ok().flatten(),
            Err(error) => {
                tracing::warn!("cannot start a thread ({error}); working one step at a time");
                take().and_then(|side| catch_unwind(AssertUnwindSafe(side)).ok())
            }
        };
        (main, side)
    })
}

/// Reads back what Postfix now sees (SPEC §2 step 7, last paragraph): `relay_domains` (when
/// `relay_domains` is set and the run changed it) and the routes of the added domains.
fn verify<P: PostfixRead>(
    settings: &SyncSettings,
    prepared: &Prepared,
    postfix: &P,
    relay_domains: bool,
) -> Result<(), StepFailure> {
    let plan = &prepared.plan;
    let failed = |cause: FailureCause| StepFailure {
        step: FailedStep::Verify,
        cause,
    };
    // `postconf -h relay_domains` equals what was written (SPEC §2 step 7). A map-mode change
    // that wrote only the tables leaves it as this run read it, and skips the postconf, which
    // would compete with the reload for the CPU.
    if relay_domains && plan.relay_domains_changed() {
        let seen = postfix
            .relay_domains()
            .map_err(|e| failed(FailureCause::Postfix(e)))?;
        let parsed = RelayDomains::parse(&seen).ok();
        if parsed.as_ref() != Some(&plan.target) {
            return Err(failed(FailureCause::Verify(format!(
                "postconf -h relay_domains shows {seen:?}, not the value just written"
            ))));
        }
    }
    verify_recipients(prepared, postfix, relay_domains).map_err(failed)?;
    let next_hop = settings.next_hop.to_string();
    let sample: Vec<&str> = plan
        .added
        .iter()
        .filter(|name| !plan.hand_written.contains(*name))
        .take(VERIFY_SAMPLE)
        .map(|name| name.as_str())
        .collect();
    if sample.is_empty() {
        return Ok(());
    }
    let found = postfix
        .lookup_transports(&sample)
        .map_err(|e| failed(FailureCause::Postfix(e)))?;
    for (name, found) in sample.iter().zip(found) {
        if found.as_deref() != Some(next_hop.as_str()) {
            return Err(failed(FailureCause::Verify(format!(
                "postmap -q {name} {} returns {found:?}, expected {next_hop:?}",
                postfix.transport_map_name()
            ))));
        }
    }
    Ok(())
}

/// Recipient validation's read-back: `relay_recipient_maps` as written (when the run changed
/// it), and a sample of the added addresses found in the table.
fn verify_recipients<P: PostfixRead>(
    prepared: &Prepared,
    postfix: &P,
    parameters: bool,
) -> Result<(), FailureCause> {
    let Some(recipients) = &prepared.plan.recipients else {
        return Ok(());
    };
    if parameters && recipients.maps_changed() {
        let seen = postfix
            .relay_recipient_maps()
            .map_err(FailureCause::Postfix)?;
        if !recipients.is_maps_value(&seen) {
            return Err(FailureCause::Verify(format!(
                "postconf -h relay_recipient_maps shows {seen:?}, not the value just written"
            )));
        }
    }
    if !recipients.enabled || recipients.added_sample.is_empty() {
        return Ok(());
    }
    let sample: Vec<&str> = recipients
        .added_sample
        .iter()
        .take(VERIFY_SAMPLE)
        .map(String::as_str)
        .collect();
    let found = postfix
        .lookup_recipients(&sample)
        .map_err(FailureCause::Postfix)?;
    let (map_type, path) = postfix.recipients_table();
    for (key, found) in sample.iter().zip(found) {
        if found.as_deref() != Some("OK") {
            return Err(FailureCause::Verify(format!(
                "postmap -q {key} {map_type}:{} returns {found:?}, expected \"OK\"",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Ends a run whose step `failure` stopped it after the steps `completed`: the recovery
/// relay-core plans for them ([`RecoveryPlan`]) runs through the executor, and the outcome
/// says how it went.
fn fail<P: PostfixWrite>(
    failure: StepFailure,
    prepared: &Prepared,
    completed: &[Step<'_>],
    postfix: &P,
) -> Outcome {
    tracing::error!("{failure}");
    let recovery = RecoveryPlan::new(&prepared.plan, prepared.pre_run(), completed);
    let rollback = if recovery.is_empty() {
        tracing::info!("Nothing was changed; keeping current configuration");
        Ok(())
    } else {
        tracing::warn!("Rolling back to previous configuration");
        let result = execute(postfix, &recovery.steps(), &mut Recovery::default())
            .map_err(|halted| halted.failure);
        match &result {
            Ok(()) => tracing::info!("Rollback successful"),
            Err(error) => tracing::error!("Rollback failed: {error}"),
        }
        result
    };
    if failure.step == FailedStep::Plan(StepKind::Reload) || rollback.is_err() {
        tracing::error!("CRITICAL: Manual intervention required");
        Outcome::Critical { failure, rollback }
    } else {
        Outcome::RolledBack(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::alongside;

    #[test]
    fn alongside_returns_both_results() {
        let (main, side) = alongside(|| std::thread::current().id(), || 2);
        assert_eq!(main, 2);
        // The side ran on a thread of its own.
        assert_ne!(side, Some(std::thread::current().id()));
        assert!(side.is_some());
    }

    #[test]
    fn without_threads_side_runs_once_after_main_and_a_panic_is_none() {
        let order = std::sync::Mutex::new(Vec::new());
        let (main, side) = super::alongside_with(
            || {
                order.lock().unwrap().push("side");
                std::thread::current().id()
            },
            || {
                order.lock().unwrap().push("main");
                1
            },
            false,
        );
        assert_eq!(main, 1);
        assert_eq!(side, Some(std::thread::current().id()), "side ran here");
        assert_eq!(*order.lock().unwrap(), ["main", "side"]);
        let (main, side): (u8, Option<u8>) =
            super::alongside_with(|| panic!("side fails"), || 3, false);
        assert_eq!((main, side), (3, None));
    }

    #[test]
    fn a_panicking_side_is_none_and_main_still_answers() {
        let (main, side): (u8, Option<u8>) = alongside(|| panic!("side fails"), || 7);
        assert_eq!(main, 7);
        assert_eq!(side, None);
    }
}
