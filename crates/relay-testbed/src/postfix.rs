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

/// A Postfix instance with its own configuration, queue and data directories, listening for
/// SMTP on a free port of 127.0.0.1. Stopped and removed on drop.
#[derive(Debug)]
pub struct Postfix {
    dir: tempfile::TempDir,
    smtp_port: u16,
}

impl Postfix {
    /// Starts an instance whose `relay_domains` is `relay_domains`, with an empty transport map.
    pub fn start(relay_domains: &str) -> Result<Postfix> {
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
        let smtp_port = free_port()?;
        let template = fs::read_to_string(fixtures_dir().join("postfix/main.cf.in"))
            .context("reading fixtures/postfix/main.cf.in")?;
        let main_cf = template
            .replace("@QUEUE@", &queue.to_string_lossy())
            .replace("@DATA@", &data.to_string_lossy())
            .replace("@CONFIG@", &config.to_string_lossy())
            .replace("@LOG@", &log.to_string_lossy())
            .replace("@RELAY_DOMAINS@", relay_domains);
        fs::write(config.join("main.cf"), main_cf)?;
        let master = fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .context("reading /usr/share/postfix/master.cf.dist (apt-get install -y postfix)")?;
        let master: String = master
            .lines()
            .map(|line| {
                if line.starts_with("smtp      inet") {
                    format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        fs::write(config.join("master.cf"), master)?;
        fs::write(config.join("transport"), "")?;
        let postfix = Postfix { dir, smtp_port };
        postfix.command(POSTCONF, &["-F", "*/*/chroot = n"])?;
        postfix.command(
            POSTMAP,
            &[&format!("hash:{}", postfix.transport_file().display())],
        )?;
        postfix.start_again()?;
        Ok(postfix)
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
        Command::new(POSTFIX)
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

    /// `postfix start`, then waits until the SMTP port answers.
    pub fn start_again(&self) -> Result<()> {
        self.command(POSTFIX, &["start"])?;
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
        let output = Command::new(program)
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

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop();
        }
    }
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
