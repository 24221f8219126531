//! `relay-sync watch` (issue 12) against the real MariaDB and Postfix: propagation both ways, a
//! burst, an outage, each signal, the health check, `LOG_FILE=-`, and two gateways on one
//! database. Bounds are loose (seconds, not the bench's targets): speed is measured by
//! `cargo xtask bench`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay_testbed::Postfix;

use crate::gateway::{Gateway, BIN};
use crate::smtp::{rcpt, rcpt_settled, wait_until};

/// Generous: a change reaches Postfix within POLL_INTERVAL plus one sync (about 2 s inline).
const PROPAGATES_WITHIN: Duration = Duration::from_secs(20);

/// A running `relay-sync watch`, killed if a test fails before it stops it.
struct Watcher {
    child: Option<Child>,
    stdout: PathBuf,
}

impl Watcher {
    fn start(gw: &Gateway, env: &[(&str, &str)]) -> Watcher {
        Watcher::start_with(&gw.config, gw.dir.path(), env)
    }

    fn start_with(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Watcher {
        let stdout = dir.join(format!("watch-{}.out", std::process::id()));
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(config)
            .arg("watch")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(format!("RELAY_SYNC_{key}"), value);
        }
        Watcher {
            child: Some(command.spawn().unwrap()),
            stdout,
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        let sent = unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) };
        assert_eq!(sent, 0, "kill -{signal} {pid}");
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then its exit code; it must exit within `limit`.
    fn stop(mut self, limit: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < limit,
                "relay-sync watch did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the log holds `count` lines containing `needle`; the log when it does not.
fn wait_for_log(gw: &Gateway, needle: &str, count: usize, limit: Duration) {
    let found = wait_until(limit, || gw.log().matches(needle).count() >= count);
    assert!(
        found,
        "no {count}× {needle:?} within {limit:?}; log:\n{}",
        gw.log()
    );
}

/// The first sync of the watcher has ended: `status` shows a success.
fn wait_ready(gw: &Gateway) {
    wait_for_log(gw, "===== Sync completed", 1, Duration::from_secs(30));
}

#[test]
fn watch_propagates_an_enable_and_a_disable_and_stops_on_sigterm() {
    let gw = Gateway::start("", "");
    let smtp = gw.postfix.smtp_port();
    let metrics = gw.dir.path().join("relay_sync.prom");
    let watch_metrics = gw.dir.path().join("relay_sync_watch.prom");
    let watcher = Watcher::start(
        &gw,
        &[
            ("POLL_INTERVAL", "0.5"),
            ("METRICS_FILE", metrics.to_str().unwrap()),
        ],
    );
    wait_ready(&gw);
    assert!(rcpt_settled(smtp, "user@example.com", "250").starts_with("250"));
    assert!(rcpt(smtp, "user@old.example").starts_with("554"));

    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    let start = Instant::now();
    assert!(wait_until(PROPAGATES_WITHIN, || rcpt(
        smtp,
        "user@old.example"
    )
    .starts_with("250")));
    eprintln!("enable reached RCPT after {:?}", start.elapsed());

    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'old.example'");
    let start = Instant::now();
    assert!(wait_until(PROPAGATES_WITHIN, || rcpt(
        smtp,
        "user@old.example"
    )
    .starts_with("554")));
    eprintln!("disable reached RCPT after {:?}", start.elapsed());

    let log = gw.log();
    assert!(
        log.contains("Syncing: the domains in the database changed"),
        "{log}"
    );
    // Both changes are in the histogram, beside the run metrics (which each sync rewrites).
    // The sync that made RCPT answer 554 may still be finishing (final transport, metrics).
    wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&watch_metrics)
            .is_ok_and(|text| text.contains("relay_sync_watch_propagation_seconds_count 2\n"))
    });
    let text = fs::read_to_string(&watch_metrics).unwrap();
    assert!(text.contains("relay_sync_watch_up 1\n"), "{text}");
    assert!(
        text.contains("relay_sync_watch_changes_detected_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("relay_sync_watch_propagation_seconds_count 2\n"),
        "{text}"
    );
    assert!(fs::read_to_string(&metrics)
        .unwrap()
        .contains("relay_sync_last_run_success 1"));
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
    let text = fs::read_to_string(&watch_metrics).unwrap();
    assert!(text.contains("relay_sync_watch_up 0\n"), "{text}");
    assert!(gw.log().contains("Watcher stopped after"), "{}", gw.log());
}

/// An undo before the next poll, and a rename, and a delete: only real changes sync.
#[test]
fn watch_ignores_an_undone_change_and_sees_a_rename_and_a_delete() {
    let gw = Gateway::start("", "");
    let watcher = Watcher::start(&gw, &[("POLL_INTERVAL", "3")]);
    wait_ready(&gw);
    // Both within one second, between two polls: nothing to apply.
    gw.sql(
        "UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'; \
         UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'old.example';",
    );
    std::thread::sleep(Duration::from_secs(7));
    let log = gw.log();
    assert!(
        !log.contains("Syncing: the domains in the database changed"),
        "{log}"
    );

    gw.sql("UPDATE mailserver_usermgmt.domains SET name = 'renamed.example' WHERE name = 'example.net'");
    wait_for_log(&gw, "Added domain: renamed.example", 1, PROPAGATES_WITHIN);
    assert!(
        gw.log().contains("Removed domain: example.net"),
        "{}",
        gw.log()
    );
    gw.sql("DELETE FROM mailserver_usermgmt.domains WHERE name = 'example.org'");
    wait_for_log(&gw, "Removed domain: example.org", 1, PROPAGATES_WITHIN);
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// 50 enables over about 10 s are applied by a few syncs, not 50, and all arrive.
#[test]
fn watch_coalesces_a_burst_into_a_few_applies() {
    let gw = Gateway::start("", "RELAY_DOMAINS_MODE=map\nMAX_REMOVE_PERCENT=100");
    let watcher = Watcher::start(&gw, &[]);
    wait_ready(&gw);
    let applies_before = gw.log().matches("Domain changes detected").count();
    for i in 0..50 {
        gw.sql(&format!(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('burst{i}.example', 1)"
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    let arrived = wait_until(PROPAGATES_WITHIN, || {
        gw.transport().contains("burst49.example")
    });
    assert!(arrived, "{}", gw.log());
    let transport = gw.transport();
    assert!(
        (0..50).all(|i| transport.contains(&format!("burst{i}.example "))),
        "{transport}"
    );
    let applies = gw.log().matches("Domain changes detected").count() - applies_before;
    eprintln!("50 enables over 10 s: {applies} applies");
    // A poll a second after each sync (AFTER_A_SYNC, the default POLL_INTERVAL being shorter)
    // over about 10 s: 8 to 10; never one per row.
    assert!(
        (1..=12).contains(&applies),
        "{applies} applies:\n{}",
        gw.log()
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// The database stops: nothing touched, mail for existing domains still accepted, the outage
/// logged once at its start and once at its end however many polls fail, then changes flow.
#[test]
fn watch_rides_out_a_database_outage() {
    let mut gw = Gateway::start("", "");
    let smtp = gw.postfix.smtp_port();
    let watcher = Watcher::start(
        &gw,
        &[("POLL_INTERVAL", "0.2"), ("RECONCILE_INTERVAL", "1")],
    );
    wait_ready(&gw);
    gw.db.stop().unwrap();
    wait_for_log(&gw, "Database unreachable:", 1, Duration::from_secs(20));
    // Several back-off steps (0.4, 0.8, 1, 1, …) go by.
    std::thread::sleep(Duration::from_secs(5));
    assert!(rcpt(smtp, "user@example.com").starts_with("250"));
    gw.db.start_again().unwrap();
    wait_for_log(
        &gw,
        "Database reachable again after",
        1,
        Duration::from_secs(20),
    );
    let log = gw.log();
    assert_eq!(log.matches("Database unreachable:").count(), 1, "{log}");
    assert_eq!(log.matches("Database reachable again").count(), 1, "{log}");
    assert!(!log.contains("Database unreachable for"), "{log}");

    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    assert!(rcpt_settled(smtp, "user@old.example", "250").starts_with("250"));
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// SIGHUP with a broken config keeps the old one (ERROR logged); with a good one it is used;
/// SIGUSR1 syncs at once although the next poll is a minute away.
#[test]
fn watch_answers_sighup_and_sigusr1() {
    let gw = Gateway::start("", "POLL_INTERVAL=60");
    let mut watcher = Watcher::start(&gw, &[]);
    wait_ready(&gw);

    let good = fs::read_to_string(&gw.config).unwrap();
    gw.edit_config(|text| format!("{text}POLL_INTERVALL=1\n"));
    watcher.signal(libc::SIGHUP);
    wait_for_log(
        &gw,
        "configuration is invalid, keeping the one in use",
        1,
        Duration::from_secs(10),
    );
    assert!(gw.log().contains("POLL_INTERVALL"), "{}", gw.log());
    assert!(watcher.is_running());

    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    watcher.signal(libc::SIGUSR1);
    wait_for_log(&gw, "Added domain: old.example", 1, PROPAGATES_WITHIN);
    assert!(gw.log().contains("Syncing: sync requested"), "{}", gw.log());

    fs::write(
        &gw.config,
        good.replace("POLL_INTERVAL=60", "POLL_INTERVAL=0.5"),
    )
    .unwrap();
    watcher.signal(libc::SIGHUP);
    wait_for_log(&gw, "Configuration reloaded", 1, Duration::from_secs(10));
    // The new interval is in use: a change is seen without another signal.
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'legacy.example.net'");
    wait_for_log(
        &gw,
        "Added domain: legacy.example.net",
        1,
        PROPAGATES_WITHIN,
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// `status --max-age` fails before any sync and passes once the watcher synced; with
/// `LOG_FILE=-` the watcher's lines go to stdout in the log format.
#[test]
fn health_check_and_log_to_stdout() {
    let gw = Gateway::start("", "");
    let before = gw.run(&["status", "--max-age", "60"]);
    assert_eq!(before.code, 1, "{before:?}");
    assert!(
        before.stderr.contains("no successful sync is recorded"),
        "{before:?}"
    );

    let watcher = Watcher::start(&gw, &[("LOG_FILE", "-")]);
    assert!(
        wait_until(Duration::from_secs(30), || watcher
            .stdout()
            .contains("===== Sync completed")),
        "stdout:\n{}",
        watcher.stdout()
    );
    // The run is recorded in STATE_DIR just after its last log line: the health check turns
    // healthy within moments of "Sync completed", not necessarily before the next status.
    let mut after = gw.run(&["status", "--max-age", "60"]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            after = gw.run(&["status", "--max-age", "60"]);
            after.code == 0
        }),
        "{after:?}"
    );
    let stdout = watcher.stdout();
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('[') && first.contains("] INFO: Watching the database"),
        "{stdout}"
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
    // Nothing was written where a log file would be.
    assert!(!gw.dir.path().join("log/relay-sync.log").exists());
}

/// Two gateways (two Postfix instances, two watchers) on one database: both converge, stopping
/// one Postfix does not hold up the other, and the database sees only the polls and syncs.
#[test]
fn two_gateways_on_one_database() {
    let gw = Gateway::start("", "");
    let mut second_postfix = Postfix::start("").unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let second_config = second_dir.path().join("relay-sync.conf");
    let text = fs::read_to_string(&gw.config)
        .unwrap()
        .replace(
            &gw.postfix.config_dir().display().to_string(),
            &second_postfix.config_dir().display().to_string(),
        )
        .replace(
            &gw.dir.path().display().to_string(),
            &second_dir.path().display().to_string(),
        );
    fs::write(&second_config, text).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&second_config, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let second_log = second_dir.path().join("log/relay-sync.log");
    let env = [("POLL_INTERVAL", "0.5")];
    gw.db.start_general_log().unwrap();
    let started = Instant::now();
    let first = Watcher::start(&gw, &env);
    let second = Watcher::start_with(&second_config, second_dir.path(), &env);
    wait_ready(&gw);
    assert!(wait_until(Duration::from_secs(30), || {
        fs::read_to_string(&second_log)
            .unwrap_or_default()
            .contains("===== Sync completed")
    }));

    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    for port in [gw.postfix.smtp_port(), second_postfix.smtp_port()] {
        assert!(
            rcpt_settled(port, "user@old.example", "250").starts_with("250"),
            "port {port}"
        );
    }

    // One Postfix down: the other gateway still follows the database.
    second_postfix.stop().unwrap();
    // Not a subdomain of an enabled domain: Postfix would accept that through its parent.
    assert!(rcpt(gw.postfix.smtp_port(), "user@later.example").starts_with("554"));
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('later.example', 1)");
    let start = Instant::now();
    assert!(wait_until(PROPAGATES_WITHIN, || {
        rcpt(gw.postfix.smtp_port(), "user@later.example").starts_with("250")
    }));
    eprintln!(
        "with the other Postfix down, the change arrived after {:?}",
        start.elapsed()
    );

    // A quiet spell: both watchers keep polling, and past the settle time a poll is the
    // probe alone.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(first.stop(Duration::from_secs(30)), 0);
    assert_eq!(second.stop(Duration::from_secs(60)), 0);
    let elapsed = started.elapsed();
    let log = gw.db.general_log_of("relay_sync").unwrap();
    let count = |prefix: &str| log.lines().filter(|line| line.starts_with(prefix)).count();
    let polls = count("Query\tSELECT UNIX_TIMESTAMP(MAX(UPDATE_TIME))");
    let fingerprints = count("Query\tWITH relay_sync_names");
    let fetches = count("Query\tSELECT name FROM domains WHERE enabled = 1");
    let other = count("Query") - polls - fingerprints - fetches;
    eprintln!(
        "{elapsed:?}: {polls} polls, {fingerprints} fingerprints, {fetches} fetches by two watchers"
    );
    // Two watchers polling every 0.5 s: at most about 4 polls a second, and nothing else.
    let bound = usize::try_from(elapsed.as_secs()).unwrap() * 4 + 8;
    assert!(
        polls >= 4 && polls <= bound,
        "{polls} polls in {elapsed:?}:\n{log}"
    );
    assert!(fetches >= 4, "{log}");
    // A fingerprint only after a write (or a fetch's read), never at every poll.
    assert!(fingerprints < polls, "{log}");
    assert_eq!(other, 0, "{log}");
}

/// SPEC §7 in watch mode: the warning comes once the outage has lasted ALERT_AFTER_SECONDS,
/// however many polls failed (not after ALERT_AFTER_FAILURES of them), and a recovery notice
/// follows when the database answers again.
#[test]
fn watch_alerts_after_a_time_not_a_count() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.log");
    let script = dir.path().join("alert.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$RELAY_SYNC_ALERT_SEVERITY|$RELAY_SYNC_ALERT_SUBJECT\" >> '{}'\n",
            alerts.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut gw = Gateway::start(
        "",
        &format!(
            "ALERT_COMMAND={}\nALERT_AFTER_FAILURES=1\nALERT_AFTER_SECONDS=4",
            script.display()
        ),
    );
    // RECONCILE_INTERVAL (the longest back-off) far away: the recovery must not wait for it.
    let watcher = Watcher::start(&gw, &[("POLL_INTERVAL", "0.2")]);
    wait_ready(&gw);
    gw.db.stop().unwrap();
    wait_for_log(&gw, "Database unreachable:", 1, Duration::from_secs(20));
    let outage = Instant::now();
    // ALERT_AFTER_FAILURES=1 would have alerted at the first failed poll: it does not apply.
    std::thread::sleep(Duration::from_secs(2));
    assert!(fs::read_to_string(&alerts).unwrap_or_default().is_empty());
    assert!(wait_until(Duration::from_secs(20), || {
        fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains("warning|")
    }));
    assert!(
        outage.elapsed() >= Duration::from_secs(2),
        "{:?}",
        outage.elapsed()
    );
    // More failed polls go by: still one warning.
    std::thread::sleep(Duration::from_secs(2));
    gw.db.start_again().unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        fs::read_to_string(&alerts)
            .unwrap_or_default()
            .contains("recovery|")
    }));
    let text = fs::read_to_string(&alerts).unwrap();
    assert_eq!(text.matches("warning|").count(), 1, "{text}");
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// A panel whose `domains` table is latin1 and holds a non-ASCII name: each write costs one
/// sync, not three. The database used to hash the stored latin1 bytes while relay-sync hashed
/// the UTF-8 it read, so every fingerprint computed while a write settled looked like a change.
#[test]
fn watch_syncs_once_per_write_to_a_latin1_table() {
    let gw = Gateway::start("", "");
    gw.sql(
        "ALTER TABLE mailserver_usermgmt.domains CONVERT TO CHARACTER SET latin1; \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('bücher.example', 1)",
    );
    let watcher = Watcher::start(&gw, &[("POLL_INTERVAL", "0.3")]);
    wait_ready(&gw);
    assert!(
        gw.log().contains("Added domain: xn--bcher-kva.example"),
        "{}",
        gw.log()
    );
    let changed = || {
        gw.log()
            .matches("Syncing: the domains in the database changed")
            .count()
    };
    // Past the 2 s a write takes to settle: from here, only a write is a change.
    std::thread::sleep(Duration::from_secs(4));
    let before = changed();
    for name in ["old.example", "legacy.example.net"] {
        gw.sql(&format!(
            "UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = '{name}'"
        ));
        wait_for_log(&gw, &format!("Added domain: {name}"), 1, PROPAGATES_WITHIN);
        // Every poll of the settling second computes the fingerprint; none may sync again.
        std::thread::sleep(Duration::from_secs(4));
    }
    assert_eq!(changed() - before, 2, "one sync per write:\n{}", gw.log());
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// A `DB_QUERY` the signal cannot be derived from (here: it ends in a comment) is said at
/// start-up, and the watcher syncs in full every POLL_INTERVAL (at least every 2 s) instead:
/// changes still arrive.
#[test]
fn watch_without_a_signal_syncs_every_poll() {
    let gw = Gateway::start(
        "",
        "DB_QUERY=SELECT name FROM domains WHERE enabled = 1 -- the panel's enabled domains",
    );
    let watcher = Watcher::start(&gw, &[("POLL_INTERVAL", "0.5")]);
    wait_ready(&gw);
    wait_for_log(
        &gw,
        "WARN: no change signal can be derived from DB_QUERY: it holds a comment; syncing in \
         full every 2 s instead (POLL_INTERVAL, at least 2 s)",
        1,
        Duration::from_secs(5),
    );
    wait_for_log(
        &gw,
        "Syncing: no change signal for DB_QUERY",
        2,
        Duration::from_secs(20),
    );
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    wait_for_log(&gw, "Added domain: old.example", 1, PROPAGATES_WITHIN);
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}
