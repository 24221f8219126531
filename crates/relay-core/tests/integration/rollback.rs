//! Rolling back to a backup generation (`RollbackPlan`): the invariant of a sync holds at every
//! step, the end state is the generation's, and the lines outside the managed block end as the
//! generation has them.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{
    DomainName, GenerationTexts, RecipientsRollback, RelayDomains, RelayDomainsTable,
    RollbackInput, RollbackPlan, RollbackPlanError, Step, TableRestore, TransportFile,
};

use crate::model::{addresses, outside_block, postfix_strategy, Postfix as State, TABLE};
use crate::strategies::{
    domain_set_strategy, hand_line_strategy, preserved_token_strategy, routed_transport,
};

/// A state a sync could have left, in inline or map mode, where every relayed domain has a
/// route: some by hand-written lines, the rest in the managed block. Map mode's table may be
/// left over (not named) in inline mode.
fn state_strategy() -> impl Strategy<Value = State> {
    (
        prop::collection::vec(preserved_token_strategy(), 0..2),
        domain_set_strategy(),
        any::<bool>(),
        prop::option::of(domain_set_strategy()),
        prop::collection::vec(hand_line_strategy(), 0..4),
        prop::collection::vec(hand_line_strategy(), 0..3),
        any::<u8>(),
    )
        .prop_map(|(tokens, domains, map, leftover, before, after, split)| {
            let (relay, table) = if map {
                let mut tokens = tokens;
                tokens.push(format!("hash:{TABLE}"));
                let relay = RelayDomains {
                    preserved_tokens: tokens,
                    domains: BTreeSet::new(),
                };
                (relay, Some(RelayDomainsTable::render(&domains)))
            } else {
                let relay = RelayDomains {
                    preserved_tokens: tokens,
                    domains: domains.clone(),
                };
                (relay, leftover.map(|set| RelayDomainsTable::render(&set)))
            };
            let text = routed_transport(&domains, &before, &after, split);
            State {
                relay_domains: relay.render(),
                transport: Some(text),
                table,
                ..State::default()
            }
            .reloaded()
        })
}

/// A generation: a state, whose copy of the table may be missing.
fn generation_strategy() -> impl Strategy<Value = (State, bool)> {
    (state_strategy(), any::<bool>())
}

fn plan(current: &State, generation: &State) -> Result<RollbackPlan, RollbackPlanError> {
    RollbackPlan::new(RollbackInput {
        current_transport: current.transport.as_deref(),
        current_table: current.table.as_deref(),
        table_path: TABLE,
        generation: GenerationTexts {
            relay_domains: &generation.relay_domains,
            transport: generation.transport.as_deref().unwrap_or(""),
            table: generation.table.as_deref(),
        },
    })
}

/// The generation as a backup holds it: without its table when `copy` is false.
fn backed_up(generation: &State, copy: bool) -> State {
    State {
        table: generation.table.clone().filter(|_| copy),
        ..generation.clone()
    }
}

/// The plan, or `None` after checking that a refusal names keys nothing routes.
fn plan_or_refusal(
    current: &State,
    generation: &State,
) -> Result<Option<RollbackPlan>, TestCaseError> {
    match plan(current, generation) {
        Ok(plan) => Ok(Some(plan)),
        Err(RollbackPlanError::KeptTableUnrouted { domains, .. }) => {
            for key in &domains {
                let key = DomainName::parse(key).unwrap();
                prop_assert!(!current.routes(&key) && !generation.routes(&key));
            }
            prop_assert!(generation.table.is_none());
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!("unexpected refusal: {other}"))),
    }
}

proptest! {
    #[test]
    fn prop_rollback_keeps_every_relayed_domain_routed_at_every_step(
        current in state_strategy(),
        (generation, copy) in generation_strategy(),
    ) {
        let generation = backed_up(&generation, copy);
        let Some(plan) = plan_or_refusal(&current, &generation)? else { return Ok(()) };
        let mut state = current.clone();
        for step in plan.steps() {
            state.step(step);
            let unrouted = state.unrouted();
            prop_assert!(unrouted.is_empty(), "{:?} have no route after {:?}", unrouted, step);
        }
    }

    #[test]
    fn prop_rollback_ends_in_the_generation(
        current in state_strategy(),
        (generation, copy) in generation_strategy(),
    ) {
        let backup = backed_up(&generation, copy);
        let Some(plan) = plan_or_refusal(&current, &backup)? else { return Ok(()) };
        let mut state = current.clone();
        for step in plan.steps() {
            state.step(step);
        }
        prop_assert_eq!(&state.relay_domains, &generation.relay_domains);
        let names_table = RelayDomains::parse(&generation.relay_domains)
            .map(|rd| rd.preserved_tokens.iter().any(|t| t.ends_with(TABLE)))
            .unwrap();
        match plan.table {
            TableRestore::FromCopy => {
                prop_assert!(names_table && copy);
                prop_assert_eq!(&state.table, &generation.table);
                prop_assert_eq!(&state.transport, &generation.transport);
                prop_assert_eq!(state.relayed(), generation.relayed());
            }
            TableRestore::NotNamed => {
                prop_assert!(!names_table);
                prop_assert_eq!(&state.table, &current.table);
                prop_assert_eq!(&state.transport, &generation.transport);
                prop_assert_eq!(state.relayed(), generation.relayed());
            }
            TableRestore::KeptWithoutCopy => {
                prop_assert!(names_table && !copy);
                prop_assert_eq!(&state.table, &current.table);
                // The generation's file, plus the current routes of the kept table's keys.
                let kept: BTreeSet<DomainName> = plan.kept_routes.iter()
                    .map(|k| DomainName::parse(k).unwrap()).collect();
                let end = TransportFile::parse(state.transport.as_deref().unwrap()).unwrap();
                let old = TransportFile::parse(generation.transport.as_deref().unwrap()).unwrap();
                for domain in state.relayed() {
                    prop_assert!(end.has_entry(domain.as_str()));
                    prop_assert_eq!(
                        old.has_entry(domain.as_str()),
                        !kept.contains(&domain),
                        "{}", domain
                    );
                }
                if kept.is_empty() {
                    prop_assert_eq!(&state.transport, &generation.transport);
                }
            }
        }
    }

    #[test]
    fn prop_rollback_keeps_lines_outside_the_block_as_the_generation_has_them(
        current in state_strategy(),
        (generation, copy) in generation_strategy(),
    ) {
        let backup = backed_up(&generation, copy);
        let Some(plan) = plan_or_refusal(&current, &backup)? else { return Ok(()) };
        let wanted = outside_block(generation.transport.as_deref().unwrap());
        for step in plan.steps() {
            if let Step::WriteTransport(text) = step {
                prop_assert_eq!(outside_block(text), wanted.clone());
            }
        }
    }

    #[test]
    fn prop_rollback_from_a_broken_current_file_keeps_its_routes(
        current in state_strategy(),
        (generation, copy) in generation_strategy(),
        cut in any::<bool>(),
    ) {
        // The END marker lost (an unclosed block), or the block's markers doubled.
        let text = current.transport.clone().unwrap();
        let broken = if cut {
            text.replace("# END relay-sync managed block\n", "")
        } else {
            format!("{text}{text}")
        };
        prop_assume!(TransportFile::parse(&broken).is_err());
        let current = State { transport: Some(broken), ..current };
        let backup = backed_up(&generation, copy);
        let Some(plan) = plan_or_refusal(&current, &backup)? else { return Ok(()) };
        let first = match plan.steps()[0] {
            Step::WriteTransport(text) => TransportFile::parse(text).unwrap(),
            other => return Err(TestCaseError::fail(format!("first step {other:?}"))),
        };
        for domain in current.relayed_by(&current.relay_domains) {
            prop_assert!(first.has_entry(domain.as_str()), "{} lost its route", domain);
        }
    }

    /// A rollback with recipient validation's side (a generation that holds it), between any
    /// two gateways of the small world: at every instant every relayed domain has a route and
    /// an address both accept is accepted; at the end Postfix holds the generation's values.
    #[test]
    fn prop_rollback_with_recipients_keeps_routes_and_addresses(
        current in postfix_strategy(),
        generation in postfix_strategy(),
        (copy, recipients_copy) in (any::<bool>(), any::<bool>()),
    ) {
        let backup = State {
            recipients: generation.recipients.clone().filter(|_| recipients_copy),
            ..backed_up(&generation, copy)
        };
        let Some(plan) = plan_or_refusal(&current, &backup)? else { return Ok(()) };
        let plan = plan.with_recipients(RecipientsRollback {
            relay_recipient_maps: &backup.relay_recipient_maps,
            table: backup.recipients.as_deref(),
            current_table: current.recipients.as_deref(),
        });
        let mut end = current.clone();
        for step in plan.steps() {
            end.step(step);
        }
        let addresses = addresses();
        let kept: Vec<&String> = addresses
            .iter()
            .filter(|a| current.accepts(a) && end.accepts(a))
            .collect();
        let mut state = current.clone();
        for step in plan.steps() {
            state.step(step);
            let unrouted = state.unrouted();
            prop_assert!(unrouted.is_empty(), "{:?} have no route after {:?}", unrouted, step);
            for address in &kept {
                prop_assert!(state.accepts(address), "{} refused after {:?}", address, step);
            }
        }
        prop_assert_eq!(&end.relay_domains, &generation.relay_domains);
        prop_assert_eq!(&end.relay_recipient_maps, &generation.relay_recipient_maps);
        prop_assert_eq!(&end.running, &(end.relay_domains.clone(), end.relay_recipient_maps.clone()));
        // A generation without a copy of the table leaves it as it is.
        match &backup.recipients {
            Some(table) => prop_assert_eq!(end.recipients.as_ref(), Some(table)),
            None => prop_assert_eq!(&end.recipients, &current.recipients),
        }
        // Where the generation's table came back too, it accepts what the generation did.
        if copy && recipients_copy {
            for address in &addresses {
                prop_assert_eq!(end.accepts(address), generation.accepts(address), "{}", address);
            }
        }
    }
}

fn state(relay_domains: &str, transport: &str, table: Option<&str>) -> State {
    State {
        relay_domains: relay_domains.to_owned(),
        transport: Some(transport.to_owned()),
        table: table.map(str::to_owned),
        ..State::default()
    }
    .reloaded()
}

/// The steps as an operator would read them.
fn describe(plan: &RollbackPlan) -> String {
    let mut out = String::new();
    for step in plan.steps() {
        match step {
            Step::WriteTransport(text) => out.push_str(&format!("write transport:\n{text}")),
            Step::WriteRelayDomainsMap(text) => out.push_str(&format!("write table:\n{text}")),
            Step::SetRelayDomains(value) => {
                out.push_str(&format!("postconf -e relay_domains = {value}\n"))
            }
            Step::Reload => out.push_str("postfix reload\n"),
            Step::RebuildTransportMap => out.push_str("postmap transport\n"),
            Step::WriteRecipientsMap(text) => out.push_str(&format!("write recipients:\n{text}")),
            Step::SetRelayRecipientMaps(value) => {
                out.push_str(&format!("postconf -e relay_recipient_maps = {value}\n"))
            }
        }
    }
    out.push_str(&format!(
        "table: {:?}, kept routes: {:?}\n",
        plan.table, plan.kept_routes
    ));
    out
}

const HOP: &str = "smtp:[100.110.222.53]:2525";

fn block(domains: &[&str]) -> String {
    let mut out = "# BEGIN relay-sync managed block: edits inside are overwritten\n".to_owned();
    for d in domains {
        out.push_str(&format!("{d} {HOP}\n"));
    }
    out.push_str("# END relay-sync managed block\n");
    out
}

#[test]
fn inline_rollback_keeps_a_leaving_domain_routed_until_the_reload() {
    let current = state(
        "$mydestination, a.example, fresh.example",
        &format!(
            "# mine\nlocal.other relay:[192.0.2.7]\n{}",
            block(&["a.example", "fresh.example"])
        ),
        None,
    );
    let generation = state(
        "$mydestination, a.example",
        &format!("# mine\n{}", block(&["a.example"])),
        None,
    );
    let plan = plan(&current, &generation).unwrap();
    insta::assert_snapshot!(describe(&plan), @r"
    write transport:
    # mine
    # BEGIN relay-sync managed block: edits inside are overwritten
    a.example smtp:[100.110.222.53]:2525
    fresh.example smtp:[100.110.222.53]:2525
    local.other relay:[192.0.2.7]
    # END relay-sync managed block
    postconf -e relay_domains = $mydestination, a.example
    postfix reload
    write transport:
    # mine
    # BEGIN relay-sync managed block: edits inside are overwritten
    a.example smtp:[100.110.222.53]:2525
    # END relay-sync managed block
    table: NotNamed, kept routes: []
    ");
}

#[test]
fn map_mode_rollback_restores_the_table_between_the_union_and_relay_domains() {
    let names = |list: &[&str]| -> BTreeSet<DomainName> {
        list.iter().map(|d| DomainName::parse(d).unwrap()).collect()
    };
    let current = state(
        &format!("$mydestination, hash:{TABLE}"),
        &block(&["a.example", "fresh.example"]),
        Some(&RelayDomainsTable::render(&names(&[
            "a.example",
            "fresh.example",
        ]))),
    );
    let generation = state(
        &format!("$mydestination, lmdb:{TABLE}"),
        &block(&["a.example"]),
        Some(&RelayDomainsTable::render(&names(&["a.example"]))),
    );
    let plan = plan(&current, &generation).unwrap();
    insta::assert_snapshot!(describe(&plan), @r"
    write transport:
    # BEGIN relay-sync managed block: edits inside are overwritten
    a.example smtp:[100.110.222.53]:2525
    fresh.example smtp:[100.110.222.53]:2525
    # END relay-sync managed block
    write table:
    # relay-sync: this table is rewritten from the database on every change; edits are overwritten
    a.example OK
    postconf -e relay_domains = $mydestination, lmdb:/etc/postfix/relay_domains
    postfix reload
    write transport:
    # BEGIN relay-sync managed block: edits inside are overwritten
    a.example smtp:[100.110.222.53]:2525
    # END relay-sync managed block
    table: FromCopy, kept routes: []
    ");
}

/// The state before relay-sync's first sync relayed by DNS: it is restored as it was, and
/// nothing needs a union (the current file routes what it does not, until the last step).
#[test]
fn a_generation_without_routes_is_restored_as_it_was() {
    let current = state(
        "kuma8088.com, example.com",
        &block(&["example.com", "kuma8088.com"]),
        None,
    );
    let generation = state("kuma8088.com, old.example", "", None);
    let plan = plan(&current, &generation).unwrap();
    assert_eq!(plan.transport_final, "");
    let steps = plan.steps();
    assert_eq!(steps.last(), Some(&Step::WriteTransport("")));
    assert!(matches!(steps[0], Step::WriteTransport(union) if union.contains("example.com")));
}

#[test]
fn a_kept_table_keeps_the_current_routes_of_its_keys() {
    let names: BTreeSet<DomainName> = ["a.example", "fresh.example"]
        .iter()
        .map(|d| DomainName::parse(d).unwrap())
        .collect();
    let table = RelayDomainsTable::render(&names);
    let current = state(
        &format!("hash:{TABLE}"),
        &block(&["a.example", "fresh.example"]),
        Some(&table),
    );
    // Named, but without a copy: the table stays, and fresh.example keeps its route.
    let generation = state(&format!("hash:{TABLE}"), &block(&["a.example"]), None);
    let plan = plan(&current, &generation).unwrap();
    assert_eq!(plan.table, TableRestore::KeptWithoutCopy);
    assert_eq!(plan.kept_routes, ["fresh.example"]);
    assert_eq!(plan.transport_final, block(&["a.example", "fresh.example"]));
    assert_eq!(plan.transport_union, None);
}

#[test]
fn refusals_say_what_to_do() {
    let names: BTreeSet<DomainName> = ["lost.example"]
        .iter()
        .map(|d| DomainName::parse(d).unwrap())
        .collect();
    // A leftover table nothing routes, named by a generation without its copy.
    let current = state(
        "a.example",
        &block(&["a.example"]),
        Some(&RelayDomainsTable::render(&names)),
    );
    let generation = state(&format!("hash:{TABLE}"), &block(&["a.example"]), None);
    insta::assert_snapshot!(plan(&current, &generation).unwrap_err().to_string(), @"the table /etc/postfix/relay_domains is kept as it is now (the backup has no copy of it) and relays lost.example, which neither the backup's transport file nor the current one routes; roll back to another generation");
    let broken = state(
        "a.example",
        "# BEGIN relay-sync managed block\na.example smtp:\n",
        None,
    );
    insta::assert_snapshot!(plan(&current, &broken).unwrap_err().to_string(), @"its transport file: line 1: managed block BEGIN marker without an END marker; restore the END line or delete the block by hand; roll back to another generation");
}
