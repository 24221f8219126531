//! `cargo xtask bench`: whole-process timings of the release `relay-sync` against a private
//! MariaDB and Postfix (relay-testbed), next to the floor, the bare Postfix work any tool must
//! do for the same change, measured in the same run. Prints a table and writes `BENCHMARKS.md`.
//!
//! Scenarios (issue "Scale and speed"):
//! - no-change run at 100 domains (inline and map);
//! - a one-domain change at 100 domains (inline and map) and 10k, 100k, 1M domains (map);
//! - a one-address change with recipient validation (`RECIPIENTS_QUERY`, issue 14) at 1M
//!   recipients over 10k relayed domains (map);
//! - the floor for each change: write the same files relay-sync wrote, then `postmap` them
//!   and `postconf -e` (inline) and `postfix reload`; for an address, the recipients table
//!   written and postmapped, then `postfix reload` for an addition only (a removal alone has
//!   none in relay-sync's steps, relay-core's `apply_steps_with`), each direction a row;
//! - peak RSS of each relay-sync run, from wait4(2) (the process and the commands it waited
//!   for: postconf, postmap, postfix).
//!
//! Each change alternately enables and disables one extra domain (or user), so every run is a
//! change of exactly one domain (or address). relay-sync's runs and the floor's alternate, each
//! right after the same database write. Medians of several runs; the database edits are not
//! timed.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_testbed::{MariaDb, Postfix};

pub(crate) mod watch;

const TOGGLE: &str = "toggle.example";
/// The user a one-address change enables and disables, at a relayed domain.
const TOGGLE_USER: &str = "toggle@d1.example";
/// `RECIPIENTS_QUERY` of the recipient scenario, as the issue gives it.
const RECIPIENTS_QUERY: &str = "SELECT email FROM users WHERE enabled = 1";
/// The recipient scenario: this many enabled users over this many relayed domains.
const RECIPIENTS: (usize, usize) = (1_000_000, 10_000);

/// One measured process: wall time and peak RSS.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    max_rss_kib: i64,
}

/// A row of the result table.
#[derive(Debug)]
struct Row {
    scenario: String,
    domains: usize,
    mode: &'static str,
    runs: usize,
    relay_sync: Duration,
    floor: Option<Duration>,
    peak_rss_kib: i64,
    target: Target,
}

/// The issue's targets for a row; `met` is derived from them.
#[derive(Debug, Clone, Copy, Default)]
struct Target {
    max_ms: Option<f64>,
    max_ratio: Option<f64>,
    max_rss_mb: Option<f64>,
}

impl Target {
    fn describe(self) -> String {
        let mut parts = Vec::new();
        if let Some(ms) = self.max_ms {
            parts.push(format!("≤ {ms} ms"));
        }
        if let Some(ratio) = self.max_ratio {
            parts.push(format!("≤ {ratio}× floor"));
        }
        if let Some(mb) = self.max_rss_mb {
            parts.push(format!("RSS ≤ {mb} MB"));
        }
        parts.join(", ")
    }

    fn verdict(self, row: &Row) -> &'static str {
        let ms = row.relay_sync.as_secs_f64() * 1000.0;
        let ratio = row
            .floor
            .map(|floor| row.relay_sync.as_secs_f64() / floor.as_secs_f64());
        let mb = row.peak_rss_kib as f64 / 1024.0;
        let checks = [
            self.max_ms.map(|max| ms <= max),
            self.max_ratio.map(|max| ratio.is_some_and(|r| r <= max)),
            self.max_rss_mb.map(|max| mb <= max),
        ];
        if checks.iter().all(Option::is_none) {
            ""
        } else if checks.iter().flatten().all(|ok| *ok) {
            "met"
        } else {
            "**missed**"
        }
    }
}

/// The heading of BENCHMARKS.md's watch section.
const WATCH_HEADING: &str = "Watch mode";
/// The heading of the soak's section, which `cargo xtask soak --benchmarks` writes and the
/// benches keep.
pub(crate) const SOAK_HEADING: &str = "Soak";

/// `doc` with its `## {heading}` section (up to the next `## ` heading) replaced by `section`
/// (text that starts with that heading, after a blank line), or `section` added at the end.
pub(crate) fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let start_marker = format!("\n## {heading}\n");
    let section = section.trim_matches('\n');
    let Some(start) = doc.find(&start_marker) else {
        return format!("{}\n\n{section}\n", doc.trim_end());
    };
    let after = start + start_marker.len();
    let end = doc[after..]
        .find("\n## ")
        .map_or(doc.len(), |at| after + at);
    // The rest starts with the next heading's line break, or is empty.
    format!("{}\n\n{section}\n{}", doc[..start].trim_end(), &doc[end..])
}

/// The `## {heading}` section of `doc`, when it has one.
fn section_of(doc: &str, heading: &str) -> Option<String> {
    let start_marker = format!("\n## {heading}\n");
    let start = doc.find(&start_marker)?;
    let after = start + start_marker.len();
    let end = doc[after..]
        .find("\n## ")
        .map_or(doc.len(), |at| after + at);
    Some(doc[start..end].to_owned())
}

/// `cargo xtask bench watch`: only the watch scenarios; their section of BENCHMARKS.md is
/// replaced and the rest kept.
pub(crate) fn run_watch(root: &Path, binary: &Path, options: &watch::Options) -> Result<()> {
    let db = MariaDb::start()?;
    db.load_fixtures()?;
    let section = watch::run(&db, binary, options)?;
    println!("{section}");
    let path = root.join("BENCHMARKS.md");
    let doc = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, replace_section(&doc, WATCH_HEADING, &section))
        .context("writing BENCHMARKS.md")?;
    println!("xtask: wrote {}", path.display());
    Ok(())
}

pub(crate) fn run(root: &Path, binary: &Path) -> Result<()> {
    let started = Instant::now();
    let db = MariaDb::start()?;
    db.load_fixtures()?;
    let mut rows = Vec::new();

    // (a) and (b) at 100 domains, both modes.
    for mode in ["inline", "map"] {
        let mut sandbox = Sandbox::new(&db, binary, mode, 100)?;
        let samples = sandbox.no_change(21)?;
        rows.push(Row {
            scenario: "no-change run".into(),
            domains: 100,
            mode,
            runs: samples.len(),
            relay_sync: median(&samples),
            floor: None,
            peak_rss_kib: peak(&samples),
            target: Target {
                max_ms: Some(25.0),
                ..Target::default()
            },
        });
        // A map-mode change at 100 domains takes about 40 ms, and this machine's noise is
        // about as large as the margin to the target: more runs, a steadier median.
        let runs = if mode == "inline" { 7 } else { 21 };
        let target = Target {
            max_ratio: Some(1.2),
            ..Target::default()
        };
        rows.push(sandbox.one_change(runs, target)?);
    }
    // (b) at scale, map mode only (inline mode refuses above about 5,000 domains).
    for (n, runs) in [(10_000, 9), (100_000, 7), (1_000_000, 5)] {
        let mut sandbox = Sandbox::new(&db, binary, "map", n)?;
        let target = if n == 1_000_000 {
            Target {
                max_ratio: Some(1.5),
                max_rss_mb: Some(200.0),
                ..Target::default()
            }
        } else {
            Target::default()
        };
        rows.push(sandbox.one_change(runs, target)?);
    }
    // Recipient validation at scale.
    rows.extend(recipients_rows(&db, binary)?);

    let table = render(&rows);
    println!("{table}");
    let watch_section = watch::run(&db, binary, &watch::Options::default())?;
    println!("{watch_section}");
    let doc = format!(
        "# Benchmarks\n\n\
         Whole-process timings of the release `relay-sync` against a private MariaDB and a \
         private Postfix on 127.0.0.1 (relay-testbed), medians of the runs shown, from one \
         invocation of:\n\n\
         ```sh\ncargo xtask bench\n```\n\n\
         The floor is the bare Postfix work for the same change, measured in the same run: the \
         same files written, `postmap` of each changed map, `postconf -e relay_domains = …` \
         (inline mode), then `postfix reload`, run as a shell script would (output discarded; \
         done when `postfix` exits, not when the `postsuper` it starts in the background does). \
         Its runs alternate with relay-sync's, each right after the same database write (the \
         admin's toggle). Ratio = relay-sync ÷ floor. Peak RSS is wait4(2)'s \
         `ru_maxrss` for the relay-sync process and the commands it waited for (postmap of a \
         million entries peaks at about 27 MB, so large values are relay-sync's own). A one-domain change alternately \
         enables and disables `{TOGGLE}`; a one-address change, with `RECIPIENTS_QUERY = \
         {RECIPIENTS_QUERY}` and users `userN@dM.example` spread evenly over the relayed \
         domains, enables (addition) or disables (removal) `{TOGGLE_USER}`, and each direction \
         is timed for relay-sync and the floor: the recipients table written and postmapped \
         (Postfix notices a rebuilt table by itself: neither direction reloads). Inline changes pay Postfix's wait for `main.cf` to be \
         a second old inside `postfix reload`; map-mode changes do not touch `main.cf`.\n\n\
         {table}\n\
         Machine: {cpus} CPUs, {kernel}; total bench time {total:.0} s.\n\n\
         relay-core's plan + render alone: `cargo bench -p relay-core` (criterion).\n\
         {watch_section}",
        cpus = std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_default(),
        total = started.elapsed().as_secs_f64(),
    );
    // The soak's section is written by `cargo xtask soak --benchmarks`: kept as it is.
    let old = fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
    let doc = match section_of(&old, SOAK_HEADING) {
        Some(soak) => replace_section(&doc, SOAK_HEADING, &soak),
        None => doc,
    };
    fs::write(root.join("BENCHMARKS.md"), doc).context("writing BENCHMARKS.md")?;
    println!("xtask: wrote {}", root.join("BENCHMARKS.md").display());
    Ok(())
}

/// The recipient scenario's rows: a one-address addition and a one-address removal at
/// [`RECIPIENTS`], map mode, against the targets of the 1M-domain row (issue 14: the same
/// budget as a million domains).
fn recipients_rows(db: &MariaDb, binary: &Path) -> Result<[Row; 2]> {
    let (users, domains) = RECIPIENTS;
    let mut sandbox = Sandbox::with_recipients(db, binary, domains, users)?;
    let rows = sandbox.one_address_changes(
        5,
        Target {
            max_ratio: Some(1.5),
            max_rss_mb: Some(200.0),
            ..Target::default()
        },
    );
    // The users stay out of the other scenarios' way: back to the seed's.
    db.load_fixtures()?;
    rows
}

/// `cargo xtask bench recipients`: only the recipient scenario. Its rows of BENCHMARKS.md's
/// table are replaced (or added after the last row) and the rest kept.
pub(crate) fn run_recipients(root: &Path, binary: &Path) -> Result<()> {
    let db = MariaDb::start()?;
    db.load_fixtures()?;
    let rows = recipients_rows(&db, binary)?;
    let table = render(&rows);
    println!("{table}");
    let path = root.join("BENCHMARKS.md");
    let mut doc = fs::read_to_string(&path).context("reading BENCHMARKS.md")?;
    for (row, line) in rows.iter().zip(table.lines().skip(2)) {
        doc = splice_row(&doc, &row.scenario, line);
    }
    fs::write(&path, doc).context("writing BENCHMARKS.md")?;
    println!("xtask: wrote {}", path.display());
    Ok(())
}

/// `doc` with the first table's row for `scenario` replaced by `line`, or `line` added after
/// that table's last row.
fn splice_row(doc: &str, scenario: &str, line: &str) -> String {
    let prefix = format!("| {scenario} |");
    let mut lines: Vec<&str> = doc.lines().collect();
    if let Some(at) = lines.iter().position(|l| l.starts_with(&prefix)) {
        lines[at] = line;
    } else if let Some(start) = lines.iter().position(|l| l.starts_with("| scenario |")) {
        let end = lines[start..]
            .iter()
            .position(|l| !l.starts_with('|'))
            .map_or(lines.len(), |n| start + n);
        lines.insert(end, line);
    } else {
        lines.push(line);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `cargo xtask sandbox`: the bench's sandbox for `n` domains in `mode` (with `users`
/// recipients and `RECIPIENTS_QUERY` set, when given), synced and held open until standard
/// input closes, so that a run can be profiled by hand (strace, perf, heaptrack).
pub(crate) fn hold(
    binary: &Path,
    n: usize,
    mode: &'static str,
    users: Option<usize>,
) -> Result<()> {
    let db = MariaDb::start()?;
    db.load_fixtures()?;
    let sandbox = match users {
        Some(users) => Sandbox::with_recipients(&db, binary, n, users)?,
        None => Sandbox::new(&db, binary, mode, n)?,
    };
    let toggle = match users {
        Some(users) => format!(
            "UPDATE mailserver_usermgmt.users SET enabled = 1 - enabled WHERE id = {}",
            users + 1
        ),
        None => format!(
            "UPDATE mailserver_usermgmt.domains SET enabled = 1 - enabled WHERE name = '{TOGGLE}'"
        ),
    };
    println!(
        "sandbox ready: {n} domains, {mode} mode{}\n  run:    {} --config {}\n  toggle: mariadb --socket={} -u root -e \"{toggle}\"\n  Postfix config: {}\npress Enter (or close stdin) to stop and remove it",
        users.map_or(String::new(), |u| format!(", {u} recipients")),
        binary.display(),
        sandbox.config.display(),
        db.socket().display(),
        sandbox.postfix.config_dir().display(),
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | domains | mode | runs | relay-sync median | floor median | ratio | peak RSS | target | |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let (floor, ratio) = match row.floor {
            Some(floor) => (
                ms(floor),
                format!("{:.2}×", row.relay_sync.as_secs_f64() / floor.as_secs_f64()),
            ),
            None => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} MB | {} | {} |",
            row.scenario,
            row.domains,
            row.mode,
            row.runs,
            ms(row.relay_sync),
            floor,
            ratio,
            row.peak_rss_kib as f64 / 1024.0,
            row.target.describe(),
            row.target.verdict(row)
        );
    }
    out
}

fn median(samples: &[Sample]) -> Duration {
    median_of(samples.iter().map(|s| s.wall).collect())
}

fn median_of(mut walls: Vec<Duration>) -> Duration {
    walls.sort();
    walls.get(walls.len() / 2).copied().unwrap_or_default()
}

fn peak(samples: &[Sample]) -> i64 {
    samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0)
}

/// A private Postfix synced to `n` database domains in `mode`, with relay-sync's config.
struct Sandbox<'a> {
    db: &'a MariaDb,
    binary: &'a Path,
    postfix: Postfix,
    mode: &'static str,
    n: usize,
    /// Recipient validation: the number of enabled users (the toggled one aside); `None`: off.
    recipients: Option<usize>,
    dir: tempfile::TempDir,
    config: PathBuf,
    toggled: bool,
}

impl<'a> Sandbox<'a> {
    fn new(db: &'a MariaDb, binary: &'a Path, mode: &'static str, n: usize) -> Result<Self> {
        Self::build(db, binary, mode, n, None)
    }

    /// A map-mode sandbox with recipient validation: `users` enabled users, `userN@dM.example`
    /// spread evenly over the `n` domains, and a disabled [`TOGGLE_USER`].
    fn with_recipients(db: &'a MariaDb, binary: &'a Path, n: usize, users: usize) -> Result<Self> {
        Self::build(db, binary, "map", n, Some(users))
    }

    fn build(
        db: &'a MariaDb,
        binary: &'a Path,
        mode: &'static str,
        n: usize,
        recipients: Option<usize>,
    ) -> Result<Self> {
        eprintln!("xtask bench: {n} domains, {mode} mode: loading the database and syncing");
        let mut extra = String::new();
        if let Some(users) = recipients {
            eprintln!("xtask bench: and {users} users, RECIPIENTS_QUERY set");
            // Ids given, so that the toggled user is found by its primary key.
            db.sql(&format!(
                "TRUNCATE TABLE mailserver_usermgmt.users; \
                 INSERT INTO mailserver_usermgmt.users (id, email, enabled) \
                 SELECT seq, CONCAT('user', seq, '@d', seq MOD {n} + 1, '.example'), 1 \
                 FROM mailserver_usermgmt.seq_1_to_{users}; \
                 INSERT INTO mailserver_usermgmt.users (id, email, enabled) \
                 VALUES ({id}, '{TOGGLE_USER}', 0);",
                id = users + 1
            ))?;
            db.grant_recipients()?;
            extra = format!("RECIPIENTS_QUERY={RECIPIENTS_QUERY}\n");
        }
        db.sql(&format!(
            "TRUNCATE TABLE mailserver_usermgmt.domains; \
             INSERT INTO mailserver_usermgmt.domains (name, enabled) \
             SELECT CONCAT('d', seq, '.example'), 1 FROM mailserver_usermgmt.seq_1_to_{n}; \
             INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('{TOGGLE}', 0);"
        ))?;
        let postfix = Postfix::start("$mydestination")?;
        let dir = tempfile::Builder::new()
            .prefix("relay-sync-bench-")
            .tempdir()?;
        let config = dir.path().join("relay-sync.conf");
        fs::write(
            &config,
            format!(
                "DB_HOST=127.0.0.1\nDB_PORT={}\nDB_USER=relay_sync\n\
                 DB_PASSWORD=relay-sync-test-pw\nDB_QUERY_TIMEOUT=60\n\
                 DELL_RELAY_IP=127.0.0.1\nDELL_RELAY_PORT=2525\n\
                 POSTFIX_CONFIG_DIR={}\nRELAY_DOMAINS_MODE={mode}\n\
                 BACKUP_DIR={d}/backup\nLOG_FILE={d}/relay-sync.log\nSTATE_DIR={d}/state\n\
                 {extra}",
                db.port(),
                postfix.config_dir().display(),
                d = dir.path().display()
            ),
        )?;
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600))?;
        let sandbox = Sandbox {
            db,
            binary,
            postfix,
            mode,
            n,
            recipients,
            dir,
            config,
            toggled: false,
        };
        sandbox.sync()?;
        // The first sync rewrote main.cf; let it age past Postfix's one-second cool-down so
        // that it does not slow the first measured run.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(sandbox)
    }

    /// One relay-sync run, timed; fails unless it exits 0.
    fn sync(&self) -> Result<Sample> {
        let mut command = Command::new(self.binary);
        command.arg("--config").arg(&self.config);
        let (status, sample) = measure(&mut command)?;
        if status != 0 {
            let log =
                fs::read_to_string(self.dir.path().join("relay-sync.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "relay-sync exited {status} ({} domains, {} mode); last log lines:\n{}",
                self.n,
                self.mode,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(sample)
    }

    fn no_change(&mut self, runs: usize) -> Result<Vec<Sample>> {
        eprintln!("xtask bench: {runs} no-change runs");
        (0..runs).map(|_| self.sync()).collect()
    }

    /// The admin's toggle: the extra domain, or with recipient validation the extra user.
    fn toggle(&mut self) -> Result<()> {
        self.toggled = !self.toggled;
        let enabled = u8::from(self.toggled);
        self.db.sql(&match self.recipients {
            None => format!(
                "UPDATE mailserver_usermgmt.domains SET enabled = {enabled} WHERE name = '{TOGGLE}'"
            ),
            Some(users) => format!(
                "UPDATE mailserver_usermgmt.users SET enabled = {enabled} WHERE id = {}",
                users + 1
            ),
        })?;
        Ok(())
    }

    /// The files a one-domain (or one-address) change writes, as relay-sync left them.
    fn snapshot(&self) -> Result<Files> {
        let dir = self.postfix.config_dir();
        let recipients = match self.recipients {
            Some(_) => Some(fs::read(dir.join("relay_recipients"))?),
            None => None,
        };
        Ok(Files {
            transport: fs::read(dir.join("transport"))?,
            table: fs::read(dir.join("relay_domains")).ok(),
            relay_domains: self.postfix.postconf("relay_domains")?,
            recipients,
        })
    }

    /// `runs` one-domain changes by relay-sync and as many by the floor, interleaved, each
    /// right after the same database write (the admin's toggle), so that both meet the same
    /// machine: page cache, file system journal, CPU.
    fn one_change(&mut self, runs: usize, target: Target) -> Result<Row> {
        eprintln!(
            "xtask bench: {runs} one-domain changes by relay-sync and by the floor, interleaved"
        );
        // Two untimed changes leave the files of both states to replay for the floor.
        let mut states = [None, None];
        for _ in 0..2 {
            self.toggle()?;
            self.sync()?;
            states[usize::from(self.toggled)] = Some(self.snapshot()?);
        }
        let [Some(off), Some(on)] = states else {
            bail!("the two untimed changes did not leave both states");
        };
        let mut samples = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            self.toggle()?;
            samples.push(self.sync()?);
            // Back to the other state, by the floor: the database says so first.
            self.toggle()?;
            floors.push(self.floor(if self.toggled { &on } else { &off })?);
        }
        Ok(Row {
            scenario: "one-domain change".into(),
            domains: self.n,
            mode: self.mode,
            runs,
            relay_sync: median(&samples),
            floor: Some(median_of(floors)),
            peak_rss_kib: peak(&samples),
            target,
        })
    }

    /// With recipient validation: `runs` one-address additions and as many removals by
    /// relay-sync, and as many of each by the floor. Each direction is a row of its own,
    /// compared with the floor's same change (a removal leaves the table after an addition's
    /// union would have, so the two may differ). Per round: relay-sync adds, the
    /// floor removes, the floor adds, relay-sync removes; each right after the database write.
    fn one_address_changes(&mut self, runs: usize, target: Target) -> Result<[Row; 2]> {
        let Some(users) = self.recipients else {
            bail!("one-address changes need a sandbox with recipients");
        };
        eprintln!(
            "xtask bench: {runs} one-address additions and removals by relay-sync and by the floor, interleaved"
        );
        let mut states = [None, None];
        for _ in 0..2 {
            self.toggle()?;
            self.sync()?;
            states[usize::from(self.toggled)] = Some(self.snapshot()?);
        }
        let [Some(Files {
            recipients: Some(off),
            ..
        }), Some(Files {
            recipients: Some(on),
            ..
        })] = states
        else {
            bail!("the two untimed changes did not leave both recipients tables");
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let (mut floor_added, mut floor_removed) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            self.toggle()?;
            added.push(self.sync()?);
            self.toggle()?;
            floor_removed.push(self.recipients_floor(&off)?);
            self.toggle()?;
            floor_added.push(self.recipients_floor(&on)?);
            self.toggle()?;
            removed.push(self.sync()?);
        }
        let row = |change: &str, samples: &[Sample], floors| Row {
            scenario: format!("one-address {change}, {users} recipients"),
            domains: self.n,
            mode: self.mode,
            runs,
            relay_sync: median(samples),
            floor: Some(median_of(floors)),
            peak_rss_kib: peak(samples),
            target,
        };
        Ok([
            row("addition", &added, floor_added),
            row("removal", &removed, floor_removed),
        ])
    }

    /// The bare Postfix work for a change to `files`: write them, postmap, postconf -e
    /// (inline), postfix reload.
    fn floor(&self, files: &Files) -> Result<Duration> {
        let dir = self.postfix.config_dir();
        let started = Instant::now();
        fs::write(dir.join("transport"), &files.transport)?;
        self.bare(
            "/usr/sbin/postmap",
            &[&format!("hash:{}", dir.join("transport").display())],
        )?;
        match (&files.table, self.mode) {
            (Some(table), "map") => {
                fs::write(dir.join("relay_domains"), table)?;
                self.bare(
                    "/usr/sbin/postmap",
                    &[&format!("hash:{}", dir.join("relay_domains").display())],
                )?;
            }
            _ => {
                self.bare(
                    "/usr/sbin/postconf",
                    &["-e", &format!("relay_domains = {}", files.relay_domains)],
                )?;
            }
        }
        self.bare("/usr/sbin/postfix", &["reload"])?;
        Ok(started.elapsed())
    }

    /// The bare Postfix work for a one-address change to `table`, as relay-sync does it
    /// (relay-core's `apply_steps_with`): write and postmap the table. Postfix notices a
    /// rebuilt table by itself, so neither direction reloads; nothing else changes (the
    /// transport map, relay_domains and relay_recipient_maps stay as they are).
    fn recipients_floor(&self, table: &[u8]) -> Result<Duration> {
        let path = self.postfix.config_dir().join("relay_recipients");
        let map = format!("hash:{}", path.display());
        let started = Instant::now();
        fs::write(&path, table)?;
        self.bare("/usr/sbin/postmap", &[&map])?;
        Ok(started.elapsed())
    }

    /// One command of the floor, as a shell script would run it: output discarded, done when
    /// the command exits. (`postfix reload` leaves `postsuper` running in the background; a
    /// caller reading the output through pipes would wait for it as well.)
    fn bare(&self, program: &str, args: &[&str]) -> Result<()> {
        let status = Command::new(program)
            .arg("-c")
            .arg(self.postfix.config_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {program}"))?;
        if !status.success() {
            bail!("floor: {program} {} failed ({status})", args.join(" "));
        }
        Ok(())
    }
}

/// The files of one state of a one-domain (or one-address) change.
struct Files {
    transport: Vec<u8>,
    table: Option<Vec<u8>>,
    relay_domains: String,
    /// Recipient validation's table source, when the sandbox has it on.
    recipients: Option<Vec<u8>>,
}

/// Runs `command` with its output discarded and returns its exit code, wall time and peak
/// RSS (wait4's `ru_maxrss`, in KiB).
fn measure(command: &mut Command) -> Result<(i32, Sample)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let child = command.spawn().context("cannot start relay-sync")?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child's pid, with valid pointers to locals. The `Child` is
    // never waited on afterwards, so the pid is reaped exactly once.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if reaped != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((
        code,
        Sample {
            wall,
            max_rss_kib: usage.ru_maxrss,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::{replace_section, section_of, splice_row};

    const DOC: &str =
        "# B\n\n| scenario | domains |\n|---|---:|\n| one-domain change | 100 |\n\nMachine: x\n";

    #[test]
    fn a_section_is_replaced_in_place_or_added() {
        let doc = "# B\n\ntable\n\n## Watch mode\n\nold watch\n\n## Soak\n\nold soak\n";
        let watch = replace_section(doc, "Watch mode", "\n## Watch mode\n\nnew watch\n");
        assert_eq!(
            watch,
            "# B\n\ntable\n\n## Watch mode\n\nnew watch\n\n## Soak\n\nold soak\n"
        );
        let soak = replace_section(&watch, "Soak", "\n## Soak\n\nnew soak\n");
        assert_eq!(
            soak,
            "# B\n\ntable\n\n## Watch mode\n\nnew watch\n\n## Soak\n\nnew soak\n"
        );
        let added = replace_section("# B\n\ntable\n", "Soak", "\n## Soak\n\nx\n");
        assert_eq!(added, "# B\n\ntable\n\n## Soak\n\nx\n");
        assert_eq!(
            section_of(&soak, "Watch mode").as_deref(),
            Some("\n## Watch mode\n\nnew watch\n")
        );
    }

    #[test]
    fn a_new_row_goes_after_the_first_tables_last_row_and_then_is_replaced() {
        let added = splice_row(
            DOC,
            "one-address change, 5 recipients",
            "| one-address change, 5 recipients | 1 |",
        );
        assert_eq!(
            added,
            "# B\n\n| scenario | domains |\n|---|---:|\n| one-domain change | 100 |\n\
             | one-address change, 5 recipients | 1 |\n\nMachine: x\n"
        );
        let replaced = splice_row(
            &added,
            "one-address change, 5 recipients",
            "| one-address change, 5 recipients | 2 |",
        );
        assert_eq!(replaced, added.replace("| 1 |", "| 2 |"));
    }
}
