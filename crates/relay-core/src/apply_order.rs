//! The order in which a plan is applied (SPEC §2 step 7), as data.
//!
//! The order guarantees that Postfix never accepts mail for a domain that has no transport
//! entry: the transport map first gains the new entries (keeping the old ones), then
//! `relay_domains` changes and Postfix reloads, and only then do removed entries leave the map.
//! The engine executes these steps (and every other step list: a failed run's recovery,
//! [`RecoveryPlan`](crate::RecoveryPlan), and a rollback to a backup,
//! [`RollbackPlan`](crate::RollbackPlan)) in one place; the property tests check the guarantee
//! on every intermediate state.

use crate::Plan;

/// One step of applying a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'p> {
    /// Replace the transport file with this text and rebuild its map.
    WriteTransport(&'p str),
    /// Rebuild the map from the unchanged source (its database was older than the source).
    RebuildTransportMap,
    /// Map mode: replace the relay-domains table's source file with this text and rebuild the
    /// table.
    WriteRelayDomainsMap(&'p str),
    /// Recipient validation: replace the recipients table's source with this text and rebuild
    /// the table.
    WriteRecipientsMap(&'p str),
    /// Recipient validation: set `relay_recipient_maps` to this value.
    SetRelayRecipientMaps(&'p str),
    /// Set `relay_domains` to this value.
    SetRelayDomains(&'p str),
    /// `postfix reload`.
    Reload,
}

impl Step<'_> {
    /// What kind of step this is, without its text.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::WriteTransport(_) => StepKind::WriteTransport,
            Step::RebuildTransportMap => StepKind::RebuildTransportMap,
            Step::WriteRelayDomainsMap(_) => StepKind::WriteRelayDomainsMap,
            Step::WriteRecipientsMap(_) => StepKind::WriteRecipientsMap,
            Step::SetRelayRecipientMaps(_) => StepKind::SetRelayRecipientMaps,
            Step::SetRelayDomains(_) => StepKind::SetRelayDomains,
            Step::Reload => StepKind::Reload,
        }
    }
}

// The one list of step kinds: the engine names a failed step by it, and `sync --dry-run --json`
// writes it. With the `json` feature its doc comments are the JSON schema's descriptions, so
// they stay one line each. Not `#[non_exhaustive]`, like `Step`: a new kind must be given its
// name wherever one is matched.
/// The kind of a step of a plan, in the order a sync takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "json",
    derive(serde::Serialize, schemars::JsonSchema),
    serde(rename_all = "snake_case")
)]
pub enum StepKind {
    /// Write the transport file (old and new entries, or the final file) and `postmap` it.
    WriteTransport,
    /// `postmap` the unchanged transport file (its database was older than the source).
    RebuildTransportMap,
    /// Map mode: write the relay-domains table and `postmap` it.
    WriteRelayDomainsMap,
    /// `postconf -e relay_domains = …`.
    SetRelayDomains,
    /// Recipient validation: write the recipients table and `postmap` it.
    WriteRecipientsMap,
    /// Recipient validation: `postconf -e relay_recipient_maps = …`.
    SetRelayRecipientMaps,
    /// `postfix reload`.
    Reload,
}

/// The steps that bring Postfix from the plan's current state to its target.
///
/// `map_fresh` says whether the transport map's database is at least as new as its source; a
/// stale one is rebuilt even when nothing else changes. An empty list means nothing to do.
pub fn apply_steps(plan: &Plan, map_fresh: bool) -> Vec<Step<'_>> {
    apply_steps_with(
        plan,
        Freshness {
            transport: map_fresh,
            relay_domains_map: map_fresh,
            recipients_map: map_fresh,
        },
    )
}

/// Whether each map database is at least as new as its source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The transport map.
    pub transport: bool,
    /// Map mode's relay-domains table (ignored in inline mode).
    pub relay_domains_map: bool,
    /// The recipients table (ignored when recipient validation is off).
    pub recipients_map: bool,
}

/// [`apply_steps`] with the freshness of each map given separately.
///
/// In map mode the table is written after the transport map has gained the new routes and
/// before `relay_domains` changes: a switch to map mode names a table that already holds every
/// domain, and a switch back to inline mode lists every domain before the table is let go (the
/// table file itself is left in place, unused).
pub fn apply_steps_with(plan: &Plan, fresh: Freshness) -> Vec<Step<'_>> {
    let mut steps = Vec::with_capacity(8);
    if let Some(text) = plan.transport_first_write() {
        steps.push(Step::WriteTransport(text));
    } else if !fresh.transport {
        steps.push(Step::RebuildTransportMap);
    }
    if let Some(text) = &plan.relay_domains_map {
        if plan.relay_domains_map_changed() || !fresh.relay_domains_map {
            steps.push(Step::WriteRelayDomainsMap(text));
        }
    }
    // Recipients arrive before the domains that need them and before the parameter names the
    // table; they leave only after the reload, once their domains have gone.
    let recipients = plan.recipients.as_ref();
    let mut recipients_last = None;
    if let Some(recipients) = recipients {
        let final_text = recipients.table_final.as_deref();
        match (recipients.first_write(), final_text) {
            (Some(text), _) => steps.push(Step::WriteRecipientsMap(text)),
            // A stale database is rebuilt from the final text, which is the file's own text
            // unless entries leave (the last write rebuilds it then).
            (None, Some(text)) if !fresh.recipients_map && !recipients.last_write => {
                steps.push(Step::WriteRecipientsMap(text));
            }
            _ => {}
        }
        if recipients.last_write {
            recipients_last = final_text;
        }
    }
    if plan.relay_domains_changed() {
        steps.push(Step::SetRelayDomains(&plan.relay_domains_value));
    }
    // The parameter changes after relay_domains: validation that turns on while a domain
    // leaves must not refuse that domain's addresses before it has gone (its users are not
    // in the new table), and a domain that arrives meanwhile is only accepted more widely.
    if let Some(recipients) = recipients.filter(|r| r.maps_changed()) {
        steps.push(Step::SetRelayRecipientMaps(&recipients.maps_value));
    }
    // Postfix notices a rebuilt table by itself (a daemon exits before its next connection
    // once a table it opened has changed), so the recipients table alone needs no reload.
    if steps
        .iter()
        .any(|step| !matches!(step, Step::WriteRecipientsMap(_)))
    {
        steps.push(Step::Reload);
    }
    if let Some(text) = plan.transport_last_write() {
        steps.push(Step::WriteTransport(text));
    }
    if let Some(text) = recipients_last {
        steps.push(Step::WriteRecipientsMap(text));
    }
    steps
}

/// What Postfix held before a run, as the run read it: what its steps are planned against
/// besides the plan, and what a failed run's recovery restores (the same bytes as the backup
/// the run took first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreRun<'a> {
    /// The raw `relay_domains` value.
    pub relay_domains: &'a str,
    /// The transport file, `None` when it did not exist.
    pub transport: Option<&'a str>,
    /// The relay-domains table's source, when the run read it (map mode, or a `relay_domains`
    /// that names the table) and it existed.
    pub relay_domains_map: Option<&'a str>,
    /// `relay_recipient_maps` (empty when the plan has no recipient side).
    pub relay_recipient_maps: &'a str,
    /// The recipients table's source, when the run read it and it existed.
    pub recipients_map: Option<&'a str>,
}

/// The steps of a sync: [`apply_steps_with`], and what the state the run found asks for before
/// them.
///
/// - A stale recipients database while entries only leave: Postfix answers from a database
///   older than the source the plan merged against, which may lack addresses the source has.
///   The current source (`before.recipients_map`) is rebuilt first, before any domain changes.
/// - `reload_pending`: an earlier run changed what Postfix relays and was stopped before its
///   reload. When the plan has no reload of its own, one comes first: the files are then
///   converged but for the final transport (the union's extra routes), and Postfix must stop
///   relaying the removed domains before their routes go.
///
/// ```
/// use relay_core::{sync_steps, Freshness, PreRun, Step};
/// # use std::collections::BTreeSet;
/// # use relay_core::{NextHop, Plan, PlanInput, Transport};
/// # let hop = NextHop::new(Transport::Smtp, "192.0.2.1", 25).unwrap();
/// # let names = relay_core::normalize_rows(&["a.example"]).valid;
/// # let transport = format!("{}\na.example smtp:[192.0.2.1]:25\n{}\n", relay_core::BEGIN_MARKER, relay_core::END_MARKER);
/// # let input = PlanInput { database: &names, preserve: &BTreeSet::new(), relay_domains: "a.example", transport: Some(&transport), next_hop: &hop };
/// let plan = Plan::new(input).unwrap();
/// let fresh = Freshness { transport: true, relay_domains_map: true, recipients_map: true };
/// assert!(sync_steps(&plan, &PreRun::default(), fresh, false).is_empty());
/// assert_eq!(sync_steps(&plan, &PreRun::default(), fresh, true), [Step::Reload]);
/// ```
pub fn sync_steps<'p>(
    plan: &'p Plan,
    before: &PreRun<'p>,
    fresh: Freshness,
    reload_pending: bool,
) -> Vec<Step<'p>> {
    let mut steps = apply_steps_with(plan, fresh);
    let stale_removal = !fresh.recipients_map
        && plan
            .recipients
            .as_ref()
            .is_some_and(|r| r.enabled && r.first_write().is_none() && r.last_write);
    if let Some(text) = before.recipients_map.filter(|_| stale_removal) {
        steps.insert(0, Step::WriteRecipientsMap(text));
    }
    if reload_pending && !steps.contains(&Step::Reload) {
        steps.insert(0, Step::Reload);
    }
    steps
}

/// The first text each map gets in a step list: what can be built ahead, all at once, before
/// the steps run (relay-postfix's `prepare_maps`), so that each write only renames its map into
/// place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstWrites<'p> {
    /// The transport file's first text.
    pub transport: Option<&'p str>,
    /// The relay-domains table's first text.
    pub relay_domains_map: Option<&'p str>,
    /// The recipients table's first text.
    pub recipients_map: Option<&'p str>,
}

impl<'p> FirstWrites<'p> {
    /// The first writes of `steps`.
    pub fn of(steps: &[Step<'p>]) -> FirstWrites<'p> {
        let mut first = FirstWrites::default();
        for step in steps {
            let (slot, text) = match *step {
                Step::WriteTransport(text) => (&mut first.transport, text),
                Step::WriteRelayDomainsMap(text) => (&mut first.relay_domains_map, text),
                Step::WriteRecipientsMap(text) => (&mut first.recipients_map, text),
                Step::RebuildTransportMap
                | Step::SetRelayDomains(_)
                | Step::SetRelayRecipientMaps(_)
                | Step::Reload => continue,
            };
            slot.get_or_insert(text);
        }
        first
    }

    /// Whether the steps write no map at all.
    pub fn is_empty(&self) -> bool {
        *self == FirstWrites::default()
    }
}
