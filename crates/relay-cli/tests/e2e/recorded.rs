//! Every run that got as far as a readable config is recorded (issue "relay-ops"): a password
//! source that fails, and a `transport_maps` that does not read the transport file, show in
//! `status`, in the metrics and in the failure streak, and alert like any other failure.

use std::fs;

use crate::gateway::Gateway;

/// `status --json` as a value.
fn status(gw: &Gateway) -> serde_json::Value {
    let run = gw.run(&["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    crate::json::document(&run.stdout)
}

/// A gateway with a metrics file and an `ALERT_COMMAND` that appends each alert's subject to
/// `alerts`, alerting after two failures.
fn watched_gateway() -> Gateway {
    let gw = Gateway::start("kuma8088.com", "");
    let d = gw.dir.path().display().to_string();
    gw.edit_config(|text| {
        format!(
            "{text}METRICS_FILE={d}/relay_sync.prom\nALERT_AFTER_FAILURES=2\n\
             ALERT_COMMAND=echo \"$RELAY_SYNC_ALERT_SUBJECT\" >> {d}/alerts\n"
        )
    });
    gw
}

fn metrics(gw: &Gateway) -> String {
    fs::read_to_string(gw.dir.path().join("relay_sync.prom")).unwrap()
}

fn alerts(gw: &Gateway) -> String {
    fs::read_to_string(gw.dir.path().join("alerts")).unwrap_or_default()
}

#[test]
fn a_failing_password_command_is_a_recorded_database_failure() {
    let gw = watched_gateway();
    gw.sync_expecting(0);
    assert!(metrics(&gw).contains("relay_sync_last_run_success 1\n"));
    gw.edit_config(|text| {
        text.replace(
            "DB_PASSWORD=relay-sync-test-pw",
            "DB_PASSWORD_COMMAND=echo 'vault: sealed' >&2; exit 1",
        )
    });

    let run = gw.sync_expecting(3);
    assert!(run.stderr.contains("DB_PASSWORD_COMMAND"), "{run:?}");
    let value = status(&gw);
    assert_eq!(value["last_run"]["exit_code"], 3, "{value}");
    assert_eq!(value["consecutive_failures"], 1, "{value}");
    assert_eq!(value["consecutive_db_failures"], 1, "{value}");
    let result = value["last_run"]["result"].as_str().unwrap();
    assert!(result.contains("DB_PASSWORD_COMMAND"), "{result}");
    let text = metrics(&gw);
    assert!(text.contains("relay_sync_last_run_success 0\n"), "{text}");
    assert!(text.contains("relay_sync_last_exit_code 3\n"), "{text}");
    assert!(alerts(&gw).is_empty(), "{}", alerts(&gw));

    // The second failure in a row reaches ALERT_AFTER_FAILURES.
    gw.sync_expecting(3);
    assert_eq!(status(&gw)["consecutive_failures"], 2);
    assert!(
        alerts(&gw).contains("2 consecutive failed runs"),
        "{}",
        alerts(&gw)
    );
}

#[test]
fn a_transport_maps_without_the_transport_file_is_a_recorded_failure() {
    let gw = watched_gateway();
    gw.postfix
        .command("postconf", &["-e", "transport_maps ="])
        .unwrap();

    let run = gw.sync_expecting(2);
    assert!(run.stderr.contains("transport_maps"), "{run:?}");
    let value = status(&gw);
    assert_eq!(value["last_run"]["exit_code"], 2, "{value}");
    assert_eq!(value["consecutive_failures"], 1, "{value}");
    assert_eq!(value["consecutive_db_failures"], 0, "{value}");
    assert!(
        value["last_run"]["result"]
            .as_str()
            .unwrap()
            .contains("transport_maps"),
        "{value}"
    );
    let text = metrics(&gw);
    assert!(text.contains("relay_sync_last_run_success 0\n"), "{text}");
    assert!(text.contains("relay_sync_last_exit_code 2\n"), "{text}");

    gw.sync_expecting(2);
    assert_eq!(status(&gw)["consecutive_failures"], 2);
    assert!(
        alerts(&gw).contains("2 consecutive failed runs"),
        "{}",
        alerts(&gw)
    );
}

/// The config names commands root runs and files root trusts (issue "hardened", finding 3):
/// a config, a password file or a command directory that someone else may change is a
/// configuration error naming the file and the fix, and `check` fails on it too.
#[test]
fn files_the_config_names_must_be_roots_alone() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start("kuma8088.com", "");
    let dir = gw.dir.path();
    // The reproduction: a config that anyone may write runs its ALERT_COMMAND as root.
    let victim = dir.join("ran-as-root");
    gw.edit_config(|text| {
        format!(
            "{text}ALERT_AFTER_FAILURES=1\nALERT_COMMAND=id > {}\n",
            victim.display()
        )
    });
    // Not readable by others (the DB_PASSWORD rule would answer first), only writable.
    fs::set_permissions(&gw.config, fs::Permissions::from_mode(0o622)).unwrap();
    let run = gw.sync_expecting(2);
    assert!(
        run.stderr.contains("writable by group or others"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("chmod go-w {}", gw.config.display())),
        "{run:?}"
    );
    assert_eq!(gw.run(&["check"]).code, 1);
    assert!(!victim.exists());
    fs::set_permissions(&gw.config, fs::Permissions::from_mode(0o600)).unwrap();

    // A password file others may read (README: exit 2).
    let secret = dir.join("db-password");
    fs::write(&secret, "relay-sync-test-pw\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    gw.edit_config(|text| {
        text.replace(
            "DB_PASSWORD=relay-sync-test-pw",
            &format!("DB_PASSWORD_FILE={}", secret.display()),
        )
    });
    let run = gw.sync_expecting(2);
    assert!(
        run.stderr.contains("readable by group or others"),
        "{run:?}"
    );
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    gw.sync_expecting(0);

    // A Postfix command someone else may replace.
    let commands = gw.stand_in_commands("writable-commands", &[]);
    fs::set_permissions(commands.join("postfix"), fs::Permissions::from_mode(0o777)).unwrap();
    let run = gw.sync_env_expecting(
        &[("POSTFIX_COMMAND_DIR", &commands.display().to_string())],
        2,
    );
    assert!(run.stderr.contains("POSTFIX_COMMAND_DIR"), "{run:?}");
    assert!(run.stderr.contains("postfix is writable"), "{run:?}");
}

/// The reproduction of issue 19's third finding: a 0777 script in a 0777 directory, named by
/// `ALERT_COMMAND`, `DB_PASSWORD_COMMAND` or as `POSTFIX_COMMAND_PREFIX`'s program, ran as
/// root, and `check` said "ok password". Each is now refused (exit 2, naming the file and the
/// `chmod`), `check` fails, and the script never runs; made root's alone, it runs.
#[test]
fn commands_relay_sync_runs_must_be_roots_alone() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start("kuma8088.com", "ALERT_AFTER_FAILURES=1");
    let dir = gw.dir.path().join("anyone-can-write");
    fs::create_dir(&dir).unwrap();
    let ran = gw.dir.path().join("ran-as-root");
    let script = dir.join("run.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh
echo \"$0\" >> {}\nexec \"$@\"\n",
            ran.display()
        ),
    )
    .unwrap();
    let chmod = |path: &std::path::Path, mode| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(&script, 0o777);
    chmod(&dir, 0o777);
    let shown = script.display().to_string();
    let password = format!("{shown} echo relay-sync-test-pw");
    for (key, value) in [
        ("ALERT_COMMAND", shown.as_str()),
        ("DB_PASSWORD_COMMAND", password.as_str()),
        ("POSTFIX_COMMAND_PREFIX", shown.as_str()),
    ] {
        let mut env = vec![(key, value)];
        if key == "DB_PASSWORD_COMMAND" {
            env.push(("DB_PASSWORD", ""));
        }
        let run = gw.sync_env_expecting(&env, 2);
        assert!(
            run.stderr.contains(&format!(
                "{key}'s program {shown} is writable by group or others (mode 0777)"
            )) && run.stderr.contains(&format!("chmod go-w {shown}")),
            "{key}: {run:?}"
        );
        let check = gw.run_env(&["check"], &env);
        assert_eq!(check.code, 1, "{key}: {check:?}");
        assert!(
            check.stdout.contains(&format!("{key}'s program")),
            "{check:?}"
        );
        assert!(!check.stdout.contains("ok   password"), "{check:?}");
    }
    assert!(!ran.exists(), "an unvetted command ran");

    // Root's alone, the script is the operator's: the password command runs.
    chmod(&script, 0o755);
    let run = gw.sync_env_expecting(&[("ALERT_COMMAND", &shown)], 2);
    assert!(
        run.stderr.contains(&format!(
            "ALERT_COMMAND's program {shown} is in {} which is writable by group or others",
            dir.display()
        )),
        "{run:?}"
    );
    chmod(&dir, 0o755);
    gw.sync_env_expecting(
        &[("DB_PASSWORD_COMMAND", &password), ("DB_PASSWORD", "")],
        0,
    );
    assert!(fs::read_to_string(&ran).unwrap().contains("run.sh"));
}
