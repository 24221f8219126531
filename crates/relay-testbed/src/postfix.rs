//! A private Postfix instance (the MX gateway under test) and `smtp-sink` (the mailbox host).

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{fixtures_dir, free_port, require};

const POSTFIX: &str = "/usr/sbin/postfix";
const POSTCONF: &str = "/usr/sbin/postconf";
const POSTMAP: &str = "/usr/sbin/postmap";
/// Debian's pristine master.cf (the one in /etc/postfix may have been edited on this machine).
const MASTER_CF_DIST: &str = "/usr/share/postfix/master.cf.dist";

/// A Postfix instance with its own configuration, queue and data directories, listening for
/// SMTP on a free port of 127.0.0.1. Stopped and removed on drop.
#[derive(Debug)]
pub struct Postfix {
    dir: tempfile::TempDir,
    smtp_port: u16,
}

/// How far back the generated main.cf is dated (see [`backdate`]).
const COOL: Duration = Duration::from_secs(3);

/// Attempts at finding a free port for the SMTP listener: [`free_port`] releases the port
/// before Postfix binds it, so another process may take it in between.
const PORT_ATTEMPTS: usize = 3;

impl Postfix {
    /// Starts an instance whose `relay_domains` is `relay_domains`, with an empty transport map.
    ///
    /// ```no_run
    /// let postfix = relay_testbed::Postfix::start("kuma8088.com")?;
    /// assert_eq!(postfix.postconf("relay_domains")?, "kuma8088.com");
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn start(relay_domains: &str) -> Result<Postfix> {
        Postfix::start_with_transport(relay_domains, "")
    }

    /// Starts an instance whose `relay_domains` is `relay_domains` and whose transport file
    /// (`hash:CONFIG_DIR/transport`, built with postmap before the start) holds `transport`.
    ///
    /// The instance has its own configuration, queue and data directories (so its
    /// `master.lock` and `master.pid` are its own: any number run side by side), listens on
    /// 127.0.0.1 only, logs to [`Postfix::maillog`], never uses DNS, delivers nothing locally,
    /// and does not count loopback as `mynetworks`, so the relay check applies to test clients.
    pub fn start_with_transport(relay_domains: &str, transport: &str) -> Result<Postfix> {
        for (path, package) in [
            (POSTFIX, "postfix"),
            (POSTCONF, "postfix"),
            (POSTMAP, "postfix"),
        ] {
            require(path, package)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("relay-testbed-postfix-")
            .tempdir()?;
        // Postfix's daemons run as `postfix` and must reach the queue inside.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let root = dir.path();
        let (config, queue, data, log) = (
            root.join("etc"),
            root.join("spool"),
            root.join("data"),
            root.join("log"),
        );
        for d in [&config, &queue, &data, &log] {
            fs::create_dir(d)?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        chown_postfix(&data)?;
        let template = fs::read_to_string(fixtures_dir().join("postfix/main.cf.in"))
            .context("reading fixtures/postfix/main.cf.in")?;
        let main_cf = template
            .replace("@QUEUE@", &queue.to_string_lossy())
            .replace("@DATA@", &data.to_string_lossy())
            .replace("@CONFIG@", &config.to_string_lossy())
            .replace("@LOG@", &log.to_string_lossy())
            .replace("@RELAY_DOMAINS@", relay_domains);
        fs::write(config.join("main.cf"), main_cf)?;
        // Every Postfix command that reads main.cf (postmap, postconf, postfix) first waits,
        // polling every 300 ms, until the file's mtime is more than a second in the past
        // (dict_load_file's "cool down"): a fresh main.cf costs up to 2 s. Nothing has read it
        // yet, so dating it back is harmless.
        backdate(&config.join("main.cf"), COOL)?;
        let master_dist = fs::read_to_string(MASTER_CF_DIST)
            .with_context(|| format!("reading {MASTER_CF_DIST} (apt-get install -y postfix)"))?;
        fs::write(config.join("transport"), transport)?;
        let mut postfix = Postfix { dir, smtp_port: 0 };
        postfix.command(
            POSTMAP,
            &[&format!("hash:{}", postfix.transport_file().display())],
        )?;
        let mut attempt = 1;
        loop {
            postfix.smtp_port = free_port()?;
            fs::write(
                config.join("master.cf"),
                master_cf(&master_dist, postfix.smtp_port)?,
            )?;
            // The instance lives outside the system spool: no service may chroot into it.
            postfix.command(POSTCONF, &["-F", "*/*/chroot = n"])?;
            let log_before = postfix.maillog().len();
            match postfix.start_again() {
                Ok(()) => return Ok(postfix),
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && postfix
                            .maillog()
                            .get(log_before..)
                            .is_some_and(|new| new.contains("Address already in use")) =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The configuration directory (`-c` for every Postfix command).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The SMTP listener's port on 127.0.0.1.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// The transport map's source file.
    pub fn transport_file(&self) -> PathBuf {
        self.config_dir().join("transport")
    }

    /// `postconf -h PARAMETER`.
    pub fn postconf(&self, parameter: &str) -> Result<String> {
        Ok(self
            .command(POSTCONF, &["-h", parameter])?
            .trim_end()
            .to_owned())
    }

    /// Postfix's own log.
    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/maillog")).unwrap_or_default()
    }

    /// Whether the master process runs (`postfix status`).
    pub fn is_running(&self) -> bool {
        Command::new(TIMEOUT)
            .args(bounded(STATUS_LIMIT))
            .arg(POSTFIX)
            .arg("-c")
            .arg(self.config_dir())
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `postfix stop`, then waits until it is down.
    pub fn stop(&mut self) -> Result<()> {
        self.command(POSTFIX, &["stop"])?;
        wait_for(Duration::from_secs(20), || !self.is_running()).context("postfix did not stop")
    }

    /// `postfix start`, then waits until the SMTP port answers. A failed start names the
    /// reason from the mail log (`postfix` itself prints nothing when not on a terminal).
    pub fn start_again(&self) -> Result<()> {
        if let Err(e) = self.command(POSTFIX, &["start"]) {
            bail!("{e}\n--- maillog\n{}", self.maillog());
        }
        let port = self.smtp_port;
        wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .with_context(|| {
            format!(
                "postfix did not listen on 127.0.0.1:{port}:\n{}",
                self.maillog()
            )
        })
    }

    /// Runs a Postfix command with `-c` this instance's directory; returns its stdout.
    pub fn command(&self, program: &str, args: &[&str]) -> Result<String> {
        let output = Command::new(TIMEOUT)
            .args(bounded(COMMAND_LIMIT))
            .arg(program)
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} -c {} {} failed: {}",
                self.config_dir().display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// coreutils' `timeout`: the testbed's own Postfix commands are bounded too. A wedged
/// `postfix status` (its `postlogd` stuck on a busy machine) once held a test for half an hour.
const TIMEOUT: &str = "timeout";
/// `postfix status`: a second under a normal load.
const STATUS_LIMIT: u64 = 30;
/// `postfix start`, `stop`, `reload`, `postconf`, `postmap`.
const COMMAND_LIMIT: u64 = 120;

/// `timeout`'s arguments for a limit: TERM at the limit, KILL ten seconds later.
fn bounded(limit: u64) -> [String; 3] {
    ["-k".to_owned(), "10".to_owned(), limit.to_string()]
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.is_running() && self.stop().is_err() {
            // The master did not stop in time: kill it by its pid, so that nothing keeps
            // running on a directory that is about to be removed.
            let pid_file = self.dir.path().join("spool/pid/master.pid");
            if let Some(pid) = fs::read_to_string(pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
            {
                // SAFETY: kill(2) with a pid read from this instance's own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Sets the modification time of `path` to `age` ago.
fn backdate(path: &Path, age: Duration) -> Result<()> {
    let when = std::time::SystemTime::now() - age;
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(when))
        .with_context(|| format!("cannot set the mtime of {}", path.display()))
}

/// Debian's `master.cf` with the `smtp inet` listener moved to `127.0.0.1:PORT`.
pub(crate) fn master_cf(dist: &str, port: u16) -> Result<String> {
    let mut found = false;
    let mut out = String::with_capacity(dist.len());
    for line in dist.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 2 && fields[0] == "smtp" && fields[1] == "inet" {
            found = true;
            out.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        bail!("{MASTER_CF_DIST} has no `smtp inet` service to move to 127.0.0.1:{port}");
    }
    Ok(out)
}

/// Postfix's `smtp-sink` on a free port of 127.0.0.1, writing every message it accepts to a file.
#[derive(Debug)]
pub struct SmtpSink {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl SmtpSink {
    /// Starts the sink and waits until it answers.
    pub fn start() -> Result<SmtpSink> {
        let program = require("/usr/sbin/smtp-sink", "postfix")?;
        let dir = tempfile::Builder::new()
            .prefix("relay-testbed-sink-")
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        let port = free_port()?;
        let child = Command::new(program)
            .args(["-u", "postfix", "-d"])
            .arg(format!("{}/%M.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start smtp-sink")?;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .context("smtp-sink did not listen")?;
        Ok(SmtpSink { dir, port, child })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The contents of every message received so far.
    pub fn messages(&self) -> Vec<String> {
        let mut paths: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .collect()
    }

    /// Where messages are written.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chown_postfix(path: &Path) -> Result<()> {
    let status = Command::new("chown")
        .arg("postfix:")
        .arg(path)
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!("chown postfix: {} failed", path.display());
    }
    Ok(())
}

fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {}s", limit.as_secs())
}
