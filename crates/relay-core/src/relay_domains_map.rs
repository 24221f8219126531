//! Map mode (SPEC §5, `RELAY_DOMAINS_MODE=map`): `relay_domains` names a lookup table
//! (`TYPE:PATH`) whose source file relay-sync owns entirely, one `domain OK` line per relayed
//! domain ([`RelayDomainsTable`]). Inline mode writes the domains into `relay_domains` itself.
//!
//! Either mode recognises the other's state, so switching is an ordinary plan: the domains
//! relayed through the table count as current domains in inline mode, and the inline domains
//! count as current domains in map mode. Nothing is removed by a switch alone, so the guard
//! never mistakes it for a mass removal.

use std::collections::BTreeSet;

use crate::{DomainName, RelayDomains, RelayDomainsTable};

/// `RELAY_DOMAINS_MODE`: where the managed domains live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayDomainsMode {
    /// In `relay_domains` itself, written with `postconf -e` (the document's way).
    #[default]
    Inline,
    /// In the table `RELAY_DOMAINS_MAP`, named by `relay_domains` as `MAP_TYPE:PATH`.
    Map,
}

impl RelayDomainsTable<'_> {
    /// Whether one of `relay_domains`' preserved tokens names this table ([`Self::is_named_by`]).
    pub fn is_named_in(&self, relay_domains: &RelayDomains) -> bool {
        relay_domains
            .preserved_tokens
            .iter()
            .any(|token| self.is_named_by(token))
    }

    /// The domains the table's source file lists. Lines that are not `domain value` entries
    /// with a valid domain name are ignored: the file is relay-sync's, and they are overwritten.
    pub fn domains(&self) -> BTreeSet<DomainName> {
        self.keys()
            .filter_map(|key| DomainName::parse(key).ok())
            .collect()
    }
}
