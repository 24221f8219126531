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
        Member::reading(&format!(
            "DB_HOST={}\nDB_PORT={}",
            replica.host(),
            replica.port()
        ))
    }

    /// A gateway whose config says `db` (the `DB_HOST` and `DB_PORT` lines).
    fn reading(db: &str) -> Member {
        let postfix = Postfix::start("").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay-sync.conf");
        fs::write(
            &config,
            format!(
                "# a gateway of the fleet, reading the replica\n\
                 {db}\nDB_USER=relay_sync\n\
                 DB_PASSWORD=relay-sync-test-pw\nDB_CONNECT_TIMEOUT=2\nDB_QUERY_TIMEOUT=2\n\
                 DELL_RELAY_IP=127.0.0.1\nDELL_RELAY_PORT=2525\n\
                 RELAY_DOMAINS_MODE=map\nPOSTFIX_CONFIG_DIR={pf}\n\
                 BACKUP_DIR={d}/backup\nLOG_FILE={d}/log/relay-sync.log\nSTATE_DIR={d}/state\n",
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

/// `relay-sync --config CONFIG ARGS` for a member: its exit code and stdout.
fn run(member: &Member, args: &[&str]) -> (i32, String) {
    let output = Command::new(crate::gateway::BIN)
        .arg("--config")
        .arg(&member.config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `DB_HOST=replica, primary` with the replica in a network namespace whose link goes down, so
/// connections to it hang rather than being refused. A cron run reads the primary one connect
/// timeout later and says so; `check` names the host that answered and warns about the other;
/// a watcher moves its polls to the primary, and a change committed there still reaches
/// Postfix; when the link is back and the replica has caught up, the watcher returns to it.
#[test]
fn a_gateway_reads_the_primary_while_its_replica_is_unreachable_and_returns_to_it() {
    let pair = Replication::start_with_replica_in_namespace().unwrap();
    pair.load_fixtures().unwrap();
    let ns = pair.replica().netns().unwrap();
    let link = ns.host_address();
    // Connections to the replica come from the host's end of its link.
    pair.primary()
        .sql(&format!(
            "CREATE USER 'relay_sync'@'{link}' IDENTIFIED BY 'relay-sync-test-pw'; \
             GRANT SELECT ON mailserver_usermgmt.domains TO 'relay_sync'@'{link}';"
        ))
        .unwrap();
    pair.wait_caught_up(Duration::from_secs(30)).unwrap();
    let replica = format!("{}:{}", pair.replica().host(), pair.replica().port());
    let primary = format!("127.0.0.1:{}", pair.primary().port());
    let member = Member::reading(&format!("DB_HOST={replica}, {primary}"));
    let connect_timeout = Duration::from_secs(2);

    let (code, report) = run(&member, &["check"]);
    assert!(
        report.contains(&format!("MariaDB at {replica} (1st host of DB_HOST)")),
        "{code}\n{report}"
    );

    // A cron run while the replica's link is down: the primary answers after one connect
    // timeout.
    ns.link_down().unwrap();
    let started = Instant::now();
    let (code, _) = run(&member, &[]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{}", member.log());
    let log = member.log();
    assert!(
        log.contains(&format!("Connected to MariaDB ({primary})")),
        "{log}"
    );
    assert!(
        log.contains(&format!("trying {primary} (2nd host of DB_HOST)")),
        "{log}"
    );
    eprintln!(
        "fleet: a cron run with its replica unreachable read the primary and synced in {took:?} \
         (DB_CONNECT_TIMEOUT {connect_timeout:?})"
    );
    assert!(took < connect_timeout + Duration::from_secs(3), "{took:?}");
    let (_, report) = run(&member, &["check"]);
    assert!(
        report.contains(&format!("MariaDB at {primary} (2nd host of DB_HOST)")),
        "{report}"
    );
    assert!(
        report.contains("not every host of DB_HOST answers"),
        "{report}"
    );
    ns.link_up().unwrap();
    pair.wait_caught_up(Duration::from_secs(60)).unwrap();

    // A watcher on the replica; its link goes down; a change on the primary still arrives.
    let watcher = Watcher::start(&member.config, &[]);
    let logged = member.log().len();
    assert!(
        wait_until(Duration::from_secs(30), || member.log()[logged..]
            .contains("===== Sync completed")),
        "{}",
        member.log()
    );
    assert!(
        member.log()[logged..].contains(&format!("Connected to MariaDB ({replica})")),
        "{}",
        member.log()
    );
    let smtp = member.smtp();
    assert!(rcpt(smtp, "user@old.example").starts_with("554"));
    ns.link_down().unwrap();
    let logged = member.log().len();
    pair.primary()
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'")
        .unwrap();
    let committed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || rcpt(smtp, "user@old.example")
            .starts_with("250")),
        "{}",
        &member.log()[logged..]
    );
    let took = committed.elapsed();
    eprintln!(
        "fleet: a watcher whose replica became unreachable relayed a change committed on the \
         primary {took:?} after the commit (DB_QUERY_TIMEOUT and DB_CONNECT_TIMEOUT 2 s)"
    );
    let during = member.log()[logged..].to_owned();
    assert!(
        during.contains(&format!(
            "Watching MariaDB at {primary} (2nd host of DB_HOST)"
        )),
        "{during}"
    );
    assert!(!during.contains("Database unreachable"), "{during}");

    // The link is back: once the replica has caught up, the watcher reads it again, within
    // relay-db's RETURN_EVERY (30 s) and a poll, and a change arrives through it.
    ns.link_up().unwrap();
    let back = Instant::now();
    pair.wait_caught_up(Duration::from_secs(60)).unwrap();
    let again = format!("Watching MariaDB at {replica} again");
    assert!(
        wait_until(Duration::from_secs(90), || member.log()[logged..]
            .contains(&again)),
        "{}",
        &member.log()[logged..]
    );
    eprintln!(
        "fleet: the watcher read its replica again {:?} after its link came back",
        back.elapsed()
    );
    pair.primary()
        .sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'old.example'")
        .unwrap();
    let logged = member.log().len();
    assert!(wait_until(CONVERGES_WITHIN, || rcpt(
        smtp,
        "user@old.example"
    )
    .starts_with("554")));
    assert!(
        member.log()[logged..].contains(&format!("Connected to MariaDB ({replica})")),
        "{}",
        &member.log()[logged..]
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}
