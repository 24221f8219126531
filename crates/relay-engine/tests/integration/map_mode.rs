//! Map mode (`RELAY_DOMAINS_MODE=map`) through the fakes: the table, switching modes, backup
//! and rollback.

use relay_core::{RelayDomainsMode, StepKind, MAP_HEADER};
use relay_engine::{FailedStep, Outcome, SyncSettings};

use crate::fakes::{FakePostfix, FakeSource, Op};
use crate::{block, settings, sync, synced_gateway, writes};

fn map_settings() -> SyncSettings {
    SyncSettings {
        mode: RelayDomainsMode::Map,
        ..settings()
    }
}

fn table(domains: &[&str]) -> String {
    let mut out = format!("{MAP_HEADER}\n");
    for d in domains {
        out.push_str(&format!("{d} OK\n"));
    }
    out
}

/// A gateway in map mode, in step with `a.example` and `b.example`.
fn map_gateway() -> FakePostfix {
    let postfix = FakePostfix::new(
        "$mydestination, hash:/fake/relay_domains",
        Some(&block(&["a.example", "b.example", "kuma8088.com"])),
    );
    postfix.0.lock().unwrap().table = Some(table(&["a.example", "b.example", "kuma8088.com"]));
    postfix
}

#[test]
fn switching_to_map_mode_moves_the_domains_into_the_table_and_backs_up() {
    let postfix = synced_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(outcome.is_success(), "{log}");
    let state = postfix.state();
    assert_eq!(state.relay_domains, "hash:/fake/relay_domains");
    assert_eq!(
        state.table.as_deref(),
        Some(table(&["a.example", "b.example", "kuma8088.com"]).as_str())
    );
    assert!(log.contains("Domain changes detected: +0, -0"), "{log}");
    // The table is written before relay_domains names it.
    assert_eq!(
        writes(&postfix),
        [
            "backup",
            "write relay_domains map (4 lines)",
            "postconf -e relay_domains = hash:/fake/relay_domains",
            "postfix reload",
        ]
    );
    assert_eq!(state.backups.len(), 1);

    // Converged: the next run in map mode changes nothing.
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange), "{log}");
}

#[test]
fn switching_back_to_inline_lists_every_domain_and_backs_up_the_table() {
    let postfix = map_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &settings(),
    );
    assert!(outcome.is_success(), "{log}");
    let state = postfix.state();
    assert_eq!(
        state.relay_domains,
        "$mydestination, a.example, b.example, kuma8088.com"
    );
    assert_eq!(state.table_backups.len(), 1);
    assert!(
        log.contains("relay_domains_map.20261123-120000.bak"),
        "{log}"
    );
    assert!(log.contains("Domain changes detected: +0, -0"), "{log}");
}

#[test]
fn a_one_domain_change_in_map_mode_leaves_main_cf_alone() {
    let postfix = map_gateway();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(outcome.is_success(), "{log}");
    let calls = writes(&postfix);
    assert!(
        !calls.iter().any(|c| c.starts_with("postconf -e")),
        "{calls:?}"
    );
    assert_eq!(
        calls,
        [
            "backup",
            "backup relay_domains map",
            "write transport (6 lines)",
            "write relay_domains map (5 lines)",
            "postfix reload",
        ]
    );
    let state = postfix.state();
    assert!(state.table.as_ref().unwrap().contains("c.example OK\n"));
    assert!(log.contains("Added domain: c.example"), "{log}");
    // Both maps were built ahead, together, from exactly the texts then written.
    assert_eq!(
        state.prepared,
        [(
            state.transport.clone().unwrap(),
            state.table.clone().unwrap()
        )]
    );
}

#[test]
fn a_removal_in_map_mode_builds_the_final_transport_ahead_of_the_reload() {
    let postfix = map_gateway();
    let (outcome, log) = sync(FakeSource::rows(&["a.example"]), &postfix, &map_settings());
    assert!(outcome.is_success(), "{log}");
    assert_eq!(
        writes(&postfix),
        [
            "backup",
            "backup relay_domains map",
            "write relay_domains map (3 lines)",
            "postfix reload",
            "write transport (4 lines)",
        ]
    );
    let state = postfix.state();
    assert_eq!(
        state.prepared,
        [(
            state.transport.clone().unwrap(),
            state.table.clone().unwrap()
        )]
    );
    assert_eq!(state.discarded, 1);
}

#[test]
fn no_change_in_map_mode_writes_nothing_and_a_stale_table_is_rebuilt() {
    let postfix = map_gateway();
    let (outcome, _) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange));
    assert!(writes(&postfix).is_empty());

    postfix.0.lock().unwrap().table_stale = true;
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(outcome.is_success(), "{log}");
    assert!(writes(&postfix).contains(&"write relay_domains map (4 lines)".to_owned()));
}

#[test]
fn a_failed_reload_in_map_mode_restores_the_table() {
    let postfix = map_gateway();
    let before = postfix.state();
    postfix.fail(Op::Reload, 1);
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "c.example"]),
        &postfix,
        &map_settings(),
    );
    match &outcome {
        Outcome::Critical { failure, rollback } => {
            assert_eq!(failure.step, FailedStep::Plan(StepKind::Reload));
            assert!(rollback.is_ok(), "{rollback:?}");
        }
        other => panic!("expected Critical, got {other:?}\n{log}"),
    }
    let after = postfix.state();
    assert_eq!(after.table, before.table);
    assert_eq!(after.transport, before.transport);
    assert_eq!(after.relay_domains, before.relay_domains);
}

#[test]
fn a_failed_table_write_changes_nothing_else() {
    let postfix = map_gateway();
    postfix.fail(Op::WriteRelayDomainsMap, 1);
    let before = postfix.state();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &map_settings(),
    );
    assert!(
        matches!(outcome, Outcome::ReadFailed(_) | Outcome::RolledBack(_)),
        "{log}"
    );
    let after = postfix.state();
    assert_eq!(after.table, before.table);
    assert_eq!(after.transport, before.transport);
    assert!(log.contains("relay domains map update failed"), "{log}");
}

#[test]
fn mass_removal_through_the_table_is_refused() {
    let postfix = map_gateway();
    let (outcome, log) = sync(FakeSource::rows(&["z.example"]), &postfix, &map_settings());
    assert!(
        matches!(outcome, Outcome::Refused(_) | Outcome::Unplannable(_)),
        "{log}"
    );
    assert!(writes(&postfix).is_empty());
}
