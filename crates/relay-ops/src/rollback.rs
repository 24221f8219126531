//! `relay-sync rollback [--to STAMP]` and `relay-sync backups` (SPEC §6): restore a backup
//! generation by hand, and list them.
//!
//! A rollback takes the run lock (a sync must not run in the middle of it), backs up the
//! current state first (so a rollback can itself be rolled back: it becomes the newest
//! generation), then runs the steps relay-core's [`RollbackPlan`] orders through relay-engine's
//! one executor ([`relay_engine::execute`]), as a sync's steps are: the transport file with the
//! current routes beside the generation's (written atomically and rebuilt under a temporary
//! name), map mode's table when the generation's `relay_domains` names it, `relay_domains`,
//! the reload, and the generation's transport file. So, as in a sync, no domain Postfix relays
//! is ever without its route. What is the rollback's own here is operating: the lock, the
//! backup, the hold, its log lines and the report. A step that fails after the save says what
//! was already restored and how to undo it. The next sync applies the database again: a
//! rollback is for getting mail flowing while the cause is found, with the timer or cron entry
//! paused if needed.
//!
//! What a restore trusts (SECURITY.md): only what relay-sync wrote and can still vouch for.
//! relay-postfix reads the generation as files relay-sync keeps, from a `BACKUP_DIR` no one
//! else can write, each checked against the digest its index recorded. Then the generation is
//! reviewed as a sync reviews the database ([`relay_core::review_restore`]): a `relay_domains`
//! token or a hand-written route a sync never writes (`static:OK`, a `*` route), or a
//! generation without digests, is listed by `rollback --dry-run`, and a rollback to it needs
//! `--force` ([`RollbackError::NeedsForce`], nothing changed).

use relay_core::{
    cut_list, review_restore, GenerationTexts, RelayDomains, RelayDomainsTable, RestoreReviewInput,
    RollbackInput, RollbackPlan, RollbackPlanError, TableRestore,
};
use relay_postfix::{
    list_backups, read_generation, BackupGeneration, PostfixCli, PostfixRead, PostfixWrite,
};

use crate::config::Config;
use crate::journal::Journaled;
use crate::lock::{self, Held, LockError};

/// Why a rollback could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// A sync holds the run lock.
    #[error(
        "A sync is running (it holds {}); try again when it has finished",
        .0.path.display()
    )]
    Busy(Held),
    /// The run lock cannot be taken.
    #[error("{0}")]
    Lock(String),
    /// The hold asked for could not be placed (the rollback itself succeeded when this
    /// comes after it).
    #[error("rolled back, but syncs are not held: {0}")]
    Hold(#[from] crate::HoldError),
    /// No backups at all.
    #[error("no backups in {0}: nothing to roll back to")]
    NoBackups(String),
    /// `--to STAMP` names no generation.
    #[error(
        "no backup generation {stamp} in {dir}; it has {known} (newest first; `relay-sync \
         backups` lists them with what each holds)"
    )]
    UnknownStamp {
        /// The stamp asked for.
        stamp: String,
        /// The backup directory.
        dir: String,
        /// The stamps it has, newest first, cut after [`KNOWN_STAMPS_SHOWN`].
        known: String,
    },
    /// A Postfix step failed before anything was changed.
    #[error(transparent)]
    Postfix(#[from] relay_postfix::PostfixError),
    /// The generation cannot be restored without leaving a relayed domain unrouted; nothing
    /// was changed.
    #[error("backup {stamp}: {error}")]
    Plan {
        /// The generation asked for.
        stamp: String,
        /// Why relay-core refused it.
        error: RollbackPlanError,
    },
    /// The generation holds what a sync never writes (see [`relay_core::review_restore`]), or
    /// relay-sync cannot vouch for it (no digests); nothing was changed. `--force` restores it.
    #[error(
        "backup {stamp} holds what a sync never writes, so rolling back to it needs --force \
         (`relay-sync rollback --dry-run` lists it): {}",
        .concerns.join("; ")
    )]
    NeedsForce {
        /// The generation asked for.
        stamp: String,
        /// What needs `--force`, one line each.
        concerns: Vec<String>,
    },
    /// A Postfix step failed after the current state was saved.
    #[error(
        "{error}. Restored before the failure: {restored}. The state before the rollback is \
         saved as {saved}: `relay-sync rollback --to {saved}` puts it back"
    )]
    Partial {
        /// What failed.
        error: relay_postfix::PostfixError,
        /// What had been restored, for the operator.
        restored: String,
        /// The stamp of the generation holding the state before the rollback.
        saved: String,
    },
}

/// How many stamps an unknown `--to STAMP` names: enough to spot a typo in the recent ones.
pub const KNOWN_STAMPS_SHOWN: usize = 10;

/// Picks the generation: `--to STAMP`, or the newest.
pub(crate) fn pick(
    generations: &[BackupGeneration],
    to: Option<&str>,
    dir: &str,
) -> Result<BackupGeneration, RollbackError> {
    let generation = match to {
        Some(_) if generations.is_empty() => return Err(RollbackError::NoBackups(dir.to_owned())),
        Some(stamp) => generations
            .iter()
            .find(|g| g.stamp == stamp)
            .ok_or_else(|| RollbackError::UnknownStamp {
                stamp: stamp.to_owned(),
                dir: dir.to_owned(),
                known: cut_list(
                    generations.iter().rev().map(|g| &g.stamp),
                    KNOWN_STAMPS_SHOWN,
                ),
            })?,
        // The newest generation of a run that worked: one a failed run wrote holds the state
        // that is still in place.
        None => generations
            .iter()
            .rev()
            .find(|g| g.origin != relay_postfix::Origin::Failed)
            .or(generations.last())
            .ok_or_else(|| RollbackError::NoBackups(dir.to_owned()))?,
    };
    Ok(generation.clone())
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolledBack {
    /// The generation restored.
    pub restored: String,
    /// The generation holding the state before the rollback (`rollback --to` it to undo).
    pub saved: String,
    /// The hold placed after it (`rollback --hold`).
    pub hold: Option<crate::Hold>,
}

/// What `rollback --dry-run` shows: the generation a rollback would restore, and what in it
/// needs `--force`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RollbackPreview {
    /// The generation it would restore.
    pub stamp: String,
    /// What wrote it (`sync`, `rollback`, `failed`, `unknown`).
    pub origin: &'static str,
    /// `relay_domains` now.
    pub relay_domains_now: String,
    /// `relay_domains` after the rollback.
    pub relay_domains: String,
    /// What needs `--force`, one line each; empty when a plain rollback would do.
    pub concerns: Vec<String>,
    /// Whether `--force` was given.
    pub forced: bool,
}

/// What rolling back to `to` (or the newest generation) would restore, and what in it needs
/// `--force`; reads, changes nothing.
pub(crate) fn preview(
    config: &Config,
    to: Option<&str>,
    force: bool,
) -> Result<RollbackPreview, RollbackError> {
    let dir = config.backup_dir.display().to_string();
    let generations = list_backups(&config.backup_dir)?;
    let generation = pick(&generations, to, &dir)?;
    let contents = read_generation(&config.backup_dir, &generation)?;
    let postfix = PostfixCli::new(config.postfix_settings())?
        .with_relay_domains_map(config.relay_domains_map.clone());
    let relay_domains_now = postfix.relay_domains()?;
    let concerns = concerns(
        config,
        GenerationTexts {
            relay_domains: &contents.relay_domains,
            transport: &contents.transport,
            table: contents.relay_domains_map.as_deref(),
        },
        contents.unvouched.as_deref(),
        &relay_domains_now,
        postfix.read_transport()?.as_deref(),
        postfix.read_relay_domains_map()?.as_deref(),
    );
    Ok(RollbackPreview {
        stamp: contents.stamp,
        origin: generation.origin.as_str(),
        relay_domains_now,
        relay_domains: contents.relay_domains,
        concerns,
        forced: force,
    })
}

/// What in a `generation` needs `--force`: its not being vouched for (`unvouched`, why), and
/// what relay-core's review of its texts against the current ones names.
fn concerns(
    config: &Config,
    generation: GenerationTexts<'_>,
    unvouched: Option<&str>,
    current_relay: &str,
    current_transport: Option<&str>,
    current_table: Option<&str>,
) -> Vec<String> {
    let table_path = config.relay_domains_map.display().to_string();
    let review = review_restore(RestoreReviewInput {
        current_relay_domains: current_relay,
        current_transport,
        current_table,
        table_path: &table_path,
        generation,
    });
    unvouched
        .iter()
        .map(|why| format!("relay-sync cannot vouch for it: {why}"))
        .chain(review.iter().map(ToString::to_string))
        .collect()
}

/// Restores `to` (or the newest generation) under the run lock, then holds syncs with the
/// reason `hold` when given (before the lock is let go). A generation that needs `--force`
/// ([`RollbackError::NeedsForce`]) is restored only with `force`.
pub(crate) fn rollback(
    config: &Config,
    to: Option<&str>,
    hold: Option<&str>,
    force: bool,
) -> Result<RolledBack, RollbackError> {
    if hold.is_some_and(|reason| reason.trim().is_empty()) {
        return Err(RollbackError::Hold(crate::HoldError::NoReason));
    }
    let _lock = match lock::take(&config.lock_file) {
        Ok(lock) => lock,
        Err(LockError::Held(held)) => return Err(RollbackError::Busy(held)),
        Err(error) => return Err(RollbackError::Lock(error.to_string())),
    };
    let dir = config.backup_dir.display().to_string();
    let generations = list_backups(&config.backup_dir)?;
    let generation = pick(&generations, to, &dir)?;
    let contents = read_generation(&config.backup_dir, &generation)?;
    let stamp = contents.stamp;
    let relay_domains = contents.relay_domains;
    let transport = contents.transport;
    tracing::info!("Rolling back to backup {stamp} by request");

    let postfix = PostfixCli::new(config.postfix_settings())?
        .with_relay_domains_map(config.relay_domains_map.clone())
        .with_recipients_map(config.recipients_map.clone());
    // A rollback killed before its reload is repaired by the next sync, as a sync's would be.
    let postfix = Journaled::new(postfix, &config.state_dir);
    let table_path = config.relay_domains_map.display().to_string();
    let transport_path = config.transport_file.display().to_string();

    let current_relay = postfix.relay_domains()?;
    let current_transport = postfix.read_transport()?;
    let current_table = postfix.read_relay_domains_map()?;
    // Recipient validation's state is read (and saved) only when it is on or the generation
    // holds it: otherwise a rollback reads and runs nothing it did not before.
    let recipients_now =
        if config.recipients_query.is_some() || contents.relay_recipient_maps.is_some() {
            Some((
                postfix.relay_recipient_maps()?,
                postfix.read_recipients_map()?,
            ))
        } else {
            None
        };
    let current_recipients = recipients_now
        .as_ref()
        .and_then(|(_, table)| table.as_deref());
    // Reviewed before anything is written, as a sync parses the database before it plans.
    let concerns = concerns(
        config,
        GenerationTexts {
            relay_domains: &relay_domains,
            transport: &transport,
            table: contents.relay_domains_map.as_deref(),
        },
        contents.unvouched.as_deref(),
        &current_relay,
        current_transport.as_deref(),
        current_table.as_deref(),
    );
    if !concerns.is_empty() {
        if !force {
            return Err(RollbackError::NeedsForce { stamp, concerns });
        }
        tracing::warn!(
            "Rolling back to backup {stamp} with --force, although: {}",
            concerns.join("; ")
        );
    }
    let recipients_path = config.recipients_map.display().to_string();
    // Planned before anything is written: a generation that cannot be restored safely changes
    // nothing, not even the backup directory.
    let plan = RollbackPlan::new(RollbackInput {
        current_transport: current_transport.as_deref(),
        current_table: current_table.as_deref(),
        table_path: &table_path,
        generation: GenerationTexts {
            relay_domains: &relay_domains,
            transport: &transport,
            table: contents.relay_domains_map.as_deref(),
        },
    })
    .map_err(|error| RollbackError::Plan {
        stamp: stamp.clone(),
        error,
    })?;
    // Recipient validation comes back when the generation holds it; a generation from before
    // it leaves relay_recipient_maps and the table as they are (the next sync settles them).
    let plan = match &contents.relay_recipient_maps {
        Some(maps) => plan.with_recipients(relay_core::RecipientsRollback {
            relay_recipient_maps: maps,
            table: contents.recipients_map.as_deref(),
            current_table: current_recipients,
        }),
        None => plan,
    };
    if plan.table == TableRestore::KeptWithoutCopy {
        tracing::warn!(
            "Backup {stamp} has no copy of the table {table_path} that its relay_domains \
             names; the table is kept as it is now"
        );
    }
    if !plan.kept_routes.is_empty() {
        tracing::warn!(
            "The kept table relays domains the transport file of {stamp} does not route; \
             their current routes stay: {}",
            cut_list(&plan.kept_routes, 100)
        );
    }

    let since = relay_postfix::newest_backup_sequence(&config.backup_dir)?;
    let mut saved = postfix.backup(&current_relay, current_transport.as_deref())?;
    if let Some(text) = &current_table {
        saved
            .files
            .push(postfix.backup_relay_domains_map(&saved.stamp, text)?);
    }
    if let Some((maps, table)) = &recipients_now {
        saved
            .files
            .extend(postfix.backup_recipients(&saved.stamp, maps, table.as_deref())?);
    }
    for file in &saved.files {
        tracing::info!("Backup created: {}", file.display());
    }
    // The state the rollback replaces was live: a generation to return to, marked as the
    // rollback's own.
    relay_postfix::finish_backups(
        &config.backup_dir,
        since,
        relay_postfix::Origin::Rollback,
        config.backup_keep,
    )?;

    let mut progress = Restoring {
        stamp: &stamp,
        transport_path: &transport_path,
        table_path: &table_path,
        recipients_path: &recipients_path,
        union_pending: plan.transport_union.is_some(),
        restored: Vec::new(),
    };
    if let Err(halted) = relay_engine::execute(&postfix, &plan.steps(), &mut progress) {
        return Err(RollbackError::Partial {
            error: halted.failure,
            restored: if progress.restored.is_empty() {
                "nothing".into()
            } else {
                progress.restored.join(", ")
            },
            saved: saved.stamp,
        });
    }
    tracing::info!("Rollback successful");
    let hold = match hold {
        Some(reason) => {
            let hold = crate::hold::place(&config.state_dir, reason)?;
            tracing::warn!("Syncs are {hold}; `relay-sync release` lifts the hold");
            Some(hold)
        }
        None => None,
    };
    Ok(RolledBack {
        restored: stamp,
        saved: saved.stamp,
        hold,
    })
}

/// A rollback's side of the execution: its log lines, and what it has restored so far (for
/// the message when a step fails).
struct Restoring<'a> {
    stamp: &'a str,
    transport_path: &'a str,
    table_path: &'a str,
    recipients_path: &'a str,
    /// The first transport write is the union when there is one: the generation's routes
    /// beside the current ones, until relay_domains no longer relays what leaves.
    union_pending: bool,
    restored: Vec<String>,
}

impl<P: PostfixRead> relay_engine::Observer<P> for Restoring<'_> {
    type Failure = relay_postfix::PostfixError;

    fn wrote_transport(&mut self, _postfix: &P, _text: &str) {
        let (stamp, path) = (self.stamp, self.transport_path);
        self.restored
            .retain(|done| !done.starts_with("transport file "));
        if std::mem::take(&mut self.union_pending) {
            tracing::info!(
                "Updated transport file {path}: the routes of {stamp} beside the current ones \
                 until relay_domains changes"
            );
            self.restored.push(format!(
                "transport file {path} with the current routes beside the backup's"
            ));
        } else {
            tracing::info!("Restored transport file {path} from {stamp}");
            self.restored.push(format!("transport file {path}"));
        }
    }

    fn wrote_relay_domains_map(&mut self, _postfix: &P, _text: &str) {
        // The table goes back before relay_domains names it.
        let file = format!("relay domains table {}", self.table_path);
        tracing::info!("Restored {file} from {}", self.stamp);
        self.restored.push(file);
    }

    fn wrote_recipients_map(&mut self, _postfix: &P, _text: &str) {
        let file = format!("recipients table {}", self.recipients_path);
        self.restored.retain(|done| *done != file);
        tracing::info!("Restored {file} from {}", self.stamp);
        self.restored.push(file);
    }

    fn set_relay_domains(&mut self, value: &str) {
        tracing::info!("Restored relay_domains: {value}");
        self.restored.push("relay_domains".into());
    }

    fn set_relay_recipient_maps(&mut self, value: &str) {
        tracing::info!("Restored relay_recipient_maps: {value}");
        self.restored.push("relay_recipient_maps".into());
    }

    fn reloaded(&mut self) {
        tracing::info!("Postfix reloaded successfully");
    }

    fn failed(
        &mut self,
        _step: relay_engine::FailedStep,
        error: relay_postfix::PostfixError,
    ) -> Result<(), relay_postfix::PostfixError> {
        Err(error)
    }
}

/// Whether the `relay_domains` value names the table at `path` (with any map type).
fn names_table(relay_domains: &str, path: &str) -> bool {
    let table = RelayDomainsTable::new("", path, None);
    RelayDomains::parse(relay_domains).is_ok_and(|value| table.is_named_in(&value))
}

/// One backup generation, as `relay-sync backups` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generation {
    /// Its stamp, for `rollback --to`.
    pub stamp: String,
    /// Plain domain names in its `relay_domains` (not tables or parameters).
    pub relay_domains: usize,
    /// Keys of its relay-domains table, when its `relay_domains` names the configured table
    /// and it holds a copy of it.
    pub in_table: Option<usize>,
    /// The files it holds: `relay_domains`, `transport`, `relay_domains_map`.
    pub files: Vec<&'static str>,
    /// What wrote it: `sync`, `rollback`, `failed` (a sync that failed and rolled back: it
    /// holds the state still in place), or `unknown` (from before origins were recorded).
    pub origin: &'static str,
}

/// The backup generations in `BACKUP_DIR`, oldest first.
pub(crate) fn generations(config: &Config) -> Result<Vec<Generation>, RollbackError> {
    let table_path = config.relay_domains_map.display().to_string();
    let generations = list_backups(&config.backup_dir)?;
    Ok(generations
        .iter()
        .map(|g| {
            let relay = g
                .relay_domains
                .as_ref()
                .and_then(|p| relay_fs::read_to_string(relay_fs::Kind::BACKUP, p).ok()?)
                .map(|v| v.trim_end().to_owned());
            // Counted as a sync would see them: plain domain names, not tables or parameters.
            let relay_domains = relay
                .as_deref()
                .and_then(|v| RelayDomains::parse(v).ok())
                .map_or(0, |parsed| parsed.domains.len());
            // Map mode's domains are in its table, when relay_domains names it.
            let in_table = g
                .relay_domains_map
                .as_ref()
                .filter(|_| {
                    relay
                        .as_deref()
                        .is_some_and(|v| names_table(v, &table_path))
                })
                .and_then(|p| relay_fs::read_to_string(relay_fs::Kind::BACKUP, p).ok()?)
                .map(|text| {
                    let table = RelayDomainsTable::new("", &table_path, Some(&text));
                    table.keys().count()
                });
            let files = [
                g.relay_domains.as_ref().map(|_| "relay_domains"),
                g.transport.as_ref().map(|_| "transport"),
                g.relay_domains_map.as_ref().map(|_| "relay_domains_map"),
            ]
            .into_iter()
            .flatten()
            .collect();
            Generation {
                stamp: g.stamp.clone(),
                relay_domains,
                in_table,
                files,
                origin: g.origin.as_str(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn picks_the_newest_or_the_named_one() {
        // Built by relay-postfix from file names, as a rollback sees them.
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20261123-110000", "20261123-100000"] {
            fs::write(dir.path().join(format!("transport.{stamp}.bak")), "").unwrap();
        }
        let all = list_backups(dir.path()).unwrap();
        assert_eq!(pick(&all, None, "/b").unwrap().stamp, "20261123-110000");
        assert_eq!(
            pick(&all, Some("20261123-100000"), "/b").unwrap().stamp,
            "20261123-100000"
        );
        insta::assert_snapshot!(
            pick(&all, Some("20261123-090000"), "/b").unwrap_err().to_string(),
            @"no backup generation 20261123-090000 in /b; it has 20261123-110000, 20261123-100000 (newest first; `relay-sync backups` lists them with what each holds)"
        );
        insta::assert_snapshot!(
            pick(&[], Some("2020"), "/b").unwrap_err().to_string(),
            @"no backups in /b: nothing to roll back to"
        );
        insta::assert_snapshot!(
            pick(&[], None, "/b").unwrap_err().to_string(),
            @"no backups in /b: nothing to roll back to"
        );
    }
}
