//! The one process runner of relay-sync: every program relay-sync starts (`postconf`,
//! `postmap`, `postfix`, a `POSTFIX_COMMAND_PREFIX` such as `docker exec`,
//! `DB_PASSWORD_COMMAND`, `ALERT_COMMAND`) goes through [`Command::run`].
//!
//! What it guarantees, so that no caller has to remember it:
//!
//! - **A time limit.** The child runs in a process group of its own; past the limit the whole
//!   group is killed with `SIGKILL` and reaped, and the call returns [`RunError::Timeout`],
//!   naming the command and the limit. A wedged `postfix reload` or `docker exec` cannot hold
//!   the run lock forever, and the children it started do not outlive it.
//! - **A bounded call.** Output is read and input written by one `poll(2)` loop on the calling
//!   thread, so a chatty command cannot deadlock on a full pipe, and a descendant that keeps
//!   the output pipes open cannot make the call outlast its limit: no thread is left behind.
//! - **No secret in the child's environment.** The inherited variables [`NOT_INHERITED`]
//!   lists (`MYSQL_PWD`, every `RELAY_SYNC_*` and every `AWS_*`) are removed before the
//!   variables given with [`Command::env`] are added.
//!
//! ```no_run
//! use std::time::Duration;
//! use relay_process::Command;
//!
//! let output = Command::new(["/usr/sbin/postconf", "-h", "relay_domains"])
//!     .timeout(Duration::from_secs(120))
//!     .run()?;
//! assert!(output.status.success());
//! # Ok::<(), relay_process::RunError>(())
//! ```
//!
//! Architecture invariant: nothing else that ships spawns a process (relay-testbed and xtask are
//! test and build tools).
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The limit of a [`Command`] that was given none: `COMMAND_TIMEOUT`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The inherited variables no child receives: a name, or a prefix when it ends in `*`.
///
/// - `RELAY_SYNC_*`: any key of the config may come from there, `RELAY_SYNC_DB_PASSWORD`
///   among them, and a child has no use for relay-sync's configuration.
/// - `MYSQL_PWD`: MariaDB's clients read the password from it.
/// - `AWS_*`: `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are credentials, and the rest
///   (`AWS_PROFILE`, `AWS_CONFIG_FILE`, `AWS_CONTAINER_CREDENTIALS_*`) lead to them. They are
///   for relay-sync's own SNS and Secrets Manager calls; a `DB_PASSWORD_COMMAND` that runs the
///   AWS CLI names its region (`--region`) and finds its credentials as the CLI does without
///   them (the instance profile, root's `~/.aws`).
///
/// Variables given with [`Command::env`] are added after, so relay-sync's own
/// `RELAY_SYNC_ALERT_SEVERITY` reaches the alert command. SECURITY.md documents this list.
pub const NOT_INHERITED: &[&str] = &["RELAY_SYNC_*", "MYSQL_PWD", "AWS_*"];

/// Longest stderr excerpt [`excerpt`] returns, in bytes.
pub const STDERR_LIMIT: usize = 1000;

/// How long a killed process group is given to be reaped. `SIGKILL` cannot be caught, so this
/// is only reached by a process stuck in the kernel (a hung NFS mount); it is then left behind
/// rather than holding the caller.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// How often the child is checked for when the kernel cannot say when it exits (no
/// `pidfd_open(2)`: Linux before 5.3, or another Unix).
const EXIT_POLL: Duration = Duration::from_millis(2);

/// A program to run, with its input, extra environment and time limit.
///
/// Built with [`Command::new`] (an argument vector, no shell) or [`Command::shell`]
/// (`/bin/sh -c`), adjusted with the builder methods, and run with [`Command::run`] as often
/// as needed.
#[derive(Debug, Clone)]
pub struct Command {
    argv: Vec<OsString>,
    /// The command line as errors and logs name it.
    shown: String,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    timeout: Duration,
    capture: Capture,
}

/// Where a command's stdout and stderr go while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Capture {
    /// Pipes read while the command runs. The call returns once the command has exited and
    /// every process holding the pipes (its descendants too) has closed them.
    #[default]
    Pipes,
    /// Unnamed temporary files, read back when the command itself has exited. For a command
    /// that ends by starting something in the background (`postfix reload` starts
    /// `postsuper`), which would keep pipes open for a while after the command is done.
    /// Without a temporary file (`TMPDIR` full or unwritable) the command runs with pipes and
    /// a warning is logged.
    Files,
}

/// What a command that ran to its end produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// Why a command gave no [`Output`]. Every variant names the command line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The command could not be started (a missing program, no permission, no process left).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command, or a process it started that kept its output open, ran past the limit;
    /// its whole process group was killed.
    #[error("`{command}` still running after {}; its process group was killed", seconds(*after))]
    Timeout {
        /// The command line.
        command: String,
        /// The limit it ran into.
        after: Duration,
    },
    /// Waiting for the command or reading its output failed; its process group was killed.
    #[error("lost track of `{command}`: {source}; its process group was killed")]
    Wait {
        /// The command line.
        command: String,
        /// The OS error.
        source: io::Error,
    },
}

impl RunError {
    /// The command line the error is about.
    pub fn command(&self) -> &str {
        match self {
            RunError::Spawn { command, .. }
            | RunError::Timeout { command, .. }
            | RunError::Wait { command, .. } => command,
        }
    }
}

/// `120s`, `0.5s`: a limit as an operator wrote it.
fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

impl Command {
    /// Runs `argv[0]` (a path, or a name looked up in `PATH`) with the rest as its arguments,
    /// no shell involved. No input (stdin is `/dev/null`), output through pipes, a limit of
    /// [`DEFAULT_TIMEOUT`].
    pub fn new<I, S>(argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        Command {
            argv,
            shown,
            stdin: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            capture: Capture::Pipes,
        }
    }

    /// Runs `command` through `/bin/sh -c`, for commands an operator wrote
    /// (`DB_PASSWORD_COMMAND`, `ALERT_COMMAND`). Errors name `command` itself.
    pub fn shell(command: &str) -> Command {
        Command {
            shown: command.to_owned(),
            ..Command::new([OsStr::new("/bin/sh"), OsStr::new("-c"), OsStr::new(command)])
        }
    }

    /// Feeds `input` to the command's stdin, then closes it. A command that exits without
    /// reading all of it is not an error: its exit status says how it went.
    #[must_use]
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Command {
        self.stdin = Some(input.into());
        self
    }

    /// Sets `key` to `value` in the command's environment. Given variables are added after the
    /// secrets are removed, so they are always passed.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Removes `key` from the environment the command inherits (e.g. `MAIL_CONFIG`, which
    /// would override Postfix's `-c`).
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Command {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Sets the time limit (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.timeout = timeout;
        self
    }

    /// Sets where the output goes while the command runs (default [`Capture::Pipes`]).
    #[must_use]
    pub fn capture(mut self, capture: Capture) -> Command {
        self.capture = capture;
        self
    }

    /// Names the command as `shown` in errors and logs instead of its argument vector: for an
    /// argument that is data rather than words an operator reads (a list of keys handed to a
    /// program as one argument).
    #[must_use]
    pub fn show_as(mut self, shown: impl Into<String>) -> Command {
        self.shown = shown.into();
        self
    }

    /// The command line as errors name it: the argument vector joined by spaces, the shell
    /// command of [`Command::shell`], or what [`Command::show_as`] set.
    pub fn command_line(&self) -> &str {
        &self.shown
    }

    /// Runs the command to its end, or kills its process group at the limit.
    ///
    /// Returns its [`Output`] whatever its exit status; an error only when it could not be
    /// started, ran past the limit, or could not be waited for.
    pub fn run(&self) -> Result<Output, RunError> {
        let spawn_error = |source| RunError::Spawn {
            command: self.shown.clone(),
            source,
        };
        let Some((program, args)) = self.argv.split_first() else {
            return Err(spawn_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty command line",
            )));
        };
        let deadline = Instant::now().checked_add(self.timeout);
        let mut command = std::process::Command::new(program);
        // A group of its own: at the limit, everything the command started is killed with it.
        command.args(args).process_group(0);
        for (key, _) in std::env::vars_os() {
            if is_not_inherited(&key) {
                command.env_remove(key);
            }
        }
        for key in &self.env_remove {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut files = match self.capture {
            Capture::Pipes => None,
            Capture::Files => match output_files() {
                Ok(files) => Some(files),
                Err(error) => {
                    tracing::warn!(
                        "cannot create a temporary file for the output of `{}` ({error}; is \
                         TMPDIR full?); reading it through pipes, which waits for what it starts",
                        self.shown
                    );
                    None
                }
            },
        };
        match files.as_mut() {
            Some([(out, _), (err, _)]) => {
                command.stdout(take_file(out)).stderr(take_file(err));
            }
            None => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        // The child's copies of the files are gone with `command`; ours stay open to read.
        drop(command);
        let mut output = self.supervise(&mut child, deadline)?;
        if let Some([(_, mut out), (_, mut err)]) = files {
            output.stdout = self.read_back(&mut out);
            output.stderr = self.read_back(&mut err);
        }
        Ok(output)
    }

    /// Feeds stdin, drains the pipes and waits for the child, all in one `poll(2)` loop, until
    /// the child has exited and its pipes are closed, or the deadline.
    fn supervise(&self, child: &mut Child, deadline: Option<Instant>) -> Result<Output, RunError> {
        let pidfd = pidfd_open(child.id());
        let mut stdin = child.stdin.take();
        if let Some(pipe) = &stdin {
            // Written only as far as the pipe takes it at once, so the loop never blocks on a
            // child that does not read.
            if let Err(source) = set_nonblocking(pipe.as_raw_fd()) {
                return Err(self.abandon(child, |command| RunError::Wait { command, source }));
            }
        }
        let input = self.stdin.as_deref().unwrap_or_default();
        let mut written = 0;
        if input.is_empty() {
            stdin = None;
        }
        let mut stdout = Drain::new(child.stdout.take());
        let mut stderr = Drain::new(child.stderr.take());
        let mut status = None;
        loop {
            if status.is_none() {
                match child.try_wait() {
                    Ok(Some(exited)) => {
                        status = Some(exited);
                        // Input left over has no reader that matters any more.
                        stdin = None;
                    }
                    Ok(None) => {}
                    Err(source) => {
                        return Err(
                            self.abandon(child, |command| RunError::Wait { command, source })
                        )
                    }
                }
            }
            if let Some(status) = status {
                if stdout.is_done() && stderr.is_done() {
                    return Ok(Output {
                        status,
                        stdout: stdout.bytes,
                        stderr: stderr.bytes,
                    });
                }
            }
            let now = Instant::now();
            let mut wait = match deadline {
                Some(deadline) if now >= deadline => {
                    let after = self.timeout;
                    return Err(self.abandon(child, |command| RunError::Timeout { command, after }));
                }
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3600),
            };
            let watch_exit = status.is_none();
            if watch_exit && pidfd.is_none() {
                wait = wait.min(EXIT_POLL);
            }
            let mut fds = Vec::with_capacity(4);
            let stdin_at = stdin.as_ref().map(|pipe| {
                fds.push(pollfd(pipe.as_raw_fd(), libc::POLLOUT));
                fds.len() - 1
            });
            let stdout_at = stdout.watch(&mut fds);
            let stderr_at = stderr.watch(&mut fds);
            if let Some(pidfd) = pidfd.as_ref().filter(|_| watch_exit) {
                fds.push(pollfd(pidfd.as_raw_fd(), libc::POLLIN));
            }
            if let Err(source) = poll(&mut fds, wait) {
                return Err(self.abandon(child, |command| RunError::Wait { command, source }));
            }
            let ready = |at: Option<usize>| at.is_some_and(|at| fds[at].revents != 0);
            if ready(stdin_at) {
                if let Some(pipe) = stdin.as_mut() {
                    match pipe.write(&input[written..]) {
                        Ok(n) => written += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) => {}
                        // The child closed its stdin (EPIPE): its exit status says why.
                        Err(_) => written = input.len(),
                    }
                }
                if written == input.len() {
                    // Closing the pipe is the end of the input.
                    stdin = None;
                }
            }
            if ready(stdout_at) {
                stdout.read_some();
            }
            if ready(stderr_at) {
                stderr.read_some();
            }
        }
    }

    /// Kills the child's process group, reaps the child (for at most [`REAP_GRACE`]) and
    /// returns the error `make` builds from the command line.
    fn abandon(&self, child: &mut Child, make: impl FnOnce(String) -> RunError) -> RunError {
        let group = libc::pid_t::try_from(child.id()).unwrap_or(0);
        if group > 0 {
            // SAFETY: killpg(2) takes plain integers and touches no memory of ours. The child is
            // not reaped yet or (its output still open) its group still has members, so the
            // group id cannot have been reused.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
        let until = Instant::now() + REAP_GRACE;
        while Instant::now() < until {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(EXIT_POLL),
                Ok(Some(_)) | Err(_) => break,
            }
        }
        let error = make(self.shown.clone());
        tracing::debug!("{error}");
        error
    }

    /// What the command wrote to one of its output files; what cannot be read back is logged
    /// and left out, since the exit status still decides.
    fn read_back(&self, file: &mut File) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Err(error) = file.rewind().and_then(|()| file.read_to_end(&mut bytes)) {
            tracing::warn!("cannot read back what `{}` printed: {error}", self.shown);
        }
        bytes
    }
}

/// Whether an inherited variable is one [`NOT_INHERITED`] names, and so must not reach a child.
fn is_not_inherited(name: &OsStr) -> bool {
    let name = name.as_bytes();
    NOT_INHERITED
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == entry.as_bytes(),
        })
}

/// One output pipe being read to its end.
struct Drain<R> {
    pipe: Option<R>,
    bytes: Vec<u8>,
}

impl<R: Read + AsRawFd> Drain<R> {
    fn new(pipe: Option<R>) -> Drain<R> {
        Drain {
            pipe,
            bytes: Vec::new(),
        }
    }

    fn is_done(&self) -> bool {
        self.pipe.is_none()
    }

    /// Adds the pipe to `fds` while it is open; returns its index.
    fn watch(&self, fds: &mut Vec<libc::pollfd>) -> Option<usize> {
        self.pipe.as_ref().map(|pipe| {
            fds.push(pollfd(pipe.as_raw_fd(), libc::POLLIN));
            fds.len() - 1
        })
    }

    /// Reads what `poll` said is there; end of file (or a read error) closes the pipe.
    fn read_some(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buffer = [0; 64 * 1024];
        match pipe.read(&mut buffer) {
            Ok(0) => self.pipe = None,
            Ok(n) => self.bytes.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.pipe = None,
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` for at most `wait` (rounded up to a millisecond); an interrupted call counts as
/// a wake-up.
fn poll(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<()> {
    let millis = wait.as_micros().div_ceil(1000);
    let millis = libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX);
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `count` pollfd structures.
    let result = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor that becomes readable when the process exits, so that the loop wakes at once
/// instead of checking every few milliseconds. `None` where the kernel has none.
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open(2) takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// Two unnamed temporary files, each as the child's copy and ours.
type OutputFiles = [(Option<File>, File); 2];

fn output_files() -> io::Result<OutputFiles> {
    let file = || -> io::Result<(Option<File>, File)> {
        let ours = tempfile::tempfile()?;
        Ok((Some(ours.try_clone()?), ours))
    };
    Ok([file()?, file()?])
}

/// The child's copy of an output file, handed to the command once.
fn take_file(file: &mut Option<File>) -> Stdio {
    file.take().map_or_else(Stdio::null, Stdio::from)
}

/// The trimmed start of a command's stderr, at most [`STDERR_LIMIT`] bytes (cut at a character
/// boundary, with `…` when cut): enough for an error message or a log line.
pub fn excerpt(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognized_by_name() {
        for name in [
            "RELAY_SYNC_DB_PASSWORD",
            "RELAY_SYNC_DB_HOST",
            "MYSQL_PWD",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
        ] {
            assert!(is_not_inherited(OsStr::new(name)), "{name}");
        }
        for name in [
            "PATH",
            "MAIL_CONFIG",
            "RELAY_SYNC",
            "MYSQL_PWD_X",
            "relay_sync_db_password",
            "AWS",
            "aws_secret_access_key",
        ] {
            assert!(!is_not_inherited(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn excerpts_are_trimmed_and_cut_at_a_character() {
        assert_eq!(excerpt("  failed\n"), "failed");
        let long = "é".repeat(STDERR_LIMIT);
        let cut = excerpt(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= STDERR_LIMIT + '…'.len_utf8());
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }

    #[test]
    fn limits_are_shown_as_written() {
        assert_eq!(seconds(Duration::from_secs(120)), "120s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
    }
}
