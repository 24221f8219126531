//! The plan: what the database wants against what Postfix has (SPEC §2 step 5).

use std::collections::{BTreeMap, BTreeSet};

use crate::{DomainName, NextHop, RelayDomains, RelayDomainsError, TransportError, TransportFile};

/// Everything the plan is computed from. No I/O: the caller has read it all.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Valid names from the database.
    pub database: &'a BTreeSet<DomainName>,
    /// `PRESERVE_DOMAINS`: always in `relay_domains`.
    pub preserve: &'a BTreeSet<DomainName>,
    /// The current raw `relay_domains` value.
    pub relay_domains: &'a str,
    /// The current transport file, `None` when it does not exist.
    pub transport: Option<&'a str>,
    /// The next hop written for every database domain.
    pub next_hop: &'a NextHop,
}

/// The current state cannot be planned against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `relay_domains` cannot be rewritten safely.
    #[error(transparent)]
    RelayDomains(#[from] RelayDomainsError),
    /// The transport file's managed block is broken.
    #[error("transport file: {0}")]
    Transport(#[from] TransportError),
}

/// The difference between the database and Postfix, and the texts that settle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `relay_domains` as it is now, parsed.
    pub current: RelayDomains,
    /// `relay_domains` as it should be.
    pub target: RelayDomains,
    /// `target`, rendered: the value to hand to `postconf -e`.
    pub relay_domains_value: String,
    /// Domains that enter `relay_domains`.
    pub added: BTreeSet<DomainName>,
    /// Domains that leave `relay_domains`.
    pub removed: BTreeSet<DomainName>,
    /// Managed domains in `relay_domains` now (domains that are not preserved): the guard's base.
    pub managed_now: usize,
    /// Valid domains the database returned.
    pub database_domains: usize,
    /// Relayed domains left out of the managed block because a hand-written line outside it
    /// already routes them (logged at WARN for database domains).
    pub hand_written: BTreeSet<DomainName>,
    /// The transport file's current text (empty when missing).
    pub transport_current: String,
    /// The transport file with the union of old and new managed entries: written first, so that
    /// no domain is ever in `relay_domains` without its entry.
    pub transport_union: String,
    /// The transport file as it should end up.
    pub transport_final: String,
    /// Managed entries that appear (or change next hop) in the final transport file.
    pub transport_added: usize,
    /// Managed entries that disappear from the transport file.
    pub transport_removed: usize,
    transport_exists: bool,
}

impl Plan {
    /// Computes the plan.
    pub fn new(input: PlanInput<'_>) -> Result<Plan, PlanError> {
        let current = RelayDomains::parse(input.relay_domains)?;
        let transport_current = input.transport.unwrap_or_default().to_owned();
        let file = TransportFile::parse(&transport_current)?;

        let target = RelayDomains {
            preserved_tokens: current.preserved_tokens.clone(),
            domains: input.database.union(input.preserve).cloned().collect(),
        };
        let added = target
            .domains
            .difference(&current.domains)
            .cloned()
            .collect();
        let removed = current
            .domains
            .difference(&target.domains)
            .cloned()
            .collect();
        let managed_now = current.domains.difference(input.preserve).count();

        let next_hop = input.next_hop.to_string();
        // Every relayed domain gets a route: database domains and preserved ones alike, unless
        // a hand-written line outside the block already routes it. A preserved domain without
        // a line would otherwise be accepted and then routed by DNS, back to this gateway.
        let (hand_written, wanted): (BTreeSet<_>, BTreeSet<_>) = target
            .domains
            .iter()
            .cloned()
            .partition(|name| file.has_hand_written(name));
        let final_entries: BTreeMap<&str, &str> = wanted
            .iter()
            .map(|name| (name.as_str(), next_hop.as_str()))
            .collect();
        let mut union_entries: BTreeMap<&str, &str> = file
            .managed_entries()
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        union_entries.extend(final_entries.iter().map(|(k, v)| (*k, *v)));

        let old = file.managed_entries();
        let transport_added = final_entries
            .iter()
            .filter(|(key, value)| old.get(**key).map(String::as_str) != Some(**value))
            .count();
        let transport_removed = old
            .keys()
            .filter(|key| !final_entries.contains_key(key.as_str()))
            .count();

        Ok(Plan {
            relay_domains_value: target.render(),
            transport_union: file.render(union_entries),
            transport_final: file.render(final_entries),
            current,
            target,
            added,
            removed,
            managed_now,
            database_domains: input.database.len(),
            hand_written,
            transport_current,
            transport_added,
            transport_removed,
            transport_exists: input.transport.is_some(),
        })
    }

    /// Whether `relay_domains` must be rewritten. Order and formatting alone are no change.
    pub fn relay_domains_changed(&self) -> bool {
        self.current != self.target
    }

    /// Whether the transport file must be rewritten.
    pub fn transport_changed(&self) -> bool {
        self.transport_needs(&self.transport_final)
    }

    /// Whether writing `text` would change the transport file (or create it).
    pub(crate) fn transport_needs(&self, text: &str) -> bool {
        if self.transport_exists {
            text != self.transport_current
        } else {
            !text.is_empty()
        }
    }

    /// Whether Postfix already matches the database.
    pub fn is_empty(&self) -> bool {
        !self.relay_domains_changed() && !self.transport_changed()
    }
}
