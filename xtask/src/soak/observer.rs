//! The soak's observer: what must hold the whole time, checked from outside the watcher, the
//! way a sender and an operator see a gateway.
//!
//! - Propagation: each change the chaos commits is an [`Expectation`] per gateway, met by the
//!   first `RCPT TO` answered as the database says (250 enabled, 554 disabled) before its
//!   deadline: the propagation bound after the commit, or, when the commit met a fault that
//!   holds changes back (database down or restarted, Postfix stopped, `BACKUP_DIR` full),
//!   `RECONCILE_INTERVAL` and the database's timeouts plus the bound after that fault ended.
//! - Steady state: every domain whose state was confirmed keeps answering as it should, and
//!   every domain Postfix relays (`relay_domains`, and the table it names in map mode) has its
//!   route in the transport map (`postmap -q`), pointing at the mailbox host.
//! - Mail: a message a second to a stable domain through each gateway; every one accepted
//!   reaches `smtp-sink`. A refusal is a violation unless that gateway's Postfix was stopped.
//! - The watcher: alive (the same process from start to end), its heartbeat fresh.
//! - Usage: RSS, descriptors, threads and CPU time of each watcher, once a second.
//!
//! A check that fails is confirmed before it counts (a new SMTP session, a second read of the
//! files), because two moments of a healthy gateway can disagree: an idle `smtpd` of the
//! generation before a reload may answer one more session with the old tables, and a sweep
//! that reads `relay_domains` and then the transport map can straddle a sync.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::proc::{self, Usage};
use super::smtp;

/// The domain the mail stream goes to; enabled from start to end.
pub(super) const STABLE: &str = "stable.example";
/// How long after its expectation was met a domain joins the steady checks: the idle `smtpd`
/// processes of the generation before the reload have exited by then.
const SETTLE: Duration = Duration::from_secs(3);
/// Domains checked by RCPT per gateway per second in the steady checks (the stable one aside).
const STEADY_BATCH: usize = 10;
/// Pending expectations checked per SMTP session.
const PENDING_BATCH: usize = 25;
/// After a Postfix start, how long a refused connection still counts as the fault's.
const START_GRACE: Duration = Duration::from_secs(2);

/// What the observer needs to know of one gateway.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// `map` or `inline`.
    pub(super) name: &'static str,
    pub(super) smtp_port: u16,
    /// Postfix's configuration directory (`-c`).
    pub(super) config_dir: PathBuf,
    /// The watcher's `LOG_FILE`.
    pub(super) log: PathBuf,
    /// `relay_sync_watch.prom` beside `METRICS_FILE`.
    pub(super) watch_metrics: PathBuf,
    /// The watcher's pid.
    pub(super) pid: u32,
    /// The transport every managed domain must have: `smtp:[127.0.0.1]:SINK`.
    pub(super) next_hop: String,
}

/// A change the gateways must show.
#[derive(Debug, Clone)]
pub(super) struct Expectation {
    pub(super) domain: String,
    pub(super) enabled: bool,
    pub(super) committed: Instant,
    /// `None` while a fault holds changes back (see the module doc).
    pub(super) deadline: Option<Instant>,
    /// `calm`, or the fault during which it was committed.
    pub(super) context: &'static str,
}

/// One propagation: from the commit to the first RCPT answered as the database says.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) gateway: usize,
    pub(super) context: &'static str,
    pub(super) took: Duration,
    /// Where the time went, when the watcher's log shows it: commit → the sync started
    /// (`Syncing: …`), the sync (→ `===== Sync completed`), and its end → the RCPT.
    pub(super) breakdown: Option<[Duration; 3]>,
}

/// What a watcher's log showed, counted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) syncs: u64,
    pub(super) failed_syncs: u64,
    pub(super) requested: u64,
    pub(super) reloaded: u64,
    pub(super) outages: u64,
    pub(super) recoveries: u64,
    pub(super) critical: u64,
    pub(super) errors: u64,
}

/// The mail stream through one gateway.
#[derive(Debug, Default)]
pub(super) struct Mail {
    pub(super) sent: u64,
    pub(super) accepted: BTreeSet<u64>,
    pub(super) delivered: BTreeSet<u64>,
    /// Not accepted while this gateway's Postfix was stopped by the chaos.
    pub(super) during_stop: u64,
}

/// One gateway's part of the state.
#[derive(Debug, Default)]
pub(super) struct Gateway {
    pub(super) pending: Vec<Expectation>,
    /// Domains whose state was confirmed, and from when they are checked.
    pub(super) settled: BTreeMap<String, (bool, Instant)>,
    /// Faults holding changes back on this gateway, nested.
    pub(super) blocked: u32,
    /// Whether the chaos stopped this gateway's Postfix, and when it started it again.
    pub(super) postfix_down: bool,
    pub(super) postfix_up_at: Option<Instant>,
    pub(super) mail: Mail,
    pub(super) usage: Vec<Usage>,
    pub(super) counts: Counts,
    /// Log events with the moment the observer read them: `true` a sync started, `false` one
    /// ended. Pruned to the last few minutes.
    events: Vec<(Instant, bool)>,
    pub(super) polls: u64,
    pub(super) heartbeat: Option<i64>,
    /// The last heartbeat value reported as stale.
    stale_reported: Option<i64>,
    /// Whether a metrics file without a heartbeat was reported.
    no_heartbeat_reported: bool,
}

/// Everything the chaos and the observers share.
#[derive(Debug)]
pub(super) struct State {
    /// What the database says: domain → enabled.
    pub(super) truth: BTreeMap<String, bool>,
    pub(super) gateways: Vec<Gateway>,
    pub(super) violations: Vec<String>,
    pub(super) samples: Vec<Sample>,
    /// How many times each fault ran.
    pub(super) faults: BTreeMap<&'static str, u64>,
    /// The quiet windows (no changes, no faults), as times into the soak: after the warm-up
    /// and at the end.
    pub(super) quiet: Vec<(Duration, Duration)>,
}

/// The shared state, the moment the soak started, and the stop flag of the observers.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) started: Instant,
    pub(super) stop: AtomicBool,
    /// The propagation bound, and the longest a changes waits after a fault ended on top of
    /// it (`RECONCILE_INTERVAL`: a failed sync is retried at the next change or reconcile).
    pub(super) bound: Duration,
    pub(super) after_fault: Duration,
    /// The oldest heartbeat that is still a live watcher.
    pub(super) heartbeat_limit: Duration,
}

impl Shared {
    pub(super) fn new(
        truth: BTreeMap<String, bool>,
        gateways: usize,
        bound: Duration,
        after_fault: Duration,
        heartbeat_limit: Duration,
    ) -> Shared {
        Shared {
            state: Mutex::new(State {
                truth,
                gateways: (0..gateways).map(|_| Gateway::default()).collect(),
                violations: Vec::new(),
                samples: Vec::new(),
                faults: BTreeMap::new(),
                quiet: Vec::new(),
            }),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            bound,
            after_fault,
            heartbeat_limit,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a violation, with the time into the soak, and prints it at once.
    pub(super) fn violation(&self, message: String) {
        let line = format!(
            "[{:>7.1} s] {message}",
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("xtask soak: VIOLATION {line}");
        self.lock().violations.push(line);
    }

    /// The database now says `domain` is `enabled` (the chaos committed it): every gateway
    /// must show it. `context` names the fault in progress, or `calm`.
    pub(super) fn committed(&self, domain: &str, enabled: bool, context: &'static str) {
        let now = Instant::now();
        let mut state = self.lock();
        state.truth.insert(domain.to_owned(), enabled);
        for gateway in &mut state.gateways {
            gateway.settled.remove(domain);
            gateway.pending.retain(|e| e.domain != domain);
            gateway.pending.push(Expectation {
                domain: domain.to_owned(),
                enabled,
                committed: now,
                deadline: (gateway.blocked == 0).then(|| now + self.bound),
                context,
            });
        }
    }

    /// Expectations for every domain of the truth, due within `limit` (the first syncs).
    pub(super) fn expect_everything(&self, limit: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        let truth: Vec<(String, bool)> = state.truth.clone().into_iter().collect();
        for gateway in &mut state.gateways {
            gateway.settled.clear();
            gateway.pending = truth
                .iter()
                .map(|(domain, enabled)| Expectation {
                    domain: domain.clone(),
                    enabled: *enabled,
                    committed: now,
                    deadline: Some(now + limit),
                    context: "first sync",
                })
                .collect();
        }
    }

    /// A fault that holds changes back begins on `gateways`: their deadlines wait for its end.
    pub(super) fn block(&self, gateways: &[usize]) {
        let mut state = self.lock();
        for &g in gateways {
            let gateway = &mut state.gateways[g];
            gateway.blocked += 1;
            for expectation in &mut gateway.pending {
                expectation.deadline = None;
            }
        }
    }

    /// The fault ended on `gateways`: what waited is due `RECONCILE_INTERVAL` plus the bound
    /// from now.
    pub(super) fn unblock(&self, gateways: &[usize]) {
        let due = Instant::now() + self.after_fault + self.bound;
        let mut state = self.lock();
        for &g in gateways {
            let gateway = &mut state.gateways[g];
            gateway.blocked = gateway.blocked.saturating_sub(1);
            if gateway.blocked == 0 {
                for expectation in &mut gateway.pending {
                    expectation.deadline.get_or_insert(due);
                }
            }
        }
    }

    pub(super) fn set_postfix_down(&self, g: usize, down: bool) {
        let mut state = self.lock();
        let gateway = &mut state.gateways[g];
        gateway.postfix_down = down;
        if !down {
            gateway.postfix_up_at = Some(Instant::now());
        }
    }

    /// Whether any gateway still waits for a change.
    pub(super) fn pending(&self) -> usize {
        self.lock().gateways.iter().map(|g| g.pending.len()).sum()
    }

    pub(super) fn counts(&self, g: usize) -> Counts {
        self.lock().gateways[g].counts
    }

    fn postfix_expected_down(&self, g: usize) -> bool {
        let state = self.lock();
        let gateway = &state.gateways[g];
        gateway.postfix_down
            || gateway
                .postfix_up_at
                .is_some_and(|at| at.elapsed() < START_GRACE)
    }
}

/// Watches one gateway until `shared.stop`: its expectations, steady state, routes, watcher,
/// heartbeat, usage and log.
pub(super) fn watch_gateway(shared: Arc<Shared>, g: usize, target: Target) {
    let mut tail = LogTail::new(&target.log);
    let mut cursor = 0usize;
    let mut last_second = Instant::now() - Duration::from_secs(10);
    let mut last_sweep = Instant::now();
    let mut dead = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if !dead && !proc::alive(target.pid) {
            dead = true;
            shared.violation(format!(
                "{}: the watcher (pid {}) exited: a fault must end in recovery without a \
                 restart of relay-sync",
                target.name, target.pid
            ));
        }
        read_log(&shared, g, &mut tail);
        check_pending(&shared, g, &target);
        if now.duration_since(last_second) >= Duration::from_secs(1) {
            last_second = now;
            check_steady(&shared, g, &target, &mut cursor);
            check_metrics(&shared, g, &target);
            if !dead {
                if let Ok(usage) = proc::usage(target.pid, shared.started.elapsed()) {
                    shared.lock().gateways[g].usage.push(usage);
                }
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(2) {
            last_sweep = now;
            check_routes(&shared, &target);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    read_log(&shared, g, &mut tail);
}

/// RCPT for the pending expectations; a met one becomes a sample, a late one a violation.
fn check_pending(shared: &Shared, g: usize, target: &Target) {
    if shared.postfix_expected_down(g) {
        return;
    }
    let batch: Vec<Expectation> = {
        let state = shared.lock();
        state.gateways[g]
            .pending
            .iter()
            .take(PENDING_BATCH)
            .cloned()
            .collect()
    };
    if batch.is_empty() {
        return;
    }
    let domains: Vec<String> = batch.iter().map(|e| e.domain.clone()).collect();
    let codes = smtp::rcpt_codes(target.smtp_port, &domains);
    let seen = Instant::now();
    let mut state = shared.lock();
    let mut late = Vec::new();
    for (i, expectation) in batch.iter().enumerate() {
        let code = codes.as_ref().ok().and_then(|codes| codes.get(i)).copied();
        let met = code.is_some_and(|code| answers(code, expectation.enabled));
        let gateway = &mut state.gateways[g];
        // The chaos may have committed again meanwhile: only the same expectation counts.
        let Some(at) = gateway
            .pending
            .iter()
            .position(|p| p.domain == expectation.domain && p.committed == expectation.committed)
        else {
            continue;
        };
        if met {
            let took = seen.duration_since(expectation.committed);
            let breakdown = breakdown(&gateway.events, expectation.committed, seen);
            gateway.pending.remove(at);
            gateway.settled.insert(
                expectation.domain.clone(),
                (expectation.enabled, seen + SETTLE),
            );
            state.samples.push(Sample {
                gateway: g,
                context: expectation.context,
                took,
                breakdown,
            });
        } else if gateway.pending[at].deadline.is_some_and(|d| seen > d) {
            gateway.pending.remove(at);
            let answer = match (&codes, code) {
                (_, Some(code)) => code.to_string(),
                (Err(error), _) => format!("no answer ({error:#})"),
                (Ok(_), None) => "no answer".to_owned(),
            };
            late.push(format!(
                "{}: {} {} ({}) still answers {answer} {:.1} s after the commit",
                target.name,
                expectation.domain,
                if expectation.enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                expectation.context,
                took_secs(seen.duration_since(expectation.committed)),
            ));
        }
    }
    drop(state);
    for message in late {
        shared.violation(message);
    }
}

/// Whether an RCPT reply code says what the database says.
fn answers(code: u16, enabled: bool) -> bool {
    if enabled {
        code == 250
    } else {
        code == 554
    }
}

fn took_secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Commit → sync start, the sync, sync end → RCPT, from the log events around one sample.
fn breakdown(
    events: &[(Instant, bool)],
    committed: Instant,
    met: Instant,
) -> Option<[Duration; 3]> {
    let started = events
        .iter()
        .find(|(at, start)| *start && *at >= committed && *at <= met)?
        .0;
    let ended = events
        .iter()
        .find(|(at, start)| !*start && *at >= started)?
        .0;
    if ended > met + Duration::from_millis(200) {
        return None;
    }
    let ended = ended.min(met);
    Some([
        started.duration_since(committed),
        ended.duration_since(started),
        met.duration_since(ended),
    ])
}

/// RCPT for the stable domain and a few confirmed ones, round robin; a wrong answer is asked
/// again in new sessions for two seconds before it is a violation.
fn check_steady(shared: &Shared, g: usize, target: &Target, cursor: &mut usize) {
    if shared.postfix_expected_down(g) {
        return;
    }
    let now = Instant::now();
    let mut batch: Vec<(String, bool)> = Vec::new();
    {
        let state = shared.lock();
        let settled = &state.gateways[g].settled;
        // The mail stream's domain at every check, once its state is confirmed.
        if let Some((enabled, _)) = settled.get(STABLE).filter(|(_, from)| *from <= now) {
            batch.push((STABLE.to_owned(), *enabled));
        }
        let settled: Vec<(&String, &(bool, Instant))> = settled
            .iter()
            .filter(|(domain, (_, from))| *from <= now && domain.as_str() != STABLE)
            .collect();
        if !settled.is_empty() {
            for k in 0..STEADY_BATCH.min(settled.len()) {
                let (domain, (enabled, _)) = settled[(*cursor + k) % settled.len()];
                batch.push((domain.clone(), *enabled));
            }
            *cursor = (*cursor + STEADY_BATCH) % settled.len();
        }
    }
    if batch.is_empty() {
        return;
    }
    let wrong = |batch: &[(String, bool)]| -> Result<Vec<(String, bool, u16)>> {
        let domains: Vec<String> = batch.iter().map(|(d, _)| d.clone()).collect();
        let codes = smtp::rcpt_codes(target.smtp_port, &domains)?;
        Ok(batch
            .iter()
            .zip(codes)
            .filter(|((_, enabled), code)| !answers(*code, *enabled))
            .map(|((domain, enabled), code)| (domain.clone(), *enabled, code))
            .collect())
    };
    let mut suspects = match wrong(&batch) {
        Ok(suspects) => suspects,
        Err(error) => {
            if !shared.postfix_expected_down(g) {
                shared.violation(format!(
                    "{}: the gateway's SMTP (127.0.0.1:{}) did not answer: {error:#}",
                    target.name, target.smtp_port
                ));
            }
            return;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !suspects.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let again: Vec<(String, bool)> = suspects.iter().map(|(d, e, _)| (d.clone(), *e)).collect();
        match wrong(&again) {
            Ok(still) => suspects = still,
            Err(_) => return,
        }
    }
    // A domain the chaos changed meanwhile is no longer the steady state.
    let state = shared.lock();
    let current: Vec<String> = suspects
        .into_iter()
        .filter(|(domain, enabled, _)| {
            state.gateways[g]
                .settled
                .get(domain)
                .is_some_and(|(now, _)| now == enabled)
        })
        .map(|(domain, enabled, code)| {
            format!(
                "{}: {domain} is {} but RCPT answered {code} for 2 s",
                target.name,
                if enabled { "enabled" } else { "disabled" }
            )
        })
        .collect();
    drop(state);
    for message in current {
        shared.violation(message);
    }
}

/// The watcher's metrics: polls and a fresh heartbeat.
fn check_metrics(shared: &Shared, g: usize, target: &Target) {
    let Ok(text) = std::fs::read_to_string(&target.watch_metrics) else {
        return;
    };
    let value = |name: &str| -> Option<i64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let heartbeat = value("relay_sync_watch_last_poll_timestamp_seconds");
    let polls = value("relay_sync_watch_polls_total");
    if heartbeat.is_none() && polls.is_some() {
        let mut state = shared.lock();
        let gateway = &mut state.gateways[g];
        if !gateway.no_heartbeat_reported {
            gateway.no_heartbeat_reported = true;
            drop(state);
            shared.violation(format!(
                "{}: {} has no heartbeat (relay_sync_watch_last_poll_timestamp_seconds): \
                 monitoring cannot tell a killed watcher from a live one",
                target.name,
                target.watch_metrics.display()
            ));
        }
    }
    let stale = {
        let mut state = shared.lock();
        let gateway = &mut state.gateways[g];
        if let Some(polls) = polls {
            gateway.polls = u64::try_from(polls).unwrap_or(0);
        }
        gateway.heartbeat = heartbeat.or(gateway.heartbeat);
        let limit = i64::try_from(shared.heartbeat_limit.as_secs()).unwrap_or(i64::MAX);
        // Reported once per value that went stale.
        match heartbeat {
            Some(beat) if unix_now() - beat > limit && gateway.stale_reported != Some(beat) => {
                gateway.stale_reported = Some(beat);
                Some(unix_now() - beat)
            }
            _ => None,
        }
    };
    if let Some(age) = stale {
        shared.violation(format!(
            "{}: the heartbeat (relay_sync_watch_last_poll_timestamp_seconds) is {age} s old, \
             more than {} s",
            target.name,
            shared.heartbeat_limit.as_secs()
        ));
    }
}

/// Unix time now, in seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Every domain Postfix relays has its route to the mailbox host. A miss is read again
/// (relay_domains, then the routes) before it counts: a sweep can straddle a sync.
fn check_routes(shared: &Shared, target: &Target) {
    let missing = |relayed: &BTreeSet<String>| -> Result<Vec<(String, Option<String>)>> {
        let routes = routes(target, relayed)?;
        Ok(relayed
            .iter()
            .filter(|domain| routes.get(*domain) != Some(&target.next_hop))
            .map(|domain| (domain.clone(), routes.get(domain).cloned()))
            .collect())
    };
    let result = (|| -> Result<Vec<(String, Option<String>)>> {
        let first = missing(&relayed_domains(target)?)?;
        if first.is_empty() {
            return Ok(first);
        }
        let relayed_now = relayed_domains(target)?;
        let suspects: BTreeSet<String> = first
            .into_iter()
            .map(|(domain, _)| domain)
            .filter(|domain| relayed_now.contains(domain))
            .collect();
        missing(&suspects)
    })();
    match result {
        Ok(missing) => {
            for (domain, route) in missing {
                shared.violation(format!(
                    "{}: {domain} is relayed but its route is {} (want {})",
                    target.name,
                    route.as_deref().unwrap_or("missing"),
                    target.next_hop
                ));
            }
        }
        Err(error) => shared.violation(format!(
            "{}: cannot read what Postfix relays: {error:#}",
            target.name
        )),
    }
}

/// The domains in `relay_domains`, with the tables it names read (`postmap -s`).
fn relayed_domains(target: &Target) -> Result<BTreeSet<String>> {
    let value = postfix(target, "postconf", &["-h", "relay_domains"], None)?;
    let mut domains = BTreeSet::new();
    for token in value.split(|c: char| c == ',' || c.is_whitespace()) {
        if token.is_empty() || token.starts_with('$') || token.starts_with('/') {
            continue;
        }
        if token.contains(':') {
            let table = postfix(target, "postmap", &["-s", token], None)?;
            domains.extend(
                table
                    .lines()
                    .filter_map(|line| line.split_whitespace().next())
                    .map(str::to_owned),
            );
        } else {
            domains.insert(token.to_owned());
        }
    }
    Ok(domains)
}

/// `postmap -q -` of the transport map for `domains`: domain → its route.
fn routes(target: &Target, domains: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
    if domains.is_empty() {
        return Ok(BTreeMap::new());
    }
    let map = format!("hash:{}", target.config_dir.join("transport").display());
    let input: String = domains.iter().map(|d| format!("{d}\n")).collect();
    let output = postfix(target, "postmap", &["-q", "-", &map], Some(&input))?;
    Ok(output
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(domain, route)| (domain.to_owned(), route.trim().to_owned()))
        .collect())
}

/// Runs a Postfix command on `target`'s instance under `timeout 30` (an observer that hangs
/// would hide everything after it); its stdout. `postmap -q -` exits 1 when a key is missing,
/// which is an answer here, not a failure.
fn postfix(target: &Target, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new("/usr/bin/timeout")
        .arg("30")
        .arg(format!("/usr/sbin/{program}"))
        .arg("-c")
        .arg(&target.config_dir)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        // The lookups are a few kilobytes at most: postmap reads them all before the pipe
        // could fill.
        stdin.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let lookup_miss =
        program == "postmap" && args.first() == Some(&"-q") && output.status.code() == Some(1);
    if !output.status.success() && !lookup_miss {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads what the watcher logged since the last call, following logrotate's renames.
fn read_log(shared: &Shared, g: usize, tail: &mut LogTail) {
    let lines = tail.read();
    if lines.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut state = shared.lock();
    let gateway = &mut state.gateways[g];
    for line in lines {
        let counts = &mut gateway.counts;
        if line.contains("INFO: Syncing: ") {
            gateway.events.push((now, true));
            if line.contains("Syncing: sync requested") {
                counts.requested += 1;
            }
        } else if line.contains("===== Sync completed") {
            counts.syncs += 1;
            gateway.events.push((now, false));
        } else if line.contains("===== Sync failed") {
            counts.syncs += 1;
            counts.failed_syncs += 1;
            gateway.events.push((now, false));
        } else if line.contains("Configuration reloaded") {
            counts.reloaded += 1;
        } else if line.contains("Database unreachable:") {
            counts.outages += 1;
        } else if line.contains("Database reachable again") {
            counts.recoveries += 1;
        }
        if line.contains("CRITICAL") {
            counts.critical += 1;
        }
        if line.contains("] ERROR: ") {
            counts.errors += 1;
        }
    }
    // Enough for any propagation sample still pending.
    let keep = Duration::from_secs(600);
    gateway
        .events
        .retain(|(at, _)| now.duration_since(*at) < keep);
}

/// `tail -F` of one log file, which also keeps reading the file it replaced: a watcher that
/// does not follow logrotate's rename still shows what it does (the soak reports the rename
/// it missed once, not every check that reads its log after it).
#[derive(Debug)]
pub(super) struct LogTail {
    path: PathBuf,
    file: Option<(File, u64)>,
    previous: Option<File>,
    partial: [String; 2],
}

impl LogTail {
    pub(super) fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_owned(),
            file: None,
            previous: None,
            partial: [String::new(), String::new()],
        }
    }

    /// The complete lines written since the last call: the replaced file's first.
    pub(super) fn read(&mut self) -> Vec<String> {
        let now = std::fs::metadata(&self.path).ok().map(|meta| meta.ino());
        let current = self.file.as_ref().map(|(_, ino)| *ino);
        let mut previous = std::mem::take(&mut self.partial[0]);
        if let Some(file) = &mut self.previous {
            let _ = file.read_to_string(&mut previous);
        }
        let mut text = std::mem::take(&mut self.partial[1]);
        if let Some((file, _)) = &mut self.file {
            let _ = file.read_to_string(&mut text);
        }
        if now.is_some() && now != current {
            // Rotated (or the first call): the new file from its start; the old one stays
            // open beside it.
            if let Ok(mut file) = File::open(&self.path) {
                let _ = file.seek(SeekFrom::Start(0));
                previous.push_str(&text);
                text.clear();
                let _ = file.read_to_string(&mut text);
                self.previous = self.file.take().map(|(file, _)| file);
                self.file = now.map(|ino| (file, ino));
            }
        }
        let mut lines = Vec::new();
        for (k, text) in [previous, text].into_iter().enumerate() {
            let mut complete: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
            if complete.last().is_some_and(|last| !last.ends_with('\n')) {
                self.partial[k] = complete.pop().unwrap_or_default();
            }
            lines.extend(complete);
        }
        lines
    }
}

/// Sends a message a second to [`STABLE`] through gateway `g` until `stop`.
pub(super) fn send_mail(shared: Arc<Shared>, stop: Arc<AtomicBool>, g: usize, target: Target) {
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let headers = [
            format!("X-Soak-Gateway: {}", target.name),
            format!("X-Soak-Seq: {seq}"),
        ];
        let result = smtp::send(target.smtp_port, &format!("soak@{STABLE}"), &headers);
        let expected_down = shared.postfix_expected_down(g);
        {
            let mut state = shared.lock();
            let mail = &mut state.gateways[g].mail;
            mail.sent += 1;
            match &result {
                Ok(()) => {
                    mail.accepted.insert(seq);
                }
                Err(_) if expected_down => mail.during_stop += 1,
                Err(_) => {}
            }
        }
        if let Err(refused) = result {
            if !expected_down {
                shared.violation(format!(
                    "{}: message {seq} to {STABLE} not accepted: {refused}",
                    target.name
                ));
            }
        }
        next += Duration::from_secs(1);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Counts what `smtp-sink` received, by the headers [`send_mail`] wrote, and removes each file
/// (a week of mail would fill the directory otherwise). `names` are the gateways' names in
/// order.
pub(super) fn drain_sink(shared: &Shared, dir: &Path, names: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // smtp-sink may still be writing a fresh file.
        let old_enough = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= Duration::from_secs(1));
        if !old_enough {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let header = |name: &str| {
            text.lines()
                .take_while(|line| !line.is_empty())
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let gateway = header("X-Soak-Gateway:").and_then(|n| names.iter().position(|x| *x == n));
        let seq = header("X-Soak-Seq:").and_then(|s| s.parse::<u64>().ok());
        if let (Some(g), Some(seq)) = (gateway, seq) {
            shared.lock().gateways[g].mail.delivered.insert(seq);
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breakdown_needs_a_sync_that_started_after_the_commit() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let events = [
            (at(10), true),
            (at(20), false),
            (at(600), true),
            (at(700), false),
        ];
        assert_eq!(
            breakdown(&events, at(100), at(900)),
            Some([
                Duration::from_millis(500),
                Duration::from_millis(100),
                Duration::from_millis(200)
            ])
        );
        assert_eq!(breakdown(&events, at(650), at(900)), None);
    }

    #[test]
    fn a_log_tail_follows_a_rename() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else {
            panic!("{dir:?}");
        };
        let path = dir.path().join("log");
        let write = |p: &Path, text: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| e.to_string());
            assert!(file
                .as_mut()
                .is_ok_and(|f| f.write_all(text.as_bytes()).is_ok()));
        };
        let mut tail = LogTail::new(&path);
        assert!(tail.read().is_empty());
        write(&path, "one\ntw");
        assert_eq!(tail.read(), ["one\n"]);
        write(&path, "o\n");
        assert!(std::fs::rename(&path, dir.path().join("log.1")).is_ok());
        write(&dir.path().join("log.1"), "three\n");
        write(&path, "four\n");
        assert_eq!(tail.read(), ["two\n", "three\n", "four\n"]);
        // A writer that kept the old file open is still read.
        write(&dir.path().join("log.1"), "five\n");
        write(&path, "six\n");
        assert_eq!(tail.read(), ["five\n", "six\n"]);
    }
}
