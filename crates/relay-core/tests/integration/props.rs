//! Properties of the core, named for what they state.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{
    apply_steps, normalize_owned, normalize_rows, DomainName, Plan, PlanInput, RelayDomains, Step,
    TransportFile, BEGIN_MARKER, END_MARKER,
};

use crate::strategies::{
    domain_set_strategy, hand_line_strategy, hop, hostile_string_strategy, preserved_token_strategy,
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
                let (hand, managed): (Vec<_>, Vec<_>) = domains
                    .iter()
                    .enumerate()
                    .partition(|(i, _)| (*i as u8).wrapping_add(split) % 4 == 0);
                let mut text = String::new();
                for line in &before {
                    text.push_str(line);
                    text.push('\n');
                }
                for (_, d) in &hand {
                    text.push_str(&format!("{d} smtp:[192.0.2.9]:25\n"));
                }
                let file = TransportFile::parse(&text).unwrap();
                let hop = hop().to_string();
                let mut text = file.render(managed.iter().map(|(_, d)| (d.as_str(), hop.as_str())));
                for line in &after {
                    text.push_str(line);
                    text.push('\n');
                }
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

/// Lines of a transport file outside the managed block.
fn outside_block(text: &str) -> Vec<&str> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# BEGIN relay-sync") {
            inside = true;
        } else if line.starts_with("# END relay-sync") {
            inside = false;
        } else if !inside {
            out.push(line);
        }
    }
    out
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
