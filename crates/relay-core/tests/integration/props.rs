//! Properties of the core, named for what they state.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{
    apply_steps, normalize_owned, normalize_rows, sync_steps, DomainName, Freshness, Plan,
    PlanInput, PreRun, Recipient, RecipientsTable, RecoveryPlan, RelayDomains, RelayDomainsMode,
    RelayDomainsTable, Step, TransportFile, BEGIN_MARKER, END_MARKER, RECIPIENTS_HEADER,
};

use crate::model::{addresses, outside_block, postfix_strategy, Postfix, RECIPIENTS, TABLE};
use crate::strategies::{
    domain_set_strategy, hand_line_strategy, hop, hostile_string_strategy,
    preserved_token_strategy, routed_transport, small_domain_set_strategy,
};

/// A consistent Postfix state: `relay_domains` with preserved tokens and domains, and a
/// transport file in which every managed domain has an entry (in the block or hand-written).
#[derive(Debug, Clone)]
struct State {
    relay_domains: String,
    transport: Option<String>,
    preserve: BTreeSet<DomainName>,
}

fn state_strategy() -> impl Strategy<Value = State> {
    (
        prop::collection::vec(preserved_token_strategy(), 0..3),
        domain_set_strategy(),
        domain_set_strategy(),
        prop::collection::vec(hand_line_strategy(), 0..5),
        prop::collection::vec(hand_line_strategy(), 0..3),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(
            |(tokens, domains, preserve, before, after, split, exists)| {
                let relay = RelayDomains {
                    preserved_tokens: tokens,
                    domains: domains.clone(),
                };
                // Some managed domains are routed by hand-written lines, the rest by the block.
                let text = routed_transport(&domains, &before, &after, split);
                let transport = (exists || !text.is_empty()).then_some(text);
                State {
                    relay_domains: relay.render(),
                    transport,
                    preserve,
                }
            },
        )
}

fn plan(database: &BTreeSet<DomainName>, state: &State) -> Plan {
    Plan::new(PlanInput {
        database,
        preserve: &state.preserve,
        relay_domains: &state.relay_domains,
        transport: state.transport.as_deref(),
        next_hop: &hop(),
    })
    .unwrap()
}

proptest! {
    #[test]
    fn prop_relay_domains_render_parse_round_trips(
        tokens in prop::collection::vec(preserved_token_strategy(), 0..4),
        domains in domain_set_strategy(),
    ) {
        let value = RelayDomains { preserved_tokens: tokens, domains };
        prop_assert_eq!(RelayDomains::parse(&value.render()).unwrap(), value);
    }

    #[test]
    fn prop_transport_render_parse_round_trips(state in state_strategy(), domains in domain_set_strategy()) {
        let file = TransportFile::parse(state.transport.as_deref().unwrap_or("")).unwrap();
        let hop = hop().to_string();
        let rendered = file.render(domains.iter().map(|d| (d.as_str(), hop.as_str())));
        let reparsed = TransportFile::parse(&rendered).unwrap();
        let keys: BTreeSet<&str> = reparsed.managed_entries().map(|(key, _)| key).collect();
        let expected: BTreeSet<&str> = domains.iter().map(DomainName::as_str).collect();
        prop_assert_eq!(keys, expected);
        prop_assert_eq!(reparsed.render(domains.iter().map(|d| (d.as_str(), hop.as_str()))), rendered);
    }

    #[test]
    fn prop_any_line_order_parses_to_the_same_entries(
        domains in domain_set_strategy(),
        upper in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let hop = hop().to_string();
        let in_order = TransportFile::render(
            &TransportFile::parse("").unwrap(),
            domains.iter().map(|d| (d.as_str(), hop.as_str())),
        );
        // The same block with its lines reversed, keys in capitals, and an earlier line for
        // one key that the later one overrides.
        let mut lines: Vec<String> = domains
            .iter()
            .rev()
            .map(|d| {
                let key = if upper { d.as_str().to_ascii_uppercase() } else { d.to_string() };
                format!("{key} {hop}\n")
            })
            .collect();
        if repeat {
            if let Some(first) = domains.first() {
                lines.insert(0, format!("{first} smtp:[192.0.2.9]:25\n"));
            }
        }
        let shuffled = format!("{BEGIN_MARKER}\n{}{END_MARKER}\n", lines.concat());
        let a: Vec<(String, String)> = TransportFile::parse(&in_order).unwrap()
            .managed_entries().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let b: Vec<(String, String)> = TransportFile::parse(&shuffled).unwrap()
            .managed_entries().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(a.len(), domains.len());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn prop_applying_a_plan_converges(state in state_strategy(), database in domain_set_strategy()) {
        let first = plan(&database, &state);
        let after = State {
            relay_domains: first.relay_domains_value.clone(),
            transport: Some(first.transport_final.clone()),
            preserve: state.preserve.clone(),
        };
        let second = plan(&database, &after);
        prop_assert!(second.is_empty(), "second plan not empty: {:?}", second);
        prop_assert!(apply_steps(&second, true).is_empty());
    }

    #[test]
    fn prop_order_of_relay_domains_is_never_a_change(state in state_strategy(), database in domain_set_strategy()) {
        let first = plan(&database, &state);
        let mut tokens: Vec<&str> = first.relay_domains_value.split(", ").collect();
        tokens.reverse();
        let shuffled = State { relay_domains: tokens.join(" ,\t"), transport: Some(first.transport_final.clone()), ..state };
        let second = plan(&database, &shuffled);
        prop_assert!(!second.relay_domains_changed());
    }

    #[test]
    fn prop_hostile_rows_never_reach_rendered_files(
        state in state_strategy(),
        hostile in prop::collection::vec(hostile_string_strategy(), 0..8),
        valid in domain_set_strategy(),
    ) {
        let mut rows: Vec<String> = valid.iter().map(|d| d.to_string()).collect();
        rows.extend(hostile.iter().cloned());
        let normalized = normalize_rows(&rows);
        // Every valid row survives, whatever else is in the result.
        prop_assert!(valid.is_subset(&normalized.valid));
        let p = plan(&normalized.valid, &state);
        let before = RelayDomains::parse(&state.relay_domains).unwrap();
        for token in p.relay_domains_value.split(", ").filter(|t| !t.is_empty()) {
            prop_assert!(!token.contains([' ', '\t', '\n', '\r', ',']), "token {:?}", token);
            if !before.preserved_tokens.iter().any(|t| t == token) {
                let parsed = DomainName::parse(token).unwrap();
                prop_assert_eq!(parsed.as_str(), token);
            }
        }
        let current = state.transport.as_deref().unwrap_or("");
        for text in [p.transport_union_text(current), &p.transport_final] {
            if text == current {
                continue;
            }
            let file = TransportFile::parse(text).unwrap();
            for (key, value) in file.managed_entries() {
                let parsed = DomainName::parse(key).unwrap();
                prop_assert_eq!(parsed.as_str(), key);
                prop_assert_eq!(value, hop().to_string());
            }
        }
        for rejected in &normalized.rejected {
            let raw = rejected.raw.trim();
            // A token relay_domains already had (`$x`, `type:table`) stays, whatever the rows say.
            let kept = before.preserved_tokens.iter().any(|t| t == raw);
            prop_assert!(raw.is_empty() || kept || !p.relay_domains_value.split(", ").any(|t| t == raw));
        }
    }

    #[test]
    fn prop_owned_rows_normalize_as_borrowed_ones(
        hostile in prop::collection::vec(hostile_string_strategy(), 0..8),
        valid in domain_set_strategy(),
        upper in any::<bool>(),
    ) {
        let mut rows: Vec<String> = valid
            .iter()
            .map(|d| if upper { d.as_str().to_ascii_uppercase() } else { d.to_string() })
            .collect();
        rows.extend(hostile.iter().cloned());
        rows.extend(valid.iter().take(2).map(|d| format!("{d}.")));
        rows.push(String::new());
        prop_assert_eq!(normalize_owned(rows.clone()), normalize_rows(&rows));
    }

    #[test]
    fn prop_lines_outside_the_block_survive(state in state_strategy(), database in domain_set_strategy()) {
        let p = plan(&database, &state);
        let original = outside_block(state.transport.as_deref().unwrap_or(""));
        let current = state.transport.as_deref().unwrap_or("");
        prop_assert_eq!(outside_block(p.transport_union_text(current)), original.clone());
        prop_assert_eq!(outside_block(&p.transport_final), original);
    }

    #[test]
    fn prop_every_relayed_domain_has_a_transport_entry_at_every_step(
        state in state_strategy(),
        database in domain_set_strategy(),
        fresh in any::<bool>(),
    ) {
        let p = plan(&database, &state);
        let mut relay = state.relay_domains.clone();
        let mut transport = state.transport.clone().unwrap_or_default();
        let check = |relay: &str, transport: &str, when: &str| -> Result<(), TestCaseError> {
            let relay = RelayDomains::parse(relay).unwrap();
            let file = TransportFile::parse(transport).unwrap();
            for domain in &relay.domains {
                prop_assert!(
                    file.has_entry(domain.as_str()),
                    "{} has no transport entry {}", domain, when
                );
            }
            Ok(())
        };
        check(&relay, &transport, "before the run")?;
        for step in apply_steps(&p, fresh) {
            match step {
                Step::WriteTransport(text) => transport = text.to_owned(),
                Step::SetRelayDomains(value) => relay = value.to_owned(),
                Step::RebuildTransportMap
                | Step::Reload
                | Step::WriteRelayDomainsMap(_)
                | Step::WriteRecipientsMap(_)
                | Step::SetRelayRecipientMaps(_) => {}
            }
            check(&relay, &transport, &format!("after {step:?}"))?;
        }
        prop_assert_eq!(relay, p.relay_domains_value.clone());
        prop_assert_eq!(transport, p.transport_final.clone());
    }
}

/// A gateway in any state relay-sync may find (inline or map mode, a table left over, recipient
/// validation on or off, a recipients table of its own left over, the operator's own recipient
/// table named), and a database to sync it to.
#[derive(Debug, Clone)]
struct Gateway {
    before: Postfix,
    database: BTreeSet<DomainName>,
    preserve: BTreeSet<DomainName>,
    mode: RelayDomainsMode,
    users: Option<BTreeSet<Recipient>>,
    fresh: Freshness,
}

fn gateway_strategy() -> impl Strategy<Value = Gateway> {
    (
        postfix_strategy(),
        small_domain_set_strategy(5),
        small_domain_set_strategy(2),
        any::<bool>(),
        prop::option::of(crate::strategies::users_strategy()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(|(before, database, preserve, map, users, fresh)| Gateway {
            before,
            database,
            preserve,
            mode: if map {
                RelayDomainsMode::Map
            } else {
                RelayDomainsMode::Inline
            },
            users,
            fresh: Freshness {
                transport: fresh.0,
                relay_domains_map: fresh.1,
                recipients_map: fresh.2,
            },
        })
}

impl Gateway {
    /// Whether relay-sync's recipients table is left while validation is off: the run reads
    /// only its header, and the plan takes it out of `relay_recipient_maps`.
    fn ours_left(&self) -> bool {
        self.users.is_none()
            && self
                .before
                .recipients
                .as_deref()
                .is_some_and(|text| text.lines().next() == Some(RECIPIENTS_HEADER))
    }

    /// What the run reads before it changes anything, as relay-engine reads it.
    fn pre_run(&self) -> PreRun<'_> {
        let before = &self.before;
        let named = RelayDomains::parse(&before.relay_domains)
            .is_ok_and(|value| RelayDomainsTable::new("hash", TABLE, None).is_named_in(&value));
        let reads_maps = self.users.is_some() || self.ours_left();
        PreRun {
            relay_domains: &before.relay_domains,
            transport: before.transport.as_deref(),
            relay_domains_map: before
                .table
                .as_deref()
                .filter(|_| self.mode == RelayDomainsMode::Map || named),
            relay_recipient_maps: if reads_maps {
                &before.relay_recipient_maps
            } else {
                ""
            },
            recipients_map: before
                .recipients
                .as_deref()
                .filter(|_| self.users.is_some()),
        }
    }

    /// The plan, as relay-engine computes it from what it read.
    fn plan(&self) -> Result<Plan, relay_core::PlanError> {
        let pre = self.pre_run();
        let header = format!("{RECIPIENTS_HEADER}\n");
        let relayed: BTreeSet<DomainName> = match &self.users {
            Some(_) => self.database.union(&self.preserve).cloned().collect(),
            None => BTreeSet::new(),
        };
        let recipients_text = if self.ours_left() {
            Some(header.as_str())
        } else {
            pre.recipients_map
        };
        Plan::with_mode(
            PlanInput {
                database: &self.database,
                preserve: &self.preserve,
                relay_domains: pre.relay_domains,
                transport: pre.transport,
                next_hop: &hop(),
            },
            self.mode,
            Some(RelayDomainsTable::new("hash", TABLE, pre.relay_domains_map)),
        )?
        .with_recipients(
            self.users.as_ref(),
            &relayed,
            RecipientsTable::new("hash", RECIPIENTS, recipients_text),
            pre.relay_recipient_maps,
        )
    }
}

/// Checks one instant of a step list: no relayed domain without a route, the lines outside the
/// managed block as they were, and every address of `kept` accepted.
fn check_instant(
    state: &Postfix,
    outside: &[&str],
    kept: &[&String],
    when: &dyn Fn() -> String,
) -> Result<(), TestCaseError> {
    let unrouted = state.unrouted();
    prop_assert!(
        unrouted.is_empty(),
        "{:?} relayed without a route {}",
        unrouted,
        when()
    );
    let lines = outside_block(state.transport.as_deref().unwrap_or(""));
    prop_assert_eq!(
        &lines[..],
        outside,
        "lines outside the block changed {}",
        when()
    );
    for address in kept {
        prop_assert!(state.accepts(address), "{} refused {}", address, when());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A sync, in either mode, with recipient validation or without, switching modes or
    /// turning validation on and off: at every instant every relayed domain has a route, an
    /// address accepted before and after is accepted, and the lines outside the managed block
    /// are kept; at the end Postfix holds the plan's values, reloaded when a parameter changed.
    #[test]
    fn prop_a_sync_keeps_every_relayed_domain_routed_and_ends_in_the_plan(gateway in gateway_strategy()) {
        let Ok(plan) = gateway.plan() else { return Ok(()) };
        let pre = gateway.pre_run();
        let steps = sync_steps(&plan, &pre, gateway.fresh, false);
        let before = &gateway.before;
        let mut end = before.clone();
        for step in &steps {
            end.step(*step);
        }
        let addresses = addresses();
        let kept: Vec<&String> = addresses
            .iter()
            .filter(|a| before.accepts(a) && end.accepts(a))
            .collect();
        let outside = outside_block(before.transport.as_deref().unwrap_or(""));
        let mut state = before.clone();
        check_instant(&state, &outside, &kept, &|| "before the run".to_owned())?;
        for (i, step) in steps.iter().enumerate() {
            state.step(*step);
            check_instant(&state, &outside, &kept, &|| format!("after step {i} {step:?} of {steps:?}"))?;
        }
        prop_assert_eq!(RelayDomains::parse(&end.relay_domains).unwrap(), plan.target.clone());
        prop_assert_eq!(end.transport.as_deref().unwrap_or(""), plan.transport_final.as_str());
        if let Some(table) = &plan.relay_domains_map {
            prop_assert_eq!(end.table.as_ref(), Some(table));
        }
        if let Some(recipients) = &plan.recipients {
            prop_assert!(recipients.is_maps_value(&end.relay_recipient_maps));
            if recipients.enabled {
                prop_assert_eq!(&end.recipients, &recipients.table_final);
            }
        }
        if (&end.relay_domains, &end.relay_recipient_maps) != (&before.relay_domains, &before.relay_recipient_maps) {
            prop_assert_eq!(&end.running, &(end.relay_domains.clone(), end.relay_recipient_maps.clone()));
        }
    }

    /// A sync that fails at any point (any of its steps, or the verification during or after
    /// the reload) is recovered: at every instant of the recovery every relayed domain has a
    /// route and an address accepted before the run and when it stopped is accepted; at the
    /// end Postfix is as before the run, reloaded. A file that did not exist may come back
    /// empty (a recipients table with the addresses of the run: no one is refused through it).
    #[test]
    fn prop_a_failed_sync_is_recovered_from_every_failure_point(gateway in gateway_strategy()) {
        let Ok(plan) = gateway.plan() else { return Ok(()) };
        let pre = gateway.pre_run();
        let steps = sync_steps(&plan, &pre, gateway.fresh, false);
        let before = &gateway.before;
        let addresses = addresses();
        let outside = outside_block(before.transport.as_deref().unwrap_or(""));
        // `done` steps completed: the next one failed, or (after a reload, or after the last
        // step) the verification did.
        for done in 0..=steps.len() {
            let mut state = before.clone();
            for step in &steps[..done] {
                state.step(*step);
            }
            let stopped = state.clone();
            let kept: Vec<&String> = addresses
                .iter()
                .filter(|a| before.accepts(a) && stopped.accepts(a))
                .collect();
            let recovery = RecoveryPlan::new(&plan, pre, &steps[..done]);
            let back = recovery.steps();
            prop_assert_eq!(recovery.is_empty(), back.is_empty());
            for (i, step) in back.iter().enumerate() {
                state.step(*step);
                check_instant(&state, &outside, &kept, &|| {
                    format!("after recovery step {i} {step:?} of {back:?}, the run stopped after {:?}", &steps[..done])
                })?;
            }
            let stopped_at = || format!("the run stopped after {:?}, recovered by {back:?}", &steps[..done]);
            prop_assert_eq!(&state.relay_domains, &before.relay_domains, "{}", stopped_at());
            prop_assert_eq!(&state.relay_recipient_maps, &before.relay_recipient_maps, "{}", stopped_at());
            prop_assert_eq!(&state.running, &before.running, "{}", stopped_at());
            let same_or_empty = |now: &Option<String>, was: &Option<String>| {
                now == was || (was.is_none() && now.as_deref().is_none_or(str::is_empty))
            };
            prop_assert!(same_or_empty(&state.transport, &before.transport), "transport: {}", stopped_at());
            prop_assert!(same_or_empty(&state.table, &before.table), "table: {}", stopped_at());
            if before.recipients.is_some() {
                prop_assert_eq!(&state.recipients, &before.recipients, "{}", stopped_at());
            }
            for address in &addresses {
                prop_assert!(!before.accepts(address) || state.accepts(address), "{} refused after the recovery: {}", address, stopped_at());
            }
        }
    }
}
