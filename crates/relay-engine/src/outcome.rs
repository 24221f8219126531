//! What a run ended with. Its exit code (SPEC §8) is derived in relay-ops, in one place.

use relay_core::{DomainName, PlanError, Refusal, StepKind};
use relay_db::DbError;
use relay_postfix::{Backup, PostfixError};
use std::collections::BTreeSet;

/// How a run ended.
///
/// Not `#[non_exhaustive]`: relay-ops derives the exit code from it in one exhaustive `match`,
/// so a new variant must be given its code there.
#[derive(Debug)]
pub enum Outcome {
    /// Postfix already matched the database; nothing was written.
    NoChange,
    /// The plan was applied and verified.
    Applied(Applied),
    /// The guard refused; nothing was changed.
    Refused(Refusal),
    /// The current state cannot be planned against (e.g. a broken managed block); nothing was
    /// changed.
    Unplannable(PlanError),
    /// The database could not be read; nothing was changed.
    DatabaseFailed(DbError),
    /// The current Postfix state could not be read; nothing was changed.
    ReadFailed(PostfixError),
    /// A step failed and everything it had changed was restored.
    RolledBack(StepFailure),
    /// `postfix reload` failed, or the rollback itself failed: someone must look.
    Critical {
        /// The step that failed first.
        failure: StepFailure,
        /// How the rollback went.
        rollback: Result<(), StepFailure>,
    },
}

/// What an applied run changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Domains added to `relay_domains`.
    pub added: BTreeSet<DomainName>,
    /// Domains removed from `relay_domains`.
    pub removed: BTreeSet<DomainName>,
    /// The backup taken before the change.
    pub backup: Backup,
}

/// A step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {cause}")]
pub struct StepFailure {
    /// Which step.
    pub step: FailedStep,
    /// The error, with the command or file involved.
    pub cause: FailureCause,
}

/// The cause of a [`StepFailure`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailureCause {
    /// A Postfix command or file operation failed.
    #[error(transparent)]
    Postfix(#[from] PostfixError),
    /// Postfix does not see what was written.
    #[error("{0}")]
    Verify(String),
    /// The work of the step stopped without an answer (it panicked; the panic message is on
    /// standard error).
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// The steps of applying a plan, named for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailedStep {
    /// Writing the backup files.
    Backup,
    /// One of the plan's steps ([`relay_core::apply_steps`]).
    Plan(StepKind),
    /// Reading back what Postfix sees.
    Verify,
}

impl std::fmt::Display for FailedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailedStep::Backup => "backup",
            FailedStep::Plan(StepKind::WriteTransport) => "transport update",
            FailedStep::Plan(StepKind::RebuildTransportMap) => "transport map rebuild",
            FailedStep::Plan(StepKind::WriteRelayDomainsMap) => "relay domains map update",
            FailedStep::Plan(StepKind::SetRelayDomains) => "relay_domains update",
            FailedStep::Plan(StepKind::WriteRecipientsMap) => "recipients map update",
            FailedStep::Plan(StepKind::SetRelayRecipientMaps) => "relay_recipient_maps update",
            FailedStep::Plan(StepKind::Reload) => "postfix reload",
            FailedStep::Verify => "verification",
        })
    }
}

impl Outcome {
    /// Whether the run did what it should (synced or found nothing to do). The exit code of
    /// every outcome is derived in relay-ops (`RunOutcome::exit_code`).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::NoChange | Outcome::Applied(_))
    }
}

impl std::fmt::Display for Outcome {
    /// One line for the state file, `status` and alerts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NoChange => f.write_str("no changes"),
            Outcome::Applied(applied) => write!(
                f,
                "synced: +{} -{}",
                applied.added.len(),
                applied.removed.len()
            ),
            Outcome::Refused(refusal) => write!(f, "refused: {refusal}"),
            Outcome::Unplannable(error) => write!(f, "refused: {error}"),
            Outcome::DatabaseFailed(error) => write!(f, "database failed: {error}"),
            Outcome::ReadFailed(error) => write!(f, "cannot read Postfix configuration: {error}"),
            Outcome::RolledBack(failure) => write!(f, "rolled back: {failure}"),
            Outcome::Critical { failure, rollback } => {
                write!(f, "critical: {failure}; ")?;
                match rollback {
                    Ok(()) => f.write_str("rollback succeeded"),
                    Err(error) => write!(f, "rollback failed: {error}"),
                }
            }
        }
    }
}
