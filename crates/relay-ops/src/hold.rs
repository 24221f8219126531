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

/// One line, every field escaped: the log, `status` and `check` show it, and `by` comes from
/// `SUDO_USER` or `USER`, which whoever runs `relay-sync hold` chooses.
impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "held by {} since {}: {}",
            relay_core::escape_log_line(&self.by),
            relay_core::escape_log_line(&self.since),
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
    /// relay-fs refused the hold file, or could not write it (a link or a FIFO at
    /// `STATE_DIR/hold`, a `STATE_DIR` others can write): it names the file and the fix.
    #[error(transparent)]
    File(#[from] relay_fs::FsError),
}

/// The hold in `state_dir`, if any. A file that cannot be parsed still holds: its text is the
/// reason, since an operator may have written it by hand. It is read as a file relay-sync keeps
/// ([`relay_fs::Kind::HOLD`]): a link, a FIFO or another user's file there is refused, so that
/// no one can stop syncs with it or have its target's contents shown as the reason.
pub(crate) fn read(state_dir: &Path) -> Result<Option<Hold>, relay_fs::FsError> {
    let path = state_dir.join(HOLD_FILE);
    let Some(text) = relay_fs::read_to_string(relay_fs::Kind::HOLD, &path)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&text).unwrap_or_else(|_| Hold {
        reason: text.trim().to_owned(),
        by: "unknown (a hand-written hold file)".to_owned(),
        since: "unknown".to_owned(),
    })))
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
    relay_fs::create_dir(state_dir, 0o700)?;
    let text = serde_json::to_string_pretty(&hold).map_err(|error| HoldError::Io {
        action: "write",
        path: path.clone(),
        source: std::io::Error::other(error),
    })?;
    relay_fs::replace(&path, format!("{text}\n").as_bytes(), 0o600)?;
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

    /// `by` and `since` are escaped like the reason: a newline or an ESC in `SUDO_USER` never
    /// reaches a terminal or starts a log line.
    #[test]
    fn a_hold_shows_as_one_escaped_line() {
        let hold = Hold {
            reason: "r\n".to_owned(),
            by: "x\n\u{1b}[2J".to_owned(),
            since: "s\r".to_owned(),
        };
        assert_eq!(hold.to_string(), r"held by x\n\u{1b}[2J since s\r: r\n");
    }

    #[test]
    fn a_hand_written_hold_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HOLD_FILE), "migrating to the new MX\n").unwrap();
        let hold = read(dir.path()).unwrap().unwrap();
        assert_eq!(hold.reason, "migrating to the new MX");
    }
}
