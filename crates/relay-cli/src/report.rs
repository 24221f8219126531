//! What `--dry-run` prints: the plan, the guard's verdict, the steps, and the diff of every file
//! that would change.

use std::fmt::Write as _;

use relay_core::{cut_list, escape_for_log, Refusal};
use relay_engine::Prepared;
use relay_ops::check::Level as CheckLevel;
use relay_ops::rollback::Generation;
use relay_ops::{CheckReport, Status};

/// Renders the dry-run report for `prepared` and the guard's `verdict`.
/// The recipient side of a dry run: counts, rejected rows, and the diff of the table.
fn recipients(out: &mut String, prepared: &Prepared, r: &relay_core::RecipientPlan) {
    if !r.enabled {
        let _ = writeln!(
            out,
            "recipients: validation off; {} leaves relay_recipient_maps",
            r.path
        );
        return;
    }
    let _ = writeln!(
        out,
        "recipients: {} in {} ({} invalid rows skipped, {} duplicates, {} at domains not relayed)",
        r.entries,
        r.path,
        prepared.rejected_recipients.len(),
        prepared.duplicate_recipients,
        r.outside
    );
    for rejected in &prepared.rejected_recipients {
        let _ = writeln!(
            out,
            "  skipped {} ({})",
            escape_for_log(&rejected.raw),
            rejected.reason
        );
    }
    if !r.active_now {
        let _ = writeln!(out, "recipient validation turns on");
    }
    let _ = writeln!(
        out,
        "recipients added ({}): {}",
        r.added,
        cut_list(&r.added_sample, 100)
    );
    let _ = writeln!(
        out,
        "recipients removed ({}): {}",
        r.removed,
        cut_list(&r.removed_sample, 100)
    );
    if !r.domains_without_recipients.is_empty() {
        let _ = writeln!(
            out,
            "relayed domains without recipients (all their mail refused): {}",
            cut_list(&r.domains_without_recipients, 100)
        );
    }
}

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
    if let Some(r) = &plan.recipients {
        recipients(&mut out, prepared, r);
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
        // The same words as `--dry-run --json`'s steps.
        let what = relay_ops::json::describe_step(step, plan, transport_file).detail;
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

/// `check`'s human-readable form: one line per check, then the verdict.
pub(crate) fn check(report: &CheckReport) -> String {
    let mut out = String::new();
    for item in &report.checks {
        let tag = match item.status {
            CheckLevel::Ok => "ok  ",
            CheckLevel::Warn => "WARN",
            CheckLevel::Fail => "FAIL",
        };
        out.push_str(&format!("{tag} {:<16} {}\n", item.name, item.detail));
    }
    let failed = report
        .checks
        .iter()
        .filter(|i| i.status == CheckLevel::Fail)
        .count();
    let warned = report
        .checks
        .iter()
        .filter(|i| i.status == CheckLevel::Warn)
        .count();
    out.push_str(&match (failed, warned) {
        (0, 0) => "check passed\n".to_owned(),
        (0, w) => format!("check passed with {w} warning(s)\n"),
        (f, _) => {
            format!("check FAILED: {f} problem(s); relay-sync cannot sync until they are fixed\n")
        }
    });
    out
}

/// `status`'s human-readable form.
pub(crate) fn status(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<17}{value}\n"));
    };
    line(
        "config:",
        status.config.as_ref().map_or_else(
            || "(environment only)".to_owned(),
            |p| p.display().to_string(),
        ),
    );
    match status.last_exit {
        None => line("last run:", "never (no state in STATE_DIR yet)".to_owned()),
        Some(exit) => line(
            "last run:",
            format!(
                "{} exit {exit} ({})",
                status.last_run,
                if exit == 0 { "ok" } else { "FAILED" }
            ),
        ),
    }
    if status.last_exit.is_some() {
        line("last result:", status.last_result.clone());
    }
    line(
        "last success:",
        if status.last_success.is_empty() {
            "never".to_owned()
        } else {
            status.last_success.clone()
        },
    );
    line(
        "failure streak:",
        format!(
            "{} run(s), {} of them database failures",
            status.consecutive_failures, status.consecutive_db_failures
        ),
    );
    line(
        "managed domains:",
        format!(
            "{} in {}{}",
            status.managed_domains.len(),
            status.transport_file.display(),
            if status.managed_domains.is_empty() {
                String::new()
            } else {
                format!(": {}", cut_list(&status.managed_domains, 100))
            }
        ),
    );
    if let Some(count) = status.recipients {
        line(
            "recipients:",
            format!("{count} accepted (recipient validation on)"),
        );
    }
    line(
        "backups:",
        match status.backups.last() {
            None => format!("none in {}", status.backup_dir.display()),
            Some(newest) => format!(
                "{} in {}, newest {newest}",
                status.backups.len(),
                status.backup_dir.display()
            ),
        },
    );
    if let Some(hold) = &status.hold {
        line(
            "HELD:",
            format!("syncs are {hold}; `relay-sync release` lifts it"),
        );
    }
    if !status.invalid_rows.is_empty() {
        line(
            "invalid rows:",
            format!(
                "{} skipped: {}",
                status.invalid_rows.len(),
                cut_list(
                    status.invalid_rows.iter().map(|raw| escape_for_log(raw)),
                    100
                )
            ),
        );
    }
    for problem in &status.problems {
        line("PROBLEM:", problem.clone());
    }
    out
}

/// What `relay-sync backups` prints: one line per generation, oldest first.
pub(crate) fn backups(dir: &std::path::Path, generations: &[Generation]) -> String {
    if generations.is_empty() {
        return format!("no backups in {}\n", dir.display());
    }
    let mut out = format!("backups in {} (oldest first):\n", dir.display());
    let newest = generations.len() - 1;
    for (i, g) in generations.iter().enumerate() {
        let table = g
            .in_table
            .map(|keys| format!(", {keys} in its table"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {:<8} {} domain(s) in relay_domains{table}; {}{}",
            g.stamp,
            g.origin,
            g.relay_domains,
            g.files.join(" + "),
            if i == newest { "  (newest)" } else { "" }
        );
    }
    out
}
