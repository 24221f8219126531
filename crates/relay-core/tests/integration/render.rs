//! Snapshot of what relay-sync would write, for each case in `fixtures/render/*.in`.
//!
//! A case file has sections introduced by `--- NAME` lines: `database` (raw rows, one a line),
//! `preserve`, `relay_domains` (the current value), and `transport` (the current file; leave the
//! section out for a missing file). The snapshot shows the plan, the guard's verdict, the steps,
//! and every text written, so a reviewer sees exactly what an operator's files become.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use relay_core::{
    apply_steps, cut_list, escape_for_log, guard, normalize_rows, DomainName, GuardSettings,
    NextHop, Plan, PlanInput, Step, Transport,
};

fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("--- ") {
            current = Some(name.trim().to_owned());
            out.insert(name.trim().to_owned(), String::new());
        } else if let Some(name) = &current {
            out.get_mut(name).unwrap().push_str(line);
        }
    }
    out
}

#[test]
fn render_cases() {
    insta::glob!("../../../../fixtures/render", "*.in", |path| {
        let input = std::fs::read_to_string(path).unwrap();
        let sections = sections(&input);
        let rows: Vec<&str> = sections
            .get("database")
            .map_or(vec![], |s| s.lines().collect());
        let preserve = sections.get("preserve").map_or(Default::default(), |s| {
            s.split_whitespace()
                .map(|d| DomainName::parse(d).unwrap())
                .collect()
        });
        let relay_domains = sections.get("relay_domains").map_or("", |s| s.trim_end());
        let transport = sections.get("transport").map(String::as_str);
        let hop = NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap();

        let normalized = normalize_rows(&rows);
        let mut out = String::new();
        for rejected in &normalized.rejected {
            writeln!(
                out,
                "rejected: {} ({})",
                escape_for_log(&rejected.raw),
                rejected.reason
            )
            .unwrap();
        }
        match Plan::new(PlanInput {
            database: &normalized.valid,
            preserve: &preserve,
            relay_domains,
            transport,
            next_hop: &hop,
        }) {
            Err(e) => writeln!(out, "plan error: {e}").unwrap(),
            Ok(plan) => {
                writeln!(out, "added: {}", cut_list(&plan.added, 100)).unwrap();
                writeln!(out, "removed: {}", cut_list(&plan.removed, 100)).unwrap();
                writeln!(out, "hand-written: {}", cut_list(&plan.hand_written, 100)).unwrap();
                writeln!(out, "guard: {:?}", guard(&plan, GuardSettings::default())).unwrap();
                writeln!(out, "steps:").unwrap();
                for step in apply_steps(&plan, true) {
                    let line = match step {
                        Step::WriteTransport(t) if t == plan.transport_final => {
                            "write final transport".to_owned()
                        }
                        Step::WriteTransport(_) => "write union transport".to_owned(),
                        other => format!("{other:?}"),
                    };
                    writeln!(out, "  {line}").unwrap();
                }
                writeln!(out, "--- relay_domains\n{}", plan.relay_domains_value).unwrap();
                if let Some(union) = &plan.transport_union {
                    write!(out, "--- transport (union)\n{union}").unwrap();
                }
                write!(out, "--- transport (final)\n{}", plan.transport_final).unwrap();
            }
        }
        insta::assert_snapshot!(out);
    });
}
