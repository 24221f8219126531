//! Postfix commands through `POSTFIX_COMMAND_PREFIX` (`docker exec mailserver-postfix`): how
//! their command lines are built so that the prefix works as the requirements write it, and so
//! that `COMMAND_TIMEOUT` also holds inside the container.
//!
//! Two things a container changes, both reproduced with podman and true of docker:
//!
//! - **No standard input.** `docker exec NAME` and `podman exec NAME` pass none without `-i`,
//!   so a command that reads its input from relay-sync (`postmap -q -`) would read nothing.
//!   Through a prefix nothing relies on it: the lines go to the command as one argument of a
//!   fixed shell script that prints them into its standard input ([`with_lines`]). The prefix
//!   works with and without `-i`.
//! - **A killed client leaves the command running.** Killing the exec client's process group,
//!   which is what the host-side limit does, does not end what it started in the container. So
//!   every command runs under the container's own `timeout` ([`wrap`]): at `COMMAND_TIMEOUT` it
//!   sends `TERM`, a second later `KILL`, to the command's whole process group inside the
//!   container. The host waits [`EXEC_GRACE`] longer, then kills the client as before, for an
//!   exec that hangs by itself (a daemon that does not answer).
//!
//! What the container must have: `/bin/sh` (Postfix's own `postfix-script` needs it) and a
//! `timeout` that takes `-k` (GNU coreutils' on Debian, Ubuntu and RHEL-family images,
//! busybox's on Alpine; GNU's also ends what the command started in the background).

use std::process::ExitStatus;
use std::time::Duration;

use crate::{PostfixError, PostfixSettings};

/// The program that bounds a command inside the container.
pub(crate) const TIMEOUT_PROGRAM: &str = "timeout";

/// How long the host waits beyond `COMMAND_TIMEOUT` before it kills the exec client itself:
/// the container's `timeout` sends `KILL` one second after `TERM`, and the client then needs a
/// moment to report the exit.
pub(crate) const EXEC_GRACE: Duration = Duration::from_secs(2);

/// Seconds between the container's `timeout` sending `TERM` and sending `KILL`.
const KILL_AFTER: &str = "1";

/// The shell that feeds the lines: always there, since `postfix` itself runs a shell script.
const SHELL: &str = "/bin/sh";

/// Prints its first argument (the lines) into the standard input of the command made of the
/// remaining arguments. Fixed text: the lines and the command are arguments, never parsed as
/// shell words, so no key can inject one.
const FEED_LINES: &str = r#"lines=$1; shift; printf '%s' "$lines" | "$@""#;

/// The most bytes of lines handed to one command: far below Linux's 128 KiB for one argument,
/// and below what `docker exec` passes through its API without complaint.
pub(crate) const LINES_LIMIT: usize = 32 * 1024;

/// The argument vector that runs `command` through `prefix` bounded by `limit` inside the
/// container: `PREFIX… timeout -k 1 SECONDS COMMAND…`. Without a prefix, `command` itself.
pub(crate) fn wrap(prefix: &[String], limit: Duration, command: Vec<String>) -> Vec<String> {
    if prefix.is_empty() {
        return command;
    }
    let mut argv = prefix.to_vec();
    argv.extend([
        TIMEOUT_PROGRAM.to_owned(),
        "-k".to_owned(),
        KILL_AFTER.to_owned(),
        seconds(limit),
    ]);
    argv.extend(command);
    argv
}

/// The argument vector that runs `command` through `prefix` with `lines` (each ending in a
/// line break) on its standard input, without relying on the prefix to pass standard input;
/// and the command line as errors name it, with the lines counted rather than listed.
pub(crate) fn with_lines(
    prefix: &[String],
    limit: Duration,
    command: Vec<String>,
    lines: &str,
) -> (Vec<String>, String) {
    let shown = format!(
        "{} '{FEED_LINES}' sh <{} line(s)> {}",
        wrap(prefix, limit, vec![SHELL.to_owned(), "-c".to_owned()]).join(" "),
        lines.lines().count(),
        command.join(" ")
    );
    let mut fed = vec![
        SHELL.to_owned(),
        "-c".to_owned(),
        FEED_LINES.to_owned(),
        "sh".to_owned(),
        lines.to_owned(),
    ];
    fed.extend(command);
    (wrap(prefix, limit, fed), shown)
}

/// Runs `command` bounded by `COMMAND_TIMEOUT`, with `MAIL_CONFIG` left out of its
/// environment: on this host, its process group is killed at the limit; through a prefix, the
/// container's `timeout` ([`wrap`]) ends it there and the exec client is killed
/// [`EXEC_GRACE`] later if it has not returned by then. Either way a command past the limit
/// is [`PostfixError::Timeout`]. Returns the exit status and both outputs, and logs how long
/// it took.
pub(crate) fn run_bounded(
    settings: &PostfixSettings,
    command: relay_process::Command,
) -> Result<(ExitStatus, String, String), PostfixError> {
    let limit = settings.command_timeout;
    let through_prefix = !settings.command_prefix.is_empty();
    let command = command
        .env_remove("MAIL_CONFIG")
        .timeout(if through_prefix {
            limit.saturating_add(EXEC_GRACE)
        } else {
            limit
        });
    let started = std::time::Instant::now();
    let output = command.run()?;
    let elapsed = started.elapsed();
    tracing::debug!(
        "`{}` exited with {} after {} ms",
        command.command_line(),
        output.status,
        elapsed.as_millis()
    );
    if through_prefix && ended_by_timeout(&output.status, elapsed, limit) {
        return Err(PostfixError::Timeout {
            command: command.command_line().to_owned(),
            after: limit,
        });
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if through_prefix && lacks_timeout(&stderr) {
        stderr.push_str(MISSING_TIMEOUT);
    }
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    ))
}

/// Said after the exec client's own words when the container has no `timeout`.
const MISSING_TIMEOUT: &str = "; the container has no `timeout` command, which relay-sync runs \
                               every command through so that COMMAND_TIMEOUT also ends it there: \
                               add coreutils (or busybox) to the image (docs/containers.md)";

/// Whether the exec client says the container has no `timeout` to run (docker: `exec:
/// "timeout": executable file not found in $PATH`; podman through runc the same).
fn lacks_timeout(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        line.contains(&format!("\"{TIMEOUT_PROGRAM}\""))
            && (line.contains("not found") || line.contains("No such file"))
    })
}

/// Whether `status` is the container's `timeout` reporting that it ended the command: 124
/// (ended by `TERM`) or 137 (`KILL`, which ends `timeout` too), after at least `limit`. A
/// command's own exit 124 before the limit is its own.
pub(crate) fn ended_by_timeout(status: &ExitStatus, elapsed: Duration, limit: Duration) -> bool {
    matches!(status.code(), Some(124 | 137)) && elapsed >= limit
}

/// `120`, `2.5`, `0.001`: a limit as `timeout` reads it. Never `0`, which would mean no limit.
fn seconds(limit: Duration) -> String {
    let millis = limit.as_millis().max(1);
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{}.{:03}", millis / 1000, millis % 1000)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn without_a_prefix_the_command_is_run_as_it_is() {
        let command = words("/usr/sbin/postfix reload");
        assert_eq!(wrap(&[], Duration::from_secs(3), command.clone()), command);
    }

    #[test]
    fn through_a_prefix_the_container_bounds_the_command() {
        let argv = wrap(
            &words("docker exec mailserver-postfix"),
            Duration::from_secs(120),
            words("/usr/sbin/postfix reload"),
        );
        assert_eq!(
            argv.join(" "),
            "docker exec mailserver-postfix timeout -k 1 120 /usr/sbin/postfix reload"
        );
        let argv = wrap(
            &words("podman exec -i c"),
            Duration::from_millis(2500),
            words("/usr/sbin/postmap x"),
        );
        assert_eq!(
            argv.join(" "),
            "podman exec -i c timeout -k 1 2.500 /usr/sbin/postmap x"
        );
    }

    #[test]
    fn limits_are_written_as_timeout_reads_them_and_never_zero() {
        assert_eq!(seconds(Duration::from_secs(3)), "3");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
        assert_eq!(seconds(Duration::from_micros(10)), "0.001");
        assert_eq!(seconds(Duration::ZERO), "0.001");
    }

    #[test]
    fn lines_are_one_argument_of_a_fixed_script_and_counted_in_the_shown_command() {
        let lines = "a.example\nb.example\n";
        let (argv, shown) = with_lines(
            &words("podman exec mailserver-postfix"),
            Duration::from_secs(120),
            words("/usr/sbin/postmap -q - hash:/etc/postfix/transport"),
            lines,
        );
        let mut expected = words("podman exec mailserver-postfix timeout -k 1 120 /bin/sh -c");
        expected.extend([FEED_LINES.to_owned(), "sh".to_owned(), lines.to_owned()]);
        expected.extend(words("/usr/sbin/postmap -q - hash:/etc/postfix/transport"));
        assert_eq!(argv, expected);
        assert_eq!(
            shown,
            format!(
                "podman exec mailserver-postfix timeout -k 1 120 /bin/sh -c '{FEED_LINES}' sh \
                 <2 line(s)> /usr/sbin/postmap -q - hash:/etc/postfix/transport"
            )
        );
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn the_script_feeds_the_lines_and_runs_the_command_with_its_status() {
        // The script itself, on this host: `cat` gets the lines on stdin, verbatim, and hostile
        // text stays data.
        let lines = "a.example\n$(touch /nonexistent/x)\n`id`;*\n";
        let output = std::process::Command::new(SHELL)
            .args(["-c", FEED_LINES, "sh", lines, "cat"])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout), lines);
        let status = std::process::Command::new(SHELL)
            .args(["-c", FEED_LINES, "sh", "x\n", "sh", "-c", "exit 3"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_container_without_timeout_is_told_apart_from_a_missing_postfix_command() {
        // podman 4.3 with runc, as measured; docker's message has the same words.
        assert!(lacks_timeout(
            "Error: runc: exec failed: unable to start container process: exec: \"timeout\": \
             executable file not found in $PATH: OCI runtime attempted to invoke a command that \
             was not found"
        ));
        assert!(lacks_timeout(
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \
             \"timeout\": executable file not found in $PATH: unknown"
        ));
        assert!(!lacks_timeout(
            "timeout: failed to run command '/usr/sbin/postmap': No such file or directory"
        ));
        assert!(!lacks_timeout(
            "postmap: fatal: open database x.db: No such file or directory"
        ));
    }

    #[test]
    fn only_timeouts_own_statuses_after_the_limit_are_timeouts() {
        let limit = Duration::from_secs(3);
        let exit = |code: i32| ExitStatus::from_raw(code << 8);
        assert!(ended_by_timeout(&exit(124), Duration::from_secs(3), limit));
        assert!(ended_by_timeout(&exit(137), Duration::from_secs(4), limit));
        assert!(!ended_by_timeout(&exit(124), Duration::from_secs(1), limit));
        assert!(!ended_by_timeout(&exit(1), Duration::from_secs(5), limit));
    }
}
