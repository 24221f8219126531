//! The pure core of relay-sync.
//!
//! It takes values in (the database's raw rows, the current `relay_domains` value, the transport
//! file's text) and gives values out (a [`Plan`], the guard's verdict, the new texts and the
//! [`Step`]s that apply them). It knows nothing of MariaDB or Postfix commands.
//!
//! Architecture invariant: no I/O, no async, no processes, no clock. Everything that touches the
//! world lives in the outer crates.
//!
//! ```
//! use std::collections::BTreeSet;
//! use relay_core::{apply_steps, guard, normalize_rows, GuardSettings, NextHop, Plan, PlanInput, Step, Transport};
//!
//! let rows = normalize_rows(&["example.com", "new.example", "bad domain"]);
//! assert_eq!(rows.rejected.len(), 1);
//! let hop = NextHop::new(Transport::Smtp, "100.110.222.53", 2525).unwrap();
//! let plan = Plan::new(PlanInput {
//!     database: &rows.valid,
//!     preserve: &BTreeSet::new(),
//!     relay_domains: "example.com",
//!     transport: Some("example.com smtp:[100.110.222.53]:2525\n"),
//!     next_hop: &hop,
//! })
//! .unwrap();
//! guard(&plan, GuardSettings::default()).unwrap();
//! assert_eq!(plan.relay_domains_value, "example.com, new.example");
//! let steps = apply_steps(&plan, true);
//! assert!(matches!(steps[0], Step::WriteTransport(_)));
//! assert_eq!(steps[1], Step::SetRelayDomains("example.com, new.example"));
//! assert_eq!(steps[2], Step::Reload);
//! ```
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod apply_order;
mod domain;
mod guard;
mod log_escape;
mod map_table;
mod plan;
mod recipient;
mod recovery;
mod relay_domains;
mod relay_domains_map;
mod restore;
mod rollback;
mod rows;
mod transport;

pub use apply_order::{
    apply_steps, apply_steps_with, sync_steps, FirstWrites, Freshness, PreRun, Step, StepKind,
};
pub use domain::{DomainName, InvalidDomain};
pub use guard::{guard, GuardSettings, Refusal, INLINE_LIMIT_BYTES};
pub use log_escape::{escape_for_log, escape_log_line};
pub use map_table::{
    entry_key, MapTable, RecipientsKind, RecipientsTable, RelayDomainsKind, RelayDomainsTable,
    TableKind, MAP_HEADER, RECIPIENTS_HEADER,
};
pub use plan::{Plan, PlanError, PlanInput};
pub use recipient::{
    normalize_recipients, InvalidRecipient, Recipient, RecipientPlan, RecipientsError,
    RecipientsInput, LOCAL_PART_MAX, RECIPIENT_SAMPLE,
};
pub use recovery::RecoveryPlan;
pub use relay_domains::{RelayDomains, RelayDomainsError};
pub use relay_domains_map::RelayDomainsMode;
pub use restore::{review_restore, RestoreConcern, RestoreReviewInput};
pub use rollback::{
    GenerationTexts, RecipientsRestore, RecipientsRollback, RollbackInput, RollbackPlan,
    RollbackPlanError, TableRestore,
};
pub use rows::{
    normalize_owned, normalize_rows, Normalized, NormalizedRecipients, Rejected, RejectedRecipient,
};
pub use transport::{
    is_host_name, InvalidNextHop, NextHop, Transport, TransportError, TransportFile, BEGIN_MARKER,
    END_MARKER,
};

/// Cuts a list for a log line: at most `max` items, then `… (+N more)` (SPEC §8).
///
/// ```
/// assert_eq!(relay_core::cut_list(["a", "b", "c"], 2), "a, b … (+1 more)");
/// ```
pub fn cut_list<I, T>(items: I, max: usize) -> String
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    let mut out = String::new();
    let mut extra = 0usize;
    for (i, item) in items.into_iter().enumerate() {
        if i >= max {
            extra += 1;
            continue;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    if extra > 0 {
        out.push_str(&format!(" … (+{extra} more)"));
    }
    out
}
