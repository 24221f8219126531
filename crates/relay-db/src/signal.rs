//! The watcher's change signal: a [`Fingerprint`] of the multiset of names `DB_QUERY` returns,
//! computed by the database in one row, and the same fingerprint computed here from fetched
//! names.
//!
//! The fingerprint is `(rows, Σ h(name))`, where `h` is the first 64 bits of the name's MD5 as
//! an unsigned integer and the sum is exact (MariaDB sums `BIGINT UNSIGNED` into a `DECIMAL`;
//! here into a `u128`). It depends on the names only, not on row ids, order or `updated_at`, so:
//! - any change of the set (an enable, a disable, an insert, a delete, a rename) changes it,
//!   unless the sums of the digests removed and added are equal: for names not chosen to
//!   collide, a chance of about 2⁻⁶⁴ per change;
//! - two changes in one second are as visible as two changes a minute apart (no clock);
//! - a change undone before the next poll gives the same fingerprint again: nothing to apply.
//!
//! The signal is derived from any `DB_QUERY` that is one `SELECT` (or `WITH … SELECT`) by
//! wrapping it in a common table expression, so an overridden query keeps the same guarantee.
//!
//! The database hashes the bytes a fetch reads: each name converted to utf8mb4 (the results'
//! character set of relay-sync's connection) before `MD5`, so a latin1 or UTF-16 column
//! fingerprints the same here and there. A name that is not valid UTF-8 (bytes in a binary
//! column) is fetched lossily and its digests differ: every poll then syncs, wasteful, never
//! wrong.
//!
//! With `RECIPIENTS_QUERY` set, the fingerprint covers its rows too, in the same query: they
//! count as rows and their digests are summed in, each hashed with the prefix `recipient:` (so
//! a row that moves from one query's result to the other's is a change as well). A user added,
//! disabled or deleted thus triggers a sync like a domain does. The probe then reads the tables
//! of both queries. Without `RECIPIENTS_QUERY`, nothing differs from the domains-only signal.
//!
//! Computing it reads every row `DB_QUERY` selects (about 0.1 s at 100k rows). So each poll
//! first asks for a [`Probe`]: the `UPDATE_TIME` the server keeps for each table `DB_QUERY`
//! reads (`information_schema.TABLES`, a lookup, well under a millisecond) and the server's
//! clock, and the watcher computes the fingerprint only when the probe says a table may have
//! been written since (see relay-ops' `watch::decide` for the rule and what it relies on).

use std::time::Duration;

use md5::{Digest, Md5};
use mysql_async::{Row, Value};

use crate::kept::Kept;
use crate::{DbError, DbHost, DbSettings, MariaDbSource, Secret};

/// A fingerprint of the multiset of names a query returns (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    /// How many rows.
    pub rows: u64,
    /// The exact sum of the first 64 bits of each name's MD5.
    pub digest_sum: u128,
}

impl Fingerprint {
    /// The fingerprint of `names` as the database computes it in [`ChangeSignal::poll`]: a
    /// `NULL` is fetched as the empty string and hashed as one.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Fingerprint {
        names
            .into_iter()
            .fold(Fingerprint::default(), |fingerprint, name| Fingerprint {
                rows: fingerprint.rows + 1,
                digest_sum: fingerprint.digest_sum + u128::from(name_digest(name)),
            })
    }

    /// The fingerprint of `DB_QUERY`'s `names` and, when `RECIPIENTS_QUERY` is set, its
    /// `recipients`, as [`ChangeSignal::poll`] computes it; with `recipients` `None` it is
    /// [`Fingerprint::of`] the names. [`crate::Fetched::fingerprint`] calls it.
    pub fn of_both<'a, 'b>(
        names: impl IntoIterator<Item = &'a str>,
        recipients: Option<impl IntoIterator<Item = &'b str>>,
    ) -> Fingerprint {
        let of_names = Fingerprint::of(names);
        recipients
            .into_iter()
            .flatten()
            .fold(of_names, |fingerprint, address| {
                let prefixed = format!("{RECIPIENT_PREFIX}{address}");
                Fingerprint {
                    rows: fingerprint.rows + 1,
                    digest_sum: fingerprint.digest_sum + u128::from(name_digest(&prefixed)),
                }
            })
    }
}

/// What a recipient row is hashed with, in front, so that it never counts as a domain name.
const RECIPIENT_PREFIX: &str = "recipient:";

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows, digest {:x}", self.rows, self.digest_sum)
    }
}

/// The first 64 bits of `name`'s MD5, as `CONV(LEFT(MD5(name), 16), 16, 10)` reads them.
fn name_digest(name: &str) -> u64 {
    let digest = Md5::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Why no change signal can be derived from `DB_QUERY` (or `RECIPIENTS_QUERY`): the watcher
/// then syncs every poll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no change signal can be derived from {key}: {reason}")]
pub struct SignalUnavailable {
    /// The configuration key of the query in the way: `DB_QUERY` or `RECIPIENTS_QUERY`.
    pub key: &'static str,
    /// What is in the way.
    pub reason: String,
}

/// What the server says about the tables `DB_QUERY` reads, in one cheap row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The newest `UPDATE_TIME` of the tables (Unix seconds), `None` when no table has one
    /// (InnoDB keeps it in memory: unknown after a restart until the next write).
    pub updated: Option<i64>,
    /// How many of the tables have no `UPDATE_TIME`, or were not found.
    pub unknown: u32,
    /// How many of the tables are views or were not found: their writes cannot be seen, so
    /// the probe proves nothing.
    pub opaque: u32,
    /// The server's clock at the probe (Unix seconds, whole).
    pub now: i64,
}

impl Probe {
    /// The SQL of the probe for `db_query`, when its tables can be told (for benchmarks and
    /// `EXPLAIN`).
    pub fn query_for(db_query: &str) -> Option<String> {
        tables_of(db_query).map(|tables| probe_query(&tables))
    }
}

/// The tables a plain `DB_QUERY` reads, as `(schema, table)` (`None`: the connection's
/// database), or `None` when they cannot be told for sure (a subquery, a view is fine: it just
/// has no `UPDATE_TIME`). Only `FROM a`, `FROM a, b`, `FROM s.a` and `JOIN a` are understood.
pub fn tables_of(db_query: &str) -> Option<Vec<(Option<String>, String)>> {
    let cleaned = db_query.replace(['\n', '\r', '\t'], " ");
    let words: Vec<&str> = cleaned.split(' ').filter(|w| !w.is_empty()).collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    if upper
        .iter()
        .any(|w| w.starts_with("(SELECT") || w == "WITH")
        || cleaned.contains("( SELECT")
        || cleaned.to_ascii_uppercase().contains("(SELECT")
    {
        return None;
    }
    let mut tables = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if upper[i] == "FROM" || upper[i] == "JOIN" {
            let mut j = i + 1;
            loop {
                let word = *words.get(j)?;
                let (name, more) = match word.strip_suffix(',') {
                    Some(name) => (name, true),
                    None => (word, false),
                };
                tables.push(table_name(name)?);
                if more {
                    j += 1;
                    continue;
                }
                // `FROM a AS x, b` or `FROM a x, b`: skip an alias, then look for a comma.
                let mut k = j + 1;
                if upper.get(k).is_some_and(|w| w == "AS") {
                    k += 1;
                }
                let alias = words.get(k).copied().unwrap_or("");
                let keyword = [
                    "WHERE",
                    "JOIN",
                    "INNER",
                    "LEFT",
                    "RIGHT",
                    "CROSS",
                    "ON",
                    "GROUP",
                    "ORDER",
                    "LIMIT",
                    "HAVING",
                    "UNION",
                    "STRAIGHT_JOIN",
                    "NATURAL",
                    "USING",
                    "FOR",
                    "LOCK",
                    "WINDOW",
                    "INTO",
                    "PROCEDURE",
                    "",
                ];
                if !keyword.contains(&alias.trim_end_matches(',').to_ascii_uppercase().as_str())
                    && alias.ends_with(',')
                {
                    j = k + 1;
                    continue;
                }
                i = j;
                break;
            }
        }
        i += 1;
    }
    (!tables.is_empty()).then_some(tables)
}

/// `t`, `` `t` ``, `s.t` or `` `s`.`t` `` as `(schema, table)`; `None` for anything else.
fn table_name(word: &str) -> Option<(Option<String>, String)> {
    let plain = |part: &str| -> Option<String> {
        let part = part
            .strip_prefix('`')
            .and_then(|p| p.strip_suffix('`'))
            .unwrap_or(part);
        (!part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .then(|| part.to_owned())
    };
    match word.split_once('.') {
        Some((schema, table)) => Some((Some(plain(schema)?), plain(table)?)),
        None => Some((None, plain(word)?)),
    }
}

/// The query that reads the [`Probe`] for `tables`.
fn probe_query(tables: &[(Option<String>, String)]) -> String {
    let pairs: Vec<String> = tables
        .iter()
        .map(|(schema, table)| {
            let schema = schema
                .as_ref()
                .map_or_else(|| "DATABASE()".to_owned(), |s| format!("'{s}'"));
            format!("({schema}, '{table}')")
        })
        .collect();
    format!(
        "SELECT UNIX_TIMESTAMP(MAX(UPDATE_TIME)), {n} - COUNT(UPDATE_TIME), UNIX_TIMESTAMP(), \
         {n} - COALESCE(SUM(TABLE_TYPE = 'BASE TABLE'), 0) \
         FROM information_schema.TABLES WHERE (TABLE_SCHEMA, TABLE_NAME) IN ({list})",
        n = tables.len(),
        list = pairs.join(", ")
    )
}

/// The query that computes the [`Fingerprint`] of what `db_query` returns, in one row.
///
/// `db_query` must be one `SELECT` or `WITH … SELECT` statement (a trailing `;` is allowed):
/// it becomes a common table expression, so the database never sends the names themselves.
pub fn signal_query(db_query: &str) -> Result<String, SignalUnavailable> {
    let query = statement(db_query, "DB_QUERY")?;
    Ok(format!(
        "WITH relay_sync_names(name) AS ({query}) \
         SELECT COUNT(*), {names_sum} \
         FROM relay_sync_names",
        names_sum = NAMES_SUM,
    ))
}

/// The sum of the names' digests, over `relay_sync_names`.
///
/// Each name is hashed as the UTF-8 a fetch reads, not as the column stores it: the connection
/// asks for utf8mb4 results (mysql_async's handshake), so the server converts a latin1 (or
/// UTF-16, …) column to UTF-8 before a fetch sees it, while `MD5` on the column itself would
/// hash its stored bytes. `CONVERT(… USING utf8mb4)` makes the same conversion here; for a
/// utf8mb4 or ASCII column it changes nothing. The one difference left: bytes that are not
/// valid UTF-8 (a binary column), which a fetch reads lossily; see the module documentation.
const NAMES_SUM: &str = "COALESCE(SUM(CAST(CONV(LEFT(MD5(\
     COALESCE(CONVERT(name USING utf8mb4), '')), 16), 16, 10) AS UNSIGNED)), 0)";

/// Like [`signal_query`], with `RECIPIENTS_QUERY`'s rows in the same fingerprint when it is set
/// (see the module documentation); `None` gives [`signal_query`]'s SQL exactly.
pub fn signal_query_with_recipients(
    db_query: &str,
    recipients_query: Option<&str>,
) -> Result<String, SignalUnavailable> {
    let Some(recipients_query) = recipients_query else {
        return signal_query(db_query);
    };
    let names = statement(db_query, "DB_QUERY")?;
    let recipients = statement(recipients_query, "RECIPIENTS_QUERY")?;
    Ok(format!(
        "WITH relay_sync_names(name) AS ({names}), \
         relay_sync_recipients(address) AS ({recipients}) \
         SELECT (SELECT COUNT(*) FROM relay_sync_names) \
         + (SELECT COUNT(*) FROM relay_sync_recipients), \
         (SELECT {NAMES_SUM} FROM relay_sync_names) \
         + (SELECT COALESCE(SUM(CAST(CONV(LEFT(MD5(CONCAT('{RECIPIENT_PREFIX}', \
         COALESCE(CONVERT(address USING utf8mb4), ''))), 16), 16, 10) AS UNSIGNED)), 0) \
         FROM relay_sync_recipients)"
    ))
}

/// `query` without surrounding blanks and a trailing `;`, when it can be wrapped in a common
/// table expression; why not otherwise, naming `key`.
fn statement<'q>(query: &'q str, key: &'static str) -> Result<&'q str, SignalUnavailable> {
    let query = query.trim();
    let query = query.strip_suffix(';').unwrap_or(query).trim_end();
    let unavailable = |reason: &str| SignalUnavailable {
        key,
        reason: reason.to_owned(),
    };
    let first_word: String = query
        .chars()
        .skip_while(|c| *c == '(')
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    if first_word != "SELECT" && first_word != "WITH" {
        return Err(unavailable("it does not start with SELECT or WITH"));
    }
    if query.contains(';') {
        return Err(unavailable("it holds more than one statement (a ';')"));
    }
    if query.contains("--") || query.contains('#') || query.contains("/*") {
        // A comment could swallow the closing parenthesis of the wrapper.
        return Err(unavailable("it holds a comment"));
    }
    Ok(query)
}

/// Polls the change signal over one connection kept open between polls, so a poll is one
/// `COM_QUERY` and no login. A failed poll drops the connection; the next one connects anew,
/// trying `DB_HOST`'s hosts from the first. On a later host (the first did not answer), it
/// returns to the first within [`crate::RETURN_EVERY`] of that host answering with the same
/// domains (see [`ChangeSignal::host`]).
#[derive(Debug)]
pub struct ChangeSignal {
    source: MariaDbSource,
    query: String,
    probe: Option<String>,
    kept: Kept,
}

impl ChangeSignal {
    /// A signal for `source`'s query (and its recipients query, when set), or why none can be
    /// derived from them.
    pub fn new(source: MariaDbSource) -> Result<ChangeSignal, SignalUnavailable> {
        let settings = source.settings();
        let recipients_query = settings.recipients_query.as_deref();
        let query = signal_query_with_recipients(&settings.query, recipients_query)?;
        let probe = match recipients_query {
            None => tables_of(&settings.query),
            // Both queries' tables, or no probe when either's cannot be told.
            Some(recipients_query) => tables_of(&settings.query).and_then(|mut tables| {
                for table in tables_of(recipients_query)? {
                    if !tables.contains(&table) {
                        tables.push(table);
                    }
                }
                Some(tables)
            }),
        }
        .map(|tables| probe_query(&tables));
        Ok(ChangeSignal {
            source,
            query,
            probe,
            kept: Kept::new(),
        })
    }

    /// Logs in as `user` with `password` from the next connection on; the kept connection,
    /// logged in already, stays. For a password rotated while the watcher runs: the server
    /// keeps a session open after its password changed, but would refuse the old one on a
    /// reconnect.
    pub fn set_login(&mut self, user: String, password: Option<Secret>) {
        let settings = DbSettings {
            user,
            password,
            ..self.source.settings().clone()
        };
        self.source = self.source.with_settings(settings);
    }

    /// The same signal, trying the earlier hosts of `DB_HOST` every `every` instead of every
    /// [`crate::RETURN_EVERY`] while it reads a later one (for tests).
    pub fn with_return_interval(mut self, every: Duration) -> ChangeSignal {
        self.kept.set_return_every(every);
        self
    }

    /// The host of `DB_HOST` the kept connection is to; `None` while there is none (before the
    /// first poll, after a failed one). A probe from another host than the one before proves
    /// nothing about what that one saw: the watcher then computes the fingerprint.
    pub fn host(&self) -> Option<&DbHost> {
        self.source.settings().hosts.get(self.kept.host()?)
    }

    /// Whether a cheap [`Probe`] can be had (the tables `DB_QUERY`, and `RECIPIENTS_QUERY` when
    /// set, read could be told).
    pub fn can_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The [`Probe`] now, or `None` when [`ChangeSignal::can_probe`] is false.
    pub async fn probe(&mut self) -> Result<Option<Probe>, DbError> {
        let Some(query) = self.probe.clone() else {
            return Ok(None);
        };
        let row = self.run_with_retry(&query).await?;
        Ok(Some(
            row_to_probe(row).map_err(|detail| self.source.query_error(detail))?,
        ))
    }

    /// The SQL each poll runs.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The fingerprint of what `DB_QUERY` (and `RECIPIENTS_QUERY`, when set) returns now, under
    /// the connect and query timeouts.
    pub async fn poll(&mut self) -> Result<Fingerprint, DbError> {
        let query = self.query.clone();
        let row = self.run_with_retry(&query).await?;
        row_to_fingerprint(row).map_err(|detail| self.source.query_error(detail))
    }

    /// How long the query of the last [`ChangeSignal::poll`] or [`ChangeSignal::probe`] that
    /// answered took, the query alone: neither a reconnection nor a comparison with an
    /// earlier host of `DB_HOST` (see `kept.rs`) counts, so a small table is never taken for an
    /// expensive one because its poll also moved hosts.
    pub fn last_query_took(&self) -> Option<Duration> {
        self.kept.took()
    }

    /// Runs `query` on the kept connection; when that fails, once more on a fresh one.
    async fn run_with_retry(&mut self, query: &str) -> Result<Row, DbError> {
        self.kept.first_row(&self.source, query, &self.query).await
    }

    /// Closes the kept connection, if any.
    pub async fn close(&mut self) {
        self.kept.close().await;
    }
}

/// A column as a whole number; `None` for `NULL` or anything else.
fn number(value: Option<Value>) -> Option<i128> {
    match value? {
        Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        Value::Int(n) => Some(i128::from(n)),
        Value::UInt(n) => Some(i128::from(n)),
        _ => None,
    }
}

fn row_to_fingerprint(mut row: Row) -> Result<Fingerprint, String> {
    let rows = number(row.take(0)).and_then(|n| u64::try_from(n).ok());
    let digest_sum = number(row.take(1)).and_then(|n| u128::try_from(n).ok());
    match (rows, digest_sum) {
        (Some(rows), Some(digest_sum)) => Ok(Fingerprint { rows, digest_sum }),
        _ => Err("change signal: the database returned something other than two numbers".into()),
    }
}

fn row_to_probe(mut row: Row) -> Result<Probe, String> {
    let updated = number(row.take(0)).and_then(|n| i64::try_from(n).ok());
    let unknown = number(row.take(1)).and_then(|n| u32::try_from(n).ok());
    let now = number(row.take(2)).and_then(|n| i64::try_from(n).ok());
    let opaque = number(row.take(3)).and_then(|n| u32::try_from(n).ok());
    match (unknown, now, opaque) {
        (Some(unknown), Some(now), Some(opaque)) => Ok(Probe {
            updated,
            unknown,
            now,
            opaque,
        }),
        _ => Err("change probe: information_schema.TABLES answered something unexpected".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names_strategy() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z0-9.-]{0,12}", 0..40)
    }

    proptest! {
        /// The order rows arrive in does not matter.
        #[test]
        fn prop_fingerprint_ignores_order(names in names_strategy(), seed in any::<u64>()) {
            let mut shuffled = names.clone();
            let len = shuffled.len().max(1);
            shuffled.rotate_left(usize::try_from(seed).unwrap_or(0) % len);
            shuffled.reverse();
            prop_assert_eq!(
                Fingerprint::of(names.iter().map(String::as_str)),
                Fingerprint::of(shuffled.iter().map(String::as_str))
            );
        }

        /// Adding, removing or renaming one name changes the fingerprint.
        #[test]
        fn prop_any_single_change_is_seen(names in names_strategy(), other in "[a-z0-9.-]{1,12}", at in any::<usize>()) {
            let before = Fingerprint::of(names.iter().map(String::as_str));
            let mut added = names.clone();
            added.push(other.clone());
            prop_assert_ne!(before, Fingerprint::of(added.iter().map(String::as_str)));
            if !names.is_empty() {
                let at = at % names.len();
                let mut removed = names.clone();
                removed.remove(at);
                prop_assert_ne!(before, Fingerprint::of(removed.iter().map(String::as_str)));
                if names[at] != other {
                    let mut renamed = names.clone();
                    renamed[at] = other.clone();
                    prop_assert_ne!(before, Fingerprint::of(renamed.iter().map(String::as_str)));
                }
            }
        }
    }

    #[test]
    fn digest_is_md5s_first_64_bits() {
        // MD5("example.com") = 5ababd603b22780302dd8d83498e5172.
        assert_eq!(name_digest("example.com"), 0x5aba_bd60_3b22_7803);
    }

    #[test]
    fn signal_is_derived_from_a_select() {
        let query = signal_query("SELECT name FROM domains WHERE enabled = 1;").unwrap();
        assert!(
            query.starts_with(
                "WITH relay_sync_names(name) AS (SELECT name FROM domains WHERE enabled = 1) "
            ),
            "{query}"
        );
        assert!(signal_query("with d as (select 1) select * from d").is_ok());
        assert!(signal_query("(SELECT name FROM a) UNION (SELECT name FROM b)").is_ok());
    }

    #[test]
    fn tables_are_told_for_plain_queries_only() {
        let t = |s: Option<&str>, t: &str| (s.map(str::to_owned), t.to_owned());
        assert_eq!(
            tables_of("SELECT name FROM domains WHERE enabled = 1"),
            Some(vec![t(None, "domains")])
        );
        assert_eq!(
            tables_of("SELECT d.name FROM `mail`.`domains` AS d JOIN tenants t ON t.id = d.tenant WHERE t.active"),
            Some(vec![t(Some("mail"), "domains"), t(None, "tenants")])
        );
        assert_eq!(
            tables_of("SELECT name FROM a, b WHERE a.id = b.id"),
            Some(vec![t(None, "a"), t(None, "b")])
        );
        assert_eq!(
            tables_of("SELECT name FROM a x, b y WHERE x.id = y.id"),
            Some(vec![t(None, "a"), t(None, "b")])
        );
        assert_eq!(tables_of("SELECT name FROM (SELECT name FROM d) q"), None);
        assert_eq!(tables_of("SELECT 'a.example'"), None);
        assert!(probe_query(&[t(None, "domains")]).contains("((DATABASE(), 'domains'))"));
    }

    #[test]
    fn without_recipients_the_signal_is_the_names_alone() {
        let names = ["example.com", "example.net"];
        assert_eq!(
            Fingerprint::of_both(names, None::<[&str; 0]>),
            Fingerprint::of(names)
        );
        let fetched = crate::Fetched {
            names: names.map(str::to_owned).to_vec(),
            recipients: None,
        };
        assert_eq!(fetched.fingerprint(), Fingerprint::of(names));
        let query = "SELECT name FROM domains WHERE enabled = 1";
        assert_eq!(
            signal_query_with_recipients(query, None),
            signal_query(query)
        );
    }

    #[test]
    fn recipients_count_in_the_fingerprint() {
        let names = ["example.com"];
        let none = Fingerprint::of_both(names, Some(Vec::<&str>::new()));
        assert_eq!(none, Fingerprint::of(names));
        let alice = Fingerprint::of_both(names, Some(["alice@example.com"]));
        assert_eq!(alice.rows, 2);
        assert_ne!(alice, none);
        assert_ne!(
            alice,
            Fingerprint::of_both(names, Some(["bob@example.com"]))
        );
        // A row that moves from one query's result to the other's is a change.
        assert_ne!(
            Fingerprint::of_both(["a.example", "b.example"], Some(Vec::<&str>::new())),
            Fingerprint::of_both(["a.example"], Some(["b.example"]))
        );
        let query = signal_query_with_recipients(
            "SELECT name FROM domains WHERE enabled = 1",
            Some("SELECT email FROM users WHERE enabled = 1;"),
        )
        .unwrap();
        assert!(
            query.contains(
                "relay_sync_recipients(address) AS (SELECT email FROM users WHERE enabled = 1)"
            ),
            "{query}"
        );
        let refused =
            signal_query_with_recipients("SELECT name FROM domains", Some("CALL users()"))
                .unwrap_err();
        assert_eq!(refused.key, "RECIPIENTS_QUERY");
        assert!(refused
            .to_string()
            .starts_with("no change signal can be derived from RECIPIENTS_QUERY: "));
    }

    #[test]
    fn signal_is_refused_when_it_cannot_be_derived() {
        for query in [
            "CALL relay_domains()",
            "SELECT 1; SELECT 2",
            "SELECT name FROM domains -- enabled only",
            "SHOW TABLES",
        ] {
            assert!(signal_query(query).is_err(), "{query}");
        }
    }
}
