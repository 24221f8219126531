//! The safety guard (SPEC §4): a wiped or wrong database must not silently turn off mail.

use crate::Plan;

/// `relay_domains` values above this many bytes are refused in inline mode. Linux limits one
/// argument (`postconf -e "relay_domains = …"`) to 128 KiB; this keeps a margin for the
/// parameter name and for growth between two runs.
pub const INLINE_LIMIT_BYTES: usize = 100 * 1024;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// `MAX_REMOVE_PERCENT`: the largest share of managed domains one run may remove.
    pub max_remove_percent: u8,
    /// `ALLOW_EMPTY`: let an empty database remove every managed domain.
    pub allow_empty: bool,
    /// `--force`: lift the removal limit for this run.
    pub force: bool,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            max_remove_percent: 50,
            allow_empty: false,
            force: false,
        }
    }
}

/// Why the guard refused a plan. Nothing has been changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The database returned no valid domain, yet Postfix relays for some.
    #[error("the database returned no valid domain but relay_domains has {managed} managed domain(s); if that is intended, run once with RELAY_SYNC_ALLOW_EMPTY=yes and --force")]
    EmptyDatabase {
        /// Managed domains that would all be removed.
        managed: usize,
    },
    /// Too many removals at once.
    #[error("this run would remove {removed} of {managed} managed domains ({percent}%), more than MAX_REMOVE_PERCENT={max}%; check the database, then run `relay-sync --force` once if it is intended")]
    MassRemoval {
        /// Domains the plan removes.
        removed: usize,
        /// Managed domains now.
        managed: usize,
        /// `removed` as a percentage of `managed`, rounded down.
        percent: usize,
        /// `MAX_REMOVE_PERCENT`.
        max: u8,
    },
    /// Recipient validation: the query returned no recipient at a relayed domain, yet the
    /// table in force has entries (or validation is turning on, which would refuse every
    /// address at every relayed domain).
    #[error("RECIPIENTS_QUERY returned no recipient at a relayed domain; {}, so every address at every relayed domain would be refused. Check RECIPIENTS_QUERY and the grant on its table; if it is intended, run once with RELAY_SYNC_ALLOW_EMPTY=yes and --force", if *entries == 0 { format!("recipient validation would turn on with {path} empty") } else { format!("{path} accepts {entries} address(es) now") })]
    EmptyRecipients {
        /// Entries of the table in force (0 when validation is turning on).
        entries: usize,
        /// The table's source file.
        path: String,
    },
    /// Recipient validation: too many addresses leave at once at domains that stay relayed.
    #[error("this run would remove {removed} of {entries} recipients ({percent}%) at domains that stay relayed, more than MAX_REMOVE_PERCENT={max}%; check RECIPIENTS_QUERY and the users table, then run `relay-sync --force` once if it is intended")]
    RecipientMassRemoval {
        /// Entries that leave at domains that stay relayed.
        removed: usize,
        /// Entries in the table in force.
        entries: usize,
        /// `removed` as a percentage of `entries`, rounded down.
        percent: usize,
        /// `MAX_REMOVE_PERCENT`.
        max: u8,
    },
    /// The `relay_domains` value would not fit in one `postconf -e` argument.
    #[error("relay_domains would be {bytes} bytes for {domains} domains, more than inline mode's safe limit of {limit} bytes; switch to RELAY_DOMAINS_MODE=map")]
    InlineTooLarge {
        /// Size of the rendered value.
        bytes: usize,
        /// Domains in it.
        domains: usize,
        /// [`INLINE_LIMIT_BYTES`].
        limit: usize,
    },
}

/// Checks a plan. `Ok(())` means it may be applied.
///
/// ```
/// use std::collections::BTreeSet;
/// use relay_core::{guard, DomainName, GuardSettings, NextHop, Plan, PlanInput, Refusal, Transport};
/// let hop = NextHop::new(Transport::Smtp, "192.0.2.1", 25).unwrap();
/// let empty = BTreeSet::new();
/// let plan = Plan::new(PlanInput {
///     database: &empty,
///     preserve: &empty,
///     relay_domains: "a.example, b.example",
///     transport: None,
///     next_hop: &hop,
/// })
/// .unwrap();
/// assert_eq!(
///     guard(&plan, GuardSettings::default()),
///     Err(Refusal::EmptyDatabase { managed: 2 })
/// );
/// ```
pub fn guard(plan: &Plan, settings: GuardSettings) -> Result<(), Refusal> {
    let managed = plan.managed_now;
    let removed = plan.removed.len();
    if plan.database_domains == 0 && managed > 0 && !settings.allow_empty {
        return Err(Refusal::EmptyDatabase { managed });
    }
    if let Some(percent) = removes_too_many(removed, managed, settings) {
        return Err(Refusal::MassRemoval {
            removed,
            managed,
            percent,
            max: settings.max_remove_percent,
        });
    }
    if let Some(recipients) = plan.recipients.as_ref().filter(|r| r.enabled) {
        let empty = recipients.entries == 0 && plan.relayed_count > 0;
        if empty && (recipients.entries_now > 0 || !recipients.active_now) && !settings.allow_empty
        {
            return Err(Refusal::EmptyRecipients {
                entries: recipients.entries_now,
                path: recipients.path.clone(),
            });
        }
        let (removed, entries) = (recipients.removed_kept_domains, recipients.entries_now);
        if let Some(percent) = removes_too_many(removed, entries, settings) {
            return Err(Refusal::RecipientMassRemoval {
                removed,
                entries,
                percent,
                max: settings.max_remove_percent,
            });
        }
    }
    // Only a value that is about to be written must fit in one argument.
    if plan.relay_domains_changed() && plan.relay_domains_value.len() > INLINE_LIMIT_BYTES {
        return Err(Refusal::InlineTooLarge {
            bytes: plan.relay_domains_value.len(),
            domains: plan.target.domains.len(),
            limit: INLINE_LIMIT_BYTES,
        });
    }
    Ok(())
}

/// `MAX_REMOVE_PERCENT`: the share of `removed` in `of`, rounded down, when one run removing
/// them must be refused (more than one, over the limit, and not `--force`d); else `None`.
fn removes_too_many(removed: usize, of: usize, settings: GuardSettings) -> Option<usize> {
    // Integer arithmetic: refuse when removed / of > max / 100.
    let over_limit = removed * 100 > usize::from(settings.max_remove_percent) * of;
    (removed > 1 && over_limit && !settings.force).then(|| removed * 100 / of.max(1))
}
