//! What `--dry-run` prints: the plan, the guard's verdict, the steps, and the diff of every file
//! that would change.

use std::fmt::Write as _;

use relay_core::{cut_list, escape_for_log, Refusal, Step};
use relay_engine::Prepared;

/// Renders the dry-run report for `prepared` and the guard's `verdict`.
pub(crate) fn dry_run(
    prepared: &Prepared,
    verdict: &Result<(), Refusal>,
    transport_file: &str,
) -> String {
    let plan = &prepared.plan;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "relay-sync dry run: nothing has been changed");
    let _ = writeln!(
        out,
        "database: {} valid domains, {} invalid rows skipped, {} duplicates",
        prepared.plan.database_domains,
        prepared.rejected.len(),
        prepared.duplicates
    );
    for rejected in &prepared.rejected {
        let _ = writeln!(
            out,
            "  skipped {} ({})",
            escape_for_log(&rejected.raw),
            rejected.reason
        );
    }
    let _ = writeln!(
        out,
        "added ({}): {}",
        plan.added.len(),
        cut_list(&plan.added, 100)
    );
    let _ = writeln!(
        out,
        "removed ({}): {}",
        plan.removed.len(),
        cut_list(&plan.removed, 100)
    );
    for name in &plan.hand_written {
        let _ = writeln!(out, "kept hand-written transport line for {name}");
    }
    match verdict {
        Ok(()) => {
            let _ = writeln!(out, "guard: would apply");
        }
        Err(refusal) => {
            let _ = writeln!(out, "guard: would refuse: {refusal}");
        }
    }
    let _ = writeln!(out, "steps:");
    for (i, step) in prepared.steps().iter().enumerate() {
        let what = match step {
            Step::WriteTransport(text) if *text == plan.transport_final => {
                format!("write {transport_file} (final) and postmap it")
            }
            Step::WriteTransport(_) => {
                format!("write {transport_file} with old and new entries and postmap it")
            }
            Step::RebuildTransportMap => {
                format!("postmap {transport_file} (map older than source)")
            }
            Step::WriteRelayDomainsMap(_) => {
                "write the relay domains map (RELAY_DOMAINS_MAP) and postmap it".to_owned()
            }
            Step::SetRelayDomains(_) => "postconf -e relay_domains = (below)".to_owned(),
            Step::Reload => "postfix reload".to_owned(),
        };
        let _ = writeln!(out, "  {}. {what}", i + 1);
    }
    if plan.relay_domains_changed() {
        let _ = writeln!(out, "--- relay_domains (current)\n+++ relay_domains (new)");
        let _ = writeln!(out, "-{}", prepared.relay_domains_before);
        let _ = writeln!(out, "+{}", plan.relay_domains_value);
    }
    if plan.transport_changed() {
        let diff = similar::TextDiff::from_lines(
            prepared.transport_before.as_deref().unwrap_or_default(),
            plan.transport_final.as_str(),
        );
        let _ = write!(
            out,
            "{}",
            diff.unified_diff().context_radius(2).header(
                &format!("{transport_file} (current)"),
                &format!("{transport_file} (new)")
            )
        );
    }
    out
}
