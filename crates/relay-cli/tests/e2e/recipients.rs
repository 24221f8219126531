//! Recipient validation (issue 14, `RECIPIENTS_QUERY`) against the real MariaDB and Postfix:
//! what a sync writes is what a sender meets at `RCPT TO`, a database outage keeps the last
//! table, hostile rows never reach it, rollback restores it, and turning the feature on or off
//! refuses no address that was accepted before and after, at any instant Postfix could see.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use relay_core::RelayDomains;

use crate::gateway::{files_starting_with, Gateway};
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
    // A change of the table alone is picked up without a reload, and leaves no reload owed:
    // the next run has nothing to do.
    let log = gw.log();
    let last_run = &log[log.rfind("Relay Domains Sync Started").unwrap()..];
    assert!(!last_run.contains("Postfix reloaded"), "{last_run}");
    gw.sync_expecting(0);
    let log = gw.log();
    let next_run = &log[log.rfind("Relay Domains Sync Started").unwrap()..];
    assert!(next_run.contains("No changes detected"), "{next_run}");
    assert!(!next_run.contains("earlier run was stopped"), "{next_run}");
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

/// Recipient-side files relay-sync may leave in `dir`.
fn recipient_files(dir: &std::path::Path) -> Vec<String> {
    let mut names = files_starting_with(dir, "relay_recipient");
    names.extend(files_starting_with(dir, ".relay_recipient"));
    names
}

/// main.cf without its `relay_domains` line, which a sync is expected to change.
fn main_cf_but_relay_domains(gw: &Gateway) -> String {
    gw.main_cf()
        .lines()
        .filter(|l| !l.starts_with("relay_domains "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Test 5: with RECIPIENTS_QUERY unset (the default), a sync leaves `relay_recipient_maps`
/// alone, whether it is unset or an operator's own, and writes no recipient file or backup.
#[test]
fn feature_off_leaves_relay_recipient_maps_and_writes_no_table() {
    let gw = Gateway::start("kuma8088.com", "");
    let conf = gw.postfix.config_dir();
    let before = main_cf_but_relay_domains(&gw);
    assert!(!before.contains("relay_recipient_maps"), "{before}");

    let dry = gw.run(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(!dry.stdout.contains("recipient"), "{dry:?}");
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("example.com"), "{}", gw.log());
    assert_eq!(main_cf_but_relay_domains(&gw), before);
    assert_eq!(gw.postfix.postconf("relay_recipient_maps").unwrap(), "");
    assert_eq!(recipient_files(&conf), Vec::<String>::new());
    assert_eq!(recipient_files(&gw.backup_dir()), Vec::<String>::new());
    assert!(!gw.log().contains("Recipient summary"), "{}", gw.log());
    // With no validation, any local part at a relayed domain is accepted.
    let reply = rcpt_settled(gw.postfix.smtp_port(), "nobody@example.com", "250 ");
    assert_accepted(&reply, "nobody@example.com", &gw);

    // An operator's own table (no relay-sync header) stays as it is through a changing sync.
    let value = operator_table(&gw);
    let before = main_cf_but_relay_domains(&gw);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("fresh.example"), "{}", gw.log());
    assert_eq!(main_cf_but_relay_domains(&gw), before);
    assert_eq!(gw.postfix.postconf("relay_recipient_maps").unwrap(), value);
    assert_eq!(
        fs::read_to_string(conf.join("operator_recipients")).unwrap(),
        "ops@example.com OK\n"
    );
    assert_eq!(recipient_files(&conf), Vec::<String>::new());
    assert_eq!(recipient_files(&gw.backup_dir()), Vec::<String>::new());
}

/// Test 6: rows that are not one address (a second field, a second `@`, a line break, a tab,
/// a leading `#`) are reported in the log and never reach the table; the rest still does.
#[test]
fn hostile_user_rows_are_logged_and_never_reach_the_table() {
    let gw = gateway_validating();
    gw.sql(
        "INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES \
         ('evil@example.com OK', 1), \
         ('a@b@example.com', 1), \
         (CONCAT('line@example.com', CHAR(10), 'injected@example.com OK'), 1), \
         (CONCAT('tab@example.com', CHAR(9), 'REJECT'), 1), \
         ('#comment@example.com', 1), \
         ('Frank@Example.NET', 1)",
    );
    gw.sync_expecting(0);
    let log = gw.log();
    let skipped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Invalid recipient skipped: "))
        .collect();
    assert_eq!(skipped.len(), 5, "{log}");
    // Each row quoted and escaped as it came from the database.
    for raw in [
        r#""evil@example.com OK""#,
        r#""a@b@example.com""#,
        r#""line@example.com\ninjected@example.com OK""#,
        r#""tab@example.com\tREJECT""#,
        r##""#comment@example.com""##,
    ] {
        assert!(
            skipped.iter().any(|l| l.contains(raw)),
            "{raw} not reported:\n{log}"
        );
    }
    assert!(log.contains("5 invalid rows skipped"), "{log}");
    // The log stays one line per entry: the row's line break did not start a line of its own.
    assert!(!log.lines().any(|l| l.starts_with("injected@")), "{log}");

    let text = fs::read_to_string(table_path(&gw)).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        assert!(
            fields.len() == 2 && fields[1] == "OK" && fields[0].matches('@').count() == 1,
            "line {line:?} in\n{text}"
        );
    }
    for bad in ["evil", "injected", "a@b@", "tab@", "REJECT", "comment@"] {
        assert!(!text.contains(bad), "{bad} in\n{text}");
    }
    let mut want = set(&SEED_TABLE);
    want.insert("frank@example.net".into());
    assert_eq!(table_keys(&gw), want, "{text}");

    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "frank@example.net", "250 ");
    assert_accepted(&reply, "frank@example.net", &gw);
    for to in [
        "evil@example.com",
        "injected@example.com",
        "line@example.com",
        "tab@example.com",
    ] {
        assert_unknown(&rcpt(smtp, to), to, &gw);
    }
}

/// `recipient_count` from `status --json`.
fn status_recipient_count(gw: &Gateway) -> serde_json::Value {
    let status = gw.run(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let value: serde_json::Value = crate::json::document(&status.stdout);
    value["recipient_count"].clone()
}

/// Test 7: `relay-sync rollback` after a sync that added a user restores the table before it
/// (the user is refused again), with its backups; `status --json` counts the table.
#[test]
fn rollback_restores_the_previous_recipients_table() {
    let gw = gateway_validating();
    gw.sync_expecting(0);
    assert_eq!(status_recipient_count(&gw), 4);
    let table_before = fs::read_to_string(table_path(&gw)).unwrap();

    gw.sql(
        "INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('frank@example.net', 1)",
    );
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "frank@example.net", "250 ");
    assert_accepted(&reply, "frank@example.net", &gw);
    assert_eq!(status_recipient_count(&gw), 5);
    let backups = files_starting_with(&gw.backup_dir(), "relay_recipient");
    assert!(
        backups.iter().any(|n| n.starts_with("relay_recipients."))
            && backups
                .iter()
                .any(|n| n.starts_with("relay_recipient_maps.")),
        "{backups:?}"
    );

    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", gw.log());
    assert_eq!(fs::read_to_string(table_path(&gw)).unwrap(), table_before);
    assert_eq!(table_keys(&gw), set(&SEED_TABLE));
    assert_eq!(
        gw.postfix.postconf("relay_recipient_maps").unwrap(),
        table_token(&gw)
    );
    let reply = rcpt_settled(smtp, "frank@example.net", "550 ");
    assert_unknown(&reply, "frank@example.net", &gw);
    assert_accepted(&rcpt(smtp, "alice@example.com"), "alice@example.com", &gw);
    assert_eq!(status_recipient_count(&gw), 4);
}

/// What Postfix could see at one instant of a sync: before a Postfix command, or at the end.
#[derive(Debug, Clone)]
struct Seen {
    /// The call about to run, or `end`.
    call: String,
    /// `relay_domains` in main.cf.
    relay_domains: String,
    /// `relay_recipient_maps` in main.cf.
    maps: String,
    /// Keys of the built recipients table; `None` when it has no database.
    table: Option<BTreeSet<String>>,
}

/// A `POSTFIX_COMMAND_DIR` whose commands append a [`Seen`] to `record` before running the
/// real command (as `rollback_order`'s, with `relay_recipient_maps` and our table).
fn recording_commands(gw: &Gateway, record: &std::path::Path) -> PathBuf {
    let conf = gw.postfix.config_dir().display().to_string();
    let table = table_path(gw).display().to_string();
    let record = record.display().to_string();
    let body = |program: &str| {
        format!(
            r#"snap=$(mktemp)
{{
  echo "@@ {program} $*"
  echo "rd $(/usr/sbin/postconf -c '{conf}' -h relay_domains)"
  echo "rrm $(/usr/sbin/postconf -c '{conf}' -h relay_recipient_maps)"
  if [ -e '{table}.db' ]; then
    echo "db"
    /usr/sbin/postmap -c '{conf}' -s 'hash:{table}' 2>/dev/null | awk '{{print "key " $1}}'
  fi
}} > "$snap"
cat "$snap" >> '{record}'
rm -f "$snap"
exec /usr/sbin/{program} "$@""#
        )
    };
    gw.stand_in_commands(
        "recording",
        &[
            ("postconf", &body("postconf")),
            ("postmap", &body("postmap")),
            ("postfix", &body("postfix")),
        ],
    )
}

fn recorded(record: &std::path::Path) -> Vec<Seen> {
    let text = fs::read_to_string(record).unwrap();
    let mut out: Vec<Seen> = Vec::new();
    for line in text.lines() {
        if let Some(call) = line.strip_prefix("@@ ") {
            out.push(Seen {
                call: call.to_owned(),
                relay_domains: String::new(),
                maps: String::new(),
                table: None,
            });
            continue;
        }
        let last = out.last_mut().unwrap();
        if let Some(value) = line.strip_prefix("rd ") {
            value.clone_into(&mut last.relay_domains);
        } else if let Some(value) = line.strip_prefix("rrm ") {
            value.clone_into(&mut last.maps);
        } else if line == "db" {
            last.table = Some(BTreeSet::new());
        } else if let Some(key) = line.strip_prefix("key ") {
            last.table.as_mut().unwrap().insert(key.to_owned());
        } else {
            panic!("unexpected line {line:?} in the record");
        }
    }
    out
}

/// The state now, read the same way through the real commands.
fn seen_now(gw: &Gateway, call: &str) -> Seen {
    Seen {
        call: call.to_owned(),
        relay_domains: gw.relay_domains(),
        maps: gw.postfix.postconf("relay_recipient_maps").unwrap(),
        table: table_path(gw)
            .with_extension("db")
            .exists()
            .then(|| table_keys(gw)),
    }
}

/// Whether Postfix accepts `address` with `relay_domains` and `relay_recipient_maps` as given
/// and our table (whose token is `ours`) as `table` has it: the domain is relayed, and either
/// no recipient table is named or ours lists the address or its `@domain`. A named table
/// without a database fails the lookup (451): not accepted.
fn accepts(
    ours: &str,
    relay_domains: &str,
    maps: &str,
    table: Option<&BTreeSet<String>>,
    address: &str,
) -> bool {
    let domain = address.rsplit_once('@').unwrap().1;
    let relayed = RelayDomains::parse(relay_domains)
        .unwrap()
        .domains
        .iter()
        .any(|d| d.to_string() == domain);
    if !relayed {
        return false;
    }
    let tokens: Vec<&str> = maps
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return true;
    }
    assert!(
        tokens.iter().all(|t| *t == ours),
        "relay_recipient_maps {maps:?} names a table the model does not know"
    );
    table.is_some_and(|keys| keys.contains(address) || keys.contains(&format!("@{domain}")))
}

/// Whether `address` is accepted at instant `i` whichever configuration answers: main.cf as
/// it is, or as it was at the last reload (an smtpd started before it), with the table as it
/// is.
fn accepted_at(ours: &str, seen: &[Seen], i: usize, address: &str) -> bool {
    let now = &seen[i];
    let reloaded = seen[..i]
        .iter()
        .rev()
        .find(|s| s.call.starts_with("postfix ") && s.call.contains("reload"))
        .unwrap_or(&seen[0]);
    let table = now.table.as_ref();
    [&now.relay_domains, &reloaded.relay_domains]
        .iter()
        .all(|rd| {
            [&now.maps, &reloaded.maps]
                .iter()
                .all(|maps| accepts(ours, rd, maps, table, address))
        })
}

/// Addresses worth asking about: the seed's users and the tests' own, unknown ones at every
/// domain in play, and one under each catch-all.
fn addresses() -> Vec<String> {
    let mut out: Vec<String> = [
        "alice@example.com",
        "bob@example.com",
        "carol@example.net",
        "dave@example.com",
        "erin@old.example",
        "anyone@example.org",
        "nina@new.example",
        "olga@example.com",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for domain in [
        "kuma8088.com",
        "example.com",
        "example.net",
        "example.org",
        "shop.example.jp",
        "old.example",
        "new.example",
    ] {
        out.push(format!("unknown@{domain}"));
    }
    out
}

/// Checks the instants `seen` of one run (the first before it, the last after it): an address
/// Postfix accepts before and after is accepted at every instant between, and an address
/// accepted at the end, once accepted, stays so.
fn assert_no_accepted_address_refused(name: &str, ours: &str, seen: &[Seen], log: &str) {
    let last = seen.len() - 1;
    for address in addresses() {
        let before = accepted_at(ours, seen, 0, &address);
        let after = accepted_at(ours, seen, last, &address);
        let mut was = false;
        for i in 0..seen.len() {
            let now = accepted_at(ours, seen, i, &address);
            assert!(
                !(before && after) || now,
                "{name}: {address} accepted before and after, refused before call {i} ({})\n\
                 {:#?}\n--- log\n{log}",
                seen[i].call,
                &seen[..=i]
            );
            assert!(
                !(after && was) || now,
                "{name}: {address} accepted at the end and earlier, refused again before call \
                 {i} ({})\n{:#?}\n--- log\n{log}",
                seen[i].call,
                &seen[..=i]
            );
            was |= now;
        }
    }
}

/// Runs a sync through the recording commands, checks every instant with
/// [`assert_no_accepted_address_refused`], and returns them.
fn sync_recorded(gw: &Gateway, name: &str) -> Vec<Seen> {
    let record = gw.dir.path().join(name);
    let commands = recording_commands(gw, &record);
    let start = seen_now(gw, "start");
    let run = gw.run_env(&[], &[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())]);
    let log = gw.log();
    assert_eq!(run.code, 0, "{run:?}\n{log}");
    let mut seen = vec![start];
    seen.extend(recorded(&record));
    seen.push(seen_now(gw, "end"));
    assert!(seen.len() > 3, "{seen:#?}");
    assert_no_accepted_address_refused(name, &table_token(gw), &seen, &log);
    seen
}

/// The model behind test 4 can fail: naming the table before its database exists, or taking
/// a user out of the table before its domain leaves `relay_domains`, is caught.
#[test]
fn the_acceptance_model_catches_a_wrong_order() {
    let ours = "hash:/etc/postfix/relay_recipients";
    let at = |call: &str, rd: &str, maps: &str, keys: Option<&[&str]>| Seen {
        call: call.to_owned(),
        relay_domains: rd.to_owned(),
        maps: maps.to_owned(),
        table: keys.map(set),
    };
    let keys: &[&str] = &["alice@example.com"];
    // Turning on with the parameter set before the table is built: alice is refused (451).
    let wrong = [
        at("start", "example.com", "", None),
        at("postconf -e relay_recipient_maps", "example.com", "", None),
        at("postmap", "example.com", ours, None),
        at("end", "example.com", ours, Some(keys)),
    ];
    let caught = std::panic::catch_unwind(|| {
        assert_no_accepted_address_refused("wrong", ours, &wrong, "");
    });
    assert!(
        caught.is_err(),
        "a table named before it is built went unnoticed"
    );
    // The right order passes.
    let right = [
        at("start", "example.com", "", None),
        at("postmap", "example.com", "", None),
        at(
            "postconf -e relay_recipient_maps",
            "example.com",
            "",
            Some(keys),
        ),
        at("postfix reload", "example.com", ours, Some(keys)),
        at("end", "example.com", ours, Some(keys)),
    ];
    assert_no_accepted_address_refused("right", ours, &right, "");
    // A table that loses alice for a moment while she stays: caught.
    let both: &[&str] = &["alice@example.com", "carol@example.net"];
    let early = [
        at("start", "example.com, example.net", ours, Some(both)),
        at("postmap", "example.com, example.net", ours, Some(both)),
        at(
            "postconf -e relay_domains",
            "example.com, example.net",
            ours,
            Some(&[]),
        ),
        at("postfix reload", "example.com", ours, Some(&[])),
        at("end", "example.com", ours, Some(keys)),
    ];
    let caught = std::panic::catch_unwind(|| {
        assert_no_accepted_address_refused("early", ours, &early, "");
    });
    assert!(
        caught.is_err(),
        "a staying user refused meanwhile went unnoticed"
    );
}

/// Test 4: turning validation on (in the same run as a domain is added) and off again refuses,
/// at no instant Postfix could see, an address accepted before and after; SMTP at the end of
/// each phase shows the phase's answer.
#[test]
fn turning_validation_on_and_off_refuses_no_accepted_address_meanwhile() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.db.grant_recipients().unwrap();
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "unknown@example.com", "250 ");
    assert_accepted(&reply, "unknown@example.com", &gw);

    // On, with new.example and its user arriving in the same run.
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('new.example', 1)");
    gw.sql("INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('nina@new.example', 1)");
    gw.edit_config(|text| format!("{text}{QUERY}\n"));
    let on = sync_recorded(&gw, "record-on");
    assert!(on.iter().any(|s| s.call.contains("reload")), "{on:#?}");
    let end = on.last().unwrap();
    assert_eq!(end.maps, table_token(&gw));
    assert!(end.relay_domains.contains("new.example"), "{end:#?}");
    let mut want = set(&SEED_TABLE);
    want.insert("nina@new.example".into());
    assert_eq!(end.table.as_ref(), Some(&want));
    let reply = rcpt_settled(smtp, "unknown@example.com", "550 ");
    assert_unknown(&reply, "unknown@example.com", &gw);
    let reply = rcpt_settled(smtp, "nina@new.example", "250 ");
    assert_accepted(&reply, "nina@new.example", &gw);
    assert_unknown(
        &rcpt(smtp, "unknown@new.example"),
        "unknown@new.example",
        &gw,
    );
    assert_accepted(&rcpt(smtp, "alice@example.com"), "alice@example.com", &gw);

    // While on, a user leaves, another arrives and a domain (with carol) leaves in one run:
    // the entries leaving go after the reload.
    gw.sql("DELETE FROM mailserver_usermgmt.users WHERE email = 'bob@example.com'");
    gw.sql("INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('olga@example.com', 1)");
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net'");
    let change = sync_recorded(&gw, "record-change");
    let end = change.last().unwrap();
    assert!(!end.relay_domains.contains("example.net"), "{end:#?}");
    assert_eq!(
        end.table.as_ref(),
        Some(&set(&[
            "@example.org",
            "alice@example.com",
            "nina@new.example",
            "olga@example.com"
        ]))
    );
    let reply = rcpt_settled(smtp, "bob@example.com", "550 ");
    assert_unknown(&reply, "bob@example.com", &gw);
    let reply = rcpt_settled(smtp, "olga@example.com", "250 ");
    assert_accepted(&reply, "olga@example.com", &gw);

    // Off again: only our token leaves relay_recipient_maps.
    gw.edit_config(|text| text.replace(&format!("{QUERY}\n"), "RECIPIENTS_QUERY=\n"));
    let off = sync_recorded(&gw, "record-off");
    let end = off.last().unwrap();
    assert_eq!(end.maps, "", "{off:#?}");
    assert!(
        !gw.main_cf().contains("relay_recipients"),
        "{}",
        gw.main_cf()
    );
    for to in ["unknown@example.com", "unknown@new.example"] {
        let reply = rcpt_settled(smtp, to, "250 ");
        assert_accepted(&reply, to, &gw);
    }
    assert_accepted(&rcpt(smtp, "alice@example.com"), "alice@example.com", &gw);
}

/// The recipient guard on a real gateway: an empty result while the table has entries, and
/// most recipients leaving at domains that stay, are refused with exit 4 and change nothing
/// (known users still accepted); `--force` applies the removal once. Along the way, the dry
/// run lists the table's diff and METRICS_FILE counts the table.
#[test]
fn guard_refuses_an_empty_or_mass_removing_result_and_keeps_the_table() {
    let gw = gateway_validating();
    let metrics = gw.dir.path().join("relay-sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    gw.sync_expecting(0);
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("relay_sync_recipients 4\n"), "{text}");
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "alice@example.com", "250 ");
    assert_accepted(&reply, "alice@example.com", &gw);

    gw.sql(
        "INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('frank@example.net', 1)",
    );
    let dry = gw.run(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout
            .contains("recipients added (1): frank@example.net"),
        "{dry:?}"
    );
    gw.sql("DELETE FROM mailserver_usermgmt.users WHERE email = 'frank@example.net'");
    let files = || (fs::read(table_path(&gw)).unwrap(), gw.main_cf());
    let before = files();

    // Every user disabled: an empty result.
    gw.sql("UPDATE mailserver_usermgmt.users SET enabled = 0");
    let run = gw.sync_expecting(4);
    assert!(
        gw.log().contains("RECIPIENTS_QUERY returned no recipient"),
        "{run:?}\n{}",
        gw.log()
    );
    assert!(files() == before, "{}", gw.log());
    assert_accepted(&rcpt(smtp, "alice@example.com"), "alice@example.com", &gw);

    // Three of the four leave at domains that stay: over MAX_REMOVE_PERCENT=50.
    gw.sql("UPDATE mailserver_usermgmt.users SET enabled = 1 WHERE email <> 'dave@example.com'");
    gw.sql(
        "DELETE FROM mailserver_usermgmt.users WHERE email IN \
         ('alice@example.com', 'bob@example.com', 'carol@example.net')",
    );
    let run = gw.sync_expecting(4);
    assert!(
        gw.log().contains("would remove 3 of 4 recipients"),
        "{run:?}\n{}",
        gw.log()
    );
    assert!(files() == before, "{}", gw.log());
    assert_accepted(&rcpt(smtp, "alice@example.com"), "alice@example.com", &gw);

    let forced = gw.run(&["--force"]);
    assert_eq!(forced.code, 0, "{forced:?}\n{}", gw.log());
    assert_eq!(table_keys(&gw), set(&["@example.org"]));
    let reply = rcpt_settled(smtp, "alice@example.com", "550 ");
    assert_unknown(&reply, "alice@example.com", &gw);
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("relay_sync_recipients 1\n"), "{text}");
}

/// `relay_recipient_maps` tokens, in order.
fn tokens(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An operator's own recipient table stays named while validation is on (both tables
/// answer), and turning validation off takes out only relay-sync's token.
#[test]
fn an_operator_recipient_table_is_kept_through_on_and_off() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.db.grant_recipients().unwrap();
    let theirs = operator_table(&gw);

    gw.edit_config(|text| format!("{text}{QUERY}\n"));
    gw.sync_expecting(0);
    let value = gw.postfix.postconf("relay_recipient_maps").unwrap();
    let mut got = tokens(&value);
    got.sort();
    let mut want = vec![theirs.clone(), table_token(&gw)];
    want.sort();
    assert_eq!(got, want, "{value}");
    let smtp = gw.postfix.smtp_port();
    for to in ["ops@example.com", "alice@example.com"] {
        let reply = rcpt_settled(smtp, to, "250 ");
        assert_accepted(&reply, to, &gw);
    }
    assert_unknown(&rcpt(smtp, "nobody@example.com"), "nobody@example.com", &gw);

    gw.edit_config(|text| text.replace(&format!("{QUERY}\n"), ""));
    gw.sync_expecting(0);
    assert_eq!(gw.postfix.postconf("relay_recipient_maps").unwrap(), theirs);
    // The operator's table alone answers again: alice is no longer listed anywhere.
    let reply = rcpt_settled(smtp, "alice@example.com", "550 ");
    assert_unknown(&reply, "alice@example.com", &gw);
    assert_accepted(&rcpt(smtp, "ops@example.com"), "ops@example.com", &gw);
}

/// Map mode and validation together: the domains live in RELAY_DOMAINS_MAP, the addresses in
/// RECIPIENTS_MAP, and Postfix answers from both; a domain added in the panel with a user is
/// accepted for that user and refuses the others after one sync.
#[test]
fn map_mode_and_validation_work_together() {
    let gw = Gateway::start("kuma8088.com", &format!("{QUERY}\nRELAY_DOMAINS_MODE=map"));
    gw.db.grant_recipients().unwrap();
    gw.sync_expecting(0);
    let smtp = gw.postfix.smtp_port();
    let reply = rcpt_settled(smtp, "alice@example.com", "250 ");
    assert_accepted(&reply, "alice@example.com", &gw);
    assert_unknown(&rcpt(smtp, "nobody@example.com"), "nobody@example.com", &gw);
    assert!(gw.relay_domains().contains(":"), "{}", gw.relay_domains());

    gw.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1); \
         INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('Zoe@Fresh.example', 1);",
    );
    gw.sync_expecting(0);
    let reply = rcpt_settled(smtp, "zoe@fresh.example", "250 ");
    assert_accepted(&reply, "zoe@fresh.example", &gw);
    assert_unknown(
        &rcpt(smtp, "nobody@fresh.example"),
        "nobody@fresh.example",
        &gw,
    );
    assert_eq!(
        table_keys(&gw),
        set(&[
            "@example.org",
            "alice@example.com",
            "bob@example.com",
            "carol@example.net",
            "zoe@fresh.example"
        ])
    );
}

/// An operator's own recipient table (`ops@example.com` only, no relay-sync header), built
/// and named alone in `relay_recipient_maps`; returns its token.
fn operator_table(gw: &Gateway) -> String {
    let operator = gw.postfix.config_dir().join("operator_recipients");
    fs::write(&operator, "ops@example.com OK\n").unwrap();
    let token = format!("hash:{}", operator.display());
    gw.postfix.command("/usr/sbin/postmap", &[&token]).unwrap();
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &["-e", &format!("relay_recipient_maps = {token}")],
        )
        .unwrap();
    token
}
