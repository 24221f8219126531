//! The recovery of a failed sync (`RecoveryPlan`), case by case: each rule the module
//! documentation states, as an operator would read the steps. The properties in `props.rs`
//! check it at every failure point of every plan.

use std::collections::BTreeSet;

use relay_core::{
    apply_steps, DomainName, NextHop, Plan, PlanInput, PreRun, Recipient, RecipientsTable,
    RecoveryPlan, RelayDomainsMode, RelayDomainsTable, Step, Transport, TransportFile,
};

use crate::model::{RECIPIENTS, TABLE};

const HOP: &str = "smtp:[192.0.2.1]:25";

fn hop() -> NextHop {
    NextHop::new(Transport::Smtp, "192.0.2.1", 25).unwrap()
}

fn names(list: &[&str]) -> BTreeSet<DomainName> {
    list.iter().map(|d| DomainName::parse(d).unwrap()).collect()
}

/// A transport file whose managed block routes `domains`.
fn block(domains: &[&str]) -> String {
    TransportFile::parse("")
        .unwrap()
        .render(domains.iter().map(|d| (*d, HOP)))
}

/// An inline gateway before a run.
fn inline<'a>(relay_domains: &'a str, transport: &'a str) -> PreRun<'a> {
    PreRun {
        relay_domains,
        transport: Some(transport),
        ..PreRun::default()
    }
}

fn plan(before: &PreRun<'_>, database: &[&str], mode: RelayDomainsMode) -> Plan {
    Plan::with_mode(
        PlanInput {
            database: &names(database),
            preserve: &BTreeSet::new(),
            relay_domains: before.relay_domains,
            transport: before.transport,
            next_hop: &hop(),
        },
        mode,
        Some(RelayDomainsTable::new(
            "hash",
            TABLE,
            before.relay_domains_map,
        )),
    )
    .unwrap()
}

/// The recovery's steps as an operator would read them, texts by their keys.
fn describe(steps: &[Step<'_>]) -> String {
    let keys = |text: &str| {
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(' ').next())
            .collect();
        format!("[{}]", keys.join(" "))
    };
    let mut out = String::new();
    for step in steps {
        let line = match step {
            Step::WriteTransport(text) => format!("write transport {}", keys(text)),
            Step::RebuildTransportMap => "postmap transport".to_owned(),
            Step::WriteRelayDomainsMap(text) => format!("write table {}", keys(text)),
            Step::WriteRecipientsMap(text) => format!("write recipients {}", keys(text)),
            Step::SetRelayDomains(value) => format!("postconf -e relay_domains = {value}"),
            Step::SetRelayRecipientMaps(value) => {
                format!("postconf -e relay_recipient_maps = {value}")
            }
            Step::Reload => "postfix reload".to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn a_failed_first_write_leaves_nothing_to_restore() {
    // b.example leaves, and the transport map is older than its source.
    let transport = block(&["a.example", "b.example"]);
    let before = inline("a.example, b.example", &transport);
    let plan = plan(&before, &["a.example"], RelayDomainsMode::Inline);
    let steps = apply_steps(&plan, false);
    assert_eq!(
        steps[..2],
        [
            Step::RebuildTransportMap,
            Step::SetRelayDomains("a.example")
        ]
    );
    // The rebuild completed, `postconf -e` failed: nothing changed.
    assert!(RecoveryPlan::new(&plan, before, &steps[..1]).is_empty());
    assert!(RecoveryPlan::new(&plan, before, &[]).steps().is_empty());
}

#[test]
fn the_union_transport_goes_in_before_the_old_relay_domains() {
    // b.example leaves and c.example arrives; the final transport (without b) is written and
    // then the verification fails.
    let transport = block(&["a.example", "b.example"]);
    let before = inline("a.example, b.example", &transport);
    let plan = plan(
        &before,
        &["a.example", "c.example"],
        RelayDomainsMode::Inline,
    );
    let steps = apply_steps(&plan, true);
    let recovery = RecoveryPlan::new(&plan, before, &steps);
    insta::assert_snapshot!(describe(&recovery.steps()), @r"
    write transport [a.example b.example c.example]
    postconf -e relay_domains = a.example, b.example
    postfix reload
    write transport [a.example b.example]
    ");
}

#[test]
fn a_transport_only_change_still_reloads() {
    // The next hop changes, nothing else.
    let transport = TransportFile::parse("")
        .unwrap()
        .render([("a.example", "smtp:[192.0.2.9]:25")]);
    let before = inline("a.example", &transport);
    let plan = plan(&before, &["a.example"], RelayDomainsMode::Inline);
    let steps = apply_steps(&plan, true);
    let recovery = RecoveryPlan::new(&plan, before, &steps);
    assert_eq!(
        recovery.steps(),
        [Step::WriteTransport(&transport), Step::Reload]
    );
}

#[test]
fn a_failed_switch_to_map_mode_keeps_the_table_until_relay_domains_is_back() {
    // Inline with a.example; the switch wrote the table and relay_domains, then the reload
    // failed. An empty table while main.cf names it would refuse a.example's mail.
    let transport = block(&["a.example"]);
    let before = inline("a.example", &transport);
    let plan = plan(&before, &["a.example"], RelayDomainsMode::Map);
    let steps = apply_steps(&plan, true);
    assert_eq!(steps.last(), Some(&Step::Reload));
    let recovery = RecoveryPlan::new(&plan, before, &steps[..steps.len() - 1]);
    insta::assert_snapshot!(describe(&recovery.steps()), @r"
    write table [a.example]
    postconf -e relay_domains = a.example
    postfix reload
    write table []
    ");
}

#[test]
fn a_map_mode_change_holds_old_and_new_domains_in_the_table_until_the_reload() {
    let old_table = RelayDomainsTable::render(["a.example", "b.example"]);
    let transport = block(&["a.example", "b.example"]);
    let value = format!("hash:{TABLE}");
    let before = PreRun {
        relay_domains: &value,
        transport: Some(&transport),
        relay_domains_map: Some(&old_table),
        ..PreRun::default()
    };
    let plan = plan(&before, &["a.example", "c.example"], RelayDomainsMode::Map);
    let steps = apply_steps(&plan, true);
    let recovery = RecoveryPlan::new(&plan, before, &steps);
    insta::assert_snapshot!(describe(&recovery.steps()), @r"
    write transport [a.example b.example c.example]
    write table [a.example b.example c.example]
    postfix reload
    write table [a.example b.example]
    write transport [a.example b.example]
    ");
}

fn users(list: &[&str]) -> BTreeSet<Recipient> {
    list.iter().map(|u| Recipient::parse(u).unwrap()).collect()
}

/// A validating gateway relaying a.example, whose table holds `old` (or has no source), and
/// a run to `new`.
fn recipients_recovery(old: Option<&str>, new: &[&str]) -> String {
    let transport = block(&["a.example"]);
    let maps = format!("hash:{RECIPIENTS}");
    let before = PreRun {
        relay_domains: "a.example",
        transport: Some(&transport),
        relay_recipient_maps: &maps,
        recipients_map: old,
        ..PreRun::default()
    };
    let relayed = names(&["a.example"]);
    let plan = plan(&before, &["a.example"], RelayDomainsMode::Inline)
        .with_recipients(
            Some(&users(new)),
            &relayed,
            RecipientsTable::new("hash", RECIPIENTS, old),
            &maps,
        )
        .unwrap();
    let steps = apply_steps(&plan, true);
    describe(&RecoveryPlan::new(&plan, before, &steps).steps())
}

#[test]
fn recipients_go_back_through_the_union_and_the_old_table_follows_the_reload() {
    let old = RecipientsTable::render(["u1@a.example", "u2@a.example"]);
    insta::assert_snapshot!(recipients_recovery(Some(&old), &["u1@a.example", "u3@a.example"]), @r"
    write recipients [u1@a.example u2@a.example u3@a.example]
    postfix reload
    write recipients [u1@a.example u2@a.example]
    ");
    // A table without a source keeps what the run wrote: an empty one would refuse everyone
    // while relay_recipient_maps names it.
    insta::assert_snapshot!(recipients_recovery(None, &["u1@a.example"]), @r"
    write recipients [u1@a.example]
    postfix reload
    ");
}
