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

use std::time::Duration;

use md5::{Digest, Md5};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use crate::mariadb::{describe, seconds, DISCONNECT_TIMEOUT};
use crate::{DbError, MariaDbSource};

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
}

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

/// Why no change signal can be derived from `DB_QUERY`: the watcher then syncs every poll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no change signal can be derived from DB_QUERY: {reason}")]
pub struct SignalUnavailable {
    /// What is in the way.
    pub reason: String,
}

/// The query that computes the [`Fingerprint`] of what `db_query` returns, in one row.
///
/// `db_query` must be one `SELECT` or `WITH … SELECT` statement (a trailing `;` is allowed):
/// it becomes a common table expression, so the database never sends the names themselves.
pub fn signal_query(db_query: &str) -> Result<String, SignalUnavailable> {
    let query = db_query.trim();
    let query = query.strip_suffix(';').unwrap_or(query).trim_end();
    let unavailable = |reason: &str| SignalUnavailable {
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
    Ok(format!(
        "WITH relay_sync_names(name) AS ({query}) \
         SELECT COUNT(*), \
         COALESCE(SUM(CAST(CONV(LEFT(MD5(COALESCE(name, '')), 16), 16, 10) AS UNSIGNED)), 0) \
         FROM relay_sync_names"
    ))
}

/// Polls the change signal over one connection kept open between polls, so a poll is one
/// `COM_QUERY` and no login. A failed poll drops the connection; the next one connects anew.
#[derive(Debug)]
pub struct ChangeSignal {
    source: MariaDbSource,
    query: String,
    conn: Option<Conn>,
}

impl ChangeSignal {
    /// A signal for `source`'s query, or why none can be derived from it.
    pub fn new(source: MariaDbSource) -> Result<ChangeSignal, SignalUnavailable> {
        let query = signal_query(&source.settings().query)?;
        Ok(ChangeSignal {
            source,
            query,
            conn: None,
        })
    }

    /// The SQL each poll runs.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The fingerprint of what `DB_QUERY` returns now, under the connect and query timeouts.
    pub async fn poll(&mut self) -> Result<Fingerprint, DbError> {
        if self.conn.is_some() {
            match self.poll_once().await {
                // The kept connection may have been closed by a server restart or a proxy's
                // idle limit since the last poll: that alone is no outage, so try once more
                // on a fresh connection before calling the database unreachable.
                Err(DbError::Query { .. }) | Err(DbError::Unreachable { .. }) => {}
                done => return done,
            }
        }
        self.poll_once().await
    }

    async fn poll_once(&mut self) -> Result<Fingerprint, DbError> {
        let settings = self.source.settings();
        let (connect_timeout, query_timeout) = (settings.connect_timeout, settings.query_timeout);
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => tokio::time::timeout(connect_timeout, self.source.connect())
                .await
                .map_err(|_| {
                    self.source.unreachable(format!(
                        "no connection within the connect timeout ({})",
                        seconds(connect_timeout)
                    ))
                })??,
        };
        match tokio::time::timeout(query_timeout, read_fingerprint(&mut conn, &self.query)).await {
            Ok(Ok(fingerprint)) => {
                self.conn = Some(conn);
                Ok(fingerprint)
            }
            Ok(Err(detail)) => {
                let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
                Err(self.source.query_error(detail))
            }
            Err(_) => {
                // As in a fetch: mark the connection closed so dropping it closes the socket.
                let _ = tokio::time::timeout(Duration::ZERO, conn.disconnect()).await;
                Err(self.source.query_error(format!(
                    "the change signal gave no result within the query timeout ({})",
                    seconds(query_timeout)
                )))
            }
        }
    }

    /// Closes the kept connection, if any.
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
        }
    }
}

async fn read_fingerprint(conn: &mut Conn, query: &str) -> Result<Fingerprint, String> {
    let row: Option<Row> = conn
        .query_first(query)
        .await
        .map_err(|error| format!("change signal: {}", describe(&error)))?;
    let mut row = row.ok_or("change signal: no row")?;
    let number = |value: Option<Value>| -> Option<u128> {
        match value? {
            Value::Bytes(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
            Value::Int(n) => u128::try_from(n).ok(),
            Value::UInt(n) => Some(u128::from(n)),
            _ => None,
        }
    };
    let rows = number(row.take(0)).and_then(|n| u64::try_from(n).ok());
    let digest_sum = number(row.take(1));
    match (rows, digest_sum) {
        (Some(rows), Some(digest_sum)) => Ok(Fingerprint { rows, digest_sum }),
        _ => Err("change signal: the database returned something other than two numbers".into()),
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
