//! The plan: what the database wants against what Postfix has (SPEC §2 step 5).

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::{
    DomainName, NextHop, RecipientPlan, RecipientsError, RecipientsInput, RelayDomains,
    RelayDomainsError, RelayDomainsMode, RelayDomainsTable, TransportError, TransportFile,
};

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
    /// Map mode was asked for without naming the table.
    #[error("RELAY_DOMAINS_MODE=map needs the relay-domains table (RELAY_DOMAINS_MAP)")]
    MapModeWithoutTable,
    /// `relay_recipient_maps` cannot be rewritten safely.
    #[error(transparent)]
    Recipients(#[from] RecipientsError),
}

impl PlanError {
    /// The Postfix command that settles the error by hand, as a program and its arguments, when
    /// one does: the caller, which knows the instance (`-c`, a container prefix), renders it.
    ///
    /// ```
    /// use relay_core::{PlanError, RelayDomainsError};
    /// let (program, args) = PlanError::RelayDomains(RelayDomainsError::Braces).fix().unwrap();
    /// assert_eq!((program, args[0]), ("postconf", "-e"));
    /// ```
    pub fn fix(&self) -> Option<(&'static str, [&'static str; 2])> {
        match self {
            PlanError::RelayDomains(RelayDomainsError::Braces) => {
                Some(("postconf", ["-e", "relay_domains = a.example, b.example"]))
            }
            PlanError::Recipients(RecipientsError::Braces) => Some((
                "postconf",
                ["-e", "relay_recipient_maps = hash:/etc/postfix/other"],
            )),
            _ => None,
        }
    }
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
    /// The transport file with the union of old and new managed entries, written first so that
    /// no domain is ever in `relay_domains` without its entry. `None` when the union has no
    /// text of its own: it is the final file (no entry leaves) or holds exactly the current
    /// entries (none arrives); see [`Plan::transport_union_text`].
    pub transport_union: Option<String>,
    /// The transport file as it should end up.
    pub transport_final: String,
    /// Managed entries that appear (or change next hop) in the final transport file.
    pub transport_added: usize,
    /// Managed entries that disappear from the transport file.
    pub transport_removed: usize,
    /// Domains relayed once the plan is applied, inline or through the table.
    pub relayed_count: usize,
    /// `RELAY_DOMAINS_MODE` the plan was made for.
    pub mode: RelayDomainsMode,
    /// Map mode: the relay-domains table's source file as it should be (`None` in inline mode).
    pub relay_domains_map: Option<String>,
    /// Map mode: the table's path, for logs.
    pub relay_domains_map_path: Option<String>,
    relay_domains_map_needs_write: bool,
    /// Recipient validation: how the recipients table and `relay_recipient_maps` change
    /// (`None`: the feature is off and nothing of it is left to take out).
    pub recipients: Option<RecipientPlan>,
    /// Whether writing `transport_final` changes the file (or creates it).
    final_needs_write: bool,
    /// Whether writing `transport_union` (when `Some`) changes the file.
    union_needs_write: bool,
    /// With `transport_union` `None`: whether the union is the final file (else the current).
    union_is_final: bool,
}

impl Plan {
    /// Computes the plan for inline mode, without a relay-domains table.
    pub fn new(input: PlanInput<'_>) -> Result<Plan, PlanError> {
        Plan::with_mode(input, RelayDomainsMode::Inline, None)
    }

    /// Computes the plan for `mode`.
    ///
    /// `table` is the relay-domains table (`RELAY_DOMAINS_MAP`): required in map mode, and in
    /// inline mode it lets a switch back from map mode recognise the table's token and its
    /// domains. A token naming the table is relay-sync's own, whatever its map type: it is
    /// replaced (map mode) or dropped (inline mode), never kept as a preserved token.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use relay_core::{normalize_rows, NextHop, Plan, PlanInput, RelayDomainsMode, RelayDomainsTable, Transport};
    /// let rows = normalize_rows(&["a.example", "b.example"]);
    /// let hop = NextHop::new(Transport::Smtp, "192.0.2.1", 25).unwrap();
    /// let table = RelayDomainsTable::new("hash", "/etc/postfix/relay_domains", None);
    /// let input = PlanInput { database: &rows.valid, preserve: &BTreeSet::new(),
    ///     relay_domains: "$mydestination, a.example, b.example", transport: None, next_hop: &hop };
    /// let plan = Plan::with_mode(input, RelayDomainsMode::Map, Some(table)).unwrap();
    /// // A switch: no domain is added or removed, the domains move into the table.
    /// assert!(plan.added.is_empty() && plan.removed.is_empty());
    /// assert_eq!(plan.relay_domains_value, "$mydestination, hash:/etc/postfix/relay_domains");
    /// ```
    pub fn with_mode(
        input: PlanInput<'_>,
        mode: RelayDomainsMode,
        table: Option<RelayDomainsTable<'_>>,
    ) -> Result<Plan, PlanError> {
        let current = RelayDomains::parse(input.relay_domains)?;
        let transport_current = input.transport.unwrap_or_default();
        let file = TransportFile::parse(transport_current)?;

        let names_table = |token: &String| table.is_some_and(|t| t.is_named_by(token));
        // Names relayed now, as written: inline ones, and the table's keys when relay_domains
        // names it. Compared as text against the wanted names (both sorted), so that a table
        // of a million lines costs no million parses.
        let table_keys = table.filter(|t| t.is_named_in(&current));
        let mut current_names: Vec<&str> =
            Vec::with_capacity(current.domains.len() + table_keys.map_or(0, |t| t.lines_hint()));
        current_names.extend(current.domains.iter().map(DomainName::as_str));
        if let Some(table) = table_keys {
            current_names.extend(table.keys());
        }
        // The table relay-sync writes is sorted already: one pass instead of a sort.
        if !current_names.is_sorted_by(|a, b| a < b) {
            current_names.sort_unstable();
            current_names.dedup();
        }
        // Borrowed when nothing is preserved: a million names are not copied for nothing.
        let wanted: Cow<'_, BTreeSet<DomainName>> = if input.preserve.is_empty() {
            Cow::Borrowed(input.database)
        } else {
            Cow::Owned(input.database.union(input.preserve).cloned().collect())
        };
        let wanted_token = match (mode, table) {
            (RelayDomainsMode::Map, Some(table)) => Some(table.token()),
            (RelayDomainsMode::Map, None) => return Err(PlanError::MapModeWithoutTable),
            (RelayDomainsMode::Inline, _) => None,
        };
        let mut preserved_tokens: Vec<String> = current
            .preserved_tokens
            .iter()
            .filter(|token| !names_table(token) || Some(*token) == wanted_token.as_ref())
            .cloned()
            .collect();
        let (target, relay_domains_map) = match wanted_token {
            Some(token) => {
                if !preserved_tokens.contains(&token) {
                    preserved_tokens.push(token);
                }
                let target = RelayDomains {
                    preserved_tokens,
                    domains: BTreeSet::new(),
                };
                (target, true)
            }
            None => {
                let target = RelayDomains {
                    preserved_tokens,
                    domains: wanted.as_ref().clone(),
                };
                (target, false)
            }
        };
        let diff = diff_names(&current_names, &wanted, input.preserve);
        // Gone before the big texts are rendered: at a million names it is megabytes.
        drop(current_names);
        let relay_domains_map = relay_domains_map.then(|| RelayDomainsTable::render(wanted.iter()));
        let relay_domains_map_needs_write = match &relay_domains_map {
            Some(text) => table.and_then(|t| t.text) != Some(text.as_str()),
            None => false,
        };
        let (added, removed, managed_now) = (diff.added, diff.removed, diff.managed_now);

        let next_hop = input.next_hop.to_string();
        // Every relayed domain gets a route: database domains and preserved ones alike, unless
        // a hand-written line outside the block already routes it. A preserved domain without
        // a line would otherwise be accepted and then routed by DNS, back to this gateway.
        let hand_written: BTreeSet<DomainName> = wanted
            .iter()
            .filter(|name| file.has_hand_written(name))
            .cloned()
            .collect();
        // Sorted, since `wanted` is: the merge below relies on it.
        let final_entries = || {
            wanted
                .iter()
                .filter(|name| hand_written.is_empty() || !hand_written.contains(*name))
                .map(|name| (name.as_str(), next_hop.as_str()))
        };
        let mut merged = Merged::default();
        merge_entries(file.managed_entries(), final_entries(), |_| {}, &mut merged);
        let transport_final = file.render(final_entries());
        // The union has a text of its own only when entries both arrive and leave.
        let transport_union = (merged.added > 0 && merged.removed > 0).then(|| {
            let mut entries = Vec::with_capacity(file.managed_entries().len() + merged.added);
            merge_entries(
                file.managed_entries(),
                final_entries(),
                |entry| entries.push(entry),
                &mut Merged::default(),
            );
            file.render(entries)
        });
        let needs = |text: &str| match input.transport {
            Some(current) => text != current,
            None => !text.is_empty(),
        };

        Ok(Plan {
            relay_domains_value: target.render(),
            final_needs_write: needs(&transport_final),
            union_needs_write: transport_union.as_deref().is_some_and(needs),
            union_is_final: merged.removed == 0,
            transport_union,
            transport_final,
            current,
            target,
            added,
            removed,
            managed_now,
            database_domains: input.database.len(),
            hand_written,
            transport_added: merged.added,
            transport_removed: merged.removed,
            relayed_count: wanted.len(),
            mode,
            relay_domains_map,
            relay_domains_map_path: table.map(|t| t.path.to_owned()),
            relay_domains_map_needs_write,
            recipients: None,
        })
    }

    /// Adds recipient validation to the plan ([`RecipientPlan::new`]). `relayed` is what the
    /// plan relays once applied: the database's domains and the preserved ones.
    pub fn with_recipients(
        mut self,
        database: Option<&BTreeSet<crate::Recipient>>,
        relayed: &BTreeSet<DomainName>,
        table: crate::RecipientsTable<'_>,
        relay_recipient_maps: &str,
    ) -> Result<Plan, PlanError> {
        self.recipients = RecipientPlan::new(RecipientsInput {
            database,
            relayed,
            table,
            relay_recipient_maps,
        })?;
        Ok(self)
    }

    /// The transport file to hold while `relay_domains` changes: every old and new route.
    /// `current` is the file's text before the run (empty when it did not exist), which is
    /// the answer when no route arrives.
    pub fn transport_union_text<'a>(&'a self, current: &'a str) -> &'a str {
        match &self.transport_union {
            Some(text) => text,
            None if self.union_is_final => &self.transport_final,
            None => current,
        }
    }

    /// Whether `relay_domains` must be rewritten. Order and formatting alone are no change.
    pub fn relay_domains_changed(&self) -> bool {
        self.current != self.target
    }

    /// Map mode: whether the relay-domains table's source differs from what it should be (or
    /// does not exist). Always `false` in inline mode.
    pub fn relay_domains_map_changed(&self) -> bool {
        self.relay_domains_map_needs_write
    }

    /// Whether the transport file must be rewritten.
    pub fn transport_changed(&self) -> bool {
        self.final_needs_write
    }

    /// The transport text to write before `relay_domains` changes, if any: the union when
    /// it differs from the file, or the final file when it is the union.
    pub(crate) fn transport_first_write(&self) -> Option<&str> {
        match &self.transport_union {
            Some(union) => self.union_needs_write.then_some(union.as_str()),
            None if self.union_is_final => self
                .final_needs_write
                .then_some(self.transport_final.as_str()),
            None => None,
        }
    }

    /// The transport text to write after the reload, if any: the final file, when the union
    /// was not it.
    pub(crate) fn transport_last_write(&self) -> Option<&str> {
        let after_union = self.transport_union.is_some() || !self.union_is_final;
        (after_union && self.final_needs_write).then_some(self.transport_final.as_str())
    }

    /// Whether Postfix already matches the database.
    pub fn is_empty(&self) -> bool {
        !self.relay_domains_changed()
            && !self.transport_changed()
            && !self.relay_domains_map_changed()
            && self.recipients.as_ref().is_none_or(RecipientPlan::is_empty)
    }
}

/// Counts of a merge of the managed block's old entries with the final ones.
#[derive(Debug, Default)]
struct Merged {
    /// Final entries that are new or have a new value.
    added: usize,
    /// Old entries without a final one.
    removed: usize,
}

/// Merges two key-sorted entry lists in one pass (no lookups: a million entries take a few
/// milliseconds), handing each entry of the union to `emit` (a key in both with its final
/// value) and counting what arrives and leaves.
fn merge_entries<'a>(
    old: impl Iterator<Item = (&'a str, &'a str)>,
    new: impl Iterator<Item = (&'a str, &'a str)>,
    mut emit: impl FnMut((&'a str, &'a str)),
    counts: &mut Merged,
) {
    let mut old = old.peekable();
    let mut new = new.peekable();
    loop {
        match (old.peek().copied(), new.peek().copied()) {
            (None, None) => break,
            (Some(o), None) => {
                emit(o);
                counts.removed += 1;
                old.next();
            }
            (None, Some(n)) => {
                emit(n);
                counts.added += 1;
                new.next();
            }
            (Some(o), Some(n)) => match o.0.cmp(n.0) {
                std::cmp::Ordering::Less => {
                    emit(o);
                    counts.removed += 1;
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    emit(n);
                    counts.added += 1;
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    emit(n);
                    if o.1 != n.1 {
                        counts.added += 1;
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// The difference between the names relayed now (as written, sorted) and the wanted ones.
struct NameDiff {
    added: BTreeSet<DomainName>,
    removed: BTreeSet<DomainName>,
    managed_now: usize,
}

/// One merge over both sorted lists. A current name that is not exactly a wanted one is parsed
/// (normalized): it is removed if its normal form is not wanted, and otherwise keeps its wanted
/// counterpart out of `added`. Current names that are not valid domains are ignored.
fn diff_names(
    current: &[&str],
    wanted: &BTreeSet<DomainName>,
    preserve: &BTreeSet<DomainName>,
) -> NameDiff {
    let mut added = Vec::new();
    let mut unmatched = BTreeSet::new();
    let mut matched = 0usize;
    let mut matched_preserved = 0usize;
    let all = current;
    let mut current = current.iter().copied().peekable();
    let mut wanted_iter = wanted.iter().peekable();
    loop {
        match (current.peek().copied(), wanted_iter.peek().copied()) {
            (None, None) => break,
            (Some(c), None) => {
                unmatched.extend(DomainName::parse(c).ok());
                current.next();
            }
            (None, Some(w)) => {
                added.push(w);
                wanted_iter.next();
            }
            (Some(c), Some(w)) => match c.cmp(w.as_str()) {
                std::cmp::Ordering::Less => {
                    unmatched.extend(DomainName::parse(c).ok());
                    current.next();
                }
                std::cmp::Ordering::Greater => {
                    added.push(w);
                    wanted_iter.next();
                }
                std::cmp::Ordering::Equal => {
                    matched += 1;
                    if preserve.contains(w) {
                        matched_preserved += 1;
                    }
                    current.next();
                    wanted_iter.next();
                }
            },
        }
    }
    let added: BTreeSet<DomainName> = added
        .into_iter()
        .filter(|name| !unmatched.contains(*name))
        .cloned()
        .collect();
    let (found, removed): (BTreeSet<DomainName>, BTreeSet<DomainName>) = unmatched
        .into_iter()
        .partition(|name| wanted.contains(name));
    // A found name that was also written exactly (`Example.COM` beside `example.com`) is
    // counted once.
    let found_only = found
        .difference(preserve)
        .filter(|name| all.binary_search(&name.as_str()).is_err())
        .count();
    let managed_now =
        matched - matched_preserved + found_only + removed.difference(preserve).count();
    NameDiff {
        added,
        removed,
        managed_now,
    }
}
