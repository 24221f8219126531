//! Postfix in a real container (issue 20), the requirements' topology: relay-sync on this
//! host, Postfix in a podman container built from Debian's packages (relay-testbed), reached
//! through `POSTFIX_COMMAND_PREFIX=podman exec NAME` (docker takes the same words), the map
//! directory bind-mounted at the same path, `smtp-sink` on this host as the mailbox host, and
//! SMTP into the container on a free port of 127.0.0.1.
//!
//! The prefix is tested as the requirements write it (no `-i`) and with `-i`; the container is
//! stopped in the middle of a run, recreated from its image, and its `postfix reload` wedged.
//! The sidecar form (relay-sync in a container of its own, in a pod) is in `sidecar.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use relay_testbed::{Image, MariaDb, PostfixContainer, SmtpSink};

use crate::gateway::{Run, BIN};
use crate::smtp::{delivered, rcpt, rcpt_settled, send, wait_until};

/// The container's name in the requirements.
pub(crate) const REQUIREMENTS_NAME: &str = "mailserver-postfix";

/// What Postfix answers for a domain it does not relay.
const DENIED: &str = "Relay access denied";

/// relay-sync on this host, Postfix in a container, the database and the mailbox host.
pub(crate) struct ContainerGateway {
    pub(crate) db: MariaDb,
    pub(crate) sink: SmtpSink,
    pub(crate) postfix: PostfixContainer,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

impl ContainerGateway {
    /// A gateway whose container is named `name` (unique when `None`), relaying
    /// `kuma8088.com`, reached through `prefix` followed by the container's name, with `extra`
    /// appended to the config file.
    pub(crate) fn start(name: Option<&str>, prefix: &str, extra: &str) -> ContainerGateway {
        let image = Image::postfix().unwrap();
        let postfix = PostfixContainer::start(&image, name, "kuma8088.com").unwrap();
        let prefix = format!("{prefix} {}", postfix.name());
        ContainerGateway::start_with(postfix, &prefix, extra)
    }

    /// A gateway for `postfix`, reached through `prefix` (all its words).
    pub(crate) fn start_with(
        postfix: PostfixContainer,
        prefix: &str,
        extra: &str,
    ) -> ContainerGateway {
        let db = MariaDb::start().unwrap();
        db.load_fixtures().unwrap();
        let sink = SmtpSink::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay-sync.conf");
        let maps = postfix.maps_dir();
        let text = format!(
            "# relay-sync e2e: Postfix in the container {name}\n\
             DB_HOST=127.0.0.1\n\
             DB_PORT={port}\n\
             DB_USER=relay_sync\n\
             DB_PASSWORD=relay-sync-test-pw\n\
             DB_CONNECT_TIMEOUT=2\n\
             DELL_RELAY_IP=127.0.0.1\n\
             DELL_RELAY_PORT={sink}\n\
             PRESERVE_DOMAINS=kuma8088.com\n\
             POSTFIX_COMMAND_PREFIX={prefix}\n\
             TRANSPORT_FILE={maps}/transport\n\
             RELAY_DOMAINS_MAP={maps}/relay_domains\n\
             RECIPIENTS_MAP={maps}/relay_recipients\n\
             BACKUP_DIR={d}/backup\n\
             LOG_FILE={d}/log/relay-sync.log\n\
             STATE_DIR={d}/state\n\
             {extra}\n",
            name = postfix.name(),
            port = db.port(),
            sink = sink.port(),
            maps = maps.display(),
            d = dir.path().display(),
        );
        fs::write(&config, text).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        ContainerGateway {
            db,
            sink,
            postfix,
            dir,
            config,
        }
    }

    /// The binary with this gateway's config and `args`.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG");
        command
    }

    /// Runs the binary with `RELAY_SYNC_*` overrides.
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (key, value) in env {
            command.env(format!("RELAY_SYNC_{key}"), value);
        }
        let output: Output = command.output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs a sync and asserts its exit code.
    #[track_caller]
    pub(crate) fn sync_expecting(&self, code: i32) -> Run {
        let run = self.run(&[]);
        assert_eq!(
            run.code,
            code,
            "{run:?}\n--- log\n{}\n--- container\n{}",
            self.log(),
            self.postfix.logs()
        );
        run
    }

    /// Rewrites the config file with `edit`.
    pub(crate) fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, edit(text)).unwrap();
    }

    pub(crate) fn sql(&self, sql: &str) {
        self.db.sql(sql).unwrap();
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/relay-sync.log")).unwrap_or_default()
    }

    pub(crate) fn smtp(&self) -> u16 {
        self.postfix.smtp_port()
    }

    pub(crate) fn relay_domains(&self) -> String {
        self.postfix.postconf("relay_domains").unwrap()
    }

    pub(crate) fn transport(&self) -> String {
        fs::read_to_string(self.postfix.maps_dir().join("transport")).unwrap_or_default()
    }

    /// `RCPT TO` until it answers `want` (a code), for at most the settle time; asserts it.
    #[track_caller]
    pub(crate) fn assert_rcpt(&self, to: &str, want: &str) {
        let reply = rcpt_settled(self.smtp(), to, want);
        assert!(
            reply.starts_with(want),
            "RCPT TO:<{to}> answered {reply:?}, not {want}\n--- log\n{}\n--- container\n{}",
            self.log(),
            self.postfix.logs()
        );
        if want == "554" {
            assert!(reply.contains(DENIED), "{reply}");
        }
    }

    /// The process table of the container, for failure messages.
    pub(crate) fn processes(&self) -> String {
        self.postfix
            .processes()
            .map(|list| {
                list.iter()
                    .map(|(pid, cmd)| format!("{pid} {cmd}\n"))
                    .collect()
            })
            .unwrap_or_else(|e| format!("{e:#}"))
    }
}

/// First sync, enable and disable, `rollback`, and `check`, over SMTP into the container,
/// through `prefix` (`podman exec` or `podman exec -i`).
fn first_sync_enable_disable_rollback(gw: &ContainerGateway) {
    // First sync: every enabled domain is relayed and routed to the mailbox host.
    let run = gw.sync_expecting(0);
    assert_eq!(run.stderr, "", "{run:?}");
    assert!(
        gw.log().contains("Postfix reloaded successfully"),
        "{}",
        gw.log()
    );
    for domain in [
        "example.com",
        "example.net",
        "example.org",
        "shop.example.jp",
    ] {
        gw.assert_rcpt(&format!("user@{domain}"), "250");
    }
    gw.assert_rcpt("user@old.example", "554");
    gw.assert_rcpt("user@kuma8088.com", "250");
    send(gw.smtp(), "user@example.com", 1).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || delivered(&gw.sink.messages())
            .contains(&1)),
        "not delivered to the mailbox host\n--- container\n{}",
        gw.postfix.logs()
    );
    // No change: nothing to do.
    let run = gw.sync_expecting(0);
    assert!(run.stderr.is_empty(), "{run:?}");
    assert!(gw.log().contains("No changes detected"), "{}", gw.log());

    // Enable: RCPT 250 after the next sync.
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    gw.sync_expecting(0);
    gw.assert_rcpt("user@old.example", "250");
    // Disable: 554 after the next sync.
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net'");
    gw.sync_expecting(0);
    gw.assert_rcpt("user@example.net", "554");
    assert!(
        !gw.transport().contains("example.net "),
        "{}",
        gw.transport()
    );

    // Rollback restores the state before the last sync: example.net relayed again.
    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n--- log\n{}", gw.log());
    gw.assert_rcpt("user@example.net", "250");
    assert!(
        gw.relay_domains().contains("example.net"),
        "{}",
        gw.relay_domains()
    );
    // And the next sync applies the database again.
    gw.sync_expecting(0);
    gw.assert_rcpt("user@example.net", "554");

    let check = gw.run(&["check"]);
    assert!(
        check
            .stdout
            .contains("is the same directory on this host and through the prefix"),
        "{check:?}"
    );
    assert!(!check.stdout.contains("FAIL postfix"), "{check:?}");
}

/// The requirements' topology exactly: the container is `mailserver-postfix` and the prefix
/// is written as the requirements write it, without `-i`. Before the keys went as an
/// argument, every changing sync here failed verification and rolled back (exit 5).
#[test]
fn requirements_topology_with_the_prefix_as_written() {
    let gw = ContainerGateway::start(Some(REQUIREMENTS_NAME), "podman exec", "");
    assert_eq!(gw.postfix.name(), REQUIREMENTS_NAME);
    first_sync_enable_disable_rollback(&gw);
}

/// The same with `podman exec -i`, which passes standard input: both forms work. Then an
/// image without `timeout`: `check` says what the container lacks, and a run changes nothing.
#[test]
fn requirements_topology_with_dash_i() {
    let gw = ContainerGateway::start(None, "podman exec -i", "");
    first_sync_enable_disable_rollback(&gw);

    gw.postfix.exec(&["rm", "/usr/bin/timeout"]).unwrap();
    let check = gw.run(&["check"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check
            .stdout
            .contains("the container has no `timeout` command"),
        "{check:?}"
    );
    let transport = gw.transport();
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    let run = gw.run(&[]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr
            .contains("add coreutils (or busybox) to the image"),
        "{run:?}"
    );
    assert_eq!(gw.transport(), transport);
}

/// Map mode and recipient validation through the container, the prefix written both ways in
/// turn: the tables are built by the container's postmap and answered by its smtpd.
#[test]
fn map_mode_and_recipient_validation_through_the_container() {
    let gw = ContainerGateway::start(
        None,
        "podman exec",
        "RELAY_DOMAINS_MODE=map\nRECIPIENTS_QUERY=SELECT email FROM users WHERE enabled = 1",
    );
    gw.db.grant_recipients().unwrap();
    gw.sync_expecting(0);
    let maps = gw.postfix.maps_dir();
    assert!(
        gw.relay_domains()
            .contains(&format!("hash:{}/relay_domains", maps.display())),
        "{}",
        gw.relay_domains()
    );
    gw.assert_rcpt("alice@example.com", "250");
    gw.assert_rcpt("carol@example.net", "250");
    gw.assert_rcpt("anyone@example.org", "250");
    let reply = rcpt(gw.smtp(), "nobody@example.com");
    assert!(
        reply.starts_with("550") && reply.contains("User unknown in relay recipient table"),
        "{reply}"
    );
    gw.assert_rcpt("user@old.example", "554");

    // With `-i` now: a user and a domain added in the panel.
    gw.edit_config(|text| text.replace("podman exec ", "podman exec -i "));
    gw.sql(
        "UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'; \
         INSERT INTO mailserver_usermgmt.users (email, enabled) VALUES ('frank@example.net', 1)",
    );
    gw.sync_expecting(0);
    gw.assert_rcpt("erin@old.example", "250");
    gw.assert_rcpt("frank@example.net", "250");
    let reply = rcpt(gw.smtp(), "nobody@old.example");
    assert!(reply.starts_with("550"), "{reply}");
    // And back without it: a rollback, then the database again.
    gw.edit_config(|text| text.replace("podman exec -i ", "podman exec "));
    let run = gw.run(&["rollback"]);
    assert_eq!(run.code, 0, "{run:?}\n--- log\n{}", gw.log());
    gw.assert_rcpt("erin@old.example", "554");
    gw.sync_expecting(0);
    gw.assert_rcpt("erin@old.example", "250");
}

/// The maps directory's files and relay_domains, to show a failed run lost nothing.
fn state(gw: &ContainerGateway) -> (String, Vec<u8>) {
    (
        gw.relay_domains(),
        fs::read(gw.postfix.maps_dir().join("transport")).unwrap(),
    )
}

/// The container stops in the middle of a run (at its `postfix reload`): the run fails
/// cleanly (no panic, a failed run recorded), mail for the domains relayed before is accepted
/// once the container is back, and the next run repairs everything, the reload included.
#[test]
fn container_stopped_mid_run_fails_cleanly_and_the_next_run_repairs() {
    let gw = ContainerGateway::start(None, "podman exec", "");
    gw.sync_expecting(0);
    let before = state(&gw);
    // A prefix that stops the container just before it runs `postfix reload`.
    let stopper = gw.dir.path().join("stop-at-reload");
    fs::write(
        &stopper,
        format!(
            "#!/bin/sh\n# Stops the container when relay-sync reaches its reload.\n\
             case \" $* \" in *\" reload \"*) podman stop --time 0 {name} >/dev/null 2>&1;; esac\n\
             exec podman exec \"$@\"\n",
            name = gw.postfix.name()
        ),
    )
    .unwrap();
    fs::set_permissions(&stopper, fs::Permissions::from_mode(0o755)).unwrap();
    gw.edit_config(|text| {
        text.replace(
            "POSTFIX_COMMAND_PREFIX=podman exec ",
            &format!("POSTFIX_COMMAND_PREFIX={} ", stopper.display()),
        )
    });
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    let started = Instant::now();
    let run = gw.run(&[]);
    // The reload failed and so did the rollback (the container is gone): critical, alerted.
    assert_eq!(run.code, 6, "{run:?}\n--- log\n{}", gw.log());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let log = gw.log();
    assert!(
        log.contains("CRITICAL: Manual intervention required"),
        "{log}"
    );
    // The error says what happened: the exec client's own words, and what to look at.
    assert!(
        log.contains("can only create exec sessions on running containers"),
        "{log}"
    );
    assert!(!gw.postfix.is_running());
    let status = gw.run(&["status"]);
    assert!(status.stdout.contains("exit 6 (FAILED)"), "{status:?}");

    // Back, as it was: nothing relayed before is lost.
    gw.postfix.start_again().unwrap();
    gw.edit_config(|text| {
        text.replace(
            &format!("POSTFIX_COMMAND_PREFIX={} ", stopper.display()),
            "POSTFIX_COMMAND_PREFIX=podman exec ",
        )
    });
    for domain in [
        "example.com",
        "example.net",
        "example.org",
        "shop.example.jp",
        "kuma8088.com",
    ] {
        gw.assert_rcpt(&format!("user@{domain}"), "250");
    }
    // Whatever the run left, every relayed domain has its route (the union transport).
    let (relay_domains, _) = state(&gw);
    let transport = gw.transport();
    for domain in relay_domains.split(", ") {
        assert!(
            transport.contains(&format!("\n{domain} smtp:")),
            "{domain}: {transport}"
        );
    }
    for domain in before.0.split(", ") {
        assert!(
            relay_domains.contains(domain),
            "{domain} lost: {relay_domains}"
        );
    }
    // The next run repairs: the domain, its route, and a reload that Postfix logs.
    let reloads = gw.postfix.logs().matches("reload -- version").count();
    gw.sync_expecting(0);
    gw.assert_rcpt("user@old.example", "250");
    assert!(
        gw.transport().contains("old.example "),
        "{}",
        gw.transport()
    );
    assert!(
        gw.postfix.logs().matches("reload -- version").count() > reloads,
        "no reload after the repair:\n{}",
        gw.postfix.logs()
    );
    // Converged.
    gw.sync_expecting(0);
    assert!(last_run_changed_nothing(&gw.log()), "{}", gw.log());
}

/// Whether the last run in `log` found nothing to do.
fn last_run_changed_nothing(log: &str) -> bool {
    log.rsplit("===== Relay Domains Sync Started =====")
        .next()
        .is_some_and(|last| last.contains("No changes detected"))
}

/// Processes in the container that a relay-sync run started (through `podman exec`): the
/// wedged reload's `sleep`, the script around it, the container's `timeout`, any Postfix
/// command. Postfix's own daemons do not count.
fn started_by_relay_sync(gw: &ContainerGateway) -> Vec<String> {
    gw.postfix
        .processes()
        .unwrap()
        .into_iter()
        .map(|(pid, cmd)| format!("{pid} {cmd}"))
        .filter(|line| {
            [
                "sleep",
                "timeout",
                "/usr/sbin/post",
                "postfix.real",
                "postfix-script",
            ]
            .iter()
            .any(|word| line.contains(word))
        })
        .collect()
}

/// A `postfix reload` that hangs inside the container, with `COMMAND_TIMEOUT=3`: the run ends
/// within its limit (the reload and the rollback's reload, 3 s each, and the exec client's
/// grace) and leaves no process it started in the container. Before the container's own
/// `timeout`, the host killed only the exec client, and the `sleep` went on inside (shown with
/// `-i`, with which that code's syncs could reach the reload at all).
#[test]
fn wedged_reload_in_the_container_ends_at_command_timeout_and_leaves_nothing_behind() {
    let gw = ContainerGateway::start(None, "podman exec -i", "COMMAND_TIMEOUT=3");
    gw.sync_expecting(0);
    gw.postfix.wrap_postfix_reload("sleep 300").unwrap();
    assert!(started_by_relay_sync(&gw).is_empty(), "{}", gw.processes());
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    let started = Instant::now();
    let run = gw.run(&[]);
    let took = started.elapsed();
    eprintln!("wedged reload, COMMAND_TIMEOUT=3: the run took {took:?}");
    // A reload past its limit is critical (SPEC §12): exit 6, rolled back.
    assert_eq!(run.code, 6, "{run:?}\n--- log\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("still running after 3s"), "{log}");
    // Two reloads (the sync's and the rollback's) at 3 s each, plus the exec clients.
    assert!(
        took < Duration::from_secs(15),
        "the run took {took:?}\n{log}"
    );
    let left = started_by_relay_sync(&gw);
    assert!(
        left.is_empty(),
        "left in the container after the run:\n{}\n--- all\n{}",
        left.join("\n"),
        gw.processes()
    );
    // And the rollback left every domain relayed before with its route.
    gw.assert_rcpt("user@example.com", "250");
    gw.assert_rcpt("user@old.example", "554");
}

/// ECS on EC2 names a task's containers itself (`ecs-FAMILY-REV-NAME-RANDOM`): fixed words in
/// the prefix cannot name it. The shipped wrapper finds the one running container with the
/// label ECS sets (`com.amazonaws.ecs.container-name`) and runs the command there; with no
/// such container, or two, it refuses and the run changes nothing.
#[test]
fn a_generated_container_name_is_found_by_its_ecs_label() {
    let image = Image::postfix().unwrap();
    let label = "com.amazonaws.ecs.container-name";
    // Unique on this machine: the label alone must find it.
    let value = relay_testbed::unique_name("postfix");
    let postfix =
        PostfixContainer::start_labelled(&image, (label, &value), "kuma8088.com").unwrap();
    let wrapper = relay_testbed::packaging_dir().join("container/relay-sync-container-exec");
    let prefix = format!("{} podman {label}={value}", wrapper.display());
    let gw = ContainerGateway::start_with(postfix, &prefix, "");
    assert!(!gw.postfix.name().contains(&value));
    gw.sync_expecting(0);
    gw.assert_rcpt("user@example.com", "250");
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 1 WHERE name = 'old.example'");
    gw.sync_expecting(0);
    gw.assert_rcpt("user@old.example", "250");

    // A second container with the same label: which one is meant? Nothing is touched.
    let twin = PostfixContainer::start_labelled(&image, (label, &value), "kuma8088.com").unwrap();
    let transport = gw.transport();
    gw.sql("UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'old.example'");
    let run = gw.run(&[]);
    assert_eq!(run.code, 5, "{run:?}\n--- log\n{}", gw.log());
    assert!(
        run.stderr.contains(&format!(
            "2 running containers carry the label {label}={value}"
        )),
        "{run:?}"
    );
    assert_eq!(gw.transport(), transport);
    drop(twin);
    gw.sync_expecting(0);
    gw.assert_rcpt("user@old.example", "554");
}
