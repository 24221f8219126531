//! The runner against real processes: `/bin/sh`, `sleep`, `cat`, `env`.

#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

use std::path::Path;
use std::time::{Duration, Instant};

use relay_process::{Capture, Command, RunError};

/// A loose bound for calls limited to a second or two: far above the limit on a loaded
/// machine, far below "hangs" (the commands under test sleep for 300 s).
const BOUNDED: Duration = Duration::from_secs(20);

/// Whether `pid` is a live process: a zombie counts as gone, since whoever reaps orphans in
/// this container may not do it at once.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized name, which may itself contain spaces.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

/// Waits up to 5 s for `pid` to be gone: SIGKILL is delivered at once but the process takes a
/// moment to exit.
fn gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_pid(path: &Path) -> u32 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < until, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > '{}'; sleep 300", pidfile.display());
    let started = Instant::now();
    let error = Command::shell(&script)
        .timeout(Duration::from_secs(1))
        .run()
        .unwrap_err();
    assert!(started.elapsed() < BOUNDED, "took {:?}", started.elapsed());
    assert!(
        matches!(&error, RunError::Timeout { after, .. } if *after == Duration::from_secs(1)),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("`{script}` still running after 1s; its process group was killed")
    );
    let grandchild = read_pid(&pidfile);
    assert!(gone(grandchild), "the grandchild {grandchild} survived");
}

#[test]
fn a_descendant_holding_the_pipes_cannot_hold_the_call() {
    // The shell exits at once; the sleep it leaves behind keeps stdout open.
    let started = Instant::now();
    let error = Command::new(["sh", "-c", "sleep 300 & echo started"])
        .timeout(Duration::from_secs(1))
        .run()
        .unwrap_err();
    assert!(started.elapsed() < BOUNDED, "took {:?}", started.elapsed());
    assert!(matches!(error, RunError::Timeout { .. }), "{error:?}");
}

#[test]
fn output_files_return_when_the_command_itself_exits() {
    let started = Instant::now();
    let output = Command::new(["sh", "-c", "sleep 300 & echo $!; echo warned >&2"])
        .capture(Capture::Files)
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert!(started.elapsed() < BOUNDED, "took {:?}", started.elapsed());
    assert!(output.status.success());
    assert_eq!(output.stderr, b"warned\n");
    let background: u32 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // It was not part of the command's work: left running, as a shell would. Clean up.
    assert!(alive(background));
    let killed = Command::new(["kill", "-9", &background.to_string()])
        .run()
        .unwrap();
    assert!(killed.status.success());
    assert!(gone(background));
}

#[test]
fn secrets_are_not_inherited() {
    // This test binary's other tests do not read these variables, and std serializes the
    // environment's use by Command::spawn with set_var.
    std::env::set_var("RELAY_SYNC_DB_PASSWORD", "hunter2-secret");
    std::env::set_var("RELAY_SYNC_DB_HOST", "db.internal");
    std::env::set_var("MYSQL_PWD", "mysql-secret");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "aws-secret-key");
    std::env::set_var("AWS_SESSION_TOKEN", "aws-session-token");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID");
    std::env::set_var("RELAY_PROCESS_TEST_KEPT", "kept");
    let output = Command::new(["env"])
        .env("RELAY_SYNC_ALERT_SEVERITY", "critical")
        .run()
        .unwrap();
    let env = String::from_utf8(output.stdout).unwrap();
    assert!(!env.contains("hunter2-secret"), "{env}");
    assert!(!env.contains("mysql-secret"), "{env}");
    assert!(!env.contains("RELAY_SYNC_DB_HOST"), "{env}");
    for aws in [
        "aws-secret-key",
        "aws-session-token",
        "AKIAEXAMPLEKEYID",
        "AWS_",
    ] {
        assert!(!env.contains(aws), "{aws} reached the child: {env}");
    }
    assert!(
        env.lines()
            .any(|l| l == "RELAY_SYNC_ALERT_SEVERITY=critical"),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l == "RELAY_PROCESS_TEST_KEPT=kept"),
        "{env}"
    );
    // The shell helper goes the same way.
    let output = Command::shell("echo \"[$RELAY_SYNC_DB_PASSWORD$MYSQL_PWD$AWS_SESSION_TOKEN]\"")
        .run()
        .unwrap();
    assert_eq!(output.stdout, b"[]\n");
}

#[test]
fn removed_variables_are_not_passed() {
    std::env::set_var("RELAY_PROCESS_TEST_REMOVED", "x");
    let output = Command::new(["env"])
        .env_remove("RELAY_PROCESS_TEST_REMOVED")
        .run()
        .unwrap();
    let env = String::from_utf8(output.stdout).unwrap();
    assert!(!env.contains("RELAY_PROCESS_TEST_REMOVED"), "{env}");
}

#[test]
fn stdin_round_trips_while_stdout_is_drained() {
    // Larger than a pipe's buffer both ways: feeding and draining must overlap.
    let input: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let output = Command::new(["cat"]).stdin(input.clone()).run().unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), input.len());
    assert!(output.stdout == input);
}

#[test]
fn a_command_that_ignores_its_stdin_is_not_an_error() {
    let output = Command::new(["true"])
        .stdin(vec![b'x'; 1_000_000])
        .run()
        .unwrap();
    assert!(output.status.success());
}

#[test]
fn ten_megabytes_on_both_outputs_do_not_deadlock() {
    let output = Command::shell("head -c 10000000 /dev/zero; head -c 10000000 /dev/zero >&2")
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), 10_000_000);
    assert_eq!(output.stderr.len(), 10_000_000);
}

#[test]
fn status_and_both_outputs_come_back() {
    for capture in [Capture::Pipes, Capture::Files] {
        let output = Command::shell("echo out; echo err >&2; exit 3")
            .capture(capture)
            .run()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{capture:?}");
        assert_eq!(output.stdout, b"out\n", "{capture:?}");
        assert_eq!(output.stderr, b"err\n", "{capture:?}");
    }
}

#[test]
fn a_missing_program_is_a_clear_spawn_error() {
    let error = Command::new(["/nonexistent/sbin/postfix", "reload"])
        .run()
        .unwrap_err();
    assert!(matches!(error, RunError::Spawn { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("cannot run `/nonexistent/sbin/postfix reload`: "),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    let error = Command::new(Vec::<String>::new()).run().unwrap_err();
    assert_eq!(error.to_string(), "cannot run ``: empty command line");
}
