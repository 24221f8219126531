//! A model of what Postfix works from, shared by the properties of every step list relay-core
//! plans: a sync's, a failed sync's recovery, and a rollback to a backup.
//!
//! Main.cf and the tables are read by every new smtpd, and a rebuilt table is picked up without
//! a reload; the processes that were running at the last reload keep the parameters they read
//! then. So between `postconf -e` and `postfix reload` two *views* are in force: main.cf's
//! parameters and the running ones, both with the tables as they are now. A domain is relayed
//! when either view relays it (it must have a route), and an address is accepted when both
//! views accept it (no process may refuse it).

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{DomainName, Recipient, RecipientsTable, RelayDomains, RelayDomainsTable, Step};

use crate::strategies::{
    hand_line_strategy, preserved_token_strategy, routed_transport, small_domain_set_strategy,
    users_strategy,
};

/// The relay-domains table's source (`RELAY_DOMAINS_MAP`).
pub(crate) const TABLE: &str = "/etc/postfix/relay_domains";
/// The recipients table's source (`RECIPIENTS_MAP`).
pub(crate) const RECIPIENTS: &str = "/etc/postfix/relay_recipients";

/// What Postfix works from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Postfix {
    /// `relay_domains` in main.cf.
    pub(crate) relay_domains: String,
    /// `relay_recipient_maps` in main.cf.
    pub(crate) relay_recipient_maps: String,
    /// The transport file (`None`: no file).
    pub(crate) transport: Option<String>,
    /// The relay-domains table's source.
    pub(crate) table: Option<String>,
    /// The recipients table's source.
    pub(crate) recipients: Option<String>,
    /// `relay_domains` and `relay_recipient_maps` as the running processes read them at the
    /// last reload.
    pub(crate) running: (String, String),
}

impl Postfix {
    /// A state Postfix has been reloaded in.
    pub(crate) fn reloaded(mut self) -> Postfix {
        self.running = (
            self.relay_domains.clone(),
            self.relay_recipient_maps.clone(),
        );
        self
    }

    /// The state after `step` has succeeded.
    pub(crate) fn step(&mut self, step: Step<'_>) {
        match step {
            Step::WriteTransport(text) => self.transport = Some(text.to_owned()),
            Step::WriteRelayDomainsMap(text) => self.table = Some(text.to_owned()),
            Step::WriteRecipientsMap(text) => self.recipients = Some(text.to_owned()),
            Step::SetRelayDomains(value) => self.relay_domains = value.to_owned(),
            Step::SetRelayRecipientMaps(value) => self.relay_recipient_maps = value.to_owned(),
            Step::Reload => {
                self.running = (
                    self.relay_domains.clone(),
                    self.relay_recipient_maps.clone(),
                )
            }
            Step::RebuildTransportMap => {}
        }
    }

    /// The two views in force: main.cf's parameters and the running ones.
    fn views(&self) -> [(&str, &str); 2] {
        [
            (&self.relay_domains, &self.relay_recipient_maps),
            (&self.running.0, &self.running.1),
        ]
    }

    /// The domains a `relay_domains` value relays with the tables as they are: its plain names,
    /// and the relay-domains table's keys when it names the table.
    pub(crate) fn relayed_by(&self, relay_domains: &str) -> BTreeSet<DomainName> {
        let parsed = RelayDomains::parse(relay_domains).unwrap();
        let mut out = parsed.domains.clone();
        let table = RelayDomainsTable::new("hash", TABLE, self.table.as_deref());
        if table.is_named_in(&parsed) {
            out.extend(table.domains());
        }
        out
    }

    /// Every domain a view in force relays.
    pub(crate) fn relayed(&self) -> BTreeSet<DomainName> {
        let mut out = self.relayed_by(&self.relay_domains);
        out.extend(self.relayed_by(&self.running.0));
        out
    }

    /// Whether the transport file routes `domain`, read as postmap reads it (the managed block's
    /// markers are comments to postmap, so a broken block routes as well).
    pub(crate) fn routes(&self, domain: &DomainName) -> bool {
        self.transport
            .as_deref()
            .unwrap_or("")
            .lines()
            .filter(|line| !line.starts_with(|c: char| c.is_ascii_whitespace()))
            .filter_map(|line| line.split_ascii_whitespace().next())
            .any(|key| !key.starts_with('#') && key.eq_ignore_ascii_case(domain.as_str()))
    }

    /// The relayed domains without a route: empty in every state relay-sync passes through.
    pub(crate) fn unrouted(&self) -> Vec<DomainName> {
        self.relayed()
            .into_iter()
            .filter(|domain| !self.routes(domain))
            .collect()
    }

    /// Whether every view in force accepts `address` (lowercase `local@domain`): its domain is
    /// relayed and, while `relay_recipient_maps` names tables, relay-sync's table holds the
    /// address or its domain's catch-all (any other table is empty in this model).
    pub(crate) fn accepts(&self, address: &str) -> bool {
        let (_, domain) = address.split_once('@').unwrap();
        let name = DomainName::parse(domain).unwrap();
        let table = RecipientsTable::new("hash", RECIPIENTS, self.recipients.as_deref());
        let catch_all = format!("@{domain}");
        self.views().iter().all(|(relay_domains, maps)| {
            if !self.relayed_by(relay_domains).contains(&name) {
                return false;
            }
            let mut tokens = maps
                .split([',', ' '])
                .filter(|token| !token.is_empty())
                .peekable();
            if tokens.peek().is_none() {
                return true;
            }
            tokens.any(|token| table.is_named_by(token))
                && table.keys().any(|key| key == address || key == catch_all)
        })
    }
}

/// Every address the properties tell apart: each local part (and an unknown one) at each
/// domain of [`SMALL_DOMAINS`](crate::strategies::SMALL_DOMAINS).
pub(crate) fn addresses() -> Vec<String> {
    let mut out = Vec::new();
    for domain in crate::strategies::SMALL_DOMAINS {
        for local in ["u1", "u2", "nobody"] {
            out.push(format!("{local}@{domain}"));
        }
    }
    out
}

/// Lines of a transport file outside the managed block.
pub(crate) fn outside_block(text: &str) -> Vec<&str> {
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

/// A consistent state: every relayed domain has a route (some by hand-written lines), the
/// recipients table in force lists recipients at relayed domains; reloaded.
pub(crate) fn postfix_strategy() -> impl Strategy<Value = Postfix> {
    (
        (
            prop::collection::vec(preserved_token_strategy(), 0..2),
            small_domain_set_strategy(5),
            any::<bool>(),
            prop::option::of(small_domain_set_strategy(5)),
        ),
        (
            prop::collection::vec(hand_line_strategy(), 0..3),
            prop::collection::vec(hand_line_strategy(), 0..2),
            any::<u8>(),
        ),
        (prop::option::of(users_strategy()), users_strategy(), 0..3u8),
    )
        .prop_map(
            |((tokens, domains, map, leftover), (above, below, split), (users, left, extra))| {
                let mut before = Postfix::default();
                let mut relay = RelayDomains {
                    preserved_tokens: tokens,
                    domains: domains.clone(),
                };
                if map {
                    relay.preserved_tokens.push(format!("hash:{TABLE}"));
                    relay.domains.clear();
                    before.table = Some(RelayDomainsTable::render(&domains));
                } else {
                    before.table = leftover.map(|set| RelayDomainsTable::render(&set));
                }
                before.relay_domains = relay.render();
                before.transport = Some(routed_transport(&domains, &above, &below, split));
                let mut maps = Vec::new();
                if extra == 2 {
                    maps.push("hash:/etc/postfix/operator".to_owned());
                }
                match users {
                    Some(users) => {
                        let keys = users
                            .iter()
                            .filter(|u| domains.iter().any(|d| d.as_str() == u.domain()))
                            .map(Recipient::as_str);
                        before.recipients = Some(RecipientsTable::render(keys));
                        maps.push(format!("hash:{RECIPIENTS}"));
                    }
                    // Validation was on once: its table is left, named by nothing.
                    None if extra == 1 => {
                        before.recipients =
                            Some(RecipientsTable::render(left.iter().map(Recipient::as_str)));
                    }
                    None => {}
                }
                before.relay_recipient_maps = maps.join(", ");
                before.reloaded()
            },
        )
}
