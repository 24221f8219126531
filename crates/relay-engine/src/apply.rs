//! Steps 6–8 of a run: guard, back up, apply in the safe order, verify, and roll back on failure.

use relay_core::{cut_list, guard, RelayDomains, Step};
use relay_postfix::PostfixWrite;

use crate::outcome::FailureCause;
use crate::{Applied, FailedStep, Outcome, Prepared, StepFailure, SyncSettings, LOG_LIST_MAX};

/// At most this many added domains are looked up with `postmap -q` after a change.
pub const VERIFY_SAMPLE: usize = 100;

/// What the run has changed so far, so a rollback restores exactly that.
#[derive(Debug, Default, Clone, Copy)]
struct Touched {
    transport: bool,
    relay_domains: bool,
    relay_domains_map: bool,
    recipients_map: bool,
    relay_recipient_maps: bool,
}

impl Touched {
    fn any(self) -> bool {
        self.transport
            || self.relay_domains
            || self.relay_domains_map
            || self.recipients_map
            || self.relay_recipient_maps
    }
}

/// Guards, backs up and applies a prepared plan through `postfix`; rolls back on failure.
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
    let first_transport = steps.iter().find_map(|step| match step {
        Step::WriteTransport(text) => Some(*text),
        _ => None,
    });
    let table = steps.iter().find_map(|step| match step {
        Step::WriteRelayDomainsMap(text) => Some(*text),
        _ => None,
    });
    let recipients = steps.iter().find_map(|step| match step {
        Step::WriteRecipientsMap(text) => Some(*text),
        _ => None,
    });
    let ((), backup) = alongside(write_backup, || {
        if first_transport.is_some() || table.is_some() || recipients.is_some() {
            postfix.prepare_maps(first_transport, table, recipients);
        }
    });
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

    let mut touched = Touched::default();
    let result = run_steps(settings, &prepared, postfix, &mut touched);
    // Whatever a failed run built ahead and did not install goes now.
    postfix.discard_prepared();
    if let Err(failure) = result {
        return fail(failure, &prepared, touched, postfix);
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

/// Runs the steps in order, and verifies (SPEC §2 step 8) what they changed.
///
/// The maps were built ahead by [`apply`] ([`PostfixWrite::prepare_maps`]); the steps install
/// them one after the other, in order. The verification runs during `postfix reload`, since
/// both are processes that mostly wait. It reads what reload does not change (main.cf through
/// postconf, the map files through postmap), so it sees what it would see after the reload.
fn run_steps<P: PostfixWrite + Sync>(
    settings: &SyncSettings,
    prepared: &Prepared,
    postfix: &P,
    touched: &mut Touched,
) -> Result<(), StepFailure> {
    let plan = &prepared.plan;
    let failed = |step| {
        move |error: relay_postfix::PostfixError| StepFailure {
            step,
            cause: error.into(),
        }
    };
    let mut verified = false;
    // A transport written after the verification (the final text after a union) is checked
    // again: it is the map that stays.
    let mut routes_rewritten = false;
    let mut recipients_rewritten = false;
    for step in prepared.steps() {
        match step {
            Step::WriteTransport(text) => {
                // Marked after the call: a failed write leaves the previous file and map in
                // place (PostfixWrite's contract), so there is nothing to restore. Restoring
                // anyway would repeat the failing command (a broken postmap, a full disk) and
                // turn a clean exit 5 into a critical failed rollback.
                postfix
                    .write_transport(text)
                    .map_err(failed(FailedStep::WriteTransport))?;
                touched.transport = true;
                routes_rewritten = verified;
                tracing::info!("Postmap successful: {}", postfix.transport_map_name());
                if text == plan.transport_final {
                    tracing::info!(
                        "Updated transport file: added {}, removed {}",
                        plan.transport_added,
                        plan.transport_removed
                    );
                }
            }
            Step::RebuildTransportMap => {
                postfix
                    .rebuild_transport_map()
                    .map_err(failed(FailedStep::RebuildTransportMap))?;
                tracing::info!("Postmap successful: {}", postfix.transport_map_name());
            }
            Step::WriteRelayDomainsMap(text) => {
                // As for the transport file: a failed write leaves the previous table in place.
                postfix
                    .write_relay_domains_map(text)
                    .map_err(failed(FailedStep::WriteRelayDomainsMap))?;
                touched.relay_domains_map = true;
                let (map_type, path) = postfix.relay_domains_table();
                tracing::info!("Postmap successful: {map_type}:{}", path.display());
                tracing::info!(
                    "Updated relay domains map {}: added {}, removed {}",
                    path.display(),
                    plan.added.len(),
                    plan.removed.len()
                );
            }
            Step::WriteRecipientsMap(text) => {
                // As for the transport file: a failed write leaves the previous table.
                postfix
                    .write_recipients_map(text)
                    .map_err(failed(FailedStep::WriteRecipientsMap))?;
                touched.recipients_map = true;
                recipients_rewritten = verified;
                let (map_type, path) = postfix.recipients_table();
                tracing::info!("Postmap successful: {map_type}:{}", path.display());
            }
            Step::SetRelayRecipientMaps(value) => {
                postfix
                    .set_relay_recipient_maps(value)
                    .map_err(failed(FailedStep::SetRelayRecipientMaps))?;
                touched.relay_recipient_maps = true;
                tracing::info!("Updated relay_recipient_maps: {value}");
            }
            Step::SetRelayDomains(value) => {
                // As above: `postconf -e` replaces main.cf atomically or not at all.
                postfix
                    .set_relay_domains(value)
                    .map_err(failed(FailedStep::SetRelayDomains))?;
                touched.relay_domains = true;
                tracing::info!(
                    "Updated relay_domains: {}",
                    cut_list(value.split(", "), LOG_LIST_MAX)
                );
            }
            Step::Reload => {
                let (reload, verify) = alongside(
                    || verify(settings, prepared, postfix, true),
                    || postfix.reload(),
                );
                reload.map_err(failed(FailedStep::Reload))?;
                tracing::info!("Postfix reloaded successfully");
                verify.unwrap_or(Err(StepFailure {
                    step: FailedStep::Verify,
                    cause: FailureCause::Stopped("the verification"),
                }))?;
                verified = true;
            }
        }
    }
    if !verified || routes_rewritten || recipients_rewritten {
        verify(settings, prepared, postfix, !verified)?;
    }
    Ok(())
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
fn verify<P: PostfixWrite>(
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
fn verify_recipients<P: PostfixWrite>(
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

fn fail<P: PostfixWrite>(
    failure: StepFailure,
    prepared: &Prepared,
    touched: Touched,
    postfix: &P,
) -> Outcome {
    tracing::error!("{failure}");
    let rollback = if touched.any() {
        tracing::warn!("Rolling back to previous configuration");
        let result = rollback(prepared, touched, postfix);
        match &result {
            Ok(()) => tracing::info!("Rollback successful"),
            Err(error) => tracing::error!("Rollback failed: {error}"),
        }
        result
    } else {
        tracing::info!("Nothing was changed; keeping current configuration");
        Ok(())
    };
    if failure.step == FailedStep::Reload || rollback.is_err() {
        tracing::error!("CRITICAL: Manual intervention required");
        Outcome::Critical { failure, rollback }
    } else {
        Outcome::RolledBack(failure)
    }
}

/// Restores what the run touched from the copies taken before it (the same bytes as the
/// backup files), in the forward order's mirror image, so that no relayed domain is ever left
/// without its transport entry: routes for old and new domains first, then the old
/// `relay_domains` and a reload, then the old routes alone.
fn rollback<P: PostfixWrite>(
    prepared: &Prepared,
    touched: Touched,
    postfix: &P,
) -> Result<(), StepFailure> {
    let failed = |step| {
        move |error: relay_postfix::PostfixError| StepFailure {
            step,
            cause: error.into(),
        }
    };
    // A transport file that did not exist comes back empty: an empty map routes nothing,
    // exactly like a missing one, and keeps a `transport_maps` reference valid.
    let old_transport = prepared.transport_before.as_deref().unwrap_or("");
    // A failed reload does not stop the restore: the files still go back (Postfix reads them
    // when it starts again), and the reload failure is what the rollback reports.
    let mut reload_failure = None;
    let relayed_changed = touched.relay_domains
        || touched.relay_domains_map
        || touched.relay_recipient_maps
        || touched.recipients_map;
    if relayed_changed {
        if touched.transport {
            // The file may already be the final one, without the routes of removed domains
            // that the old relay_domains accepts again.
            let old_transport = prepared.transport_before.as_deref().unwrap_or("");
            postfix
                .write_transport(prepared.plan.transport_union_text(old_transport))
                .map_err(failed(FailedStep::WriteTransport))?;
        }
        if touched.relay_domains_map {
            let old_map = prepared.relay_domains_map_before.as_deref().unwrap_or("");
            postfix
                .write_relay_domains_map(old_map)
                .map_err(failed(FailedStep::WriteRelayDomainsMap))?;
        }
        // The old recipients table comes back with every address the run may have taken out
        // still in it: the union the run wrote first holds old and new entries, and goes in
        // before the parameters; the old text follows the reload. Without a union, the run
        // only took entries out, and the old table (a superset) goes in at once.
        let empty_table = format!("{}\n", relay_core::RECIPIENTS_HEADER);
        let old_recipients = prepared
            .recipients_map_before
            .as_deref()
            .unwrap_or(&empty_table);
        let union = prepared
            .plan
            .recipients
            .as_ref()
            .and_then(|r| r.first_write());
        if touched.recipients_map {
            postfix
                .write_recipients_map(union.unwrap_or(old_recipients))
                .map_err(failed(FailedStep::WriteRecipientsMap))?;
        }
        if touched.relay_domains {
            postfix
                .set_relay_domains(&prepared.relay_domains_before)
                .map_err(failed(FailedStep::SetRelayDomains))?;
        }
        if touched.relay_recipient_maps {
            postfix
                .set_relay_recipient_maps(&prepared.relay_recipient_maps_before)
                .map_err(failed(FailedStep::SetRelayRecipientMaps))?;
        }
        reload_failure = postfix.reload().err();
        // A table that had no source before the run keeps the union (a superset): an empty
        // one would refuse everyone if relay_recipient_maps still names it.
        if touched.recipients_map && union.is_some() && prepared.recipients_map_before.is_some() {
            postfix
                .write_recipients_map(old_recipients)
                .map_err(failed(FailedStep::WriteRecipientsMap))?;
        }
    }
    if touched.transport {
        postfix
            .write_transport(old_transport)
            .map_err(failed(FailedStep::WriteTransport))?;
        if !relayed_changed {
            reload_failure = postfix.reload().err();
        }
    }
    match reload_failure {
        Some(error) => Err(failed(FailedStep::Reload)(error)),
        None => Ok(()),
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
