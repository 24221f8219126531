//! The watcher's decision, pure: given what a poll saw and what the last sync read, sync or
//! wait. Time is a parameter (a [`Duration`] since the watcher started), so the rules are
//! property-tested without a clock or a database.
//!
//! The rules, in order:
//! 1. No sync yet: sync (the first cycle is a full sync).
//! 2. A sync was asked for (`sync_now`, `SIGUSR1`, a reloaded config): sync.
//! 3. `RECONCILE_INTERVAL` has passed since the last sync: sync, whatever the signal says.
//! 4. No signal can be derived from `DB_QUERY`: sync every poll.
//! 5. The polled fingerprint differs from the fingerprint of the rows the last sync read:
//!    sync. Equal (nothing changed, or a change was undone before this poll): wait.
//!
//! Before rule 5, the cheap [`Probe`] decides whether the fingerprint must be computed at all
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
//! Rule 5 is why the watcher is exact: the fingerprint compared with is the one of the very
//! rows the last sync planned from, not of an earlier poll, so a change that lands between a
//! poll and the sync's read, or during the sync, is caught by the next poll; and a poll that
//! waits has seen the same names that were applied.

use std::time::Duration;

use relay_db::{Fingerprint, Probe};

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
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::First => "first sync of the watcher",
            Reason::Requested => "sync requested",
            Reason::Reconcile => "periodic full sync (RECONCILE_INTERVAL)",
            Reason::NoSignal => "no change signal for DB_QUERY",
            Reason::Changed => "the domains in the database changed",
        })
    }
}

/// What the watcher remembers between cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    reconcile_interval: Duration,
    /// The fingerprint of the rows the last sync read; `None` when it read none (it failed
    /// before the fetch, or stepped aside for another run).
    read: Option<Fingerprint>,
    /// When the last sync ended.
    last_sync: Option<Duration>,
    /// The probe taken just before the last fingerprint (or the last sync's read).
    checked: Option<Probe>,
}

impl Decider {
    /// A watcher that has not synced yet.
    pub fn new(reconcile_interval: Duration) -> Decider {
        Decider {
            reconcile_interval,
            read: None,
            last_sync: None,
            checked: None,
        }
    }

    /// Whether this poll must compute the fingerprint, given its `probe` (`None`: no probe can
    /// be had for `DB_QUERY`).
    pub fn needs_fingerprint(&self, probe: Option<Probe>) -> bool {
        let (Some(probe), Some(checked)) = (probe, self.checked) else {
            return true;
        };
        self.read.is_none()
            || probe.opaque > 0
            || probe.updated != checked.updated
            || probe.unknown != checked.unknown
            || !is_settled(checked)
    }

    /// The fingerprint was computed (or a sync read the rows) after `probe`.
    pub fn checked(&mut self, probe: Option<Probe>) {
        self.checked = probe;
    }

    /// Sync (and why) or wait (`None`), at `now`, after a poll that saw `polled`.
    pub fn decide(&self, now: Duration, polled: Polled, requested: bool) -> Option<Reason> {
        let Some(last_sync) = self.last_sync else {
            return Some(Reason::First);
        };
        if requested {
            return Some(Reason::Requested);
        }
        if now.saturating_sub(last_sync) >= self.reconcile_interval {
            return Some(Reason::Reconcile);
        }
        match polled {
            Polled::NoSignal => Some(Reason::NoSignal),
            Polled::Signal(now) if Some(now) != self.read => Some(Reason::Changed),
            Polled::Signal(_) => None,
            Polled::Unchanged if self.read.is_none() => Some(Reason::Changed),
            Polled::Unchanged => None,
        }
    }

    /// A sync ended at `now`, having read rows with fingerprint `read` (`None`: it read none,
    /// so the next poll syncs again).
    pub fn synced(&mut self, now: Duration, read: Option<Fingerprint>) {
        self.read = read;
        self.last_sync = Some(now);
    }

    /// The same decider with another `RECONCILE_INTERVAL` (a reloaded config): what the last
    /// sync read is still what Postfix has.
    pub fn set_reconcile_interval(&mut self, reconcile_interval: Duration) {
        self.reconcile_interval = reconcile_interval;
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
            let mut decider = Decider::new(RECONCILE);
            let mut now = Duration::ZERO;
            for (i, event) in events.iter().enumerate() {
                apply(&mut db, event);
                let Event::Poll { late } = event else { continue };
                now += POLL;
                match decider.decide(now, Polled::Signal(fingerprint(&db)), false) {
                    None => prop_assert_eq!(applied.as_ref(), Some(&db)),
                    Some(_) => {
                        // Changes that land between the poll and the sync's read.
                        let mut read = db.clone();
                        for later in events[i + 1..].iter().take(*late) {
                            apply(&mut read, later);
                        }
                        decider.synced(now, Some(fingerprint(&read)));
                        applied = Some(read);
                    }
                }
            }
            // A final quiet poll: either it syncs, or what was applied is what the database holds.
            now += POLL;
            if decider.decide(now, Polled::Signal(fingerprint(&db)), false).is_none() {
                prop_assert_eq!(applied.as_ref(), Some(&db));
            }
        }

        /// Changes undone before the next poll cost nothing: the poll waits.
        #[test]
        fn prop_an_undone_change_needs_no_sync(start in proptest::collection::btree_set(0u8..12, 0..12), toggles in proptest::collection::vec(0u8..12, 1..8)) {
            let mut db: BTreeSet<String> = start.iter().copied().map(name).collect();
            let mut decider = Decider::new(RECONCILE);
            decider.synced(Duration::ZERO, Some(fingerprint(&db)));
            for &t in toggles.iter().chain(toggles.iter().rev()) {
                apply(&mut db, &Event::Toggle(t));
            }
            prop_assert_eq!(decider.decide(POLL, Polled::Signal(fingerprint(&db)), false), None);
        }

        /// However quiet the database, a full sync comes at least every RECONCILE_INTERVAL of
        /// polls, and a requested sync at the next cycle.
        #[test]
        fn prop_reconcile_and_requests_always_sync(polls in 1u32..400, requested_at in 0u32..400) {
            let db = BTreeSet::from([name(1)]);
            let mut decider = Decider::new(RECONCILE);
            decider.synced(Duration::ZERO, Some(fingerprint(&db)));
            let mut last_sync = Duration::ZERO;
            for poll in 1..=polls {
                let now = POLL * poll;
                let requested = poll == requested_at;
                match decider.decide(now, Polled::Signal(fingerprint(&db)), requested) {
                    Some(reason) => {
                        if requested {
                            prop_assert_eq!(reason, Reason::Requested);
                        }
                        decider.synced(now, Some(fingerprint(&db)));
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
        /// share seconds.
        #[test]
        fn prop_a_probe_never_hides_a_change(events in timed_strategy()) {
            let mut db = BTreeSet::new();
            let mut updated: Option<i64> = None;
            let mut applied: Option<BTreeSet<String>> = None;
            let mut decider = Decider::new(Duration::from_secs(3600));
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
                        let polled = if decider.needs_fingerprint(Some(probe)) {
                            let polled = Polled::Signal(fingerprint(&db));
                            decider.checked(Some(probe));
                            polled
                        } else {
                            Polled::Unchanged
                        };
                        let at = Duration::from_millis(now_ms);
                        match decider.decide(at, polled, false) {
                            None => prop_assert_eq!(applied.as_ref(), Some(&db)),
                            Some(_) => {
                                decider.synced(at, Some(fingerprint(&db)));
                                applied = Some(db.clone());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_settled_unchanged_probe_skips_the_fingerprint() {
        let db = BTreeSet::from([name(1)]);
        let mut decider = Decider::new(RECONCILE);
        let probe = Probe {
            updated: Some(100),
            unknown: 0,
            now: 105,
            opaque: 0,
        };
        assert!(decider.needs_fingerprint(Some(probe)));
        decider.checked(Some(probe));
        decider.synced(POLL, Some(fingerprint(&db)));
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

    #[test]
    fn first_cycle_syncs_and_no_signal_syncs_every_poll() {
        let mut decider = Decider::new(RECONCILE);
        assert_eq!(
            decider.decide(Duration::ZERO, Polled::NoSignal, false),
            Some(Reason::First)
        );
        decider.synced(Duration::ZERO, None);
        assert_eq!(
            decider.decide(POLL, Polled::NoSignal, false),
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
        let mut decider = Decider::new(RECONCILE);
        decider.synced(Duration::ZERO, None);
        assert_eq!(
            decider.decide(POLL, Polled::Signal(fingerprint(&db)), false),
            Some(Reason::Changed)
        );
    }
}
