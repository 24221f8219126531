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
    let mut steps = Vec::with_capacity(4);
    if plan.transport_needs(&plan.transport_union) {
        steps.push(Step::WriteTransport(&plan.transport_union));
    } else if !map_fresh {
        steps.push(Step::RebuildTransportMap);
    }
    if plan.relay_domains_changed() {
        steps.push(Step::SetRelayDomains(&plan.relay_domains_value));
    }
    if !steps.is_empty() {
        steps.push(Step::Reload);
    }
    if plan.transport_final != plan.transport_union && plan.transport_needs(&plan.transport_final) {
        steps.push(Step::WriteTransport(&plan.transport_final));
    }
    steps
}
