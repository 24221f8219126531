//! Steps 3–5 of a run: normalize the rows, read what Postfix has, and plan.

use std::collections::BTreeSet;

use relay_core::{
    cut_list, escape_for_log, normalize_owned, normalize_recipients, sync_steps, Freshness,
    Normalized, NormalizedRecipients, Plan, PlanInput, PreRun, RecipientPlan, RecipientsTable,
    Rejected, RejectedRecipient, RelayDomains, RelayDomainsMode, RelayDomainsTable, Step,
};
use relay_postfix::PostfixRead;

use crate::apply::alongside;
use crate::{Outcome, SyncSettings, LOG_LIST_MAX};

/// A plan together with what it was computed from, ready to be guarded and applied.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan.
    pub plan: Plan,
    /// Database rows that are not valid names, in the order the database sent them.
    pub rejected: Vec<Rejected>,
    /// Valid rows that repeated an earlier name (after normalization).
    pub duplicates: usize,
    /// The raw `relay_domains` value before the run, restored on rollback.
    pub relay_domains_before: String,
    /// The transport file before the run (`None`: it did not exist), restored on rollback.
    pub transport_before: Option<String>,
    /// Whether the transport map's database was at least as new as its source.
    pub map_fresh: bool,
    /// The relay-domains table's source before the run, when it was read (map mode, or a
    /// `relay_domains` that names it); backed up and restored on rollback.
    pub relay_domains_map_before: Option<String>,
    /// Whether the relay-domains table's database was at least as new as its source (always
    /// `true` in inline mode, which does not use it).
    pub relay_domains_map_fresh: bool,
    /// Whether an interrupted run left a reload to do ([`crate::SyncSettings::reload_pending`]).
    pub reload_pending: bool,
    /// Recipient validation: `RECIPIENTS_QUERY` rows that are not valid recipients.
    pub rejected_recipients: Vec<RejectedRecipient>,
    /// Recipient validation: valid rows that repeated an earlier recipient.
    pub duplicate_recipients: usize,
    /// `relay_recipient_maps` before the run, restored on rollback (read when the plan has a
    /// recipient side, else empty).
    pub relay_recipient_maps_before: String,
    /// The recipients table's source before the run, when it was read; backed up and
    /// restored on rollback.
    pub recipients_map_before: Option<String>,
    /// Whether the recipients table's database was at least as new as its source.
    pub recipients_map_fresh: bool,
}

impl Prepared {
    /// The steps that apply the plan, in order ([`relay_core::sync_steps`]); empty when there
    /// is nothing to do. A reload left pending by an interrupted run comes first when the plan
    /// has none.
    pub fn steps(&self) -> Vec<Step<'_>> {
        let fresh = Freshness {
            transport: self.map_fresh,
            relay_domains_map: self.relay_domains_map_fresh,
            recipients_map: self.recipients_map_fresh,
        };
        sync_steps(&self.plan, &self.pre_run(), fresh, self.reload_pending)
    }

    /// What Postfix held before the run: what the steps are planned against, and what a failed
    /// run's recovery restores.
    pub fn pre_run(&self) -> PreRun<'_> {
        PreRun {
            relay_domains: &self.relay_domains_before,
            transport: self.transport_before.as_deref(),
            relay_domains_map: self.relay_domains_map_before.as_deref(),
            relay_recipient_maps: &self.relay_recipient_maps_before,
            recipients_map: self.recipients_map_before.as_deref(),
        }
    }
}

/// Normalizes `rows`, reads the current state through `postfix`, and plans.
///
/// Returns `Err` with the outcome that ends the run here: [`Outcome::NoChange`],
/// [`Outcome::ReadFailed`] or [`Outcome::Unplannable`].
// The large error variant is the run's final outcome, returned once per run: boxing it would buy
// nothing.
#[allow(clippy::result_large_err)]
pub fn prepare<P: PostfixRead>(
    settings: &SyncSettings,
    rows: Vec<String>,
    postfix: &P,
) -> Result<Prepared, Outcome> {
    // Consumed: valid names keep the rows' allocations, and the rows are gone before the
    // Postfix files are read.
    let mut noted = Noted::new(settings.known_noted.as_ref());
    prepare_normalized(settings, normalize_owned(rows), None, postfix, &mut noted)
}

/// [`prepare`] with both queries' rows ([`relay_db::Fetched`]): recipient validation when
/// `RECIPIENTS_QUERY` returned rows.
#[allow(clippy::result_large_err)] // As `prepare`.
pub fn prepare_fetched<P: PostfixRead>(
    settings: &SyncSettings,
    fetched: relay_db::Fetched,
    postfix: &P,
) -> Result<Prepared, Outcome> {
    let recipients = fetched.recipients.map(normalize_recipients_in_halves);
    let mut noted = Noted::new(settings.known_noted.as_ref());
    prepare_normalized(
        settings,
        normalize_owned(fetched.names),
        recipients,
        postfix,
        &mut noted,
    )
}

/// The steady conditions a run reports: a hand-written transport line, `relay_domains` tokens
/// that recipient validation cannot cover, relayed domains without recipients. An operator
/// chose each of them, and a WARN on every run (288 a day on the timer) buries the WARNs that
/// matter: each is a WARN in the run where it first appears or changes, and a DEBUG while it
/// stays as it is. What "known" means is the caller's, as for rejected rows: relay-ops keeps
/// the keys beside them in `STATE_DIR`.
#[derive(Debug)]
pub(crate) struct Noted<'a> {
    known: Option<&'a BTreeSet<String>>,
    seen: BTreeSet<String>,
    /// Whether the run got as far as seeing the conditions (a plan).
    complete: bool,
}

impl<'a> Noted<'a> {
    pub(crate) fn new(known: Option<&'a BTreeSet<String>>) -> Noted<'a> {
        Noted {
            known,
            seen: BTreeSet::new(),
            complete: false,
        }
    }

    /// Logs `line`, the condition whose stable form is `key`: WARN unless it was known.
    fn report(&mut self, key: String, line: &str) {
        if self.known.is_some_and(|known| known.contains(&key)) {
            tracing::debug!("{line}");
        } else {
            tracing::warn!("{line}");
        }
        self.seen.insert(key);
    }

    /// The keys of the conditions reported, once the run has seen them all.
    pub(crate) fn seen(self) -> Option<BTreeSet<String>> {
        self.complete.then_some(self.seen)
    }
}

/// [`normalize_recipients`] on two threads for a large result (the machine's cores are
/// otherwise idle while a run plans): the second half beside the first ([`alongside`], which
/// runs it here when no thread can be started), joined in one pass.
pub(crate) fn normalize_recipients_in_halves(mut rows: Vec<String>) -> NormalizedRecipients {
    const SPLIT_ABOVE: usize = 50_000;
    if rows.len() <= SPLIT_ABOVE {
        return normalize_recipients(rows);
    }
    let second = rows.split_off(rows.len() / 2);
    let (first, later) = alongside(
        move || normalize_recipients(second),
        || normalize_recipients(rows),
    );
    // A half whose normalization panicked is gone: never plan without it.
    let later = later.unwrap_or_else(|| panic!("normalizing the recipient rows stopped"));
    first.merge(later)
}

/// [`prepare`] from rows already normalized.
#[allow(clippy::result_large_err)] // As `prepare`.
pub(crate) fn prepare_normalized<P: PostfixRead>(
    settings: &SyncSettings,
    normalized: Normalized,
    recipients: Option<NormalizedRecipients>,
    postfix: &P,
    noted: &mut Noted<'_>,
) -> Result<Prepared, Outcome> {
    tracing::info!(
        "Retrieved {} domains from DB: {}",
        normalized.valid.len(),
        cut_list(&normalized.valid, LOG_LIST_MAX)
    );
    if let Some(recipients) = &recipients {
        tracing::info!(
            "Retrieved {} recipients from DB (RECIPIENTS_QUERY)",
            recipients.valid.len()
        );
    }
    let rejected_recipients: &[RejectedRecipient] =
        recipients.as_ref().map_or(&[], |r| r.rejected.as_slice());
    log_rejected(
        &normalized.rejected,
        rejected_recipients,
        settings.known_rejected.as_ref(),
    );

    let read = || -> Result<_, relay_postfix::PostfixError> {
        Ok((
            postfix.relay_domains()?,
            postfix.read_transport()?,
            postfix.transport_map_is_fresh()?,
        ))
    };
    let (relay_domains, transport, map_fresh) = read().map_err(read_failed)?;
    tracing::info!(
        "Current relay_domains: {}",
        cut_list(
            relay_domains
                .split(|c: char| c == ',' || c.is_ascii_whitespace())
                .filter(|t| !t.is_empty()),
            LOG_LIST_MAX
        )
    );

    let (map_type, map_path) = postfix.relay_domains_table();
    let map_path = map_path.to_string_lossy().into_owned();
    let mut table = RelayDomainsTable::new(&map_type, &map_path, None);
    // The table is read only when it matters: in map mode, and in inline mode when
    // relay_domains still names it (a switch back), so that its domains count as current.
    let named =
        RelayDomains::parse(&relay_domains).is_ok_and(|current| table.is_named_in(&current));
    let read_table = || -> Result<_, relay_postfix::PostfixError> {
        let text = if settings.mode == RelayDomainsMode::Map || named {
            postfix.read_relay_domains_map()?
        } else {
            None
        };
        let fresh =
            settings.mode != RelayDomainsMode::Map || postfix.relay_domains_map_is_fresh()?;
        Ok((text, fresh))
    };
    let (table_text, relay_domains_map_fresh) = read_table().map_err(read_failed)?;
    table.text = table_text.as_deref();

    let plan = Plan::with_mode(
        PlanInput {
            database: &normalized.valid,
            preserve: &settings.preserve,
            relay_domains: &relay_domains,
            transport: transport.as_deref(),
            next_hop: &settings.next_hop,
        },
        settings.mode,
        Some(table),
    )
    .map_err(|error| unplannable(error, postfix))?;
    // Recipient validation: planned when it is on, or when it is off and the table relay-sync
    // wrote is still there (its header says so), so that the parameter can let go of it.
    // Otherwise nothing here runs a command or reads a file: a run without the feature is
    // the run it always was.
    let (recipients_type, recipients_path) = postfix.recipients_table();
    let recipients_path = recipients_path.to_string_lossy().into_owned();
    let header_only = format!("{}\n", relay_core::RECIPIENTS_HEADER);
    let ours_left = recipients.is_none()
        && postfix.recipients_map_header().as_deref() == Some(relay_core::RECIPIENTS_HEADER);
    let maps_read = || -> Result<_, relay_postfix::PostfixError> {
        if recipients.is_none() && !ours_left {
            return Ok((String::new(), None, true));
        }
        let value = postfix.relay_recipient_maps()?;
        // Off: the header is all the plan needs, and the file is left as it is.
        let text = if recipients.is_some() {
            postfix.read_recipients_map()?
        } else {
            None
        };
        let fresh = recipients.is_none() || postfix.recipients_map_is_fresh()?;
        Ok((value, text, fresh))
    };
    let (relay_recipient_maps, recipients_text, recipients_fresh) =
        maps_read().map_err(read_failed)?;
    let relayed = if recipients.is_some() {
        normalized
            .valid
            .union(&settings.preserve)
            .cloned()
            .collect()
    } else {
        std::collections::BTreeSet::new()
    };
    let plan = plan
        .with_recipients(
            recipients.as_ref().map(|r| &r.valid),
            &relayed,
            RecipientsTable::new(
                &recipients_type,
                &recipients_path,
                if ours_left {
                    Some(header_only.as_str())
                } else {
                    recipients_text.as_deref()
                },
            ),
            &relay_recipient_maps,
        )
        .map_err(|error| unplannable(error, postfix))?;
    drop(relayed);
    if let Some(r) = &plan.recipients {
        log_recipient_notes(r, &plan.target, &table, noted);
    }
    for name in &plan.hand_written {
        noted.report(
            format!("hand-written:{name}"),
            &format!(
                "Domain {name} has a hand-written line in {} outside the managed block; leaving it as it is",
                postfix.transport_map_name()
            ),
        );
    }
    noted.complete = true;

    let prepared = Prepared {
        plan,
        // The valid names are not kept: the plan has what it needs, and at a million domains
        // the set is tens of megabytes.
        rejected: normalized.rejected,
        duplicates: normalized.duplicates,
        relay_domains_before: relay_domains,
        transport_before: transport,
        map_fresh,
        relay_domains_map_before: table_text,
        relay_domains_map_fresh,
        reload_pending: settings.reload_pending,
        duplicate_recipients: recipients.as_ref().map_or(0, |r| r.duplicates),
        rejected_recipients: recipients.map(|r| r.rejected).unwrap_or_default(),
        relay_recipient_maps_before: relay_recipient_maps,
        recipients_map_before: recipients_text,
        recipients_map_fresh: recipients_fresh,
    };
    let steps = prepared.steps();
    if steps.is_empty() {
        tracing::info!("No changes detected, skipping update");
        return Err(Outcome::NoChange);
    }
    if prepared.reload_pending {
        tracing::warn!(
            "An earlier run was stopped before Postfix reloaded; reloading Postfix in this run"
        );
    }
    // A run that only does the pending reload has no change to log.
    if !(prepared.reload_pending && steps.len() == 1) {
        log_changes(&prepared.plan);
    }
    Ok(prepared)
}

/// Ends a run whose Postfix state could not be read, saying so.
fn read_failed(error: relay_postfix::PostfixError) -> Outcome {
    tracing::error!("Cannot read the current Postfix configuration: {error}");
    tracing::error!("Keeping current configuration");
    Outcome::ReadFailed(error)
}

/// Ends a run that cannot be planned against the current state, saying so, with the command
/// that fixes it written for this Postfix instance when there is one.
fn unplannable(error: relay_core::PlanError, postfix: &impl PostfixRead) -> Outcome {
    match error.fix() {
        Some((program, args)) => tracing::error!(
            "Cannot plan against the current configuration: {error}, e.g. `{}`",
            postfix.shell_command(program, &args)
        ),
        None => tracing::error!("Cannot plan against the current configuration: {error}"),
    }
    tracing::error!("Keeping current configuration");
    Outcome::Unplannable(error)
}

/// Logs each rejected row. One bad row in the admin panel must not mail the operator every five
/// minutes: a row is a WARN, and an ERROR (which cron mails) only in the run where the set of
/// rejected rows differs from `known`, the set the previous run saw (`None`: not known).
///
/// Rejected recipient rows are told apart in the known set by the prefix
/// [`RECIPIENT_ROW_PREFIX`].
fn log_rejected(
    rejected: &[Rejected],
    recipients: &[RejectedRecipient],
    known: Option<&BTreeSet<String>>,
) {
    let changed = rejected_set_changed(rejected_keys(rejected, recipients), known);
    let lines = rejected
        .iter()
        .map(|row| {
            format!(
                "Invalid domain skipped: {} ({})",
                escape_for_log(&row.raw),
                row.reason
            )
        })
        // A wrong RECIPIENTS_QUERY (a column of user names, say) rejects every row: the log
        // names the first ones and counts the rest.
        .chain(recipients.iter().take(LOG_LIST_MAX).map(|row| {
            format!(
                "Invalid recipient skipped: {} ({})",
                escape_for_log(&row.raw),
                row.reason
            )
        }))
        .chain((recipients.len() > LOG_LIST_MAX).then(|| {
            format!(
                "Invalid recipient skipped: … (+{} more)",
                recipients.len() - LOG_LIST_MAX
            )
        }));
    for line in lines {
        if changed {
            tracing::error!("{line}");
        } else {
            tracing::warn!("{line}");
        }
    }
}

/// In the set of rejected rows a run remembers, a `RECIPIENTS_QUERY` row's raw value follows
/// this prefix, so that the same text rejected as a domain and as a recipient are two rows.
pub const RECIPIENT_ROW_PREFIX: &str = "recipient:";

/// The remembered form of every rejected row: domain rows as they are, recipient rows after
/// [`RECIPIENT_ROW_PREFIX`] (the first [`LOG_LIST_MAX`] of them, each cut to 256 bytes: a wrong
/// query must not turn the state file into a copy of a table).
pub fn rejected_keys<'a>(
    rejected: &'a [Rejected],
    recipients: &'a [RejectedRecipient],
) -> impl Iterator<Item = std::borrow::Cow<'a, str>> {
    rejected
        .iter()
        .map(|row| std::borrow::Cow::Borrowed(row.raw.as_str()))
        .chain(recipients.iter().take(LOG_LIST_MAX).map(|row| {
            let mut end = row.raw.len().min(256);
            while !row.raw.is_char_boundary(end) {
                end -= 1;
            }
            std::borrow::Cow::Owned(format!("{RECIPIENT_ROW_PREFIX}{}", &row.raw[..end]))
        }))
}

/// Whether the rejected rows differ from the set `known` from the previous run (an unknown
/// set differs from any non-empty one).
pub fn rejected_changed(rejected: &[Rejected], known: Option<&BTreeSet<String>>) -> bool {
    rejected_set_changed(rejected_keys(rejected, &[]), known)
}

fn rejected_set_changed<'a>(
    rows: impl Iterator<Item = std::borrow::Cow<'a, str>>,
    known: Option<&BTreeSet<String>>,
) -> bool {
    let now: BTreeSet<std::borrow::Cow<'a, str>> = rows.collect();
    match known {
        None => !now.is_empty(),
        Some(known) => now.len() != known.len() || now.iter().any(|raw| !known.contains(&**raw)),
    }
}

/// The recipient side's WARNs: relayed domains whose every address is refused, and
/// recipients at domains that are not relayed.
fn log_recipient_notes(
    plan: &RecipientPlan,
    relay_domains: &RelayDomains,
    domains_table: &RelayDomainsTable<'_>,
    noted: &mut Noted<'_>,
) {
    if !plan.enabled {
        return;
    }
    // relay_recipient_maps covers every domain relay_domains matches; the table holds only
    // the domains relay-sync knows. `$mydestination` is local delivery, which
    // relay_recipient_maps does not govern.
    let others: Vec<&str> = relay_domains
        .preserved_tokens
        .iter()
        .map(String::as_str)
        .filter(|token| *token != "$mydestination" && !domains_table.is_named_by(token))
        .collect();
    if !others.is_empty() {
        let others = cut_list(&others, LOG_LIST_MAX);
        noted.report(
            format!("relay_domains tokens:{others}"),
            &format!("relay_domains also relays through {others}; RECIPIENTS_MAP lists no address at the domains they relay, so Postfix refuses all mail for those domains: add their addresses to a table of your own in relay_recipient_maps"),
        );
    }
    if !plan.domains_without_recipients.is_empty() {
        let domains = cut_list(&plan.domains_without_recipients, LOG_LIST_MAX);
        noted.report(
            format!("without recipients:{domains}"),
            &format!("Relayed domains with no recipient and no catch-all in RECIPIENTS_QUERY (all their mail is refused): {domains}"),
        );
    }
    if plan.outside > 0 {
        tracing::info!(
            "{} recipients are at domains that are not relayed; left out of {}",
            plan.outside,
            plan.path
        );
    }
}

fn log_changes(plan: &Plan) {
    let domains_changed = !plan.added.is_empty() || !plan.removed.is_empty();
    let recipients_only = !domains_changed
        && plan
            .recipients
            .as_ref()
            .is_some_and(|r| !r.is_empty() && !plan.relay_domains_changed());
    if !recipients_only {
        log_domain_changes(plan);
    }
    log_recipient_changes(plan);
    if !plan.transport_changed()
        && !plan.relay_domains_changed()
        && !plan.relay_domains_map_changed()
        && plan.recipients.as_ref().is_none_or(RecipientPlan::is_empty)
    {
        tracing::info!("Transport map is older than its source; rebuilding it");
    }
}

fn log_domain_changes(plan: &Plan) {
    tracing::info!(
        "Domain changes detected: +{}, -{}",
        plan.added.len(),
        plan.removed.len()
    );
    for (verb, names) in [("Added", &plan.added), ("Removed", &plan.removed)] {
        for name in names.iter().take(LOG_LIST_MAX) {
            tracing::info!("{verb} domain: {name}");
        }
        if names.len() > LOG_LIST_MAX {
            tracing::info!("{verb} domain: … (+{} more)", names.len() - LOG_LIST_MAX);
        }
    }
}

fn log_recipient_changes(plan: &Plan) {
    let recipients = plan.recipients.as_ref();
    if let Some(r) = recipients {
        if r.enabled && !r.active_now {
            tracing::info!(
                "Recipient validation turns on: {} recipients in {}",
                r.entries,
                r.path
            );
        } else if !r.enabled {
            tracing::info!(
                "Recipient validation turns off: {} leaves relay_recipient_maps",
                r.path
            );
            if !r.maps_value.trim().is_empty() {
                tracing::warn!(
                    "relay_recipient_maps still lists {}: from now on it alone decides which addresses are accepted",
                    r.maps_value
                );
            }
        } else if r.added + r.removed > 0 {
            tracing::info!("Recipient changes detected: +{}, -{}", r.added, r.removed);
            for (verb, keys, total) in [
                ("Added", &r.added_sample, r.added),
                ("Removed", &r.removed_sample, r.removed),
            ] {
                // Added keys are validated recipients; removed ones come from the file and are
                // escaped unless they are valid recipients too.
                for key in keys.iter().take(LOG_LIST_MAX) {
                    if relay_core::Recipient::parse(key).is_ok_and(|r| r.as_str() == key) {
                        tracing::info!("{verb} recipient: {key}");
                    } else {
                        tracing::info!("{verb} recipient: {}", escape_for_log(key));
                    }
                }
                if total > keys.len().min(LOG_LIST_MAX) {
                    tracing::info!(
                        "{verb} recipient: … (+{} more)",
                        total - keys.len().min(LOG_LIST_MAX)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_normalize_exactly_like_one_pass() {
        // Duplicates across the halves, rejected rows in both, in the database's order.
        let mut rows: Vec<String> = (0..60_000)
            .map(|i| format!("u{}@d{}.example", i % 45_000, (i % 45_000) % 7))
            .collect();
        rows[10] = "bad row".to_owned();
        rows[59_000] = "also@bad@row".to_owned();
        let halves = normalize_recipients_in_halves(rows.clone());
        assert_eq!(halves, normalize_recipients(rows));
        assert_eq!(halves.rejected.len(), 2);
        assert_eq!(halves.rejected[0].raw, "bad row");
        assert!(halves.duplicates > 10_000);
    }
}
