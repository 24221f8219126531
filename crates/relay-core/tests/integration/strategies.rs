//! Generators shared by the properties.

use std::collections::BTreeSet;

use proptest::prelude::*;
use relay_core::{DomainName, NextHop, Transport, TransportFile};

/// Valid domain names from a small alphabet, so that sets overlap often.
pub(crate) fn domain_strategy() -> impl Strategy<Value = DomainName> {
    (
        "[a-e]{1,3}",
        prop::sample::select(vec!["example", "test", "co.jp"]),
    )
        .prop_map(|(label, tail)| DomainName::parse(&format!("{label}.{tail}")).unwrap())
}

/// Sets of valid domain names.
pub(crate) fn domain_set_strategy() -> impl Strategy<Value = BTreeSet<DomainName>> {
    prop::collection::btree_set(domain_strategy(), 0..12)
}

/// Tokens that are not plain domain names and must be preserved verbatim.
pub(crate) fn preserved_token_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$mydestination".to_owned()),
        "\\$[a-z_]{1,12}",
        "hash:/etc/postfix/[a-z]{1,8}",
        "/etc/postfix/[a-z]{1,8}",
        "\\.[a-c]{1,3}\\.example",
    ]
}

/// Values a hostile or broken database row may hold.
pub(crate) fn hostile_string_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-z]{1,6}[ ,\n\r\t:;\\[\\]$/{}=#\u{0}\u{7f}]{1,3}[a-z.]{0,10}",
        "[a-z]{1,5}\\.com smtp:\\[[0-9.]{1,15}\\]:[0-9]{1,5}",
        "\\$[a-z_]{1,12}",
        "(hash|lmdb|mysql|regexp):/[a-z/]{1,20}",
        "[a-z]{64,70}\\.example",
        "[a-z]{1,5}\\.[a-z]{1,5}\n[a-z]{1,5}\\.example",
        "\\PC{1,10}\\.example",
    ]
}

/// Hand-written transport lines outside the managed block: comments, blanks, entries, and
/// continuation lines.
pub(crate) fn hand_line_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "# [ -~]{0,30}",
        "[a-z]{1,4}\\.(other|example) (smtp|relay|error):[ -~]{0,20}",
        "\\.[a-z]{1,4}\\.example smtp:\\[192\\.0\\.2\\.[0-9]\\]",
        "[ \t]+[ -~]{1,20}",
    ]
}

/// The next hop every test writes: the document's mailbox host.
pub(crate) fn hop() -> NextHop {
    NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap()
}

/// The domains of the small world the properties over whole gateways use, so that relayed
/// domains, recipients and tables overlap often.
pub(crate) const SMALL_DOMAINS: [&str; 5] = [
    "a.example",
    "b.example",
    "c.example",
    "d.example",
    "e.example",
];

/// Sets of domains from [`SMALL_DOMAINS`].
pub(crate) fn small_domain_set_strategy(max: usize) -> impl Strategy<Value = BTreeSet<DomainName>> {
    prop::collection::btree_set(
        prop::sample::select(SMALL_DOMAINS.to_vec()).prop_map(|d| DomainName::parse(d).unwrap()),
        0..max,
    )
}

/// Sets of recipients at [`SMALL_DOMAINS`]: addresses and catch-alls.
pub(crate) fn users_strategy() -> impl Strategy<Value = BTreeSet<relay_core::Recipient>> {
    prop::collection::btree_set(
        (
            prop::sample::select(vec!["", "u1", "u2", "U2"]),
            prop::sample::select(SMALL_DOMAINS.to_vec()),
        )
            .prop_map(|(local, domain)| {
                relay_core::Recipient::parse(&format!("{local}@{domain}")).unwrap()
            }),
        0..8,
    )
}

/// A transport file that routes every one of `domains`: one in four (chosen by `split`) by a
/// hand-written line, the rest in the managed block, between the hand-written lines `above`
/// and `below`.
pub(crate) fn routed_transport(
    domains: &BTreeSet<DomainName>,
    above: &[String],
    below: &[String],
    split: u8,
) -> String {
    let (hand, managed): (Vec<_>, Vec<_>) = domains
        .iter()
        .enumerate()
        .partition(|(i, _)| (*i as u8).wrapping_add(split).is_multiple_of(4));
    let mut text = String::new();
    for line in above {
        text.push_str(line);
        text.push('\n');
    }
    for (_, d) in &hand {
        text.push_str(&format!("{d} smtp:[192.0.2.9]:25\n"));
    }
    let hop = hop().to_string();
    let mut text = TransportFile::parse(&text)
        .unwrap()
        .render(managed.iter().map(|(_, d)| (d.as_str(), hop.as_str())));
    for line in below {
        text.push_str(line);
        text.push('\n');
    }
    text
}
