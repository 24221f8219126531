//! A restore trusts only what relay-sync wrote and can still vouch for (issue 19, finding 1):
//! `rollback` against a generation someone else planted, and against one of root's that holds
//! what a sync would never write. Each is reproduced as the review did, with the private
//! Postfix answering RCPT TO for a domain it must not relay.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use relay_testbed::takeover::{nobody_dir, NOBODY};

use crate::gateway::Gateway;
use crate::smtp::rcpt_settled;

/// A domain nothing relays: Postfix must answer 554 for it before and after.
const UNRELATED: &str = "someone@unrelated.example";

/// The open relay the review planted: every domain relayed, every recipient routed away.
const OPEN_RELAY: &str = "static:OK";
const ROUTE_EVERYTHING: &str = "* smtp:[127.0.0.2]:2525\n";

/// Writes a generation `stamp` into `dir` as relay-sync names it, with an index line of
/// `sequence`; every file owned by `owner`.
fn plant_generation(dir: &Path, stamp: &str, sequence: &str, owner: u32) {
    let files = [
        (
            format!("relay_domains.{stamp}.bak"),
            format!("{OPEN_RELAY}\n"),
        ),
        (
            format!("transport.{stamp}.bak"),
            ROUTE_EVERYTHING.to_owned(),
        ),
        (
            "relay-sync.generations".to_owned(),
            format!("{sequence} {stamp} sync\n"),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    }
}

/// A `BACKUP_DIR` owned by `nobody`, holding a generation `nobody` wrote with an index line
/// whose sequence wraps relay-sync's counter: `rollback` refuses, naming the directory and the
/// `chown` (exit 2), and Postfix still refuses to relay for an unrelated domain.
#[test]
fn a_generation_planted_in_a_nobody_backup_dir_is_never_restored() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    assert!(rcpt_settled(smtp, UNRELATED, "554").starts_with("554"));
    let relay_domains = gw.relay_domains();
    let transport = gw.transport();

    let backups = gw.backup_dir();
    fs::remove_dir_all(&backups).unwrap();
    nobody_dir(&backups);
    plant_generation(&backups, "20991231-235959", "18446744073709551615", NOBODY);
    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("chown root {}", backups.display())),
        "{run:?}"
    );
    assert_eq!(gw.relay_domains(), relay_domains);
    assert_eq!(gw.transport(), transport);
    assert!(rcpt_settled(smtp, UNRELATED, "554").starts_with("554"));
}
