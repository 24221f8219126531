//! `COMMAND_TIMEOUT`: a command that never returns (a wedged `postfix reload` or `docker
//! exec`, a secrets CLI waiting on a dead network) is killed with everything it started, and
//! the run ends as SPEC §8 says instead of holding the lock forever.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::smtp::wait_until;

/// Far above the few seconds a timed-out run needs on a loaded machine, far below the 300 s
/// the stand-ins sleep.
const BOUNDED: Duration = Duration::from_secs(30);

/// Whether `pid` is a live process; a zombie waiting for whoever reaps orphans counts as gone.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X') | None
        )
    })
}

/// The pids a stand-in recorded, one a line.
fn pids(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect()
}

/// A reload that never returns and leaves a sleeping child behind: a sync that must reload is
/// critical (exit 6) within the limit plus a few seconds, main.cf and the transport map are
/// restored, nothing the reload started survives, and the critical alert goes out. The alert
/// command does not see relay-sync's password.
#[test]
fn a_wedged_reload_is_killed_rolled_back_and_alerted() {
    let scripts = tempfile::tempdir().unwrap();
    let alerts = scripts.path().join("alerts.log");
    let alert = scripts.path().join("alert.sh");
    fs::write(
        &alert,
        format!(
            "#!/bin/sh\nbody=$(head -n 1)\n\
             echo \"$RELAY_SYNC_ALERT_SEVERITY|$body|$(env | grep -c RELAY_SYNC_DB_PASSWORD)\" >> '{}'\n",
            alerts.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&alert, fs::Permissions::from_mode(0o755)).unwrap();
    let gw = Gateway::start(
        "kuma8088.com",
        &format!("ALERT_COMMAND={}\nCOMMAND_TIMEOUT=3", alert.display()),
    );
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('pending.example', 1)");
    let (main_cf, transport, relay_domains) = (gw.main_cf(), gw.transport(), gw.relay_domains());

    let started_pids = gw.dir.path().join("reload.pids");
    let commands = gw.stand_in_commands(
        "wedged-reload",
        &[(
            "postfix",
            &format!(
                r#"case " $* " in *" reload "*)
  sleep 300 & echo $! >> '{pids}'; echo $$ >> '{pids}'; sleep 300;;
esac
exec /usr/sbin/postfix "$@""#,
                pids = started_pids.display()
            ),
        )],
    );
    let started = Instant::now();
    let run = gw.sync_env_expecting(
        &[
            ("POSTFIX_COMMAND_DIR", commands.to_str().unwrap()),
            // Also in the file; from the environment it must still not reach the alert.
            ("DB_PASSWORD", "relay-sync-test-pw"),
        ],
        6,
    );
    let took = started.elapsed();
    assert!(took < BOUNDED, "took {took:?}");

    assert_eq!(gw.main_cf(), main_cf, "{}", gw.log());
    assert_eq!(gw.transport(), transport);
    assert_eq!(gw.relay_domains(), relay_domains);
    assert_eq!(gw.lookup("pending.example"), None);

    // The forward reload and the rollback's: each started a script and its sleeping child.
    let pids = pids(&started_pids);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(
        wait_until(Duration::from_secs(5), || !pids
            .iter()
            .any(|&pid| alive(pid))),
        "still running: {:?}",
        pids.iter().filter(|&&pid| alive(pid)).collect::<Vec<_>>()
    );

    let log = gw.log();
    for line in [
        "postfix reload failed: `",
        "reload` still running after 3s; its process group was killed",
        "Rolling back to previous configuration",
        "ERROR: CRITICAL: Manual intervention required",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
    assert!(run.stderr.contains("CRITICAL"), "{run:?}");
    let sent = fs::read_to_string(&alerts).unwrap_or_default();
    assert!(sent.starts_with("critical|"), "{sent}");
    assert!(
        sent.trim_end().ends_with("|0"),
        "the alert saw the password: {sent}"
    );

    // With a reload that works again, the next run applies the change.
    gw.sync_expecting(0);
    assert!(gw.relay_domains().contains("pending.example"));
}

/// A `DB_PASSWORD_COMMAND` that never returns: the run stops at `COMMAND_TIMEOUT` like a
/// database that cannot be reached (exit 3), says which command and which limit, and what the
/// command started is gone.
#[test]
fn a_hanging_password_command_is_bounded() {
    let gw = Gateway::start("kuma8088.com", "COMMAND_TIMEOUT=2");
    let pidfile = gw.dir.path().join("password.pid");
    let command = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    gw.edit_config(|text| {
        text.replace(
            "DB_PASSWORD=relay-sync-test-pw",
            &format!("DB_PASSWORD_COMMAND={command}"),
        )
    });
    let before = gw.main_cf();
    let started = Instant::now();
    let run = gw.sync_expecting(3);
    let took = started.elapsed();
    assert!(took < BOUNDED, "took {took:?}");
    let expected = format!(
        "DB_PASSWORD_COMMAND `{command}` still running after 2s (COMMAND_TIMEOUT); its process \
         group was killed"
    );
    assert!(run.stderr.contains(&expected), "{run:?}");
    let pid = pids(&pidfile)[0];
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "the password command's child {pid} survived"
    );
    assert_eq!(gw.main_cf(), before);
}
