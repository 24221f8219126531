//! The scenarios of issue "The sync pipeline" §6, each against its own gateway.

use std::fs::File;

use crate::gateway::{files_starting_with, Gateway};

const HOP: &str = "smtp:[127.0.0.1]:2525";
const SEEDED: &str = "example.com, example.net, example.org, kuma8088.com, shop.example.jp";

/// IT-001: the first run relays every enabled domain, keeps the preserved one, routes each
/// through the managed block, and leaves a backup of what was there before.
#[test]
fn first_sync_relays_enabled_domains() {
    let gw = Gateway::start("kuma8088.com, old.example", "");
    let run = gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), SEEDED);
    for domain in [
        "example.com",
        "example.net",
        "example.org",
        "shop.example.jp",
    ] {
        assert_eq!(gw.lookup(domain).as_deref(), Some(HOP), "{domain}");
    }
    assert_eq!(gw.lookup("old.example"), None);
    let log = gw.log();
    for line in [
        "INFO: ===== Relay Domains Sync Started =====",
        "INFO: Connected to MariaDB (127.0.0.1)",
        "INFO: Retrieved 4 domains from DB: example.com, example.net, example.org, shop.example.jp",
        "INFO: Current relay_domains: kuma8088.com, old.example",
        "INFO: Domain changes detected: +4, -1",
        "INFO: Removed domain: old.example",
        "INFO: Backup created: ",
        "INFO: Updated transport file: added 5, removed 0",
        "INFO: Postmap successful: hash:",
        "INFO: Postfix reloaded successfully",
        "INFO: ===== Sync completed in ",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    // Every log line has the SPEC §8 shape.
    for line in log.lines() {
        assert!(
            line.len() > 22 && line.starts_with('[') && &line[20..22] == "] ",
            "malformed log line {line:?}"
        );
    }
    // Not a terminal: stderr gets ERROR lines only, and this run had none.
    assert_eq!(run.stderr, "", "{run:?}");
    let backups = files_starting_with(&gw.backup_dir(), "relay_domains.");
    assert_eq!(backups.len(), 1, "{backups:?}");
    let saved = std::fs::read_to_string(gw.backup_dir().join(&backups[0])).unwrap();
    assert_eq!(saved.trim_end(), "kuma8088.com, old.example");
}

/// UT-006 for real: a second run with the same database writes nothing at all.
#[test]
fn second_run_changes_nothing() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let before = gw.mtimes();
    let files = gw.files();
    // mtimes have a resolution finer than this; a rewrite would show.
    std::thread::sleep(std::time::Duration::from_millis(20));
    gw.sync_expecting(0);
    assert_eq!(gw.mtimes(), before);
    assert_eq!(gw.files(), files);
    assert!(
        gw.log()
            .contains("INFO: No changes detected, skipping update"),
        "{}",
        gw.log()
    );
    assert_eq!(files_starting_with(&gw.backup_dir(), "transport.").len(), 1);
}

/// IT-003: three domains enabled and two disabled between runs, all reflected in one run.
#[test]
fn three_added_two_disabled() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    gw.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES \
         ('new1.example', 1), ('new2.example', 1), ('new3.example', 1); \
         UPDATE mailserver_usermgmt.domains SET enabled = 0 \
         WHERE name IN ('example.net', 'example.org');",
    );
    gw.sync_expecting(0);
    assert_eq!(
        gw.relay_domains(),
        "example.com, kuma8088.com, new1.example, new2.example, new3.example, shop.example.jp"
    );
    for domain in [
        "new1.example",
        "new2.example",
        "new3.example",
        "example.com",
    ] {
        assert_eq!(gw.lookup(domain).as_deref(), Some(HOP), "{domain}");
    }
    for domain in ["example.net", "example.org"] {
        assert_eq!(gw.lookup(domain), None, "{domain}");
    }
    assert!(
        gw.log().contains("Domain changes detected: +3, -2"),
        "{}",
        gw.log()
    );
    // And the run after that converges.
    gw.sync_expecting(0);
    assert!(gw
        .log()
        .ends_with(&format!("{}\n", gw.log().lines().last().unwrap())));
    assert!(gw.log().contains("No changes detected"));
}

/// IT-004: with MariaDB down, the run exits 3 and every Postfix file stays as it was.
#[test]
fn database_stopped_keeps_configuration() {
    let mut gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.com'");
    gw.db.stop().unwrap();
    let files = gw.files();
    let run = gw.sync_expecting(3);
    assert_eq!(gw.files(), files);
    let log = gw.log();
    assert!(
        log.contains("ERROR: cannot reach MariaDB at 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("ERROR: Keeping current configuration"),
        "{log}"
    );
    // Under cron, stderr carries the ERROR lines and nothing else.
    assert!(
        run.stderr.contains("ERROR: cannot reach MariaDB"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("INFO:"), "{run:?}");
    assert!(
        !log.contains("relay-sync-test-pw"),
        "the password leaked into the log"
    );
}

/// UT-010 for real: Postfix is stopped, so the reload fails; everything is rolled back and the
/// run is critical.
#[test]
fn reload_failure_rolls_back_and_exits_6() {
    let mut gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('late.example', 1)");
    let main_cf = gw.main_cf();
    let transport = gw.transport();
    let relay_domains = gw.relay_domains();
    gw.postfix.stop().unwrap();
    let run = gw.sync_expecting(6);
    assert_eq!(gw.relay_domains(), relay_domains);
    assert_eq!(gw.main_cf(), main_cf);
    assert_eq!(gw.transport(), transport);
    assert_eq!(gw.lookup("late.example"), None);
    let log = gw.log();
    for line in [
        "ERROR: postfix reload failed",
        "Rolling back to previous configuration",
        "ERROR: CRITICAL: Manual intervention required",
        "===== Sync failed in ",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    assert!(
        run.stderr
            .contains("CRITICAL: Manual intervention required"),
        "{run:?}"
    );
    // Once Postfix is back, the next run applies the change.
    gw.postfix.start_again().unwrap();
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("late.example"));
}

/// SPEC §6: seven changing runs leave the newest five generations of each kind.
#[test]
fn backups_keep_the_newest_five_generations() {
    let gw = Gateway::start("kuma8088.com", "BACKUP_KEEP=5");
    for i in 0..7 {
        gw.sql(&format!(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('gen{i}.example', 1)"
        ));
        gw.sync_expecting(0);
    }
    let relay = files_starting_with(&gw.backup_dir(), "relay_domains.");
    let transport = files_starting_with(&gw.backup_dir(), "transport.");
    assert_eq!(relay.len(), 5, "{relay:?}");
    assert_eq!(transport.len(), 5, "{transport:?}");
    // The newest generation holds the state before the last run: gen0..gen5 but not gen6.
    let newest = relay.iter().max_by_key(|n| stamp_key(n)).unwrap();
    let saved = std::fs::read_to_string(gw.backup_dir().join(newest)).unwrap();
    assert!(
        saved.contains("gen5.example") && !saved.contains("gen6.example"),
        "{saved}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(gw.backup_dir()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

/// `relay_domains.YYYYMMDD-HHMMSS[-N].bak` sorts by stamp, then by its same-second counter.
fn stamp_key(name: &str) -> (String, u32) {
    let stamp = name
        .trim_start_matches("relay_domains.")
        .trim_end_matches(".bak");
    let (base, n) = match stamp.get(15..) {
        Some(rest) if rest.starts_with('-') => (&stamp[..15], rest[1..].parse().unwrap_or(0)),
        _ => (stamp, 0),
    };
    (base.to_owned(), n)
}

/// SPEC §2 step 1: a second run while one holds the lock steps aside with exit 0.
#[test]
fn held_lock_skips_the_run() {
    let gw = Gateway::start("kuma8088.com", "");
    let state = gw.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = File::create(state.join("relay-sync.lock")).unwrap();
    lock.lock().unwrap();
    let before = gw.relay_domains();
    gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), before);
    assert!(
        gw.log().contains("INFO: Another sync is running, skipping"),
        "{}",
        gw.log()
    );
    drop(lock);
    gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), SEEDED);
}

/// `--dry-run` prints the plan and the diff, and touches nothing (not even the log).
#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let gw = Gateway::start("kuma8088.com, old.example", "");
    let files = gw.files_before_first_sync();
    let run = gw.run(&["--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(gw.files_before_first_sync(), files);
    assert_eq!(gw.log(), "");
    assert!(!gw.backup_dir().exists());
    let stdout = run
        .stdout
        .replace(&gw.postfix.config_dir().display().to_string(), "[POSTFIX]");
    insta::assert_snapshot!(stdout);
}

/// Hostile rows from the real database are skipped and logged escaped; valid rows still sync.
#[test]
fn hostile_rows_from_the_database_never_reach_postfix() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES \
         ('evil.example\\n[2026-01-01 00:00:00] INFO: forged', 1), \
         ('x.example smtp:[10.0.0.1]:25', 1), ('a.com, b.com', 1), ('$mydestination', 1), \
         ('  Upper.EXAMPLE. ', 1), ('bücher.example', 1)",
    );
    gw.sync_expecting(0);
    let relay = gw.relay_domains();
    assert_eq!(
        relay,
        "example.com, example.net, example.org, kuma8088.com, shop.example.jp, upper.example, xn--bcher-kva.example"
    );
    let main_cf = gw.main_cf();
    let transport = gw.transport();
    for needle in ["evil", "10.0.0.1", "a.com", "$mydestination, "] {
        assert!(
            !transport.contains(needle),
            "{needle} in transport:\n{transport}"
        );
        assert!(!main_cf.contains(needle), "{needle} in main.cf");
    }
    let log = gw.log();
    assert!(!log.lines().any(|l| l.starts_with("[2026-01-01")), "{log}");
    assert_eq!(
        log.matches("ERROR: Invalid domain skipped").count(),
        4,
        "{log}"
    );
}

/// `-v` admits DEBUG lines (each Postfix command with its exit status) to the log file, and to
/// stderr only where every line goes there (a dry run); without it there are none.
#[test]
fn verbose_adds_debug_lines() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    assert!(!gw.log().contains("DEBUG:"), "{}", gw.log());

    let before = gw.log().len();
    let run = gw.run(&["sync", "--verbose"]);
    assert_eq!(run.code, 0, "{run:?}");
    let log = gw.log()[before..].to_owned();
    assert!(log.contains("] DEBUG: `"), "{log}");
    assert!(log.contains("` exited with exit status: 0 after "), "{log}");
    assert!(log.contains("INFO: No changes detected"), "{log}");
    // Not a terminal: stderr still gets ERROR lines only.
    assert_eq!(run.stderr, "", "{run:?}");

    let dry = gw.run(&["-v", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stderr.contains("] DEBUG: `"), "{dry:?}");
}
