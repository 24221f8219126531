//! The watcher notices Postfix changing under it (issue 20): a `main.cf` edited by hand, a
//! restarted Postfix, and a container recreated from its image (which starts from the image's
//! `main.cf`, without inline mode's domains) are repaired within `POLL_INTERVAL` (the mark's
//! 10 s through a prefix) plus one sync, not at the next `RECONCILE_INTERVAL` (300 s here). Before, a watcher had not put the
//! domains back 20 s after a recreation.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::ContainerGateway;
use crate::gateway::{Gateway, BIN};
use crate::smtp::{rcpt, wait_until};

/// POLL_INTERVAL of these watchers.
const POLL: Duration = Duration::from_secs(1);

/// POLL_INTERVAL plus one sync, with room for a loaded machine: an inline sync waits for
/// main.cf to be a second old before its reload, and the container's exec adds a little to
/// each command. RECONCILE_INTERVAL (300 s) is far beyond it.
const REPAIRED_WITHIN: Duration = Duration::from_secs(15);

/// Through `POSTFIX_COMMAND_PREFIX` the watcher reads Postfix's mark at most every
/// `MARK_EVERY_THROUGH_PREFIX` (10 s): a repair there comes within that, plus one sync.
const REPAIRED_THROUGH_A_PREFIX_WITHIN: Duration =
    Duration::from_secs(15 + relay_ops::watch::MARK_EVERY_THROUGH_PREFIX.as_secs());

/// `relay-sync watch` with `config`, killed on drop.
struct Watcher(Child);

impl Watcher {
    fn start(config: &Path) -> Watcher {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            // DEBUG lines too: each Postfix command and why Postfix could not be read.
            .arg("--verbose")
            .arg("watch")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env("RELAY_SYNC_POLL_INTERVAL", POLL.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Watcher(child)
    }

    /// SIGTERM and its exit code.
    fn stop(mut self) -> i32 {
        let pid = i32::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `log()` holds `needle`.
fn wait_for(log: impl Fn() -> String, needle: &str, limit: Duration) {
    assert!(
        wait_until(limit, || log().contains(needle)),
        "no {needle:?} within {limit:?}:\n{}",
        log()
    );
}

/// How long until every one of `addresses` is accepted at RCPT, at most `limit`.
fn all_accepted_after(port: u16, addresses: &[&str], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_until(limit, || {
        addresses.iter().all(|to| rcpt(port, to).starts_with("250"))
    })
    .then(|| start.elapsed())
}

const ENABLED: [&str; 4] = [
    "user@example.com",
    "user@example.net",
    "user@example.org",
    "user@shop.example.jp",
];

/// On this host: main.cf edited by hand (the domains gone), then a restart of Postfix; the
/// watcher syncs for each within a poll, and says why.
#[test]
fn watcher_repairs_a_hand_edited_main_cf_and_notices_a_restart() {
    let mut gw = Gateway::start("", "");
    let watcher = Watcher::start(&gw.config);
    wait_for(|| gw.log(), "===== Sync completed", Duration::from_secs(30));
    let smtp = gw.postfix.smtp_port();
    assert!(all_accepted_after(smtp, &ENABLED, Duration::from_secs(20)).is_some());

    let completed = |gw: &Gateway| gw.log().matches("===== Sync completed").count();
    let before = completed(&gw);
    let edited = Instant::now();
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &["-e", "relay_domains = kuma8088.com"],
        )
        .unwrap();
    gw.postfix
        .command("/usr/sbin/postfix", &["reload"])
        .unwrap();
    wait_for(
        || gw.log(),
        "Syncing: main.cf changed since the last sync",
        REPAIRED_WITHIN,
    );
    assert!(wait_until(REPAIRED_WITHIN, || completed(&gw) > before));
    eprintln!(
        "main.cf edited by hand: repaired after {:?}",
        edited.elapsed()
    );
    assert!(all_accepted_after(smtp, &ENABLED, Duration::from_secs(20)).is_some());
    assert!(
        gw.relay_domains().contains("example.com"),
        "{}",
        gw.relay_domains()
    );

    let syncs = gw.log().matches("===== Relay Domains Sync Started").count();
    gw.postfix.stop().unwrap();
    gw.postfix.start_again().unwrap();
    wait_for(
        || gw.log(),
        "Syncing: Postfix restarted since the last sync",
        REPAIRED_WITHIN,
    );
    assert!(wait_until(REPAIRED_WITHIN, || {
        gw.log().matches("===== Relay Domains Sync Started").count() > syncs
    }));
    // A quiet Postfix costs nothing: no more syncs for a few polls.
    std::thread::sleep(POLL * 3);
    let settled = gw.log().matches("===== Relay Domains Sync Started").count();
    std::thread::sleep(POLL * 4);
    assert_eq!(
        gw.log().matches("===== Relay Domains Sync Started").count(),
        settled,
        "{}",
        gw.log()
    );
    assert_eq!(watcher.stop(), 0);
}

/// The requirements' topology, inline mode: the container is recreated from its image, which
/// starts from the image's main.cf. The next cron run puts every domain back; so does a
/// watcher, within the mark's interval through a prefix (10 s) plus one sync of the container
/// answering again.
#[test]
fn recreated_container_is_repaired_by_the_next_run_and_by_the_watcher() {
    let gw = ContainerGateway::start(None, "podman exec", "");
    gw.sync_expecting(0);
    for to in ENABLED {
        gw.assert_rcpt(to, "250");
    }

    // Recreated: the image's main.cf, the domains gone.
    gw.postfix.recreate().unwrap();
    assert_eq!(gw.relay_domains(), "kuma8088.com");
    gw.assert_rcpt("user@example.com", "554");
    // The next run (cron) puts them all back.
    gw.sync_expecting(0);
    for to in ENABLED {
        gw.assert_rcpt(to, "250");
    }

    // A watcher: recreated under it, repaired at its next poll.
    let completed = |gw: &ContainerGateway| gw.log().matches("===== Sync completed").count();
    let before = completed(&gw);
    let watcher = Watcher::start(&gw.config);
    assert!(
        wait_until(Duration::from_secs(30), || completed(&gw) > before),
        "{}",
        gw.log()
    );
    // The watcher reads Postfix's mark just after its sync: recreating the container in that
    // instant would make it "Postfix answers again" rather than "main.cf changed" (the same
    // repair, told differently).
    std::thread::sleep(POLL * 2);
    gw.postfix.recreate().unwrap();
    let took = all_accepted_after(gw.smtp(), &ENABLED, REPAIRED_THROUGH_A_PREFIX_WITHIN);
    assert!(
        took.is_some(),
        "not repaired within {REPAIRED_THROUGH_A_PREFIX_WITHIN:?}:\n{}\n--- container\n{}",
        gw.log(),
        gw.postfix.logs()
    );
    eprintln!("container recreated: every domain back after {took:?}");
    assert!(
        gw.log().contains(
            "Syncing: main.cf changed since the last sync (edited, or the container was recreated)"
        ),
        "{}",
        gw.log()
    );
    assert_eq!(watcher.stop(), 0);
}
