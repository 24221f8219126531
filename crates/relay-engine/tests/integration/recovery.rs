//! A failed run's recovery through the real engine: the sync's steps and the recovery's run
//! through the one executor, over the fake Postfix, which records every intermediate state.
//! relay-core's properties check the plans; this checks that what runs is what was planned.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{RelayDomainsMode, StepKind, MAP_HEADER, RECIPIENTS_HEADER};
use relay_engine::{FailedStep, Outcome, SyncSettings};

use crate::fakes::{FakePostfix, FakeSource, State};
use crate::{block, settings, sync};

const DOMAINS: [&str; 4] = ["a.example", "b.example", "c.example", "d.example"];

/// A gateway relay-sync left in step with some domains (inline or map mode, validating or
/// not), and the database of the next run.
#[derive(Debug, Clone)]
struct Gateway {
    relayed: BTreeSet<&'static str>,
    map_before: bool,
    users_before: Option<BTreeSet<String>>,
    database: BTreeSet<&'static str>,
    map_after: bool,
    users_after: Option<BTreeSet<String>>,
}

fn domains() -> impl Strategy<Value = BTreeSet<&'static str>> {
    prop::collection::btree_set(prop::sample::select(DOMAINS.to_vec()), 0..4)
}

fn users() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(
        (
            prop::sample::select(vec!["", "u1", "u2"]),
            prop::sample::select(DOMAINS.to_vec()),
        )
            .prop_map(|(local, domain)| format!("{local}@{domain}")),
        0..6,
    )
}

fn gateway_strategy() -> impl Strategy<Value = Gateway> {
    (
        domains(),
        any::<bool>(),
        prop::option::of(users()),
        domains(),
        any::<bool>(),
        prop::option::of(users()),
    )
        .prop_map(
            |(relayed, map_before, users_before, database, map_after, users_after)| Gateway {
                relayed,
                map_before,
                users_before,
                database,
                map_after,
                users_after,
            },
        )
}

fn table(header: &str, keys: impl Iterator<Item = String>) -> String {
    let mut keys: Vec<String> = keys.collect();
    keys.sort_unstable();
    let mut out = format!("{header}\n");
    for key in keys {
        out.push_str(&format!("{key} OK\n"));
    }
    out
}

impl Gateway {
    /// A fresh fake in the state before the run.
    fn postfix(&self) -> FakePostfix {
        let names: Vec<&str> = self.relayed.iter().copied().collect();
        let relay_domains = if self.map_before {
            "hash:/fake/relay_domains".to_owned()
        } else {
            names.join(", ")
        };
        let postfix = FakePostfix::new(&relay_domains, Some(&block(&names)));
        let mut state = postfix.0.lock().unwrap();
        if self.map_before {
            state.table = Some(table(MAP_HEADER, names.iter().map(|d| d.to_string())));
        }
        if let Some(users) = &self.users_before {
            let at_relayed = users
                .iter()
                .filter(|u| self.relayed.iter().any(|d| u.ends_with(&format!("@{d}"))))
                .cloned();
            state.recipients = Some(table(RECIPIENTS_HEADER, at_relayed));
            state.relay_recipient_maps = "hash:/fake/relay_recipients".into();
            state.running.1 = state.relay_recipient_maps.clone();
        }
        drop(state);
        postfix
    }

    fn source(&self) -> FakeSource {
        let names = self.database.iter().map(|d| d.to_string()).collect();
        match &self.users_after {
            Some(users) => FakeSource::WithRecipients(names, users.iter().cloned().collect()),
            None => FakeSource::Rows(names),
        }
    }

    /// No guard in the way: the order is what is checked, whatever the guard lets through.
    fn settings(&self) -> SyncSettings {
        let mut settings = SyncSettings {
            preserve: BTreeSet::new(),
            mode: if self.map_after {
                RelayDomainsMode::Map
            } else {
                RelayDomainsMode::Inline
            },
            ..settings()
        };
        settings.guard.force = true;
        settings.guard.allow_empty = true;
        settings
    }
}

/// Whether `now` holds what `before` held; a file that did not exist may have come back
/// empty (a table with nothing but its header).
fn same_or_empty(now: &Option<String>, before: &Option<String>) -> bool {
    now == before
        || before.is_none()
            && now
                .as_deref()
                .is_none_or(|text| text.lines().nth(1).is_none())
}

/// Postfix as before the run: parameters, files and built map.
fn as_before(after: &State, before: &State) -> Result<(), TestCaseError> {
    prop_assert_eq!(&after.relay_domains, &before.relay_domains);
    prop_assert_eq!(&after.relay_recipient_maps, &before.relay_recipient_maps);
    prop_assert_eq!(&after.running, &before.running);
    prop_assert!(same_or_empty(&after.transport, &before.transport));
    prop_assert!(same_or_empty(&after.map, &before.map));
    prop_assert!(same_or_empty(&after.table, &before.table));
    if before.recipients.is_some() {
        prop_assert_eq!(&after.recipients, &before.recipients);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A run that fails at any of its changes (each write, rebuild, `postconf -e` and reload,
    /// in turn), or whose verification cannot read back what it wrote, ends with Postfix as it
    /// was; no state it passes through, its own or its recovery's, relays a domain without a
    /// route; a failed reload is critical, anything else rolled back.
    #[test]
    fn prop_a_run_failing_anywhere_leaves_postfix_as_before(gateway in gateway_strategy()) {
        let clean = gateway.postfix();
        let (outcome, _) = sync(gateway.source(), &clean, &gateway.settings());
        // Nothing to do: nothing to fail.
        if !matches!(outcome, Outcome::Applied(_)) {
            prop_assert!(matches!(outcome, Outcome::NoChange), "{outcome:?}");
            return Ok(());
        }
        let changes = clean.state().changes;
        // 1..=changes: that change fails; changes + 1: the verification is blind.
        for failing in 1..=changes + 1 {
            let postfix = gateway.postfix();
            let before = postfix.state();
            {
                let mut state = postfix.0.lock().unwrap();
                if failing <= changes {
                    state.fail_change = Some(failing);
                } else {
                    state.blind_after_change = true;
                }
            }
            let (outcome, log) = sync(gateway.source(), &postfix, &gateway.settings());
            let after = postfix.state();
            for snapshot in &after.snapshots {
                let unrouted = snapshot.unrouted();
                prop_assert!(unrouted.is_empty(), "{unrouted:?} relayed without a route in {snapshot:?}\n{log}");
            }
            match &outcome {
                // A verification with nothing to read back cannot fail.
                Outcome::Applied(_) => prop_assert!(failing > changes, "{log}"),
                Outcome::RolledBack(failure) => {
                    prop_assert_ne!(failure.step, FailedStep::Plan(StepKind::Reload));
                    as_before(&after, &before)?;
                }
                Outcome::Critical { failure, rollback } => {
                    prop_assert_eq!(failure.step, FailedStep::Plan(StepKind::Reload), "{}", log);
                    prop_assert!(rollback.is_ok(), "{log}");
                    as_before(&after, &before)?;
                }
                other => return Err(TestCaseError::fail(format!("{other:?}\n{log}"))),
            }
        }
    }
}
