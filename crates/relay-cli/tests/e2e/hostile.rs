//! Hostile rows from the real database (issue "Reliability" §5), beyond
//! `scenarios::hostile_rows_from_the_database_never_reach_postfix`: every kind of name that must
//! not reach `main.cf` or the transport file, in one result with valid rows. The same property
//! over generated strings is relay-core's `prop_hostile_rows_never_reach_rendered_files`.

use crate::gateway::Gateway;

/// Rows that are not domain names, as SQL expressions, and a fragment that must appear in no
/// Postfix file if the row leaked.
const HOSTILE: &[(&str, &str)] = &[
    ("'two words.example'", "two words"),
    ("'a.example,b.example'", "a.example,b"),
    ("'one.example, two.example'", "one.example"),
    (
        "'evil.example\\n[2026-01-01 00:00:00] INFO: forged line'",
        "forged",
    ),
    (
        "'cr.example\\r[2026-01-01 00:00:00] ERROR: forged too'",
        "cr.example",
    ),
    ("'x.example smtp:[10.0.0.1]:25'", "10.0.0.1"),
    ("'smtp:[10.0.0.2]'", "10.0.0.2"),
    ("'lmtp:unix:private/dovecot'", "dovecot"),
    ("'$mydestination'", "$mydestination,"),
    ("'${myhostname}.example'", "myhostname}"),
    ("'hash:/etc/postfix/evil'", "/etc/postfix/evil"),
    ("'regexp:/tmp/evil.re'", "evil.re"),
    ("'/etc/postfix/relay_file'", "relay_file"),
    ("'tab\\there.example'", "here.example"),
    ("CONCAT('esc', CHAR(27), '[31m.example')", "[31m"),
    ("CONCAT('nul', CHAR(0), '.example')", "nul"),
    ("CONCAT('bell', CHAR(7), '.example')", "bell"),
    (
        "CONCAT(REPEAT('a', 64), '.example')",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.",
    ),
    // 254 characters, labels of 9: too long only as a whole (253 at most; the column holds 255).
    ("CONCAT(REPEAT('abcdefghi.', 25), 'exam')", "abcdefghi"),
    ("''", "\n.\n"),
    ("'-dash.example'", "-dash"),
    ("'double..dot.example'", "double"),
    ("'rtl\u{202e}elpmaxe.com'", "rtl"),
    ("'semi;colon.example'", "colon"),
    ("'quote\"d.example'", "quote"),
];

/// Valid rows in the same result, and what Postfix must get for them.
const VALID: &[(&str, &str)] = &[
    ("'ok1.example'", "ok1.example"),
    ("'  Spaced.Example. '", "spaced.example"),
    ("'bücher.example'", "xn--bcher-kva.example"),
    ("'MÜNCHEN.example'", "xn--mnchen-3ya.example"),
];

#[test]
fn hostile_rows_of_every_kind_never_reach_postfix_or_forge_a_log_line() {
    let gw = Gateway::start("kuma8088.com", "");
    let rows: Vec<String> = HOSTILE
        .iter()
        .chain(VALID)
        .map(|(sql, _)| format!("({sql}, 1)"))
        .collect();
    gw.sql(&format!(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES {}",
        rows.join(", ")
    ));
    gw.sync_expecting(0);

    let mut expected: Vec<&str> = vec![
        "example.com",
        "example.net",
        "example.org",
        "kuma8088.com",
        "shop.example.jp",
    ];
    expected.extend(VALID.iter().map(|(_, name)| *name));
    expected.sort_unstable();
    assert_eq!(gw.relay_domains(), expected.join(", "));
    for (_, name) in VALID {
        assert_eq!(
            gw.lookup(name).as_deref(),
            Some("smtp:[127.0.0.1]:2525"),
            "{name}"
        );
    }

    let main_cf = gw.main_cf();
    let transport = gw.transport();
    for (sql, needle) in HOSTILE {
        assert!(
            !transport.contains(needle),
            "{sql} reached transport:\n{transport}"
        );
        assert!(
            !main_cf.contains(needle),
            "{sql} reached main.cf:\n{main_cf}"
        );
    }
    // Every transport line is a comment or `name next-hop`, every relay_domains token a name.
    for line in transport.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 2, "{line:?}");
        assert!(expected.contains(&fields[0]), "{line:?}");
    }

    let log = gw.log();
    assert_eq!(
        log.matches("ERROR: Invalid domain skipped").count(),
        HOSTILE.len(),
        "{log}"
    );
    assert!(
        log.contains(&format!("{} invalid rows skipped", HOSTILE.len())),
        "{log}"
    );
    for line in log.lines() {
        assert!(
            line.len() > 22 && line.starts_with("[20") && &line[20..22] == "] ",
            "malformed or forged log line {line:?}"
        );
        assert!(!line.starts_with("[2026-01-01"), "forged log line {line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw control character in log line {line:?}"
        );
    }
    // And it converges: the same rows again are no change.
    gw.sync_expecting(0);
    assert!(gw.log().contains("No changes detected"), "{}", gw.log());
}

/// One bad row in the admin panel is mailed once, not every five minutes: under cron (stderr
/// not a terminal) it reaches stderr as an ERROR only in the run where the set of rejected
/// rows changes, and is a WARN in the log every run. `status` and the metrics list it.
#[test]
fn a_bad_row_is_an_error_once_and_a_warning_after() {
    let gw = Gateway::start("kuma8088.com", "");
    let metrics = gw.dir.path().join("relay_sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('bad row.example', 1)");
    let first = gw.sync_expecting(0);
    assert!(
        first
            .stderr
            .contains("ERROR: Invalid domain skipped: \"bad row.example\""),
        "{first:?}"
    );
    for _ in 0..2 {
        let again = gw.sync_expecting(0);
        assert_eq!(again.stderr, "", "{again:?}");
    }
    let log = gw.log();
    assert_eq!(
        log.matches("ERROR: Invalid domain skipped").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("WARN: Invalid domain skipped").count(),
        2,
        "{log}"
    );
    let status = gw.run(&["status", "--json"]);
    let value: serde_json::Value = crate::json::document(&status.stdout);
    assert_eq!(value["invalid_rows"][0], "bad row.example", "{value}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("relay_sync_invalid_rows 1\n"), "{text}");

    // A second bad row changes the set: one more ERROR run, for both rows.
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('also bad', 1)");
    let changed = gw.sync_expecting(0);
    assert_eq!(
        changed
            .stderr
            .matches("ERROR: Invalid domain skipped")
            .count(),
        2,
        "{changed:?}"
    );
    assert_eq!(gw.sync_expecting(0).stderr, "");
    // Fixed in the panel: nothing is rejected any more, and status says so.
    gw.sql("DELETE FROM mailserver_usermgmt.domains WHERE name IN ('bad row.example', 'also bad')");
    gw.sync_expecting(0);
    let status = gw.run(&["status", "--json"]);
    let value: serde_json::Value = crate::json::document(&status.stdout);
    assert_eq!(
        value["invalid_rows"].as_array().unwrap().len(),
        0,
        "{value}"
    );
}
