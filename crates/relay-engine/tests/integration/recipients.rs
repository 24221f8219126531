//! Recipient validation (`RECIPIENTS_QUERY`) through the fakes. The fake Postfix records the
//! state after every change, so each test checks the order on every intermediate state: no
//! address accepted before the run and after it is refused in between.

use relay_core::{StepKind, RECIPIENTS_HEADER};
use relay_engine::{FailedStep, Outcome};

use crate::fakes::{FakePostfix, FakeSource, Op, Snapshot};
use crate::{settings, sync, synced_gateway, writes};

const TABLE: &str = "hash:/fake/relay_recipients";

fn source(domains: &[&str], users: &[&str]) -> FakeSource {
    FakeSource::WithRecipients(
        domains.iter().map(|s| s.to_string()).collect(),
        users.iter().map(|s| s.to_string()).collect(),
    )
}

fn table(keys: &[&str]) -> String {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    let mut out = format!("{RECIPIENTS_HEADER}\n");
    for key in keys {
        out.push_str(&format!("{key} OK\n"));
    }
    out
}

/// A gateway in step with `a.example` and `b.example`, validating `users`.
fn validating_gateway(users: &[&str]) -> FakePostfix {
    let postfix = synced_gateway();
    {
        let mut state = postfix.0.lock().unwrap();
        state.relay_recipient_maps = TABLE.into();
        state.recipients = Some(table(users));
    }
    postfix
}

fn snapshot(postfix: &FakePostfix) -> Snapshot {
    let state = postfix.state();
    Snapshot {
        relay_domains: state.relay_domains,
        relay_recipient_maps: state.relay_recipient_maps,
        recipients: state.recipients,
        ..Snapshot::default()
    }
}

const ADDRESSES: [&str; 8] = [
    "alice@a.example",
    "bob@a.example",
    "carol@b.example",
    "nobody@b.example",
    "dave@c.example",
    "nobody@c.example",
    "x@kuma8088.com",
    "nobody@a.example",
];

/// Runs a sync and checks every state it went through against the one before and after.
fn sync_checked(postfix: &FakePostfix, source: FakeSource) -> (Outcome, String) {
    let before = snapshot(postfix);
    let (outcome, log) = sync(source, postfix, &settings());
    let after = snapshot(postfix);
    for state in &postfix.state().snapshots {
        for address in ADDRESSES {
            if before.accepts(address) && after.accepts(address) {
                assert!(
                    state.accepts(address),
                    "{address} refused in between: {state:?}\n{log}"
                );
            }
        }
    }
    (outcome, log)
}

#[test]
fn turning_on_while_a_domain_arrives_refuses_no_one_who_stays_and_backs_up() {
    let postfix = synced_gateway();
    let (outcome, log) = sync_checked(
        &postfix,
        source(
            &["a.example", "b.example", "c.example"],
            &[
                "Alice@A.example",
                "carol@b.example",
                "dave@c.example",
                "x@elsewhere.example",
            ],
        ),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    let after = snapshot(&postfix);
    assert_eq!(after.relay_recipient_maps, TABLE);
    assert!(after.accepts("alice@a.example") && after.accepts("dave@c.example"));
    assert!(!after.accepts("bob@a.example") && !after.accepts("nobody@c.example"));
    // The preserved domain has no recipient: all its mail is refused, and the run says so.
    assert!(!after.accepts("x@kuma8088.com"));
    assert!(
        log.contains("WARN Relayed domains with no recipient and no catch-all in RECIPIENTS_QUERY (all their mail is refused): kuma8088.com"),
        "{log}"
    );
    assert!(
        log.contains("Recipient validation turns on: 3 recipients in /fake/relay_recipients"),
        "{log}"
    );
    assert!(
        log.contains("Recipient summary: 3 recipients accepted, +3 -0, 0 invalid rows skipped, 0 duplicate rows, 1 at domains not relayed, 1 relayed domains without recipients"),
        "{log}"
    );
    let state = postfix.state();
    assert_eq!(state.recipient_backups.len(), 1);
    assert_eq!(
        state.recipient_backups[0].1, "",
        "relay_recipient_maps before"
    );
    let order: Vec<String> = writes(&postfix)
        .into_iter()
        .filter(|c| !c.starts_with("backup"))
        .collect();
    assert_eq!(
        order,
        [
            "write transport (7 lines)",
            "write recipients map (4 lines)",
            "postconf -e relay_domains = a.example, b.example, c.example, kuma8088.com",
            "postconf -e relay_recipient_maps = hash:/fake/relay_recipients",
            "postfix reload",
        ]
    );
}

#[test]
fn a_user_added_and_one_deleted_arrive_first_and_leave_last() {
    let postfix = validating_gateway(&["alice@a.example", "bob@a.example", "@b.example"]);
    let (outcome, log) = sync_checked(
        &postfix,
        source(
            &["a.example", "b.example"],
            &["alice@a.example", "nobody@a.example", "@b.example"],
        ),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    let after = snapshot(&postfix);
    assert!(after.accepts("nobody@a.example") && !after.accepts("bob@a.example"));
    assert!(after.accepts("carol@b.example"), "catch-all");
    // nobody@ arrives in the union first, bob leaves with the final table; a table change
    // alone needs no reload (Postfix notices a rebuilt table).
    let order: Vec<String> = writes(&postfix)
        .into_iter()
        .filter(|c| !c.starts_with("backup"))
        .collect();
    assert_eq!(
        order,
        [
            "write recipients map (5 lines)",
            "write recipients map (4 lines)"
        ]
    );
    assert!(log.contains("Added recipient: nobody@a.example"), "{log}");
    assert!(log.contains("Removed recipient: bob@a.example"), "{log}");
}

#[test]
fn the_database_failing_keeps_the_table_and_every_known_user() {
    let postfix = validating_gateway(&["alice@a.example"]);
    let (outcome, _) = sync_checked(&postfix, FakeSource::Unreachable);
    assert!(matches!(outcome, Outcome::DatabaseFailed(_)));
    assert!(snapshot(&postfix).accepts("alice@a.example"));
    assert!(writes(&postfix).is_empty());
}

#[test]
fn hostile_recipient_rows_are_reported_and_never_written() {
    let postfix = synced_gateway();
    let (outcome, log) = sync_checked(
        &postfix,
        source(
            &["a.example", "b.example"],
            &[
                "alice@a.example",
                "evil@a.example OK\n@a.example",
                "two@at@a.example",
                "@b.example",
            ],
        ),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    let text = postfix.state().recipients.unwrap();
    assert_eq!(text, table(&["alice@a.example", "@b.example"]));
    assert!(
        log.contains(r#"ERROR Invalid recipient skipped: "evil@a.example OK\n@a.example" (forbidden character ' ')"#),
        "{log}"
    );
    assert!(
        log.contains(r#"ERROR Invalid recipient skipped: "two@at@a.example" (more than one '@')"#),
        "{log}"
    );
}

#[test]
fn turning_off_takes_our_table_out_and_accepts_everyone_again() {
    let postfix = validating_gateway(&["alice@a.example"]);
    postfix.0.lock().unwrap().relay_recipient_maps = format!("hash:/etc/postfix/other, {TABLE}");
    let (outcome, log) = sync_checked(&postfix, FakeSource::rows(&["a.example", "b.example"]));
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    assert_eq!(
        postfix.state().relay_recipient_maps,
        "hash:/etc/postfix/other"
    );
    assert!(log.contains("Recipient validation turns off"), "{log}");
    assert!(
        log.contains("WARN relay_recipient_maps still lists hash:/etc/postfix/other: from now on it alone decides"),
        "{log}"
    );
    // Off again and nothing of ours named: the next run is a no-change run.
    let before = writes(&postfix).len();
    let (outcome, _) = sync(
        FakeSource::rows(&["a.example", "b.example"]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange), "{outcome}");
    assert_eq!(writes(&postfix).len(), before);
}

#[test]
fn an_empty_result_is_refused_while_the_table_has_entries() {
    let postfix = validating_gateway(&["alice@a.example", "bob@a.example"]);
    let (outcome, log) = sync_checked(&postfix, source(&["a.example", "b.example"], &[]));
    assert!(
        matches!(
            outcome,
            Outcome::Refused(relay_core::Refusal::EmptyRecipients { entries: 2, .. })
        ),
        "{outcome}\n{log}"
    );
    assert!(writes(&postfix).is_empty());
}

#[test]
fn a_failed_reload_restores_the_table_and_the_parameter() {
    let postfix = synced_gateway();
    postfix.fail(Op::Reload, 1);
    // Not checked step by step: a failed run's in-between states are its target's.
    let (outcome, log) = sync(
        source(
            &["a.example", "b.example"],
            &["alice@a.example", "@b.example"],
        ),
        &postfix,
        &settings(),
    );
    let Outcome::Critical { failure, rollback } = &outcome else {
        panic!("{outcome}\n{log}");
    };
    assert_eq!(failure.step, FailedStep::Plan(StepKind::Reload));
    assert!(rollback.is_ok(), "{log}");
    let state = postfix.state();
    assert_eq!(state.relay_recipient_maps, "", "turned off again");
    assert!(snapshot(&postfix).accepts("nobody@a.example"));
}

#[test]
fn without_the_feature_or_a_table_of_ours_postfix_is_asked_nothing_new() {
    let postfix = synced_gateway();
    postfix.0.lock().unwrap().relay_recipient_maps = "hash:/etc/postfix/operator".into();
    let (outcome, log) = sync(
        FakeSource::rows(&["a.example", "b.example", "c.example"]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    let calls = postfix.state().calls;
    assert!(!calls.iter().any(|c| c.contains("recipient")), "{calls:?}");
    assert!(!log.contains("ecipient"), "{log}");
    assert_eq!(
        postfix.state().relay_recipient_maps,
        "hash:/etc/postfix/operator"
    );
}

#[test]
fn a_table_someone_else_wrote_at_recipients_map_is_refused_and_kept() {
    let postfix = synced_gateway();
    {
        let mut state = postfix.0.lock().unwrap();
        state.relay_recipient_maps = TABLE.into();
        state.recipients = Some("postmaster@a.example OK\n".into());
    }
    let (outcome, log) = sync(
        source(&["a.example", "b.example"], &["alice@a.example"]),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::Unplannable(_)),
        "{outcome}\n{log}"
    );
    assert!(log.contains("was not written by relay-sync"), "{log}");
    assert!(writes(&postfix).is_empty());
    assert_eq!(
        postfix.state().recipients.as_deref(),
        Some("postmaster@a.example OK\n")
    );
}

#[test]
fn a_stale_table_is_rebuilt_from_its_source_before_entries_leave() {
    let postfix = validating_gateway(&["alice@a.example", "bob@a.example", "@b.example"]);
    postfix.0.lock().unwrap().recipients_stale = true;
    let (outcome, log) = sync_checked(
        &postfix,
        source(
            &["a.example", "b.example"],
            &["alice@a.example", "@b.example"],
        ),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    let order: Vec<String> = writes(&postfix)
        .into_iter()
        .filter(|c| !c.starts_with("backup"))
        .collect();
    assert_eq!(
        order,
        [
            "write recipients map (4 lines)",
            "write recipients map (3 lines)"
        ]
    );
}

#[test]
fn a_failed_run_leaves_a_superset_where_the_table_had_no_source() {
    // The parameter names the table but its source is gone (the database still serves).
    let postfix = synced_gateway();
    {
        let mut state = postfix.0.lock().unwrap();
        state.relay_recipient_maps = TABLE.into();
        state.recipients = None;
    }
    postfix.fail(Op::Reload, 1);
    let (outcome, log) = sync(
        source(
            &["a.example", "b.example", "c.example"],
            &["alice@a.example", "@b.example"],
        ),
        &postfix,
        &settings(),
    );
    assert!(
        matches!(outcome, Outcome::Critical { .. }),
        "{outcome}\n{log}"
    );
    let table = postfix.state().recipients.unwrap();
    assert!(table.contains("\nalice@a.example OK\n"), "{table}");
    assert_eq!(postfix.state().relay_recipient_maps, TABLE);
}

#[test]
fn domains_relayed_through_other_tokens_are_named_in_a_warning() {
    let postfix = FakePostfix::new(
        "$mydestination, hash:/etc/postfix/relay_extra, a.example, kuma8088.com",
        Some(&crate::block(&["a.example", "kuma8088.com"])),
    );
    let (outcome, log) = sync(
        source(&["a.example"], &["alice@a.example", "@kuma8088.com"]),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome}\n{log}");
    assert!(
        log.contains("WARN relay_domains also relays through hash:/etc/postfix/relay_extra; RECIPIENTS_MAP lists no address"),
        "{log}"
    );
    assert!(!log.contains("through $mydestination"), "{log}");
}

#[test]
fn a_query_that_rejects_every_row_logs_the_first_hundred_and_counts_the_rest() {
    let postfix = validating_gateway(&["alice@a.example"]);
    let mut users: Vec<String> = (0..250).map(|i| format!("user name {i}")).collect();
    users.push("alice@a.example".into());
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let (outcome, log) = sync(
        source(&["a.example", "b.example"], &users),
        &postfix,
        &settings(),
    );
    assert!(matches!(outcome, Outcome::NoChange), "{outcome}\n{log}");
    assert_eq!(
        log.matches("Invalid recipient skipped: \"user name")
            .count(),
        100,
        "{log}"
    );
    assert!(
        log.contains("Invalid recipient skipped: … (+150 more)"),
        "{log}"
    );
}
