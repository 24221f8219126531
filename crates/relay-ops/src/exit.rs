//! SPEC §8's exit codes, for every command: what each command's result means as an
//! [`ExitStatus`], and the one table from a status to the number the process exits with.
//!
//! Every command ends with a typed value: a sync's [`RunOutcome`], a [`DryRun`], a check
//! [`Report`], a [`Health`] verdict, a [`RollbackError`], a [`HoldError`]. This file classifies
//! each of them into an [`ExitStatus`] (one `exit_status` per type, all of them here), and
//! [`ExitStatus::code`] is the one `match` from a status to its code. The table lives in
//! relay-ops rather than in the binary so that an admin tool embedding relay-ops reports the
//! same codes as `relay-sync`, and the documentation of every command's codes
//! ([`crate::manual::exits`]) sits beside the library that decides them. The README's table,
//! `--help` and the man pages are rendered from it.

use relay_engine::Outcome;
use relay_postfix::PostfixError;

use crate::check::Report;
use crate::status::Health;
use crate::{DryRun, HoldError, RollbackError, RunOutcome, RunRecord};

/// How a command ended, as SPEC §8 classes it. [`ExitStatus::code`] gives the process exit
/// code; several statuses share code 1, which SPEC §8 calls an internal error for a sync and
/// which `check` and `status --max-age` use for a failed check, as monitoring tools expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The command did what was asked (a sync: synced, nothing to do, skipped or held).
    Success,
    /// relay-sync itself could not work: a file of its own could not be created or read, no
    /// runtime or thread could be started.
    Internal,
    /// `check` found a problem; its report says which.
    CheckFailed,
    /// `status --max-age`: no successful sync is recent enough. A container HEALTHCHECK reads
    /// 1 as "unhealthy" (and reserves 2), hence code 1.
    Unhealthy,
    /// A usage or configuration error, a missing Postfix command, or a `transport_maps` that
    /// does not read the transport file; nothing was changed.
    Usage,
    /// The database could not be reached or read, or its password could not be had; nothing
    /// was changed.
    Database,
    /// Refused: the safety guard, a broken managed block, or a rollback that cannot be done
    /// safely or now; nothing was changed.
    Refused,
    /// A step failed and was rolled back, or Postfix's state could not be read; the
    /// configuration is as it was.
    StepFailed,
    /// `postfix reload` or a rollback failed: someone must look.
    Critical,
}

impl ExitStatus {
    /// SPEC §8's statuses in code order, one per code: what a sync can end with.
    pub const SPEC: [ExitStatus; 7] = [
        ExitStatus::Success,
        ExitStatus::Internal,
        ExitStatus::Usage,
        ExitStatus::Database,
        ExitStatus::Refused,
        ExitStatus::StepFailed,
        ExitStatus::Critical,
    ];

    /// The process exit code (SPEC §8): the one table from a status to a number.
    ///
    /// ```
    /// use relay_ops::ExitStatus;
    /// assert_eq!(ExitStatus::Refused.code(), 4);
    /// ```
    pub const fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Internal | ExitStatus::CheckFailed | ExitStatus::Unhealthy => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Database => 3,
            ExitStatus::Refused => 4,
            ExitStatus::StepFailed => 5,
            ExitStatus::Critical => 6,
        }
    }

    /// What the status means for a sync, in one line (`--help`).
    pub const fn summary(self) -> &'static str {
        match self {
            ExitStatus::Success => {
                "synced, nothing to do, another run holds the lock, or syncs are held"
            }
            ExitStatus::Internal => "unexpected internal error",
            ExitStatus::CheckFailed => "a check failed",
            ExitStatus::Unhealthy => "no successful sync recent enough",
            ExitStatus::Usage => "usage or configuration error; configuration kept",
            ExitStatus::Database => "database unreachable or no password; configuration kept",
            ExitStatus::Refused => "refused by the safety guard; configuration kept",
            ExitStatus::StepFailed => "a step failed and was rolled back; configuration as before",
            ExitStatus::Critical => {
                "critical: reload or rollback failed; manual intervention required"
            }
        }
    }

    /// What the status means for a sync, in full (the README's table, relay-sync(1)).
    pub const fn meaning(self) -> &'static str {
        match self {
            ExitStatus::Success => {
                "synced, nothing to do, another run holds the lock, or syncs are held \
                 (`relay-sync hold`)"
            }
            ExitStatus::Internal => "unexpected internal error",
            ExitStatus::CheckFailed => "a check failed; the report says which",
            ExitStatus::Unhealthy => {
                "no successful sync ended within `--max-age` (a HEALTHCHECK's unhealthy)"
            }
            ExitStatus::Usage => {
                "usage or configuration error (including a config or password file others may \
                 change or read, or a link, FIFO or another user's file where relay-sync keeps \
                 its state, lock or log), a missing Postfix command, or a `transport_maps` that \
                 does not read `TRANSPORT_FILE`; configuration kept"
            }
            ExitStatus::Database => {
                "database unreachable, the password refused (one from `DB_PASSWORD_SECRET` is \
                 read again once first) or the query failed, or the password could not be had \
                 (`DB_PASSWORD_FILE` unreadable, `DB_PASSWORD_COMMAND` failing, \
                 `DB_PASSWORD_SECRET` not readable); configuration kept"
            }
            ExitStatus::Refused => {
                "refused by the safety guard, or the transport file's managed block is broken; \
                 configuration kept"
            }
            ExitStatus::StepFailed => {
                "a step (backup, write, postmap, postconf) failed or ran past `COMMAND_TIMEOUT` \
                 and was rolled back, or Postfix's state could not be read; configuration as \
                 before"
            }
            ExitStatus::Critical => {
                "critical: `postfix reload` failed or ran past `COMMAND_TIMEOUT`, or the \
                 rollback failed; manual intervention required"
            }
        }
    }
}

impl std::fmt::Display for ExitStatus {
    /// The code, as the shell shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.code().fmt(f)
    }
}

impl RunOutcome {
    /// How the run ended, as SPEC §8 classes it.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            RunOutcome::Sync(Outcome::NoChange | Outcome::Applied(_))
            | RunOutcome::Skipped(_)
            | RunOutcome::Held(_) => ExitStatus::Success,
            RunOutcome::Internal(_) => ExitStatus::Internal,
            RunOutcome::NotReady(_) => ExitStatus::Usage,
            RunOutcome::Sync(Outcome::DatabaseFailed(_)) | RunOutcome::PasswordFailed(_) => {
                ExitStatus::Database
            }
            RunOutcome::Sync(Outcome::Refused(_) | Outcome::Unplannable(_)) => ExitStatus::Refused,
            RunOutcome::Sync(Outcome::ReadFailed(_) | Outcome::RolledBack(_)) => {
                ExitStatus::StepFailed
            }
            RunOutcome::Sync(Outcome::Critical { .. }) => ExitStatus::Critical,
        }
    }

    /// The process exit code (SPEC §8).
    pub fn exit_code(&self) -> u8 {
        self.exit_status().code()
    }

    /// Whether the run did what it should (synced, found nothing to do, or stepped aside).
    pub fn is_success(&self) -> bool {
        self.exit_status() == ExitStatus::Success
    }
}

impl RunRecord {
    /// How the run ended, as SPEC §8 classes it.
    pub fn exit_status(&self) -> ExitStatus {
        self.outcome.exit_status()
    }

    /// The process exit code (SPEC §8).
    pub fn exit_code(&self) -> u8 {
        self.exit_status().code()
    }
}

impl crate::rollback::RollbackPreview {
    /// The status the rollback would end with: [`ExitStatus::Refused`] when it needs `--force`
    /// and was not given it.
    pub fn exit_status(&self) -> ExitStatus {
        if self.concerns.is_empty() || self.forced {
            ExitStatus::Success
        } else {
            ExitStatus::Refused
        }
    }
}

impl DryRun {
    /// The status a real run would end with: [`ExitStatus::Refused`] when the guard would
    /// refuse.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            DryRun::Planned {
                verdict: Err(_), ..
            } => ExitStatus::Refused,
            DryRun::Planned { .. } | DryRun::NoChange => ExitStatus::Success,
            DryRun::Failed(outcome) => outcome.exit_status(),
        }
    }
}

impl Report {
    /// [`ExitStatus::CheckFailed`] when any check failed; warnings alone pass.
    pub fn exit_status(&self) -> ExitStatus {
        if self.ok {
            ExitStatus::Success
        } else {
            ExitStatus::CheckFailed
        }
    }
}

impl Health {
    /// [`ExitStatus::Unhealthy`] unless the last successful sync is recent enough.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Health::Healthy => ExitStatus::Success,
            Health::Stale { .. } | Health::NeverSynced { .. } => ExitStatus::Unhealthy,
        }
    }
}

impl RollbackError {
    /// How a rollback (or the listing of backups) that did not happen ended.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            // The generation asked for is not there: the operator picks another.
            RollbackError::UnknownStamp { .. } | RollbackError::NoBackups(_) => ExitStatus::Usage,
            // Nothing was changed, and trying again later (or with another generation) may
            // work: a refusal, as the guard's.
            RollbackError::Busy(_)
            | RollbackError::Plan { .. }
            | RollbackError::NeedsForce { .. } => ExitStatus::Refused,
            RollbackError::Lock(_) => ExitStatus::Internal,
            RollbackError::Hold(error) => error.exit_status(),
            RollbackError::Postfix(PostfixError::CommandMissing { .. }) => ExitStatus::Usage,
            // BACKUP_DIR or a file relay-sync keeps could not be read.
            RollbackError::Postfix(PostfixError::Io { .. } | PostfixError::Invalid { .. }) => {
                ExitStatus::Internal
            }
            // A backup relay-fs refuses (a link, a FIFO, another user's file): the operator
            // fixes the file it names.
            RollbackError::Postfix(PostfixError::File(error)) => fs_status(error),
            // A Postfix command failed before anything was changed.
            RollbackError::Postfix(_) => ExitStatus::StepFailed,
            // Part of the generation is in place and the rest is not: the operator decides.
            RollbackError::Partial { .. } => ExitStatus::Critical,
        }
    }
}

impl HoldError {
    /// How `hold` or `release` that did not happen ended.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            HoldError::NoReason => ExitStatus::Usage,
            HoldError::Io { .. } => ExitStatus::Internal,
            // A link, a FIFO or another user's file at STATE_DIR/hold: the refusal names the
            // `rm`/`chown` that fixes it, as for any file in STATE_DIR a sync refuses.
            HoldError::File(error) => fs_status(error),
        }
    }
}

/// A file relay-fs refused is the operator's to fix (2); one it could not read or write is
/// unexpected (1).
fn fs_status(error: &relay_fs::FsError) -> ExitStatus {
    match error {
        relay_fs::FsError::Refused { .. } => ExitStatus::Usage,
        _ => ExitStatus::Internal,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::time::Duration;

    use relay_core::Refusal;
    use relay_core::StepKind;
    use relay_engine::{FailedStep, FailureCause, StepFailure};

    use super::*;
    use crate::config::ConfigError;
    use crate::lock::Held;
    use crate::{manual, NotReady};

    /// SPEC §8's table, row by row.
    #[test]
    fn spec_statuses_have_the_codes_0_to_6() {
        let codes: Vec<u8> = ExitStatus::SPEC.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6]);
    }

    fn held() -> Held {
        Held {
            path: PathBuf::from("/var/lib/relay-sync/relay-sync.lock"),
            pid: None,
            held_for: None,
        }
    }

    fn step_failure() -> StepFailure {
        StepFailure {
            step: FailedStep::Plan(StepKind::Reload),
            cause: FailureCause::Verify("postfix sees nothing".to_owned()),
        }
    }

    fn io(action: &'static str) -> PostfixError {
        PostfixError::Io {
            action,
            path: PathBuf::from("/opt/mailserver/backup"),
            source: std::io::Error::other("broken"),
        }
    }

    /// One of each kind of run outcome, with the status SPEC §8 gives it.
    fn run_outcomes() -> Vec<(RunOutcome, ExitStatus)> {
        let password = ConfigError::PasswordEmpty {
            what: "DB_PASSWORD_FILE /etc/relay-sync/db.pw".to_owned(),
        };
        vec![
            (RunOutcome::Sync(Outcome::NoChange), ExitStatus::Success),
            (RunOutcome::Skipped(held()), ExitStatus::Success),
            (
                RunOutcome::Internal("no lock".to_owned()),
                ExitStatus::Internal,
            ),
            (
                RunOutcome::NotReady(NotReady::TransportMaps("x".to_owned())),
                ExitStatus::Usage,
            ),
            (RunOutcome::PasswordFailed(password), ExitStatus::Database),
            (
                RunOutcome::Sync(Outcome::Refused(Refusal::EmptyDatabase { managed: 3 })),
                ExitStatus::Refused,
            ),
            (
                RunOutcome::Sync(Outcome::ReadFailed(io("read"))),
                ExitStatus::StepFailed,
            ),
            (
                RunOutcome::Sync(Outcome::RolledBack(step_failure())),
                ExitStatus::StepFailed,
            ),
            (
                RunOutcome::Sync(Outcome::Critical {
                    failure: step_failure(),
                    rollback: Ok(()),
                }),
                ExitStatus::Critical,
            ),
        ]
    }

    #[test]
    fn run_outcomes_follow_spec_8() {
        for (outcome, status) in run_outcomes() {
            assert_eq!(outcome.exit_status(), status, "{outcome}");
        }
    }

    /// One of each rollback error.
    fn rollback_errors() -> Vec<RollbackError> {
        vec![
            RollbackError::Busy(held()),
            RollbackError::Lock("cannot create the lock".to_owned()),
            RollbackError::Hold(HoldError::NoReason),
            RollbackError::Hold(HoldError::Io {
                action: "write",
                path: PathBuf::from("/var/lib/relay-sync/hold"),
                source: std::io::Error::other("full"),
            }),
            RollbackError::Hold(HoldError::File(relay_fs::FsError::Refused {
                path: PathBuf::from("/var/lib/relay-sync/hold"),
                problem: "is a symbolic link".to_owned(),
                fix: "rm /var/lib/relay-sync/hold".to_owned(),
            })),
            RollbackError::NoBackups("/b".to_owned()),
            RollbackError::UnknownStamp {
                stamp: "2020".to_owned(),
                dir: "/b".to_owned(),
                known: String::new(),
            },
            RollbackError::Postfix(PostfixError::CommandMissing {
                path: PathBuf::from("/usr/sbin/postconf"),
            }),
            RollbackError::Postfix(io("list")),
            RollbackError::Postfix(PostfixError::Timeout {
                command: "postconf".to_owned(),
                after: Duration::from_secs(120),
            }),
            RollbackError::Plan {
                stamp: "20261123-110000".to_owned(),
                error: relay_core::RollbackPlanError::KeptTableUnrouted {
                    table: "/etc/postfix/relay_domains".to_owned(),
                    domains: vec!["a.example".to_owned()],
                },
            },
            RollbackError::NeedsForce {
                stamp: "20261123-110000".to_owned(),
                concerns: vec![
                    r#"relay_domains token "static:OK": a static: table matches every domain"#
                        .to_owned(),
                ],
            },
            RollbackError::Partial {
                error: io("write"),
                restored: "relay_domains".to_owned(),
                saved: "20261123-120000".to_owned(),
            },
        ]
    }

    /// Fails to compile when a rollback or hold error is added, until [`rollback_errors`]
    /// has one of it and [`manual::exits`] says what it means.
    #[allow(dead_code)]
    fn every_error_is_sampled(rollback: &RollbackError, hold: &HoldError) {
        match rollback {
            RollbackError::Busy(_)
            | RollbackError::Lock(_)
            | RollbackError::Hold(_)
            | RollbackError::NoBackups(_)
            | RollbackError::UnknownStamp { .. }
            | RollbackError::Postfix(_)
            | RollbackError::Plan { .. }
            | RollbackError::NeedsForce { .. }
            | RollbackError::Partial { .. } => {}
        }
        match hold {
            HoldError::NoReason | HoldError::Io { .. } | HoldError::File(_) => {}
        }
    }

    /// A file relay-fs refuses (a link, a FIFO, another user's file): the operator's to fix.
    fn refused(path: &str) -> relay_fs::FsError {
        relay_fs::FsError::Refused {
            path: PathBuf::from(path),
            problem: "is owned by uid 65534".to_owned(),
            fix: format!("run `rm {path}`"),
        }
    }

    /// What a command's documentation must say of a refused file under the code it gives: the
    /// commonest cause, so that the operator who meets it finds the code explained.
    const REFUSED_FILE: &str = "another user's";

    /// The statuses a command's outcomes can have, besides the usage error every command can
    /// end with (a wrong option, a broken config), each with the words its documentation must
    /// hold for the outcomes sampled ([`REFUSED_FILE`] for a file relay-fs refuses).
    fn reachable(command: &str) -> BTreeMap<ExitStatus, BTreeSet<&'static str>> {
        let plain = |statuses: &[ExitStatus]| -> Vec<(ExitStatus, Option<&'static str>)> {
            statuses.iter().map(|status| (*status, None)).collect()
        };
        let samples: Vec<(ExitStatus, Option<&'static str>)> = match command {
            "sync" => run_outcomes()
                .into_iter()
                .map(|(_, status)| (status, None))
                .chain([(
                    RunOutcome::NotReady(NotReady::File(refused("/var/lib/relay-sync/state")))
                        .exit_status(),
                    Some(REFUSED_FILE),
                )])
                .collect(),
            "check" => plain(&[ExitStatus::Success, ExitStatus::CheckFailed]),
            "status" => plain(&[
                Health::Healthy.exit_status(),
                Health::NeverSynced {
                    max_age: Duration::from_secs(60),
                }
                .exit_status(),
            ]),
            "rollback" => rollback_errors()
                .iter()
                .map(|error| (error.exit_status(), refusal_word(error)))
                .chain([(ExitStatus::Success, None)])
                .collect(),
            // Listing reads BACKUP_DIR only.
            "backups" => [
                RollbackError::Postfix(io("list")),
                RollbackError::Postfix(PostfixError::File(Box::new(refused(
                    "/opt/mailserver/backup",
                )))),
            ]
            .iter()
            .map(|error| (error.exit_status(), refusal_word(error)))
            .chain([(ExitStatus::Success, None)])
            .collect(),
            "hold" | "release" => [
                HoldError::Io {
                    action: "write",
                    path: PathBuf::from("/var/lib/relay-sync/hold"),
                    source: std::io::Error::other("full"),
                },
                HoldError::File(refused("/var/lib/relay-sync/hold")),
            ]
            .iter()
            .map(|error| {
                let word = matches!(error, HoldError::File(_)).then_some(REFUSED_FILE);
                (error.exit_status(), word)
            })
            .chain([(ExitStatus::Success, None)])
            .collect(),
            // Outcomes of the binary's own: a watcher that cannot start, a script or page that
            // cannot be written.
            "watch" | "completions" | "man" => plain(&[ExitStatus::Success, ExitStatus::Internal]),
            other => panic!("no outcomes known for {other}"),
        };
        let mut statuses: BTreeMap<ExitStatus, BTreeSet<&'static str>> =
            [(ExitStatus::Usage, BTreeSet::new())].into();
        for (status, word) in samples {
            statuses.entry(status).or_default().extend(word);
        }
        statuses
    }

    /// [`REFUSED_FILE`] for a rollback error that is a file relay-fs refused.
    fn refusal_word(error: &RollbackError) -> Option<&'static str> {
        matches!(
            error,
            RollbackError::Hold(HoldError::File(_)) | RollbackError::Postfix(PostfixError::File(_))
        )
        .then_some(REFUSED_FILE)
    }

    /// Each command's documented codes (its man page, `--help`, the README) are exactly those
    /// its outcomes can give, one line per code, and each line names what the outcomes sampled
    /// need it to (a file relay-sync refuses).
    #[test]
    fn every_command_documents_the_codes_it_can_end_with() {
        for command in manual::COMMANDS {
            let exits = manual::exits(command);
            let documented: Vec<ExitStatus> = exits.iter().map(|e| e.status).collect();
            let reachable = reachable(command);
            let statuses: Vec<ExitStatus> = reachable.keys().copied().collect();
            assert_eq!(documented, statuses, "{command}");
            let codes: BTreeSet<u8> = documented.iter().map(|s| s.code()).collect();
            assert_eq!(
                codes.len(),
                documented.len(),
                "{command}: one line per code"
            );
            for exit in &exits {
                for word in &reachable[&exit.status] {
                    assert!(
                        exit.detail.contains(word),
                        "{command} exits {} for a file relay-sync refuses, but its documentation \
                         of {} says not: {:?}",
                        exit.status.code(),
                        exit.status.code(),
                        exit.detail
                    );
                }
            }
        }
    }
}
