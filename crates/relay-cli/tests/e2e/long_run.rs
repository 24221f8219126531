//! What a watcher meets after days rather than seconds (issue 21): logrotate with the shipped
//! config.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::smtp::wait_until;
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
