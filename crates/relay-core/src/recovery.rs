//! The recovery of a failed sync (SPEC §2 step 9): from wherever the run stopped, back to the
//! state before it, with the sync's invariant (SPEC §2 step 7): at no instant is a relayed
//! domain without its route, and no address accepted both before the run and when it stopped
//! is refused on the way back.
//!
//! A recovery is planned from values only: the [`Plan`], the texts the run read before it
//! changed anything ([`PreRun`], the same bytes as its backup), and the steps that completed.
//! Only what a completed step changed is restored: a failed write leaves the previous file and
//! map in place (relay-postfix's contract), so there is nothing to restore, and restoring
//! anyway would repeat the failing command (a broken postmap, a full disk) and turn a clean
//! exit 5 into a critical failed rollback.
//!
//! The order is a sync's, union first, in the mirror image:
//!
//! 1. each file the run wrote becomes the *union* of what it held before (when that was in
//!    force) and everything the run wrote to it: the transport file routes old and new domains
//!    ([`Plan::transport_union_text`]), the relay-domains table holds old and new domains, the
//!    recipients table old and new addresses;
//! 2. the parameters the run set go back (`relay_domains`, then `relay_recipient_maps`), and
//!    Postfix reloads;
//! 3. each file goes back to its old text, the tables before the transport file (a domain
//!    leaves the table before its route goes). A file that did not exist comes back empty: an
//!    empty transport map routes nothing, exactly like a missing one, and keeps a
//!    `transport_maps` reference valid. A recipients table that had no source keeps the union
//!    (a superset): an empty one would refuse everyone while `relay_recipient_maps` names it.
//!
//! A run that changed only the transport file (a route's next hop) restores it and reloads.
//! A failed reload does not stop a recovery: the files still go back (Postfix reads them when
//! it starts again), and the failed reload is what the recovery reports.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::map_table::entry_keys;
use crate::{Plan, PreRun, RecipientsTable, RelayDomainsTable, Step};

/// What the completed steps of a run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Touched {
    transport: bool,
    relay_domains: bool,
    relay_domains_map: bool,
    recipients_map: bool,
    relay_recipient_maps: bool,
}

impl Touched {
    fn of(completed: &[Step<'_>]) -> Touched {
        let mut touched = Touched::default();
        for step in completed {
            match step {
                Step::WriteTransport(_) => touched.transport = true,
                Step::WriteRelayDomainsMap(_) => touched.relay_domains_map = true,
                Step::WriteRecipientsMap(_) => touched.recipients_map = true,
                Step::SetRelayDomains(_) => touched.relay_domains = true,
                Step::SetRelayRecipientMaps(_) => touched.relay_recipient_maps = true,
                // A rebuilt map holds what its unchanged source says; a reload changes no file.
                Step::RebuildTransportMap | Step::Reload => {}
            }
        }
        touched
    }

    /// Whether the run changed what Postfix relays or accepts (not only routes).
    fn relaying(self) -> bool {
        self.relay_domains
            || self.relay_domains_map
            || self.recipients_map
            || self.relay_recipient_maps
    }
}

/// The way back from a failed sync, as data (see the module documentation).
///
/// ```
/// use std::collections::BTreeSet;
/// use relay_core::{NextHop, Plan, PlanInput, PreRun, RecoveryPlan, Step, Transport, BEGIN_MARKER, END_MARKER};
/// let hop = NextHop::new(Transport::Smtp, "192.0.2.1", 25).unwrap();
/// let old = format!("{BEGIN_MARKER}\na.example {hop}\n{END_MARKER}\n");
/// let names = relay_core::normalize_rows(&["b.example"]).valid;
/// let before = PreRun { relay_domains: "a.example", transport: Some(&old), ..PreRun::default() };
/// let plan = Plan::new(PlanInput { database: &names, preserve: &BTreeSet::new(),
///     relay_domains: before.relay_domains, transport: before.transport, next_hop: &hop }).unwrap();
/// let steps = relay_core::apply_steps(&plan, true);
/// // The union transport, relay_domains and the reload completed; the final transport failed.
/// let recovery = RecoveryPlan::new(&plan, before, &steps[..3]);
/// let back = recovery.steps();
/// assert!(matches!(back[0], Step::WriteTransport(union) if union.contains("b.example")));
/// assert_eq!(back[1..3], [Step::SetRelayDomains("a.example"), Step::Reload]);
/// assert_eq!(back[3], Step::WriteTransport(&old));
/// // Nothing completed: nothing to restore.
/// assert!(RecoveryPlan::new(&plan, before, &[]).is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan<'a> {
    touched: Touched,
    before: PreRun<'a>,
    /// The transport file routing old and new domains.
    transport_union: &'a str,
    /// The relay-domains table with the old domains (when they were relayed through it) and
    /// the run's.
    table_union: Cow<'a, str>,
    /// The recipients table with the old addresses (when it was in force) and the run's.
    recipients_union: Cow<'a, str>,
}

impl<'a> RecoveryPlan<'a> {
    /// Plans the way back from a run of `plan` that found `before` and completed the steps
    /// `completed` (a prefix of its steps: those before the one that failed, or all of them
    /// when the verification failed).
    pub fn new(plan: &'a Plan, before: PreRun<'a>, completed: &[Step<'_>]) -> RecoveryPlan<'a> {
        let touched = Touched::of(completed);
        let transport_union = plan.transport_union_text(before.transport.unwrap_or_default());
        let table_union = if touched.relay_domains_map {
            table_union(plan, before)
        } else {
            Cow::Borrowed("")
        };
        // What the run wrote first holds every address the table in force held (the union of
        // old and new entries, or the final table when entries only arrive); without it, the
        // run only took entries out, and the old table (a superset) is the union.
        let first = plan.recipients.as_ref().and_then(|r| r.first_write());
        let recipients_union = match (first, before.recipients_map) {
            (Some(text), _) | (None, Some(text)) => Cow::Borrowed(text),
            (None, None) => Cow::Owned(RecipientsTable::render(std::iter::empty::<&str>())),
        };
        RecoveryPlan {
            touched,
            before,
            transport_union,
            table_union,
            recipients_union,
        }
    }

    /// Whether the run changed nothing, so that there is nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.touched == Touched::default()
    }

    /// The steps, in order (see the module documentation).
    pub fn steps(&self) -> Vec<Step<'_>> {
        let touched = self.touched;
        let before = self.before;
        let old_transport = before.transport.unwrap_or_default();
        let mut steps = Vec::with_capacity(9);
        if touched.relaying() {
            if touched.transport {
                steps.push(Step::WriteTransport(self.transport_union));
            }
            if touched.relay_domains_map {
                steps.push(Step::WriteRelayDomainsMap(&self.table_union));
            }
            if touched.recipients_map {
                steps.push(Step::WriteRecipientsMap(&self.recipients_union));
            }
            if touched.relay_domains {
                steps.push(Step::SetRelayDomains(before.relay_domains));
            }
            if touched.relay_recipient_maps {
                steps.push(Step::SetRelayRecipientMaps(before.relay_recipient_maps));
            }
            steps.push(Step::Reload);
            let old_table = before.relay_domains_map.unwrap_or_default();
            if touched.relay_domains_map && self.table_union != old_table {
                steps.push(Step::WriteRelayDomainsMap(old_table));
            }
            if let Some(old) = before
                .recipients_map
                .filter(|old| touched.recipients_map && self.recipients_union != *old)
            {
                steps.push(Step::WriteRecipientsMap(old));
            }
        }
        if touched.transport {
            if !touched.relaying() || self.transport_union != old_transport {
                steps.push(Step::WriteTransport(old_transport));
            }
            // Routes alone changed: Postfix reloads all the same.
            if !touched.relaying() {
                steps.push(Step::Reload);
            }
        }
        steps
    }
}

/// The relay-domains table to hold while `relay_domains` goes back: the run's table, with the
/// old table's domains when the old `relay_domains` relayed through it. A table nothing named
/// before the run (a switch to map mode, or a leftover file) lends none of its keys: they were
/// not relayed, and may have no route.
fn table_union<'a>(plan: &'a Plan, before: PreRun<'a>) -> Cow<'a, str> {
    let written = plan.relay_domains_map.as_deref().unwrap_or_default();
    let in_force = plan
        .relay_domains_map_path
        .as_deref()
        .is_some_and(|path| RelayDomainsTable::new("", path, None).is_named_in(&plan.current));
    let Some(old) = before.relay_domains_map.filter(|_| in_force) else {
        return Cow::Borrowed(written);
    };
    let keys: BTreeSet<&str> = entry_keys(written).chain(entry_keys(old)).collect();
    if keys.len() == entry_keys(written).count() {
        return Cow::Borrowed(written);
    }
    Cow::Owned(RelayDomainsTable::render(&keys))
}
