//! Map mode (SPEC §5, `RELAY_DOMAINS_MODE=map`): `relay_domains` names a lookup table
//! (`TYPE:PATH`) whose source file relay-sync owns entirely, one `domain OK` line per relayed
//! domain. Inline mode writes the domains into `relay_domains` itself.
//!
//! Either mode recognises the other's state, so switching is an ordinary plan: the domains
//! relayed through the table count as current domains in inline mode, and the inline domains
//! count as current domains in map mode. Nothing is removed by a switch alone, so the guard
//! never mistakes it for a mass removal.

use std::collections::BTreeSet;

use crate::{DomainName, RelayDomains};

/// First line of the relay-domains table's source file.
pub const MAP_HEADER: &str =
    "# relay-sync: this table is rewritten from the database on every change; edits are overwritten";

/// `RELAY_DOMAINS_MODE`: where the managed domains live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayDomainsMode {
    /// In `relay_domains` itself, written with `postconf -e` (the document's way).
    #[default]
    Inline,
    /// In the table `RELAY_DOMAINS_MAP`, named by `relay_domains` as `MAP_TYPE:PATH`.
    Map,
}

/// The relay-domains table as the plan sees it: its name and its current source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayDomainsTable<'a> {
    /// `MAP_TYPE` (`hash`, `lmdb`, `cdb`, …).
    pub map_type: &'a str,
    /// `RELAY_DOMAINS_MAP`, the table's source file.
    pub path: &'a str,
    /// The source file's text, `None` when it does not exist.
    pub text: Option<&'a str>,
}

impl<'a> RelayDomainsTable<'a> {
    /// The token `relay_domains` holds in map mode: `TYPE:PATH`.
    ///
    /// ```
    /// use relay_core::RelayDomainsTable;
    /// let table = RelayDomainsTable { map_type: "lmdb", path: "/etc/postfix/relay_domains", text: None };
    /// assert_eq!(table.token(), "lmdb:/etc/postfix/relay_domains");
    /// ```
    pub fn token(&self) -> String {
        format!("{}:{}", self.map_type, self.path)
    }

    /// Whether a `relay_domains` token names this table, with any map type: a table that was
    /// built with another `MAP_TYPE` is still relay-sync's own and is replaced, not kept.
    pub fn is_named_by(&self, token: &str) -> bool {
        names_path(token, self.path)
    }

    /// Whether one of `relay_domains`' preserved tokens names this table ([`Self::is_named_by`]).
    pub fn is_named_in(&self, relay_domains: &RelayDomains) -> bool {
        relay_domains
            .preserved_tokens
            .iter()
            .any(|token| self.is_named_by(token))
    }

    /// The keys of the table's entry lines, as written (not normalized or validated).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        entry_keys(self.text.unwrap_or_default())
    }

    /// About how many keys the source file has, for sizing a list of them: its lines are
    /// `NAME OK`, at least 12 bytes for names of 8 bytes or more.
    pub(crate) fn lines_hint(&self) -> usize {
        self.text.map_or(0, |text| text.len() / 12)
    }

    /// The domains the table's source file lists. Lines that are not `domain value` entries
    /// with a valid domain name are ignored: the file is relay-sync's, and they are overwritten.
    pub fn domains(&self) -> BTreeSet<DomainName> {
        self.keys()
            .filter_map(|key| DomainName::parse(key).ok())
            .collect()
    }
}

/// Renders the table's source file for `domains`: the header, then one `domain OK` line each.
///
/// ```
/// use relay_core::{render_relay_domains_map, DomainName};
/// let names = [DomainName::parse("b.example").unwrap(), DomainName::parse("a.example").unwrap()];
/// let set: std::collections::BTreeSet<DomainName> = names.into_iter().collect();
/// let text = render_relay_domains_map(&set);
/// assert!(text.ends_with("\na.example OK\nb.example OK\n"));
/// ```
pub fn render_relay_domains_map<'a, I>(domains: I) -> String
where
    I: IntoIterator<Item = &'a DomainName>,
    I::IntoIter: Clone,
{
    let domains = domains.into_iter();
    // Sized exactly: a table of a million names is tens of megabytes.
    let size = MAP_HEADER.len()
        + 1
        + domains
            .clone()
            .map(|name| name.as_str().len() + 4)
            .sum::<usize>();
    let mut out = String::with_capacity(size);
    out.push_str(MAP_HEADER);
    out.push('\n');
    for name in domains {
        out.push_str(name.as_str());
        out.push_str(" OK\n");
    }
    out
}

/// Whether a `TYPE:PATH` token names the table whose source is `path`, with any map type.
pub(crate) fn names_path(token: &str, path: &str) -> bool {
    token
        .split_once(':')
        .is_some_and(|(_, named)| named == path)
}

/// The keys of a table source's entry lines, as written: comments, blank lines and
/// continuation lines are skipped.
pub(crate) fn entry_keys(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(entry_key)
}

/// The key of one line of a table source relay-sync owns, as written; `None` for a comment,
/// a blank line or a continuation line.
///
/// ```
/// assert_eq!(relay_core::entry_key("a@x.example OK"), Some("a@x.example"));
/// assert_eq!(relay_core::entry_key("# a comment"), None);
/// assert_eq!(relay_core::entry_key("  continued"), None);
/// ```
pub fn entry_key(line: &str) -> Option<&str> {
    if line.starts_with([' ', '\t', '#']) {
        return None;
    }
    line.split_ascii_whitespace().next()
}
