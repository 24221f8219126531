//! What a watcher meets after days rather than seconds (issue 21): logrotate with the shipped
//! config, a heartbeat that tells a watcher that runs from one that was killed, and a sync
//! that meets a fault in its apply step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::gateway::Gateway;
use crate::smtp::{rcpt, wait_until};
use crate::watcher::Watcher;

/// Where the shipped logrotate config and the sample config put the log.
const SHIPPED_LOG_FILE: &str = "/var/log/mailserver/relay-sync.log";

fn packaging(name: &str) -> String {
    fs::read_to_string(relay_testbed::packaging_dir().join(name)).unwrap()
}

/// `logrotate --force` with `packaging/relay-sync.logrotate`, its path turned into `log`, and
/// a state file of its own (never the system's).
fn logrotate(log: &Path, dir: &Path) {
    let logrotate = relay_testbed::require("/usr/sbin/logrotate", "logrotate").unwrap();
    let config = dir.join("relay-sync.logrotate");
    let shipped = packaging("relay-sync.logrotate");
    assert!(shipped.contains(SHIPPED_LOG_FILE), "{shipped}");
    fs::write(
        &config,
        shipped.replace(SHIPPED_LOG_FILE, &log.display().to_string()),
    )
    .unwrap();
    let output = Command::new(logrotate)
        .arg("--state")
        .arg(dir.join("logrotate.state"))
        .arg("--force")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// After logrotate (`create`, `delaycompress`), the watcher's next lines go to the new
/// `LOG_FILE`, not to `.1`, which the next rotation compresses; again after a second rotation.
/// Before the fix the new file stayed empty and every line went to `.1`.
#[test]
fn watch_writes_to_the_new_log_after_logrotate() {
    let gw = Gateway::start("", "POLL_INTERVAL=0.2");
    let log = gw.dir.path().join("log/relay-sync.log");
    let rotated = gw.dir.path().join("log/relay-sync.log.1");
    let watcher = Watcher::start(&gw.config, &[]);
    assert!(wait_until(Duration::from_secs(30), || gw
        .log()
        .contains("===== Sync completed")));

    logrotate(&log, gw.dir.path());
    assert!(
        fs::read_to_string(&rotated)
            .unwrap()
            .contains("===== Sync completed"),
        "logrotate did not move the log to {}",
        rotated.display()
    );
    watcher.signal(libc::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("Syncing: sync requested")),
        "the new log got nothing; {} got:\n{}",
        rotated.display(),
        fs::read_to_string(&rotated).unwrap()
    );
    assert!(!fs::read_to_string(&rotated)
        .unwrap()
        .contains("Syncing: sync requested"));

    // The second rotation compresses the first one (delaycompress) and moves this one to .1.
    logrotate(&log, gw.dir.path());
    assert!(gw.dir.path().join("log/relay-sync.log.2.gz").exists());
    watcher.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || gw
            .log()
            .contains("SIGHUP received: configuration read again")),
        "the log after the second rotation got nothing:\n{}",
        gw.log()
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
    assert!(gw.log().contains("Watcher stopped after"), "{}", gw.log());
}

/// SIGHUP with a config that names another `LOG_FILE`: the lines after it go to the new file.
/// Before the fix, logging was set up once and every line kept going to the first file.
#[test]
fn sighup_with_another_log_file_moves_the_lines_there() {
    let gw = Gateway::start("", "POLL_INTERVAL=0.2");
    let watcher = Watcher::start(&gw.config, &[]);
    assert!(wait_until(Duration::from_secs(30), || gw
        .log()
        .contains("===== Sync completed")));
    let moved = gw.dir.path().join("moved/relay-sync.log");
    gw.edit_config(|text| {
        text.replace(
            &format!("LOG_FILE={}/log/relay-sync.log", gw.dir.path().display()),
            &format!("LOG_FILE={}", moved.display()),
        )
    });
    watcher.signal(libc::SIGHUP);
    let new_log = || fs::read_to_string(&moved).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || new_log()
            .contains("Log moved here from")),
        "{} got nothing; the old log:\n{}",
        moved.display(),
        gw.log()
    );
    let old_len = gw.log().len();
    watcher.signal(libc::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(20), || new_log()
            .contains("Syncing: sync requested")),
        "{}",
        new_log()
    );
    assert_eq!(gw.log().len(), old_len, "{}", gw.log());
    assert!(gw.log().contains("LOG_FILE changed: the next lines go to"));
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}

/// The value of `metric` in a Prometheus textfile.
fn metric(text: &str, metric: &str) -> Option<i64> {
    text.lines()
        .find_map(|line| line.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// `relay_sync_watch_last_poll_timestamp_seconds` follows the clock while the watcher polls and
/// stops when it is killed, while `relay_sync_watch_up` still says 1: monitoring alerts on the
/// heartbeat's age. Before the fix there was no heartbeat to read.
#[test]
fn the_heartbeat_moves_while_the_watcher_polls_and_stops_when_it_is_killed() {
    const HEARTBEAT: &str = "relay_sync_watch_last_poll_timestamp_seconds";
    let gw = Gateway::start("", "POLL_INTERVAL=0.2");
    let metrics = gw.dir.path().join("relay_sync.prom");
    let watch_metrics = gw.dir.path().join("relay_sync_watch.prom");
    let watcher = Watcher::start(&gw.config, &[("METRICS_FILE", metrics.to_str().unwrap())]);
    let heartbeat = || {
        metric(
            &fs::read_to_string(&watch_metrics).unwrap_or_default(),
            HEARTBEAT,
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || heartbeat().is_some()),
        "no {HEARTBEAT} in {}",
        watch_metrics.display()
    );
    let first = heartbeat().unwrap();
    assert!((now() - first).abs() <= 5, "{first} is not now ({})", now());
    // Whole seconds: the value moves within a little more than one.
    assert!(
        wait_until(Duration::from_secs(10), || heartbeat() > Some(first)),
        "{HEARTBEAT} stayed at {first}"
    );

    watcher.kill();
    let last = heartbeat().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let text = fs::read_to_string(&watch_metrics).unwrap();
    assert_eq!(metric(&text, HEARTBEAT), Some(last), "{text}");
    assert_eq!(metric(&text, "relay_sync_watch_up"), Some(1), "{text}");
    assert!(now() - last >= 2, "{text}");
}

/// The shipped logrotate config rotates the file the sample config and the units log to, in a
/// directory both units may write, and creates it with the mode relay-sync gives a new log.
#[test]
fn logrotate_config_and_units_agree() {
    let rotate = packaging("relay-sync.logrotate");
    let path = rotate
        .lines()
        .find_map(|line| line.trim().strip_suffix('{'))
        .map(str::trim)
        .unwrap();
    assert_eq!(path, SHIPPED_LOG_FILE);
    let sample = packaging("relay-sync.conf");
    assert!(
        sample
            .lines()
            .any(|line| line == format!("#LOG_FILE={SHIPPED_LOG_FILE}")),
        "the sample config's LOG_FILE is not {SHIPPED_LOG_FILE}"
    );
    assert!(
        rotate
            .lines()
            .any(|line| line.trim() == "create 0640 root root"),
        "{rotate}"
    );
    // No postrotate signal: the watcher follows the new file by itself, and a sync opens it
    // afresh each run.
    assert!(
        !rotate.lines().any(|line| line.trim() == "postrotate"),
        "{rotate}"
    );
    let dir = Path::new(SHIPPED_LOG_FILE)
        .parent()
        .unwrap()
        .display()
        .to_string();
    for unit in ["relay-sync.service", "relay-sync-watch.service"] {
        let text = packaging(unit);
        let writable = text
            .lines()
            .filter_map(|line| line.strip_prefix("ReadWritePaths="))
            .flat_map(str::split_whitespace)
            .any(|entry| entry.trim_start_matches('-') == dir);
        assert!(writable, "{unit} does not list {dir} in ReadWritePaths");
    }
    assert!(packaging("relay-sync-watch.service").contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

/// A small tmpfs as `BACKUP_DIR`, to fill; unmounted on drop.
struct BackupDisk {
    dir: PathBuf,
}

impl BackupDisk {
    fn mount(dir: PathBuf) -> BackupDisk {
        fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "relay-sync-e2e"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the e2e suite runs as root, as .ci/run does); this \
             test needs mount(8)",
            dir.display()
        );
        BackupDisk { dir }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("e2e-filler")
    }

    /// Writes until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = fs::File::create(self.filler()).unwrap();
        let chunk = [0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0u8]).is_ok() {}
    }

    fn free(&self) {
        fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for BackupDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A change that meets a full `BACKUP_DIR` fails its sync (nothing changes); once the disk has
/// room again, the watcher retries by itself and the change is relayed within seconds, at the
/// default `RECONCILE_INTERVAL` of 300 s. Before the fix, the failed sync counted as having
/// applied the rows it read: no poll saw a change, and the domain waited for the next
/// `RECONCILE_INTERVAL`.
#[test]
fn a_sync_that_failed_on_a_full_backup_dir_is_retried_when_it_has_room() {
    let gw = Gateway::start("", "RELAY_DOMAINS_MODE=map\nPOLL_INTERVAL=0.2");
    let disk = BackupDisk::mount(gw.backup_dir());
    let watcher = Watcher::start(&gw.config, &[]);
    assert!(wait_until(Duration::from_secs(30), || gw
        .log()
        .contains("===== Sync completed")));
    let smtp = gw.postfix.smtp_port();
    assert!(rcpt(smtp, "user@old.example").starts_with("554"));

    disk.fill();
    let logged = gw.log().len();
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    assert!(
        wait_until(Duration::from_secs(20), || gw.log()[logged..]
            .contains("===== Sync failed")),
        "no sync failed on the full BACKUP_DIR:\n{}",
        &gw.log()[logged..]
    );
    // A few retries fail too while the disk stays full, and change nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert!(rcpt(smtp, "user@old.example").starts_with("554"));

    disk.free();
    let freed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || rcpt(smtp, "user@old.example")
            .starts_with("250")),
        "old.example not relayed {:?} after BACKUP_DIR had room again:\n{}",
        freed.elapsed(),
        &gw.log()[logged..]
    );
    eprintln!(
        "a change that met a full BACKUP_DIR was relayed {:?} after the disk had room",
        freed.elapsed()
    );
    assert!(
        gw.log()[logged..].contains("Syncing: retrying the last sync"),
        "{}",
        &gw.log()[logged..]
    );
    assert_eq!(watcher.stop(Duration::from_secs(30)), 0);
}
