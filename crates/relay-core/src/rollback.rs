//! Rolling back to a backup generation (SPEC §6, §11), planned with a sync's invariant
//! (SPEC §2 step 7): at no instant is a relayed domain without a route in the transport map.
//!
//! A rollback moves Postfix from the state it has now to a generation's: its `relay_domains`
//! value, its transport file and, in map mode, its copy of the relay-domains table. Writing the
//! generation's transport file first (the obvious order) takes the route away from every domain
//! that is relayed now but not in the generation, while `relay_domains` (or the table it names)
//! still relays it: Postfix would accept its mail and hand it to DNS, which points back at this
//! gateway. So a rollback is applied like a sync, as [`Step`]s:
//!
//! 1. the transport file becomes the *union*: the generation's file, with every route the
//!    current file has and the generation's lacks added to its managed block;
//! 2. map mode: the table is restored from the generation's copy (see [`TableRestore`]);
//! 3. `relay_domains` is set to the generation's value, and Postfix reloads;
//! 4. the transport file becomes the generation's (the *final* text).
//!
//! The union is built on the generation's file rather than on the current one, and the
//! current routes are read from every `key value` line as postmap reads them, markers being
//! comments to postmap. So the current relay_domains value is not needed (the union routes
//! whatever either file routes, whatever either value relays), and a current file whose
//! managed block is broken is no reason to refuse: its routes stay through the union, and the
//! final text replaces it. It is the generation's file that must parse, since its block is
//! where the union's extra routes go; a broken one is refused ([`RollbackPlanError`]).
//!
//! Lines outside the managed block end as the generation has them: a hand-written route the
//! current file has and the generation lacks stays only through the union, inside its managed
//! block (a continuation line of it is not carried: the union only has to route the key).
//!
//! A generation that itself relays a domain without a route (the state before relay-sync's
//! first sync often does: it relied on DNS) is restored as it was; only its relayed domains
//! that have a route now keep it until the last step. The invariant is about the transition,
//! not about the generation the operator chose.

use std::collections::{BTreeMap, BTreeSet};

use crate::transport::routes;
use crate::{cut_list, RelayDomains, RelayDomainsTable, Step, TransportError, TransportFile};

/// What a rollback is planned from. No I/O: the caller has read it all.
#[derive(Debug, Clone, Copy)]
pub struct RollbackInput<'a> {
    /// The transport file as it is now, `None` when it does not exist.
    pub current_transport: Option<&'a str>,
    /// Map mode's relay-domains table source as it is now, `None` when it does not exist.
    pub current_table: Option<&'a str>,
    /// `RELAY_DOMAINS_MAP`, the table's source file: a `relay_domains` token naming it (with
    /// any map type) makes its keys relayed domains ([`RelayDomainsTable::is_named_in`]).
    pub table_path: &'a str,
    /// The generation to roll back to.
    pub generation: GenerationTexts<'a>,
}

/// A backup generation's texts (SPEC §6).
#[derive(Debug, Clone, Copy)]
pub struct GenerationTexts<'a> {
    /// The raw `relay_domains` value it holds.
    pub relay_domains: &'a str,
    /// Its transport file (empty when the file did not exist then).
    pub transport: &'a str,
    /// Its copy of the relay-domains table's source, when it has one.
    pub table: Option<&'a str>,
}

/// What a rollback does with map mode's relay-domains table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRestore {
    /// The generation's `relay_domains` does not name the table: the table is left as it is
    /// (a copy of a table nothing used then is not restored, since the current `relay_domains`
    /// may relay through it until the new value is in place).
    NotNamed,
    /// The generation's `relay_domains` names the table and the generation has its copy: the
    /// copy is restored before `relay_domains` changes, so the value names a table that
    /// already holds the generation's domains.
    FromCopy,
    /// The generation's `relay_domains` names the table but the generation has no copy of it
    /// (a backup made before tables were backed up): the table is kept as it is now, and the
    /// caller says so at WARN. Its keys are relayed after the rollback, so each must have a
    /// route in the final transport file (see [`RollbackPlan::kept_routes`]).
    KeptWithoutCopy,
}

/// A generation relay-sync cannot roll back to without leaving a relayed domain unrouted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackPlanError {
    /// The generation's transport file has a broken managed block: the union's extra routes
    /// have no block to go in.
    #[error("its transport file: {0}; roll back to another generation")]
    GenerationTransport(TransportError),
    /// The table is kept (the generation has no copy of it) and relays domains that neither
    /// the generation's transport file nor the current one routes.
    #[error(
        "the table {table} is kept as it is now (the backup has no copy of it) and relays {}, \
         which neither the backup's transport file nor the current one routes; roll back to \
         another generation",
        cut_list(.domains, 20)
    )]
    KeptTableUnrouted {
        /// The table's source file.
        table: String,
        /// Its keys without a route, lowercased and sorted.
        domains: Vec<String>,
    },
}

/// The texts and order of a rollback.
///
/// ```
/// use relay_core::{GenerationTexts, RollbackInput, RollbackPlan, Step, BEGIN_MARKER, END_MARKER};
/// let hop = "smtp:[192.0.2.1]:25";
/// let current = format!("{BEGIN_MARKER}\na.example {hop}\nfresh.example {hop}\n{END_MARKER}\n");
/// let old = format!("{BEGIN_MARKER}\na.example {hop}\n{END_MARKER}\n");
/// let plan = RollbackPlan::new(RollbackInput {
///     current_transport: Some(&current),
///     current_table: None,
///     table_path: "/etc/postfix/relay_domains",
///     generation: GenerationTexts { relay_domains: "a.example", transport: &old, table: None },
/// })
/// .unwrap();
/// let steps = plan.steps();
/// // fresh.example keeps its route until relay_domains no longer names it.
/// assert!(matches!(steps[0], Step::WriteTransport(union) if union.contains("fresh.example")));
/// assert_eq!(steps[1], Step::SetRelayDomains("a.example"));
/// assert_eq!(steps[2], Step::Reload);
/// assert_eq!(steps[3], Step::WriteTransport(&old));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The generation's `relay_domains` value, as it holds it.
    pub relay_domains_value: String,
    /// The transport file to hold while `relay_domains` changes: the generation's, with the
    /// current routes it lacks in its managed block. `None` when that is the final text (the
    /// current file routes nothing the generation does not).
    pub transport_union: Option<String>,
    /// The transport file as it ends: the generation's text, byte for byte, unless a kept
    /// table needs routes it lacks ([`RollbackPlan::kept_routes`]).
    pub transport_final: String,
    /// What happens to map mode's table.
    pub table: TableRestore,
    /// The table's source to restore ([`TableRestore::FromCopy`]), else `None`.
    pub relay_domains_map: Option<String>,
    /// With [`TableRestore::KeptWithoutCopy`]: keys of the kept table that the generation's
    /// transport file does not route, whose current route is added to the final file's managed
    /// block (lowercased, sorted). The caller logs them at WARN; the next sync settles them.
    pub kept_routes: Vec<String>,
    /// Recipient validation's side, when the generation holds it
    /// ([`RollbackPlan::with_recipients`]); `None` leaves it as it is.
    pub recipients: Option<RecipientsRestore>,
}

/// What a generation holds of recipient validation, and the recipients table now.
#[derive(Debug, Clone, Copy)]
pub struct RecipientsRollback<'a> {
    /// The generation's `relay_recipient_maps`.
    pub relay_recipient_maps: &'a str,
    /// The generation's copy of the recipients table, when it has one.
    pub table: Option<&'a str>,
    /// The recipients table's source now, `None` when it does not exist.
    pub current_table: Option<&'a str>,
}

/// How a rollback restores recipient validation: the table (old and current entries while
/// the parameters change, then the generation's), then `relay_recipient_maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientsRestore {
    /// The generation's `relay_recipient_maps`.
    pub relay_recipient_maps: String,
    /// The table to hold while the parameters change: the generation's entries and the
    /// current ones. `None` when there is no table to restore.
    pub union: Option<String>,
    /// The generation's table, written after the reload.
    pub table: Option<String>,
}

impl RollbackPlan {
    /// Plans the rollback to `input.generation`.
    pub fn new(input: RollbackInput<'_>) -> Result<RollbackPlan, RollbackPlanError> {
        let generation = input.generation;
        let file = TransportFile::parse(generation.transport)
            .map_err(RollbackPlanError::GenerationTransport)?;
        let table_ref = |text| RelayDomainsTable::new("", input.table_path, text);
        let names_table = RelayDomains::parse(generation.relay_domains)
            .is_ok_and(|value| table_ref(None).is_named_in(&value));
        let (table, relay_domains_map) = match (names_table, generation.table) {
            (true, Some(text)) => (TableRestore::FromCopy, Some(text.to_owned())),
            (true, None) => (TableRestore::KeptWithoutCopy, None),
            (false, _) => (TableRestore::NotNamed, None),
        };

        // Postfix folds keys to lowercase, so a route is a lowercased key.
        let generation_routes: BTreeSet<String> = routes(generation.transport)
            .map(|(key, _)| key.to_ascii_lowercase())
            .collect();
        // The current routes the generation lacks; of equal keys the last line wins, as in
        // TransportFile.
        let mut extra: BTreeMap<String, &str> = BTreeMap::new();
        for (key, value) in routes(input.current_transport.unwrap_or_default()) {
            let key = key.to_ascii_lowercase();
            if !generation_routes.contains(&key) {
                extra.insert(key, value);
            }
        }

        let mut kept_routes = Vec::new();
        if table == TableRestore::KeptWithoutCopy {
            let mut unrouted = Vec::new();
            let keys: BTreeSet<String> = table_ref(input.current_table)
                .keys()
                .map(str::to_ascii_lowercase)
                .collect();
            for key in keys {
                if generation_routes.contains(&key) {
                    continue;
                }
                if extra.contains_key(&key) {
                    kept_routes.push(key);
                } else {
                    unrouted.push(key);
                }
            }
            if !unrouted.is_empty() {
                return Err(RollbackPlanError::KeptTableUnrouted {
                    table: input.table_path.to_owned(),
                    domains: unrouted,
                });
            }
        }

        let transport_final = if kept_routes.is_empty() {
            generation.transport.to_owned()
        } else {
            with_entries(
                &file,
                kept_routes
                    .iter()
                    .map(|key| (key.as_str(), extra[key.as_str()])),
            )
        };
        let transport_union = (!extra.is_empty())
            .then(|| with_entries(&file, extra.iter().map(|(k, v)| (k.as_str(), *v))))
            .filter(|union| *union != transport_final);

        Ok(RollbackPlan {
            relay_domains_value: generation.relay_domains.to_owned(),
            transport_union,
            transport_final,
            table,
            relay_domains_map,
            kept_routes,
            recipients: None,
        })
    }

    /// Adds recipient validation's side: the generation's table and `relay_recipient_maps`
    /// come back like the rest, in the order a sync would use (no address the current table
    /// accepts is dropped before the parameters have changed).
    #[must_use]
    pub fn with_recipients(mut self, input: RecipientsRollback<'_>) -> RollbackPlan {
        let union = input.table.map(|_| {
            let keys = crate::map_table::entry_keys;
            let all: BTreeSet<&str> = keys(input.table.unwrap_or_default())
                .chain(keys(input.current_table.unwrap_or_default()))
                .collect();
            crate::RecipientsTable::render(all.iter().copied())
        });
        self.recipients = Some(RecipientsRestore {
            relay_recipient_maps: input.relay_recipient_maps.to_owned(),
            union,
            table: input.table.map(str::to_owned),
        });
        self
    }

    /// The steps, in order: the union transport file, the table (when restored), the
    /// generation's `relay_domains`, the reload, and the final transport file.
    ///
    /// Unlike a sync's, every write happens even when the text is already in place: a
    /// rollback is how an operator gets back to a known state, and rewriting also rebuilds a
    /// map database that went stale or bad.
    pub fn steps(&self) -> Vec<Step<'_>> {
        let mut steps = Vec::with_capacity(5);
        let first = self.transport_union.as_deref();
        steps.push(Step::WriteTransport(
            first.unwrap_or(self.transport_final.as_str()),
        ));
        if let Some(table) = &self.relay_domains_map {
            steps.push(Step::WriteRelayDomainsMap(table));
        }
        let recipients = self.recipients.as_ref();
        if let Some(union) = recipients.and_then(|r| r.union.as_deref()) {
            steps.push(Step::WriteRecipientsMap(union));
        }
        steps.push(Step::SetRelayDomains(&self.relay_domains_value));
        if let Some(r) = recipients {
            steps.push(Step::SetRelayRecipientMaps(&r.relay_recipient_maps));
        }
        steps.push(Step::Reload);
        if first.is_some() {
            steps.push(Step::WriteTransport(&self.transport_final));
        }
        if let Some(table) = recipients.and_then(|r| r.table.as_deref()) {
            steps.push(Step::WriteRecipientsMap(table));
        }
        steps
    }
}

/// `file` rendered with its managed block's entries and `more` (keys it does not have).
fn with_entries<'e>(
    file: &'e TransportFile<'_>,
    more: impl Iterator<Item = (&'e str, &'e str)>,
) -> String {
    let mut entries: Vec<(&str, &str)> = file.managed_entries().collect();
    entries.extend(more);
    // Two sorted runs: the stable sort merges them in one pass.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    file.render(entries)
}
