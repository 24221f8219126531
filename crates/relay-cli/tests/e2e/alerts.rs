//! Failure tracking and alerts (SPEC §7) with the built binary: the state in `STATE_DIR`
//! across runs, `ALERT_COMMAND` and alert mail (lettre) delivered to smtp-sink, the alert on
//! the 5th consecutive failure, on every reload failure and on recovery, the document's
//! `Database unreachable for 3 consecutive runs` line, and alerts that fail without changing
//! the run's exit code.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_testbed::SmtpSink;

use crate::gateway::Gateway;
use crate::smtp::wait_until;

/// An `ALERT_COMMAND` script that appends `SEVERITY|SUBJECT|first line of stdin` to `alerts`.
fn alert_script(dir: &Path) -> (PathBuf, PathBuf) {
    let alerts = dir.join("alerts.log");
    let script = dir.join("alert.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nbody=$(head -n 1)\n\
             echo \"$RELAY_SYNC_ALERT_SEVERITY|$RELAY_SYNC_ALERT_SUBJECT|$body\" >> '{}'\n",
            alerts.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, alerts)
}

/// A gateway that alerts through a recording script and by mail to `sink`.
fn alerting_gateway(sink: &SmtpSink) -> (Gateway, PathBuf, tempfile::TempDir) {
    let scripts = tempfile::tempdir().unwrap();
    let (script, alerts) = alert_script(scripts.path());
    let gw = Gateway::start(
        "kuma8088.com",
        &format!(
            "ALERT_COMMAND={}\nALERT_EMAIL_TO=ops@relay-sync.test\nALERT_EMAIL_FROM=relay-sync@mx.relay-sync.test\n\
             ALERT_SMTP_HOST=127.0.0.1\nALERT_SMTP_PORT={}\nALERT_AFTER_FAILURES=5",
            script.display(),
            sink.port()
        ),
    );
    (gw, alerts, scripts)
}

fn alerts(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn subjects(sink: &SmtpSink) -> Vec<String> {
    let mut subjects: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        .collect();
    subjects.sort();
    subjects
}

fn state(gw: &Gateway) -> String {
    fs::read_to_string(gw.dir.path().join("state/state")).unwrap()
}

/// Six runs without the database: the `Database unreachable` line from the 3rd on, one warning
/// alert (command and mail) at the 5th, the counters in STATE_DIR; then a recovery notice.
#[test]
fn database_outage_alerts_at_the_5th_failure_and_on_recovery() {
    let sink = SmtpSink::start().unwrap();
    let (mut gw, alert_log, _scripts) = alerting_gateway(&sink);
    gw.sync_expecting(0);
    gw.db.stop().unwrap();
    for run in 1..=6u32 {
        let before = gw.log().len();
        let result = gw.sync_expecting(3);
        let log = gw.log()[before..].to_owned();
        let line = format!("ERROR: Database unreachable for {run} consecutive runs");
        assert_eq!(log.contains(&line), run >= 3, "run {run}:\n{log}");
        if run >= 3 {
            // Under cron, the monitoring line reaches cron's mail too.
            assert!(result.stderr.contains(&line), "{result:?}");
        }
        assert!(
            state(&gw).contains(&format!("CONSECUTIVE_FAILURES={run}")),
            "run {run}: {}",
            state(&gw)
        );
        let expected = usize::from(run >= 5);
        assert_eq!(
            alerts(&alert_log).len(),
            expected,
            "run {run}: {:?}",
            alerts(&alert_log)
        );
    }
    let alert = &alerts(&alert_log)[0];
    assert!(
        alert.starts_with("warning|relay-sync on ")
            && alert.contains(": 5 consecutive failed runs|"),
        "{alert}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || subjects(&sink).len() == 1),
        "{:?}\n{}",
        subjects(&sink),
        gw.log()
    );
    assert!(subjects(&sink)[0].ends_with(": 5 consecutive failed runs"));
    let state_text = state(&gw);
    for field in ["CONSECUTIVE_DB_FAILURES=6", "ALERTED=yes", "LAST_EXIT=3"] {
        assert!(state_text.contains(field), "{field} in\n{state_text}");
    }

    gw.db.start_again().unwrap();
    gw.sync_expecting(0);
    let all = alerts(&alert_log);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all[1].starts_with("recovery|") && all[1].contains(": recovered|"),
        "{all:?}"
    );
    assert!(wait_until(Duration::from_secs(10), || subjects(&sink)
        .len()
        == 2));
    assert!(
        subjects(&sink).iter().any(|s| s.ends_with(": recovered")),
        "{:?}",
        subjects(&sink)
    );
    let state_text = state(&gw);
    for field in ["CONSECUTIVE_FAILURES=0", "ALERTED=no", "LAST_EXIT=0"] {
        assert!(state_text.contains(field), "{field} in\n{state_text}");
    }
    assert!(
        gw.log().contains("INFO: Alert sent via ALERT_COMMAND"),
        "{}",
        gw.log()
    );
    assert!(gw
        .log()
        .contains("INFO: Alert mailed to ops@relay-sync.test via 127.0.0.1:"));
}

/// Every reload failure alerts at once, at critical severity, long before the 5th failure.
#[test]
fn every_reload_failure_alerts_critical() {
    let sink = SmtpSink::start().unwrap();
    let (mut gw, alert_log, _scripts) = alerting_gateway(&sink);
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('late.example', 1)");
    gw.postfix.stop().unwrap();
    gw.sync_expecting(6);
    gw.sync_expecting(6);
    let all = alerts(&alert_log);
    assert_eq!(all.len(), 2, "{all:?}");
    for alert in &all {
        assert!(
            alert.starts_with("critical|")
                && alert.contains("CRITICAL, manual intervention required"),
            "{alert}"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || subjects(&sink)
        .len()
        == 2));
    gw.postfix.start_again().unwrap();
    gw.sync_expecting(0);
    let all = alerts(&alert_log);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[2].starts_with("recovery|"), "{all:?}");
}

/// An alert command that fails and a mail relay that is down are logged; the exit codes stay
/// 3, 6 and 0.
#[test]
fn failing_alerts_never_change_the_exit_code() {
    let closed = relay_testbed::free_port().unwrap();
    let mut gw = Gateway::start(
        "kuma8088.com",
        &format!(
            "ALERT_COMMAND=echo alert-command-broken >&2; exit 7\nALERT_EMAIL_TO=ops@relay-sync.test\n\
             ALERT_SMTP_HOST=127.0.0.1\nALERT_SMTP_PORT={closed}\nALERT_AFTER_FAILURES=1"
        ),
    );
    gw.sync_expecting(0);
    gw.db.stop().unwrap();
    gw.sync_expecting(3);
    gw.db.start_again().unwrap();
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('late.example', 1)");
    gw.postfix.stop().unwrap();
    gw.sync_expecting(6);
    gw.postfix.start_again().unwrap();
    gw.sync_expecting(0);
    let log = gw.log();
    // The streak alert (exit 3), the critical one (exit 6) and the recovery notice: each
    // tried both ways and failed both ways, and each undelivered one tried again by every
    // later run (at least once delivery): 1 + 2 + 3 attempts per way.
    assert_eq!(log.matches("ERROR: Alert command `").count(), 6, "{log}");
    assert!(log.contains("alert-command-broken"), "{log}");
    assert_eq!(
        log.matches("ERROR: Alert mail to ops@relay-sync.test via 127.0.0.1:")
            .count(),
        6,
        "{log}"
    );
    assert!(state(&gw).contains("LAST_EXIT=0"), "{}", state(&gw));
}

/// At least once: the outage that stops the database can stop the alert's way out too. An
/// alert the command could not take is kept, retried by every later run, and delivered before
/// the recovery notice once the command works again.
#[test]
fn an_undelivered_alert_is_delivered_by_a_later_run() {
    let scripts = tempfile::tempdir().unwrap();
    let (script, alert_log) = alert_script(scripts.path());
    let up = scripts.path().join("alerts-can-go-out");
    let gated = scripts.path().join("gated-alert.sh");
    fs::write(
        &gated,
        format!(
            "#!/bin/sh
test -e '{}' || {{ echo 'alert relay unreachable' >&2; exit 1; }}
exec '{}'\n",
            up.display(),
            script.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&gated, fs::Permissions::from_mode(0o755)).unwrap();
    let mut gw = Gateway::start(
        "kuma8088.com",
        &format!("ALERT_COMMAND={}\nALERT_AFTER_FAILURES=2", gated.display()),
    );
    gw.sync_expecting(0);
    gw.db.stop().unwrap();
    gw.sync_expecting(3);
    gw.sync_expecting(3); // The streak's warning is due now, and cannot go out.
    gw.sync_expecting(3); // Retried, still cannot.
    assert!(alerts(&alert_log).is_empty());
    assert_eq!(gw.log().matches("ERROR: Alert command `").count(), 2);

    fs::write(&up, "").unwrap();
    gw.sync_expecting(3); // Retried, and delivered: no new warning is due in this run.
    let all = alerts(&alert_log);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].starts_with("warning|"), "{all:?}");

    gw.db.start_again().unwrap();
    gw.sync_expecting(0);
    let all = alerts(&alert_log);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].starts_with("recovery|"), "{all:?}");
    // Nothing is left waiting.
    assert!(!gw.dir.path().join("state/alerts.pending").exists());
}
