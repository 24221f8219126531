//! `relay-sync watch` in the bench (issue 12): propagation and idle cost.
//!
//! - Propagation: from just before the admin's `UPDATE … enabled = 1` (its commit) to the first
//!   `RCPT TO` the gateway answers 250, and from `enabled = 0` to the first 554; RCPT is
//!   retried every 20 ms on a new SMTP session. `POLL_INTERVAL=1`; map and inline mode at 100
//!   domains, map mode at 100k (inline mode refuses above about 5,000 domains).
//! - Idle cost: the watcher's CPU (utime + stime from /proc over a quiet minute at the default
//!   `POLL_INTERVAL` of 2 s) and the database's time per poll (the signal query's duration in
//!   `SHOW PROFILES`, median of 21), at 100, 100k and 1M enabled domains.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_testbed::MariaDb;

use super::{Sandbox, TOGGLE};

/// Toggles per propagation scenario: half enables, half disables.
const TOGGLES: usize = 24;
/// How long the idle watcher is watched.
const IDLE: Duration = Duration::from_secs(60);

/// One propagation scenario's samples.
struct Propagation {
    domains: usize,
    mode: &'static str,
    enable: Vec<Duration>,
    disable: Vec<Duration>,
}

/// One idle-cost measurement.
struct Idle {
    domains: usize,
    cpu_percent: f64,
    probe_db_ms: f64,
    fingerprint_db_ms: f64,
}

/// Runs the watch scenarios on `db`; returns the BENCHMARKS.md section.
pub(super) fn run(db: &MariaDb, binary: &Path) -> Result<String> {
    let mut propagation = Vec::new();
    for (n, mode) in [(100, "map"), (100, "inline"), (100_000, "map")] {
        let mut sandbox = Sandbox::new(db, binary, mode, n)?;
        propagation.push(propagate(&mut sandbox)?);
    }
    let mut idle = Vec::new();
    for n in [100, 100_000, 1_000_000] {
        let sandbox = Sandbox::new(db, binary, "map", n)?;
        idle.push(idle_cost(&sandbox)?);
    }
    Ok(render(&propagation, &idle))
}

/// Starts `relay-sync watch` on the sandbox and waits for its first sync.
fn start_watcher(sandbox: &Sandbox<'_>, poll_interval: &str) -> Result<Child> {
    let log = sandbox.dir.path().join("relay-sync.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let child = Command::new(sandbox.binary)
        .arg("--config")
        .arg(&sandbox.config)
        .arg("watch")
        .env("RELAY_SYNC_POLL_INTERVAL", poll_interval)
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

fn propagate(sandbox: &mut Sandbox<'_>) -> Result<Propagation> {
    eprintln!(
        "xtask bench: watch propagation, {} domains, {} mode, {TOGGLES} toggles",
        sandbox.n, sandbox.mode
    );
    let watcher = start_watcher(sandbox, "1")?;
    let port = sandbox.postfix.smtp_port();
    let mut result = Propagation {
        domains: sandbox.n,
        mode: sandbox.mode,
        enable: Vec::new(),
        disable: Vec::new(),
    };
    for _ in 0..TOGGLES {
        let started = Instant::now();
        sandbox.toggle()?;
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
        // Let the next toggle meet a quiet gateway, not the end of this sync.
        std::thread::sleep(Duration::from_millis(1200));
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

fn idle_cost(sandbox: &Sandbox<'_>) -> Result<Idle> {
    eprintln!(
        "xtask bench: watch idle cost, {} domains, {} s",
        sandbox.n,
        IDLE.as_secs()
    );
    let watcher = start_watcher(sandbox, "2")?;
    let pid = watcher.id();
    let before = cpu_ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(IDLE);
    let ticks = cpu_ticks(pid)? - before;
    let elapsed = started.elapsed().as_secs_f64();
    stop(watcher);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
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

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("short /proc/PID/stat")?
            .parse()
            .context("/proc/PID/stat")
    };
    Ok(field(14)? + field(15)?)
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

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn render(propagation: &[Propagation], idle: &[Idle]) -> String {
    let mut out = String::from(
        "\n## Watch mode\n\n\
         `relay-sync watch` with `POLL_INTERVAL=1`: from just before the admin's `UPDATE … \
         enabled = 1` (or `0`) to the first `RCPT TO` the private Postfix answers 250 (or 554), \
         RCPT retried every 20 ms on a new session. p99 of a dozen samples is their maximum.\n\n\
         | direction | domains | mode | toggles | p50 | p99 | target (p99) |\n\
         |---|---:|---|---:|---:|---:|---|\n",
    );
    for p in propagation {
        let target = match (p.mode, p.domains) {
            ("map", 100) => "p50 ≤ 1 s, p99 ≤ 2 s",
            ("inline", _) => "≤ inline floor (≈ 1.9 s) + 1 s + 0.5 s",
            _ => "≤ 3 s",
        };
        for (direction, samples) in [("enable → 250", &p.enable), ("disable → 554", &p.disable)]
        {
            let _ = writeln!(
                out,
                "| {direction} | {} | {} | {} | {:.2} s | {:.2} s | {target} |",
                p.domains,
                p.mode,
                samples.len(),
                percentile(samples, 50.0).as_secs_f64(),
                percentile(samples, 99.0).as_secs_f64(),
            );
        }
    }
    out.push_str(
        "\nIdle cost at the default `POLL_INTERVAL` (2 s), map mode, nothing changing: the \
         watcher's CPU (utime + stime over a minute, in % of one core) and the database's time \
         for one poll (the probe of `UPDATE_TIME`, all an idle poll runs) and for the \
         fingerprint a poll adds after a write to the table (each query's duration in `SHOW \
         PROFILES`, median of 21).\n\n\
         | enabled domains | watcher CPU | DB time per poll | fingerprint after a write | target |\n\
         |---:|---:|---:|---:|---|\n",
    );
    for i in idle {
        let _ = writeln!(
            out,
            "| {} | {:.2} % | {:.2} ms | {:.1} ms | {} |",
            i.domains,
            i.cpu_percent,
            i.probe_db_ms,
            i.fingerprint_db_ms,
            if i.domains == 100_000 {
                "CPU < 1 %, DB < 5 ms"
            } else {
                ""
            }
        );
    }
    out
}
