//! The lookup tables relay-sync owns whole: map mode's relay-domains table (`RELAY_DOMAINS_MAP`,
//! named by `relay_domains`) and recipient validation's table (`RECIPIENTS_MAP`, named by
//! `relay_recipient_maps`).
//!
//! Both are one `KEY OK` line per entry under a header line that marks the file as relay-sync's,
//! both are named by a parameter as `TYPE:PATH`, and both are read back the same way. So they are
//! one type, [`MapTable`], told apart by a marker ([`TableKind`]) that carries the header: a
//! recipients table cannot be passed where the relay-domains table is meant.

use std::fmt;
use std::marker::PhantomData;

/// What tells one kind of table from the other: its header line.
pub trait TableKind: Copy + fmt::Debug + Eq {
    /// The first line of a source file relay-sync wrote.
    const HEADER: &'static str;
}

/// First line of the relay-domains table's source file.
pub const MAP_HEADER: &str =
    "# relay-sync: this table is rewritten from the database on every change; edits are overwritten";

/// First line of the recipients table's source file. It also marks the file as relay-sync's:
/// with the feature off, a `relay_recipient_maps` token naming a file that starts with this line
/// is relay-sync's own, and is taken out of the parameter.
pub const RECIPIENTS_HEADER: &str =
    "# relay-sync: recipients table, rewritten from RECIPIENTS_QUERY on every change; edits are overwritten";

/// Map mode's relay-domains table: one `domain OK` line per relayed domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDomainsKind {}

impl TableKind for RelayDomainsKind {
    const HEADER: &'static str = MAP_HEADER;
}

/// Recipient validation's table: one `address OK` (or `@domain OK`) line per accepted address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientsKind {}

impl TableKind for RecipientsKind {
    const HEADER: &'static str = RECIPIENTS_HEADER;
}

/// A table relay-sync owns, as a plan sees it: its name and its current source text.
///
/// ```
/// use relay_core::RelayDomainsTable;
/// let text = RelayDomainsTable::render(["a.example", "b.example"]);
/// let table = RelayDomainsTable::new("lmdb", "/etc/postfix/relay_domains", Some(&text));
/// assert_eq!(table.token(), "lmdb:/etc/postfix/relay_domains");
/// assert!(table.is_named_by("hash:/etc/postfix/relay_domains"));
/// assert!(table.is_ours());
/// assert_eq!(table.keys().collect::<Vec<_>>(), ["a.example", "b.example"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapTable<'a, K: TableKind> {
    /// `MAP_TYPE` (`hash`, `lmdb`, `cdb`, …).
    pub map_type: &'a str,
    /// The table's source file.
    pub path: &'a str,
    /// The source file's text, `None` when it does not exist.
    pub text: Option<&'a str>,
    kind: PhantomData<K>,
}

/// Map mode's relay-domains table ([`RelayDomainsKind`]).
pub type RelayDomainsTable<'a> = MapTable<'a, RelayDomainsKind>;

/// Recipient validation's table ([`RecipientsKind`]).
pub type RecipientsTable<'a> = MapTable<'a, RecipientsKind>;

impl<'a, K: TableKind> MapTable<'a, K> {
    /// The table of type `map_type` whose source is `path`, holding `text` (`None`: no file).
    pub fn new(map_type: &'a str, path: &'a str, text: Option<&'a str>) -> MapTable<'a, K> {
        MapTable {
            map_type,
            path,
            text,
            kind: PhantomData,
        }
    }

    /// The token its parameter holds for it: `TYPE:PATH`.
    pub fn token(&self) -> String {
        format!("{}:{}", self.map_type, self.path)
    }

    /// Whether a parameter's token names this table, with any map type: a table that was built
    /// with another `MAP_TYPE` is still relay-sync's own and is replaced, not kept.
    pub fn is_named_by(&self, token: &str) -> bool {
        token
            .split_once(':')
            .is_some_and(|(_, named)| named == self.path)
    }

    /// Whether the source file is relay-sync's: it starts with the kind's header.
    pub fn is_ours(&self) -> bool {
        self.text
            .is_some_and(|text| text.lines().next() == Some(K::HEADER))
    }

    /// The keys of the source file's entry lines, as written (not normalized or validated).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        entry_keys(self.text.unwrap_or_default())
    }

    /// About how many keys the source file has, for sizing a list of them: its lines are
    /// `NAME OK`, at least 12 bytes for names of 8 bytes or more.
    pub(crate) fn lines_hint(&self) -> usize {
        self.text.map_or(0, |text| text.len() / 12)
    }

    /// Renders a source file: the header, then one `KEY OK` line per key, in the order given
    /// (sorted, for a table relay-sync writes).
    ///
    /// ```
    /// use relay_core::{RecipientsTable, RECIPIENTS_HEADER};
    /// let text = RecipientsTable::render(["a@x.example", "@y.example"]);
    /// assert_eq!(text, format!("{RECIPIENTS_HEADER}\na@x.example OK\n@y.example OK\n"));
    /// ```
    pub fn render<I>(keys: I) -> String
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
        I::IntoIter: Clone,
    {
        let keys = keys.into_iter();
        // Sized exactly: a table of a million keys is tens of megabytes.
        let size = K::HEADER.len()
            + 1
            + keys
                .clone()
                .map(|key| key.as_ref().len() + 4)
                .sum::<usize>();
        let mut out = String::with_capacity(size);
        out.push_str(K::HEADER);
        out.push('\n');
        for key in keys {
            out.push_str(key.as_ref());
            out.push_str(" OK\n");
        }
        out
    }
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
