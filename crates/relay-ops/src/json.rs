//! The JSON documents `relay-sync … --json` prints, for scripts, monitoring and the admin
//! panel: each carries a `"schema"` name with a version, and every time is RFC 3339 with its
//! offset. Their shapes are documented in `docs/json.md`, and as JSON Schema files generated
//! from these very types ([`schemas`]; `docs/schema/`, shipped in
//! `/usr/share/relay-sync/schema/`). A change that breaks a reader bumps the version.
//!
//! - `status --json` is [`status()`], schema `relay-sync.status/1`: counts by default, the
//!   managed domains only when asked (`--domains`), since a million-domain gateway would print
//!   a million lines.
//! - `check --json` is [`check()`], schema `relay-sync.check/2`.
//! - `sync --json` is [`sync()`], schema `relay-sync.sync/1`: what a run did.
//! - `sync --dry-run --json` is [`plan()`], schema `relay-sync.plan/1`: what a run would do.
//! - `backups --json` is [`backups()`], schema `relay-sync.backups/1`.

use std::path::Path;

use relay_core::{Plan, Refusal, Step, StepKind};
use relay_engine::Outcome;
use schemars::JsonSchema;
use serde::Serialize;

use crate::check::Report;
use crate::json_schema::every_field_required;
use crate::rollback::Generation;
use crate::status::Status;
use crate::sync::{DryRun, RunOutcome, RunRecord};
use crate::Hold;

/// The schema of `status --json`.
pub const STATUS_SCHEMA: &str = "relay-sync.status/1";
/// The schema of `check --json`. Version 2: every check's `name` is a snake_case identifier
/// ([`crate::check::CheckId`]); version 1 had `transport file`, `backup dir`, `main.cf`, ….
pub const CHECK_SCHEMA: &str = "relay-sync.check/2";
/// The schema of `sync --json`.
pub const SYNC_SCHEMA: &str = "relay-sync.sync/1";
/// The schema of `sync --dry-run --json`.
pub const PLAN_SCHEMA: &str = "relay-sync.plan/1";
/// The schema of `backups --json`.
pub const BACKUPS_SCHEMA: &str = "relay-sync.backups/1";

/// A run as JSON: the document `sync --json` prints ([`sync()`], schema
/// `relay-sync.sync/1`).
impl Serialize for RunRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        sync(self).serialize(serializer)
    }
}

/// `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
#[schemars(transform = status_fields_left_out)]
#[schemars(title = "relay-sync.status/1")]
pub struct StatusDocument<'a> {
    /// The document's schema and its version ([`STATUS_SCHEMA`]).
    #[schemars(description = "The document's schema and its version.")]
    #[schemars(extend("const" = STATUS_SCHEMA))]
    pub schema: &'static str,
    /// The configuration file, `null` when configured by environment only.
    pub config: Option<String>,
    /// The last run, `null` before the first one.
    pub last_run: Option<LastRun<'a>>,
    /// When the last successful run ended, `null` if none is known.
    pub last_success: Option<String>,
    /// Failed runs in a row, and how many of them could not read the database.
    pub consecutive_failures: u32,
    /// Database failures in a row.
    pub consecutive_db_failures: u32,
    /// The hold, while syncs are held.
    pub hold: Option<&'a Hold>,
    /// The transport file.
    pub transport_file: String,
    /// How many domains its managed block routes.
    pub managed_domain_count: usize,
    /// The managed domains, sorted; present only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_domains: Option<&'a [String]>,
    /// Recipient validation: entries in the recipients table; absent when it is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_count: Option<usize>,
    /// The backup directory.
    pub backup_dir: String,
    /// Backup generations, oldest first (their stamps, for `rollback --to`).
    pub backups: &'a [String],
    /// Rows the last run that read the database rejected, as the database returned them.
    pub invalid_rows: &'a [String],
    /// Problems found while reading the files `status` reads.
    pub problems: &'a [String],
}

/// The last run, in `status --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct LastRun<'a> {
    /// When it ended.
    pub ended_at: Option<String>,
    /// Its exit code (`man relay-sync`, EXIT STATUS).
    pub exit_code: u8,
    /// One line describing its result.
    pub result: &'a str,
}

/// `status --json`; `domains` adds the managed domains.
pub fn status(status: &Status, domains: bool) -> StatusDocument<'_> {
    StatusDocument {
        schema: STATUS_SCHEMA,
        config: status
            .config
            .as_ref()
            .map(|path| path.display().to_string()),
        last_run: status.last_exit.map(|exit_code| LastRun {
            ended_at: rfc3339(&status.last_run),
            exit_code,
            result: &status.last_result,
        }),
        last_success: rfc3339(&status.last_success),
        consecutive_failures: status.consecutive_failures,
        consecutive_db_failures: status.consecutive_db_failures,
        hold: status.hold.as_ref(),
        transport_file: status.transport_file.display().to_string(),
        managed_domain_count: status.managed_domains.len(),
        managed_domains: domains.then_some(status.managed_domains.as_slice()),
        recipient_count: status.recipients,
        backup_dir: status.backup_dir.display().to_string(),
        backups: &status.backups,
        invalid_rows: &status.invalid_rows,
        problems: &status.problems,
    }
}

/// `check --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
#[schemars(title = "relay-sync.check/2")]
pub struct CheckDocument<'a> {
    /// The document's schema and its version ([`CHECK_SCHEMA`]).
    #[schemars(description = "The document's schema and its version.")]
    #[schemars(extend("const" = CHECK_SCHEMA))]
    pub schema: &'static str,
    /// The report: `ok` (false when any check failed) and `checks` (`name`, `status` of
    /// `ok`/`warn`/`fail`, `detail`).
    #[serde(flatten)]
    pub report: &'a Report,
}

/// `check --json`.
pub fn check(report: &Report) -> CheckDocument<'_> {
    CheckDocument {
        schema: CHECK_SCHEMA,
        report,
    }
}

/// `sync --json`: what a run did.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
#[schemars(title = "relay-sync.sync/1")]
pub struct SyncDocument<'a> {
    /// The document's schema and its version ([`SYNC_SCHEMA`]).
    #[schemars(description = "The document's schema and its version.")]
    #[schemars(extend("const" = SYNC_SCHEMA))]
    pub schema: &'static str,
    /// The exit code (README, "Exit codes").
    pub exit_code: u8,
    /// How the run ended.
    pub outcome: SyncOutcome,
    /// One line, as `status` shows it: `synced: +4 -1`, `no changes`, `database failed: …`.
    pub result: String,
    /// When the run started.
    pub started_at: String,
    /// How long it took.
    pub duration_seconds: f64,
    /// Domains it added to what Postfix relays, sorted; empty unless it applied a change.
    pub added: Vec<&'a str>,
    /// Domains it removed, sorted; empty unless it applied a change.
    pub removed: Vec<&'a str>,
    /// The backup generation taken before the change (a stamp for `rollback --to`); `null`
    /// unless it applied a change.
    pub backup: Option<&'a str>,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncOutcome {
    /// The change was applied and verified (exit 0).
    Applied,
    /// Postfix already matched the database (exit 0).
    NoChange,
    /// Another run held the lock; this one did nothing (exit 0).
    Skipped,
    /// Syncs are held (`relay-sync hold`); nothing changed (exit 0).
    Held,
    /// The safety guard refused the change (exit 4).
    Refused,
    /// The current state cannot be planned against, e.g. a broken managed block (exit 4).
    Unplannable,
    /// The database could not be read (exit 3).
    DatabaseFailed,
    /// The password could not be had (exit 3).
    PasswordFailed,
    /// This host is not set up to sync: a missing Postfix command, a `transport_maps` that
    /// does not read the transport file (exit 2).
    NotReady,
    /// Postfix's current state could not be read (exit 5).
    ReadFailed,
    /// A step failed and was rolled back (exit 5).
    RolledBack,
    /// The reload or the rollback failed: manual intervention required (exit 6).
    Critical,
    /// relay-sync itself could not work (exit 1).
    Internal,
}

impl SyncOutcome {
    /// The kind of `outcome`.
    pub fn of(outcome: &RunOutcome) -> SyncOutcome {
        match outcome {
            RunOutcome::Sync(Outcome::Applied(_)) => SyncOutcome::Applied,
            RunOutcome::Sync(Outcome::NoChange) => SyncOutcome::NoChange,
            RunOutcome::Sync(Outcome::Refused(_)) => SyncOutcome::Refused,
            RunOutcome::Sync(Outcome::Unplannable(_)) => SyncOutcome::Unplannable,
            RunOutcome::Sync(Outcome::DatabaseFailed(_)) => SyncOutcome::DatabaseFailed,
            RunOutcome::Sync(Outcome::ReadFailed(_)) => SyncOutcome::ReadFailed,
            RunOutcome::Sync(Outcome::RolledBack(_)) => SyncOutcome::RolledBack,
            RunOutcome::Sync(Outcome::Critical { .. }) => SyncOutcome::Critical,
            RunOutcome::Skipped(_) => SyncOutcome::Skipped,
            RunOutcome::Held(_) => SyncOutcome::Held,
            RunOutcome::PasswordFailed(_) => SyncOutcome::PasswordFailed,
            RunOutcome::NotReady(_) => SyncOutcome::NotReady,
            RunOutcome::Internal(_) => SyncOutcome::Internal,
        }
    }
}

/// `sync --json`.
pub fn sync(record: &RunRecord) -> SyncDocument<'_> {
    let (added, removed) = record.changes();
    SyncDocument {
        schema: SYNC_SCHEMA,
        exit_code: record.exit_code(),
        outcome: SyncOutcome::of(&record.outcome),
        result: record.outcome.to_string(),
        started_at: record
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        duration_seconds: record.duration.as_secs_f64(),
        added,
        removed,
        backup: match &record.outcome {
            RunOutcome::Sync(Outcome::Applied(applied)) => Some(&applied.backup.stamp),
            _ => None,
        },
    }
}

/// `sync --dry-run --json`: what a run would do, and the exit code it would end with.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
#[schemars(title = "relay-sync.plan/1")]
pub struct PlanDocument<'a> {
    /// The document's schema and its version ([`PLAN_SCHEMA`]).
    #[schemars(description = "The document's schema and its version.")]
    #[schemars(extend("const" = PLAN_SCHEMA))]
    pub schema: &'static str,
    /// The exit code of the dry run: the one a real run would end with (4 when the guard
    /// would refuse).
    pub exit_code: u8,
    /// One line: `would sync: +4 -1`, `would refuse: …`, `no changes`, `database failed: …`.
    pub result: String,
    /// Whether a run would change anything.
    pub would_change: bool,
    /// What the database returned; `null` when no plan was made (no change, or a failure).
    pub database: Option<DatabaseRows<'a>>,
    /// Domains a run would add to what Postfix relays, sorted.
    pub added: Vec<&'a str>,
    /// Domains a run would remove, sorted.
    pub removed: Vec<&'a str>,
    /// Relayed domains whose hand-written transport line (outside the managed block) is kept
    /// in place of a managed one.
    pub hand_written: Vec<&'a str>,
    /// The safety guard's verdict on the change; `null` when there is nothing to guard.
    pub guard: Option<GuardVerdict>,
    /// The steps a run would take, in order.
    pub steps: Vec<PlanStep>,
    /// `relay_domains` before and after, when a run would change it.
    pub relay_domains: Option<ValueChange<'a>>,
    /// Recipient validation's side of the plan; `null` when it is off and nothing of it is
    /// left to take out.
    pub recipients: Option<RecipientsPlan<'a>>,
}

/// What the database returned, in `sync --dry-run --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct DatabaseRows<'a> {
    /// Valid domain names (each counted once).
    pub valid: usize,
    /// Valid rows that repeated an earlier name.
    pub duplicates: usize,
    /// Rows that are not valid names, in the database's order, as it returned them (escape
    /// them before printing them to a terminal).
    pub rejected: Vec<RejectedRow<'a>>,
}

/// A row relay-sync rejected.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct RejectedRow<'a> {
    /// The value as the database returned it.
    pub row: &'a str,
    /// Why it was rejected.
    pub reason: String,
}

/// The safety guard's verdict.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct GuardVerdict {
    /// `apply` or `refuse`.
    pub verdict: Verdict,
    /// Why it would refuse; `null` when it would apply.
    pub reason: Option<String>,
}

/// What the safety guard would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The change is within the limits (or `--force` lifts them).
    Apply,
    /// The change would be refused (exit 4).
    Refuse,
}

/// One step of a plan.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct PlanStep {
    /// What kind of step.
    pub step: StepKind,
    /// The step in words, with the file or value it writes.
    pub detail: String,
}

/// A parameter's value before and after.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct ValueChange<'a> {
    /// The value now.
    pub before: &'a str,
    /// The value a run would set.
    pub after: &'a str,
}

/// Recipient validation, in `sync --dry-run --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct RecipientsPlan<'a> {
    /// Whether validation is on (`RECIPIENTS_QUERY` set).
    pub enabled: bool,
    /// Entries in the recipients table once applied.
    pub entries: usize,
    /// Entries a run would add.
    pub added: usize,
    /// Entries a run would remove.
    pub removed: usize,
    /// `RECIPIENTS_QUERY` rows that are not valid recipients.
    pub rejected: Vec<RejectedRow<'a>>,
    /// Valid recipients at domains that are not relayed (left out of the table).
    pub outside: usize,
    /// Relayed domains with no recipient and no catch-all: all their mail is refused.
    pub domains_without_recipients: Vec<&'a str>,
}

/// `sync --dry-run --json` for a dry run's `result`; `transport_file` names the file in the
/// steps.
pub fn plan<'a>(result: &'a DryRun, transport_file: &Path) -> PlanDocument<'a> {
    let status = result.exit_status();
    let mut document = PlanDocument {
        schema: PLAN_SCHEMA,
        exit_code: status.code(),
        result: String::new(),
        would_change: false,
        database: None,
        added: Vec::new(),
        removed: Vec::new(),
        hand_written: Vec::new(),
        guard: None,
        steps: Vec::new(),
        relay_domains: None,
        recipients: None,
    };
    let (prepared, verdict) = match result {
        DryRun::Planned { prepared, verdict } => (prepared, verdict),
        DryRun::NoChange => {
            document.result = Outcome::NoChange.to_string();
            return document;
        }
        DryRun::Failed(outcome) => {
            document.result = outcome.to_string();
            return document;
        }
    };
    let plan = &prepared.plan;
    let names = |set: &'a std::collections::BTreeSet<relay_core::DomainName>| {
        set.iter().map(relay_core::DomainName::as_str).collect()
    };
    document.result = match verdict {
        Ok(()) => format!("would sync: +{} -{}", plan.added.len(), plan.removed.len()),
        Err(refusal) => format!("would refuse: {refusal}"),
    };
    document.would_change = true;
    document.database = Some(DatabaseRows {
        valid: plan.database_domains,
        duplicates: prepared.duplicates,
        rejected: prepared
            .rejected
            .iter()
            .map(|row| RejectedRow {
                row: &row.raw,
                reason: row.reason.to_string(),
            })
            .collect(),
    });
    document.added = names(&plan.added);
    document.removed = names(&plan.removed);
    document.hand_written = names(&plan.hand_written);
    document.guard = Some(guard(verdict));
    let transport_file = transport_file.display().to_string();
    document.steps = prepared
        .steps()
        .iter()
        .map(|step| describe_step(step, plan, &transport_file))
        .collect();
    document.relay_domains = plan.relay_domains_changed().then(|| ValueChange {
        before: &prepared.relay_domains_before,
        after: &plan.relay_domains_value,
    });
    document.recipients = plan.recipients.as_ref().map(|r| RecipientsPlan {
        enabled: r.enabled,
        entries: r.entries,
        added: r.added,
        removed: r.removed,
        rejected: prepared
            .rejected_recipients
            .iter()
            .map(|row| RejectedRow {
                row: &row.raw,
                reason: row.reason.to_string(),
            })
            .collect(),
        outside: r.outside,
        domains_without_recipients: r
            .domains_without_recipients
            .iter()
            .map(relay_core::DomainName::as_str)
            .collect(),
    });
    document
}

fn guard(verdict: &Result<(), Refusal>) -> GuardVerdict {
    match verdict {
        Ok(()) => GuardVerdict {
            verdict: Verdict::Apply,
            reason: None,
        },
        Err(refusal) => GuardVerdict {
            verdict: Verdict::Refuse,
            reason: Some(refusal.to_string()),
        },
    }
}

/// A step of `plan` in words, as the dry run's text and JSON both show it; `transport_file`
/// names the transport file.
pub fn describe_step(step: &Step<'_>, plan: &Plan, transport_file: &str) -> PlanStep {
    let detail = match step {
        Step::WriteTransport(text) if *text == plan.transport_final => {
            format!("write {transport_file} (final) and postmap it")
        }
        Step::WriteTransport(_) => {
            format!("write {transport_file} with old and new entries and postmap it")
        }
        Step::RebuildTransportMap => format!("postmap {transport_file} (map older than source)"),
        Step::WriteRelayDomainsMap(_) => {
            "write the relay domains map (RELAY_DOMAINS_MAP) and postmap it".to_owned()
        }
        Step::SetRelayDomains(_) => "postconf -e relay_domains = <the new value>".to_owned(),
        Step::WriteRecipientsMap(text)
            if plan
                .recipients
                .as_ref()
                .and_then(|r| r.table_final.as_deref())
                == Some(*text) =>
        {
            "write the recipients table (RECIPIENTS_MAP, final) and postmap it".to_owned()
        }
        Step::WriteRecipientsMap(_) => {
            "write the recipients table (RECIPIENTS_MAP) with old and new entries and postmap it"
                .to_owned()
        }
        Step::SetRelayRecipientMaps(value) => {
            format!("postconf -e relay_recipient_maps = {value}")
        }
        Step::Reload => "postfix reload".to_owned(),
    };
    PlanStep {
        step: step.kind(),
        detail,
    }
}

/// `backups --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
#[schemars(title = "relay-sync.backups/1")]
pub struct BackupsDocument<'a> {
    /// The document's schema and its version ([`BACKUPS_SCHEMA`]).
    #[schemars(description = "The document's schema and its version.")]
    #[schemars(extend("const" = BACKUPS_SCHEMA))]
    pub schema: &'static str,
    /// `BACKUP_DIR`.
    pub backup_dir: String,
    /// The generations, oldest first.
    pub generations: Vec<BackupGeneration<'a>>,
}

/// One backup generation, in `backups --json`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = every_field_required)]
pub struct BackupGeneration<'a> {
    /// Its stamp, for `rollback --to`.
    pub stamp: &'a str,
    /// What wrote it: `sync` (the state before a sync), `rollback` (the state before a
    /// rollback), `failed` (a sync that failed and rolled back: the state still in place), or
    /// `unknown` (from before origins were recorded).
    #[schemars(extend("enum" = ["sync", "rollback", "failed", "unknown"]))]
    pub origin: &'static str,
    /// Plain domain names in its `relay_domains` (not tables or parameters).
    pub relay_domains: usize,
    /// Keys of its relay-domains table, when its `relay_domains` names the configured table
    /// and it holds a copy of it.
    pub in_table: Option<usize>,
    /// The files it holds: `relay_domains`, `transport`, `relay_domains_map`, ….
    pub files: &'a [&'static str],
    /// Whether it is the newest: what `rollback` without `--to` restores, unless it records a
    /// failed run.
    pub newest: bool,
}

/// `backups --json`: the generations `relay-sync backups` lists, oldest first.
pub fn backups<'a>(backup_dir: &Path, generations: &'a [Generation]) -> BackupsDocument<'a> {
    let newest = generations.len().checked_sub(1);
    BackupsDocument {
        schema: BACKUPS_SCHEMA,
        backup_dir: backup_dir.display().to_string(),
        generations: generations
            .iter()
            .enumerate()
            .map(|(i, g)| BackupGeneration {
                stamp: &g.stamp,
                origin: g.origin,
                relay_domains: g.relay_domains,
                in_table: g.in_table,
                files: &g.files,
                newest: Some(i) == newest,
            })
            .collect(),
    }
}

/// `status --json`'s fields that are left out unless asked for (`--domains`) or in use
/// (recipient validation).
fn status_fields_left_out(schema: &mut schemars::Schema) {
    if let Some(required) = schema
        .get_mut("required")
        .and_then(serde_json::Value::as_array_mut)
    {
        required.retain(|name| name != "managed_domains" && name != "recipient_count");
    }
}

/// The JSON Schema of every document, by the file name it is shipped under
/// (`/usr/share/relay-sync/schema/NAME`): `relay-sync.status-1.schema.json` for
/// `relay-sync.status/1`, and so on.
pub fn schemas() -> Vec<(String, schemars::Schema)> {
    let file = |schema: &str| format!("{}.schema.json", schema.replace('/', "-"));
    vec![
        (
            file(STATUS_SCHEMA),
            schemars::schema_for!(StatusDocument<'static>),
        ),
        (
            file(CHECK_SCHEMA),
            schemars::schema_for!(CheckDocument<'static>),
        ),
        (
            file(SYNC_SCHEMA),
            schemars::schema_for!(SyncDocument<'static>),
        ),
        (
            file(PLAN_SCHEMA),
            schemars::schema_for!(PlanDocument<'static>),
        ),
        (
            file(BACKUPS_SCHEMA),
            schemars::schema_for!(BackupsDocument<'static>),
        ),
    ]
}

/// A time of the state file (RFC 3339 since this version, `YYYY-MM-DD HH:MM:SS` local time
/// before) as RFC 3339 with the offset; `None` for an empty or unreadable one. In the hour a
/// clock goes back twice, the earlier reading is taken.
pub fn rfc3339(time: &str) -> Option<String> {
    use chrono::TimeZone;
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(time) {
        return Some(parsed.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S").ok()?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|local| local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckId;

    /// `docs/schema/` holds exactly the schemas these types generate, as the packages ship
    /// them; `UPDATE_EXPECT=1` rewrites the files instead of failing.
    #[test]
    fn committed_schemas_are_the_generated_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema");
        let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1");
        let generated = schemas();
        if update {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (name, schema) in &generated {
            let text = format!("{}\n", serde_json::to_string_pretty(schema).unwrap());
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                if update {
                    std::fs::write(&path, text).unwrap();
                } else {
                    panic!(
                        "{} differs from the schema relay_ops::json generates; regenerate it \
                         with `UPDATE_EXPECT=1 cargo test -p relay-ops json::`",
                        path.display()
                    );
                }
            }
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                generated.iter().any(|(generated, _)| *generated == name),
                "docs/schema/{name} is not generated by relay_ops::json::schemas"
            );
        }
    }

    /// The fields of `schema` as Markdown table rows (`| field | type | meaning |`), nested
    /// objects as dotted paths and array items as `[]`, from the schema itself: docs/json.md's
    /// tables are generated, like the config key table.
    fn field_rows(schema: &serde_json::Value) -> String {
        fn resolve<'s>(
            root: &'s serde_json::Value,
            node: &'s serde_json::Value,
        ) -> &'s serde_json::Value {
            match node["$ref"].as_str() {
                Some(path) => root.pointer(path.trim_start_matches('#')).unwrap_or(node),
                None => node,
            }
        }
        /// The node's type in words, and the object whose fields follow it, if any.
        fn type_of<'s>(
            root: &'s serde_json::Value,
            node: &'s serde_json::Value,
        ) -> (String, Option<&'s serde_json::Value>) {
            let node = resolve(root, node);
            if let Some(choices) = node["anyOf"].as_array() {
                let not_null: Vec<&serde_json::Value> =
                    choices.iter().filter(|c| c["type"] != "null").collect();
                if let [only] = not_null[..] {
                    let (kind, object) = type_of(root, only);
                    return (format!("{kind} or null"), object);
                }
            }
            if let Some(choices) = node["oneOf"].as_array().or(node["enum"].as_array()) {
                let values: Vec<String> = choices
                    .iter()
                    .map(|c| c["const"].as_str().or(c.as_str()).unwrap_or("?"))
                    .map(|c| format!("`{c}`"))
                    .collect();
                return (format!("one of {}", values.join(", ")), None);
            }
            if let Some(value) = node["const"].as_str() {
                return (format!("`{value}`"), None);
            }
            let kinds: Vec<&str> = match &node["type"] {
                serde_json::Value::String(kind) => vec![kind.as_str()],
                serde_json::Value::Array(kinds) => {
                    kinds.iter().filter_map(serde_json::Value::as_str).collect()
                }
                _ => vec![],
            };
            let nullable = kinds.contains(&"null");
            let kind = kinds
                .iter()
                .find(|k| **k != "null")
                .copied()
                .unwrap_or("any");
            let (words, object) = match kind {
                "array" => {
                    let (item, object) = type_of(root, &node["items"]);
                    (format!("array of {item}"), object)
                }
                "object" => ("object".to_owned(), Some(node)),
                "integer" | "number" => ("number".to_owned(), None),
                other => (other.to_owned(), None),
            };
            (
                if nullable {
                    format!("{words} or null")
                } else {
                    words
                },
                object,
            )
        }
        fn rows(
            root: &serde_json::Value,
            object: &serde_json::Value,
            prefix: &str,
            out: &mut String,
        ) {
            let Some(properties) = object["properties"].as_object() else {
                return;
            };
            for (name, node) in properties {
                let (kind, nested) = type_of(root, node);
                let meaning = node["description"]
                    .as_str()
                    .or(resolve(root, node)["description"].as_str())
                    .unwrap_or("")
                    .replace('\n', " ");
                let path = format!("{prefix}{name}");
                out.push_str(&format!("| `{path}` | {kind} | {meaning} |\n"));
                if let Some(nested) = nested {
                    let array = kind.starts_with("array");
                    let prefix = format!("{path}{}.", if array { "[]" } else { "" });
                    rows(root, nested, &prefix, out);
                }
            }
        }
        let mut out = String::from("| field | type | meaning |\n|---|---|---|\n");
        rows(schema, schema, "", &mut out);
        out
    }

    /// docs/json.md's field tables are rendered from the schemas; `UPDATE_EXPECT=1` rewrites
    /// them instead of failing.
    #[test]
    fn the_json_documentation_lists_the_schemas_fields() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/json.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rendered = text.clone();
        for (_, schema) in schemas() {
            let schema = serde_json::to_value(&schema).unwrap();
            let title = schema["title"].as_str().unwrap();
            let begin = format!("<!-- BEGIN fields of {title}: generated from its schema -->\n");
            let end = "<!-- END fields -->";
            let (before, rest) = rendered
                .split_once(&begin)
                .unwrap_or_else(|| panic!("docs/json.md has no table for {title}"));
            let (_, after) = rest.split_once(end).unwrap();
            rendered = format!("{before}{begin}{}{end}{after}", field_rows(&schema));
        }
        if rendered != text {
            if std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1") {
                std::fs::write(&path, rendered).unwrap();
            } else {
                panic!(
                    "docs/json.md's field tables differ from the schemas; regenerate them with \
                     `UPDATE_EXPECT=1 cargo test -p relay-ops json::`"
                );
            }
        }
    }

    /// Every check's identifier is snake_case, and the one serde writes is the one the text
    /// report prints.
    #[test]
    fn check_ids_are_snake_case() {
        for id in CheckId::ALL {
            let name = id.as_str();
            assert!(
                name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            assert_eq!(serde_json::to_value(id).unwrap(), name);
            assert_eq!(format!("{id:<20}").trim_end(), name);
        }
    }

    #[test]
    fn times_become_rfc3339_with_an_offset() {
        let converted = rfc3339("2026-11-30 12:34:56").unwrap();
        assert!(converted.starts_with("2026-11-30T12:34:56"), "{converted}");
        assert!(
            converted.ends_with('Z') || converted[19..].starts_with(['+', '-']),
            "{converted}"
        );
        assert_eq!(
            rfc3339("2026-11-30T12:34:56+09:00").as_deref(),
            Some("2026-11-30T12:34:56+09:00")
        );
        assert_eq!(rfc3339(""), None);
        assert_eq!(rfc3339("yesterday"), None);
    }
}
