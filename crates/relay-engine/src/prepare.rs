//! Steps 3–5 of a run: normalize the rows, read what Postfix has, and plan.

use std::collections::BTreeSet;

use relay_core::{
    apply_steps_with, cut_list, escape_for_log, normalize_owned, Freshness, Normalized, Plan,
    PlanInput, Rejected, RelayDomains, RelayDomainsMode, RelayDomainsTable, Step,
};
use relay_postfix::PostfixRead;

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
}

impl Prepared {
    /// The steps that apply the plan, in order; empty when there is nothing to do.
    ///
    /// A reload left pending by an interrupted run comes first when the plan has none: the
    /// files are then converged but for the final transport (the union's extra routes), and
    /// Postfix must stop relaying the removed domains before their routes go.
    pub fn steps(&self) -> Vec<Step<'_>> {
        let mut steps = apply_steps_with(
            &self.plan,
            Freshness {
                transport: self.map_fresh,
                relay_domains_map: self.relay_domains_map_fresh,
            },
        );
        if self.reload_pending && !steps.contains(&Step::Reload) {
            steps.insert(0, Step::Reload);
        }
        steps
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
    prepare_normalized(settings, normalize_owned(rows), postfix)
}

/// [`prepare`] from rows already normalized.
#[allow(clippy::result_large_err)] // As `prepare`.
pub(crate) fn prepare_normalized<P: PostfixRead>(
    settings: &SyncSettings,
    normalized: Normalized,
    postfix: &P,
) -> Result<Prepared, Outcome> {
    tracing::info!(
        "Retrieved {} domains from DB: {}",
        normalized.valid.len(),
        cut_list(&normalized.valid, LOG_LIST_MAX)
    );
    log_rejected(&normalized.rejected, settings.known_rejected.as_ref());

    let read = || -> Result<_, relay_postfix::PostfixError> {
        Ok((
            postfix.relay_domains()?,
            postfix.read_transport()?,
            postfix.transport_map_is_fresh()?,
        ))
    };
    let (relay_domains, transport, map_fresh) = read().map_err(|error| {
        tracing::error!("Cannot read the current Postfix configuration: {error}");
        tracing::error!("Keeping current configuration");
        Outcome::ReadFailed(error)
    })?;
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
    let mut table = RelayDomainsTable {
        map_type: &map_type,
        path: &map_path,
        text: None,
    };
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
    let (table_text, relay_domains_map_fresh) = read_table().map_err(|error| {
        tracing::error!("Cannot read the current Postfix configuration: {error}");
        tracing::error!("Keeping current configuration");
        Outcome::ReadFailed(error)
    })?;
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
    .map_err(|error| {
        tracing::error!("Cannot plan against the current configuration: {error}");
        tracing::error!("Keeping current configuration");
        Outcome::Unplannable(error)
    })?;
    for name in &plan.hand_written {
        tracing::warn!(
            "Domain {name} has a hand-written line in {} outside the managed block; leaving it as it is",
            postfix.transport_map_name()
        );
    }

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
    if steps != [Step::Reload] {
        log_changes(&prepared.plan);
    }
    Ok(prepared)
}

/// Logs each rejected row. One bad row in the admin panel must not mail the operator every five
/// minutes: a row is a WARN, and an ERROR (which cron mails) only in the run where the set of
/// rejected rows differs from `known`, the set the previous run saw (`None`: not known).
fn log_rejected(rejected: &[Rejected], known: Option<&BTreeSet<String>>) {
    let changed = rejected_changed(rejected, known);
    for row in rejected {
        let line = format!(
            "Invalid domain skipped: {} ({})",
            escape_for_log(&row.raw),
            row.reason
        );
        if changed {
            tracing::error!("{line}");
        } else {
            tracing::warn!("{line}");
        }
    }
}

/// Whether the rejected rows differ from the set `known` from the previous run (an unknown
/// set differs from any non-empty one).
pub fn rejected_changed(rejected: &[Rejected], known: Option<&BTreeSet<String>>) -> bool {
    match known {
        None => !rejected.is_empty(),
        Some(known) => {
            let now: BTreeSet<&str> = rejected.iter().map(|row| row.raw.as_str()).collect();
            now.len() != known.len() || now.iter().any(|raw| !known.contains(*raw))
        }
    }
}

fn log_changes(plan: &Plan) {
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
    if !plan.transport_changed()
        && !plan.relay_domains_changed()
        && !plan.relay_domains_map_changed()
    {
        tracing::info!("Transport map is older than its source; rebuilding it");
    }
}
