//! Recipient validation (`RECIPIENTS_QUERY`): the addresses the gateway accepts at its relayed
//! domains, kept in a table that `relay_recipient_maps` names.
//!
//! A [`Recipient`] is to an address what a [`DomainName`] is to a name: the only way to get one
//! is [`Recipient::parse`], so nothing holding it can carry whitespace, a line break or a second
//! `@` into the table. The [`RecipientPlan`] says how the table and the parameter change, in an
//! order that never refuses an address that was accepted before and is still wanted: addresses
//! arrive before the domains that need them and leave only after the domains go (see
//! [`apply_steps_with`](crate::apply_steps_with)).

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use compact_str::CompactString;

use crate::{
    DomainName, InvalidDomain, Normalized, NormalizedRecipients, RecipientsTable, Rejected,
};

/// The longest local part accepted, in bytes (RFC 5321 §4.5.3.1.1).
pub const LOCAL_PART_MAX: usize = 64;

/// A valid, normalized recipient: `local@domain`, or `@domain` for a catch-all.
///
/// The domain part is normalized as [`DomainName`] is (IDNA, lowercase, no trailing dot); the
/// local part is lowercased, as Postfix folds the keys of its tables when it builds them and
/// the addresses it looks up, and otherwise kept as written.
///
/// ```
/// use relay_core::Recipient;
/// let r = Recipient::parse(" Alice.Smith+tag@Example.COM. ").unwrap();
/// assert_eq!(r.as_str(), "alice.smith+tag@example.com");
/// assert_eq!(r.domain(), "example.com");
/// assert_eq!(r.local(), Some("alice.smith+tag"));
/// assert!(Recipient::parse("@Example.org").unwrap().is_catch_all());
/// assert!(Recipient::parse("a b@example.com").is_err());
/// assert!(Recipient::parse("a@b@example.com").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recipient(CompactString);

/// Why a raw value is not a recipient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRecipient {
    /// Nothing left after trimming.
    #[error("empty address")]
    Empty,
    /// Whitespace or a control character inside the address.
    #[error("forbidden character {0:?}")]
    ForbiddenChar(char),
    /// No `@` at all: a bare local part or a domain name.
    #[error("no '@' (an address is user@domain, a catch-all @domain)")]
    NoAt,
    /// A second `@`.
    #[error("more than one '@'")]
    SecondAt,
    /// A quoted local part or a backslash escape, which Postfix's tables key differently.
    #[error("quoted or escaped local part (not supported)")]
    Quoted,
    /// A local part starting with `#`: the table's source would read the line as a comment.
    #[error("local part starts with '#'")]
    Hash,
    /// A local part longer than [`LOCAL_PART_MAX`] bytes.
    #[error("local part of {0} bytes ({LOCAL_PART_MAX} allowed)")]
    LocalTooLong(usize),
    /// The domain part is not a valid domain name.
    #[error("domain part: {0}")]
    Domain(InvalidDomain),
}

impl Recipient {
    /// Normalizes and validates `raw` (an address or `@domain`).
    pub fn parse(raw: &str) -> Result<Recipient, InvalidRecipient> {
        Recipient::parse_with(raw, &mut |domain| DomainName::parse(domain))
    }

    /// [`Recipient::parse`], with the domain part normalized by `domain` (a cache of
    /// [`DomainName::parse`]: a million addresses share a few thousand domains).
    #[inline]
    fn parse_with(
        raw: &str,
        normalize_domain: &mut impl FnMut(&str) -> Result<DomainName, InvalidDomain>,
    ) -> Result<Recipient, InvalidRecipient> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidRecipient::Empty);
        }
        if let Some(c) = trimmed
            .chars()
            .find(|&c| c.is_whitespace() || c.is_control() || is_format_char(c))
        {
            return Err(InvalidRecipient::ForbiddenChar(c));
        }
        let Some((local, domain)) = trimmed.split_once('@') else {
            return Err(InvalidRecipient::NoAt);
        };
        if domain.contains('@') {
            return Err(InvalidRecipient::SecondAt);
        }
        if local.contains(['"', '\\']) {
            return Err(InvalidRecipient::Quoted);
        }
        if local.starts_with('#') {
            return Err(InvalidRecipient::Hash);
        }
        if local.len() > LOCAL_PART_MAX {
            return Err(InvalidRecipient::LocalTooLong(local.len()));
        }
        let domain = normalize_domain(domain).map_err(InvalidRecipient::Domain)?;
        let mut key = CompactString::with_capacity(local.len() + 1 + domain.as_str().len());
        if local.is_ascii() {
            for c in local.chars() {
                key.push(c.to_ascii_lowercase());
            }
        } else {
            key.push_str(&local.to_lowercase());
        }
        key.push('@');
        key.push_str(domain.as_str());
        Ok(Recipient(key))
    }

    /// The key as the table holds it: `local@domain` or `@domain`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        let at = self.0.rfind('@').unwrap_or(0);
        &self.0[at + 1..]
    }

    /// The local part, `None` for a catch-all.
    pub fn local(&self) -> Option<&str> {
        let at = self.0.rfind('@').unwrap_or(0);
        (at > 0).then(|| &self.0[..at])
    }

    /// Whether this is a catch-all (`@domain`): every address at the domain is accepted.
    pub fn is_catch_all(&self) -> bool {
        self.0.starts_with('@')
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({:?})", self.0.as_str())
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Recipient {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Invisible format characters (Unicode category Cf: bidirectional overrides, zero-width
/// characters, the soft hyphen, …): an address with one would look like another in a log line
/// or the table, and no mailbox needs one.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// Normalizes and validates every recipient row, consuming them.
///
/// ```
/// let rows = vec!["Bob@Example.com".to_owned(), "bob@example.com".to_owned(), "x y@e.com".to_owned()];
/// let n = relay_core::normalize_recipients(rows);
/// assert_eq!(n.valid.len(), 1);
/// assert_eq!(n.duplicates, 1);
/// assert_eq!(n.rejected[0].raw, "x y@e.com");
/// ```
pub fn normalize_recipients(rows: Vec<String>) -> NormalizedRecipients {
    // Domain parts as written → their normal form. Bounded: a table of a million distinct
    // domains is not copied into a map.
    const CACHED_DOMAINS: usize = 65_536;
    let mut cache: std::collections::HashMap<String, Result<DomainName, InvalidDomain>> =
        std::collections::HashMap::new();
    let mut domain = |raw: &str| match cache.get(raw) {
        Some(known) => known.clone(),
        None => {
            let parsed = DomainName::parse(raw);
            if cache.len() < CACHED_DOMAINS {
                cache.insert(raw.to_owned(), parsed.clone());
            }
            parsed
        }
    };
    Normalized::from_rows(rows.into_iter(), |raw| {
        Recipient::parse_with(&raw, &mut domain).map_err(|reason| Rejected { raw, reason })
    })
}

/// The tokens of a `relay_recipient_maps` value, in order (commas and whitespace separate).
fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
}

/// What [`RecipientPlan::new`] is computed from. No I/O: the caller has read it all.
#[derive(Debug, Clone, Copy)]
pub struct RecipientsInput<'a> {
    /// `RECIPIENTS_QUERY`'s valid recipients; `None` when the feature is off.
    pub database: Option<&'a BTreeSet<Recipient>>,
    /// The domains relay-sync relays once the plan is applied (database and preserved domains).
    pub relayed: &'a BTreeSet<DomainName>,
    /// The table relay-sync owns.
    pub table: RecipientsTable<'a>,
    /// `relay_recipient_maps` as `postconf -h` prints it now.
    pub relay_recipient_maps: &'a str,
}

/// `relay_recipient_maps` cannot be rewritten safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecipientsError {
    /// `{ … }` grouping can hold separators inside one token.
    #[error("relay_recipient_maps uses {{ }} grouping, which relay-sync cannot rewrite safely; set it to a plain list of tables by hand, or leave RECIPIENTS_QUERY empty")]
    Braces,
    /// RECIPIENTS_MAP names a file relay-sync did not write (no header): someone's own table.
    #[error("{path} exists and was not written by relay-sync (its first line is not relay-sync's header); it is left as it is. Set RECIPIENTS_MAP to a file of relay-sync's own (e.g. /etc/postfix/relay_recipients_sync) and keep your table in relay_recipient_maps, or move it away")]
    NotOurs {
        /// The file.
        path: String,
    },
}

/// How many added and removed recipients a plan keeps by name, for logs and the verification.
pub const RECIPIENT_SAMPLE: usize = 100;

/// How the recipients table and `relay_recipient_maps` change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientPlan {
    /// Whether validation is on (`RECIPIENTS_QUERY` set).
    pub enabled: bool,
    /// Whether `relay_recipient_maps` names the table now: validation is in force.
    pub active_now: bool,
    /// `relay_recipient_maps` now, as read.
    pub maps_current: String,
    /// `relay_recipient_maps` as it should be.
    pub maps_value: String,
    /// The table's source as it should end up (`None` when validation is off).
    pub table_final: Option<String>,
    /// The union of the old and new entries, installed before `relay_domains` changes, when
    /// entries both arrive and leave ([`RecipientPlan::first_write`]).
    pub union: Option<String>,
    /// Whether the final table is installed before `relay_domains` changes (entries only
    /// arrive, or the table is not in force yet).
    pub final_first: bool,
    /// Whether the final table is written after the reload (entries leave).
    pub last_write: bool,
    /// Entries in the final table.
    pub entries: usize,
    /// Entries in the table now, when it is in force (0 otherwise).
    pub entries_now: usize,
    /// Entries that arrive in a table in force (every entry when validation turns on).
    pub added: usize,
    /// Entries that leave a table in force.
    pub removed: usize,
    /// Of `removed`, entries whose domain stays relayed: what the guard limits (entries of a
    /// removed domain leave with it, under the domain guard).
    pub removed_kept_domains: usize,
    /// The first [`RECIPIENT_SAMPLE`] added entries.
    pub added_sample: Vec<String>,
    /// The first [`RECIPIENT_SAMPLE`] removed entries.
    pub removed_sample: Vec<String>,
    /// Valid recipients whose domain is not relayed: left out of the table.
    pub outside: usize,
    /// Relayed domains with no recipient and no catch-all: all their mail is refused.
    pub domains_without_recipients: Vec<DomainName>,
    /// The table's path, for logs.
    pub path: String,
}

impl RecipientPlan {
    /// Plans the recipients table and `relay_recipient_maps`. Returns `Ok(None)` when there is
    /// nothing to consider: validation is off and the parameter does not name relay-sync's
    /// table, which keeps a run without the feature exactly as it was.
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use relay_core::{DomainName, Recipient, RecipientPlan, RecipientsInput, RecipientsTable};
    /// let users: BTreeSet<Recipient> = ["a@x.example", "b@y.example"].iter().map(|r| Recipient::parse(r).unwrap()).collect();
    /// let relayed: BTreeSet<DomainName> = [DomainName::parse("x.example").unwrap()].into_iter().collect();
    /// let table = RecipientsTable::new("hash", "/etc/postfix/relay_recipients", None);
    /// let plan = RecipientPlan::new(RecipientsInput {
    ///     database: Some(&users), relayed: &relayed, table, relay_recipient_maps: "",
    /// }).unwrap().unwrap();
    /// assert_eq!(plan.maps_value, "hash:/etc/postfix/relay_recipients");
    /// assert_eq!((plan.entries, plan.outside), (1, 1));
    /// assert!(plan.table_final.unwrap().ends_with("\na@x.example OK\n"));
    /// ```
    pub fn new(input: RecipientsInput<'_>) -> Result<Option<RecipientPlan>, RecipientsError> {
        let table = input.table;
        let current: Vec<&str> = tokens(input.relay_recipient_maps).collect();
        let active_now = current.iter().any(|token| table.is_named_by(token));
        let enabled = input.database.is_some();
        // Off, and the parameter names the table: it is taken out only when the file is ours.
        if !(enabled || active_now && table.is_ours()) {
            return Ok(None);
        }
        if input.relay_recipient_maps.contains(['{', '}']) {
            return Err(RecipientsError::Braces);
        }
        // An operator's table at RECIPIENTS_MAP (Postfix's documentation uses the same name)
        // is never taken over: rewriting it would drop its addresses.
        if enabled && table.text.is_some_and(|text| !text.is_empty()) && !table.is_ours() {
            return Err(RecipientsError::NotOurs {
                path: table.path.to_owned(),
            });
        }
        let token = table.token();
        let mut maps: Vec<&str> = current
            .iter()
            .copied()
            .filter(|t| !table.is_named_by(t) || (enabled && *t == token))
            .collect();
        if enabled && !maps.contains(&token.as_str()) {
            maps.push(&token);
        }
        let maps_value = maps.join(", ");

        let mut plan = RecipientPlan {
            enabled,
            active_now,
            maps_current: input.relay_recipient_maps.to_owned(),
            maps_value,
            table_final: None,
            union: None,
            final_first: false,
            last_write: false,
            entries: 0,
            entries_now: 0,
            added: 0,
            removed: 0,
            removed_kept_domains: 0,
            added_sample: Vec::new(),
            removed_sample: Vec::new(),
            outside: 0,
            domains_without_recipients: Vec::new(),
            path: table.path.to_owned(),
        };
        let Some(database) = input.database else {
            return Ok(Some(plan));
        };

        // The final entries: recipients at relayed domains, sorted (the set is). Hashed
        // lookups: a million recipients cost a million of them.
        let relayed = input.relayed;
        let relayed_set: HashSet<&str> = relayed.iter().map(DomainName::as_str).collect();
        let mut covered: HashSet<&str> = HashSet::with_capacity(relayed.len());
        // 16 MB at a million addresses, and one hashed lookup each instead of three.
        let wanted: Vec<&str> = database
            .iter()
            .filter(|r| {
                let domain = r.domain();
                let keep = relayed_set.contains(domain);
                if keep {
                    covered.insert(domain);
                } else {
                    plan.outside += 1;
                }
                keep
            })
            .map(Recipient::as_str)
            .collect();
        plan.entries = wanted.len();
        plan.domains_without_recipients = relayed
            .iter()
            .filter(|d| !covered.contains(d.as_str()))
            .cloned()
            .collect();
        drop(covered);
        let wanted = || wanted.iter().copied();
        let table_final = RecipientsTable::render(wanted());

        // Entries now, when the table is in force; otherwise nothing is accepted through it
        // and every final entry arrives. The table relay-sync writes is sorted: its keys are
        // walked in place, and only a file edited out of order is sorted in a list.
        let sorted = table.keys().is_sorted_by(|a, b| a < b);
        let unsorted: Vec<&str> = if active_now && !sorted {
            let mut keys: Vec<&str> = table.keys().collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        } else {
            Vec::new()
        };
        let now = || -> Box<dyn Iterator<Item = &str> + '_> {
            match (active_now, sorted) {
                (false, _) => Box::new(std::iter::empty()),
                (true, true) => Box::new(table.keys()),
                (true, false) => Box::new(unsorted.iter().copied()),
            }
        };
        let mut added = 0usize;
        let mut removed = 0usize;
        merge_keys(now(), wanted(), |key, side| match side {
            Side::Both => plan.entries_now += 1,
            Side::Old => {
                plan.entries_now += 1;
                removed += 1;
                let domain = key.rsplit_once('@').map_or(key, |(_, d)| d);
                if relayed_set.contains(domain) {
                    plan.removed_kept_domains += 1;
                }
                if plan.removed_sample.len() < RECIPIENT_SAMPLE {
                    plan.removed_sample.push(key.to_owned());
                }
            }
            Side::New => {
                added += 1;
                if plan.added_sample.len() < RECIPIENT_SAMPLE {
                    plan.added_sample.push(key.to_owned());
                }
            }
        });
        // The union's text only when it is needed: entries both arrive and leave.
        let union = (added > 0 && removed > 0).then(|| {
            let mut keys: Vec<&str> = Vec::with_capacity(plan.entries_now + added);
            merge_keys(now(), wanted(), |key, _| keys.push(key));
            RecipientsTable::render(keys.iter().copied())
        });
        plan.added = added;
        plan.removed = removed;
        let same_as_file = table.text == Some(table_final.as_str());
        if let Some(union) = union {
            // Both arrive and leave: the union first, the final table after the reload.
            plan.union = Some(union);
            plan.last_write = true;
        } else if removed > 0 {
            // Only leaving: the table in force holds until the domains have gone.
            plan.last_write = true;
        } else if !same_as_file {
            // Only arriving (or a table not in force, or a file that differs only in form).
            plan.final_first = true;
        }
        plan.table_final = Some(table_final);
        Ok(Some(plan))
    }

    /// Whether `relay_recipient_maps` must be rewritten.
    pub fn maps_changed(&self) -> bool {
        !self.is_maps_value(&self.maps_current)
    }

    /// Whether a `relay_recipient_maps` value (as `postconf -h` prints it) holds exactly the
    /// tokens the plan sets, in order; separators and spacing do not count.
    pub fn is_maps_value(&self, value: &str) -> bool {
        tokens(value).eq(tokens(&self.maps_value))
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.first_write().is_none() && !self.last_write && !self.maps_changed()
    }

    /// The text to install before `relay_domains` changes: the union, or the final table
    /// when no entry leaves; `None` when nothing is written before.
    pub fn first_write(&self) -> Option<&str> {
        match &self.union {
            Some(union) => Some(union),
            None if self.final_first => self.table_final.as_deref(),
            None => None,
        }
    }
}

/// Where a key of a merge comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Only the table now: it leaves.
    Old,
    /// Only the final table: it arrives.
    New,
    /// Both.
    Both,
}

/// Merges two sorted key lists in one pass, handing each key of their union to `emit` once,
/// in order, with where it comes from.
fn merge_keys<'k>(
    old: impl Iterator<Item = &'k str>,
    new: impl Iterator<Item = &'k str>,
    mut emit: impl FnMut(&'k str, Side),
) {
    let mut old = old.peekable();
    let mut new = new.peekable();
    loop {
        let take_old = match (old.peek().copied(), new.peek().copied()) {
            (None, None) => break,
            (Some(o), Some(n)) if o == n => {
                emit(n, Side::Both);
                old.next();
                new.next();
                continue;
            }
            (Some(o), Some(n)) => o < n,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if let Some(key) = if take_old { old.next() } else { new.next() } {
            emit(key, if take_old { Side::Old } else { Side::New });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_and_odd_rows_are_refused_with_a_reason() {
        for (raw, reason) in [
            ("", InvalidRecipient::Empty),
            ("a b@example.com", InvalidRecipient::ForbiddenChar(' ')),
            ("a\n@example.com", InvalidRecipient::ForbiddenChar('\n')),
            (
                "a@example.com\nb@x.example",
                InvalidRecipient::ForbiddenChar('\n'),
            ),
            (
                "a\u{0}@example.com",
                InvalidRecipient::ForbiddenChar('\u{0}'),
            ),
            ("a@b@example.com", InvalidRecipient::SecondAt),
            ("example.com", InvalidRecipient::NoAt),
            ("\"a b\"@example.com", InvalidRecipient::ForbiddenChar(' ')),
            ("\"ab\"@example.com", InvalidRecipient::Quoted),
            ("#root@example.com", InvalidRecipient::Hash),
            (
                "adm\u{202E}nimda@example.com",
                InvalidRecipient::ForbiddenChar('\u{202E}'),
            ),
            (
                "a\u{200B}b@example.com",
                InvalidRecipient::ForbiddenChar('\u{200B}'),
            ),
        ] {
            assert_eq!(Recipient::parse(raw), Err(reason), "{raw:?}");
        }
        assert!(matches!(
            Recipient::parse("a@localhost"),
            Err(InvalidRecipient::Domain(_))
        ));
        assert!(matches!(
            Recipient::parse("a@example.com OK"),
            Err(InvalidRecipient::ForbiddenChar(' '))
        ));
        let long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            Recipient::parse(&long),
            Err(InvalidRecipient::LocalTooLong(65))
        );
    }

    #[test]
    fn addresses_are_normalized_like_names_and_local_parts_folded() {
        let r = Recipient::parse("Ünï@Bücher.Example.").unwrap();
        assert_eq!(r.as_str(), "ünï@xn--bcher-kva.example");
        assert_eq!(r.domain(), "xn--bcher-kva.example");
        let c = Recipient::parse("@Example.ORG").unwrap();
        assert_eq!((c.as_str(), c.local()), ("@example.org", None));
    }

    fn set(items: &[&str]) -> BTreeSet<Recipient> {
        items.iter().map(|r| Recipient::parse(r).unwrap()).collect()
    }

    fn domains(items: &[&str]) -> BTreeSet<DomainName> {
        items
            .iter()
            .map(|d| DomainName::parse(d).unwrap())
            .collect()
    }

    const PATH: &str = "/etc/postfix/relay_recipients";

    fn plan(
        db: Option<&BTreeSet<Recipient>>,
        relayed: &BTreeSet<DomainName>,
        text: Option<&str>,
        maps: &str,
    ) -> Option<RecipientPlan> {
        RecipientPlan::new(RecipientsInput {
            database: db,
            relayed,
            table: RecipientsTable::new("hash", PATH, text),
            relay_recipient_maps: maps,
        })
        .unwrap()
    }

    #[test]
    fn off_and_not_ours_is_no_plan_at_all() {
        let relayed = domains(&["a.example"]);
        assert_eq!(plan(None, &relayed, None, ""), None);
        // The operator's own table at the same path (not our header) is left alone.
        assert_eq!(
            plan(
                None,
                &relayed,
                Some("x@a.example OK\n"),
                "hash:/etc/postfix/relay_recipients"
            ),
            None
        );
    }

    #[test]
    fn turning_off_takes_out_only_our_table() {
        let relayed = domains(&["a.example"]);
        let text = RecipientsTable::render(["x@a.example"]);
        let p = plan(
            None,
            &relayed,
            Some(&text),
            "hash:/etc/postfix/other, lmdb:/etc/postfix/relay_recipients",
        )
        .unwrap();
        assert_eq!(p.maps_value, "hash:/etc/postfix/other");
        assert!(p.maps_changed() && p.first_write().is_none() && !p.last_write);
    }

    #[test]
    fn turning_on_keeps_the_operators_tables_and_writes_before_naming() {
        let db = set(&["x@a.example", "@b.example", "y@c.example"]);
        let relayed = domains(&["a.example", "b.example", "d.example"]);
        let p = plan(Some(&db), &relayed, None, "hash:/etc/postfix/other").unwrap();
        assert_eq!(
            p.maps_value,
            "hash:/etc/postfix/other, hash:/etc/postfix/relay_recipients"
        );
        assert_eq!((p.entries, p.added, p.removed, p.outside), (2, 2, 0, 1));
        assert_eq!(p.first_write(), p.table_final.as_deref());
        assert!(!p.last_write);
        assert_eq!(
            p.domains_without_recipients,
            domains(&["d.example"]).into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_change_in_force_writes_the_union_first_and_the_final_table_after() {
        let relayed = domains(&["a.example"]);
        let before = RecipientsTable::render(["old@a.example", "x@a.example"]);
        let db = set(&["new@a.example", "x@a.example"]);
        let p = plan(
            Some(&db),
            &relayed,
            Some(&before),
            "hash:/etc/postfix/relay_recipients",
        )
        .unwrap();
        assert!(!p.maps_changed());
        assert_eq!((p.added, p.removed, p.removed_kept_domains), (1, 1, 1));
        let union = p.first_write().unwrap();
        for key in ["old@a.example", "new@a.example", "x@a.example"] {
            assert!(union.contains(&format!("\n{key} OK\n")), "{union}");
        }
        assert!(p.last_write);
        assert!(!p.table_final.unwrap().contains("old@"));
        // Nothing to do when the table already matches.
        let same = RecipientsTable::render(["new@a.example", "x@a.example"]);
        let p = plan(
            Some(&db),
            &relayed,
            Some(&same),
            "hash:/etc/postfix/relay_recipients",
        )
        .unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn a_table_relay_sync_did_not_write_is_never_taken_over() {
        let relayed = domains(&["a.example"]);
        let db = set(&["x@a.example"]);
        let input = |text| RecipientsInput {
            database: Some(&db),
            relayed: &relayed,
            table: RecipientsTable::new("hash", PATH, text),
            relay_recipient_maps: "hash:/etc/postfix/relay_recipients",
        };
        assert_eq!(
            RecipientPlan::new(input(Some("postmaster@a.example OK\n"))),
            Err(RecipientsError::NotOurs {
                path: PATH.to_owned()
            })
        );
        // An empty file holds nothing to lose; relay-sync's own is planned as usual.
        assert!(RecipientPlan::new(input(Some(""))).is_ok());
        let ours = RecipientsTable::render(["x@a.example"]);
        assert!(RecipientPlan::new(input(Some(&ours)))
            .unwrap()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn braces_are_refused_only_when_the_parameter_must_change() {
        let relayed = domains(&["a.example"]);
        let db = set(&["x@a.example"]);
        let err = RecipientPlan::new(RecipientsInput {
            database: Some(&db),
            relayed: &relayed,
            table: RecipientsTable::new("hash", PATH, None),
            relay_recipient_maps: "inline:{ a@b.example=OK }",
        });
        assert_eq!(err, Err(RecipientsError::Braces));
        assert_eq!(
            plan(None, &relayed, None, "inline:{ a@b.example=OK }"),
            None
        );
    }
}
