//! The soak's chaos schedule: after the warm-up and a quiet window, cycles that each run every
//! [`Fault`] once, with calm changes before them and after each, until the limits are reached;
//! then a quiet window at the end. Each fault ends with the gateways settled (every pending
//! change shown, or reported late by the observer) and one more change that must propagate
//! within the ordinary bound: the proof that the watcher recovered without a restart.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::observer::{self, Counts, Shared, Target};
use super::{Options, Testbed, DB_TIMEOUT_SECS, QUIET};

/// Domains the burst toggles, 50 changes in 10 s.
pub(super) const BURST: usize = 50;
/// Domains the calm changes toggle, one at a time.
pub(super) const CHURN: usize = 12;
/// How long the database's link stays down: several polls' timeouts.
const LINK_DOWN: Duration = Duration::from_secs(3 * DB_TIMEOUT_SECS + 1);
/// How long Postfix stays stopped.
const POSTFIX_DOWN: Duration = Duration::from_secs(3);
/// How much longer the last quiet window may last for the threads to come back to rest.
const REST_LIMIT: Duration = Duration::from_secs(30);

/// One kind of fault; each cycle runs them all, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// 50 changes in 10 s.
    Burst,
    /// MariaDB stopped and started again (its kept connections are gone).
    DatabaseRestart,
    /// The database's link down: queries and connections hang until their timeouts.
    DatabaseUnreachable,
    /// Both gateways' Postfix stopped, a change committed, Postfix started.
    PostfixRestart,
    /// main.cf edited by hand (written beside and renamed, as an editor does), reloaded.
    MainCfEdit,
    /// SIGHUP with a changed config (another POLL_INTERVAL).
    Sighup,
    /// SIGUSR1: sync now.
    Sigusr1,
    /// logrotate with the shipped config, then a line that must reach the new log.
    Logrotate,
    /// BACKUP_DIR (a tmpfs) full while a change comes, then freed.
    BackupFull,
}

impl Fault {
    pub(super) const ALL: [Fault; 9] = [
        Fault::Burst,
        Fault::DatabaseRestart,
        Fault::DatabaseUnreachable,
        Fault::PostfixRestart,
        Fault::MainCfEdit,
        Fault::Sighup,
        Fault::Sigusr1,
        Fault::Logrotate,
        Fault::BackupFull,
    ];

    /// What fails the soak when a watcher gets this fault wrong: the observer's invariant, or
    /// the fault's own check (see the methods of `Chaos`).
    pub(super) fn detected_by(self) -> &'static str {
        match self {
            Fault::Burst => {
                "each of the 50 changes within the bound (a watcher that drops changes while a \
                 sync runs, or syncs per change and falls behind, is late)"
            }
            Fault::DatabaseRestart => {
                "the change committed during the restart within the bound after it (a kept \
                 connection never reopened is late); the watcher alive"
            }
            Fault::DatabaseUnreachable => {
                "\"Database unreachable\" logged while the link is down, \"Database reachable \
                 again\" after, the change committed meanwhile within the bound after it; mail \
                 keeps flowing"
            }
            Fault::PostfixRestart => {
                "the change that met the stopped Postfix within the bound after the start (a \
                 watcher that forgets the failed sync is late); no accepted mail lost"
            }
            Fault::MainCfEdit => {
                "the hand edit still in main.cf after the next sync, and every settled domain \
                 still answering as the database says (inline mode's domains rewritten)"
            }
            Fault::Sighup => "\"Configuration reloaded\" within the bound; the next change",
            Fault::Sigusr1 => "\"Syncing: sync requested\" within the bound",
            Fault::Logrotate => {
                "SIGUSR1's lines in the new LOG_FILE within the bound, not in the rotated one"
            }
            Fault::BackupFull => {
                "a sync that failed while the disk was full (the fault took effect), then the \
                 change within the bound plus the retry's back-off after the disk has room (a \
                 watcher that waits for RECONCILE_INTERVAL is late when it is longer)"
            }
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Fault::Burst => "burst",
            Fault::DatabaseRestart => "database restart",
            Fault::DatabaseUnreachable => "database unreachable",
            Fault::PostfixRestart => "postfix restart",
            Fault::MainCfEdit => "main.cf edited",
            Fault::Sighup => "SIGHUP",
            Fault::Sigusr1 => "SIGUSR1",
            Fault::Logrotate => "logrotate",
            Fault::BackupFull => "BACKUP_DIR full",
        }
    }
}

struct Chaos<'a> {
    tb: &'a mut Testbed,
    shared: &'a Shared,
    options: &'a Options,
    cycle: u64,
    /// How long the last cycle took: a cycle starts only while the time left holds one.
    last_cycle: Duration,
    churn_next: usize,
}

/// Runs the schedule to the end (see the module doc). The mail stream runs from the end of
/// the warm-up to the end of the last quiet window.
pub(super) fn run(
    tb: &mut Testbed,
    shared: &Arc<Shared>,
    options: &Options,
    targets: &[Target],
) -> Result<()> {
    eprintln!("xtask soak: warm-up: the first syncs");
    let deadline = Instant::now() + Duration::from_secs(150);
    while shared.pending() > 0 && Instant::now() < deadline && !super::interrupted_now() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stop_mail = Arc::new(AtomicBool::new(false));
    let mailers: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(g, target)| {
            let (shared, stop, target) =
                (Arc::clone(shared), Arc::clone(&stop_mail), target.clone());
            std::thread::spawn(move || observer::send_mail(shared, stop, g, target))
        })
        .collect();
    let mut chaos = Chaos {
        tb,
        shared,
        options,
        cycle: 0,
        last_cycle: Duration::ZERO,
        churn_next: 0,
    };
    let result = chaos.run();
    stop_mail.store(true, Ordering::Relaxed);
    for mailer in mailers {
        let _ = mailer.join();
    }
    result
}

impl Chaos<'_> {
    fn run(&mut self) -> Result<()> {
        self.quiet("after the warm-up");
        while !self.done() {
            let started = Instant::now();
            self.cycle += 1;
            eprintln!(
                "xtask soak: cycle {} at {:.0} s",
                self.cycle,
                self.shared.started.elapsed().as_secs_f64()
            );
            for _ in 0..self.options.calm {
                self.calm()?;
            }
            for fault in Fault::ALL {
                if super::interrupted_now() {
                    return Ok(());
                }
                eprintln!("xtask soak:   {}", fault.name());
                self.fault(fault)
                    .with_context(|| format!("fault {:?}", fault.name()))?;
                *self.shared.lock().faults.entry(fault.name()).or_insert(0) += 1;
                self.settle();
                // The proof of recovery: an ordinary change, within the ordinary bound.
                self.calm()?;
            }
            self.last_cycle = started.elapsed();
        }
        self.quiet("at the end");
        Ok(())
    }

    /// Whether every watcher has been, during the window that began at `from`, down to as few
    /// threads as it had at rest in the first quiet window.
    fn threads_back_to_rest(&self, from: Duration) -> bool {
        let state = self.shared.lock();
        let Some(&(start, end)) = state.quiet.first() else {
            return true;
        };
        state.gateways.iter().all(|gateway| {
            let min = |a: Duration, b: Duration| {
                gateway
                    .usage
                    .iter()
                    .filter(|u| u.at >= a && u.at <= b)
                    .map(|u| u.threads)
                    .min()
            };
            match (min(start, end), min(from, Duration::MAX)) {
                (Some(rest), Some(now)) => now <= rest,
                _ => true,
            }
        })
    }

    /// Whether every limit given is reached (or the soak was interrupted).
    fn done(&self) -> bool {
        if super::interrupted_now() {
            return true;
        }
        // The end quiet window comes after the last cycle.
        let elapsed = self.shared.started.elapsed() + self.last_cycle + QUIET;
        let time = self.options.duration.is_none_or(|d| elapsed > d);
        // The map-mode watcher's polls: the inline one's loop is held about 2 s by each
        // reload (Postfix waits for main.cf to be a second old), so it polls a fraction as
        // often, and waiting for it to reach a week of polls would take most of a day.
        let polls = self.options.polls.is_none_or(|want| {
            self.shared
                .lock()
                .gateways
                .iter()
                .map(|g| g.polls)
                .max()
                .is_some_and(|polls| polls >= want)
        });
        // At least one cycle, however short the limits.
        self.cycle > 0 && time && polls
    }

    /// A window without changes or faults, for the usage readings at rest. The one at the end
    /// lasts up to [`REST_LIMIT`] longer while a watcher still has more threads than it had at
    /// rest after the warm-up: tokio's blocking pool keeps an idle thread for 10 s after its
    /// last task, so a sync near the window's start shows one more thread that is not a leak.
    fn quiet(&mut self, when: &str) {
        eprintln!("xtask soak: quiet window {when} ({} s)", QUIET.as_secs());
        let from = self.shared.started.elapsed();
        sleep_unless_interrupted(QUIET);
        let first = self.shared.lock().quiet.is_empty();
        let deadline = Instant::now() + REST_LIMIT;
        while !first
            && !self.threads_back_to_rest(from)
            && Instant::now() < deadline
            && !super::interrupted_now()
        {
            std::thread::sleep(Duration::from_millis(500));
        }
        let to = self.shared.started.elapsed();
        self.shared.lock().quiet.push((from, to));
    }

    fn all(&self) -> Vec<usize> {
        (0..self.tb.gateways.len()).collect()
    }

    fn enabled(&self, domain: &str) -> bool {
        self.shared
            .lock()
            .truth
            .get(domain)
            .copied()
            .unwrap_or(false)
    }

    /// The admin's change, on the primary through its socket (which works whatever the link
    /// does); every gateway must then show it.
    fn commit(&self, domain: &str, enabled: bool, context: &'static str) -> Result<()> {
        self.tb.db.sql(&format!(
            "UPDATE mailserver_usermgmt.domains SET enabled = {} WHERE name = '{domain}'",
            u8::from(enabled)
        ))?;
        self.shared.committed(domain, enabled, context);
        Ok(())
    }

    /// Toggles the next churn domain no gateway still waits for.
    fn toggle_churn(&mut self, context: &'static str) -> Result<()> {
        for _ in 0..CHURN {
            self.churn_next = self.churn_next % CHURN + 1;
            let domain = format!("churn{}.example", self.churn_next);
            let waiting = self
                .shared
                .lock()
                .gateways
                .iter()
                .any(|g| g.pending.iter().any(|e| e.domain == domain));
            if !waiting {
                let enabled = !self.enabled(&domain);
                return self.commit(&domain, enabled, context);
            }
        }
        anyhow::bail!("every churn domain still waits for a gateway")
    }

    /// One calm change, and its propagation.
    fn calm(&mut self) -> Result<()> {
        self.toggle_churn("calm")?;
        self.settle();
        sleep_unless_interrupted(Duration::from_millis(500));
        Ok(())
    }

    /// Waits until no gateway waits for a change (the observer reports what is late).
    fn settle(&self) {
        let limit = self.options.bound + self.options.after_fault() + Duration::from_secs(10);
        let deadline = Instant::now() + limit;
        while self.shared.pending() > 0 && Instant::now() < deadline && !super::interrupted_now() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `count` of gateway `g` exceeds `before`, at most `limit`.
    fn wait_count(
        &self,
        g: usize,
        count: fn(&Counts) -> u64,
        before: u64,
        limit: Duration,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if count(&self.shared.counts(g)) > before {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn counts_of(&self, count: fn(&Counts) -> u64) -> Vec<u64> {
        (0..self.tb.gateways.len())
            .map(|g| count(&self.shared.counts(g)))
            .collect()
    }

    fn fault(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Burst => self.burst(),
            Fault::DatabaseRestart => self.database_restart(),
            Fault::DatabaseUnreachable => self.database_unreachable(),
            Fault::PostfixRestart => self.postfix_restart(),
            Fault::MainCfEdit => self.main_cf_edit(),
            Fault::Sighup => self.sighup(),
            Fault::Sigusr1 => self.sigusr1(),
            Fault::Logrotate => self.logrotate(),
            Fault::BackupFull => self.backup_full(),
        }
    }

    fn burst(&mut self) -> Result<()> {
        let started = Instant::now();
        for i in 1..=BURST {
            let domain = format!("burst{i}.example");
            let enabled = !self.enabled(&domain);
            self.commit(&domain, enabled, "burst")?;
            let next = started + Duration::from_millis(200 * i as u64);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    }

    fn database_restart(&mut self) -> Result<()> {
        let all = self.all();
        self.shared.block(&all);
        let result = (|| {
            self.tb.db.stop()?;
            std::thread::sleep(Duration::from_millis(500));
            self.tb.db.start_again()?;
            self.toggle_churn("database restart")
        })();
        self.shared.unblock(&all);
        result
    }

    fn database_unreachable(&mut self) -> Result<()> {
        let all = self.all();
        let outages = self.counts_of(|c| c.outages);
        let recoveries = self.counts_of(|c| c.recoveries);
        self.shared.block(&all);
        let ns = self
            .tb
            .db
            .netns()
            .context("the database has no namespace")?;
        ns.link_down()?;
        let result = self.toggle_churn("database unreachable");
        sleep_unless_interrupted(LINK_DOWN);
        let up = self
            .tb
            .db
            .netns()
            .context("the database has no namespace")?
            .link_up();
        self.shared.unblock(&all);
        result?;
        up?;
        for (g, before) in outages.into_iter().enumerate() {
            if self.shared.counts(g).outages <= before {
                self.shared.violation(format!(
                    "{}: the watcher logged no \"Database unreachable\" while the database's \
                     link was down for {} s",
                    self.tb.gateways[g].mode,
                    LINK_DOWN.as_secs()
                ));
            }
        }
        let limit = self.options.after_fault() + self.options.bound;
        for (g, before) in recoveries.into_iter().enumerate() {
            if !self.wait_count(g, |c| c.recoveries, before, limit) {
                self.shared.violation(format!(
                    "{}: no \"Database reachable again\" within {:.0} s of the link coming back",
                    self.tb.gateways[g].mode,
                    limit.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    fn postfix_restart(&mut self) -> Result<()> {
        let all = self.all();
        self.shared.block(&all);
        let mut result = Ok(());
        for g in all.clone() {
            self.shared.set_postfix_down(g, true);
            if let Err(error) = self.tb.gateways[g].postfix.stop() {
                result = Err(error);
            }
        }
        if result.is_ok() {
            result = self.toggle_churn("postfix stopped");
            sleep_unless_interrupted(POSTFIX_DOWN);
        }
        for g in all.clone() {
            let started = self.tb.gateways[g].postfix.start_again();
            self.shared.set_postfix_down(g, false);
            result = result.and(started);
        }
        self.shared.unblock(&all);
        result
    }

    fn main_cf_edit(&mut self) -> Result<()> {
        let marker = format!(
            "smtpd_banner = $myhostname ESMTP relay-sync soak {}",
            self.cycle
        );
        for gateway in &self.tb.gateways {
            let dir = gateway.postfix.config_dir();
            let path = dir.join("main.cf");
            let text = fs::read_to_string(&path)?;
            let mut edited: String = text
                .lines()
                .filter(|line| {
                    !line.starts_with("smtpd_banner =") && !line.starts_with("# edited by hand")
                })
                .map(|line| format!("{line}\n"))
                .collect();
            edited.push_str(&format!(
                "# edited by hand during the soak, cycle {}\n{marker}\n",
                self.cycle
            ));
            // As an editor saves: a new file renamed over the old one.
            let new = dir.join("main.cf.soak-edit");
            fs::write(&new, edited)?;
            fs::rename(&new, &path)?;
            gateway.postfix.command("/usr/sbin/postfix", &["reload"])?;
        }
        self.toggle_churn("main.cf edited")?;
        self.settle();
        for gateway in &self.tb.gateways {
            let text = fs::read_to_string(gateway.postfix.config_dir().join("main.cf"))?;
            if !text.contains(&marker) {
                self.shared.violation(format!(
                    "{}: the hand edit of main.cf ({marker}) was lost",
                    gateway.mode
                ));
            }
        }
        Ok(())
    }

    fn sighup(&mut self) -> Result<()> {
        let before = self.counts_of(|c| c.reloaded);
        for gateway in &mut self.tb.gateways {
            gateway.poll_interval = if gateway.poll_interval == self.options.poll_interval {
                self.options.poll_interval * 1.5
            } else {
                self.options.poll_interval
            };
            gateway.write_config()?;
            gateway.signal(libc::SIGHUP)?;
        }
        for (g, before) in before.into_iter().enumerate() {
            if !self.wait_count(g, |c| c.reloaded, before, self.options.bound) {
                self.shared.violation(format!(
                    "{}: no \"Configuration reloaded\" within {:.0} s of SIGHUP",
                    self.tb.gateways[g].mode,
                    self.options.bound.as_secs_f64()
                ));
            }
        }
        self.toggle_churn("SIGHUP")
    }

    fn sigusr1(&mut self) -> Result<()> {
        let before = self.counts_of(|c| c.requested);
        for gateway in &self.tb.gateways {
            gateway.signal(libc::SIGUSR1)?;
        }
        for (g, before) in before.into_iter().enumerate() {
            if !self.wait_count(g, |c| c.requested, before, self.options.bound) {
                self.shared.violation(format!(
                    "{}: no \"Syncing: sync requested\" within {:.0} s of SIGUSR1",
                    self.tb.gateways[g].mode,
                    self.options.bound.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    fn logrotate(&mut self) -> Result<()> {
        let shipped =
            fs::read_to_string(relay_testbed::packaging_dir().join("relay-sync.logrotate"))?;
        for gateway in &self.tb.gateways {
            let log = &gateway.target.log;
            let config = gateway.dir.path().join("logrotate.conf");
            fs::write(
                &config,
                shipped.replace(
                    "/var/log/mailserver/relay-sync.log",
                    &log.display().to_string(),
                ),
            )?;
            super::run_command(
                std::process::Command::new("/usr/sbin/logrotate")
                    .arg("--state")
                    .arg(gateway.dir.path().join("logrotate.state"))
                    .arg("--force")
                    .arg(&config),
            )?;
            gateway.signal(libc::SIGUSR1)?;
        }
        for gateway in &self.tb.gateways {
            let log = &gateway.target.log;
            let deadline = Instant::now() + self.options.bound;
            let reached = loop {
                if fs::read_to_string(log)
                    .is_ok_and(|text| text.contains("Syncing: sync requested"))
                {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !reached {
                let rotated = log.with_extension("log.1");
                self.shared.violation(format!(
                    "{}: after logrotate, SIGUSR1's lines did not reach the new {} within {:.0} \
                     s (the rotated {} holds: {})",
                    gateway.mode,
                    log.display(),
                    self.options.bound.as_secs_f64(),
                    rotated.display(),
                    fs::read_to_string(&rotated)
                        .map(|text| text.lines().rev().take(2).collect::<Vec<_>>().join(" | "))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    fn backup_full(&mut self) -> Result<()> {
        let all = self.all();
        for gateway in &self.tb.gateways {
            gateway.backup.fill()?;
        }
        let failed = self.counts_of(|c| c.failed_syncs);
        self.shared.block(&all);
        let result = self.toggle_churn("BACKUP_DIR full");
        if result.is_ok() {
            for (g, before) in failed.into_iter().enumerate() {
                if !self.wait_count(g, |c| c.failed_syncs, before, self.options.bound) {
                    self.shared.violation(format!(
                        "{}: no sync failed within {:.0} s while BACKUP_DIR was full: the fault \
                         did not take effect",
                        self.tb.gateways[g].mode,
                        self.options.bound.as_secs_f64()
                    ));
                }
            }
        }
        let mut freed = Ok(());
        for gateway in &self.tb.gateways {
            freed = freed.and(gateway.backup.free());
        }
        self.shared.unblock(&all);
        result.and(freed)
    }
}

fn sleep_unless_interrupted(duration: Duration) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline && !super::interrupted_now() {
        std::thread::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}
