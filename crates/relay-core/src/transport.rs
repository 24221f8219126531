//! The transport map's source file: the lines relay-sync owns (the managed block) and the lines
//! it never touches (everything else), and the next hop it writes for each domain (SPEC §4).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::DomainName;

/// First line of the managed block.
pub const BEGIN_MARKER: &str = "# BEGIN relay-sync managed block: edits inside are overwritten";
/// Last line of the managed block.
pub const END_MARKER: &str = "# END relay-sync managed block";
// Markers are recognised by these prefixes, so a reworded comment after the colon still counts.
const BEGIN_PREFIX: &str = "# BEGIN relay-sync managed block";
const END_PREFIX: &str = "# END relay-sync managed block";

/// `RELAY_TRANSPORT`: the Postfix delivery agent used for the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `smtp:` (the document's default).
    Smtp,
    /// `lmtp:` (the document's port 2525 is Dovecot LMTP).
    Lmtp,
}

/// Where mail for managed domains goes: `TRANSPORT:[HOST]:PORT`.
///
/// ```
/// use relay_core::{NextHop, Transport};
/// let hop = NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap();
/// assert_eq!(hop.to_string(), "smtp:[100.110.222.53]:2525");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    transport: Transport,
    host: String,
    port: u16,
}

/// A next-hop host that is neither an IP address nor a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("next-hop host {host:?} is neither an IP address nor a valid host name")]
pub struct InvalidNextHop {
    /// The rejected host.
    pub host: String,
}

impl NextHop {
    /// Builds a next hop; `host` must be an IP address (without brackets) or a host name as
    /// [`is_host_name`] defines it. A name is lowercased and loses its trailing dot.
    pub fn new(transport: Transport, host: &str, port: u16) -> Result<NextHop, InvalidNextHop> {
        // An address goes inside the brackets as it is, IPv6 too (`smtp:[2001:db8::1]:25`).
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) if is_host_name(host) => {
                let name = host.strip_suffix('.').unwrap_or(host);
                name.to_ascii_lowercase()
            }
            Err(_) => {
                return Err(InvalidNextHop {
                    host: host.to_owned(),
                })
            }
        };
        Ok(NextHop {
            transport,
            host,
            port,
        })
    }
}

/// Whether `value` is a host name that a next hop (or any other host relay-sync talks to) may
/// name: dot-separated labels of 1 to 63 ASCII letters, digits, `-` and `_`, not starting or
/// ending with `-`, at most 253 characters, one trailing dot allowed.
///
/// This is wider than [`DomainName`] on purpose: a next hop is resolved, not relayed for, so a
/// single label (`mailbox`, from `/etc/hosts`) and `_` (container service names such as
/// `mailserver_dovecot`; Postfix accepts it) are fine. A dotted name whose last label is all
/// digits is refused as a mistyped IP address (`100.110.222.530`), and nothing here can carry
/// whitespace, brackets or a `:` into a transport line.
///
/// ```
/// assert!(relay_core::is_host_name("mailserver_dovecot"));
/// assert!(!relay_core::is_host_name("1.2.3"));
/// ```
pub fn is_host_name(value: &str) -> bool {
    let name = value.strip_suffix('.').unwrap_or(value);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label_ok)
        && !(name.contains('.') && last.chars().all(|c| c.is_ascii_digit()))
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            Transport::Smtp => "smtp",
            Transport::Lmtp => "lmtp",
        };
        write!(f, "{transport}:[{}]:{}", self.host, self.port)
    }
}

/// A transport file that relay-sync cannot edit safely: its markers are broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A BEGIN marker without a matching END marker.
    #[error("line {line}: managed block BEGIN marker without an END marker; restore the END line or delete the block by hand")]
    UnclosedBlock {
        /// 1-based line number of the BEGIN marker.
        line: usize,
    },
    /// An END marker before any BEGIN marker.
    #[error("line {line}: managed block END marker without a BEGIN marker; delete it by hand")]
    StrayEnd {
        /// 1-based line number.
        line: usize,
    },
    /// More than one managed block.
    #[error("line {line}: a second managed block; keep one and delete the other by hand")]
    SecondBlock {
        /// 1-based line number of the second BEGIN marker.
        line: usize,
    },
}

/// A transport file split around its managed block, borrowing from the file's text.
///
/// Text outside the block is held byte for byte; inside, only `key value` entries are kept
/// (comments and anything else inside the block are overwritten, as its marker says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFile<'a> {
    before: &'a str,
    after: &'a str,
    has_block: bool,
    managed: Managed<'a>,
    hand_written: BTreeSet<String>,
}

/// The managed block's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Managed<'a> {
    /// The block's lines already have lowercase keys in strictly increasing order (every
    /// block relay-sync writes): read from the text as needed, nothing copied.
    InOrder {
        /// The lines between the markers.
        lines: &'a str,
        /// How many of them are entries.
        count: usize,
    },
    /// Any other block: sorted by key, each key once (the last line of equal keys wins, as
    /// in postmap).
    Sorted(Vec<(Cow<'a, str>, &'a str)>),
}

impl<'a> TransportFile<'a> {
    /// Parses the file's text (empty for a missing file).
    pub fn parse(text: &'a str) -> Result<TransportFile<'a>, TransportError> {
        // Byte offsets of the block's markers; the text around them is kept as slices.
        let mut before_end = text.len();
        let (mut lines_start, mut lines_end) = (text.len(), text.len());
        let mut after_start = text.len();
        let mut begin_line = None;
        let mut end_seen = false;
        let mut in_order = true;
        let mut count = 0usize;
        let mut previous: Option<&str> = None;
        let mut offset = 0;
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let number = index + 1;
            let line_start = offset;
            offset += line.len();
            let inside = begin_line.is_some() && !end_seen;
            // Inside the block, lines that start with a letter or digit (the bulk of a big
            // file) cannot be markers.
            if !inside || !line.as_bytes()[0].is_ascii_alphanumeric() {
                let trimmed = line.trim_ascii();
                if trimmed.starts_with(BEGIN_PREFIX) {
                    if begin_line.is_some() {
                        return Err(TransportError::SecondBlock { line: number });
                    }
                    begin_line = Some(number);
                    before_end = line_start;
                    lines_start = offset;
                    continue;
                } else if trimmed.starts_with(END_PREFIX) {
                    if begin_line.is_none() || end_seen {
                        return Err(TransportError::StrayEnd { line: number });
                    }
                    end_seen = true;
                    lines_end = line_start;
                    after_start = offset;
                    continue;
                }
            }
            if inside {
                if let Some((key, _)) = entry(line) {
                    count += 1;
                    in_order = in_order
                        && !key.bytes().any(|b| b.is_ascii_uppercase())
                        && previous.is_none_or(|previous| previous < key);
                    previous = Some(key);
                }
            }
        }
        if let (Some(line), false) = (begin_line, end_seen) {
            return Err(TransportError::UnclosedBlock { line });
        }
        let (before, lines, after) = if begin_line.is_some() {
            (
                &text[..before_end],
                &text[lines_start..lines_end],
                &text[after_start..],
            )
        } else {
            (text, "", "")
        };
        let hand_written = before
            .split_inclusive('\n')
            .chain(after.split_inclusive('\n'))
            .filter_map(|line| entry(line).map(|(key, _)| key.to_ascii_lowercase()))
            .collect();
        let managed = if in_order {
            Managed::InOrder { lines, count }
        } else {
            let mut entries: Vec<(Cow<'a, str>, &'a str)> = lines
                .split_inclusive('\n')
                .filter_map(entry)
                .map(|(key, value)| (lowercase(key), value))
                .collect();
            // Stable, so that among equal keys the last line stays last and wins the dedup.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut deduped: Vec<(Cow<'a, str>, &'a str)> = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                match deduped.last_mut() {
                    Some(last) if last.0 == key => last.1 = value,
                    _ => deduped.push((key, value)),
                }
            }
            Managed::Sorted(deduped)
        };
        Ok(TransportFile {
            before,
            after,
            has_block: begin_line.is_some(),
            managed,
            hand_written,
        })
    }

    /// The managed block's entries, key and next hop as currently written, sorted by key,
    /// each key once.
    pub fn managed_entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let (in_order, sorted, count) = match &self.managed {
            Managed::InOrder { lines, count } => (Some(*lines), None, *count),
            Managed::Sorted(entries) => (None, Some(entries), entries.len()),
        };
        let in_order = in_order
            .into_iter()
            .flat_map(|lines| lines.split_inclusive('\n').filter_map(entry));
        let sorted = sorted
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.as_ref(), *value));
        Counted {
            inner: in_order.chain(sorted),
            left: count,
        }
    }

    /// The text before the managed block and after it, as written (the whole file and `""`
    /// when it has no block): the operator's hand-written part.
    pub fn outside_block(&self) -> (&'a str, &'a str) {
        (self.before, self.after)
    }

    /// Whether `domain` has a hand-written line outside the managed block.
    pub fn has_hand_written(&self, domain: &DomainName) -> bool {
        !self.hand_written.is_empty() && self.hand_written.contains(domain.as_str())
    }

    /// Whether `key` has any entry, managed or hand-written.
    pub fn has_entry(&self, key: &str) -> bool {
        self.managed_entries().any(|(k, _)| k == key) || self.hand_written.contains(key)
    }

    /// Renders the file with `entries` as the managed block and everything else unchanged.
    ///
    /// A file that had no block and gets no entries is returned exactly as it was; otherwise the
    /// block goes where it was, or at the end of the file.
    pub fn render<'e, I>(&self, entries: I) -> String
    where
        I: IntoIterator<Item = (&'e str, &'e str)>,
    {
        let mut entries = entries.into_iter().peekable();
        if !self.has_block && entries.peek().is_none() {
            return self.before.to_owned();
        }
        // Sized for a block as long as the current one, so that a big file is not copied
        // again and again as it grows.
        let block: usize = match &self.managed {
            Managed::InOrder { lines, .. } => lines.len(),
            Managed::Sorted(entries) => entries.iter().map(|(k, v)| k.len() + v.len() + 2).sum(),
        };
        let mut out = String::with_capacity(self.before.len() + self.after.len() + block + 256);
        out.push_str(self.before);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(BEGIN_MARKER);
        out.push('\n');
        for (key, value) in entries {
            out.push_str(key);
            out.push(' ');
            out.push_str(value);
            out.push('\n');
        }
        out.push_str(END_MARKER);
        out.push('\n');
        out.push_str(self.after);
        out
    }
}

/// An iterator that knows its length in advance.
struct Counted<I> {
    inner: I,
    left: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

/// `key` in lowercase, borrowed when it already is.
fn lowercase(key: &str) -> Cow<'_, str> {
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(key.to_ascii_lowercase())
    } else {
        Cow::Borrowed(key)
    }
}

/// Every `key value` entry of a transport file as postmap reads it, inside the managed block
/// or outside it, in file order. The markers are comments to postmap, so this reads a file
/// whose markers are broken as well: it is what Postfix routes, whatever relay-sync can edit.
pub(crate) fn routes(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n').filter_map(entry)
}

/// The key and value of a table line, or `None` for blank lines, comments and continuation
/// lines (which start with whitespace, per postmap(1)).
fn entry(line: &str) -> Option<(&str, &str)> {
    // postmap reads a line that starts with any C `isspace` byte as a continuation line.
    if line.starts_with([' ', '\t', '\n', '\r', '\x0B', '\x0C']) {
        return None;
    }
    // ASCII whitespace only, as postmap's parser (and cheaper than Unicode's).
    let line = line.trim_ascii();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    match line.bytes().position(|b| b.is_ascii_whitespace()) {
        // Both sides of an ASCII byte are character boundaries.
        Some(at) => Some((&line[..at], line[at..].trim_ascii_start())),
        None => Some((line, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::{entry, NextHop, Transport};

    /// What `DELL_RELAY_IP` has always accepted, and how it is written between the brackets.
    #[test]
    fn next_hop_hosts() {
        for (host, expect) in [
            ("100.110.222.53", "smtp:[100.110.222.53]:2525"),
            ("2001:db8::1", "smtp:[2001:db8::1]:2525"),
            ("mailbox", "smtp:[mailbox]:2525"),
            ("mailserver_dovecot", "smtp:[mailserver_dovecot]:2525"),
            ("Mail-Box.Example.COM.", "smtp:[mail-box.example.com]:2525"),
        ] {
            let hop = NextHop::new(Transport::Smtp, host, 2525).map(|hop| hop.to_string());
            assert_eq!(hop.as_deref(), Ok(expect), "{host}");
        }
        let long = format!("{}.com", "a".repeat(64));
        for host in [
            "",
            ".",
            "[10.0.0.1]",
            "10.0.0.1:25",
            "100.110.222.530",
            "1.2.3",
            "mail box",
            "-mail",
            "mail..example",
            "fe80::1%eth0",
            "a\nb",
            "m\u{e4}il.example",
            &long,
        ] {
            assert!(NextHop::new(Transport::Lmtp, host, 24).is_err(), "{host:?}");
        }
    }

    /// Lines as postmap(1) reads them: ASCII whitespace separates and trims, any C `isspace`
    /// byte at the start makes a continuation line, and other Unicode spaces are text.
    #[test]
    fn entries_are_read_as_postmap_reads_them() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "a.example smtp:[192.0.2.1]:25\n",
                Some(("a.example", "smtp:[192.0.2.1]:25")),
            ),
            (
                "a.example\t \tsmtp:[192.0.2.1]:25 \r\n",
                Some(("a.example", "smtp:[192.0.2.1]:25")),
            ),
            ("a.example\n", Some(("a.example", ""))),
            ("# a.example smtp:\n", None),
            ("\n", None),
            (" a.example smtp:\n", None),
            ("\ta.example smtp:\n", None),
            ("\x0Ba.example smtp:\n", None),
            ("\x0Ca.example smtp:\n", None),
            ("\ra.example smtp:\n", None),
            // A no-break space is not a separator: postmap's key is the whole first word.
            (
                "\u{a0}a.example smtp:\n",
                Some(("\u{a0}a.example", "smtp:")),
            ),
            ("a.example\u{a0}smtp:\n", Some(("a.example\u{a0}smtp:", ""))),
        ];
        for (line, expected) in cases {
            assert_eq!(entry(line), *expected, "line {line:?}");
        }
    }
}
