//! Map mode (`RELAY_DOMAINS_MODE=map`) and switching between the modes.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{
    apply_steps_with, guard, DomainName, Freshness, GuardSettings, Plan, PlanInput, Refusal,
    RelayDomains, RelayDomainsMode, RelayDomainsTable, Step, TransportFile,
};

use crate::strategies::{domain_set_strategy, hop, preserved_token_strategy};

const TABLE: &str = "/etc/postfix/relay_domains";

/// What Postfix holds in either mode: `relay_domains`, the transport file and the table's
/// source file.
#[derive(Debug, Clone)]
struct State {
    relay_domains: String,
    transport: Option<String>,
    table: Option<String>,
}

impl State {
    fn plan(
        &self,
        database: &BTreeSet<DomainName>,
        mode: RelayDomainsMode,
        map_type: &str,
    ) -> Plan {
        let hop = hop();
        Plan::with_mode(
            PlanInput {
                database,
                preserve: &BTreeSet::new(),
                relay_domains: &self.relay_domains,
                transport: self.transport.as_deref(),
                next_hop: &hop,
            },
            mode,
            Some(RelayDomainsTable::new(
                map_type,
                TABLE,
                self.table.as_deref(),
            )),
        )
        .unwrap()
    }

    /// Every domain Postfix relays in this state: inline ones, and the table's when
    /// `relay_domains` names it.
    fn relayed(&self) -> BTreeSet<DomainName> {
        relayed(&self.relay_domains, self.table.as_deref())
    }

    /// The state after every step of `plan` (the table file stays when it is let go).
    fn apply(&self, plan: &Plan) -> State {
        let mut next = self.clone();
        for step in apply_steps_with(plan, fresh()) {
            next.step(step);
        }
        next
    }

    fn step(&mut self, step: Step<'_>) {
        match step {
            Step::WriteTransport(text) => self.transport = Some(text.to_owned()),
            Step::WriteRelayDomainsMap(text) => self.table = Some(text.to_owned()),
            Step::SetRelayDomains(value) => self.relay_domains = value.to_owned(),
            Step::RebuildTransportMap
            | Step::Reload
            | Step::WriteRecipientsMap(_)
            | Step::SetRelayRecipientMaps(_) => {}
        }
    }
}

fn fresh() -> Freshness {
    Freshness {
        transport: true,
        relay_domains_map: true,
        recipients_map: true,
    }
}

fn relayed(relay_domains: &str, table: Option<&str>) -> BTreeSet<DomainName> {
    let parsed = RelayDomains::parse(relay_domains).unwrap();
    let mut out = parsed.domains.clone();
    let t = RelayDomainsTable::new("hash", TABLE, table);
    if t.is_named_in(&parsed) {
        out.extend(t.domains());
    }
    out
}

/// An inline state synced to `domains`, with `tokens` preserved.
fn inline_state(tokens: Vec<String>, domains: &BTreeSet<DomainName>) -> State {
    let empty = State {
        relay_domains: RelayDomains {
            preserved_tokens: tokens,
            domains: BTreeSet::new(),
        }
        .render(),
        transport: None,
        table: None,
    };
    empty.apply(&empty.plan(domains, RelayDomainsMode::Inline, "hash"))
}

fn mode_strategy() -> impl Strategy<Value = RelayDomainsMode> {
    prop_oneof![Just(RelayDomainsMode::Inline), Just(RelayDomainsMode::Map)]
}

fn names(n: usize) -> BTreeSet<DomainName> {
    (0..n)
        .map(|i| DomainName::parse(&format!("d{i}.example")).unwrap())
        .collect()
}

proptest! {
    #[test]
    fn prop_switching_modes_adds_and_removes_nothing(
        tokens in prop::collection::vec(preserved_token_strategy(), 0..3),
        domains in domain_set_strategy(),
        first in mode_strategy(),
    ) {
        let start = inline_state(tokens, &domains);
        let start = start.apply(&start.plan(&domains, first, "hash"));
        for mode in [RelayDomainsMode::Map, RelayDomainsMode::Inline, RelayDomainsMode::Map] {
            let plan = start.plan(&domains, mode, "lmdb");
            prop_assert!(plan.added.is_empty() && plan.removed.is_empty());
            prop_assert_eq!(guard(&plan, GuardSettings::default()), Ok(()));
            let next = start.apply(&plan);
            prop_assert_eq!(next.relayed(), domains.clone());
        }
    }

    #[test]
    fn prop_map_mode_converges(
        tokens in prop::collection::vec(preserved_token_strategy(), 0..3),
        before in domain_set_strategy(),
        database in domain_set_strategy(),
        mode in mode_strategy(),
    ) {
        let start = inline_state(tokens, &before);
        let start = start.apply(&start.plan(&before, mode, "hash"));
        for mode in [RelayDomainsMode::Map, RelayDomainsMode::Inline] {
            let synced = start.apply(&start.plan(&database, mode, "hash"));
            prop_assert_eq!(synced.relayed(), database.clone());
            let again = synced.plan(&database, mode, "hash");
            prop_assert!(again.is_empty(), "not converged: {:?}", apply_steps_with(&again, fresh()));
        }
    }

    #[test]
    fn prop_preserved_tokens_stay_in_map_mode(
        tokens in prop::collection::vec(preserved_token_strategy(), 0..3),
        database in domain_set_strategy(),
    ) {
        let start = inline_state(tokens.clone(), &BTreeSet::new());
        let plan = start.plan(&database, RelayDomainsMode::Map, "cdb");
        let mut wanted = tokens;
        wanted.push(format!("cdb:{TABLE}"));
        prop_assert_eq!(plan.target.preserved_tokens.clone(), wanted);
        prop_assert!(plan.target.domains.is_empty());
    }

    #[test]
    fn prop_every_relayed_domain_has_a_transport_entry_at_every_step_in_either_mode(
        before in domain_set_strategy(),
        database in domain_set_strategy(),
        from in mode_strategy(),
        to in mode_strategy(),
    ) {
        let start = inline_state(vec!["$mydestination".to_owned()], &before);
        let mut state = start.apply(&start.plan(&before, from, "hash"));
        let plan = state.plan(&database, to, "hash");
        for step in apply_steps_with(&plan, fresh()) {
            state.step(step);
            let file = TransportFile::parse(state.transport.as_deref().unwrap_or("")).unwrap();
            for domain in state.relayed() {
                prop_assert!(file.has_entry(domain.as_str()), "{} has no route after {:?}", domain, step);
            }
        }
    }
}

#[test]
fn inline_mode_refuses_a_large_value_and_map_mode_takes_it() {
    let domains = names(10_000);
    let empty = State {
        relay_domains: "$mydestination".into(),
        transport: None,
        table: None,
    };
    let inline = empty.plan(&domains, RelayDomainsMode::Inline, "hash");
    let refusal = guard(&inline, GuardSettings::default()).unwrap_err();
    assert!(matches!(
        refusal,
        Refusal::InlineTooLarge {
            domains: 10_000,
            ..
        }
    ));
    assert!(refusal.to_string().contains("RELAY_DOMAINS_MODE=map"));
    let map = empty.plan(&domains, RelayDomainsMode::Map, "hash");
    assert_eq!(guard(&map, GuardSettings::default()), Ok(()));
    assert_eq!(
        map.relay_domains_value,
        "$mydestination, hash:/etc/postfix/relay_domains"
    );
    assert_eq!(map.relayed_count, 10_000);
}

#[test]
fn a_switch_back_to_inline_refuses_when_too_large_and_touches_nothing() {
    let domains = names(10_000);
    let empty = State {
        relay_domains: String::new(),
        transport: None,
        table: None,
    };
    let in_map = empty.apply(&empty.plan(&domains, RelayDomainsMode::Map, "hash"));
    let back = in_map.plan(&domains, RelayDomainsMode::Inline, "hash");
    assert!(back.added.is_empty() && back.removed.is_empty());
    assert!(matches!(
        guard(&back, GuardSettings::default()),
        Err(Refusal::InlineTooLarge { .. })
    ));
}

#[test]
fn map_mode_steps_order_and_a_stale_table() {
    let domains = names(3);
    let empty = State {
        relay_domains: String::new(),
        transport: None,
        table: None,
    };
    let first = empty.plan(&domains, RelayDomainsMode::Map, "hash");
    let kinds: Vec<&str> = apply_steps_with(&first, fresh())
        .iter()
        .map(|s| match s {
            Step::WriteTransport(_) => "transport",
            Step::WriteRelayDomainsMap(_) => "table",
            Step::SetRelayDomains(_) => "postconf",
            Step::Reload => "reload",
            Step::RebuildTransportMap => "rebuild",
            Step::WriteRecipientsMap(_) => "recipients",
            Step::SetRelayRecipientMaps(_) => "postconf recipients",
        })
        .collect();
    assert_eq!(kinds, ["transport", "table", "postconf", "reload"]);

    let synced = empty.apply(&first);
    let again = synced.plan(&domains, RelayDomainsMode::Map, "hash");
    assert!(apply_steps_with(&again, fresh()).is_empty());
    let stale = Freshness {
        transport: true,
        relay_domains_map: false,
        recipients_map: true,
    };
    assert!(matches!(
        apply_steps_with(&again, stale).as_slice(),
        [Step::WriteRelayDomainsMap(_), Step::Reload]
    ));

    // One domain more: the table changes, main.cf does not.
    let more = names(4);
    let change = synced.plan(&more, RelayDomainsMode::Map, "hash");
    assert!(!change.relay_domains_changed());
    assert_eq!(change.added.len(), 1);
    assert!(matches!(
        apply_steps_with(&change, fresh()).as_slice(),
        [
            Step::WriteTransport(_),
            Step::WriteRelayDomainsMap(_),
            Step::Reload
        ]
    ));
}

#[test]
fn a_table_of_another_map_type_is_replaced_not_kept() {
    let domains = names(2);
    let state = State {
        relay_domains: "$mydestination, hash:/etc/postfix/relay_domains".into(),
        transport: None,
        table: Some("d0.example OK\nd1.example OK\n".into()),
    };
    let plan = state.plan(&domains, RelayDomainsMode::Map, "lmdb");
    assert_eq!(
        plan.relay_domains_value,
        "$mydestination, lmdb:/etc/postfix/relay_domains"
    );
    assert!(plan.added.is_empty() && plan.removed.is_empty());
}

#[test]
fn a_hand_edited_table_is_compared_by_normalized_name() {
    let domains = names(2);
    let state = State {
        relay_domains: "hash:/etc/postfix/relay_domains".into(),
        transport: None,
        table: Some("D0.Example OK\nd0.example OK\nd9.example OK\nbad_key OK\n# note\n".into()),
    };
    let plan = state.plan(&domains, RelayDomainsMode::Map, "hash");
    assert!(plan.added.iter().map(|d| d.as_str()).eq(["d1.example"]));
    assert!(plan.removed.iter().map(|d| d.as_str()).eq(["d9.example"]));
    assert_eq!(plan.managed_now, 2);
    assert!(plan.relay_domains_map_changed());
    assert_eq!(
        plan.relay_domains_map.as_deref(),
        Some(format!("{}\nd0.example OK\nd1.example OK\n", relay_core::MAP_HEADER).as_str())
    );
}
