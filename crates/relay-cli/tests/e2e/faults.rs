//! Faults an MX gateway meets (issue "Reliability" §2). Each one leaves `main.cf` and the
//! transport file as they were, exits with SPEC §8's code, and the next healthy run converges.
//!
//! Postfix commands are broken with stand-in scripts in a `POSTFIX_COMMAND_DIR`
//! ([`Gateway::stand_in_commands`]) that hand every other call to the real command; the disk is
//! filled or made read-only with a small tmpfs mounted for the test (the suite runs as root).
//! The database being stopped is `scenarios::database_stopped_keeps_configuration` (IT-004),
//! and reload failing because Postfix is stopped is
//! `scenarios::reload_failure_rolls_back_and_exits_6`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::gateway::{files_starting_with, Gateway, Run, BROKEN_POSTCONF_SAYS};
use crate::smtp::wait_until;

/// What Postfix works from: main.cf, the transport source, and every entry of its map
/// (`postmap -s`, sorted), so that a rebuilt but equal map compares equal.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    main_cf: String,
    relay_domains: String,
    transport: String,
    map: Vec<String>,
}

fn snapshot(gw: &Gateway, transport: &Path) -> Snapshot {
    let dump = gw
        .postfix
        .command(
            "/usr/sbin/postmap",
            &["-s", &format!("hash:{}", transport.display())],
        )
        .unwrap();
    let mut map: Vec<String> = dump.lines().map(str::to_owned).collect();
    map.sort();
    Snapshot {
        main_cf: gw.main_cf(),
        relay_domains: gw.relay_domains(),
        transport: fs::read_to_string(transport).unwrap(),
        map,
    }
}

/// A synced gateway with one more domain enabled in the database, so the next run has work.
fn synced_with_pending_change(extra: &str) -> Gateway {
    let gw = Gateway::start("kuma8088.com", extra);
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1)");
    gw
}

/// Asserts the fault left everything as it was, and no temporary file behind.
fn assert_unchanged(gw: &Gateway, before: &Snapshot, run: &Run) {
    let transport = gw.transport_path();
    assert_eq!(&snapshot(gw, &transport), before, "{run:?}\n{}", gw.log());
    assert_eq!(gw.lookup("pending.example"), None);
    let dir = transport.parent().unwrap();
    assert_eq!(files_starting_with(dir, ".transport"), Vec::<String>::new());
}

/// Dot files beside the transport map: what a write under a temporary name could leave.
fn temp_files(gw: &Gateway) -> Vec<String> {
    files_starting_with(&gw.postfix.config_dir(), ".")
}

/// After the fault is gone, the next run applies the pending change.
fn assert_recovers(gw: &Gateway) {
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("pending.example"));
    assert_eq!(
        gw.lookup("pending.example").as_deref(),
        Some("smtp:[127.0.0.1]:2525")
    );
}

#[test]
fn database_killed_mid_query_exits_3_and_keeps_configuration() {
    let mut gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    // The query sleeps 2 s on the server before it returns its rows; the server dies meanwhile.
    let child = gw
        .command(&[])
        .env(
            "RELAY_SYNC_DB_QUERY",
            "SELECT name FROM domains, (SELECT SLEEP(2) AS pause) AS p WHERE enabled = 1",
        )
        .env("RELAY_SYNC_DB_QUERY_TIMEOUT", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = wait_until(Duration::from_secs(10), || {
        gw.db
            .sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SLEEP(2)%' AND USER = 'relay_sync'")
            .is_ok_and(|n| n.trim() == "1")
    });
    assert!(running, "the query never showed up in the process list");
    gw.db.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(run.code, 3, "{run:?}\n{}", gw.log());
    assert!(
        gw.log().contains("ERROR: Keeping current configuration"),
        "{}",
        gw.log()
    );
    assert_unchanged(&gw, &before, &run);
    gw.db.start_again().unwrap();
    assert_recovers(&gw);
}

#[test]
fn wrong_password_exits_3_and_never_logs_the_password() {
    let gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    let run = gw.sync_env_expecting(&[("DB_PASSWORD", "wrong-secret-pw")], 3);
    assert_unchanged(&gw, &before, &run);
    let log = gw.log();
    assert!(log.contains("ERROR: "), "{log}");
    assert!(
        log.contains("Access denied") || log.contains("access denied"),
        "{log}"
    );
    for secret in ["wrong-secret-pw", "relay-sync-test-pw"] {
        assert!(
            !log.contains(secret) && !run.stderr.contains(secret),
            "{secret} leaked"
        );
    }
    assert_recovers(&gw);
}

#[test]
fn query_on_a_missing_table_exits_3() {
    let gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    let run = gw.sync_env_expecting(
        &[(
            "DB_QUERY",
            "SELECT name FROM no_such_table WHERE enabled = 1",
        )],
        3,
    );
    assert_unchanged(&gw, &before, &run);
    assert!(gw.log().contains("no_such_table"), "{}", gw.log());
    assert_recovers(&gw);
}

#[test]
fn select_revoked_exits_3() {
    let gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    gw.sql("REVOKE SELECT ON mailserver_usermgmt.domains FROM 'relay_sync'@'127.0.0.1'");
    let run = gw.sync_expecting(3);
    assert_unchanged(&gw, &before, &run);
    gw.sql("GRANT SELECT ON mailserver_usermgmt.domains TO 'relay_sync'@'127.0.0.1'");
    assert_recovers(&gw);
}

/// `postmap` refuses to build any map (lookups still work): the first write fails before
/// anything was replaced, so there is nothing to roll back.
#[test]
fn postmap_failing_exits_5_with_nothing_changed() {
    let gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    let commands = gw.stand_in_commands(
        "broken-postmap",
        &[(
            "postmap",
            r#"case " $* " in *" -q "*|*" -s "*) exec /usr/sbin/postmap "$@";; esac
echo "postmap: fatal: stand-in: cannot build the map" >&2
exit 1"#,
        )],
    );
    let run = gw.sync_env_expecting(&[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())], 5);
    assert_unchanged(&gw, &before, &run);
    let log = gw.log();
    assert!(log.contains("stand-in: cannot build the map"), "{log}");
    assert!(!log.contains("CRITICAL"), "{log}");
    assert_recovers(&gw);
}

/// `postconf -e` fails (reads still work): the transport map already gained the new entry, so
/// it is rolled back, and the run exits 5.
#[test]
fn postconf_failing_exits_5_and_rolls_back() {
    let gw = synced_with_pending_change("");
    let before = snapshot(&gw, &gw.transport_path());
    let commands = gw.broken_postconf();
    let run = gw.sync_env_expecting(&[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())], 5);
    assert_unchanged(&gw, &before, &run);
    let log = gw.log();
    for line in [
        BROKEN_POSTCONF_SAYS,
        "Rolling back to previous configuration",
        "INFO: Rollback successful",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    assert!(!log.contains("CRITICAL"), "{log}");
    assert_recovers(&gw);
}

/// The first reload succeeds; the final transport's `postmap` fails, and so does the
/// rollback's own reload: the run is critical, and the files are restored all the same (Postfix
/// reads them when it is reloaded or started again).
#[test]
fn rollback_reload_failing_is_critical_and_files_are_restored() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    // One domain in, one out: the run ends with a second transport write (the removal).
    gw.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1); \
         UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net'",
    );
    let before = snapshot(&gw, &gw.transport_path());
    let commands = gw.stand_in_commands(
        "broken-rollback",
        &[
            (
                "postmap",
                r#"case " $* " in *" -q "*) exec /usr/sbin/postmap "$@";; esac
n=$(( $(cat "$0.count" 2>/dev/null || echo 0) + 1 )); echo $n > "$0.count"
if [ $n -eq 2 ]; then echo "postmap: fatal: stand-in: build $n fails" >&2; exit 1; fi
exec /usr/sbin/postmap "$@""#,
            ),
            (
                "postfix",
                r#"case " $* " in *" reload "*)
  n=$(( $(cat "$0.count" 2>/dev/null || echo 0) + 1 )); echo $n > "$0.count"
  if [ $n -ge 2 ]; then echo "postfix: fatal: stand-in: reload $n fails" >&2; exit 1; fi;;
esac
exec /usr/sbin/postfix "$@""#,
            ),
        ],
    );
    let run = gw.sync_env_expecting(&[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())], 6);
    assert_eq!(snapshot(&gw, &gw.transport_path()), before, "{}", gw.log());
    assert_eq!(temp_files(&gw), Vec::<String>::new());
    let log = gw.log();
    for line in [
        "stand-in: build 2 fails",
        "Rolling back to previous configuration",
        "ERROR: Rollback failed",
        "stand-in: reload 2 fails",
        "ERROR: CRITICAL: Manual intervention required",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    assert!(run.stderr.contains("CRITICAL"), "{run:?}");
    // Postfix itself was reloaded once with the new relay_domains and then never again: a
    // real reload now brings it back in line with the restored files.
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("pending.example"));
    assert!(!gw.relay_domains().contains("example.net"));
}

/// A small tmpfs holding the transport map, unmounted on drop.
struct MapDisk {
    dir: PathBuf,
}

impl MapDisk {
    fn mount(gw: &Gateway) -> MapDisk {
        let dir = gw.dir.path().join("maps");
        fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "relay-sync-e2e"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the e2e suite runs as root, as .ci/run does); \
             this test needs mount(8)",
            dir.display()
        );
        MapDisk { dir }
    }

    fn remount(&self, option: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount {option} {}", self.dir.display());
    }
}

impl Drop for MapDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A gateway whose transport map lives on its own small tmpfs, synced, with a pending change.
fn gateway_with_map_disk() -> (Gateway, MapDisk, Vec<(&'static str, String)>) {
    let gw = Gateway::start("kuma8088.com", "");
    let disk = MapDisk::mount(&gw);
    let transport = disk.dir.join("transport");
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &[
                "-e",
                &format!("transport_maps = hash:{}", transport.display()),
            ],
        )
        .unwrap();
    fs::write(&transport, "").unwrap();
    let env = vec![("TRANSPORT_FILE", transport.display().to_string())];
    (gw, disk, env)
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn full_transport_disk_exits_5_and_keeps_the_map() {
    let (gw, disk, env) = gateway_with_map_disk();
    let env = env_refs(&env);
    let transport = disk.dir.join("transport");
    gw.sync_env_expecting(&env, 0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1)");
    let before = snapshot(&gw, &transport);
    // Fill the disk: write until the kernel says no space is left.
    let filler = disk.dir.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    let full = loop {
        if let Err(e) = std::io::Write::write_all(&mut file, &block) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(28), "{full}"); // ENOSPC
    drop(file);
    let run = gw.sync_env_expecting(&env, 5);
    assert_eq!(snapshot(&gw, &transport), before, "{}", gw.log());
    assert_eq!(
        files_starting_with(&disk.dir, ".transport"),
        Vec::<String>::new()
    );
    assert!(
        gw.log().contains("No space left on device"),
        "{run:?}\n{}",
        gw.log()
    );
    fs::remove_file(&filler).unwrap();
    gw.sync_env_expecting(&env, 0);
    assert!(gw.relay_domains().contains("pending.example"));
}

#[test]
fn read_only_transport_directory_exits_5_and_keeps_the_map() {
    let (gw, disk, env) = gateway_with_map_disk();
    let env = env_refs(&env);
    let transport = disk.dir.join("transport");
    gw.sync_env_expecting(&env, 0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1)");
    let before = snapshot(&gw, &transport);
    disk.remount("ro");
    let run = gw.sync_env_expecting(&env, 5);
    assert_eq!(snapshot(&gw, &transport), before, "{}", gw.log());
    assert!(
        gw.log().contains("Read-only file system"),
        "{run:?}\n{}",
        gw.log()
    );
    disk.remount("rw");
    gw.sync_env_expecting(&env, 0);
    assert!(gw.relay_domains().contains("pending.example"));
}

/// The reload's output goes to unnamed temporary files; with `TMPDIR` unusable (a full or
/// missing /tmp) the change still goes through, the output read through pipes instead.
#[test]
fn an_unusable_tmpdir_does_not_fail_the_reload() {
    let gw = synced_with_pending_change("");
    let output = gw
        .command(&[])
        .env("TMPDIR", gw.dir.path().join("no-such-tmp"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n--- log\n{}",
        String::from_utf8_lossy(&output.stderr),
        gw.log()
    );
    assert_eq!(
        gw.lookup("pending.example").as_deref(),
        Some("smtp:[127.0.0.1]:2525")
    );
    assert!(
        gw.log().contains("Postfix reloaded successfully"),
        "{}",
        gw.log()
    );
}
