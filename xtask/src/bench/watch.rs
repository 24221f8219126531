//! `relay-sync watch` in the bench (issues 12 and 21): propagation and idle cost, at the default
//! settings.
//!
//! - Propagation: from just after the admin's `UPDATE … enabled = 1` returned (its commit) to
//!   the first `RCPT TO` the gateway answers 250, and from `enabled = 0` to the first 554; RCPT
//!   is retried every 20 ms on a new SMTP session. Default settings (`POLL_INTERVAL` as
//!   shipped); map mode at 100 and 100k domains, inline mode at 100 (inline mode refuses above
//!   about 5,000 domains). Targets (issue 21): map p50 ≤ 0.5 s and p99 ≤ 1.5 s; inline p50 ≤
//!   the `postfix reload` floor + 0.5 s. The floor is the bare Postfix work of the same change
//!   (the files written, `postmap`, `postconf -e relay_domains = …`, `postfix reload`, as a
//!   shell script runs them), observed the same way: from its start to the first RCPT
//!   answered as the change says, per direction. (After a reload, Postfix's smtpd processes of
//!   the old generation answer for about a second more: in the disable direction the
//!   first 554 comes that much after `postfix reload` exited, with or without relay-sync.)
//! - Idle cost: the watcher's CPU (utime + stime from /proc over a quiet minute at the default
//!   `POLL_INTERVAL`) and the database's time per poll (the probe's duration in `SHOW
//!   PROFILES`, median of 21), at 100, 100k and 1M enabled domains; and what that costs the
//!   database for a fleet of 10 gateways. Targets: CPU < 1 % of a core, DB < 1 ms per poll.
//!
//! `cargo xtask bench watch --poll-interval S` measures another `POLL_INTERVAL` (a trial; the
//! figures of BENCHMARKS.md are those of the default).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_testbed::MariaDb;

use super::{Sandbox, TOGGLE};
use crate::soak::proc::{cpu_ticks, ticks_per_second};

/// Toggles per propagation scenario in map mode: half enables, half disables. Forty samples
/// per direction make p99 the second-slowest of the forty.
const TOGGLES: usize = 80;
/// Toggles in inline mode, where each costs Postfix's reload floor of about two seconds.
const INLINE_TOGGLES: usize = 24;
/// Runs of the inline reload floor, per direction.
const FLOOR_RUNS: usize = 7;
/// How long the idle watcher is watched.
const IDLE: Duration = Duration::from_secs(60);
/// The fleet whose database cost is shown.
const FLEET: f64 = 10.0;

/// One propagation scenario's samples.
struct Propagation {
    domains: usize,
    mode: &'static str,
    enable: Vec<Duration>,
    disable: Vec<Duration>,
    /// Inline mode: the floor's medians over SMTP, enable and disable, and of the commands
    /// alone.
    floor: Option<Floor>,
}

/// Inline mode's floor (see the module documentation), medians.
struct Floor {
    enable: Duration,
    disable: Duration,
    /// Until `postfix reload` exited.
    commands: Duration,
}

/// What `bench watch` was asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// `POLL_INTERVAL` to measure instead of the default (`--poll-interval`).
    pub(crate) poll_interval: Option<String>,
}

impl Options {
    /// Parses the flags after `bench watch`.
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--poll-interval" => {
                    let value = args.next().context("--poll-interval needs a value")?;
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .with_context(|| format!("{value:?} is not a number of seconds"))?;
                    options.poll_interval = Some(value.clone());
                }
                other => bail!("bench watch: unknown flag {other:?}"),
            }
        }
        Ok(options)
    }
}

/// One idle-cost measurement.
struct Idle {
    domains: usize,
    cpu_percent: f64,
    probe_db_ms: f64,
    fingerprint_db_ms: f64,
}

/// Runs the watch scenarios on `db`; returns the BENCHMARKS.md section.
pub(super) fn run(db: &MariaDb, binary: &Path, options: &Options) -> Result<String> {
    let started = Instant::now();
    let poll = options.poll_interval.as_deref();
    let mut propagation = Vec::new();
    for (n, mode) in [(100, "map"), (100_000, "map"), (100, "inline")] {
        let mut sandbox = Sandbox::new(db, binary, mode, n)?;
        propagation.push(propagate(&mut sandbox, poll)?);
    }
    let mut idle = Vec::new();
    for n in [100, 100_000, 1_000_000] {
        let sandbox = Sandbox::new(db, binary, "map", n)?;
        idle.push(idle_cost(&sandbox, poll)?);
    }
    Ok(render(&propagation, &idle, poll, started.elapsed()))
}

/// Starts `relay-sync watch` on the sandbox (with `POLL_INTERVAL` `poll`, or the default) and
/// waits for its first sync.
fn start_watcher(sandbox: &Sandbox<'_>, poll: Option<&str>) -> Result<Child> {
    let log = sandbox.dir.path().join("relay-sync.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let mut command = Command::new(sandbox.binary);
    command.arg("--config").arg(&sandbox.config).arg("watch");
    if let Some(poll) = poll {
        command.env("RELAY_SYNC_POLL_INTERVAL", poll);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start relay-sync watch")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .get(before..)
            .is_some_and(|new| new.contains("===== Sync completed"))
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("relay-sync watch did not finish its first sync within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn propagate(sandbox: &mut Sandbox<'_>, poll: Option<&str>) -> Result<Propagation> {
    let toggles = if sandbox.mode == "inline" {
        INLINE_TOGGLES
    } else {
        TOGGLES
    };
    // The inline floor first, by the bare commands, before a watcher runs.
    let floor = if sandbox.mode == "inline" {
        eprintln!("xtask bench: the inline reload floor, {FLOOR_RUNS} runs per direction");
        Some(floor_over_smtp(sandbox, FLOOR_RUNS)?)
    } else {
        None
    };
    eprintln!(
        "xtask bench: watch propagation, {} domains, {} mode, {toggles} toggles",
        sandbox.n, sandbox.mode
    );
    let watcher = start_watcher(sandbox, poll)?;
    let port = sandbox.postfix.smtp_port();
    let mut result = Propagation {
        domains: sandbox.n,
        mode: sandbox.mode,
        enable: Vec::new(),
        disable: Vec::new(),
        floor,
    };
    let mut phase: u64 = 42;
    for _ in 0..toggles {
        sandbox.toggle()?;
        let started = Instant::now();
        let want = if sandbox.toggled { "250" } else { "554" };
        loop {
            let reply = rcpt(port, &format!("user@{TOGGLE}"))?;
            if reply.starts_with(want) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("RCPT TO:<user@{TOGGLE}> still {reply:?} after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        if sandbox.toggled {
            result.enable.push(took);
        } else {
            result.disable.push(took);
        }
        // Let the next toggle meet a quiet gateway, not the end of this sync, at a moment in
        // step with neither the polls nor the second (an inline reload waits for main.cf to be
        // a whole second old): 1.2 to 2.2 s later, spread evenly.
        phase = phase
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(1200 + (phase >> 33) % 1000));
    }
    stop(watcher);
    Ok(result)
}

/// One SMTP session: the reply code to `RCPT TO:<to>`.
fn rcpt(port: u16, to: &str) -> Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut reply = || -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            // Multi-line replies continue with `250-`.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_owned());
            }
        }
    };
    reply()?;
    for command in [
        "EHLO bench.relay-sync.test".to_owned(),
        "MAIL FROM:<sender@outside.example>".to_owned(),
    ] {
        writer.write_all(format!("{command}\r\n").as_bytes())?;
        reply()?;
    }
    writer.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())?;
    let answer = reply()?;
    let _ = writer.write_all(b"QUIT\r\n");
    Ok(answer)
}

fn idle_cost(sandbox: &Sandbox<'_>, poll: Option<&str>) -> Result<Idle> {
    eprintln!(
        "xtask bench: watch idle cost, {} domains, {} s",
        sandbox.n,
        IDLE.as_secs()
    );
    let watcher = start_watcher(sandbox, poll)?;
    // The first sync's blocking threads and the first polls' settling are not idle.
    std::thread::sleep(Duration::from_secs(5));
    let pid = watcher.id();
    let before = cpu_ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(IDLE);
    let ticks = cpu_ticks(pid)? - before;
    let elapsed = started.elapsed().as_secs_f64();
    stop(watcher);
    let hz = ticks_per_second();
    let cpu_percent = ticks as f64 / hz / elapsed * 100.0;
    let probe = relay_db::Probe::query_for("SELECT name FROM domains WHERE enabled = 1")
        .context("no probe for the default query")?;
    let fingerprint = relay_db::signal_query("SELECT name FROM domains WHERE enabled = 1")?;
    Ok(Idle {
        domains: sandbox.n,
        cpu_percent,
        probe_db_ms: db_time(sandbox.db, &probe, "information_schema")?,
        fingerprint_db_ms: db_time(sandbox.db, &fingerprint, "relay_sync_names")?,
    })
}

/// The median server-side duration of `query` (21 runs), from `SHOW PROFILES`; `marker` finds
/// its lines there.
fn db_time(db: &MariaDb, query: &str, marker: &str) -> Result<f64> {
    let mut script = String::from(
        "USE mailserver_usermgmt; SET profiling = 1; SET profiling_history_size = 100;",
    );
    for _ in 0..21 {
        let _ = write!(script, " {query};");
    }
    script.push_str(" SHOW PROFILES;");
    let output = db.sql(&script)?;
    let mut durations: Vec<f64> = output
        .lines()
        .filter(|line| line.contains(marker))
        .filter_map(|line| line.split('\t').nth(1)?.parse().ok())
        .collect();
    if durations.is_empty() {
        bail!("SHOW PROFILES listed no signal query:\n{output}");
    }
    durations.sort_by(f64::total_cmp);
    Ok(durations[durations.len() / 2] * 1000.0)
}

/// Inline mode's floor, `runs` times each way: the files of both states (left by two untimed
/// syncs) replayed by the bare commands, each time from the start of the commands to the
/// first RCPT answered as the change says; relay-sync then syncs Postfix back to what the
/// database says.
fn floor_over_smtp(sandbox: &mut Sandbox<'_>, runs: usize) -> Result<Floor> {
    let mut states = [None, None];
    for _ in 0..2 {
        sandbox.toggle()?;
        sandbox.sync()?;
        states[usize::from(sandbox.toggled)] = Some(sandbox.snapshot()?);
    }
    let [Some(off), Some(on)] = states else {
        bail!("the two untimed changes did not leave both states");
    };
    let port = sandbox.postfix.smtp_port();
    let (mut enable, mut disable, mut commands) = (Vec::new(), Vec::new(), Vec::new());
    let mut phase: u64 = 7;
    for run in 0..2 * runs {
        let (files, want, samples) = if run % 2 == 0 {
            (&on, "250", &mut enable)
        } else {
            (&off, "554", &mut disable)
        };
        let started = Instant::now();
        commands.push(sandbox.floor(files)?);
        loop {
            if rcpt(port, &format!("user@{TOGGLE}"))?.starts_with(want) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("floor: RCPT TO:<user@{TOGGLE}> not {want} after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        samples.push(started.elapsed());
        phase = phase
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(1200 + (phase >> 33) % 1000));
    }
    sandbox.sync()?;
    std::thread::sleep(Duration::from_millis(1500));
    Ok(Floor {
        enable: percentile(&enable, 50.0),
        disable: percentile(&disable, 50.0),
        commands: percentile(&commands, 50.0),
    })
}

/// A key's shipped default, from relay-ops' key table.
fn default_of(name: &str) -> &'static str {
    relay_ops::config::SECTIONS
        .iter()
        .flat_map(|section| section.keys)
        .find(|key| key.name == name)
        .and_then(|key| match key.default {
            relay_ops::config::Shown::Value(value) => Some(value),
            _ => None,
        })
        .unwrap_or("?")
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn render(
    propagation: &[Propagation],
    idle: &[Idle],
    poll: Option<&str>,
    took: Duration,
) -> String {
    let default_poll = default_of("POLL_INTERVAL");
    let poll_seconds: f64 = poll.unwrap_or(default_poll).parse().unwrap_or(f64::NAN);
    let settings = match poll {
        Some(poll) => format!("`POLL_INTERVAL={poll}` (a trial, not the default)"),
        None => format!("the default settings (`POLL_INTERVAL` {default_poll} s)"),
    };
    let mut out = format!(
        "\n## Watch mode\n\n\
         `relay-sync watch` at {settings}: from just after the admin's `UPDATE … enabled = 1` \
         (or `0`) returned to the first `RCPT TO` the private Postfix answers 250 (or 554), RCPT \
         retried every 20 ms on a new session. p99 is the nearest rank (of 40 samples per \
         direction in map mode, the second slowest; of 12 in inline mode, the slowest).\n\n\
         | direction | domains | mode | toggles | p50 | p99 | target | |\n\
         |---|---:|---|---:|---:|---:|---|---|\n",
    );
    for p in propagation {
        for (direction, samples) in [("enable → 250", &p.enable), ("disable → 554", &p.disable)]
        {
            let p50 = percentile(samples, 50.0);
            let p99 = percentile(samples, 99.0);
            let (target, met) = match &p.floor {
                Some(floor) => {
                    let floor = if direction.starts_with("enable") {
                        floor.enable
                    } else {
                        floor.disable
                    };
                    (
                        format!("p50 ≤ reload floor ({:.2} s) + 0.5 s", floor.as_secs_f64()),
                        p50 <= floor + Duration::from_millis(500),
                    )
                }
                None => (
                    "p50 ≤ 0.5 s, p99 ≤ 1.5 s".to_owned(),
                    p50 <= Duration::from_millis(500) && p99 <= Duration::from_millis(1500),
                ),
            };
            let _ = writeln!(
                out,
                "| {direction} | {} | {} | {} | {:.2} s | {:.2} s | {target} | {} |",
                p.domains,
                p.mode,
                samples.len(),
                p50.as_secs_f64(),
                p99.as_secs_f64(),
                if met { "met" } else { "**missed**" },
            );
        }
    }
    for p in propagation {
        if let Some(floor) = &p.floor {
            let _ = writeln!(
                out,
                "\nInline floor at {} domains ({FLOOR_RUNS} runs each way, medians): the bare \
                 commands until `postfix reload` exited {:.2} s (it waits for `main.cf` to be a \
                 second old); to RCPT 250 {:.2} s, to RCPT 554 {:.2} s (smtpd processes of the \
                 generation before the reload answer for a moment longer).",
                p.domains,
                floor.commands.as_secs_f64(),
                floor.enable.as_secs_f64(),
                floor.disable.as_secs_f64(),
            );
        }
    }
    let _ = write!(
        out,
        "\nIdle cost at {settings}, map mode, nothing changing: the watcher's CPU (utime + \
         stime over a minute, in % of one core) and the database's time for one poll (the probe \
         of `UPDATE_TIME`, all an idle poll runs) and for the fingerprint a poll adds after a \
         write to the table (each query's duration in `SHOW PROFILES`, median of 21). A fleet of \
         {FLEET:.0} gateways polls {:.0} times a second.\n\n\
         | enabled domains | watcher CPU | DB time per poll | for {FLEET:.0} gateways | fingerprint after a write | target | |\n\
         |---:|---:|---:|---:|---:|---|---|\n",
        FLEET / poll_seconds,
    );
    for i in idle {
        let fleet_ms_per_s = i.probe_db_ms * FLEET / poll_seconds;
        let met = i.cpu_percent < 1.0 && i.probe_db_ms < 1.0;
        let _ = writeln!(
            out,
            "| {} | {:.2} % | {:.2} ms | {:.1} ms/s ({:.2} % of a core) | {:.1} ms | CPU < 1 %, DB < 1 ms per poll | {} |",
            i.domains,
            i.cpu_percent,
            i.probe_db_ms,
            fleet_ms_per_s,
            fleet_ms_per_s / 10.0,
            i.fingerprint_db_ms,
            if met { "met" } else { "**missed**" },
        );
    }
    let _ = writeln!(
        out,
        "\nMachine: {} CPUs, shared with other work while it ran; watch bench time {:.0} s.",
        std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        took.as_secs_f64()
    );
    out
}
