//! A fleet on a replicated database (issue 21): a primary and a replica with real GTID
//! replication, and two MX gateways, each with its own Postfix and its own `relay-sync watch`
//! reading the replica, as operators with two MX hosts (or one far from the database) deploy
//! it. relay-sync adds no coordination: each gateway follows what the replica says.
//!
//! Propagation is measured from the commit on the primary (the admin's `UPDATE` has returned)
//! to the first `RCPT TO` each gateway answers as the change says (250 or 554), at the default
//! `POLL_INTERVAL`; the figures are printed, the assertions keep a loose bound (speed is the
//! bench's and the soak's business).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use relay_testbed::{MariaDb, Postfix, Replication};

use crate::smtp::{rcpt, wait_until};
use crate::watcher::Watcher;

/// Generous: a change reaches both gateways within POLL_INTERVAL plus a sync.
const CONVERGES_WITHIN: Duration = Duration::from_secs(20);
/// Toggles of the propagation measurement: half enables, half disables.
const TOGGLES: usize = 6;
const TOGGLED: &str = "old.example";

/// One gateway of the fleet: its Postfix, its config (map mode, the replica as `DB_HOST`) and
/// its watcher.
struct Member {
    postfix: Postfix,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Member {
    fn on(replica: &MariaDb) -> Member {
        let postfix = Postfix::start("").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay-sync.conf");
        fs::write(
            &config,
            format!(
                "# a gateway of the fleet, reading the replica\n\
                 DB_HOST={host}\nDB_PORT={port}\nDB_USER=relay_sync\n\
                 DB_PASSWORD=relay-sync-test-pw\nDB_CONNECT_TIMEOUT=2\n\
                 DELL_RELAY_IP=127.0.0.1\nDELL_RELAY_PORT=2525\n\
                 RELAY_DOMAINS_MODE=map\nPOSTFIX_CONFIG_DIR={pf}\n\
                 BACKUP_DIR={d}/backup\nLOG_FILE={d}/log/relay-sync.log\nSTATE_DIR={d}/state\n",
                host = replica.host(),
                port = replica.port(),
                pf = postfix.config_dir().display(),
                d = dir.path().display(),
            ),
        )
        .unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        Member {
            postfix,
            dir,
            config,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/relay-sync.log")).unwrap_or_default()
    }

    fn smtp(&self) -> u16 {
        self.postfix.smtp_port()
    }

    /// `postmap -q DOMAIN` of the transport map: the route Postfix has for it.
    fn route(&self, domain: &str) -> Option<String> {
        let output = Command::new("/usr/sbin/postmap")
            .arg("-c")
            .arg(self.postfix.config_dir())
            .arg("-q")
            .arg(domain)
            .arg(format!(
                "hash:{}",
                self.postfix.config_dir().join("transport").display()
            ))
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// The `p`th percentile (nearest rank) of `samples`.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[test]
fn a_fleet_on_a_replica_follows_the_primary_and_rides_out_a_stalled_replica() {
    let pair = Replication::start().unwrap();
    pair.load_fixtures().unwrap();
    let members = [Member::on(pair.replica()), Member::on(pair.replica())];
    let watchers: Vec<Watcher> = members
        .iter()
        .map(|member| Watcher::start(&member.config, &[]))
        .collect();
    for member in &members {
        assert!(
            wait_until(Duration::from_secs(30), || member
                .log()
                .contains("===== Sync completed")),
            "{}",
            member.log()
        );
        assert!(rcpt(member.smtp(), "user@example.net").starts_with("250"));
    }

    // Propagation: commit on the primary, replication, each watcher's poll and sync, Postfix.
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..TOGGLES {
        let enable = i % 2 == 0;
        pair.primary()
            .sql(&format!(
                "UPDATE mailserver_usermgmt.domains SET enabled = {} WHERE name = '{TOGGLED}'",
                u8::from(enable)
            ))
            .unwrap();
        let committed = Instant::now();
        let want = if enable { "250" } else { "554" };
        let mut seen: [Option<Duration>; 2] = [None, None];
        while seen.iter().any(Option::is_none) {
            for (k, member) in members.iter().enumerate() {
                if seen[k].is_none()
                    && rcpt(member.smtp(), &format!("user@{TOGGLED}")).starts_with(want)
                {
                    seen[k] = Some(committed.elapsed());
                }
            }
            assert!(
                committed.elapsed() < CONVERGES_WITHIN,
                "toggle {i} ({want}) not on every gateway after {CONVERGES_WITHIN:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in 0..2 {
            samples[k].push(seen[k].unwrap_or_default());
        }
        // The next toggle meets quiet gateways, not the end of this sync.
        std::thread::sleep(Duration::from_millis(1500));
    }
    for (k, gateway) in samples.iter().enumerate() {
        eprintln!(
            "fleet gateway {k}: commit on the primary to RCPT at the default POLL_INTERVAL, \
             {} toggles: p50 {:?}, max {:?}",
            gateway.len(),
            percentile(gateway, 50),
            percentile(gateway, 100)
        );
    }

    // The replica stalls: what the primary commits meanwhile reaches no gateway, and nothing a
    // gateway relays is removed.
    let logged: Vec<usize> = members.iter().map(|member| member.log().len()).collect();
    pair.stop_sql_thread().unwrap();
    pair.primary()
        .sql(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('stalled.example', 1); \
             UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net';",
        )
        .unwrap();
    let stalled = Instant::now();
    // Several polls (the default POLL_INTERVAL is 2 s) go by.
    std::thread::sleep(Duration::from_secs(6));
    let lag = pair.lag().unwrap();
    assert_eq!((lag.transactions, lag.seconds), (2, None), "{lag:?}");
    for (member, logged) in members.iter().zip(logged) {
        for domain in [
            "example.com",
            "example.net",
            "example.org",
            "shop.example.jp",
        ] {
            let reply = rcpt(member.smtp(), &format!("user@{domain}"));
            assert!(
                reply.starts_with("250"),
                "{domain}: {reply}\n{}",
                member.log()
            );
            assert_eq!(
                member.route(domain).as_deref(),
                Some("smtp:[127.0.0.1]:2525"),
                "{domain}"
            );
        }
        assert!(rcpt(member.smtp(), "user@stalled.example").starts_with("554"));
        let during = member.log().split_off(logged);
        assert!(!during.contains("Removed domain"), "{during}");
    }

    // The replica resumes: both gateways converge on the primary's state.
    pair.start_sql_thread().unwrap();
    let resumed = Instant::now();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    for (k, member) in members.iter().enumerate() {
        let converged = wait_until(CONVERGES_WITHIN, || {
            rcpt(member.smtp(), "user@stalled.example").starts_with("250")
                && rcpt(member.smtp(), "user@example.net").starts_with("554")
        });
        assert!(converged, "gateway {k}:\n{}", member.log());
        eprintln!(
            "fleet gateway {k}: converged {:?} after the SQL thread started ({:?} after the \
             commits)",
            resumed.elapsed(),
            stalled.elapsed()
        );
        // The route goes last, after the reload that made RCPT refuse the domain.
        assert!(
            wait_until(CONVERGES_WITHIN, || member.route("example.net").is_none()),
            "gateway {k} still routes example.net:\n{}",
            member.log()
        );
    }
    for watcher in watchers {
        assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
    }
}
