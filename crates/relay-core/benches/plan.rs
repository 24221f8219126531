//! relay-core's plan + render for a one-domain change at 100, 10k, 100k and 1M domains
//! (issue "Scale and speed": 1M ≤ 300 ms). Run with `cargo bench -p relay-core`.
//!
//! Each iteration is what a run does between reading Postfix's state and writing it: parse
//! `relay_domains`, the transport file and (map mode) the relay-domains table, compute the
//! plan, and render the new texts. The database's names arrive already normalized (that step
//! is measured separately as `normalize`).

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_core::{
    apply_steps, normalize_recipients, normalize_rows, DomainName, NextHop, Plan, PlanInput,
    Recipient, RecipientPlan, RecipientsInput, RecipientsTable, RelayDomainsMode,
    RelayDomainsTable, Transport,
};

const TABLE: &str = "/etc/postfix/relay_domains";
const RECIPIENTS: &str = "/etc/postfix/relay_recipients";

fn names(n: usize) -> BTreeSet<DomainName> {
    (0..n)
        .map(|i| DomainName::parse(&format!("d{i}.example")).unwrap())
        .collect()
}

/// The state a previous run left for `n - 1` domains, in `mode`.
struct Synced {
    relay_domains: String,
    transport: String,
    table: Option<String>,
}

fn synced(before: &BTreeSet<DomainName>, mode: RelayDomainsMode, hop: &NextHop) -> Synced {
    let empty = BTreeSet::new();
    let table = RelayDomainsTable::new("hash", TABLE, None);
    let plan = Plan::with_mode(
        PlanInput {
            database: before,
            preserve: &empty,
            relay_domains: "$mydestination",
            transport: None,
            next_hop: hop,
        },
        mode,
        Some(table),
    )
    .unwrap();
    Synced {
        relay_domains: plan.relay_domains_value,
        transport: plan.transport_final,
        table: plan.relay_domains_map,
    }
}

fn plan_and_render(c: &mut Criterion) {
    let hop = NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap();
    let empty = BTreeSet::new();
    let mut group = c.benchmark_group("plan_render_one_domain_change");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (mode, label, sizes) in [
        (RelayDomainsMode::Inline, "inline", &[100usize, 10_000][..]),
        (
            RelayDomainsMode::Map,
            "map",
            &[100usize, 10_000, 100_000, 1_000_000][..],
        ),
    ] {
        for &n in sizes {
            let database = names(n);
            let mut before = database.clone();
            before.pop_last();
            let state = synced(&before, mode, &hop);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    let plan = Plan::with_mode(
                        PlanInput {
                            database: &database,
                            preserve: &empty,
                            relay_domains: &state.relay_domains,
                            transport: Some(&state.transport),
                            next_hop: &hop,
                        },
                        mode,
                        Some(RelayDomainsTable::new(
                            "hash",
                            TABLE,
                            state.table.as_deref(),
                        )),
                    )
                    .unwrap();
                    assert_eq!(plan.added.len(), 1);
                    black_box(apply_steps(&plan, true).len());
                    plan
                });
            });
        }
    }
    group.finish();
}

/// Recipient validation at 1M recipients over 10k domains (issue 14: within the budget of a
/// million domains): plan the table against the one in force and render it. As for domains,
/// the rows arrive normalized (normalizing them is `normalize_recipients`).
fn recipients(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_render_one_recipient_change");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let domains = names(10_000);
    for n in [10_000usize, 100_000, 1_000_000] {
        let rows: Vec<String> = (0..n)
            .map(|i| format!("user{i}@d{}.example", i % 10_000))
            .collect();
        let before = normalize_recipients(rows[1..].to_vec()).valid;
        let table_text = RecipientsTable::render(before.iter().map(Recipient::as_str));
        let maps = format!("hash:{RECIPIENTS}");
        group.throughput(Throughput::Elements(n as u64));
        let valid = normalize_recipients(rows).valid;
        group.bench_with_input(BenchmarkId::new("map", n), &valid, |b, valid| {
            b.iter(|| {
                let plan = RecipientPlan::new(RecipientsInput {
                    database: Some(valid),
                    relayed: &domains,
                    table: RecipientsTable::new("hash", RECIPIENTS, Some(&table_text)),
                    relay_recipient_maps: &maps,
                })
                .unwrap()
                .unwrap();
                assert_eq!((plan.added, plan.removed), (1, 0));
                black_box(plan.first_write().map(str::len))
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("normalize_recipients");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [10_000usize, 1_000_000] {
        let rows: Vec<String> = (0..n)
            .map(|i| format!("user{i}@d{}.example", i % 10_000))
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &rows, |b, rows| {
            b.iter(|| normalize_recipients(rows.clone()).valid.len());
        });
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [100usize, 10_000, 100_000, 1_000_000] {
        let rows: Vec<String> = (0..n).map(|i| format!("d{i}.example")).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &rows, |b, rows| {
            b.iter(|| normalize_rows(rows).valid.len());
        });
    }
    group.finish();
}

criterion_group!(benches, plan_and_render, recipients, normalize);
criterion_main!(benches);
