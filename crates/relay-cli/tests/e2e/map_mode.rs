//! Map mode (`RELAY_DOMAINS_MODE=map`, issue "Scale and speed"): `relay_domains` names a table
//! relay-sync keeps, for each map type Debian ships (hash; lmdb and cdb with postfix-lmdb and
//! postfix-cdb), switching modes both ways, and inline mode's size limit.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use crate::gateway::{files_starting_with, Gateway, BROKEN_POSTCONF_SAYS};
use crate::smtp::{rcpt, rcpt_settled};

const SEEDED: &str = "example.com, example.net, example.org, kuma8088.com, shop.example.jp";

fn table_path(gw: &Gateway) -> PathBuf {
    gw.postfix.config_dir().join("relay_domains")
}

/// `postmap -q KEY TYPE:PATH` through the real postmap.
fn query(gw: &Gateway, key: &str, map: &str) -> Option<String> {
    let out = Command::new("/usr/sbin/postmap")
        .arg("-c")
        .arg(gw.postfix.config_dir())
        .args(["-q", key, map])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn mtime(path: &std::path::Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// A gateway in map mode with `map_type`; Postfix's `transport_maps` uses the same type.
fn map_gateway(map_type: &str) -> Gateway {
    let gw = Gateway::start(
        "$mydestination, kuma8088.com, old.example",
        &format!("RELAY_DOMAINS_MODE=map\nMAP_TYPE={map_type}"),
    );
    let transport = format!("{map_type}:{}", gw.transport_path().display());
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &["-e", &format!("transport_maps = {transport}")],
        )
        .unwrap();
    gw
}

fn relays_through_the_table(map_type: &str, suffix: &str) {
    let gw = map_gateway(map_type);
    let table = format!("{map_type}:{}", table_path(&gw).display());
    let transport = format!("{map_type}:{}", gw.transport_path().display());
    let smtp = gw.postfix.smtp_port();

    gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), format!("$mydestination, {table}"));
    let source = fs::read_to_string(table_path(&gw)).unwrap();
    for domain in SEEDED.split(", ") {
        assert!(source.contains(&format!("\n{domain} OK\n")), "{source}");
        assert_eq!(
            query(&gw, domain, &table).as_deref(),
            Some("OK"),
            "{domain}"
        );
        assert_eq!(
            query(&gw, domain, &transport).as_deref(),
            Some("smtp:[127.0.0.1]:2525"),
            "{domain}"
        );
    }
    assert_eq!(query(&gw, "old.example", &table), None);
    let reply = rcpt_settled(smtp, "info@example.org", "250 ");
    assert!(reply.starts_with("250 "), "{reply}");
    let reply = rcpt_settled(smtp, "info@old.example", "554 5.7.1");
    assert!(reply.starts_with("554 5.7.1"), "{reply}");

    // No change: nothing written.
    let database = gw
        .postfix
        .config_dir()
        .join(format!("relay_domains.{suffix}"));
    let main_cf = gw.postfix.config_dir().join("main.cf");
    let before = (mtime(&main_cf), mtime(&database), mtime(&table_path(&gw)));
    gw.sync_expecting(0);
    assert!(gw.log().contains("No changes detected, skipping update"));
    assert_eq!(
        before,
        (mtime(&main_cf), mtime(&database), mtime(&table_path(&gw)))
    );

    // One domain more: the table changes, main.cf does not.
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_expecting(0);
    assert_eq!(mtime(&main_cf), before.0, "main.cf was rewritten");
    assert_eq!(query(&gw, "fresh.example", &table).as_deref(), Some("OK"));
    let reply = rcpt_settled(smtp, "info@fresh.example", "250 ");
    assert!(reply.starts_with("250 "), "{reply}");
    assert_eq!(
        files_starting_with(&gw.backup_dir(), "relay_domains_map.").len(),
        1
    );
    // No temporary file is left beside the table.
    let leftovers = files_starting_with(gw.postfix.config_dir().as_path(), ".relay_domains");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn map_mode_relays_through_a_hash_table() {
    relays_through_the_table("hash", "db");
}

#[test]
fn map_mode_relays_through_an_lmdb_table() {
    relays_through_the_table("lmdb", "lmdb");
}

#[test]
fn map_mode_relays_through_a_cdb_table() {
    relays_through_the_table("cdb", "cdb");
}

/// Switching inline → map → inline is an ordinary, backed-up run that adds and removes nothing;
/// mail is accepted throughout.
#[test]
fn switching_modes_both_ways_is_a_backed_up_change() {
    let gw = Gateway::start("$mydestination, kuma8088.com", "");
    let smtp = gw.postfix.smtp_port();
    gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), format!("$mydestination, {SEEDED}"));

    let to_map = gw.sync_env_expecting(&[("RELAY_DOMAINS_MODE", "map")], 0);
    let table = format!("hash:{}", table_path(&gw).display());
    assert_eq!(
        gw.relay_domains(),
        format!("$mydestination, {table}"),
        "{to_map:?}"
    );
    assert!(
        gw.log().contains("Domain changes detected: +0, -0"),
        "{}",
        gw.log()
    );
    assert_eq!(
        files_starting_with(&gw.backup_dir(), "relay_domains.").len(),
        2
    );
    let reply = rcpt(smtp, "info@shop.example.jp");
    assert!(reply.starts_with("250 "), "{reply}");

    gw.sync_env_expecting(&[("RELAY_DOMAINS_MODE", "inline")], 0);
    assert_eq!(gw.relay_domains(), format!("$mydestination, {SEEDED}"));
    assert_eq!(
        files_starting_with(&gw.backup_dir(), "relay_domains_map.").len(),
        1
    );
    let reply = rcpt(smtp, "info@shop.example.jp");
    assert!(reply.starts_with("250 "), "{reply}");
    // Converged in inline mode again.
    gw.sync_expecting(0);
    assert!(gw.log().ends_with_no_change());
}

/// `relay-sync rollback` in map mode puts the table back (its domains are what it relays), not
/// only `relay_domains` and the transport file; the state it replaced, table included, is the
/// newest generation, so the rollback can be undone.
#[test]
fn rollback_in_map_mode_restores_the_table() {
    let gw = map_gateway("hash");
    let table = format!("hash:{}", table_path(&gw).display());
    let smtp = gw.postfix.smtp_port();
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_expecting(0);
    assert_eq!(query(&gw, "fresh.example", &table).as_deref(), Some("OK"));
    let synced_table = fs::read_to_string(table_path(&gw)).unwrap();

    // The newest generation holds the table as it was before fresh.example: five domains.
    let listed = gw.run(&["backups"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let newest = listed.stdout.lines().last().unwrap();
    assert!(
        newest.contains(", 5 in its table; relay_domains + transport + relay_domains_map"),
        "{listed:?}"
    );

    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", gw.log());
    assert_eq!(gw.relay_domains(), format!("$mydestination, {table}"));
    assert_eq!(query(&gw, "fresh.example", &table), None);
    assert_eq!(query(&gw, "example.org", &table).as_deref(), Some("OK"));
    assert!(
        gw.log().contains("INFO: Restored relay domains table "),
        "{}",
        gw.log()
    );
    let reply = rcpt_settled(smtp, "info@fresh.example", "554 ");
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    let reply = rcpt(smtp, "info@example.org");
    assert!(reply.starts_with("250 "), "{reply}");

    // Undo: the table with fresh.example comes back from the rollback's own backup.
    let undo = gw.run(&["rollback"]);
    assert_eq!(undo.code, 0, "{undo:?}\n{}", gw.log());
    assert_eq!(fs::read_to_string(table_path(&gw)).unwrap(), synced_table);
    assert_eq!(query(&gw, "fresh.example", &table).as_deref(), Some("OK"));
    let reply = rcpt_settled(smtp, "info@fresh.example", "250 ");
    assert!(reply.starts_with("250 "), "{reply}");
    gw.sync_expecting(0);
    assert!(gw.log().ends_with_no_change(), "{}", gw.log());
}

/// A rollback restores the table only when the generation's `relay_domains` names it: a copy of
/// a table nothing used then is left in the backup, and a generation that names the table but
/// lacks its copy keeps the table with a warning. A step failing half-way says what was
/// restored and how to undo it.
#[test]
fn rollback_restores_a_table_only_where_relay_domains_names_it() {
    let gw = map_gateway("hash");
    let inline = [("RELAY_DOMAINS_MODE", "inline")];
    let smtp = gw.postfix.smtp_port();
    gw.sync_expecting(0);
    // Back to inline: the table stays behind, unused.
    gw.sync_env_expecting(&inline, 0);
    assert_eq!(gw.relay_domains(), format!("$mydestination, {SEEDED}"));
    // To map mode again with one domain more: this generation's relay_domains is the inline
    // list, and the leftover table (without fresh.example) was backed up beside it.
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fresh.example', 1)");
    gw.sync_expecting(0);
    let table = fs::read_to_string(table_path(&gw)).unwrap();
    assert!(table.contains("\nfresh.example OK\n"), "{table}");
    let listed = gw.run(&["backups"]);
    let newest = listed.stdout.lines().last().unwrap();
    assert!(
        newest.contains(
            "5 domain(s) in relay_domains; relay_domains + transport + relay_domains_map"
        ),
        "{listed:?}"
    );

    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", gw.log());
    assert_eq!(gw.relay_domains(), format!("$mydestination, {SEEDED}"));
    assert_eq!(fs::read_to_string(table_path(&gw)).unwrap(), table);
    assert!(
        !gw.log().contains("Restored relay domains table"),
        "{}",
        gw.log()
    );
    let reply = rcpt_settled(smtp, "info@fresh.example", "554 ");
    assert!(reply.starts_with("554 5.7.1"), "{reply}");

    // The newest generation is the state the rollback replaced (map mode, with fresh.example);
    // without its copy of the table, the undo keeps the table and says so.
    let newest = files_starting_with(&gw.backup_dir(), "relay_domains_map.")
        .into_iter()
        .max()
        .unwrap();
    fs::remove_file(gw.backup_dir().join(&newest)).unwrap();
    let undo = gw.run(&["rollback"]);
    assert_eq!(undo.code, 0, "{undo:?}\n{}", gw.log());
    assert!(
        gw.log().contains(&format!(
            "WARN: Backup {} has no copy of the table {} that its relay_domains names; the table is kept as it is now",
            newest.trim_start_matches("relay_domains_map.").trim_end_matches(".bak"),
            table_path(&gw).display()
        )),
        "{}",
        gw.log()
    );
    assert_eq!(fs::read_to_string(table_path(&gw)).unwrap(), table);
    let reply = rcpt_settled(smtp, "info@fresh.example", "250 ");
    assert!(reply.starts_with("250 "), "{reply}");

    // postconf -e fails: the transport file holds the backup's routes beside the current
    // ones already (fresh.example keeps its route while it is relayed), and the message says
    // so, with the command that puts the state before the rollback back.
    let commands = gw.broken_postconf();
    let failed = gw.run_env(
        &["rollback"],
        &[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())],
    );
    assert_ne!(failed.code, 0, "{failed:?}");
    let saved = files_starting_with(&gw.backup_dir(), "transport.")
        .into_iter()
        .max()
        .unwrap();
    let saved = saved
        .trim_start_matches("transport.")
        .trim_end_matches(".bak");
    for part in [
        BROKEN_POSTCONF_SAYS,
        // Back to the state the undo replaced: inline, so the table is not restored.
        &format!(
            "Restored before the failure: transport file {} with the current routes beside \
             the backup's.",
            gw.transport_path().display(),
        ),
        &format!("`relay-sync rollback --to {saved}` puts it back"),
    ] {
        assert!(
            failed.stderr.contains(part),
            "missing {part:?} in {failed:?}"
        );
    }
}

/// Inline mode refuses a value too large for one `postconf -e` argument before touching
/// anything, and names map mode; map mode takes the same domains.
#[test]
fn inline_mode_refuses_thousands_of_domains_and_names_map_mode() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) \
         SELECT CONCAT('d', seq, '.example'), 1 FROM mailserver_usermgmt.seq_1_to_8000",
    );
    let files = gw.files();
    let run = gw.sync_expecting(4);
    assert!(run.stderr.contains("RELAY_DOMAINS_MODE=map"), "{run:?}");
    assert_eq!(
        gw.files(),
        files,
        "inline mode touched a file before refusing"
    );

    gw.sync_env_expecting(&[("RELAY_DOMAINS_MODE", "map")], 0);
    let table = format!("hash:{}", table_path(&gw).display());
    assert_eq!(query(&gw, "d7999.example", &table).as_deref(), Some("OK"));
    assert_eq!(gw.relay_domains(), table);
}

trait LastRun {
    fn ends_with_no_change(&self) -> bool;
}

impl LastRun for String {
    /// Whether the last run in the log found nothing to do.
    fn ends_with_no_change(&self) -> bool {
        self.rsplit("===== Relay Domains Sync Started =====")
            .next()
            .is_some_and(|last| last.contains("No changes detected, skipping update"))
    }
}

/// Issue "Scale and speed" §3, through the binary in both modes: a run that finds nothing to
/// change sends exactly one query (the server's general log shows Connect, Query, Quit for
/// relay-sync's connection), runs no Postfix command that writes, and leaves every file in the
/// Postfix directory and the backup directory as it was.
#[test]
fn a_no_change_run_sends_one_query_and_writes_nothing() {
    let inline = Gateway::start("$mydestination, kuma8088.com", "");
    let map = map_gateway("hash");
    for (mode, gw) in [("inline", &inline), ("map", &map)] {
        let record = gw.dir.path().join("commands.log");
        let rec = record.display();
        let commands = gw.stand_in_commands(
            "recording",
            &[
                (
                    "postconf",
                    &format!("echo \"postconf $*\" >> {rec}\nexec /usr/sbin/postconf \"$@\""),
                ),
                (
                    "postmap",
                    &format!("echo \"postmap $*\" >> {rec}\nexec /usr/sbin/postmap \"$@\""),
                ),
                (
                    "postfix",
                    &format!("echo \"postfix $*\" >> {rec}\nexec /usr/sbin/postfix \"$@\""),
                ),
            ],
        );
        let env = [("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())];
        gw.sync_env_expecting(&env, 0);
        // The first run changed things; from here on nothing differs.
        let before = directory_state(gw);
        fs::remove_file(&record).unwrap();
        gw.db.start_general_log().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));

        gw.sync_env_expecting(&env, 0);
        assert!(gw.log().ends_with_no_change(), "{mode}: {}", gw.log());
        assert_eq!(directory_state(gw), before, "{mode}: a file was written");
        let recorded = fs::read_to_string(&record).unwrap_or_default();
        for line in recorded.lines() {
            assert!(
                line.starts_with("postconf ") && line.contains(" -h "),
                "{mode}: a no-change run ran {line:?}; all:\n{recorded}"
            );
        }

        let log = gw.db.general_log_of("relay_sync").unwrap();
        assert_eq!(
            relay_testbed::command_types(&log),
            ["Connect", "Query", "Quit"],
            "{mode}: general log:\n{log}"
        );
    }
}

/// Every file in the Postfix directory and the backup directory: name, length and mtime.
fn directory_state(gw: &Gateway) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut files = Vec::new();
    for dir in [gw.postfix.config_dir().to_path_buf(), gw.backup_dir()] {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::metadata(&path).unwrap();
            if meta.is_file() {
                files.push((path, meta.len(), meta.modified().unwrap()));
            }
        }
    }
    files.sort();
    files
}
