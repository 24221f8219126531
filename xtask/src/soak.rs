//! `cargo xtask soak`: `relay-sync watch` (the built binary) for a long time against the
//! testbed's real MariaDB and Postfix, under a chaos schedule, with an observer checking from
//! outside what must hold the whole time (issue 21, OT-005's week of continuous running).
//!
//! Two watchers run side by side, one gateway in map mode and one in inline mode, each with
//! its own Postfix, `BACKUP_DIR` (a small tmpfs) and log, both reading one MariaDB that runs
//! in a network namespace of its own, so that its link can go down. `smtp-sink` stands in for
//! the mailbox host.
//!
//! - The chaos ([`chaos`]): each cycle runs every fault at least once, with calm changes
//!   between them (see [`chaos::Fault`]).
//! - The observer ([`observer`]): propagation within the bound, the steady state, routes,
//!   mail (none lost), the watchers alive with a fresh heartbeat, usage from /proc.
//! - The verdict: zero violations, zero mail lost, RSS growth after the warm-up under 2 MB
//!   (least-squares slope over the run), descriptors and threads the same in the quiet
//!   window after the warm-up and the one at the end. Anything else exits non-zero, printed.
//!
//! `cargo xtask soak [--duration 2m] [--polls N] [--poll-interval S] [--reconcile-interval S]
//! [--bound S] [--domains N] [--calm N] [--release | --binary PATH] [--benchmarks]`
//! (`--benchmarks` writes the report as BENCHMARKS.md's soak section, with the commit it ran
//! on). A run ends when every
//! limit given is reached: a cycle starts only while the time left holds one as long as the
//! last (the first always runs; the default is two minutes), so a run ends within a cycle of
//! its `--duration`, and `--polls` counts the polls of the busier watcher (the map-mode one:
//! each inline reload holds its watcher's loop about 2 s); `--polls 300000 --poll-interval 0.01
//! --duration 70m` is a week of polls at the former 2 s `POLL_INTERVAL`, compressed into more
//! than an hour. `--calm` sets the calm
//! changes that open each cycle (3), for steadier propagation figures. `--binary` soaks a
//! relay-sync built elsewhere (an older or a deliberately broken one) instead of building it.
//! Needs root (network namespaces, tmpfs mounts), iproute2, logrotate, mariadb-server and
//! postfix.

mod chaos;
mod observer;
pub(crate) mod proc;
mod smtp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_testbed::{MariaDb, Postfix, ServerOptions, SmtpSink};

use observer::{Shared, Target};

/// The password of the fixtures' `relay_sync` account.
const DB_PASSWORD: &str = "relay-sync-test-pw";
/// The database's timeouts in the soak's config: a link that is down costs each poll this long.
const DB_TIMEOUT_SECS: u64 = 2;
/// The targets.
const MAX_RSS_GROWTH_KIB: f64 = 2048.0;
/// relay-ops' longest back-off between the retries of a sync that did not apply.
use relay_ops::watch::decide::RETRY_CAP;
/// How long each quiet window lasts (no changes, no faults): longer than the 10 s tokio keeps
/// an idle blocking thread, so that the threads counted are the ones that stay.
const QUIET: Duration = Duration::from_secs(12);

/// Set by SIGINT or SIGTERM: the soak stops after the step in progress and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What `cargo xtask soak` was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    duration: Option<Duration>,
    polls: Option<u64>,
    poll_interval: f64,
    reconcile_interval: f64,
    bound: Duration,
    domains: usize,
    /// Calm changes at the start of each cycle (more give steadier propagation figures).
    calm: usize,
    release: bool,
    /// A relay-sync binary to soak instead of building one (e.g. a deliberately broken build).
    binary: Option<PathBuf>,
    /// Write the report as BENCHMARKS.md's soak section (`--benchmarks`).
    benchmarks: bool,
    /// The flags as given, for the report.
    args: Vec<String>,
}

impl Options {
    /// The run `cargo xtask test` includes: two minutes at the defaults.
    pub(crate) fn quick() -> Options {
        Options {
            duration: Some(Duration::from_secs(120)),
            polls: None,
            poll_interval: 0.2,
            reconcile_interval: 5.0,
            bound: Duration::from_secs(10),
            domains: 100,
            calm: 3,
            release: false,
            binary: None,
            benchmarks: false,
            args: Vec::new(),
        }
    }

    /// Parses the flags after `soak`.
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            duration: None,
            args: args.to_vec(),
            ..Options::quick()
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .with_context(|| format!("soak: {flag} needs a value"))
            };
            match flag.as_str() {
                "--duration" => options.duration = Some(parse_duration(value()?)?),
                "--polls" => {
                    options.polls = Some(value()?.parse().context("soak: --polls is a number")?);
                }
                "--poll-interval" => options.poll_interval = seconds(value()?)?,
                "--reconcile-interval" => options.reconcile_interval = seconds(value()?)?,
                "--bound" => options.bound = Duration::from_secs_f64(seconds(value()?)?),
                "--domains" => {
                    options.domains = value()?.parse().context("soak: --domains is a number")?;
                }
                "--calm" => {
                    options.calm = value()?.parse().context("soak: --calm is a number")?;
                }
                "--release" => options.release = true,
                "--benchmarks" => options.benchmarks = true,
                "--binary" => options.binary = Some(PathBuf::from(value()?)),
                other => bail!("soak: unknown flag {other:?}\n{}", crate::USAGE),
            }
        }
        if options.duration.is_none() && options.polls.is_none() {
            options.duration = Options::quick().duration;
        }
        Ok(options)
    }

    /// After a fault that holds changes back, how long past its end a change may wait before
    /// the ordinary bound applies: a sync that failed (`BACKUP_DIR` full) is retried after a
    /// back-off of at most [`RETRY_CAP`] or `RECONCILE_INTERVAL`, the polls of a database that
    /// was down back off (doubling from `POLL_INTERVAL`; the short outages here end long
    /// before that reaches either), and a poll that began while the link was still down waits
    /// out its connect and query timeouts. A watcher that waits for `RECONCILE_INTERVAL`
    /// instead (the bug fixed by the retry) misses this with `--reconcile-interval` above
    /// [`RETRY_CAP`] and the bound.
    fn after_fault(&self) -> Duration {
        Duration::from_secs_f64(self.reconcile_interval).min(RETRY_CAP)
            + Duration::from_secs(2 * DB_TIMEOUT_SECS)
    }
}

/// `90`, `90s`, `15m`, `2h`.
fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .with_context(|| format!("soak: {text:?} is not a duration (90, 90s, 15m, 2h)"))?;
    let factor = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("soak: {text:?} is not a duration (90, 90s, 15m, 2h)"),
    };
    Ok(Duration::from_secs_f64(number * factor))
}

fn seconds(text: &str) -> Result<f64> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok(value),
        _ => bail!("soak: {text:?} is not a positive number of seconds"),
    }
}

/// A tmpfs mounted on a directory of ours, unmounted on drop: `BACKUP_DIR`, small enough to
/// fill.
#[derive(Debug)]
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs> {
        fs::create_dir_all(path)?;
        run_command(
            Command::new("/bin/mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("relay-sync-soak")
                .arg(path),
        )
        .context("mounting a tmpfs for BACKUP_DIR (the soak runs as root)")?;
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("soak-filler")
    }

    /// Writes until the file system is full.
    fn fill(&self) -> Result<()> {
        use std::io::Write;
        let mut file = fs::File::create(self.filler())?;
        let chunk = vec![0u8; 16 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(error) => return Err(error).context("filling BACKUP_DIR"),
            }
        }
        // Whatever fits in the last bytes.
        let _ = file.write_all(&[0u8; 512]);
        Ok(())
    }

    fn free(&self) -> Result<()> {
        fs::remove_file(self.filler()).context("freeing BACKUP_DIR")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("/bin/umount").arg(&self.path).status();
    }
}

/// One gateway: a Postfix, relay-sync's config and directories, its watcher.
#[derive(Debug)]
struct Gateway {
    target: Target,
    mode: &'static str,
    /// Declared before `backup` and `postfix`, but stopped by hand in `Drop` first.
    watcher: Option<Child>,
    backup: Tmpfs,
    postfix: Postfix,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The `POLL_INTERVAL` in the config now (SIGHUP alternates it).
    poll_interval: f64,
    sink_port: u16,
    db_host: String,
    db_port: u16,
    reconcile_interval: f64,
}

impl Gateway {
    fn start(
        mode: &'static str,
        db: &MariaDb,
        sink: &SmtpSink,
        options: &Options,
    ) -> Result<Gateway> {
        let postfix = Postfix::start("")?;
        // The observer asks many RCPTs a session, refused ones among them: no slowing down,
        // no disconnect after a few errors.
        postfix.command(
            "/usr/sbin/postconf",
            &[
                "-e",
                "smtpd_soft_error_limit = 100000",
                "smtpd_hard_error_limit = 100000",
                "smtpd_error_sleep_time = 0s",
            ],
        )?;
        postfix.command("/usr/sbin/postfix", &["reload"])?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("relay-sync-soak-{mode}-"))
            .tempdir()?;
        let backup = Tmpfs::mount(&dir.path().join("backup"), "1m")?;
        let config = dir.path().join("relay-sync.conf");
        let next_hop = format!("smtp:[127.0.0.1]:{}", sink.port());
        let gateway = Gateway {
            target: Target {
                name: mode,
                smtp_port: postfix.smtp_port(),
                config_dir: postfix.config_dir(),
                log: dir.path().join("log/relay-sync.log"),
                watch_metrics: dir.path().join("metrics/relay_sync_watch.prom"),
                pid: 0,
                next_hop,
            },
            mode,
            watcher: None,
            backup,
            postfix,
            dir,
            config,
            poll_interval: options.poll_interval,
            sink_port: sink.port(),
            db_host: db.host().to_owned(),
            db_port: db.port(),
            reconcile_interval: options.reconcile_interval,
        };
        fs::create_dir_all(gateway.dir.path().join("metrics"))?;
        gateway.write_config()?;
        Ok(gateway)
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path().display();
        let text = format!(
            "# relay-sync soak gateway ({mode} mode)\n\
             DB_HOST={host}\nDB_PORT={port}\nDB_USER=relay_sync\nDB_PASSWORD={DB_PASSWORD}\n\
             DB_CONNECT_TIMEOUT={DB_TIMEOUT_SECS}\nDB_QUERY_TIMEOUT={DB_TIMEOUT_SECS}\n\
             DELL_RELAY_IP=127.0.0.1\nDELL_RELAY_PORT={sink}\n\
             POSTFIX_CONFIG_DIR={pf}\nRELAY_DOMAINS_MODE={mode}\n\
             BACKUP_DIR={d}/backup\nLOG_FILE={d}/log/relay-sync.log\nSTATE_DIR={d}/state\n\
             METRICS_FILE={d}/metrics/relay_sync.prom\n\
             POLL_INTERVAL={poll}\nRECONCILE_INTERVAL={reconcile}\n",
            mode = self.mode,
            host = self.db_host,
            port = self.db_port,
            sink = self.sink_port,
            pf = self.postfix.config_dir().display(),
            poll = self.poll_interval,
            reconcile = self.reconcile_interval,
        );
        fs::write(&self.config, text)?;
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    fn start_watcher(&mut self, binary: &Path) -> Result<()> {
        let out = |name: &str| fs::File::create(self.dir.path().join(name));
        let child = Command::new(binary)
            .arg("--config")
            .arg(&self.config)
            .arg("watch")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out("watch.stdout")?)
            .stderr(out("watch.stderr")?)
            .spawn()
            .with_context(|| format!("cannot start {} watch", binary.display()))?;
        self.target.pid = child.id();
        self.watcher = Some(child);
        Ok(())
    }

    /// Sends `signal` to the watcher.
    fn signal(&self, signal: i32) -> Result<()> {
        let pid = libc::pid_t::try_from(self.target.pid).context("pid out of range")?;
        // SAFETY: kill(2) on our own child, not reaped yet (the Child is kept until drop).
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "cannot signal the {} watcher: {}",
                self.mode,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGTERM and the exit code, at most `limit` later (`None`: it had to be killed).
    fn stop_watcher(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.watcher.take()?;
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("watch.stderr")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.watcher.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything the soak runs against; all of it stopped and removed on drop (gateways first).
#[derive(Debug)]
struct Testbed {
    gateways: Vec<Gateway>,
    sink: SmtpSink,
    db: MariaDb,
    binary: PathBuf,
}

/// Runs the soak; `Err` lists every violation and missed target.
pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    require()?;
    let binary = match &options.binary {
        Some(binary) => binary.clone(),
        None => build(root, options.release)?,
    };
    install_signal_handlers();
    eprintln!(
        "xtask soak: {} watchers (map, inline), {}{}POLL_INTERVAL {} s, RECONCILE_INTERVAL {} s, \
         bound {:.0} s, {} domains",
        2,
        options
            .duration
            .map_or(String::new(), |d| format!("{:.0} s, ", d.as_secs_f64())),
        options
            .polls
            .map_or(String::new(), |p| format!("{p} polls, ")),
        options.poll_interval,
        options.reconcile_interval,
        options.bound.as_secs_f64(),
        options.domains,
    );
    let mut testbed = set_up(&binary, options)?;
    let truth = truth(&testbed.db)?;
    let shared = Arc::new(Shared::new(
        truth,
        testbed.gateways.len(),
        options.bound,
        options.after_fault(),
        Duration::from_secs_f64(options.reconcile_interval)
            + Duration::from_secs(4 * DB_TIMEOUT_SECS + 10),
    ));
    // Every domain as the database has it, after the first syncs.
    shared.expect_everything(Duration::from_secs(120));
    for gateway in &mut testbed.gateways {
        gateway.start_watcher(&testbed.binary)?;
    }
    let targets: Vec<Target> = testbed.gateways.iter().map(|g| g.target.clone()).collect();
    let mut observers = Vec::new();
    for (g, target) in targets.iter().enumerate() {
        let shared = Arc::clone(&shared);
        let target = target.clone();
        observers.push(std::thread::spawn(move || {
            observer::watch_gateway(shared, g, target);
        }));
    }
    let names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
    let sink_dir = testbed.sink.dir().to_owned();
    let drainer = {
        let shared = Arc::clone(&shared);
        let names = names.clone();
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                observer::drain_sink(&shared, &sink_dir, &names);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let outcome = chaos::run(&mut testbed, &shared, options, &targets);

    // The mail stream stopped with the chaos; what was accepted has a minute to arrive.
    let all_delivered = wait_for_mail(&shared, &testbed.sink, &names);
    shared.stop.store(true, Ordering::Relaxed);
    let mut panicked = Vec::new();
    for (observer, target) in observers.into_iter().zip(&targets) {
        if observer.join().is_err() {
            panicked.push(format!(
                "the observer of the {} gateway panicked",
                target.name
            ));
        }
    }
    if drainer.join().is_err() {
        panicked.push("the thread counting smtp-sink's mail panicked".to_owned());
    }
    let mut exits = Vec::new();
    for gateway in &mut testbed.gateways {
        exits.push((gateway.mode, gateway.stop_watcher(Duration::from_secs(60))));
    }
    let report = report(&shared, options, &exits, all_delivered);
    println!("{}", report.text);
    if options.benchmarks {
        write_benchmarks(root, options, &binary, &report)?;
    }
    let mut failures = report.failures;
    failures.extend(panicked);
    if let Err(error) = outcome {
        failures.insert(0, format!("the chaos did not complete: {error:#}"));
    }
    if !failures.is_empty() {
        for gateway in &testbed.gateways {
            let stderr = gateway.stderr();
            if !stderr.trim().is_empty() {
                let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                eprintln!(
                    "xtask soak: last ERROR lines of the {} watcher:\n{}",
                    gateway.mode,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        bail!("soak failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// BENCHMARKS.md's soak section: the report, the run's command line and the commit it ran
/// on, and its verdict; the rest of the file is kept.
fn write_benchmarks(root: &Path, options: &Options, binary: &Path, report: &Report) -> Result<()> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "?".to_owned());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    let verdict = if report.failures.is_empty() {
        "passed: zero violations, zero mail lost, every usage target met".to_owned()
    } else {
        format!("**failed**:\n\n- {}", report.failures.join("\n- "))
    };
    let built = match &options.binary {
        Some(_) => format!("the binary {}", binary.display()),
        None if options.release => "the release build".to_owned(),
        None => "the debug build".to_owned(),
    };
    let section =
        format!(
        "{}\nRun: `cargo xtask soak {}` on commit {commit}{}, with {built}; the machine (2 cores) \
         was shared with other work while it ran, so the CPU figures are noisy. Verdict: \
         {verdict}\n",
        report.text.trim_end(),
        options.args.join(" "),
        if dirty { " (with changes not committed)" } else { "" },
    );
    let path = root.join("BENCHMARKS.md");
    let doc = fs::read_to_string(&path).unwrap_or_default();
    fs::write(
        &path,
        crate::bench::replace_section(&doc, crate::bench::SOAK_HEADING, &section),
    )
    .context("writing BENCHMARKS.md")?;
    println!("xtask: wrote the soak section of {}", path.display());
    Ok(())
}

/// Fails early, with the install command, when something the soak runs is missing.
fn require() -> Result<()> {
    for (path, package) in [
        ("/bin/ip", "iproute2"),
        ("/usr/sbin/logrotate", "logrotate"),
        ("/bin/mount", "mount"),
        ("/usr/bin/timeout", "coreutils"),
    ] {
        relay_testbed::require(path, package)?;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("soak: run as root (network namespaces and tmpfs mounts need it)");
    }
    Ok(())
}

/// The relay-sync binary, built with the features the packages have.
fn build(root: &Path, release: bool) -> Result<PathBuf> {
    let mut args = vec![
        "build",
        "-p",
        "relay-cli",
        "--features",
        crate::PACKAGE_FEATURES,
    ];
    if release {
        args.push("--release");
    }
    crate::cargo(&args)?;
    Ok(root.join(if release {
        "target/release/relay-sync"
    } else {
        "target/debug/relay-sync"
    }))
}

extern "C" fn interrupted(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                interrupted as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether SIGINT or SIGTERM asked the soak to stop.
fn interrupted_now() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The database (in a namespace), its rows, the sink and the two gateways.
fn set_up(binary: &Path, options: &Options) -> Result<Testbed> {
    let db = MariaDb::start_with(ServerOptions::new().in_network_namespace())?;
    db.load_fixtures()?;
    let ns = db.netns().context("the database has no namespace")?;
    let host = ns.host_address();
    // The watchers connect from the host's end of the link.
    db.sql(&format!(
        "CREATE USER IF NOT EXISTS 'relay_sync'@'{host}' IDENTIFIED BY '{DB_PASSWORD}'; \
         GRANT SELECT ON mailserver_usermgmt.domains TO 'relay_sync'@'{host}';"
    ))?;
    db.sql(&format!(
        "TRUNCATE TABLE mailserver_usermgmt.domains; \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('{stable}', 1); \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) \
         SELECT CONCAT('base', seq, '.example'), 1 FROM mailserver_usermgmt.seq_1_to_{n}; \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) \
         SELECT CONCAT('burst', seq, '.example'), 0 FROM mailserver_usermgmt.seq_1_to_{burst}; \
         INSERT INTO mailserver_usermgmt.domains (name, enabled) \
         SELECT CONCAT('churn', seq, '.example'), seq MOD 2 FROM mailserver_usermgmt.seq_1_to_{churn};",
        stable = observer::STABLE,
        n = options.domains,
        burst = chaos::BURST,
        churn = chaos::CHURN,
    ))?;
    let sink = SmtpSink::start()?;
    let gateways = vec![
        Gateway::start("map", &db, &sink, options)?,
        Gateway::start("inline", &db, &sink, options)?,
    ];
    Ok(Testbed {
        gateways,
        sink,
        db,
        binary: binary.to_owned(),
    })
}

/// domain → enabled, as the database has it.
fn truth(db: &MariaDb) -> Result<BTreeMap<String, bool>> {
    let rows = db.sql("SELECT name, enabled FROM mailserver_usermgmt.domains")?;
    Ok(rows
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, enabled)| (name.to_owned(), enabled.trim() == "1"))
        .collect())
}

/// Waits up to a minute for every accepted message to reach the sink; whether they all did.
fn wait_for_mail(shared: &Shared, sink: &SmtpSink, names: &[&str]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        observer::drain_sink(shared, sink.dir(), names);
        let missing: usize = shared
            .lock()
            .gateways
            .iter()
            .map(|g| g.mail.accepted.difference(&g.mail.delivered).count())
            .sum();
        if missing == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The printed report and what failed.
struct Report {
    text: String,
    failures: Vec<String>,
}

fn report(
    shared: &Shared,
    options: &Options,
    exits: &[(&'static str, Option<i32>)],
    all_delivered: bool,
) -> Report {
    let state = shared.lock();
    let mut text = String::new();
    let mut failures: Vec<String> = state.violations.clone();
    let elapsed = shared.started.elapsed().as_secs_f64();
    let faults: Vec<(&str, u64)> = chaos::Fault::ALL
        .iter()
        .map(|fault| {
            (
                fault.name(),
                state.faults.get(fault.name()).copied().unwrap_or(0),
            )
        })
        .collect();
    let _ = writeln!(
        text,
        "\n## Soak\n\n{elapsed:.0} s, POLL_INTERVAL {} s, RECONCILE_INTERVAL {} s, propagation \
         bound {:.0} s ({:.0} s after a fault that holds changes back), {} domains.\n",
        options.poll_interval,
        options.reconcile_interval,
        options.bound.as_secs_f64(),
        (options.bound + options.after_fault()).as_secs_f64(),
        state.truth.len(),
    );
    let _ = writeln!(
        text,
        "Faults: {}.\n",
        faults
            .iter()
            .map(|(fault, n)| format!("{fault} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        text,
        "What fails the run when a watcher gets a fault wrong (besides the invariants that \
         hold throughout: every change within the bound, no relayed domain without its route, \
         no accepted mail lost, the watcher alive with a fresh heartbeat):\n"
    );
    for fault in chaos::Fault::ALL {
        let _ = writeln!(text, "- {}: {}.", fault.name(), fault.detected_by());
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "| watcher | polls | syncs | failed syncs | outages logged | CPU | RSS after warm-up → end | RSS slope | fds at rest | threads at rest | mail sent / accepted / delivered / lost | not accepted while Postfix was stopped |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---|---|---|---:|"
    );
    let hz = proc::ticks_per_second();
    let quiet = &state.quiet;
    for (g, gateway) in state.gateways.iter().enumerate() {
        let name = exits.get(g).map_or("?", |(name, _)| *name);
        let usage = &gateway.usage;
        let warm = quiet.first().map_or(Duration::ZERO, |(from, _)| *from);
        let after: Vec<&proc::Usage> = usage.iter().filter(|u| u.at >= warm).collect();
        let points: Vec<(f64, f64)> = after
            .iter()
            .map(|u| (u.at.as_secs_f64(), u.rss_kib as f64))
            .collect();
        let slope_kib_per_s = proc::slope(&points);
        let span = match (after.first(), after.last()) {
            (Some(first), Some(last)) => (last.at - first.at).as_secs_f64(),
            _ => 0.0,
        };
        let growth = slope_kib_per_s * span;
        let in_window = |(from, to): (Duration, Duration)| -> Vec<&proc::Usage> {
            usage
                .iter()
                .filter(|u| u.at >= from && u.at <= to)
                .collect()
        };
        let min_of =
            |window: &[&proc::Usage], f: fn(&proc::Usage) -> u64| window.iter().map(|u| f(u)).min();
        let (start, end) = (
            quiet.first().copied().map(in_window).unwrap_or_default(),
            quiet.last().copied().map(in_window).unwrap_or_default(),
        );
        let fds = (
            min_of(&start, |u| u.fds as u64),
            min_of(&end, |u| u.fds as u64),
        );
        let threads = (min_of(&start, |u| u.threads), min_of(&end, |u| u.threads));
        let cpu = match (usage.first(), usage.last()) {
            (Some(first), Some(last)) if last.at > first.at => {
                (last.cpu_ticks - first.cpu_ticks) as f64 / hz / (last.at - first.at).as_secs_f64()
                    * 100.0
            }
            _ => 0.0,
        };
        let rss = |u: Option<&&proc::Usage>| u.map_or(0.0, |u| u.rss_kib as f64 / 1024.0);
        let mail = &gateway.mail;
        let lost = mail.accepted.difference(&mail.delivered).count();
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {cpu:.2} % | {:.2} → {:.2} MB | {:+.2} MB/h ({:+.2} MB over {:.0} s) | {} → {} | {} → {} | {} / {} / {} / {lost} | {} |",
            gateway.polls,
            gateway.counts.syncs,
            gateway.counts.failed_syncs,
            gateway.counts.outages,
            rss(after.first()),
            rss(after.last()),
            slope_kib_per_s * 3600.0 / 1024.0,
            growth / 1024.0,
            span,
            show(fds.0),
            show(fds.1),
            show(threads.0),
            show(threads.1),
            mail.sent,
            mail.accepted.len(),
            mail.accepted.intersection(&mail.delivered).count(),
            mail.during_stop,
        );
        if growth > MAX_RSS_GROWTH_KIB {
            failures.push(format!(
                "{name}: RSS grew {:.2} MB after the warm-up (target < 2 MB)",
                growth / 1024.0
            ));
        }
        if fds.0 != fds.1 || fds.0.is_none() {
            failures.push(format!(
                "{name}: descriptors {} at the start and {} at the end (target: equal)",
                show(fds.0),
                show(fds.1)
            ));
        }
        // At rest: the fewest seen in each quiet window (see `chaos::Chaos::quiet`). Fewer at
        // the end than at the start is an idle blocking thread that had not exited yet then.
        if threads.0 < threads.1 || threads.0.is_none() {
            failures.push(format!(
                "{name}: threads {} at rest at the start and {} at the end (target: equal)",
                show(threads.0),
                show(threads.1)
            ));
        }
        if lost > 0 {
            failures.push(format!(
                "{name}: {lost} accepted message(s) never reached smtp-sink (target: none lost)"
            ));
        }
        if mail.accepted.is_empty() {
            failures.push(format!("{name}: no message was accepted: nothing proven"));
        }
        match exits.get(g).and_then(|(_, code)| *code) {
            Some(0) => {}
            Some(code) => failures.push(format!("{name}: the watcher exited {code} on SIGTERM")),
            None => failures.push(format!(
                "{name}: the watcher did not stop within 60 s of SIGTERM"
            )),
        }
    }
    if !all_delivered {
        let _ = writeln!(
            text,
            "\nNot every accepted message arrived within a minute."
        );
    }
    let _ = writeln!(
        text,
        "\nPropagation, from the commit to the first RCPT answered as the database says:\n\n\
         | watcher | when | changes | p50 | p99 | max | commit → sync starts (p50) | sync (p50) | sync end → RCPT (p50) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (g, gateway) in state.gateways.iter().enumerate() {
        let name = exits.get(g).map_or("?", |(name, _)| *name);
        let _ = gateway;
        for (label, chaos) in [("calm", false), ("during faults", true)] {
            let samples: Vec<&observer::Sample> = state
                .samples
                .iter()
                .filter(|s| s.gateway == g && s.context != "first sync")
                .filter(|s| (s.context != "calm") == chaos)
                .collect();
            let took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
            let part = |i: usize| -> Vec<Duration> {
                samples
                    .iter()
                    .filter_map(|s| s.breakdown.map(|b| b[i]))
                    .collect()
            };
            let _ = writeln!(
                text,
                "| {name} | {label} | {} | {} | {} | {} | {} | {} | {} |",
                took.len(),
                secs(percentile(&took, 50.0)),
                secs(percentile(&took, 99.0)),
                secs(percentile(&took, 100.0)),
                secs(percentile(&part(0), 50.0)),
                secs(percentile(&part(1), 50.0)),
                secs(percentile(&part(2), 50.0)),
            );
        }
    }
    let _ = writeln!(
        text,
        "\nViolations: {}.{}",
        state.violations.len(),
        if state.violations.is_empty() {
            String::new()
        } else {
            format!("\n  {}", state.violations.join("\n  "))
        }
    );
    if faults.iter().any(|(_, n)| *n == 0) {
        failures.push("not every fault ran: the run ended before its first cycle did".to_owned());
    }
    if interrupted_now() {
        failures.push("interrupted (SIGINT or SIGTERM)".to_owned());
    }
    Report { text, failures }
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn secs(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "—".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The `p`th percentile (nearest rank), `None` without samples.
fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Runs a command; an error carries its stderr.
fn run_command(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flags() {
        let parsed = |s: &str| parse_duration(s).map_err(|e| e.to_string());
        assert_eq!(parsed("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parsed("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parsed("2h"), Ok(Duration::from_secs(7200)));
        assert!(parsed("2d").is_err());
        let args: Vec<String> = ["--polls", "300000", "--poll-interval", "0.01"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let options = Options::parse(&args).map_err(|e| e.to_string());
        assert!(
            options.as_ref().is_ok_and(|o| o.polls == Some(300_000)
                && o.duration.is_none()
                && o.poll_interval == 0.01),
            "{options:?}"
        );
        assert!(Options::parse(&["--poll-interval".to_owned(), "0".to_owned()]).is_err());
        assert_eq!(
            percentile(&[Duration::from_secs(1), Duration::from_secs(3)], 50.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(percentile(&[], 50.0), None);
    }
}
