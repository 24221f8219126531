//! The database's rows after normalization (SPEC §3 and step 3): the valid items, sorted and
//! each once, and the rejected rows with their reasons. The same shape for `DB_QUERY`'s names
//! ([`Normalized`]) and `RECIPIENTS_QUERY`'s addresses ([`NormalizedRecipients`]).

use std::collections::BTreeSet;

use crate::{DomainName, InvalidDomain, InvalidRecipient, Recipient};

/// A database value that failed validation, kept for the log line and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<E = InvalidDomain> {
    /// The value exactly as the database returned it. Log it with
    /// [`escape_for_log`](crate::escape_for_log).
    pub raw: String,
    /// Why it was rejected.
    pub reason: E,
}

/// A `RECIPIENTS_QUERY` row that failed validation.
pub type RejectedRecipient = Rejected<InvalidRecipient>;

/// Rows after normalization: the valid items (duplicates collapsed) and the rejected rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<T = DomainName, E = InvalidDomain> {
    /// Valid items, sorted, each once.
    pub valid: BTreeSet<T>,
    /// Invalid values, in the order the database returned them.
    pub rejected: Vec<Rejected<E>>,
    /// How many valid rows repeated an earlier item (after normalization).
    pub duplicates: usize,
}

/// The recipient rows after normalization.
pub type NormalizedRecipients = Normalized<Recipient, InvalidRecipient>;

impl<T, E> Default for Normalized<T, E> {
    fn default() -> Self {
        Normalized {
            valid: BTreeSet::new(),
            rejected: Vec::new(),
            duplicates: 0,
        }
    }
}

impl<T: Ord, E> Normalized<T, E> {
    /// Parses every row with `parse`. The valid items are collected first and the set is built
    /// once (`BTreeSet` sorts, drops repeats and builds the tree in bulk), which is faster than
    /// inserting a million items one by one.
    #[inline]
    pub(crate) fn from_rows<R>(
        rows: impl ExactSizeIterator<Item = R>,
        mut parse: impl FnMut(R) -> Result<T, Rejected<E>>,
    ) -> Normalized<T, E> {
        let mut valid = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for row in rows {
            match parse(row) {
                Ok(item) => valid.push(item),
                Err(row) => rejected.push(row),
            }
        }
        let count = valid.len();
        let valid: BTreeSet<T> = valid.into_iter().collect();
        Normalized {
            duplicates: count - valid.len(),
            valid,
            rejected,
        }
    }

    /// Joins what normalizing two runs of rows gave, `later` being the rows after this one's:
    /// the same as normalizing them all at once. Sets are merged in one pass.
    ///
    /// ```
    /// use relay_core::normalize_recipients;
    /// let rows = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    /// let all = normalize_recipients(rows(&["a@x.example", "bad", "A@x.example", "b@x.example"]));
    /// let joined = normalize_recipients(rows(&["a@x.example", "bad"]))
    ///     .merge(normalize_recipients(rows(&["A@x.example", "b@x.example"])));
    /// assert_eq!(joined, all);
    /// ```
    #[must_use]
    pub fn merge(mut self, mut later: Normalized<T, E>) -> Normalized<T, E> {
        let before = self.valid.len() + later.valid.len();
        self.valid.append(&mut later.valid);
        self.rejected.append(&mut later.rejected);
        self.duplicates += later.duplicates + (before - self.valid.len());
        self
    }
}

/// Normalizes and validates every raw name (SPEC §3 and step 3).
///
/// ```
/// let rows = relay_core::normalize_rows(&["Example.COM", "example.com.", "bad name"]);
/// assert_eq!((rows.valid.len(), rows.duplicates, rows.rejected.len()), (1, 1, 1));
/// ```
pub fn normalize_rows<S: AsRef<str>>(rows: &[S]) -> Normalized {
    Normalized::from_rows(rows.iter(), |raw| {
        let raw = raw.as_ref();
        DomainName::parse(raw).map_err(|reason| Rejected {
            raw: raw.to_owned(),
            reason,
        })
    })
}

/// [`normalize_rows`] for owned rows, which it consumes: valid names keep the rows'
/// allocations.
pub fn normalize_owned(rows: Vec<String>) -> Normalized {
    Normalized::from_rows(rows.into_iter(), |raw| {
        DomainName::parse_owned(raw).map_err(|(raw, reason)| Rejected { raw, reason })
    })
}
