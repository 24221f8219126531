//! `STATE_DIR`, checked once per run under the lock, before anything is synced.
//!
//! Every file relay-sync keeps there is read through relay-fs as a file it keeps: a link, a
//! FIFO, a device, another user's file, a file past its size limit, or a `STATE_DIR` that
//! someone else can write is refused, naming the file and the `rm`/`chown`/`chmod` that fixes
//! it. Such a refusal is a failed run (exit 2, recorded and alerted like any other failure):
//! the operator's intent (a hold) or the run's memory (the streak, the owed reload) cannot be
//! known, and whoever could plant a file there could plant the next one too. The files read
//! later in the run (the state, the outbox, the postconf cache) are checked here as well, so
//! that a refusal ends the run before it changes anything rather than after.

use std::path::Path;

use relay_fs::{FsError, Kind};

use crate::hold::{self, Hold};
use crate::{failures, journal, outbox};

/// The file in `STATE_DIR` where a run keeps what postconf printed (see
/// [`relay_postfix::PostfixCli::with_postconf_cache`]).
pub(crate) const POSTCONF_CACHE: &str = "postconf.cache";

/// What a run reads from `STATE_DIR` before it syncs.
#[derive(Debug)]
pub(crate) struct Kept {
    /// The hold, while syncs are held.
    pub(crate) hold: Option<Hold>,
    /// What the last run remembered (the rows it rejected, the steady conditions it
    /// reported), when known.
    pub(crate) remembered: Option<failures::Remembered>,
    /// Whether an earlier run left a reload to do.
    pub(crate) reload_pending: bool,
}

/// Reads what a run needs from `state_dir` and checks every other file relay-sync keeps
/// there; the first refusal, or a failure to read, is the error.
pub(crate) fn read(state_dir: &Path) -> Result<Kept, FsError> {
    let hold = hold::read(state_dir)?;
    for (kind, name) in [
        (Kind::STATE, failures::STATE_FILE),
        (Kind::OUTBOX, outbox::OUTBOX_FILE),
        (Kind::POSTCONF_CACHE, POSTCONF_CACHE),
    ] {
        relay_fs::inspect(kind, &state_dir.join(name))?;
    }
    Ok(Kept {
        hold,
        remembered: failures::load_remembered(state_dir)?,
        reload_pending: journal::is_pending(state_dir)?,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_file_kept_there_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let kept = read(&state).unwrap();
        assert!(kept.hold.is_none() && kept.remembered.is_none() && !kept.reload_pending);
        fs::create_dir(&state).unwrap();
        fs::write(state.join(journal::RELOAD_PENDING), "owed\n").unwrap();
        assert!(read(&state).unwrap().reload_pending);
        for name in [
            hold::HOLD_FILE,
            failures::STATE_FILE,
            outbox::OUTBOX_FILE,
            POSTCONF_CACHE,
            failures::INVALID_ROWS_FILE,
            journal::RELOAD_PENDING,
        ] {
            let path = state.join(name);
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
            let error = read(&state).unwrap_err();
            assert!(error.is_refusal(), "{name}: {error}");
            assert!(
                error
                    .to_string()
                    .contains(&format!("rm {}", path.display())),
                "{error}"
            );
            fs::remove_file(&path).unwrap();
        }
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let error = read(&state).unwrap_err();
        assert!(error.to_string().contains("chmod go-w"), "{error}");
    }
}
