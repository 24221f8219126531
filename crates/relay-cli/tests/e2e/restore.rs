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

/// Writes a generation `stamp` into `dir` as relay-sync names its files, and, when given, the
/// index as `index`; every file owned by `owner`.
fn plant_generation(dir: &Path, stamp: &str, index: Option<&str>, owner: u32) {
    let mut files = vec![
        (
            format!("relay_domains.{stamp}.bak"),
            format!("{OPEN_RELAY}\n"),
        ),
        (
            format!("transport.{stamp}.bak"),
            ROUTE_EVERYTHING.to_owned(),
        ),
    ];
    if let Some(index) = index {
        files.push(("relay-sync.generations".to_owned(), format!("{index}\n")));
    }
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
    plant_generation(
        &backups,
        "20991231-235959",
        Some("18446744073709551615 20991231-235959 sync"),
        NOBODY,
    );
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

/// A generation relay-sync itself wrote (digests and all) of a state an operator has since
/// cleaned up: `relay_domains` held `static:OK` and the transport file a `*` route. Rolling
/// back to it without `--force` is refused (exit 4, nothing changed), naming the token and the
/// line; `--dry-run` lists them; `--force` restores it. A root-owned generation the index has
/// no digests for needs `--force` too.
#[test]
fn a_generation_that_relays_everything_needs_force() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let clean_relay = gw.relay_domains();
    let clean_transport = gw.transport();
    let first = relay_postfix::list_backups(&gw.backup_dir()).unwrap()[0]
        .stamp
        .clone();

    // The open relay, by hand; a rollback saves it as a generation of its own.
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &[
                "-e",
                &format!("relay_domains = {OPEN_RELAY}, {clean_relay}"),
            ],
        )
        .unwrap();
    fs::write(
        gw.transport_path(),
        format!("{ROUTE_EVERYTHING}{clean_transport}"),
    )
    .unwrap();
    let run = gw.run(&["rollback", "--to", &first]);
    assert_eq!(run.code, 0, "{run:?}\n{}", gw.log());
    let open = relay_postfix::list_backups(&gw.backup_dir())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(open.origin, relay_postfix::Origin::Rollback);
    assert!(!open.digests.is_empty());
    gw.sync_expecting(0);
    assert!(rcpt_settled(smtp, UNRELATED, "554").starts_with("554"));
    let (relay_domains, transport) = (gw.relay_domains(), gw.transport());

    let token = r#"relay_domains token "static:OK": a static: table matches every domain"#;
    let line = r#"transport line "* smtp:[127.0.0.2]:2525" outside the managed block routes every recipient (`*`)"#;
    let refused = gw.run(&["rollback", "--to", &open.stamp]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "backup {} holds what a sync never writes, so rolling back to it needs --force",
            open.stamp
        )) && refused.stderr.contains(token)
            && refused.stderr.contains(line),
        "{refused:?}"
    );
    assert_eq!(
        (gw.relay_domains(), gw.transport()),
        (relay_domains.clone(), transport.clone())
    );
    assert!(rcpt_settled(smtp, UNRELATED, "554").starts_with("554"));

    let dry = gw.run(&["rollback", "--to", &open.stamp, "--dry-run"]);
    assert_eq!(dry.code, 4, "{dry:?}");
    assert!(
        dry.stdout.contains("needs --force:")
            && dry.stdout.contains(token)
            && dry.stdout.contains(line),
        "{dry:?}"
    );
    let forced_dry = gw.run(&["rollback", "--to", &open.stamp, "--dry-run", "--force"]);
    assert_eq!(forced_dry.code, 0, "{forced_dry:?}");
    assert_eq!(
        (gw.relay_domains(), gw.transport()),
        (relay_domains, transport)
    );

    // Root's own generation that the index has no digests for: relay-sync cannot vouch for it.
    let stamp = "20200101-000000";
    plant_generation(&gw.backup_dir(), stamp, None, 0);
    let unvouched = gw.run(&["rollback", "--to", stamp]);
    assert_eq!(unvouched.code, 4, "{unvouched:?}");
    assert!(
        unvouched
            .stderr
            .contains("relay-sync cannot vouch for it: it is not in the backup index"),
        "{unvouched:?}"
    );

    // Forced, the open relay is back: what the review stood in front of.
    let forced = gw.run(&["rollback", "--to", &open.stamp, "--force"]);
    assert_eq!(forced.code, 0, "{forced:?}\n{}", gw.log());
    assert!(
        gw.relay_domains().starts_with(OPEN_RELAY),
        "{}",
        gw.relay_domains()
    );
    assert!(
        gw.log().contains("with --force, although: "),
        "{}",
        gw.log()
    );
    assert!(rcpt_settled(smtp, UNRELATED, "250").starts_with("250"));
}
