//! Recipient validation (issue 14, `RECIPIENTS_QUERY`) against the real MariaDB and Postfix:
//! what a sync writes is what a sender meets at `RCPT TO`, a database outage keeps the last
//! table, hostile rows never reach it, rollback restores it, and turning the feature on or off
//! refuses no address that was accepted before and after, at any instant Postfix could see.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::gateway::Gateway;
use crate::smtp::{rcpt, rcpt_settled};

/// The config line that turns recipient validation on.
const QUERY: &str = "RECIPIENTS_QUERY=SELECT email FROM users WHERE enabled = 1";

/// What Postfix says to an address its relay recipient table does not list.
const UNKNOWN: &str = "Recipient address rejected: User unknown in relay recipient table";

/// A gateway relaying `kuma8088.com` with validation on and the shipped opt-in grant applied.
fn gateway_validating() -> Gateway {
    let gw = Gateway::start("kuma8088.com", QUERY);
    gw.db.grant_recipients().unwrap();
    gw
}

/// The recipients table's source (RECIPIENTS_MAP's default).
fn table_path(gw: &Gateway) -> PathBuf {
    gw.postfix.config_dir().join("relay_recipients")
}

/// `relay_recipient_maps`'s token for our table.
fn table_token(gw: &Gateway) -> String {
    format!("hash:{}", table_path(gw).display())
}

/// Keys of the built recipients table (`postmap -s`), sorted.
fn table_keys(gw: &Gateway) -> BTreeSet<String> {
    gw.postfix
        .command(
            "/usr/sbin/postmap",
            &["-s", &format!("hash:{}", table_path(gw).display())],
        )
        .unwrap()
        .lines()
        .filter_map(|line| line.split_ascii_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The seed's recipients at relayed domains (erin@old.example's domain is disabled, dave is).
const SEED_TABLE: [&str; 4] = [
    "@example.org",
    "alice@example.com",
    "bob@example.com",
    "carol@example.net",
];

#[track_caller]
fn assert_accepted(reply: &str, to: &str, gw: &Gateway) {
    assert!(
        reply.starts_with("250 "),
        "RCPT TO:<{to}>: {reply}\n--- log\n{}",
        gw.log()
    );
}

#[track_caller]
fn assert_unknown(reply: &str, to: &str, gw: &Gateway) {
    assert!(
        reply.starts_with("550 5.1.1") && reply.contains(UNKNOWN),
        "RCPT TO:<{to}>: {reply}\n--- log\n{}",
        gw.log()
    );
}

/// Test 1: after a sync, a user at a relayed domain is accepted, an unknown or disabled one
/// refused with 5.1.1, and a catch-all accepts any local part.
#[test]
fn known_users_and_catch_alls_accepted_unknown_and_disabled_refused() {
    let gw = gateway_validating();
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();

    // The first sync added example.com etc.: the first reply may come from the old smtpd.
    let reply = rcpt_settled(smtp, "alice@example.com", "250 ");
    assert_accepted(&reply, "alice@example.com", &gw);
    for to in [
        "bob@example.com",
        "Alice@Example.COM",
        "carol@example.net",
        "anyone@example.org",
        "some.other+tag@example.org",
    ] {
        assert_accepted(&rcpt(smtp, to), to, &gw);
    }
    for to in [
        "nobody@example.com",
        "alice@example.net",
        "dave@example.com",
        "anyone@shop.example.jp",
    ] {
        assert_unknown(&rcpt(smtp, to), to, &gw);
    }
    // erin's domain is not relayed: no validation reaches her, the relay check refuses.
    let reply = rcpt(smtp, "erin@old.example");
    assert!(reply.starts_with("554 5.7.1"), "{reply}");

    // What Postfix was given: the table with its header, and the parameter naming it.
    let text = fs::read_to_string(table_path(&gw)).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("# relay-sync: recipients table"),
        "{text}"
    );
    let keys: BTreeSet<String> = lines
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.strip_suffix(" OK").unwrap_or(l).to_owned())
        .collect();
    assert_eq!(keys, set(&SEED_TABLE), "{text}");
    assert_eq!(table_keys(&gw), set(&SEED_TABLE));
    assert_eq!(
        gw.postfix.postconf("relay_recipient_maps").unwrap(),
        table_token(&gw)
    );
    let log = gw.log();
    assert!(
        log.contains("Recipient summary: 4 recipients accepted"),
        "{log}"
    );
    assert!(
        log.contains("WARN") && log.contains("Relayed domains with no recipient and no catch-all"),
        "{log}"
    );
}

/// Test 2: a user added in the panel is accepted after the next sync; a deleted or disabled
/// one is refused after it.
#[test]
fn users_added_and_removed_in_the_panel_follow_the_next_sync() {
    let gw = gateway_validating();
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "frank@example.net", "550 ");
    assert_unknown(&reply, "frank@example.net", &gw);

    gw.sql(
        "INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('Frank@Example.NET', 1)",
    );
    gw.sync_expecting(0);
    let reply = rcpt_settled(smtp, "frank@example.net", "250 ");
    assert_accepted(&reply, "frank@example.net", &gw);
    assert!(table_keys(&gw).contains("frank@example.net"));

    gw.sql("DELETE FROM mailserver_usermgmt.users WHERE email = 'bob@example.com'");
    gw.sql("UPDATE mailserver_usermgmt.users SET enabled = 0 WHERE email = 'carol@example.net'");
    gw.sync_expecting(0);
    for to in ["bob@example.com", "carol@example.net"] {
        let reply = rcpt_settled(smtp, to, "550 ");
        assert_unknown(&reply, to, &gw);
    }
    // The others stay.
    for to in ["alice@example.com", "frank@example.net", "x@example.org"] {
        assert_accepted(&rcpt(smtp, to), to, &gw);
    }
    assert_eq!(
        table_keys(&gw),
        set(&["@example.org", "alice@example.com", "frank@example.net"])
    );
}

/// Test 3: with the database down the sync exits 3 and the gateway keeps the last table:
/// known users accepted (no 451), unknown ones refused.
#[test]
fn database_down_keeps_the_last_table() {
    let mut gw = gateway_validating();
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "alice@example.com", "250 ");
    assert_accepted(&reply, "alice@example.com", &gw);
    let table_before = fs::read(table_path(&gw)).unwrap();
    let main_cf_before = gw.main_cf();

    gw.db.stop().unwrap();
    gw.sync_expecting(3);
    assert!(
        gw.log().contains("ERROR: Keeping current configuration"),
        "{}",
        gw.log()
    );
    assert_eq!(fs::read(table_path(&gw)).unwrap(), table_before);
    assert_eq!(gw.main_cf(), main_cf_before);
    assert_eq!(table_keys(&gw), set(&SEED_TABLE));
    for to in ["alice@example.com", "carol@example.net", "any@example.org"] {
        assert_accepted(&rcpt(smtp, to), to, &gw);
    }
    for to in ["nobody@example.com", "dave@example.com"] {
        assert_unknown(&rcpt(smtp, to), to, &gw);
    }

    gw.db.start_again().unwrap();
    gw.sql(
        "INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('frank@example.net', 1)",
    );
    gw.sync_expecting(0);
    let reply = rcpt_settled(smtp, "frank@example.net", "250 ");
    assert_accepted(&reply, "frank@example.net", &gw);
}
