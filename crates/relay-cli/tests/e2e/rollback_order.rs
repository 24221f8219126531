//! `relay-sync rollback` keeps SPEC §2's invariant, like a sync: at no instant is a relayed
//! domain without a route in the transport map (SPEC §11: rollback is planned by relay-core).
//!
//! The rollback runs with a recording `POSTFIX_COMMAND_DIR`: before handing each call of
//! `postconf`, `postmap` or `postfix` to the real command, the stand-in writes down what Postfix
//! works from at that instant: `relay_domains` in main.cf, the keys of the built transport map
//! (`postmap -s`), and in map mode the keys of the relay-domains table. Every change a rollback
//! makes lands between two calls (a map database is renamed into place after its `postmap`), so
//! the recorded instants plus the state at the end are every state Postfix could see.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use relay_core::{RelayDomains, RelayDomainsTable};

use crate::gateway::{files_starting_with, Gateway};

/// What Postfix could see at one instant.
#[derive(Debug, Clone)]
struct Instant {
    /// The call about to run (`postconf -e …`), or `end` for the state after the rollback.
    call: String,
    /// `relay_domains` as main.cf has it.
    relay_domains: String,
    /// Keys of the built transport map.
    routes: BTreeSet<String>,
    /// Keys of the built relay-domains table (map mode; empty when it has no database).
    table: BTreeSet<String>,
}

/// The gateway's table source, whose database map mode reads.
fn table_path(gw: &Gateway) -> PathBuf {
    gw.postfix.config_dir().join("relay_domains")
}

/// A `POSTFIX_COMMAND_DIR` whose three commands record an [`Instant`] in `record` before they
/// run the real command.
fn recording_commands(gw: &Gateway, record: &std::path::Path) -> PathBuf {
    let conf = gw.postfix.config_dir().display().to_string();
    let transport = gw.transport_path().display().to_string();
    let table = table_path(gw).display().to_string();
    let record = record.display().to_string();
    let body = |program: &str| {
        format!(
            r#"snap=$(mktemp)
{{
  echo "@@ {program} $*"
  echo "rd $(/usr/sbin/postconf -c '{conf}' -h relay_domains)"
  /usr/sbin/postmap -c '{conf}' -s 'hash:{transport}' 2>/dev/null | awk '{{print "route " $1}}'
  if [ -e '{table}.db' ]; then
    /usr/sbin/postmap -c '{conf}' -s 'hash:{table}' 2>/dev/null | awk '{{print "table " $1}}'
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

/// The instants `record` holds, in order.
fn instants(record: &std::path::Path) -> Vec<Instant> {
    let text = fs::read_to_string(record).unwrap();
    let mut out: Vec<Instant> = Vec::new();
    for line in text.lines() {
        if let Some(call) = line.strip_prefix("@@ ") {
            out.push(Instant {
                call: call.to_owned(),
                relay_domains: String::new(),
                routes: BTreeSet::new(),
                table: BTreeSet::new(),
            });
        } else if let Some(value) = line.strip_prefix("rd ") {
            out.last_mut().unwrap().relay_domains = value.to_owned();
        } else if let Some(key) = line.strip_prefix("route ") {
            out.last_mut().unwrap().routes.insert(key.to_owned());
        } else if let Some(key) = line.strip_prefix("table ") {
            out.last_mut().unwrap().table.insert(key.to_owned());
        } else {
            panic!("unexpected line {line:?} in the record");
        }
    }
    out
}

/// The state at the end, recorded the same way (through the real commands).
fn end_instant(gw: &Gateway) -> Instant {
    let keys = |map: PathBuf| -> BTreeSet<String> {
        if !map.with_extension("db").exists() {
            return BTreeSet::new();
        }
        gw.postfix
            .command(
                "/usr/sbin/postmap",
                &["-s", &format!("hash:{}", map.display())],
            )
            .unwrap()
            .lines()
            .filter_map(|line| line.split_ascii_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    Instant {
        call: "end".into(),
        relay_domains: gw.relay_domains(),
        routes: keys(gw.transport_path()),
        table: keys(table_path(gw)),
    }
}

/// Domains relayed by `relay_domains` as `instant` has it: its plain domains, and the table's
/// keys when it names the table.
fn relayed(gw: &Gateway, relay_domains: &str, instant: &Instant) -> BTreeSet<String> {
    let parsed = RelayDomains::parse(relay_domains).unwrap();
    let mut out: BTreeSet<String> = parsed.domains.iter().map(|d| d.to_string()).collect();
    let path = table_path(gw).display().to_string();
    let table = RelayDomainsTable::new("hash", &path, None);
    if table.is_named_in(&parsed) {
        out.extend(instant.table.iter().cloned());
    }
    out
}

/// Asserts that at every instant, every domain Postfix may relay has a route. Between
/// `postconf -e` and the next `postfix reload` both values may be in force (a new smtpd reads
/// main.cf when it starts), so both count.
fn assert_every_relayed_domain_routed(gw: &Gateway, instants: &[Instant], log: &str) {
    let mut in_force = instants[0].relay_domains.clone();
    for (i, instant) in instants.iter().enumerate() {
        let mut relay = relayed(gw, &instant.relay_domains, instant);
        relay.extend(relayed(gw, &in_force, instant));
        let unrouted: Vec<&String> = relay
            .iter()
            .filter(|d| !instant.routes.contains(*d))
            .collect();
        assert!(
            unrouted.is_empty(),
            "before call {i} ({}): relayed without a route: {unrouted:?}\nrelay_domains \
             {:?} (in force {in_force:?}), routes {:?}\n--- log\n{log}",
            instant.call,
            instant.relay_domains,
            instant.routes,
        );
        if instant.call.starts_with("postfix ") && instant.call.contains("reload") {
            in_force = instant.relay_domains.clone();
        }
    }
}

/// The stamp of the newest generation.
fn newest_stamp(gw: &Gateway) -> String {
    files_starting_with(&gw.backup_dir(), "transport.")
        .into_iter()
        .max()
        .unwrap()
        .trim_start_matches("transport.")
        .trim_end_matches(".bak")
        .to_owned()
}

/// Syncs, enables `fresh.example` and syncs again, then rolls back to the generation without
/// it through the recording commands; checks every recorded instant.
fn rollback_keeps_routes(gw: &Gateway) {
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_expecting(0);
    // The second sync's backup is the state the first one left: without fresh.example.
    let without_fresh = newest_stamp(gw);
    assert!(gw.lookup("fresh.example").is_some(), "{}", gw.log());

    let record = gw.dir.path().join("record");
    let commands = recording_commands(gw, &record);
    let run = gw.run_env(
        &["rollback", "--to", &without_fresh],
        &[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())],
    );
    let log = gw.log();
    assert_eq!(run.code, 0, "{run:?}\n{log}");
    assert_eq!(gw.lookup("fresh.example"), None, "{log}");

    let mut recorded = instants(&record);
    assert!(
        recorded.iter().any(|i| i.call.contains(" -e ")),
        "{recorded:#?}"
    );
    recorded.push(end_instant(gw));
    assert_every_relayed_domain_routed(gw, &recorded, &log);
    // The rollback did take fresh.example out of what Postfix relays.
    let end = recorded.last().unwrap();
    assert!(!relayed(gw, &end.relay_domains, end).contains("fresh.example"));
    // And converges: the next sync puts fresh.example back, as the database says.
    gw.sync_expecting(0);
    assert!(gw.lookup("fresh.example").is_some(), "{}", gw.log());
}

/// Inline mode: `relay_domains` lists the domains; a domain leaving keeps its route until
/// `relay_domains` no longer names it.
#[test]
fn rollback_keeps_every_relayed_domain_routed_inline() {
    let gw = Gateway::start("kuma8088.com", "");
    rollback_keeps_routes(&gw);
}

/// Map mode: the domains are in the table, which the rollback restores from the generation's
/// copy before `relay_domains` changes.
#[test]
fn rollback_keeps_every_relayed_domain_routed_in_map_mode() {
    let gw = Gateway::start("$mydestination, kuma8088.com", "RELAY_DOMAINS_MODE=map");
    rollback_keeps_routes(&gw);
}
