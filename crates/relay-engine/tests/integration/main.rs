//! The engine driven through in-memory fakes of MariaDB and Postfix.
//!
//! The requirements document's unit tests, and where each is covered:
//!
//! | id | document | test |
//! |---|---|---|
//! | UT-001 | DB connect succeeds, list fetched | `ut001_fetched_domains_are_synced` (real DB: relay-db `fetches_enabled_domains`) |
//! | UT-002 | DB connect fails | `ut002_unreachable_database_keeps_configuration` |
//! | UT-003 | query fails (missing table) | `ut003_query_failure_keeps_configuration` |
//! | UT-004 | domain added | `ut004_added_domain_reaches_relay_domains` |
//! | UT-005 | domain disabled/deleted | `ut005_disabled_domain_leaves_relay_domains` |
//! | UT-006 | no change: early return, log | `ut006_no_change_writes_nothing` |
//! | UT-007 | transport lists the new domain | `ut007_transport_gets_a_line_for_the_new_domain` |
//! | UT-008 | postmap after transport update | `ut008_map_is_rebuilt_and_answers_lookups` (real: relay-postfix) |
//! | UT-009 | postfix reload succeeds | `ut009_reload_success_exits_zero` |
//! | UT-010 | postfix reload fails → rollback | `ut010_reload_failure_rolls_back_and_is_critical` |
//! | UT-011 | rollback restores the backup | `ut011_failed_step_restores_previous_files` |
//! | UT-012 | backup before change | `ut012_backup_is_taken_before_any_write` |

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
#![allow(clippy::disallowed_methods)] // Tests set files up by path in their own temporary directories.

mod fakes;
mod map_mode;
mod noted;
mod recipients;
mod recovery;

use std::io::Write;
use std::sync::{Arc, Mutex};

use fakes::{FakePostfix, FakeSource, Op};
use relay_core::{
    GuardSettings, NextHop, Refusal, RelayDomainsMode, StepKind, Transport, BEGIN_MARKER,
    END_MARKER,
};
use relay_engine::{dry_run, run, FailedStep, Outcome, SyncSettings};

const HOP: &str = "smtp:[100.110.222.53]:2525";

pub(crate) fn settings() -> SyncSettings {
    SyncSettings {
        next_hop: NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap(),
        preserve: ["kuma8088.com"]
            .iter()
            .map(|d| relay_core::DomainName::parse(d).unwrap())
            .collect(),
        guard: GuardSettings::default(),
        mode: RelayDomainsMode::Inline,
        reload_pending: false,
        known_rejected: None,
        known_noted: None,
    }
}

pub(crate) fn block(domains: &[&str]) -> String {
    let mut out = format!("{BEGIN_MARKER}\n");
    for d in domains {
        out.push_str(&format!("{d} {HOP}\n"));
    }
    out.push_str(END_MARKER);
    out.push('\n');
    out
}

/// A gateway in step with `a.example` and `b.example`.
pub(crate) fn synced_gateway() -> FakePostfix {
    FakePostfix::new(
        "kuma8088.com, a.example, b.example",
        Some(&format!(
            "# by hand\n{}",
            block(&["a.example", "b.example", "kuma8088.com"])
        )),
    )
}

#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs one sync with the log captured; returns the outcome and the log text.
pub(crate) fn sync(
    source: FakeSource,
    postfix: &FakePostfix,
    settings: &SyncSettings,
) -> (Outcome, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .finish();
    let outcome = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run(settings, &source, postfix))
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    (outcome, log)
}

/// The calls that change something: all but the lookups and reads.
pub(crate) fn writes(postfix: &FakePostfix) -> Vec<String> {
    calls_where(postfix, |c| {
        !c.starts_with("postmap -q") && !c.starts_with("postconf -h")
    })
}

/// The verification's lookups (`postmap -q KEY`).
pub(crate) fn lookups(postfix: &FakePostfix) -> Vec<String> {
    calls_where(postfix, |c| c.starts_with("postmap -q"))
}

fn calls_where(postfix: &FakePostfix, keep: impl Fn(&str) -> bool) -> Vec<String> {
    postfix
        .state()
        .calls
        .into_iter()
        .filter(|c| keep(c))
        .collect()
}

#[test]
fn ut001_fetched_domains_are_synced() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    assert!(
        log.contains("Retrieved 3 domains from DB: a.example, b.example, c.example"),
        "{log}"
    );
}

#[test]
fn ut002_unreachable_database_keeps_configuration() {
    let postfix = synced_gateway();
    let before = postfix.state();
    let (outcome, log) = sync(FakeSource::Unreachable, &postfix, &settings());
    assert!(matches!(outcome, Outcome::DatabaseFailed(_)), "{outcome:?}");
    assert!(
        log.contains("cannot reach MariaDB at 192.0.2.1:3306"),
        "{log}"
    );
    assert!(log.contains("Keeping current configuration"), "{log}");
    assert!(log.contains("===== Sync failed in"), "{log}");
    assert!(postfix.state().calls.is_empty());
    assert_eq!(postfix.state().relay_domains, before.relay_domains);
}

#[test]
fn ut003_query_failure_keeps_configuration() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(FakeSource::MissingTable, &postfix, &settings());
    assert!(matches!(outcome, Outcome::DatabaseFailed(_)), "{outcome:?}");
    assert!(log.contains("doesn't exist"), "{log}");
    assert!(postfix.state().calls.is_empty());
}

#[test]
fn ut004_added_domain_reaches_relay_domains() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "new.example"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{log}");
    assert_eq!(
        postfix.state().relay_domains,
        "a.example, b.example, kuma8088.com, new.example"
    );
    assert!(log.contains("Domain changes detected: +1, -0"), "{log}");
    assert!(log.contains("Added domain: new.example"), "{log}");
}

#[test]
fn ut005_disabled_domain_leaves_relay_domains() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(FakeSource::rows(&["a.example"]), &postfix, &settings());
    assert!(outcome.is_success(), "{log}");
    let state = postfix.state();
    assert_eq!(state.relay_domains, "a.example, kuma8088.com");
    assert!(!state.transport.unwrap().contains("b.example"));
    assert!(log.contains("Removed domain: b.example"), "{log}");
    // The preserved domain stays although the database does not list it.
    assert!(state.relay_domains.contains("kuma8088.com"));
}

#[test]
fn ut006_no_change_writes_nothing() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["B.example", "a.example."]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange), "{outcome:?}");
    assert!(
        log.contains("No changes detected, skipping update"),
        "{log}"
    );
    assert!(writes(&postfix).is_empty(), "{:?}", writes(&postfix));
}

#[test]
fn ut007_transport_gets_a_line_for_the_new_domain() {
    let postfix = synced_gateway();
    sync(
        FakeSource::rows(&["a.example", "b.example", "new.example"]),
        &postfix,
        &settings(),
    );
    let transport = postfix.state().transport.unwrap();
    assert!(transport.starts_with("# by hand\n"), "{transport}");
    assert!(
        transport.contains(&format!("new.example {HOP}\n")),
        "{transport}"
    );
}

#[test]
fn ut008_map_is_rebuilt_and_answers_lookups() {
    let postfix = synced_gateway();
    let (_, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "new.example"]),
        &postfix,
        &settings(),
    );
    assert!(
        log.contains("Postmap successful: hash:/fake/transport"),
        "{log}"
    );
    // The engine verified the new domain through a lookup.
    assert!(postfix
        .state()
        .calls
        .contains(&"postmap -q new.example".to_owned()));

    // A map older than its source is rebuilt even when nothing else changed.
    postfix.0.lock().unwrap().map_fresh = false;
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "new.example"]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}\n{log}");
    assert!(writes(&postfix).iter().any(|c| c == "postmap"));
    assert!(postfix.state().map_fresh);
}

#[test]
fn ut009_reload_success_exits_zero() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(log.contains("Postfix reloaded successfully"), "{log}");
    assert!(log.contains("===== Sync completed in"), "{log}");
}

#[test]
fn ut010_reload_failure_rolls_back_and_is_critical() {
    let postfix = synced_gateway();
    let before = postfix.state();
    postfix.fail(Op::Reload, 1);
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    match &outcome {
        Outcome::Critical { failure, rollback } => {
            assert_eq!(failure.step, FailedStep::Plan(StepKind::Reload));
            assert!(rollback.is_ok(), "{rollback:?}");
        }
        other => panic!("expected Critical, got {other:?}"),
    }
    assert!(matches!(outcome, Outcome::Critical { .. }), "{outcome:?}");
    let after = postfix.state();
    assert_eq!(after.relay_domains, before.relay_domains);
    assert_eq!(after.transport, before.transport);
    assert_eq!(after.map, before.map);
    for line in [
        "Rolling back to previous configuration",
        "Rollback successful",
        "CRITICAL: Manual intervention required",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}

#[test]
fn ut011_failed_step_restores_previous_files() {
    let postfix = synced_gateway();
    let before = postfix.state();
    postfix.fail(Op::SetRelayDomains, 1);
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::ReadFailed(_) | Outcome::RolledBack(_)),
        "{log}"
    );
    let after = postfix.state();
    assert_eq!(after.relay_domains, before.relay_domains);
    assert_eq!(after.transport, before.transport);
    assert_eq!(after.map, before.map);
    assert!(log.contains("Rollback successful"), "{log}");
    assert!(!log.contains("CRITICAL"), "{log}");
}

#[test]
fn ut012_backup_is_taken_before_any_write() {
    let postfix = synced_gateway();
    let before = postfix.state();
    let (_, log) = sync(FakeSource::rows(&["c.example"]), &postfix, &{
        let mut s = settings();
        s.guard.force = true;
        s
    });
    let state = postfix.state();
    assert_eq!(writes(&postfix)[0], "backup");
    assert_eq!(
        state.backups,
        vec![(before.relay_domains.clone(), before.transport.clone())]
    );
    assert!(
        log.contains("Backup created: /fake/backup/relay_domains.20261123-120000.bak"),
        "{log}"
    );
}

#[test]
fn apply_order_is_union_first_removals_last() {
    let postfix = synced_gateway();
    sync(
        FakeSource::rows(&["a.example", "c.example"]),
        &postfix,
        &settings(),
    );
    let calls = writes(&postfix);
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(calls[0], "backup");
    assert!(calls[1].starts_with("write transport"), "{calls:?}");
    assert_eq!(
        calls[2],
        "postconf -e relay_domains = a.example, c.example, kuma8088.com"
    );
    assert_eq!(calls[3], "postfix reload");
    assert!(calls[4].starts_with("write transport"), "{calls:?}");
}

#[test]
fn empty_database_is_refused_and_changes_nothing() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(FakeSource::rows(&[]), &postfix, &settings());
    assert!(
        matches!(
            outcome,
            Outcome::Refused(Refusal::EmptyDatabase { managed: 2 })
        ),
        "{outcome:?}"
    );
    assert!(
        matches!(outcome, Outcome::Refused(_) | Outcome::Unplannable(_)),
        "{outcome:?}"
    );
    assert!(writes(&postfix).is_empty());
    assert!(log.contains("ALLOW_EMPTY=yes"), "{log}");

    let mut allow = settings();
    allow.guard.allow_empty = true;
    allow.guard.force = true;
    let (outcome, _) = sync(FakeSource::rows(&[]), &postfix, &allow);
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(postfix.state().relay_domains, "kuma8088.com");
}

#[test]
fn mass_removal_is_refused_unless_forced() {
    let postfix = FakePostfix::new(
        "a.example, b.example, c.example, d.example",
        Some(&block(&[
            "a.example",
            "b.example",
            "c.example",
            "d.example",
        ])),
    );
    let (outcome, _) = sync(FakeSource::rows(&["a.example"]), &postfix, &settings());
    assert!(
        matches!(
            outcome,
            Outcome::Refused(Refusal::MassRemoval {
                removed: 3,
                managed: 4,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(writes(&postfix).is_empty());
    // Exactly half is allowed at the default 50 %.
    let (outcome, _) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{outcome:?}");
}

#[test]
fn verification_mismatch_rolls_back() {
    let postfix = synced_gateway();
    let before = postfix.state();
    postfix.0.lock().unwrap().lie_after_write = Some("something.else".into());
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    match &outcome {
        Outcome::RolledBack(failure) => assert_eq!(failure.step, FailedStep::Verify),
        other => panic!("expected RolledBack, got {other:?}"),
    }
    // The raw value (not the lying read-back) was restored.
    assert_eq!(
        postfix.0.lock().unwrap().relay_domains,
        before.relay_domains
    );
    assert!(log.contains("not the value just written"), "{log}");
}

#[test]
fn failed_rollback_is_critical() {
    let postfix = synced_gateway();
    let before = postfix.state();
    // The first reload fails, and so does the rollback's.
    postfix.fail(Op::Reload, 2);
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    match &outcome {
        Outcome::Critical { rollback, .. } => assert!(rollback.is_err()),
        other => panic!("expected Critical, got {other:?}"),
    }
    assert!(log.contains("Rollback failed"), "{log}");
    // Files are still restored even though Postfix could not be reloaded.
    assert_eq!(
        postfix.state().relay_domains,
        "kuma8088.com, a.example, b.example"
    );
    // The transport goes back too, although the rollback's reload failed.
    assert_eq!(postfix.state().transport, before.transport);
    assert_eq!(postfix.state().map, before.map);
}

#[test]
fn first_write_failing_changes_nothing_and_exits_five() {
    let postfix = synced_gateway();
    postfix.fail(Op::WriteTransport, 1);
    let (outcome, _) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::ReadFailed(_) | Outcome::RolledBack(_)),
        "{outcome:?}"
    );
    assert_eq!(
        postfix.state().relay_domains,
        "kuma8088.com, a.example, b.example"
    );
}

#[test]
fn backup_failure_changes_nothing() {
    let postfix = synced_gateway();
    postfix.fail(Op::Backup, 1);
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::ReadFailed(_) | Outcome::RolledBack(_)),
        "{outcome:?}"
    );
    assert_eq!(writes(&postfix), vec!["backup"]);
    assert!(log.contains("Nothing was changed"), "{log}");
    // The transport map was built ahead during the backup, and is thrown away unused.
    let state = postfix.state();
    assert_eq!(state.prepared.len(), 1);
    assert!(
        state.prepared[0].0.contains("c.example "),
        "{:?}",
        state.prepared
    );
    assert_eq!(state.prepared[0].1, "-");
    assert_eq!(state.discarded, 1);
}

#[test]
fn hostile_rows_are_logged_escaped_and_skipped() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&[
            "a.example",
            "b.example",
            "evil.example\n[2026-01-01 00:00:00] INFO: forged",
            "x.example smtp:[10.0.0.1]:25",
        ]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange), "{outcome:?}");
    assert!(!log.lines().any(|l| l.starts_with("[2026-01-01")), "{log}");
    assert!(
        log.contains(r#"Invalid domain skipped: "evil.example\n[2026-01-01"#),
        "{log}"
    );
    assert_eq!(log.matches("Invalid domain skipped").count(), 2);
}

#[test]
fn hand_written_line_wins_over_the_managed_block() {
    let postfix = FakePostfix::new("a.example", Some("a.example smtp:[192.0.2.7]:25\n"));
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{log}");
    let transport = postfix.state().transport.unwrap();
    assert!(
        transport.starts_with("a.example smtp:[192.0.2.7]:25\n"),
        "{transport}"
    );
    assert!(
        !transport.contains(&format!("a.example {HOP}")),
        "{transport}"
    );
    assert!(
        log.contains("Domain a.example has a hand-written line"),
        "{log}"
    );
}

#[test]
fn dry_run_only_reads() {
    let postfix = synced_gateway();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (prepared, verdict) = runtime
        .block_on(dry_run(
            &settings(),
            &FakeSource::rows(&["a.example", "c.example"]),
            &postfix,
        ))
        .unwrap();
    assert!(verdict.is_ok());
    assert_eq!(prepared.plan.added.len(), 1);
    assert_eq!(prepared.plan.removed.len(), 1);
    assert!(writes(&postfix).is_empty());
}

/// The map that stays is the one checked: when entries both arrive and leave, the final
/// transport is written after the reload (and the verification that runs during it), so its
/// routes are looked up again.
#[test]
fn the_final_transport_written_after_the_reload_is_verified_too() {
    let postfix = synced_gateway();
    let before = postfix.state();
    // Write 1 is the union (with c.example, verified during the reload); write 2 is the final
    // text, whose map lacks c.example.
    postfix.0.lock().unwrap().map_loses = Some((2, "c.example".into()));
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "c.example", "kuma8088.com"]),
        &postfix,
        &settings(),
    );
    match &outcome {
        Outcome::RolledBack(failure) => assert_eq!(failure.step, FailedStep::Verify, "{log}"),
        other => panic!("expected RolledBack, got {other:?}\n{log}"),
    }
    assert!(log.contains("postmap -q c.example"), "{log}");
    let state = postfix.state();
    assert_eq!(state.relay_domains, before.relay_domains);
    assert_eq!(state.transport, before.transport);
}

/// A good run looks each added route up once per map that carries it: during the reload
/// (the union) and after the final write when one follows; a removal looks nothing up.
#[test]
fn routes_are_looked_up_in_each_map_that_stays_or_serves() {
    // c.example arrives and b.example leaves: union, reload, final.
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "c.example", "kuma8088.com"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{log}");
    assert_eq!(lookups(&postfix), ["postmap -q c.example"; 2]);
    // b.example only leaves: nothing to look up.
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "kuma8088.com"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{log}");
    assert_eq!(lookups(&postfix), Vec::<String>::new());
}

#[test]
fn rollback_mirrors_the_forward_order() {
    // b.example is removed and c.example added; verification fails after the final transport
    // (without b.example) is written. Restoring relay_domains first would relay b.example again
    // with no route, so the rollback writes the union first.
    let postfix = synced_gateway();
    let before = postfix.state();
    postfix.0.lock().unwrap().lie_after_write = Some("something.else".into());
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "c.example", "kuma8088.com"]),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::ReadFailed(_) | Outcome::RolledBack(_)),
        "{log}"
    );
    let calls = writes(&postfix);
    let tail: Vec<&str> = calls
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert!(tail[0].starts_with("write transport"), "{calls:?}");
    assert_eq!(
        tail[1],
        "postconf -e relay_domains = kuma8088.com, a.example, b.example"
    );
    assert_eq!(tail[2], "postfix reload");
    assert!(tail[3].starts_with("write transport"), "{calls:?}");
    let state = postfix.state();
    assert_eq!(state.transport, before.transport);
    assert_eq!(state.map, before.map);
}

/// An earlier run wrote and was stopped before `postfix reload`: the files already match the
/// database, and the run still reloads (so Postfix's processes see the new `relay_domains`)
/// and verifies, writing nothing else. Without the flag the same gateway has nothing to do.
#[test]
fn a_pending_reload_is_done_even_when_the_files_match() {
    let rows = || FakeSource::rows(&["a.example", "b.example"]);
    let postfix = synced_gateway();
    let (outcome, _) = sync(rows(), &postfix, &settings());
    assert!(matches!(outcome, Outcome::NoChange), "{outcome:?}");
    assert_eq!(writes(&postfix), Vec::<String>::new());

    let pending = SyncSettings {
        reload_pending: true,
        ..settings()
    };
    let (outcome, log) = sync(rows(), &postfix, &pending);
    assert!(outcome.is_success(), "{log}");
    assert!(log.contains("stopped before Postfix reloaded"), "{log}");
    // The backup every apply takes, then the reload; the verification looks the routes up.
    assert_eq!(writes(&postfix), ["backup", "postfix reload"]);
}

/// Killed between the reload and the final transport: the transport still has the union's
/// extra route. With a reload pending, Postfix reloads before that route goes, so it never
/// relays the removed domain without it.
#[test]
fn a_pending_reload_comes_before_the_final_transport() {
    let postfix = FakePostfix::new(
        "a.example, kuma8088.com",
        Some(&block(&["a.example", "b.example", "kuma8088.com"])),
    );
    let pending = SyncSettings {
        reload_pending: true,
        ..settings()
    };
    let (outcome, log) = sync(FakeSource::rows(&["a.example"]), &postfix, &pending);
    assert!(outcome.is_success(), "{log}");
    let writes = writes(&postfix);
    assert_eq!(writes[..2], ["backup", "postfix reload"], "{writes:?}");
    assert!(writes[2].starts_with("write transport"), "{writes:?}");
    assert!(!postfix.state().transport.unwrap().contains("b.example"));
}
