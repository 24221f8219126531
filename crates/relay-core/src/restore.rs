//! What a restore would put in place that a sync never writes: the review `relay-sync rollback`
//! shows in `--dry-run` and needs `--force` for.
//!
//! A sync parses the database's rows, so a hostile row never reaches Postfix; a restore parses
//! the generation it restores the same way, since a backup holds whatever `relay_domains` and
//! transport file Postfix had. Restoring one that relays every domain (`static:OK`) or routes
//! every recipient (`*`) would make the gateway an open relay, and later syncs would keep it
//! (as a token and a hand-written line they do not manage). So the review names, in the
//! generation:
//!
//! - a `relay_domains` token that matches more than the names it lists: a `static:` table
//!   (every domain), a `pcre:` or `regexp:` table, or a pattern (`.example.com`, a glob);
//! - a `relay_domains` value relay-sync cannot sync over (`{ }` grouping, a `!` exclusion);
//! - a transport line outside the managed block that routes `*` (every recipient), or a
//!   domain that `relay_domains` will not relay after the restore.
//!
//! Each only when the current state does not already have it: what is in place now is the
//! operator's (a sync keeps it as well), and a restore is judged on what it adds.

use std::collections::BTreeSet;

use crate::transport::routes;
use crate::{DomainName, GenerationTexts, RelayDomains, RelayDomainsError, TransportFile};

/// What the review reads. No I/O: the caller has read it all.
#[derive(Debug, Clone, Copy)]
pub struct RestoreReviewInput<'a> {
    /// `relay_domains` as it is now.
    pub current_relay_domains: &'a str,
    /// The transport file as it is now, `None` when it does not exist.
    pub current_transport: Option<&'a str>,
    /// Map mode's relay-domains table source as it is now, `None` when it does not exist.
    pub current_table: Option<&'a str>,
    /// `RELAY_DOMAINS_MAP`, the table's source file.
    pub table_path: &'a str,
    /// The generation to restore.
    pub generation: GenerationTexts<'a>,
}

/// One thing a restore would put in place that a sync never writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreConcern {
    /// A `relay_domains` token that matches more than the names it lists.
    #[error("relay_domains token {token:?}: {why}")]
    Token {
        /// The token, as the generation has it.
        token: String,
        /// What it matches.
        why: String,
    },
    /// A `relay_domains` value relay-sync cannot sync over.
    #[error("its relay_domains cannot be synced over: {0}")]
    RelayDomains(RelayDomainsError),
    /// A hand-written transport line that routes `*` or a domain not relayed after it.
    #[error("transport line {line:?} outside the managed block {why}")]
    TransportLine {
        /// The line, as the generation has it.
        line: String,
        /// What it routes.
        why: String,
    },
}

/// What restoring `input.generation` would add that a sync never writes, in file order; empty
/// when a restore needs no `--force`.
///
/// ```
/// use relay_core::{review_restore, GenerationTexts, RestoreReviewInput};
/// let concerns = review_restore(RestoreReviewInput {
///     current_relay_domains: "a.example",
///     current_transport: None,
///     current_table: None,
///     table_path: "/etc/postfix/relay_domains",
///     generation: GenerationTexts {
///         relay_domains: "static:OK",
///         transport: "* smtp:[192.0.2.1]:25\n",
///         table: None,
///     },
/// });
/// assert_eq!(concerns.len(), 2);
/// assert!(concerns[0].to_string().starts_with(r#"relay_domains token "static:OK""#));
/// ```
pub fn review_restore(input: RestoreReviewInput<'_>) -> Vec<RestoreConcern> {
    let mut concerns = Vec::new();
    let current = RelayDomains::parse(input.current_relay_domains).unwrap_or_default();
    let restored = match RelayDomains::parse(input.generation.relay_domains) {
        Ok(restored) => restored,
        Err(error) => {
            concerns.push(RestoreConcern::RelayDomains(error));
            RelayDomains::default()
        }
    };
    for token in &restored.preserved_tokens {
        if current.preserved_tokens.contains(token) {
            continue;
        }
        if let Some(why) = wider_than_its_names(token) {
            concerns.push(RestoreConcern::Token {
                token: token.clone(),
                why,
            });
        }
    }

    // What relay_domains relays after the restore, as far as the texts say: its domains, and
    // the keys of relay-sync's table when it names it.
    let table = crate::RelayDomainsTable::new(
        "",
        input.table_path,
        input.generation.table.or(input.current_table),
    );
    let mut relayed: BTreeSet<DomainName> = restored.domains.clone();
    if table.is_named_in(&restored) {
        relayed.extend(table.domains());
    }
    let hand_written_now: BTreeSet<(String, &str)> = input
        .current_transport
        .map(|text| outside_block(text).collect())
        .unwrap_or_default();
    for (key, value) in outside_block(input.generation.transport) {
        if hand_written_now.contains(&(key.clone(), value)) {
            continue;
        }
        let why = if key == "*" {
            Some("routes every recipient (`*`)".to_owned())
        } else {
            routed_domain(&key)
                .filter(|domain| !relayed.contains(domain))
                .map(|domain| {
                    format!(
                        "routes {}, which its relay_domains does not relay",
                        domain.as_str()
                    )
                })
        };
        if let Some(why) = why {
            concerns.push(RestoreConcern::TransportLine {
                line: format!("{key} {value}").trim_end().to_owned(),
                why,
            });
        }
    }
    concerns
}

/// Why a preserved `relay_domains` token matches more than the names it lists, or `None` for
/// one that does not (`$mydestination`, `hash:/etc/postfix/relay`, `/file/name`).
fn wider_than_its_names(token: &str) -> Option<String> {
    if let Some((map_type, _)) = token.split_once(':') {
        return match map_type.to_ascii_lowercase().as_str() {
            "static" => Some("a static: table matches every domain".to_owned()),
            kind @ ("pcre" | "regexp") => Some(format!(
                "a {kind}: table matches patterns, not the names it lists"
            )),
            _ => None,
        };
    }
    if token.starts_with('$') || token.starts_with('/') {
        return None;
    }
    if let Some(parent) = token.strip_prefix('.') {
        return Some(format!("a pattern matching every subdomain of {parent}"));
    }
    token
        .contains(['*', '?', '['])
        .then(|| "a pattern, not a domain name".to_owned())
}

/// The `key value` lines of a transport file outside its managed block (all of them when its
/// block cannot be told), keys lowercased.
fn outside_block(text: &str) -> impl Iterator<Item = (String, &str)> {
    let outside = match TransportFile::parse(text) {
        Ok(file) => file.outside_block(),
        Err(_) => (text, ""),
    };
    routes(outside.0)
        .chain(routes(outside.1))
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
}

/// The domain a transport key routes: `example.com`, `.example.com` (its subdomains) or
/// `user@example.com`; `None` for a key that is none of them.
fn routed_domain(key: &str) -> Option<DomainName> {
    let domain = key.rsplit_once('@').map_or(key, |(_, domain)| domain);
    let domain = domain.strip_prefix('.').unwrap_or(domain);
    DomainName::parse(domain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP: &str = "smtp:[192.0.2.1]:2525";

    fn review(current: (&str, &str), generation: (&str, &str), table: Option<&str>) -> Vec<String> {
        review_restore(RestoreReviewInput {
            current_relay_domains: current.0,
            current_transport: Some(current.1),
            current_table: None,
            table_path: "/etc/postfix/relay_domains",
            generation: GenerationTexts {
                relay_domains: generation.0,
                transport: generation.1,
                table,
            },
        })
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    /// The reproduction: `static:OK` and a `*` route, planted as a generation.
    #[test]
    fn an_open_relay_generation_is_named_token_and_line() {
        let block = format!(
            "{}\na.example {HOP}\n{}\n",
            crate::BEGIN_MARKER,
            crate::END_MARKER
        );
        let planted = format!("* smtp:[127.0.0.2]:2525\n{block}");
        assert_eq!(
            review(
                ("a.example", &block),
                ("static:OK, a.example", &planted),
                None
            ),
            [
                r#"relay_domains token "static:OK": a static: table matches every domain"#,
                r#"transport line "* smtp:[127.0.0.2]:2525" outside the managed block routes every recipient (`*`)"#,
            ]
        );
    }

    #[test]
    fn every_token_wider_than_its_names_is_named() {
        let generation = "$mydestination, hash:/etc/postfix/relay, /etc/postfix/more, \
                          pcre:/etc/postfix/relay.pcre, REGEXP:/x, .example.org, *.example.net, \
                          lmdb:/etc/postfix/relay_domains, b.example";
        let named = review(("a.example", ""), (generation, ""), None);
        assert_eq!(
            named,
            [
                r#"relay_domains token "pcre:/etc/postfix/relay.pcre": a pcre: table matches patterns, not the names it lists"#,
                r#"relay_domains token "REGEXP:/x": a regexp: table matches patterns, not the names it lists"#,
                r#"relay_domains token ".example.org": a pattern matching every subdomain of example.org"#,
                r#"relay_domains token "*.example.net": a pattern, not a domain name"#,
            ]
        );
        // What the current value already holds is the operator's: nothing new.
        assert!(review((generation, ""), (generation, ""), None).is_empty());
        let error = review(("a.example", ""), ("{a.example}", ""), None);
        assert!(
            error[0].starts_with("its relay_domains cannot be synced over: "),
            "{error:?}"
        );
    }

    /// A hand-written route for a domain the restored `relay_domains` does not relay (neither
    /// as a name nor through relay-sync's table) is named; one it relays, or one the current
    /// file already has, is not.
    #[test]
    fn a_route_for_a_domain_not_relayed_is_named_unless_it_is_there_now() {
        let generation = format!(
            "kept.example {HOP}\nuser@other.example {HOP}\n.sub.example {HOP}\n\
             tabled.example {HOP}\nold.example local:\n# a comment\n"
        );
        let named = review(
            ("a.example", "old.example local:\n"),
            ("kept.example, hash:/etc/postfix/relay_domains", &generation),
            Some("tabled.example OK\n"),
        );
        assert_eq!(
            named,
            [
                format!(
                    r#"transport line "user@other.example {HOP}" outside the managed block routes other.example, which its relay_domains does not relay"#
                ),
                format!(
                    r#"transport line ".sub.example {HOP}" outside the managed block routes sub.example, which its relay_domains does not relay"#
                ),
            ]
        );
        // The managed block routes only what relay-sync wrote: never named.
        let block = format!(
            "{}\nz.example {HOP}\n{}\n",
            crate::BEGIN_MARKER,
            crate::END_MARKER
        );
        assert!(review(("a.example", ""), ("a.example", &block), None).is_empty());
    }
}
