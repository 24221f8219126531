//! The watcher's connection, kept open between polls, and how it moves along `DB_HOST`'s list.
//!
//! - A poll runs on the kept connection. When that fails (the server restarted, a proxy closed
//!   it, the host stopped answering), the poll tries once more on a fresh connection, which
//!   tries the host it was on first, then the hosts after it, then those before it, each under
//!   the connect timeout: the first that lets the user in is kept. So a gateway whose replica
//!   is gone reads the primary from that poll on, and one reading the primary does not fall
//!   back to a replica that may be behind merely because that connection broke.
//! - While the kept connection is to a later host than the first (the primary, because the
//!   replica did not answer), an attempt to connect to the earlier hosts runs beside the polls
//!   every [`RETURN_EVERY`] (a task of its own: a host that still hangs costs no poll any
//!   time). When it connects, the next poll compares the fingerprint of `DB_QUERY`'s rows on
//!   both connections and moves to the earlier host only when they are equal: a replica that
//!   comes back behind the primary (replaying what it missed) is not read until it has caught
//!   up, so a gateway never steps back to domains the primary no longer has. A gateway thus
//!   returns to its first host within [`RETURN_EVERY`] (plus a poll) of that host answering
//!   with the same domains as the one it reads meanwhile.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::task::JoinHandle;

use crate::mariadb::{describe, ordinal, seconds, Said, DISCONNECT_TIMEOUT};
use crate::{DbError, MariaDbSource, Protection};

/// How often a connection kept to a later host of `DB_HOST` tries the earlier ones.
pub const RETURN_EVERY: Duration = Duration::from_secs(30);

/// A connection to an earlier host, made beside the polls: the connection, the host's index
/// and how it is protected.
type Returned = Result<(Conn, usize, Option<Protection>), DbError>;

/// The kept connection (see the module documentation).
#[derive(Debug)]
pub(crate) struct Kept {
    /// The connection, and the index in `DB_HOST` of the host it is to.
    conn: Option<(Conn, usize)>,
    /// The host the last connection was made to, to tell a switch from a reconnection.
    last_host: Option<usize>,
    /// The attempt to reach an earlier host, when one runs.
    returning: Option<JoinHandle<Returned>>,
    /// When the next attempt may start.
    next_return: Option<Instant>,
    /// [`RETURN_EVERY`], shorter in tests.
    return_every: Duration,
    /// How long the last query that answered took on the server's side of the wire (the
    /// query alone: no connecting, no attempt to return to an earlier host).
    took: Option<Duration>,
}

impl Kept {
    pub(crate) fn new() -> Kept {
        Kept {
            conn: None,
            last_host: None,
            returning: None,
            next_return: None,
            return_every: RETURN_EVERY,
            took: None,
        }
    }

    pub(crate) fn set_return_every(&mut self, every: Duration) {
        self.return_every = every;
    }

    /// How long the last query that answered took, the query alone.
    pub(crate) fn took(&self) -> Option<Duration> {
        self.took
    }

    /// The index in `DB_HOST` of the host the kept connection is to.
    pub(crate) fn host(&self) -> Option<usize> {
        self.conn.as_ref().map(|(_, host)| *host)
    }

    /// The first row of `query`, on the kept connection or, when that fails, once more on a
    /// fresh one (the hosts tried from the start). `compare` is the query whose rows must be
    /// equal on an earlier host before the kept connection moves to it.
    pub(crate) async fn first_row(
        &mut self,
        source: &MariaDbSource,
        query: &str,
        compare: &str,
    ) -> Result<Row, DbError> {
        self.maybe_return(source, compare).await;
        if self.conn.is_some() {
            match self.run_once(source, query).await {
                // The kept connection may have been closed by a server restart or a proxy's
                // idle limit since the last poll: that alone is no outage, so try once more
                // on a fresh connection before calling the database unreachable.
                Err(DbError::Query { .. }) | Err(DbError::Unreachable { .. }) => {}
                done => return done,
            }
        }
        self.run_once(source, query).await
    }

    async fn run_once(&mut self, source: &MariaDbSource, query: &str) -> Result<Row, DbError> {
        let query_timeout = source.settings().query_timeout;
        let (mut conn, host) = match self.conn.take() {
            Some(kept) => kept,
            None => {
                let (conn, host) = source
                    .connect_in(self.reconnect_order(source), Said::Warn)
                    .await?;
                self.switched(source, host);
                (conn, host)
            }
        };
        let started = Instant::now();
        match tokio::time::timeout(query_timeout, first_row(&mut conn, query)).await {
            Ok(Ok(row)) => {
                self.took = Some(started.elapsed());
                self.conn = Some((conn, host));
                Ok(row)
            }
            Ok(Err(detail)) => {
                let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
                Err(source.query_error(detail))
            }
            Err(_) => {
                // As in a fetch: mark the connection closed so dropping it closes the socket.
                let _ = tokio::time::timeout(Duration::ZERO, conn.disconnect()).await;
                Err(source.query_error(format!(
                    "the change signal gave no result within the query timeout ({})",
                    seconds(query_timeout)
                )))
            }
        }
    }

    /// The hosts a fresh connection tries, in order: from the start of `DB_HOST`, except after
    /// a connection to a later host, which is tried first (then the ones after it, then the
    /// earlier ones). An earlier host is returned to only by [`Kept::maybe_return`], once it
    /// answers with the same domains: a replica that came back behind is not read merely
    /// because the kept connection to the primary broke.
    fn reconnect_order(&self, source: &MariaDbSource) -> Vec<usize> {
        let count = source.settings().hosts.len();
        let from = self.last_host.filter(|host| *host < count).unwrap_or(0);
        (from..count).chain(0..from).collect()
    }

    /// Notes a new connection to `host`, and says so when it is not the host the last one
    /// was to and `DB_HOST` lists several.
    fn switched(&mut self, source: &MariaDbSource, host: usize) {
        let previous = self.last_host.replace(host);
        let hosts = &source.settings().hosts;
        if hosts.len() < 2 || previous == Some(host) {
            return;
        }
        if host > 0 {
            tracing::warn!(
                "Watching MariaDB at {} ({} host of DB_HOST) while {} does not answer; back on \
                 it within {} of it answering with the same domains",
                source.addr_of(host),
                ordinal(host),
                source.addr_of(0),
                seconds(self.return_every)
            );
        } else if previous.is_some() {
            tracing::info!(
                "Watching MariaDB at {} again (the first host of DB_HOST)",
                source.addr_of(host)
            );
        }
        // A new host: the next attempt to return starts a full interval from now.
        self.next_return = None;
    }

    /// While the kept connection is to a later host than the first: starts an attempt to
    /// reach the earlier ones when it is due, and moves to the host it reached when that host
    /// answers `compare` as the kept one does.
    async fn maybe_return(&mut self, source: &MariaDbSource, compare: &str) {
        let Some(kept_host) = self.host().filter(|host| *host > 0) else {
            self.stop_returning();
            return;
        };
        let now = Instant::now();
        let Some(handle) = self.returning.take() else {
            let due = *self.next_return.get_or_insert(now + self.return_every);
            if now >= due {
                let earlier = source.clone();
                self.returning = Some(tokio::spawn(async move {
                    let (conn, host) = earlier.connect_in(0..kept_host, Said::Debug).await?;
                    Ok((conn, host, earlier.protection()))
                }));
            }
            return;
        };
        if !handle.is_finished() {
            self.returning = Some(handle);
            return;
        }
        self.next_return = Some(now + self.return_every);
        let (candidate, host, protection) = match handle.await {
            Ok(Ok(reached)) => reached,
            Ok(Err(error)) => {
                tracing::debug!("The earlier hosts of DB_HOST still do not answer: {error}");
                return;
            }
            // Only a panic in the driver could end it so: keep the connection that works.
            Err(_) => return,
        };
        let mut candidate = candidate;
        let query_timeout = source.settings().query_timeout;
        let theirs = tokio::time::timeout(query_timeout, first_row(&mut candidate, compare))
            .await
            .ok()
            .and_then(Result::ok)
            .map(Row::unwrap);
        let ours = self.run_once(source, compare).await.ok().map(Row::unwrap);
        match (theirs, ours) {
            (Some(theirs), Some(ours)) if theirs == ours => {
                if let Some((old, _)) = self.conn.take() {
                    let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, old.disconnect()).await;
                }
                self.conn = Some((candidate, host));
                if let Some(protection) = protection {
                    source.note_connected(host, protection);
                }
                self.switched(source, host);
            }
            _ => {
                tracing::debug!(
                    "MariaDB at {} answers again but not yet with the same domains as {}; \
                     staying on {}",
                    source.addr_of(host),
                    source.addr_of(kept_host),
                    source.addr_of(kept_host)
                );
                let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, candidate.disconnect()).await;
            }
        }
    }

    fn stop_returning(&mut self) {
        if let Some(handle) = self.returning.take() {
            handle.abort();
        }
        self.next_return = None;
    }

    /// Closes the kept connection, and stops an attempt to return.
    pub(crate) async fn close(&mut self) {
        self.stop_returning();
        if let Some((conn, _)) = self.conn.take() {
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // The attempt holds a clone of the source (and its password): it ends with the signal.
        self.stop_returning();
    }
}

async fn first_row(conn: &mut Conn, query: &str) -> Result<Row, String> {
    let row: Option<Row> = conn
        .query_first(query)
        .await
        .map_err(|error| format!("change signal: {}", describe(&error)))?;
    row.ok_or_else(|| "change signal: no row".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Kept;
    use crate::{DbHost, DbSettings, MariaDbSource, TlsMode};

    fn source(hosts: &[&str]) -> MariaDbSource {
        MariaDbSource::new(DbSettings {
            hosts: hosts.iter().map(|host| DbHost::new(*host)).collect(),
            port: 3306,
            database: "mailserver".to_owned(),
            user: "relay_sync".to_owned(),
            password: None,
            query: "SELECT name FROM domains".to_owned(),
            recipients_query: None,
            tls: TlsMode::Disabled,
            tls_ca: None,
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
        })
    }

    /// A fresh connection starts from the first host, and after a connection to a later one
    /// (the primary, the replica having failed) from that one: a broken connection to the
    /// primary is never a way back to a replica that may be behind.
    #[test]
    fn a_reconnection_tries_the_host_it_was_on_first() {
        let source = source(&["replica", "primary", "standby"]);
        let mut kept = Kept::new();
        assert_eq!(kept.reconnect_order(&source), [0, 1, 2]);
        kept.last_host = Some(1);
        assert_eq!(kept.reconnect_order(&source), [1, 2, 0]);
        kept.last_host = Some(0);
        assert_eq!(kept.reconnect_order(&source), [0, 1, 2]);
        // A host list that shrank (SIGHUP) starts from the beginning again.
        kept.last_host = Some(7);
        assert_eq!(kept.reconnect_order(&source), [0, 1, 2]);
    }
}
