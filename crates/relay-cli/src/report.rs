//! What `--dry-run` prints: the plan, the guard's verdict, the steps, and the diff of every file
//! that would change.

use std::fmt::Write as _;

use relay_core::{cut_list, escape_for_log, escape_log_line, Refusal};
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
        // A detail can quote a file, a server's error or a hold: one line, however it reads.
        out.push_str(&format!(
            "{tag} {:<16} {}\n",
            item.name,
            escape_log_line(&item.detail)
        ));
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

/// `status`'s human-readable form. Every value goes through the one log escaper as its line
/// is written: a hold's `by` and `since`, the last result, a problem's text and the paths come
/// from files and the environment, and none may start a line of its own or drive the terminal.
pub(crate) fn status(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<17}{}\n", escape_log_line(&value)));
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

/// What `relay-sync rollback --dry-run` prints: the generation, `relay_domains` before and
/// after, and what needs `--force`. Every value read from a backup goes through the log
/// escaper.
pub(crate) fn rollback_preview(preview: &relay_ops::rollback::RollbackPreview) -> String {
    let mut out = format!(
        "relay-sync rollback dry run: would restore backup {} ({})\n",
        preview.stamp, preview.origin
    );
    let _ = writeln!(
        out,
        "relay_domains now:   {}",
        escape_log_line(&preview.relay_domains_now)
    );
    let _ = writeln!(
        out,
        "relay_domains after: {}",
        escape_log_line(&preview.relay_domains)
    );
    if preview.concerns.is_empty() {
        out.push_str("nothing in it needs --force\n");
        return out;
    }
    let _ = writeln!(
        out,
        "needs --force{}:",
        if preview.forced { " (given)" } else { "" }
    );
    for concern in &preview.concerns {
        let _ = writeln!(out, "  {}", escape_log_line(concern));
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
        let line = format!(
            "{}  {:<8} {} domain(s) in relay_domains{table}; {}{}",
            g.stamp,
            g.origin,
            g.relay_domains,
            g.files.join(" + "),
            if i == newest { "  (newest)" } else { "" }
        );
        // Names read from BACKUP_DIR's index: one line each, whatever they hold.
        let _ = writeln!(out, "{}", escape_log_line(&line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status` with a hold whose `by` and `since` hold a newline and a terminal escape (a
    /// `SUDO_USER` of someone's choosing, a hand-edited hold file), and a last result and a
    /// problem that do too: every line is one line, and no ESC reaches the terminal.
    #[test]
    fn status_escapes_everything_it_prints() {
        let hostile = "x\n[2026-01-01 00:00:00] INFO: forged\u{1b}[2J\u{202e}";
        let status = Status {
            config: Some(std::path::PathBuf::from(format!("/etc/{hostile}"))),
            last_exit: Some(3),
            last_result: hostile.to_owned(),
            last_run: hostile.to_owned(),
            last_success: hostile.to_owned(),
            consecutive_failures: 1,
            consecutive_db_failures: 1,
            transport_file: std::path::PathBuf::from("/etc/postfix/transport"),
            managed_domains: Vec::new(),
            recipients: None,
            backup_dir: std::path::PathBuf::from("/opt/mailserver/backup"),
            backups: vec![hostile.to_owned()],
            invalid_rows: vec![hostile.to_owned()],
            hold: Some(relay_ops::Hold {
                reason: hostile.to_owned(),
                by: hostile.to_owned(),
                since: hostile.to_owned(),
            }),
            problems: vec![hostile.to_owned()],
        };
        let out = super::status(&status);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out}"
        );
        assert!(!out.contains("\n[2026"), "a line was forged:\n{out}");
        let held = out.lines().find(|l| l.starts_with("HELD:")).unwrap();
        assert_eq!(
            held,
            "HELD:            syncs are held by x\\n[2026-01-01 00:00:00] INFO: forged\\u{1b}[2J\\u{202e} \
             since x\\n[2026-01-01 00:00:00] INFO: forged\\u{1b}[2J\\u{202e}: \
             x\\n[2026-01-01 00:00:00] INFO: forged\\u{1b}[2J\\u{202e}; `relay-sync release` lifts it"
        );
        assert_eq!(out.lines().count(), 10, "{out}");
    }
}
