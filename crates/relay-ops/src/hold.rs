//! `relay-sync hold --reason TEXT` / `release`: the operator's "leave this gateway alone", like
//! `puppet agent --disable "reason"`. While `STATE_DIR/hold` exists, a sync changes nothing: it
//! logs a WARN naming the reason, who held it and when, and exits 0. The hold lives in
//! `STATE_DIR`, so it survives a reboot; `status`, `check` and the metrics show it.
//!
//! The usual use is after a rollback (`rollback --hold`): without it, the next cron run would
//! apply the database again within five minutes.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The hold file's name inside `STATE_DIR`.
pub(crate) const HOLD_FILE: &str = "hold";

/// Why and since when syncs are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hold {
    /// What the operator said.
    pub reason: String,
    /// Who held it: `SUDO_USER`, else `USER`, else the uid.
    pub by: String,
    /// When, RFC 3339 with the offset.
    pub since: String,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "held by {} since {}: {}",
            self.by,
            self.since,
            relay_core::escape_log_line(&self.reason)
        )
    }
}

/// Why a hold could not be read, placed or lifted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// The hold file cannot be read, written or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The hold file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An empty reason: the next operator must know why.
    #[error("a hold needs a reason (--reason TEXT): whoever finds the gateway held must know why")]
    NoReason,
}

/// The hold in `state_dir`, if any. A file that cannot be parsed still holds: its text is the
/// reason, since an operator may have written it by hand.
pub(crate) fn read(state_dir: &Path) -> Result<Option<Hold>, HoldError> {
    let path = state_dir.join(HOLD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).unwrap_or_else(|_| Hold {
            reason: text.trim().to_owned(),
            by: "unknown (a hand-written hold file)".to_owned(),
            since: "unknown".to_owned(),
        }))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HoldError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Places a hold with `reason`, replacing any other.
pub(crate) fn place(state_dir: &Path, reason: &str) -> Result<Hold, HoldError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(HoldError::NoReason);
    }
    let hold = Hold {
        reason: reason.to_owned(),
        by: std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .ok()
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| {
                // SAFETY: geteuid has no preconditions and cannot fail.
                format!("uid {}", unsafe { libc::geteuid() })
            }),
        since: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
    };
    let path = state_dir.join(HOLD_FILE);
    let io = |action, source| HoldError::Io {
        action,
        path: path.clone(),
        source,
    };
    relay_postfix::create_dir(state_dir, 0o700)
        .map_err(|source| io("create the directory of", source))?;
    let text = serde_json::to_string_pretty(&hold)
        .map_err(|error| io("write", std::io::Error::other(error)))?;
    relay_postfix::replace_file(&path, format!("{text}\n").as_bytes(), 0o600)
        .map_err(|error| io("write", std::io::Error::other(error.to_string())))?;
    Ok(hold)
}

/// Lifts the hold; the one lifted, or `None` when there was none.
pub(crate) fn release(state_dir: &Path) -> Result<Option<Hold>, HoldError> {
    let hold = read(state_dir)?;
    let path = state_dir.join(HOLD_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(hold),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HoldError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_read_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(read(&state).unwrap(), None);
        assert!(matches!(place(&state, "  "), Err(HoldError::NoReason)));
        let hold = place(&state, "rolled back: the panel lost half its domains").unwrap();
        assert_eq!(read(&state).unwrap(), Some(hold.clone()));
        assert!(hold.since.contains('T'), "{}", hold.since);
        assert_eq!(release(&state).unwrap(), Some(hold));
        assert_eq!(release(&state).unwrap(), None);
    }

    #[test]
    fn a_hand_written_hold_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HOLD_FILE), "migrating to the new MX\n").unwrap();
        let hold = read(dir.path()).unwrap().unwrap();
        assert_eq!(hold.reason, "migrating to the new MX");
    }
}
