//! The watcher's decision, pure: given what a poll saw and what the last sync read, sync or
//! wait. Time is a parameter (a [`Duration`] since the watcher started), so the rules are
//! property-tested without a clock or a database.
//!
//! The rules, in order:
//! 1. No sync yet: sync (the first cycle is a full sync).
//! 2. A sync was asked for (`sync_now`, `SIGUSR1`, a reloaded config): sync.
//! 3. `RECONCILE_INTERVAL` has passed since the last sync: sync, whatever the signal says.
//! 4. Postfix is not as the last sync left it: its [`PostfixMark`] (a digest of `main.cf` and
//!    of the master's pid and start time) differs from the one read just after that sync, or
//!    none could be read then (Postfix was down) and one can now. A container recreated from
//!    its image starts from the image's `main.cf` (inline mode's domains gone), a restart can
//!    regenerate it, and a sync that failed because Postfix was down is owed a retry: sync.
//!    A mark that cannot be read now (Postfix down) proves nothing and syncs nothing.
//! 5. The last sync did not leave Postfix with the rows it read (it failed and rolled back,
//!    could not read Postfix or the database, stepped aside for another run, was held): a
//!    retry is owed ([`Synced::Owed`]). It comes after a back-off ([`retry_backoff`]:
//!    `POLL_INTERVAL`, doubling per failed sync, at most [`RETRY_CAP`] or
//!    `RECONCILE_INTERVAL`), so a fault that lasts costs one failed sync per back-off, not one
//!    per poll, and a change that met a short fault is applied within seconds of its end, not
//!    at the next `RECONCILE_INTERVAL`. Meanwhile a poll whose fingerprint differs from what
//!    the failed sync read (a newer change) syncs at once. When Postfix could not be read just
//!    after the failed sync (it is down), no retry is made: rule 4 syncs when it is back.
//! 6. No signal can be derived from `DB_QUERY`: sync every poll.
//! 7. The polled fingerprint differs from the fingerprint of the rows the last sync read:
//!    sync. Equal (nothing changed, or a change was undone before this poll): wait.
//!
//! Before rule 6, the cheap [`Probe`] decides whether the fingerprint must be computed at all
//! ([`Decider::needs_fingerprint`]): it must unless the probe shows the same `UPDATE_TIME`s as
//! the probe taken before the last fingerprint, and that earlier probe was *settled* (the
//! server's clock was already [`SETTLE_SECONDS`] past the newest `UPDATE_TIME`). InnoDB sets a
//! table's `UPDATE_TIME` to the second of each commit that wrote it, so any commit after a
//! settled probe carries a later second than the one seen: a probe that matches a settled one
//! proves nothing was committed since. An unsettled probe (a write in the last seconds, when
//! another commit in the same second could still land) makes the next poll compute the
//! fingerprint again. A view (or a table not found) makes the probe opaque, and every poll
//! computes the fingerprint. What this relies on: the server keeps `UPDATE_TIME` (InnoDB in memory:
//! `NULL` after a restart until the next write, read as "nothing written"; a table evicted
//! from InnoDB's dictionary cache between two polls could hide one write behind a `NULL`,
//! repaired by the next `RECONCILE_INTERVAL` sync), and its clock does not step back.
//!
//! Rule 7 is why the watcher is exact: the fingerprint compared with is the one of the very
//! rows the last sync planned from, not of an earlier poll, so a change that lands between a
//! poll and the sync's read, or during the sync, is caught by the next poll; and a poll that
//! waits has seen the same names that were applied.

use std::time::Duration;

use relay_db::{Fingerprint, Probe};
use relay_postfix::PostfixMark;

/// The longest back-off between the retries of a sync that did not apply (rule 5): how long a
/// change that met a fault may wait after the fault ended, and how often a fault that lasts
/// costs a failed sync (and, for a failed reload, an alert).
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// How many whole seconds past the newest `UPDATE_TIME` the server's clock must be for a probe
/// to be settled: one for the second of the write itself, one for a commit whose timestamp
/// is taken just before its rows become visible.
pub const SETTLE_SECONDS: i64 = 2;

/// What a poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// The fingerprint of what `DB_QUERY` returns now.
    Signal(Fingerprint),
    /// No signal can be derived from `DB_QUERY`: every poll is a sync.
    NoSignal,
    /// The probe proved nothing was written since the last fingerprint.
    Unchanged,
    /// The probe shows a write since the last look, and the fingerprint was not computed: it
    /// costs more than a sync's read of the rows (see [`Decider::written`]).
    Written,
}

/// Why the watcher syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first cycle.
    First,
    /// A sync was asked for.
    Requested,
    /// `RECONCILE_INTERVAL` passed.
    Reconcile,
    /// No change signal: every poll syncs.
    NoSignal,
    /// The enabled set changed.
    Changed,
    /// The tables `DB_QUERY` reads were written, and the fingerprint costs more than reading
    /// the rows (a large table): a sync reads them and finds out.
    Written,
    /// `main.cf` is not the file the last sync left (edited, regenerated, or the container
    /// recreated from its image).
    MainCfChanged,
    /// Postfix's master is not the process the last sync saw (a restart).
    PostfixRestarted,
    /// Postfix could not be read after the last sync (down), and can now.
    PostfixBack,
    /// The last sync did not apply what it read; its back-off has passed.
    Retry,
}

/// How a sync ended, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Postfix holds the rows the sync read (it applied them, or they were in place), or the
    /// guard refused them (a retry would refuse again): nothing more until they change.
    Done(Fingerprint),
    /// The sync did not leave Postfix with the rows it read, if it read any: a retry is owed
    /// (rule 5).
    Owed(Option<Fingerprint>),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::First => "first sync of the watcher",
            Reason::Requested => "sync requested",
            Reason::Reconcile => "periodic full sync (RECONCILE_INTERVAL)",
            Reason::NoSignal => "no change signal for DB_QUERY",
            Reason::Changed => "the domains in the database changed",
            Reason::Written => "the domains table was written",
            Reason::MainCfChanged => {
                "main.cf changed since the last sync (edited, or the container was recreated)"
            }
            Reason::PostfixRestarted => "Postfix restarted since the last sync",
            Reason::PostfixBack => "Postfix answers again after the last sync could not read it",
            Reason::Retry => "retrying the last sync, which did not apply its changes",
        })
    }
}

/// The shortest interval between the full syncs of a watcher whose `DB_QUERY` gives no change
/// signal: the `POLL_INTERVAL` default before the probe made polls cheap.
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(2);

/// What the watcher remembers between cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    poll_interval: Duration,
    reconcile_interval: Duration,
    /// The fingerprint of the rows the last sync read; `None` when it read none (it failed
    /// before the fetch, or stepped aside for another run).
    read: Option<Fingerprint>,
    /// Syncs in a row that did not apply what they read (0: the last one did).
    owed: u32,
    /// When the owed retry is due (rule 5); `None` when none is owed, or Postfix was down.
    retry_at: Option<Duration>,
    /// When the last sync ended.
    last_sync: Option<Duration>,
    /// The probe taken just before the last fingerprint (or the last sync's read).
    checked: Option<Probe>,
    /// Postfix's mark read just after the last sync; `None` when it could not be read.
    postfix: Option<PostfixMark>,
}

impl Decider {
    /// A watcher that has not synced yet, polling every `poll_interval`.
    pub fn new(poll_interval: Duration, reconcile_interval: Duration) -> Decider {
        Decider {
            poll_interval,
            reconcile_interval,
            read: None,
            owed: 0,
            retry_at: None,
            last_sync: None,
            checked: None,
            postfix: None,
        }
    }

    /// How often a watcher without a change signal syncs in full: every `POLL_INTERVAL`, but
    /// never more often than every [`FULL_SYNC_EVERY`] (a full sync logs in, reads every row
    /// and asks Postfix, which a quarter-second `POLL_INTERVAL` must not make four times a
    /// second).
    pub fn full_sync_every(&self) -> Duration {
        self.poll_interval.max(FULL_SYNC_EVERY)
    }

    /// Whether this poll must compute the fingerprint, given its `probe` (`None`: no probe can
    /// be had for `DB_QUERY`).
    pub fn needs_fingerprint(&self, probe: Option<Probe>) -> bool {
        if self.owed > 0 && self.read.is_none() {
            // Nothing to compare a fingerprint with: only the retry's back-off decides.
            return false;
        }
        let (Some(probe), Some(checked)) = (probe, self.checked) else {
            return true;
        };
        self.read.is_none()
            || probe.opaque > 0
            || probe.updated != checked.updated
            || probe.unknown != checked.unknown
            || !is_settled(checked)
    }

    /// Whether a look now can be left for later: `probe` shows no write since the last look,
    /// but that look's probe was not settled, and neither is this one, so a commit in the same
    /// second as the newest `UPDATE_TIME` could still be hidden. The first poll whose probe is
    /// settled finds such a commit, at most [`SETTLE_SECONDS`] later. A watcher whose
    /// fingerprint is expensive waits for that poll instead of computing the fingerprint at
    /// every poll of those seconds (about ten at a quarter-second `POLL_INTERVAL`).
    pub fn settling(&self, probe: Option<Probe>) -> bool {
        match (probe, self.checked) {
            (Some(probe), Some(checked)) => {
                self.read.is_some()
                    && probe.opaque == 0
                    && probe.updated == checked.updated
                    && probe.unknown == checked.unknown
                    && !is_settled(checked)
                    && !is_settled(probe)
            }
            _ => false,
        }
    }

    /// Whether `probe` shows a write committed since the probe taken before the last look (a
    /// newer `UPDATE_TIME`, or one that appeared or vanished): something to look at for sure,
    /// not merely a probe that is not settled yet. A watcher whose fingerprint costs more than
    /// reading the rows syncs at once then ([`Polled::Written`]), which is never fewer syncs
    /// than the fingerprint would have made.
    pub fn written(&self, probe: Option<Probe>) -> bool {
        match (probe, self.checked) {
            (Some(probe), Some(checked)) => {
                probe.opaque == 0
                    && (probe.updated != checked.updated || probe.unknown != checked.unknown)
            }
            _ => false,
        }
    }

    /// The fingerprint was computed (or a sync read the rows) after `probe`.
    pub fn checked(&mut self, probe: Option<Probe>) {
        self.checked = probe;
    }

    /// Sync (and why) or wait (`None`), at `now`, after a poll that saw `polled` in the
    /// database and `postfix` (`None`: it could not be read) in Postfix.
    pub fn decide(
        &self,
        now: Duration,
        polled: Polled,
        postfix: Option<PostfixMark>,
        requested: bool,
    ) -> Option<Reason> {
        let Some(last_sync) = self.last_sync else {
            return Some(Reason::First);
        };
        if requested {
            return Some(Reason::Requested);
        }
        if now.saturating_sub(last_sync) >= self.reconcile_interval {
            return Some(Reason::Reconcile);
        }
        if let Some(now) = postfix {
            match self.postfix {
                None => return Some(Reason::PostfixBack),
                Some(then) if then.main_cf != now.main_cf => return Some(Reason::MainCfChanged),
                Some(then) if then.master != now.master => return Some(Reason::PostfixRestarted),
                Some(_) => {}
            }
        }
        if self.owed > 0 {
            if self.retry_at.is_some_and(|due| now >= due) {
                return Some(Reason::Retry);
            }
            // A newer change than the one that failed is worth a sync of its own.
            return match polled {
                Polled::Signal(polled) if self.read.is_some_and(|read| read != polled) => {
                    Some(Reason::Changed)
                }
                Polled::Written => Some(Reason::Written),
                _ => None,
            };
        }
        match polled {
            Polled::NoSignal => (now.saturating_sub(last_sync) >= self.full_sync_every())
                .then_some(Reason::NoSignal),
            Polled::Written => Some(Reason::Written),
            Polled::Signal(now) if Some(now) != self.read => Some(Reason::Changed),
            Polled::Signal(_) => None,
            Polled::Unchanged if self.read.is_none() => Some(Reason::Changed),
            Polled::Unchanged => None,
        }
    }

    /// A sync ended at `now`, as `synced` says (done, with the fingerprint of the rows it
    /// read, or owing a retry), and left Postfix with the mark `postfix` (read just after it;
    /// `None` when it could not be read, so the next poll that can read one syncs).
    pub fn synced(&mut self, now: Duration, synced: Synced, postfix: Option<PostfixMark>) {
        match synced {
            Synced::Done(read) => {
                self.read = Some(read);
                self.owed = 0;
                self.retry_at = None;
            }
            Synced::Owed(read) => {
                self.read = read;
                self.owed = self.owed.saturating_add(1);
                // Postfix down: rule 4 syncs when it answers again; a retry before would fail
                // the same way (and alert, for a reload).
                self.retry_at = postfix.map(|_| {
                    now + retry_backoff(self.poll_interval, self.reconcile_interval, self.owed)
                });
            }
        }
        self.last_sync = Some(now);
        self.postfix = postfix;
    }

    /// The same decider with another `POLL_INTERVAL` and `RECONCILE_INTERVAL` (a reloaded
    /// config): what the last sync read is still what Postfix has.
    pub fn set_intervals(&mut self, poll_interval: Duration, reconcile_interval: Duration) {
        self.poll_interval = poll_interval;
        self.reconcile_interval = reconcile_interval;
    }

    /// The probe taken before the last fingerprint says nothing about another server: the
    /// change signal now reads another host of `DB_HOST`, so the next poll computes the
    /// fingerprint whatever its probe says.
    pub fn forget_probe(&mut self) {
        self.checked = None;
    }

    /// When the retry owed after a sync that did not apply is due; `None` when none is owed
    /// (or Postfix could not be read after it: rule 4 syncs when it can).
    pub fn retry_due(&self) -> Option<Duration> {
        self.retry_at.filter(|_| self.owed > 0)
    }

    /// When the next full sync is due whatever the signal says.
    pub fn reconcile_due(&self) -> Option<Duration> {
        self.last_sync.map(|last| last + self.reconcile_interval)
    }
}

/// Whether no commit can still carry the newest `UPDATE_TIME` `probe` saw.
fn is_settled(probe: Probe) -> bool {
    probe
        .updated
        .is_none_or(|updated| probe.now >= updated.saturating_add(SETTLE_SECONDS))
}

/// The wait before retrying a sync after `owed` syncs in a row did not apply (rule 5):
/// `POLL_INTERVAL` doubled per failure after the first, at most [`RETRY_CAP`] and
/// `RECONCILE_INTERVAL` (never less than `POLL_INTERVAL`).
pub fn retry_backoff(poll_interval: Duration, reconcile_interval: Duration, owed: u32) -> Duration {
    let factor = 2u32.saturating_pow(owed.saturating_sub(1).min(20));
    poll_interval
        .saturating_mul(factor)
        .min(RETRY_CAP)
        .min(reconcile_interval)
        .max(poll_interval)
}

/// The wait before the next poll after `failed_polls` failed ones in a row: `POLL_INTERVAL`
/// doubled per failure, at most `RECONCILE_INTERVAL` (and never less than `POLL_INTERVAL`).
pub fn poll_backoff(
    poll_interval: Duration,
    reconcile_interval: Duration,
    failed_polls: u32,
) -> Duration {
    let factor = 2u32.saturating_pow(failed_polls.min(20));
    poll_interval
        .saturating_mul(factor)
        .min(reconcile_interval)
        .max(poll_interval)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const POLL: Duration = Duration::from_secs(2);
    const RECONCILE: Duration = Duration::from_secs(300);
    /// A Postfix that nothing happens to.
    const QUIET: Option<PostfixMark> = Some(PostfixMark {
        main_cf: 1,
        master: 1,
    });

    /// What can happen between two polls in the model: the admin toggles a domain, or a sync
    /// that was decided reads the database at some point while changes go on.
    #[derive(Debug, Clone)]
    enum Event {
        /// Toggle the domain with this index in a small universe (enable or disable, which
        /// is also what a delete or an insert does to the enabled set).
        Toggle(u8),
        /// A rename: one domain goes, another comes, in one statement.
        Rename(u8, u8),
        /// A poll, after which a decided sync reads the database once `late` toggles of the
        /// following events have landed (a change between the poll and the sync's read).
        Poll { late: usize },
    }

    fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
        let event = prop_oneof![
            4 => (0u8..12).prop_map(Event::Toggle),
            1 => (0u8..12, 0u8..12).prop_map(|(a, b)| Event::Rename(a, b)),
            3 => (0usize..3).prop_map(|late| Event::Poll { late }),
        ];
        proptest::collection::vec(event, 0..60)
    }

    fn name(index: u8) -> String {
        format!("d{index}.example")
    }

    fn fingerprint(set: &BTreeSet<String>) -> Fingerprint {
        Fingerprint::of(set.iter().map(String::as_str))
    }

    fn apply(db: &mut BTreeSet<String>, event: &Event) {
        match event {
            Event::Toggle(i) => {
                if !db.remove(&name(*i)) {
                    db.insert(name(*i));
                }
            }
            Event::Rename(a, b) => {
                if db.remove(&name(*a)) {
                    db.insert(name(*b));
                }
            }
            Event::Poll { .. } => {}
        }
    }

    proptest! {
        /// Whatever the admin does and whenever the syncs read, a poll that decides to wait
        /// has seen exactly the set that was applied: no change of the enabled set is missed.
        #[test]
        fn prop_a_poll_that_waits_has_nothing_to_apply(events in events_strategy()) {
            let mut db = BTreeSet::new();
            let mut applied: Option<BTreeSet<String>> = None;
            let mut decider = Decider::new(POLL, RECONCILE);
            let mut now = Duration::ZERO;
            for (i, event) in events.iter().enumerate() {
                apply(&mut db, event);
                let Event::Poll { late } = event else { continue };
                now += POLL;
                match decider.decide(now, Polled::Signal(fingerprint(&db)), QUIET, false) {
                    None => prop_assert_eq!(applied.as_ref(), Some(&db)),
                    Some(_) => {
                        // Changes that land between the poll and the sync's read.
                        let mut read = db.clone();
                        for later in events[i + 1..].iter().take(*late) {
                            apply(&mut read, later);
                        }
                        decider.synced(now, Synced::Done(fingerprint(&read)), QUIET);
                        applied = Some(read);
                    }
                }
            }
            // A final quiet poll: either it syncs, or what was applied is what the database holds.
            now += POLL;
            if decider.decide(now, Polled::Signal(fingerprint(&db)), QUIET, false).is_none() {
                prop_assert_eq!(applied.as_ref(), Some(&db));
            }
        }

        /// Changes undone before the next poll cost nothing: the poll waits.
        #[test]
        fn prop_an_undone_change_needs_no_sync(start in proptest::collection::btree_set(0u8..12, 0..12), toggles in proptest::collection::vec(0u8..12, 1..8)) {
            let mut db: BTreeSet<String> = start.iter().copied().map(name).collect();
            let mut decider = Decider::new(POLL, RECONCILE);
            decider.synced(Duration::ZERO, Synced::Done(fingerprint(&db)), QUIET);
            for &t in toggles.iter().chain(toggles.iter().rev()) {
                apply(&mut db, &Event::Toggle(t));
            }
            prop_assert_eq!(decider.decide(POLL, Polled::Signal(fingerprint(&db)), QUIET, false), None);
        }

        /// However quiet the database, a full sync comes at least every RECONCILE_INTERVAL of
        /// polls, and a requested sync at the next cycle.
        #[test]
        fn prop_reconcile_and_requests_always_sync(polls in 1u32..400, requested_at in 0u32..400) {
            let db = BTreeSet::from([name(1)]);
            let mut decider = Decider::new(POLL, RECONCILE);
            decider.synced(Duration::ZERO, Synced::Done(fingerprint(&db)), QUIET);
            let mut last_sync = Duration::ZERO;
            for poll in 1..=polls {
                let now = POLL * poll;
                let requested = poll == requested_at;
                match decider.decide(now, Polled::Signal(fingerprint(&db)), QUIET, requested) {
                    Some(reason) => {
                        if requested {
                            prop_assert_eq!(reason, Reason::Requested);
                        }
                        decider.synced(now, Synced::Done(fingerprint(&db)), QUIET);
                        last_sync = now;
                    }
                    None => {
                        prop_assert!(!requested);
                        prop_assert!(now - last_sync < RECONCILE);
                    }
                }
            }
        }

        /// Back-off stays between POLL_INTERVAL and RECONCILE_INTERVAL and never shrinks as
        /// failures go on.
        #[test]
        fn prop_backoff_is_bounded_and_grows(failures in 0u32..100) {
            let wait = poll_backoff(POLL, RECONCILE, failures);
            prop_assert!(wait >= POLL && wait <= RECONCILE);
            prop_assert!(poll_backoff(POLL, RECONCILE, failures + 1) >= wait);
        }
    }

    /// What can happen in the clocked model: a commit that toggles a domain, a poll, both at
    /// a time in milliseconds.
    #[derive(Debug, Clone)]
    enum Timed {
        Commit(u8),
        Poll,
    }

    fn timed_strategy() -> impl Strategy<Value = Vec<(u64, Timed)>> {
        let event = prop_oneof![
            2 => (0u8..8).prop_map(Timed::Commit),
            3 => Just(Timed::Poll),
        ];
        // Gaps of 0 to 1.5 s: many events share a second.
        proptest::collection::vec((0u64..1500, event), 0..80)
    }

    proptest! {
        /// With the probe in front: InnoDB stamps each commit with its second; a poll that
        /// skips the fingerprint and waits has nothing to apply, however commits and polls
        /// share seconds. With an expensive fingerprint (a write goes straight to a sync, and
        /// the fingerprint waits for a settled probe), a poll with a settled probe that waits
        /// has nothing to apply.
        #[test]
        fn prop_a_probe_never_hides_a_change(events in timed_strategy(), expensive in any::<bool>()) {
            let mut db = BTreeSet::new();
            let mut updated: Option<i64> = None;
            let mut applied: Option<BTreeSet<String>> = None;
            let mut decider = Decider::new(POLL, Duration::from_secs(3600));
            let mut now_ms = 0u64;
            for (gap, event) in events {
                now_ms += gap;
                let second = i64::try_from(now_ms / 1000).unwrap();
                match event {
                    Timed::Commit(i) => {
                        apply(&mut db, &Event::Toggle(i));
                        updated = Some(second);
                    }
                    Timed::Poll => {
                        let probe = Probe { updated, unknown: u32::from(updated.is_none()), now: second, opaque: 0 };
                        let polled = if !decider.needs_fingerprint(Some(probe)) {
                            Polled::Unchanged
                        } else if expensive && decider.settling(Some(probe)) {
                            // A large table: look once the probe is settled.
                            Polled::Unchanged
                        } else if expensive && decider.written(Some(probe)) {
                            // A large table: the sync reads the rows instead.
                            decider.checked(Some(probe));
                            Polled::Written
                        } else {
                            let polled = Polled::Signal(fingerprint(&db));
                            decider.checked(Some(probe));
                            polled
                        };
                        let at = Duration::from_millis(now_ms);
                        match decider.decide(at, polled, QUIET, false) {
                            // An expensive fingerprint waits for a settled probe: until then a
                            // commit of the probe's own second may wait too.
                            None if expensive && !is_settled(probe) => {}
                            None => prop_assert_eq!(applied.as_ref(), Some(&db)),
                            Some(_) => {
                                decider.synced(at, Synced::Done(fingerprint(&db)), QUIET);
                                applied = Some(db.clone());
                            }
                        }
                    }
                }
            }
        }
    }

    /// What can happen to Postfix between polls in the model.
    #[derive(Debug, Clone)]
    enum PostfixEvent {
        /// The master restarts; `regenerate`: its start script writes main.cf anew from a
        /// template (docker-mailserver does), dropping what relay-sync wrote.
        Restart {
            regenerate: bool,
        },
        /// The container is recreated from its image: the image's main.cf, a new master.
        Recreate,
        /// Someone edits main.cf; `drops`: the edit loses relay-sync's domains.
        Edit {
            drops: bool,
        },
        /// The container stops; `Up` starts it again (a new master).
        Down,
        Up,
        Poll,
    }

    fn postfix_events_strategy() -> impl Strategy<Value = Vec<PostfixEvent>> {
        let event = prop_oneof![
            1 => any::<bool>().prop_map(|regenerate| PostfixEvent::Restart { regenerate }),
            1 => Just(PostfixEvent::Recreate),
            1 => any::<bool>().prop_map(|drops| PostfixEvent::Edit { drops }),
            1 => Just(PostfixEvent::Down),
            1 => Just(PostfixEvent::Up),
            5 => Just(PostfixEvent::Poll),
        ];
        proptest::collection::vec(event, 0..80)
    }

    /// Postfix in the model: its main.cf (the operator's part, and whether relay-sync's
    /// domains are in it), its master, whether it runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Gateway {
        base: u64,
        domains: bool,
        master: u64,
        up: bool,
    }

    impl Gateway {
        fn mark(&self) -> Option<PostfixMark> {
            self.up.then_some(PostfixMark {
                main_cf: self.base * 2 + u64::from(self.domains),
                master: self.master,
            })
        }

        fn apply(&mut self, event: &PostfixEvent) {
            match event {
                PostfixEvent::Restart { regenerate } => {
                    if self.up {
                        self.master += 1;
                        self.domains &= !regenerate;
                    }
                }
                PostfixEvent::Recreate => {
                    *self = Gateway {
                        base: 0,
                        domains: false,
                        master: self.master + 1,
                        up: true,
                    };
                }
                PostfixEvent::Edit { drops } => {
                    self.base += 1;
                    self.domains &= !drops;
                }
                PostfixEvent::Down => self.up = false,
                PostfixEvent::Up => {
                    if !self.up {
                        self.up = true;
                        self.master += 1;
                    }
                }
                PostfixEvent::Poll => {}
            }
        }

        /// A sync: writes the domains when Postfix runs; the mark read just after it.
        fn sync(&mut self) -> Option<PostfixMark> {
            if self.up {
                self.domains = true;
            }
            self.mark()
        }
    }

    proptest! {
        /// Whatever happens to Postfix (restarts that regenerate main.cf, a recreated
        /// container, edits, outages), a poll that can read Postfix and waits finds it as the
        /// last sync left it, with relay-sync's domains in place: no loss waits for
        /// RECONCILE_INTERVAL.
        #[test]
        fn prop_a_poll_that_waits_finds_postfix_as_the_last_sync_left_it(events in postfix_events_strategy()) {
            let db = BTreeSet::from([name(1)]);
            let polled = Polled::Signal(fingerprint(&db));
            let mut gateway = Gateway { base: 0, domains: false, master: 0, up: true };
            let mut decider = Decider::new(POLL, Duration::from_secs(3600));
            let mut left = None;
            let mut now = Duration::ZERO;
            for event in &events {
                gateway.apply(event);
                if !matches!(event, PostfixEvent::Poll) {
                    continue;
                }
                now += POLL;
                let mark = gateway.mark();
                match decider.decide(now, polled, mark, false) {
                    Some(_) => {
                        let up = gateway.up;
                        left = gateway.sync();
                        decider.synced(now, synced_if(up, &db), left);
                    }
                    None if gateway.up => {
                        prop_assert!(gateway.domains, "domains lost and not noticed: {gateway:?}");
                        prop_assert_eq!(mark, left);
                    }
                    // Down: nothing to do until it is back.
                    None => {}
                }
            }
        }

        /// A Postfix that nothing happens to costs no sync: after one sync that could read it,
        /// polls wait (and a failed read proves nothing and syncs nothing).
        #[test]
        fn prop_a_quiet_postfix_costs_no_sync(events in postfix_events_strategy(), quiet in 1usize..20, down_at in 0usize..20) {
            let db = BTreeSet::from([name(1)]);
            let polled = Polled::Signal(fingerprint(&db));
            let mut gateway = Gateway { base: 0, domains: false, master: 0, up: true };
            let mut decider = Decider::new(POLL, Duration::from_secs(3600));
            let mut now = Duration::ZERO;
            for event in events.iter().chain([&PostfixEvent::Up, &PostfixEvent::Poll]) {
                gateway.apply(event);
                if matches!(event, PostfixEvent::Poll) {
                    now += POLL;
                    if decider.decide(now, polled, gateway.mark(), false).is_some() {
                        let up = gateway.up;
                        let left = gateway.sync();
                        decider.synced(now, synced_if(up, &db), left);
                    }
                }
            }
            for poll in 0..quiet {
                now += POLL;
                // One unreadable poll in the quiet spell (a slow exec, say).
                let mark = if poll == down_at { None } else { gateway.mark() };
                prop_assert_eq!(decider.decide(now, polled, mark, false), None);
            }
        }
    }

    /// A sync against a Postfix that is `up` applies the rows of `db`; against one that is
    /// down it fails, owing a retry.
    fn synced_if(up: bool, db: &BTreeSet<String>) -> Synced {
        if up {
            Synced::Done(fingerprint(db))
        } else {
            Synced::Owed(Some(fingerprint(db)))
        }
    }

    /// The model of a sync that meets a fault in its apply step (`BACKUP_DIR` full, a reload
    /// that fails while Postfix runs): it read the rows and applied nothing.
    fn sync_under(
        fault: bool,
        db: &BTreeSet<String>,
        applied: &mut Option<BTreeSet<String>>,
    ) -> Synced {
        if fault {
            Synced::Owed(Some(fingerprint(db)))
        } else {
            *applied = Some(db.clone());
            Synced::Done(fingerprint(db))
        }
    }

    proptest! {
        /// A change that met a fault in a sync's apply step is applied soon after the fault
        /// ends, not at the next RECONCILE_INTERVAL: a poll that waits, once the fault has been
        /// over for RETRY_CAP, has nothing left to apply. (Before the fix, a failed sync
        /// counted as having applied the rows it read, and the poll waited up to
        /// RECONCILE_INTERVAL.)
        #[test]
        fn prop_a_change_that_met_a_fault_is_applied_soon_after_it_ends(
            toggles in proptest::collection::btree_set(0usize..150, 1..12),
            fault_from in 0usize..100,
            fault_polls in 1usize..100,
        ) {
            let fault = fault_from..fault_from + fault_polls;
            let mut db = BTreeSet::new();
            let mut applied = None;
            let mut decider = Decider::new(POLL, Duration::from_secs(3600));
            for poll in 0..200usize {
                if toggles.contains(&poll) {
                    apply(&mut db, &Event::Toggle(u8::try_from(poll % 12).unwrap()));
                }
                let now = POLL * u32::try_from(poll).unwrap();
                match decider.decide(now, Polled::Signal(fingerprint(&db)), QUIET, false) {
                    Some(_) => {
                        let synced = sync_under(fault.contains(&poll), &db, &mut applied);
                        decider.synced(now, synced, QUIET);
                    }
                    None => {
                        let over_for = poll.checked_sub(fault.end).map(|polls| POLL * u32::try_from(polls).unwrap());
                        if over_for.is_some_and(|over| over >= RETRY_CAP) {
                            prop_assert_eq!(applied.as_ref(), Some(&db), "poll {}", poll);
                        }
                    }
                }
            }
        }

        /// A fault that lasts does not make the watcher spin: over a quiet hour of a lasting
        /// fault, the failed syncs are the back-off's doubling steps and one per RETRY_CAP,
        /// each at least POLL_INTERVAL after the one before.
        #[test]
        fn prop_a_lasting_fault_costs_one_sync_per_backoff(poll_ms in 100u64..3000) {
            let poll = Duration::from_millis(poll_ms);
            let db = BTreeSet::from([name(1)]);
            let mut decider = Decider::new(poll, RECONCILE);
            decider.synced(Duration::ZERO, Synced::Owed(Some(fingerprint(&db))), QUIET);
            let hour = Duration::from_secs(3600);
            let (mut syncs, mut last, mut gap) = (0u32, Duration::ZERO, Duration::ZERO);
            let mut now = poll;
            while now < hour {
                // RECONCILE_INTERVAL aside (a sync it would make anyway), only the retries.
                let decision = decider.decide(now, Polled::Signal(fingerprint(&db)), QUIET, false);
                if decision.is_some() {
                    prop_assert_ne!(decision, Some(Reason::Changed));
                    prop_assert!(now - last >= gap, "retries came closer: {:?} after {:?}", now - last, gap);
                    gap = now - last;
                    last = now;
                    syncs += 1;
                    decider.synced(now, Synced::Owed(Some(fingerprint(&db))), QUIET);
                }
                now += poll;
            }
            let doubling = 64 - (RETRY_CAP.as_millis() as u64 / poll_ms).leading_zeros();
            let bound = doubling + u32::try_from(hour.as_secs() / RETRY_CAP.min(RECONCILE).as_secs()).unwrap() + 2;
            prop_assert!(syncs <= bound, "{} failed syncs in an hour (at most {})", syncs, bound);
            prop_assert!(syncs >= bound / 2, "{} retries in an hour: the fault is not retried", syncs);
        }
    }

    /// Postfix down after a failed sync: no retry until it answers again (rule 4 then syncs),
    /// since a retry would fail the same way, and alert for a reload.
    #[test]
    fn a_failed_sync_against_a_stopped_postfix_waits_for_it() {
        let db = BTreeSet::from([name(1)]);
        let polled = Polled::Signal(fingerprint(&db));
        let mut decider = Decider::new(POLL, RECONCILE);
        decider.synced(Duration::ZERO, Synced::Done(fingerprint(&db)), QUIET);
        decider.synced(POLL, Synced::Owed(Some(fingerprint(&db))), None);
        for poll in 2..100u32 {
            assert_eq!(decider.decide(POLL * poll, polled, None, false), None);
        }
        assert_eq!(
            decider.decide(POLL * 100, polled, QUIET, false),
            Some(Reason::PostfixBack)
        );
        // Readable and failing again, the second failure in a row: retried after twice
        // POLL_INTERVAL.
        decider.synced(POLL * 100, Synced::Owed(Some(fingerprint(&db))), QUIET);
        assert_eq!(decider.decide(POLL * 101, polled, QUIET, false), None);
        assert_eq!(decider.retry_due(), Some(POLL * 102));
        assert_eq!(
            decider.decide(POLL * 102, polled, QUIET, false),
            Some(Reason::Retry)
        );
        assert_eq!(retry_backoff(POLL, RECONCILE, 1), POLL);
        assert_eq!(retry_backoff(POLL, RECONCILE, 3), POLL * 4);
        assert_eq!(retry_backoff(POLL, RECONCILE, 30), RETRY_CAP);
        assert_eq!(
            retry_backoff(POLL, Duration::from_secs(10), 30),
            Duration::from_secs(10)
        );
    }

    /// While a retry is owed, a newer change syncs at once; the failed one's rows do not.
    #[test]
    fn a_newer_change_does_not_wait_for_the_backoff() {
        let before = BTreeSet::from([name(1)]);
        let after = BTreeSet::from([name(1), name(2)]);
        let mut decider = Decider::new(POLL, RECONCILE);
        decider.synced(
            Duration::ZERO,
            Synced::Owed(Some(fingerprint(&before))),
            QUIET,
        );
        decider.synced(POLL, Synced::Owed(Some(fingerprint(&before))), QUIET);
        let at = POLL + POLL / 2;
        assert_eq!(
            decider.decide(at, Polled::Signal(fingerprint(&before)), QUIET, false),
            None
        );
        assert_eq!(decider.decide(at, Polled::Unchanged, QUIET, false), None);
        assert_eq!(
            decider.decide(at, Polled::Signal(fingerprint(&after)), QUIET, false),
            Some(Reason::Changed)
        );
    }

    #[test]
    fn a_changed_main_cf_a_restart_and_a_return_are_named() {
        let db = BTreeSet::from([name(1)]);
        let polled = Polled::Signal(fingerprint(&db));
        let mark = PostfixMark {
            main_cf: 7,
            master: 3,
        };
        let mut decider = Decider::new(POLL, RECONCILE);
        decider.synced(Duration::ZERO, Synced::Done(fingerprint(&db)), Some(mark));
        assert_eq!(decider.decide(POLL, polled, Some(mark), false), None);
        assert_eq!(decider.decide(POLL, polled, None, false), None);
        let edited = PostfixMark { main_cf: 8, ..mark };
        assert_eq!(
            decider.decide(POLL, polled, Some(edited), false),
            Some(Reason::MainCfChanged)
        );
        let restarted = PostfixMark { master: 4, ..mark };
        assert_eq!(
            decider.decide(POLL, polled, Some(restarted), false),
            Some(Reason::PostfixRestarted)
        );
        // A recreated container: both differ; main.cf is what matters.
        let recreated = PostfixMark {
            main_cf: 9,
            master: 4,
        };
        assert_eq!(
            decider.decide(POLL, polled, Some(recreated), false),
            Some(Reason::MainCfChanged)
        );
        decider.synced(POLL, Synced::Done(fingerprint(&db)), None);
        assert_eq!(
            decider.decide(POLL * 2, polled, Some(mark), false),
            Some(Reason::PostfixBack)
        );
        assert_eq!(decider.decide(POLL * 2, polled, None, false), None);
    }

    #[test]
    fn a_settled_unchanged_probe_skips_the_fingerprint() {
        let db = BTreeSet::from([name(1)]);
        let mut decider = Decider::new(POLL, RECONCILE);
        let probe = Probe {
            updated: Some(100),
            unknown: 0,
            now: 105,
            opaque: 0,
        };
        assert!(decider.needs_fingerprint(Some(probe)));
        decider.checked(Some(probe));
        decider.synced(POLL, Synced::Done(fingerprint(&db)), QUIET);
        assert!(!decider.needs_fingerprint(Some(Probe { now: 107, ..probe })));
        assert!(decider.needs_fingerprint(Some(Probe {
            updated: Some(107),
            ..probe
        })));
        assert!(decider.needs_fingerprint(None));
        // Written in the second of the probe: the next poll looks again.
        let recent = Probe {
            updated: Some(105),
            unknown: 0,
            now: 105,
            opaque: 0,
        };
        decider.checked(Some(recent));
        assert!(decider.needs_fingerprint(Some(Probe { now: 106, ..recent })));
        // A view (or a table not found) hides its writes: always look.
        let view = Probe { opaque: 1, ..probe };
        decider.checked(Some(view));
        assert!(decider.needs_fingerprint(Some(Probe { now: 110, ..view })));
    }

    /// Without a change signal, a full sync at every poll, but at most every
    /// [`FULL_SYNC_EVERY`] with a shorter `POLL_INTERVAL` (the default, a quarter second).
    #[test]
    fn without_a_signal_full_syncs_are_at_most_every_two_seconds() {
        let quarter = Duration::from_millis(250);
        let mut decider = Decider::new(quarter, RECONCILE);
        decider.synced(Duration::ZERO, Synced::Done(Fingerprint::default()), QUIET);
        let polls: Vec<Option<Reason>> = (1..=8)
            .map(|n| decider.decide(quarter * n, Polled::NoSignal, QUIET, false))
            .collect();
        assert_eq!(polls[..7], [None; 7]);
        assert_eq!(polls[7], Some(Reason::NoSignal));
        assert_eq!(decider.full_sync_every(), FULL_SYNC_EVERY);
        assert_eq!(
            Decider::new(POLL * 5, RECONCILE).full_sync_every(),
            POLL * 5
        );
    }

    #[test]
    fn first_cycle_syncs_and_no_signal_syncs_every_poll() {
        let mut decider = Decider::new(POLL, RECONCILE);
        assert_eq!(
            decider.decide(Duration::ZERO, Polled::NoSignal, QUIET, false),
            Some(Reason::First)
        );
        decider.synced(Duration::ZERO, Synced::Done(Fingerprint::default()), QUIET);
        assert_eq!(
            decider.decide(POLL, Polled::NoSignal, QUIET, false),
            Some(Reason::NoSignal)
        );
        assert_eq!(poll_backoff(POLL, RECONCILE, 0), POLL);
        assert_eq!(poll_backoff(POLL, RECONCILE, 3), Duration::from_secs(16));
        assert_eq!(poll_backoff(POLL, RECONCILE, 30), RECONCILE);
    }

    /// A sync that read nothing (the lock was held by a cron run) is retried at the next poll.
    #[test]
    fn a_sync_that_read_nothing_is_retried() {
        let db = BTreeSet::from([name(1)]);
        let mut decider = Decider::new(POLL, RECONCILE);
        decider.synced(Duration::ZERO, Synced::Owed(None), QUIET);
        assert!(!decider.needs_fingerprint(None));
        assert_eq!(
            decider.decide(POLL, Polled::Signal(fingerprint(&db)), QUIET, false),
            Some(Reason::Retry)
        );
    }
}
