//! The order in which a plan is applied (SPEC §2 step 7), as data.
//!
//! The order guarantees that Postfix never accepts mail for a domain that has no transport
//! entry: the transport map first gains the new entries (keeping the old ones), then
//! `relay_domains` changes and Postfix reloads, and only then do removed entries leave the map.
//! The engine executes these steps; the property tests check the guarantee on every
//! intermediate state.

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
    /// Set `relay_domains` to this value.
    SetRelayDomains(&'p str),
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
}

/// [`apply_steps`] with the freshness of each map given separately.
///
/// In map mode the table is written after the transport map has gained the new routes and
/// before `relay_domains` changes: a switch to map mode names a table that already holds every
/// domain, and a switch back to inline mode lists every domain before the table is let go (the
/// table file itself is left in place, unused).
pub fn apply_steps_with(plan: &Plan, fresh: Freshness) -> Vec<Step<'_>> {
    let mut steps = Vec::with_capacity(5);
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
    if plan.relay_domains_changed() {
        steps.push(Step::SetRelayDomains(&plan.relay_domains_value));
    }
    if !steps.is_empty() {
        steps.push(Step::Reload);
    }
    if let Some(text) = plan.transport_last_write() {
        steps.push(Step::WriteTransport(text));
    }
    steps
}
