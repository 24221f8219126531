//! Operations (issue "Operations"): `check`, `status`, `rollback`, `backups`, `METRICS_FILE`,
//! the password sources, and container mode through `POSTFIX_COMMAND_PREFIX`, each against a
//! real gateway.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::gateway::{files_starting_with, Gateway};

const HOP: &str = "smtp:[127.0.0.1]:2525";
const PASSWORD: &str = "relay-sync-test-pw";

/// The domains in the transport file's managed block, as relay-sync wrote it.
fn managed_block(transport: &str) -> Vec<String> {
    transport
        .lines()
        .skip_while(|l| !l.starts_with("# BEGIN relay-sync managed block"))
        .skip(1)
        .take_while(|l| !l.starts_with("# END relay-sync managed block"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// `check` on a ready gateway: every check passes, exit 0; `--json` says the same.
#[test]
fn check_passes_on_a_ready_gateway() {
    let gw = Gateway::start("kuma8088.com", "");
    let run = gw.run(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!(gw.redact(&run.stdout));
    assert!(!format!("{run:?}").contains(PASSWORD));
    let json = gw.run(&["check", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let value: serde_json::Value = crate::json::document(&json.stdout);
    assert_eq!(value["ok"], true);
    assert!(value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "ok"));
}

/// A DB user that may write, and a `transport_maps` that does not name the transport file:
/// a loud warning and a failure, exit 1. A configuration that does not load is a failed check
/// too.
#[test]
fn check_reports_grants_and_transport_maps() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sql("GRANT INSERT, DELETE ON mailserver_usermgmt.domains TO 'relay_sync'@'127.0.0.1'");
    gw.postfix
        .command("postconf", &["-e", "transport_maps ="])
        .unwrap();
    let run = gw.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    insta::assert_snapshot!(gw.redact(&run.stdout));
    let json = gw.run(&["check", "--json"]);
    let value: serde_json::Value = crate::json::document(&json.stdout);
    assert_eq!(value["ok"], false);

    gw.edit_config(|text| format!("{text}DB_PASWORD_FILE=/nowhere\n"));
    let run = gw.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    // The line number depends on the gateway's config file, not on what is tested.
    let text = gw.redact(&run.stdout);
    let (head, tail) = text.split_once(".conf line ").unwrap();
    let tail = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    insta::assert_snapshot!("check_config_broken", format!("{head}.conf line [N]{tail}"));
}

/// With `RECIPIENTS_QUERY` set, `check` runs it once: without the opt-in grant it fails naming
/// the key; with the grant from create-user.sql it reports the rows, and the grants check calls
/// the column-limited grant read-only; a grant on the whole users table (the password hashes)
/// is a loud warning.
#[test]
fn check_runs_the_recipients_query_and_judges_its_grant() {
    let gw = Gateway::start(
        "kuma8088.com",
        "RECIPIENTS_QUERY=SELECT email FROM users WHERE enabled = 1",
    );
    let line = |run: &crate::gateway::Run, name: &str| {
        run.stdout
            .lines()
            .find(|line| line[5..].starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line: {run:?}"))
            .to_owned()
    };
    let run = gw.run(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    let recipients = line(&run, "recipients");
    assert!(
        recipients.starts_with("FAIL") && recipients.contains("(RECIPIENTS_QUERY)"),
        "{run:?}"
    );

    gw.db.grant_recipients().unwrap();
    let run = gw.run(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        line(&run, "recipients"),
        "ok   recipients       RECIPIENTS_QUERY returned 5 rows"
    );
    assert_eq!(
        line(&run, "grants"),
        "ok   grants           relay_sync has SELECT on mailserver_usermgmt.domains and SELECT \
         on email, enabled of mailserver_usermgmt.users and nothing more"
    );
    assert!(run.stdout.contains("recipients_map"), "{run:?}");

    gw.sql("GRANT SELECT ON mailserver_usermgmt.users TO 'relay_sync'@'127.0.0.1'");
    let run = gw.run(&["check"]);
    let grants = line(&run, "grants");
    assert!(
        grants.starts_with("WARN") && grants.contains("`users`"),
        "{run:?}"
    );
}

/// `status` before any run, after a sync, and after a database failure; `--json` too.
#[test]
fn status_shows_result_streak_domains_and_backups() {
    let mut gw = Gateway::start("kuma8088.com, old.example", "");
    let before = gw.run(&["status"]);
    assert_eq!(before.code, 0, "{before:?}");
    insta::assert_snapshot!("status_before_any_run", gw.redact(&before.stdout));

    gw.sync_expecting(0);
    let after = gw.run(&["status"]);
    let stamp = files_starting_with(&gw.backup_dir(), "transport.")[0]
        .trim_start_matches("transport.")
        .trim_end_matches(".bak")
        .to_owned();
    let stable = |text: &str| {
        let text = gw.redact(text).replace(&stamp, "[STAMP]");
        // The run's local time: `YYYY-MM-DD HH:MM:SS`.
        text.lines()
            .map(|line| match line.find(" exit ") {
                Some(_) if line.starts_with("last run:") => {
                    format!(
                        "last run:        [TIME]{}",
                        &line[line.find(" exit ").unwrap()..]
                    )
                }
                _ if line.starts_with("last success:") && line.len() > 17 => {
                    "last success:    [TIME]".to_owned()
                }
                // Which domains get a managed line is the engine's business; checked below.
                _ if line.starts_with("managed domains:") => {
                    "managed domains: [N] in [POSTFIX]/transport: [LIST]".to_owned()
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!("status_after_sync", stable(&after.stdout));
    let managed = managed_block(&gw.transport());
    assert!(managed.len() >= 4, "{managed:?}");
    assert!(
        after.stdout.contains(&format!(
            "managed domains: {} in {}/transport: {}\n",
            managed.len(),
            gw.postfix.config_dir().display(),
            managed.join(", ")
        )),
        "{after:?}"
    );

    gw.db.stop().unwrap();
    gw.sync_expecting(3);
    let failed = gw.run(&["status", "--json", "--domains"]);
    assert_eq!(failed.code, 0, "{failed:?}");
    let value: serde_json::Value = crate::json::document(&failed.stdout);
    assert_eq!(value["last_run"]["exit_code"], 3);
    assert_eq!(value["consecutive_failures"], 1);
    assert_eq!(value["consecutive_db_failures"], 1);
    let listed: Vec<&str> = value["managed_domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(listed, managed);
    assert_eq!(value["backups"].as_array().unwrap().len(), 1);
    // RFC 3339 with the offset (docs/json.md).
    let success = value["last_success"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(success).is_ok(),
        "{success}"
    );
    assert_eq!(value["schema"], "relay-sync.status/1");
    assert_eq!(value["managed_domain_count"], listed.len());
    // Counts only by default: a million-domain gateway must not print a million lines.
    let counts = gw.run(&["status", "--json"]);
    let counts: serde_json::Value = crate::json::document(&counts.stdout);
    assert!(counts.get("managed_domains").is_none(), "{counts}");
    assert_eq!(counts["managed_domain_count"], listed.len());
    assert!(!failed.stdout.contains(PASSWORD));
}

/// `rollback` restores the newest generation (what was there before the sync), through the
/// real commands, under the lock; `--to` picks another; a held lock refuses.
#[test]
fn rollback_restores_a_generation() {
    let gw = Gateway::start("kuma8088.com, old.example", "");
    let original_transport = gw.transport();
    gw.sync_expecting(0);
    assert_eq!(gw.lookup("example.com").as_deref(), Some(HOP));
    let synced_transport = gw.transport();
    let synced_relay = gw.relay_domains();
    let first = files_starting_with(&gw.backup_dir(), "transport.");
    assert_eq!(first.len(), 1);
    let first_stamp = first[0]
        .trim_start_matches("transport.")
        .trim_end_matches(".bak")
        .to_owned();

    // A sync is running: the rollback waits for nothing and changes nothing.
    let lock = fs::File::create(gw.dir.path().join("state/relay-sync.lock")).unwrap();
    lock.try_lock().unwrap();
    let refused = gw.run(&["rollback"]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(refused.stderr.contains("A sync is running"), "{refused:?}");
    assert_eq!(gw.relay_domains(), synced_relay);
    drop(lock);

    let listed = gw.run(&["backups"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&first_stamp), "{listed:?}");
    assert!(listed.stdout.contains("2 domain(s)"), "{listed:?}");

    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", gw.log());
    assert_eq!(gw.relay_domains(), "kuma8088.com, old.example");
    assert_eq!(gw.transport(), original_transport);
    assert_eq!(gw.lookup("example.com"), None);
    let log = gw.log();
    for line in [
        &format!("INFO: Rolling back to backup {first_stamp} by request"),
        "INFO: Postfix reloaded successfully",
        "INFO: Rollback successful",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    // The state before the rollback became the newest generation: roll back the rollback.
    let generations = files_starting_with(&gw.backup_dir(), "transport.");
    assert_eq!(generations.len(), 2, "{generations:?}");
    let undo = gw.run(&["rollback"]);
    assert_eq!(undo.code, 0, "{undo:?}");
    assert_eq!(gw.relay_domains(), synced_relay);
    assert_eq!(gw.transport(), synced_transport);
    assert_eq!(gw.lookup("example.com").as_deref(), Some(HOP));

    let to = gw.run(&["rollback", "--to", &first_stamp]);
    assert_eq!(to.code, 0, "{to:?}");
    assert_eq!(gw.relay_domains(), "kuma8088.com, old.example");
    // A stamp that is not there, or not a stamp at all, is a usage error that names the
    // generations there are, newest first.
    let mut stamps: Vec<String> = gw
        .run(&["backups"])
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.len() == 15 && word.as_bytes()[8] == b'-')
        .map(str::to_owned)
        .collect();
    stamps.reverse();
    assert_eq!(stamps.len(), 4, "{stamps:?}");
    for stamp in ["20000101-000000", "2020"] {
        let unknown = gw.run(&["rollback", "--to", stamp]);
        assert_eq!(unknown.code, 2, "{unknown:?}");
        assert!(
            unknown.stderr.contains(&stamps.join(", ")),
            "{stamps:?} {unknown:?}"
        );
    }
    let unknown = gw.run(&["rollback", "--to", "2020"]);
    let mut message = gw.redact(
        unknown
            .stderr
            .split("ERROR: ")
            .nth(1)
            .unwrap_or(&unknown.stderr),
    );
    for (i, stamp) in stamps.iter().enumerate() {
        message = message.replace(stamp, &format!("[STAMP{}]", stamps.len() - i));
    }
    insta::assert_snapshot!("rollback_unknown_stamp", message);
    // The next sync applies the database again.
    gw.sync_expecting(0);
    assert_eq!(gw.relay_domains(), synced_relay);
}

/// `METRICS_FILE`: written after every run, atomically, in the textfile-collector format, with
/// the last success kept across a failure.
#[test]
fn metrics_file_follows_the_runs() {
    let mut gw = Gateway::start("kuma8088.com, old.example", "");
    let path = gw.dir.path().join("relay_sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", path.display()));
    gw.sync_expecting(0);
    let text = fs::read_to_string(&path).unwrap();
    let managed = format!(
        "relay_sync_managed_domains {}\n",
        managed_block(&gw.transport()).len()
    );
    for line in [
        "relay_sync_last_exit_code 0\n",
        "relay_sync_last_run_success 1\n",
        &managed,
        "relay_sync_last_added_domains 4\n",
        "relay_sync_last_removed_domains 1\n",
        "relay_sync_consecutive_failures 0\n",
        "# TYPE relay_sync_last_duration_seconds gauge\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let success = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("relay_sync_last_success_timestamp_seconds "))
            .unwrap()
            .to_owned()
    };
    let first_success = success(&text);
    assert_ne!(first_success, "0");

    gw.db.stop().unwrap();
    gw.sync_expecting(3);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("relay_sync_last_exit_code 3\n"), "{text}");
    assert!(
        text.contains("relay_sync_consecutive_failures 1\n"),
        "{text}"
    );
    assert!(text.contains(&managed), "{text}");
    assert_eq!(success(&text), first_success);
    // No temporary file is left next to it.
    let names: Vec<_> = fs::read_dir(gw.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prom"))
        .collect();
    assert_eq!(names, ["relay_sync.prom"]);
}

/// `DB_PASSWORD_FILE` and `DB_PASSWORD_COMMAND` work, errors name the source that failed, and
/// the secret appears in no output, log, status or dry run.
#[test]
fn password_sources_and_no_secret_anywhere() {
    let gw = Gateway::start("kuma8088.com", "");
    let secret_file = gw.dir.path().join("db-password");
    fs::write(&secret_file, format!("{PASSWORD}\n")).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    let use_source = |line: &str| {
        gw.edit_config(|text| {
            let kept: String = text
                .lines()
                .filter(|l| !l.starts_with("DB_PASSWORD"))
                .map(|l| format!("{l}\n"))
                .collect();
            format!("{kept}{line}\n")
        });
    };
    let mut outputs = String::new();
    let wrong_file = gw.dir.path().join("wrong-password");
    fs::write(&wrong_file, "wrong-secret-4711\n").unwrap();
    fs::set_permissions(&wrong_file, fs::Permissions::from_mode(0o600)).unwrap();

    use_source(&format!("DB_PASSWORD_FILE={}", secret_file.display()));
    for args in [
        &["--dry-run"][..],
        &[],
        &["status"],
        &["check"],
        &["status", "--json"],
    ] {
        let run = gw.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}\n{}", gw.log());
        outputs.push_str(&format!("{run:?}"));
    }
    assert_eq!(gw.lookup("example.com").as_deref(), Some(HOP));

    use_source(&format!(
        "DB_PASSWORD_COMMAND=cat {}",
        secret_file.display()
    ));
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.org'");
    for args in [&["--dry-run"][..], &[], &["check"]] {
        let run = gw.run(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}\n{}", gw.log());
        outputs.push_str(&format!("{run:?}"));
    }
    assert_eq!(gw.lookup("example.org"), None);

    // Failures name the source; a wrong secret is not shown either.
    let mut errors = String::new();
    for (line, code) in [
        // No password means no database: exit 3, like a database that cannot be reached.
        (
            "DB_PASSWORD_FILE=/nonexistent/relay-sync-password".to_owned(),
            3,
        ),
        (
            "DB_PASSWORD_COMMAND=echo 'vault: token expired' >&2; exit 7".to_owned(),
            3,
        ),
        // The command line is configuration and is shown; what it prints is not.
        (
            format!("DB_PASSWORD_COMMAND=cat {}", wrong_file.display()),
            3,
        ),
    ] {
        use_source(&line);
        let run = gw.run(&[]);
        assert_eq!(run.code, code, "{line}: {run:?}");
        let check = gw.run(&["check"]);
        assert_eq!(check.code, 1, "{line}: {check:?}");
        outputs.push_str(&format!("{run:?}{check:?}"));
        let error = run.stderr.split("ERROR: ").nth(1).unwrap_or(&run.stderr);
        let error = error.lines().next().unwrap_or_default();
        errors.push_str(&format!("{}\n=> {}\n", gw.redact(&line), gw.redact(error)));
    }
    insta::assert_snapshot!(errors);
    outputs.push_str(&gw.log());
    for secret in [PASSWORD, "wrong-secret-4711"] {
        assert!(!outputs.contains(secret), "{secret} shown in:\n{outputs}");
    }
}

/// Container mode: every Postfix command goes through `POSTFIX_COMMAND_PREFIX` (a stand-in for
/// `docker exec mailserver-postfix` that records and executes), the transport file is reached
/// through the shared directory, and `check` tells when it is not shared.
#[test]
fn container_prefix_runs_every_postfix_command() {
    let gw = Gateway::start("kuma8088.com", "");
    let record = gw.dir.path().join("prefix.log");
    let prefix = gw.dir.path().join("fake-docker-exec");
    let write_prefix = |body: &str| {
        fs::write(
            &prefix,
            format!(
                "#!/bin/sh\n# Stand-in for `docker exec mailserver-postfix`.\necho \"$*\" >> {}\n{body}\nexec \"$@\"\n",
                record.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_prefix("");
    gw.edit_config(|text| format!("{text}POSTFIX_COMMAND_PREFIX={}\n", prefix.display()));

    let run = gw.sync_expecting(0);
    assert_eq!(run.stderr, "");
    assert_eq!(gw.lookup("example.com").as_deref(), Some(HOP));
    let pf = gw.postfix.config_dir().display().to_string();
    let recorded = fs::read_to_string(&record).unwrap();
    for command in [
        format!("/usr/sbin/postconf -c {pf} -h transport_maps default_database_type relay_domains"),
        format!("/usr/sbin/postmap -c {pf} hash:{pf}/."),
        format!("/usr/sbin/postconf -c {pf} -e relay_domains = "),
        format!("/usr/sbin/postfix -c {pf} reload"),
        format!("/usr/sbin/postconf -c {pf} -h relay_domains"),
        // The verification's lookups: the keys go as an argument, not on standard input,
        // which `docker exec` without `-i` does not pass.
        format!("/usr/sbin/postmap -c {pf} -q - hash:{pf}/transport"),
    ] {
        assert!(
            recorded.contains(&command),
            "missing {command:?} in\n{recorded}"
        );
    }
    // Every command runs under the container's own `timeout`, so that COMMAND_TIMEOUT also
    // ends it inside the container.
    // (The lookups' keys are one argument with line breaks: lines that go on a command.)
    let starts: Vec<&str> = recorded
        .lines()
        .filter(|l| l.starts_with('/') || l.starts_with("timeout "))
        .collect();
    assert!(starts.len() >= 6, "{recorded}");
    for line in starts {
        assert!(line.starts_with("timeout -k 1 120 /"), "{line}");
    }

    let check = gw.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check
            .stdout
            .contains("is the same directory on this host and through the prefix"),
        "{check:?}"
    );
    // A container that does not see the host's directory (no bind mount).
    write_prefix("case \" $* \" in *\" test -e \"*) exit 1;; esac");
    let check = gw.run(&["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    let line = check
        .stdout
        .lines()
        .find(|l| l.contains("container"))
        .unwrap();
    // The probe file's name is random (`.relay-sync-check.RANDOM.relay-sync.tmp`).
    let line = gw.redact(line);
    let (head, tail) = line.split_once(".relay-sync-check.").unwrap();
    let tail = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    insta::assert_snapshot!(format!("{head}.relay-sync-check.[RANDOM]{tail}"));
}

/// `hold` end to end (issue "packages, units and outputs"): held, a database change, a sync
/// that changes nothing and says why, `status`/`check`/the metric show it, `release`, and the
/// next sync applies the change. `rollback --hold` rolls back and holds in one step.
#[test]
fn hold_stops_syncs_until_release() {
    let gw = Gateway::start("kuma8088.com", "");
    let metrics = gw.dir.path().join("relay_sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    gw.sync_expecting(0);
    let synced = gw.relay_domains();

    let held = gw.run(&["hold", "--reason", "migrating the panel"]);
    assert_eq!(held.code, 0, "{held:?}");
    assert!(gw.run(&["hold", "--reason", " "]).code != 0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('held.example', 1)");
    let files = gw.files();
    let log_before = gw.log().len();
    let run = gw.sync_expecting(0);
    assert_eq!(gw.files(), files, "a held sync wrote");
    assert_eq!(run.stderr, "", "a held run is not an error: {run:?}");
    let log = gw.log()[log_before..].to_owned();
    assert!(log.contains("WARN: Syncs are held by "), "{log}");
    assert!(log.contains("migrating the panel"), "{log}");
    let status = gw.run(&["status", "--json"]);
    let value: serde_json::Value = crate::json::document(&status.stdout);
    assert_eq!(value["hold"]["reason"], "migrating the panel", "{value}");
    assert!(gw.run(&["status"]).stdout.contains("HELD:"));
    assert!(gw.run(&["check"]).stdout.contains("WARN hold"));
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("relay_sync_held 1\n"), "{text}");

    let released = gw.run(&["release"]);
    assert!(
        released.stdout.contains("released the hold"),
        "{released:?}"
    );
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("held.example"));
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("relay_sync_held 0\n"), "{text}");

    // Roll back over held.example and hold: the next sync leaves the rollback in place.
    let stamp = gw
        .run(&["backups"])
        .stdout
        .lines()
        .filter(|l| l.contains("(newest)"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .next()
        .unwrap();
    let rolled = gw.run(&["rollback", "--to", &stamp, "--hold", "bad panel import"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(gw.relay_domains(), synced);
    gw.sync_expecting(0);
    assert_eq!(
        gw.relay_domains(),
        synced,
        "a sync applied the database while held"
    );
    gw.run(&["release"]);
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("held.example"));
}

/// `status --json` and `check --json` have the shapes docs/json.md documents: snapshots, with
/// the times, ports and temporary paths of this gateway replaced by placeholders.
#[test]
fn json_documents_have_their_documented_shape() {
    let gw = Gateway::start("kuma8088.com, old.example", "");
    gw.sync_expecting(0);
    let check = gw.run(&["check", "--json"]);
    crate::json::document(&check.stdout);
    insta::assert_snapshot!("check_json", gw.redact(&check.stdout));
    gw.run(&["hold", "--reason", "snapshot"]);
    let mut status: serde_json::Value =
        crate::json::document(&gw.run(&["status", "--json", "--domains"]).stdout);
    for pointer in ["/last_run/ended_at", "/last_success", "/hold/since"] {
        let time = status.pointer_mut(pointer).unwrap();
        let text = time.as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{text}");
        *time = "[RFC 3339]".into();
    }
    status["hold"]["by"] = "[USER]".into();
    status["backups"] = serde_json::json!(["[STAMP]"]);
    insta::assert_snapshot!(
        "status_json",
        gw.redact(&serde_json::to_string_pretty(&status).unwrap())
    );
}

/// Issue "hardened", finding 6: runs that fail and roll back write generations too, and with
/// BACKUP_KEEP=2 and cron every 5 minutes they used to push every known-good generation out in
/// ten minutes. Now they are kept apart, `backups` shows each generation's origin, and a plain
/// `rollback` goes to the newest generation of a run that worked.
#[test]
fn failed_runs_keep_the_good_generations() {
    let gw = Gateway::start("kuma8088.com, old.example", "BACKUP_KEEP=2");
    gw.sync_expecting(0); // good generation 1: the state before the first sync
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('second.example', 1)");
    gw.sync_expecting(0); // good generation 2
    let good_state = gw.relay_domains();
    let broken = gw.broken_postconf();
    for i in 0..4 {
        gw.sql(&format!(
            "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('fail{i}.example', 1)"
        ));
        gw.sync_env_expecting(&[("POSTFIX_COMMAND_DIR", &broken.display().to_string())], 5);
    }
    assert_eq!(gw.relay_domains(), good_state);
    let listed = gw.run(&["backups"]).stdout;
    let origins: Vec<&str> = listed
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(origins, ["sync", "sync", "failed", "failed"], "{listed}");

    // The newest good generation holds the state before second.example came.
    let rolled = gw.run(&["rollback"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert!(
        !gw.relay_domains().contains("second.example"),
        "{}",
        gw.relay_domains()
    );
    let listed = gw.run(&["backups"]).stdout;
    assert!(
        listed.lines().last().unwrap().contains("rollback"),
        "{listed}"
    );
}

/// A usage error is exit 2 in every command, with clap's message or relay-sync's own: a wrong
/// or missing option, a value that is not a number, an unknown command, shell or page, a
/// generation that is not there, an empty hold reason, a config file that is not there.
#[test]
fn usage_errors_exit_2_in_every_command() {
    // These end before anything reaches the database or Postfix: a config naming empty
    // directories will do.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("relay-sync.conf");
    fs::write(
        &config,
        format!(
            "DB_HOST=127.0.0.1\nDELL_RELAY_IP=127.0.0.1\nPOSTFIX_CONFIG_DIR={d}\n\
             BACKUP_DIR={d}/backup\nSTATE_DIR={d}/state\nLOG_FILE={d}/relay-sync.log\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let config = config.to_str().unwrap();
    let mut transcript = String::new();
    for args in [
        &["--bogus"][..],
        &["sync", "--dry-run", "--bogus"],
        &["check", "--jsn"],
        &["status", "--max-age", "a-day"],
        &["status", "--domains"],
        &["watch", "now"],
        &["rollback", "--to"],
        &["rollback", "--to", "2020"],
        &["backups", "--all"],
        &["hold"],
        &["hold", "--reason", " "],
        &["release", "--force"],
        &["completions", "tcsh"],
        &["man", "frobnicate"],
        &["frobnicate"],
        &["--config", "/nonexistent/relay-sync.conf", "status"],
    ] {
        let mut command = std::process::Command::new(crate::gateway::BIN);
        if args[0] != "--config" {
            command.args(["--config", config]);
        }
        let out = command.args(args).env_remove("RUST_LOG").output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert_eq!(code, 2, "relay-sync {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "relay-sync {args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&d.to_string(), "[DIR]");
        // A message logged before the config is read carries the time.
        let stderr: String = stderr
            .lines()
            .map(|line| match line.split_once("] ") {
                Some((stamp, rest)) if stamp.starts_with("[20") => format!("[TIME] {rest}\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        let words: Vec<String> = args
            .iter()
            .map(|arg| match arg.trim().is_empty() || arg.contains(' ') {
                true => format!("'{arg}'"),
                false => (*arg).to_owned(),
            })
            .collect();
        transcript.push_str(&format!(
            "$ relay-sync {}\nexit {code}\n{stderr}\n",
            words.join(" ")
        ));
    }
    insta::assert_snapshot!(transcript);
}
