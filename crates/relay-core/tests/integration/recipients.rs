//! Recipient validation (`RECIPIENTS_QUERY`): hostile rows, and the order of the steps.
//!
//! The model: Postfix accepts an address when its domain is relayed and, while
//! `relay_recipient_maps` names a table, the table holds the address or its domain's
//! catch-all. Main.cf and the tables are read by every new smtpd, so every intermediate state
//! counts, not only the one after the reload.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{
    apply_steps_with, guard, normalize_recipients, DomainName, Freshness, GuardSettings, Plan,
    PlanInput, Recipient, RecipientsTable, Refusal, RelayDomains, Step, RECIPIENTS_HEADER,
};

use crate::strategies::{hop, hostile_string_strategy};

const TABLE: &str = "/etc/postfix/relay_recipients";
const OTHER: &str = "hash:/etc/postfix/operator_recipients";

fn fresh() -> Freshness {
    Freshness {
        transport: true,
        relay_domains_map: true,
        recipients_map: true,
    }
}

/// What Postfix holds: `relay_domains`, `relay_recipient_maps`, the transport file and the
/// recipients table's source.
#[derive(Debug, Clone, Default)]
struct State {
    relay_domains: String,
    relay_recipient_maps: String,
    transport: Option<String>,
    table: Option<String>,
}

impl State {
    fn plan(&self, domains: &BTreeSet<DomainName>, users: Option<&BTreeSet<Recipient>>) -> Plan {
        let hop = hop();
        let empty = BTreeSet::new();
        Plan::new(PlanInput {
            database: domains,
            preserve: &empty,
            relay_domains: &self.relay_domains,
            transport: self.transport.as_deref(),
            next_hop: &hop,
        })
        .unwrap()
        .with_recipients(users, domains, self.table_ref(), &self.relay_recipient_maps)
        .unwrap()
    }

    fn table_ref(&self) -> RecipientsTable<'_> {
        RecipientsTable::new("hash", TABLE, self.table.as_deref())
    }

    fn step(&mut self, step: Step<'_>) {
        match step {
            Step::WriteTransport(text) => self.transport = Some(text.to_owned()),
            Step::WriteRecipientsMap(text) => self.table = Some(text.to_owned()),
            Step::SetRelayRecipientMaps(value) => self.relay_recipient_maps = value.to_owned(),
            Step::SetRelayDomains(value) => self.relay_domains = value.to_owned(),
            Step::WriteRelayDomainsMap(_) | Step::RebuildTransportMap | Step::Reload => {}
        }
    }

    fn apply(&self, plan: &Plan) -> State {
        let mut next = self.clone();
        for step in apply_steps_with(plan, fresh()) {
            next.step(step);
        }
        next
    }

    /// Whether the domain of `address` is relayed in this state.
    fn relays(&self, address: &str) -> bool {
        let (_, domain) = address.split_once('@').unwrap();
        RelayDomains::parse(&self.relay_domains)
            .unwrap()
            .domains
            .contains(&DomainName::parse(domain).unwrap())
    }

    /// Whether Postfix accepts `address` (already lowercase) in this state.
    fn accepts(&self, address: &str) -> bool {
        let (_, domain) = address.split_once('@').unwrap();
        if !self.relays(address) {
            return false;
        }
        let tables: Vec<&str> = self
            .relay_recipient_maps
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .collect();
        if tables.is_empty() {
            return true;
        }
        // The operator's table is empty in this model; ours holds what its source lists.
        let ours = tables.iter().any(|t| t.ends_with(&format!(":{TABLE}")));
        ours && self.table.as_deref().is_some_and(|text| {
            text.lines().any(|line| {
                let key = line.split(' ').next().unwrap_or_default();
                key == address || key == format!("@{domain}")
            })
        })
    }
}

/// Domains and users from small alphabets, so that sets overlap often.
fn domains_strategy() -> impl Strategy<Value = BTreeSet<DomainName>> {
    prop::collection::btree_set(
        prop::sample::select(vec!["a.example", "b.example", "c.example", "d.example"])
            .prop_map(|d| DomainName::parse(d).unwrap()),
        0..4,
    )
}

fn users_strategy() -> impl Strategy<Value = BTreeSet<Recipient>> {
    prop::collection::btree_set(
        (
            prop::sample::select(vec!["", "u1", "u2", "U3"]),
            prop::sample::select(vec!["a.example", "b.example", "c.example", "e.example"]),
        )
            .prop_map(|(local, domain)| Recipient::parse(&format!("{local}@{domain}")).unwrap()),
        0..10,
    )
}

/// Every address the model can tell apart: each local part (and an unknown one) at each domain.
fn universe() -> Vec<String> {
    let mut out = Vec::new();
    for domain in [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
    ] {
        for local in ["u1", "u2", "u3", "nobody"] {
            out.push(format!("{local}@{domain}"));
        }
    }
    out
}

/// A state reached by syncing from nothing, with the operator's own table or not.
fn synced(
    domains: &BTreeSet<DomainName>,
    users: Option<&BTreeSet<Recipient>>,
    operator_table: bool,
) -> State {
    let empty = State {
        relay_recipient_maps: if operator_table {
            OTHER.to_owned()
        } else {
            String::new()
        },
        ..State::default()
    };
    empty.apply(&empty.plan(domains, users))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Hostile rows never reach the table: every line after the header is `KEY OK`, KEY a
    /// normalized recipient, and no rejected row's text is a key.
    #[test]
    fn prop_hostile_rows_never_reach_the_table(
        good in prop::collection::vec("[a-z]{1,4}@[a-c]\\.example", 0..6),
        hostile in prop::collection::vec(
            prop_oneof![
                hostile_string_strategy(),
                "[a-z]{1,4}@[a-z]{1,4}@[a-c]\\.example",
                "[a-z]{1,4}[ \t\n\r\u{0}\u{7f}][a-z]{0,4}@[a-c]\\.example",
                "[a-z]{1,4}@[a-c]\\.example\n[a-z]{1,4}@[a-c]\\.example OK",
                "[a-z]{1,4}@[a-z]{1,4}",
            ],
            0..6
        ),
    ) {
        let rows: Vec<String> = good.iter().chain(&hostile).cloned().collect();
        let normalized = normalize_recipients(rows);
        let domains: BTreeSet<DomainName> = ["a.example", "b.example", "c.example"]
            .iter().map(|d| DomainName::parse(d).unwrap()).collect();
        let plan = State::default().plan(&domains, Some(&normalized.valid));
        let recipients = plan.recipients.unwrap();
        let text = recipients.table_final.unwrap();
        let mut lines = text.lines();
        prop_assert_eq!(lines.next(), Some(RECIPIENTS_HEADER));
        let mut keys = 0;
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap();
            prop_assert_eq!(value, "OK");
            let parsed = Recipient::parse(key).unwrap();
            prop_assert_eq!(parsed.as_str(), key);
            keys += 1;
        }
        prop_assert_eq!(keys, recipients.entries);
        for row in &normalized.rejected {
            prop_assert!(!text.lines().any(|line| line.split(' ').next() == Some(row.raw.as_str())));
            let as_line = format!("\n{} OK", row.raw);
            prop_assert!(!text.contains(&as_line), "{:?} reached the table", row.raw);
        }
    }

    /// At every intermediate step, an address accepted before the run and after it is
    /// accepted; at the end exactly the wanted addresses are accepted. Covers turning the
    /// feature on and off, with and without the operator's own table, and domains and users
    /// arriving and leaving in the same run.
    #[test]
    fn prop_no_step_refuses_an_address_accepted_before_and_after(
        domains_before in domains_strategy(),
        users_before in proptest::option::of(users_strategy()),
        domains_after in domains_strategy(),
        users_after in proptest::option::of(users_strategy()),
        operator_table in any::<bool>(),
    ) {
        let before = synced(&domains_before, users_before.as_ref(), operator_table);
        let plan = before.plan(&domains_after, users_after.as_ref());
        // Refusals are the guard's business; the order must hold whatever it lets through.
        let end = before.apply(&plan);
        let universe = universe();
        let mut state = before.clone();
        for step in apply_steps_with(&plan, fresh()) {
            state.step(step);
            for address in &universe {
                if before.accepts(address) && end.accepts(address) {
                    prop_assert!(state.accepts(address),
                        "{address} refused after {step:?}\nbefore {before:?}\nnow {state:?}");
                }
                // An address leaving with its domain stays accepted while the domain is
                // relayed: recipients go only after their domains.
                if before.accepts(address) && !end.relays(address) && state.relays(address) {
                    prop_assert!(state.accepts(address),
                        "{address} refused before its domain left, after {step:?}\nnow {state:?}");
                }
            }
        }
        for address in &universe {
            let (_, domain) = address.split_once('@').unwrap();
            let relayed = domains_after.contains(&DomainName::parse(domain).unwrap());
            let wanted = match &users_after {
                Some(users) => users.iter().any(|u| u.as_str() == address || u.as_str() == format!("@{domain}")),
                None => !operator_table,
            };
            prop_assert_eq!(end.accepts(address), relayed && wanted, "{}", address);
        }
        // Synced again: nothing to do.
        prop_assert!(end.plan(&domains_after, users_after.as_ref()).is_empty());
    }
}

fn users(items: &[&str]) -> BTreeSet<Recipient> {
    items.iter().map(|r| Recipient::parse(r).unwrap()).collect()
}

fn names(items: &[&str]) -> BTreeSet<DomainName> {
    items
        .iter()
        .map(|d| DomainName::parse(d).unwrap())
        .collect()
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    apply_steps_with(plan, fresh())
        .iter()
        .map(|s| match s {
            Step::WriteTransport(_) => "transport",
            Step::WriteRelayDomainsMap(_) => "table",
            Step::WriteRecipientsMap(_) => "recipients",
            Step::SetRelayRecipientMaps(_) => "postconf relay_recipient_maps",
            Step::SetRelayDomains(_) => "postconf relay_domains",
            Step::Reload => "reload",
            Step::RebuildTransportMap => "rebuild",
        })
        .collect()
}

#[test]
fn turning_on_while_a_domain_arrives_writes_the_table_before_either_parameter_and_names_it_last() {
    let before = synced(&names(&["a.example"]), None, false);
    let plan = before.plan(
        &names(&["a.example", "b.example"]),
        Some(&users(&["u1@a.example", "u2@b.example"])),
    );
    assert_eq!(
        kinds(&plan),
        [
            "transport",
            "recipients",
            "postconf relay_domains",
            "postconf relay_recipient_maps",
            "reload"
        ]
    );
}

#[test]
fn a_user_leaving_with_their_domain_goes_after_the_reload() {
    let all = users(&["u1@a.example", "u2@b.example"]);
    let before = synced(&names(&["a.example", "b.example"]), Some(&all), false);
    let plan = before.plan(&names(&["a.example"]), Some(&users(&["u1@a.example"])));
    assert_eq!(
        kinds(&plan),
        [
            "postconf relay_domains",
            "reload",
            "transport",
            "recipients"
        ]
    );
    let recipients = plan.recipients.as_ref().unwrap();
    // The user's domain left: the domain guard decides, not the recipient guard.
    assert_eq!(
        (recipients.removed, recipients.removed_kept_domains),
        (1, 0)
    );
    assert!(guard(&plan, GuardSettings::default()).is_ok());
}

#[test]
fn the_recipient_guard_refuses_an_empty_result_and_mass_removal() {
    let many: Vec<String> = (0..10).map(|i| format!("u{i}@a.example")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let before = synced(&names(&["a.example"]), Some(&users(&refs)), false);

    let empty = before.plan(&names(&["a.example"]), Some(&BTreeSet::new()));
    assert!(matches!(
        guard(&empty, GuardSettings::default()),
        Err(Refusal::EmptyRecipients { entries: 10, .. })
    ));
    let allowed = GuardSettings {
        allow_empty: true,
        force: true,
        ..GuardSettings::default()
    };
    assert!(guard(&empty, allowed).is_ok());

    let few = before.plan(&names(&["a.example"]), Some(&users(&refs[..4])));
    assert!(matches!(
        guard(&few, GuardSettings::default()),
        Err(Refusal::RecipientMassRemoval {
            removed: 6,
            entries: 10,
            percent: 60,
            max: 50
        })
    ));
    let forced = GuardSettings {
        force: true,
        ..GuardSettings::default()
    };
    assert!(guard(&few, forced).is_ok());
    let half = before.plan(&names(&["a.example"]), Some(&users(&refs[..5])));
    assert!(guard(&half, GuardSettings::default()).is_ok());

    // Turning on with nothing to put in the table would refuse every address.
    let off = synced(&names(&["a.example"]), None, false);
    let on_empty = off.plan(&names(&["a.example"]), Some(&BTreeSet::new()));
    assert!(matches!(
        guard(&on_empty, GuardSettings::default()),
        Err(Refusal::EmptyRecipients { entries: 0, .. })
    ));
}

#[test]
fn a_relayed_domain_without_recipients_is_listed_not_refused() {
    let before = synced(&names(&["a.example"]), None, false);
    let plan = before.plan(
        &names(&["a.example", "new.example"]),
        Some(&users(&["u1@a.example", "x@elsewhere.example"])),
    );
    let recipients = plan.recipients.as_ref().unwrap();
    assert_eq!(
        recipients.domains_without_recipients,
        names(&["new.example"]).into_iter().collect::<Vec<_>>()
    );
    assert_eq!(recipients.outside, 1);
    assert!(guard(&plan, GuardSettings::default()).is_ok());
}

#[test]
fn a_stale_recipients_table_is_rebuilt() {
    let all = users(&["u1@a.example"]);
    let synced = synced(&names(&["a.example"]), Some(&all), false);
    let again = synced.plan(&names(&["a.example"]), Some(&all));
    assert!(apply_steps_with(&again, fresh()).is_empty());
    let stale = Freshness {
        recipients_map: false,
        ..fresh()
    };
    // Postfix picks a rebuilt table up by itself: no reload for the table alone.
    assert!(matches!(
        apply_steps_with(&again, stale).as_slice(),
        [Step::WriteRecipientsMap(_)]
    ));
}

#[test]
fn a_rollback_restores_the_table_around_the_parameters_without_dropping_an_address_early() {
    use relay_core::{GenerationTexts, RecipientsRollback, RollbackInput, RollbackPlan};
    let old_table = relay_core::RecipientsTable::render(["alice@a.example"]);
    let current = relay_core::RecipientsTable::render(["bob@a.example"]);
    let transport = State::default()
        .plan(&names(&["a.example"]), None)
        .transport_final;
    let plan = RollbackPlan::new(RollbackInput {
        current_transport: Some(&transport),
        current_table: None,
        table_path: "/etc/postfix/relay_domains",
        generation: GenerationTexts {
            relay_domains: "a.example",
            transport: &transport,
            table: None,
        },
    })
    .unwrap()
    .with_recipients(RecipientsRollback {
        relay_recipient_maps: "hash:/etc/postfix/relay_recipients",
        table: Some(&old_table),
        current_table: Some(&current),
    });
    let steps = plan.steps();
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::WriteRecipientsMap(text) if *text == old_table => "old table".to_owned(),
            Step::WriteRecipientsMap(text) => {
                assert!(
                    text.contains("\nalice@a.example OK\n")
                        && text.contains("\nbob@a.example OK\n")
                );
                "union".to_owned()
            }
            other => format!("{other:?}").split('(').next().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "WriteTransport",
            "union",
            "SetRelayDomains",
            "SetRelayRecipientMaps",
            "Reload",
            "old table"
        ]
    );
}
