//! The run lock (SPEC §2 step 1): one run at a time, and a second one steps aside at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held for the whole run; the lock is released when this is dropped or the process dies
/// (kill -9 included: the kernel drops `flock` locks with the file descriptor).
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another run holds it.
    #[error("another run holds {0}")]
    Held(PathBuf),
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}; check that LOCK_FILE's directory exists and is writable by this user")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the exclusive, non-blocking lock on `path`, creating the file (0600) and its directory
/// (0700) when missing.
pub(crate) fn take(path: &Path) -> Result<RunLock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(LockError::Held(path.to_owned())),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/relay-sync.lock");
        let first = take(&path).unwrap();
        assert!(matches!(take(&path), Err(LockError::Held(_))));
        drop(first);
        take(&path).unwrap();
    }
}
