//! Issue 22, an operator's first hour: the fixes relay-sync suggests are commands that can be
//! pasted as they are, a condition the operator chose is not a WARN on every run, and every
//! line reaches the journal with its priority.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::gateway::Gateway;
use crate::smtp;

/// The commands in backquotes in `text`, in order.
fn quoted_commands(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Runs `command` as an operator pasting it into a root shell would.
fn paste(command: &str) {
    let out = Command::new("sh").args(["-c", command]).output().unwrap();
    assert!(
        out.status.success(),
        "`{command}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `transport_maps` line of `check`'s report.
fn transport_maps_line(gw: &Gateway) -> String {
    let check = gw.run(&["check"]);
    check
        .stdout
        .lines()
        .find(|line| line[5..].starts_with("transport_maps "))
        .unwrap_or_else(|| panic!("no transport_maps line: {check:?}"))
        .to_owned()
}

/// A Postfix instance with its own `POSTFIX_CONFIG_DIR` (every test gateway's is private) and
/// a `transport_maps` that does not read the transport file: the fix `check` and `sync`
/// suggest carries `-c DIR`, keeps the maps already listed, and, pasted, makes the gateway
/// ready. Without `-c` it would have edited `/etc/postfix/main.cf`.
#[test]
fn the_suggested_transport_maps_fix_edits_this_instance() {
    let gw = Gateway::start("kuma8088.com", "");
    let pf = gw.postfix.config_dir().display().to_string();
    let other = format!("hash:{pf}/other_transport");
    fs::write(format!("{pf}/other_transport"), "").unwrap();
    gw.postfix
        .command("postmap", &[&other])
        .unwrap_or_else(|e| panic!("{e}"));
    gw.postfix
        .command("postconf", &["-e", &format!("transport_maps = {other}")])
        .unwrap();
    let line = transport_maps_line(&gw);
    assert!(line.starts_with("FAIL"), "{line}");
    let commands = quoted_commands(&line);
    let wanted = [
        format!("postconf -c {pf} -e 'transport_maps = hash:{pf}/transport, {other}'"),
        format!("postfix -c {pf} reload"),
    ];
    assert_eq!(commands, wanted, "{line}");
    // A sync refuses with the same fix, exit 2, nothing changed.
    let run = gw.sync_expecting(2);
    assert!(run.stderr.contains(&wanted[0]), "{run:?}");

    paste(&commands[0]);
    assert_eq!(
        gw.postfix
            .command("postconf", &["-h", "transport_maps"])
            .unwrap()
            .trim(),
        format!("hash:{pf}/transport, {other}")
    );
    assert!(transport_maps_line(&gw).starts_with("ok"), "after the fix");
    gw.sync_expecting(0);
}

/// A gateway whose Postfix has never had a transport map, as a new operator's has: the fix
/// builds the map before `main.cf` names it. Walking through the README's install, the fix as
/// it was (`postconf -e` and a reload) made Postfix answer `451 4.3.0 Temporary lookup failure`
/// to every recipient until the first sync built the table: mail that worked stopped.
#[test]
fn the_suggested_fix_builds_the_transport_map_before_naming_it() {
    let gw = Gateway::start("kuma8088.com", "");
    let pf = gw.postfix.config_dir().display().to_string();
    let transport = gw.postfix.transport_file();
    fs::remove_file(&transport).unwrap();
    fs::remove_file(format!("{pf}/transport.db")).unwrap();
    gw.postfix
        .command("postconf", &["-e", "transport_maps ="])
        .unwrap();
    gw.postfix.command("postfix", &["reload"]).unwrap();
    let port = gw.postfix.smtp_port();
    assert!(
        smtp::rcpt_settled(port, "user@kuma8088.com", "250").starts_with("250"),
        "a gateway without transport_maps relays"
    );

    let line = transport_maps_line(&gw);
    let commands = quoted_commands(&line);
    assert_eq!(
        commands,
        [
            format!("touch {pf}/transport"),
            format!("postmap -c {pf} hash:{pf}/transport"),
            format!("postconf -c {pf} -e 'transport_maps = hash:{pf}/transport'"),
            format!("postfix -c {pf} reload"),
        ],
        "{line}"
    );
    for command in &commands {
        paste(command);
    }
    let reply = smtp::rcpt_settled(port, "user@kuma8088.com", "250");
    assert!(reply.starts_with("250"), "after the pasted fix: {reply}");
    assert!(transport_maps_line(&gw).starts_with("ok"), "after the fix");
    gw.sync_expecting(0);
}

/// Container mode: the suggested fix goes through `POSTFIX_COMMAND_PREFIX` (a stand-in for
/// `docker exec NAME` that records and runs), so that pasted it changes the container's
/// Postfix, not the host's.
#[test]
fn the_suggested_fix_goes_through_the_prefix() {
    let gw = Gateway::start("kuma8088.com", "");
    let pf = gw.postfix.config_dir().display().to_string();
    let record = gw.dir.path().join("prefix.log");
    let prefix = gw.dir.path().join("fake-docker-exec");
    fs::write(
        &prefix,
        format!(
            "#!/bin/sh\n# Stand-in for `docker exec mailserver-postfix`.\necho \"$*\" >> {}\nexec \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&prefix, fs::Permissions::from_mode(0o755)).unwrap();
    gw.edit_config(|text| format!("{text}POSTFIX_COMMAND_PREFIX={}\n", prefix.display()));
    gw.postfix
        .command("postconf", &["-e", "transport_maps ="])
        .unwrap();

    let line = transport_maps_line(&gw);
    let commands = quoted_commands(&line);
    assert_eq!(
        commands,
        [
            format!(
                "{} postconf -c {pf} -e 'transport_maps = hash:{pf}/transport'",
                prefix.display()
            ),
            format!("{} postfix -c {pf} reload", prefix.display()),
        ],
        "{line}"
    );
    fs::write(&record, "").unwrap();
    paste(&commands[0]);
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        format!("postconf -c {pf} -e transport_maps = hash:{pf}/transport\n"),
        "the pasted fix did not go through the prefix"
    );
    assert!(transport_maps_line(&gw).starts_with("ok"), "after the fix");
}

/// A `relay_domains` relay-sync cannot rewrite (`{ }` grouping): the run refuses, and the
/// command it names to set the parameter by hand carries `-c` for this instance.
#[test]
fn the_suggested_relay_domains_fix_names_this_instance() {
    let gw = Gateway::start("kuma8088.com", "");
    let pf = gw.postfix.config_dir().display().to_string();
    gw.postfix
        .command(
            "postconf",
            &["-e", "relay_domains = { kuma8088.com, b.example }"],
        )
        .unwrap();
    gw.sync_expecting(4);
    let log = gw.log();
    let line = log
        .lines()
        .find(|line| line.contains("Cannot plan against the current configuration"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        quoted_commands(line),
        [format!(
            "postconf -c {pf} -e 'relay_domains = a.example, b.example'"
        )],
        "{line}"
    );
}

/// Runs the binary with `args` and `env`, its stderr a file whose device and inode are in
/// `JOURNAL_STREAM` (as systemd sets it for a unit whose stderr is the journal) when `journal`;
/// returns the exit code and what it wrote to stderr.
fn run_with_stderr_file(args: &[&str], journal: bool) -> (i32, String) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let stderr = fs::File::create(&path).unwrap();
    let meta = stderr.metadata().unwrap();
    // Another stream's numbers (one inode off) are not the journal.
    let inode = if journal { meta.ino() } else { meta.ino() + 1 };
    let status = Command::new(crate::gateway::BIN)
        .args(args)
        .env("JOURNAL_STREAM", format!("{}:{inode}", meta.dev()))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        fs::read_to_string(&path).unwrap(),
    )
}

/// A config error is found before logging is set up; under systemd its line still reaches the
/// journal as an error (`<3>`), so `journalctl -p err` finds it. So does each line of a usage
/// error. A stderr that is not the stream `JOURNAL_STREAM` names keeps the log format.
#[test]
fn errors_before_the_config_is_read_reach_the_journal_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay-sync.conf");
    fs::write(
        &config,
        "DB_HOST=127.0.0.1\nDB_PORT=abc\nDELL_RELAY_IP=127.0.0.1\n",
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let config = config.to_str().unwrap();

    let (code, stderr) = run_with_stderr_file(&["--config", config], true);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("<3>ERROR: ") && stderr.contains("DB_PORT"),
        "{stderr}"
    );
    assert!(
        stderr.lines().all(|line| line.starts_with("<3>")),
        "{stderr}"
    );

    let (code, stderr) = run_with_stderr_file(&["--config", config, "--no-such-flag"], true);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    assert!(
        stderr.lines().all(|line| line.starts_with("<3>")),
        "every line of a usage error is an error:\n{stderr}"
    );

    let (code, stderr) = run_with_stderr_file(&["--config", config], false);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with('[') && stderr.contains("] ERROR: "),
        "{stderr}"
    );
}

/// A hand-written transport line for a database domain, the operator's choice: a WARN in the
/// run that first finds it, then DEBUG (seen with `--verbose`), so that a timer's 288 runs a
/// day do not log 288 WARNs. A second hand-written line is a WARN again, for it alone.
#[test]
fn a_hand_written_line_is_a_warn_once() {
    let gw = Gateway::start("kuma8088.com", "");
    let transport = gw.transport_path();
    let before = fs::read_to_string(&transport).unwrap_or_default();
    fs::write(
        &transport,
        format!("# routed by hand\nexample.com smtp:[127.0.0.1]:2526\n{before}"),
    )
    .unwrap();
    let warns = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("] WARN: "))
            .map(str::to_owned)
            .collect()
    };

    let start = gw.log().len();
    gw.sync_expecting(0);
    let first = gw.log()[start..].to_owned();
    let warned = warns(&first);
    assert!(
        warned.len() == 1 && warned[0].contains("Domain example.com has a hand-written line"),
        "{first}"
    );

    let start = gw.log().len();
    gw.sync_expecting(0);
    let second = gw.log()[start..].to_owned();
    assert_eq!(warns(&second), Vec::<String>::new(), "{second}");

    let start = gw.log().len();
    let run = gw.run(&["--verbose"]);
    assert_eq!(run.code, 0, "{run:?}");
    let verbose = gw.log()[start..].to_owned();
    assert!(
        verbose.contains("] DEBUG: Domain example.com has a hand-written line"),
        "{verbose}"
    );
    assert_eq!(warns(&verbose), Vec::<String>::new(), "{verbose}");

    let text = fs::read_to_string(&transport).unwrap();
    fs::write(
        &transport,
        format!("example.net smtp:[127.0.0.1]:2526\n{text}"),
    )
    .unwrap();
    let start = gw.log().len();
    gw.sync_expecting(0);
    let third = gw.log()[start..].to_owned();
    let warned = warns(&third);
    assert!(
        warned.len() == 1 && warned[0].contains("Domain example.net has a hand-written line"),
        "{third}"
    );
}

/// What a `--json` run printed, validated against its schema, with the exit code.
fn json_run(gw: &Gateway, args: &[&str]) -> (i32, serde_json::Value) {
    let run = gw.run(args);
    (run.code, crate::json::document(&run.stdout))
}

/// The admin panel asks "what would this change?" (`--dry-run --json`, relay-sync.plan/1),
/// "what did that run do?" (`sync --json`, relay-sync.sync/1) and "what can I roll back to?"
/// (`backups --json`, relay-sync.backups/1): each answer is valid against its schema, and
/// says what the text output says.
#[test]
fn sync_dry_run_and_backups_answer_in_json() {
    let mut gw = Gateway::start("kuma8088.com, old.example", "");
    let printed = gw.run(&["--dry-run", "--json"]);
    assert_eq!(printed.code, 0, "{printed:?}");
    let plan = crate::json::document(&printed.stdout);
    assert_eq!(plan["would_change"], true, "{plan:#}");
    assert_eq!(plan["guard"]["verdict"], "apply", "{plan:#}");
    assert_eq!(
        plan["removed"],
        serde_json::json!(["old.example"]),
        "{plan:#}"
    );
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["write_transport", "set_relay_domains", "reload"],
        "{plan:#}"
    );
    insta::assert_snapshot!("dry_run_json", gw.redact(&printed.stdout));

    let (code, run) = json_run(&gw, &["sync", "--json"]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["outcome"], "applied", "{run:#}");
    assert_eq!(run["added"], plan["added"], "{run:#}");
    assert_eq!(run["removed"], plan["removed"], "{run:#}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap()).is_ok(),
        "{run:#}"
    );
    let stamp = run["backup"].as_str().unwrap().to_owned();

    let (code, backups) = json_run(&gw, &["backups", "--json"]);
    assert_eq!(code, 0, "{backups:#}");
    let generations = backups["generations"].as_array().unwrap();
    let newest = generations.last().unwrap();
    assert_eq!(
        (
            newest["stamp"].as_str(),
            newest["origin"].as_str(),
            &newest["newest"]
        ),
        (
            Some(stamp.as_str()),
            Some("sync"),
            &serde_json::Value::Bool(true)
        ),
        "{backups:#}"
    );

    let (code, run) = json_run(&gw, &["--json"]);
    assert_eq!(
        (code, run["outcome"].as_str()),
        (0, Some("no_change")),
        "{run:#}"
    );
    let (code, plan) = json_run(&gw, &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(
        (&plan["would_change"], plan["result"].as_str()),
        (&serde_json::Value::Bool(false), Some("no changes")),
        "{plan:#}"
    );

    // The guard: the dry run says it would refuse, and the run that refuses says so.
    gw.edit_config(|text| format!("{text}MAX_REMOVE_PERCENT=10\n"));
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0");
    let (code, plan) = json_run(&gw, &["--dry-run", "--json"]);
    assert_eq!(code, 4, "{plan:#}");
    assert_eq!(plan["guard"]["verdict"], "refuse", "{plan:#}");
    assert!(plan["guard"]["reason"].as_str().is_some(), "{plan:#}");
    let (code, run) = json_run(&gw, &["sync", "--json"]);
    assert_eq!(
        (code, run["outcome"].as_str()),
        (4, Some("refused")),
        "{run:#}"
    );

    // The database down: no plan, and the reason.
    gw.db.stop().unwrap();
    let (code, plan) = json_run(&gw, &["--dry-run", "--json"]);
    assert_eq!(code, 3, "{plan:#}");
    assert_eq!(plan["database"], serde_json::Value::Null, "{plan:#}");
    assert!(
        plan["result"]
            .as_str()
            .unwrap()
            .starts_with("database failed"),
        "{plan:#}"
    );
    let (code, run) = json_run(&gw, &["sync", "--json"]);
    assert_eq!(
        (code, run["outcome"].as_str()),
        (3, Some("database_failed")),
        "{run:#}"
    );
}

/// Every check's name in `check --json` is a snake_case identifier (version 1 had `transport
/// file`, `backup dir`, `main.cf`): on a gateway that exercises the file checks, in map mode
/// with recipient validation and a metrics file.
#[test]
fn check_names_are_snake_case_identifiers() {
    let gw = Gateway::start(
        "kuma8088.com",
        "RECIPIENTS_QUERY=SELECT email FROM users WHERE enabled = 1",
    );
    gw.edit_config(|text| {
        format!(
            "{text}METRICS_FILE={}/relay_sync.prom\n",
            gw.dir.path().display()
        )
    });
    let (_, check) = json_run(&gw, &["check", "--json"]);
    let names: Vec<&str> = check["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "transport_file",
        "backup_dir",
        "main_cf",
        "recipients_map",
        "metrics_file",
    ] {
        assert!(names.contains(&wanted), "{wanted} not in {names:?}");
    }
    for name in &names {
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name:?} is not snake_case: {names:?}"
        );
    }
}

/// The metrics name the build that wrote them (`relay_sync_build_info`), and a held run
/// records when the hold began, which the alert on a hold older than a day reads.
#[test]
fn metrics_name_the_build_and_when_a_hold_began() {
    let gw = Gateway::start("kuma8088.com", "");
    let metrics = gw.dir.path().join("relay_sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    gw.sync_expecting(0);
    let text = fs::read_to_string(&metrics).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(
            "relay_sync_build_info{{version=\"{version}\",features=\""
        )) && text.contains("relay_sync_held_since_timestamp_seconds 0\n"),
        "{text}"
    );
    gw.run(&["hold", "--reason", "migrating the panel"]);
    gw.sync_expecting(0);
    let status = crate::json::document(&gw.run(&["status", "--json"]).stdout);
    let since = chrono::DateTime::parse_from_rfc3339(status["hold"]["since"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(&format!(
            "relay_sync_held_since_timestamp_seconds {since}\n"
        )),
        "{since}: {text}"
    );
}

/// The licence the workspace declares has its texts at the top of the source tree (as Rust
/// projects ship `MIT OR Apache-2.0`), and SECURITY.md says how to report a vulnerability
/// privately.
#[test]
fn the_licence_texts_and_the_reporting_channel_are_there() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read =
        |name: &str| fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        read("Cargo.toml").contains("license = \"MIT OR Apache-2.0\""),
        "the workspace's licence changed: ship its texts"
    );
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted, free of charge"));
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    let security = read("SECURITY.md");
    let reporting = security
        .split_once("## Reporting a vulnerability")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .expect("SECURITY.md has a \"Reporting a vulnerability\" section");
    // A channel that reaches the maintainers privately, not an address no one reads.
    assert!(
        reporting.contains("privately") && reporting.contains("Report a vulnerability"),
        "{reporting}"
    );
}
