//! A primary and a replica with real GTID replication: two private [`MariaDb`] servers on
//! 127.0.0.1, the replica applying the primary's binary log by GTID (`MASTER_USE_GTID =
//! slave_pos`), as an operator's read replica does.
//!
//! What a test does to the primary (fixtures, the admin's updates) reaches the replica through
//! replication, accounts and grants included; the replica is `read_only`. Its SQL thread can be
//! stopped and started ([`Replication::stop_sql_thread`]): the I/O thread keeps fetching the
//! primary's log meanwhile, so a start applies everything that was missed, as after a real
//! stall. [`Replication::lag`] reads how far behind it is.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{MariaDb, ServerOptions};

/// The account the replica reads the primary's log with (on 127.0.0.1 only).
const REPLICATION_USER: &str = "relay_testbed_repl";
const REPLICATION_PASSWORD: &str = "relay-testbed-repl-pw";

/// How far the replica is behind the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lag {
    /// `Seconds_Behind_Master` as the replica reports it; `None` while its SQL thread (or I/O
    /// thread) is stopped.
    pub seconds: Option<u64>,
    /// Transactions the primary has logged that the replica has not applied (GTID sequence
    /// numbers of replication domain 0).
    pub transactions: u64,
}

/// A primary and its replica, both stopped and removed on drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let pair = relay_testbed::Replication::start()?;
/// pair.load_fixtures()?; // on the primary, then waits for the replica
/// pair.stop_sql_thread()?;
/// pair.primary().sql("UPDATE mailserver_usermgmt.domains SET enabled = 1")?;
/// assert_eq!(pair.lag()?.transactions, 1);
/// pair.start_sql_thread()?;
/// pair.wait_caught_up(std::time::Duration::from_secs(30))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Replication {
    primary: MariaDb,
    replica: MariaDb,
}

impl Replication {
    /// Starts a primary (binary log on, `server_id` 1) and a replica (`server_id` 2,
    /// `read_only`), and starts replication from the beginning of the primary's log by GTID.
    pub fn start() -> Result<Replication> {
        Replication::start_with(ServerOptions::new(), ServerOptions::new())
    }

    /// Like [`Replication::start`], with more options for each server (e.g. the primary in a
    /// network namespace). The replication settings are added to them.
    pub fn start_with(primary: ServerOptions, replica: ServerOptions) -> Result<Replication> {
        let primary = start_primary(primary)?;
        let replica = start_replica(replica)?;
        let host = primary.host().to_owned();
        Replication::connect(primary, replica, &host)
    }

    /// A primary on 127.0.0.1 and a replica in a network namespace of its own
    /// ([`crate::NetNs`]), so that the replica's link can go down while the primary stays
    /// reachable: what a gateway whose `DB_HOST` lists the replica first meets when it loses
    /// it. The primary also listens on the host's end of the link, where the replica reads its
    /// log; connections to the replica come from that address too, so a MariaDB account for a
    /// gateway must name [`crate::NetNs::host_address`] as well as 127.0.0.1. The replica gives
    /// up on a silent primary after 5 s (`slave_net_timeout`), so that it catches up soon after
    /// its link is back.
    pub fn start_with_replica_in_namespace() -> Result<Replication> {
        let replica = start_replica(
            ServerOptions::new()
                .in_network_namespace()
                .arg("--slave-net-timeout=5"),
        )?;
        let link = replica
            .netns()
            .context("the replica has no namespace")?
            .host_address();
        let primary =
            start_primary(ServerOptions::new().arg(format!("--bind-address=127.0.0.1,{link}")))?;
        Replication::connect(primary, replica, &link.to_string())
    }

    /// Points `replica` at `primary` (reached at `primary_host`) and starts replication.
    fn connect(primary: MariaDb, replica: MariaDb, primary_host: &str) -> Result<Replication> {
        replica.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '{primary_host}', MASTER_PORT = {}, \
             MASTER_USER = '{REPLICATION_USER}', MASTER_PASSWORD = '{REPLICATION_PASSWORD}', \
             MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos; \
             START SLAVE;",
            primary.port()
        ))?;
        let pair = Replication { primary, replica };
        pair.wait_caught_up(Duration::from_secs(30))
            .context("the replica did not catch up with the primary after START SLAVE")?;
        Ok(pair)
    }

    /// The primary: where the admin panel writes.
    pub fn primary(&self) -> &MariaDb {
        &self.primary
    }

    /// The replica: what the gateways read.
    pub fn replica(&self) -> &MariaDb {
        &self.replica
    }

    /// The primary, to stop or restart it.
    pub fn primary_mut(&mut self) -> &mut MariaDb {
        &mut self.primary
    }

    /// The replica, to stop or restart it.
    pub fn replica_mut(&mut self) -> &mut MariaDb {
        &mut self.replica
    }

    /// [`MariaDb::load_fixtures`] on the primary; returns once the replica has applied them.
    pub fn load_fixtures(&self) -> Result<()> {
        self.primary.load_fixtures()?;
        self.wait_caught_up(Duration::from_secs(30))?;
        Ok(())
    }

    /// Stops the replica's SQL thread (`STOP SLAVE SQL_THREAD`): it keeps receiving the
    /// primary's log but applies nothing, and its data stays as it is.
    pub fn stop_sql_thread(&self) -> Result<()> {
        self.replica.sql("STOP SLAVE SQL_THREAD;").map(drop)
    }

    /// Starts the SQL thread again (`START SLAVE SQL_THREAD`).
    pub fn start_sql_thread(&self) -> Result<()> {
        self.replica.sql("START SLAVE SQL_THREAD;").map(drop)
    }

    /// How far the replica is behind: `Seconds_Behind_Master` and the transactions not yet
    /// applied.
    pub fn lag(&self) -> Result<Lag> {
        // Vertical output (`\G`) names each field, so no column has to be found by position.
        let status = self.replica.sql_with_names("SHOW SLAVE STATUS\\G")?;
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let (key, value) = line.trim().split_once(": ")?;
                (key == name).then(|| value.trim().to_owned())
            })
        };
        let seconds = field("Seconds_Behind_Master").and_then(|value| value.parse().ok());
        let primary = self.primary.sql("SELECT @@gtid_binlog_pos;")?;
        let replica = self.replica.sql("SELECT @@gtid_slave_pos;")?;
        let transactions = domain_zero_seq(&primary).saturating_sub(domain_zero_seq(&replica));
        Ok(Lag {
            seconds,
            transactions,
        })
    }

    /// Waits until the replica has applied every transaction the primary has logged, at most
    /// `limit`; returns how long that took.
    pub fn wait_caught_up(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let lag = self.lag()?;
            if lag.transactions == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                let status = self
                    .replica
                    .sql_with_names("SHOW SLAVE STATUS\\G")
                    .unwrap_or_else(|error| format!("{error:#}"));
                bail!(
                    "the replica (port {}) is still {} transaction(s) behind the primary \
                     (port {}) after {limit:?}:\n{status}",
                    self.replica.port(),
                    lag.transactions,
                    self.primary.port()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The primary: binary log on, `server_id` 1, the replication account.
fn start_primary(options: ServerOptions) -> Result<MariaDb> {
    let primary = MariaDb::start_with(
        options
            .arg("--server-id=1")
            .arg("--log-bin=primary-bin")
            .arg("--binlog-format=ROW"),
    )
    .context("cannot start the primary")?;
    primary.sql(&format!(
        "CREATE USER '{REPLICATION_USER}'@'%' IDENTIFIED BY '{REPLICATION_PASSWORD}'; \
         GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'%';"
    ))?;
    Ok(primary)
}

/// The replica: `server_id` 2, `read_only`, not replicating until [`Replication::connect`].
fn start_replica(options: ServerOptions) -> Result<MariaDb> {
    MariaDb::start_with(
        options
            .arg("--server-id=2")
            .arg("--read-only=1")
            .arg("--relay-log=replica-relay-bin")
            .arg("--skip-slave-start"),
    )
    .context("cannot start the replica")
}

/// The sequence number of replication domain 0 in a GTID position (`0-1-42,1-5-7`), 0 when it
/// has none.
fn domain_zero_seq(position: &str) -> u64 {
    position
        .trim()
        .split(',')
        .filter_map(|gtid| {
            let mut parts = gtid.trim().splitn(3, '-');
            let domain = parts.next()?;
            let _server = parts.next()?;
            let seq = parts.next()?;
            (domain == "0").then(|| seq.parse::<u64>().ok()).flatten()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::domain_zero_seq;

    #[test]
    fn gtid_positions_are_read_per_domain() {
        assert_eq!(domain_zero_seq("0-1-42\n"), 42);
        assert_eq!(domain_zero_seq("1-5-7,0-1-3"), 3);
        assert_eq!(domain_zero_seq(""), 0);
        assert_eq!(domain_zero_seq("1-1-9"), 0);
    }
}
