//! Runs an operator-supplied command (`DB_PASSWORD_COMMAND`, `ALERT_COMMAND`) under
//! `/bin/sh -c`, with a time limit, without ever blocking on a full pipe.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest stderr excerpt carried into an error message.
pub(crate) const STDERR_LIMIT: usize = 1000;

/// What a finished command produced.
#[derive(Debug)]
pub(crate) struct ShellOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// Why a command produced no output.
#[derive(Debug)]
pub(crate) enum ShellError {
    /// `/bin/sh` could not be started or waited for.
    Spawn(std::io::Error),
    /// The command ran past its limit and was killed.
    Timeout,
}

/// Runs `command` with `stdin` (or none) and extra `env`, bounded by `timeout`.
///
/// Both output pipes are drained by threads so that a chatty command cannot block on a full
/// pipe, and stdin is fed by another. A killed command may leave children holding the pipes;
/// their reader threads are then abandoned rather than waited for.
pub(crate) fn run(
    command: &str,
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<ShellOutput, ShellError> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ShellError::Spawn)?;
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        let input = input.to_vec();
        // A command that does not read its stdin makes this fail with EPIPE; that is its choice.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                // Killing and reaping can only fail if the child is already gone.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ShellError::Timeout);
            }
            Err(source) => return Err(ShellError::Spawn(source)),
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let stdout = stdout
        .recv_timeout(remaining)
        .map_err(|_| ShellError::Timeout)?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let stderr = stderr.recv_timeout(remaining).unwrap_or_default();
    Ok(ShellOutput {
        status,
        stdout,
        stderr,
    })
}

/// Reads a pipe to its end on a thread; the receiver gets the bytes (possibly partial when the
/// read failed).
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = sender.send(bytes);
    });
    receiver
}

/// The trimmed start of a command's stderr, at most [`STDERR_LIMIT`] bytes.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.len() <= STDERR_LIMIT {
        return text.to_owned();
    }
    let mut end = STDERR_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
