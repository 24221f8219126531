//! The run lock (SPEC §2 step 1): one run at a time, and a second one steps aside at once.
//!
//! The holder writes its pid and the time it took the lock into the file, so that a run that
//! steps aside can say how long the lock has been held, and call it stuck when that is far
//! longer than any run can take.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Held for the whole run; the lock is released when this is dropped or the process dies
/// (kill -9 included: the kernel drops `flock` locks with the file descriptor).
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

/// Another run holds the lock: who, and since when, as far as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The lock file.
    pub path: PathBuf,
    /// The holder's process id, when its lock file names one.
    pub pid: Option<u32>,
    /// How long the lock has been held, when its lock file says since when.
    pub held_for: Option<Duration>,
}

impl Held {
    /// Whether the lock has been held for longer than `limit`.
    pub fn is_stuck(&self, limit: Duration) -> bool {
        self.held_for.is_some_and(|held| held > limit)
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is held", self.path.display())?;
        if let Some(pid) = self.pid {
            write!(f, " by pid {pid}")?;
        }
        match self.held_for {
            Some(held) => write!(f, " for {}s", held.as_secs()),
            None => f.write_str(" (since an unknown time)"),
        }
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another run holds it.
    #[error("another run holds {}", .0.path.display())]
    Held(Held),
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source}; check that LOCK_FILE's directory exists and is writable by this user")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What is at `LOCK_FILE` is not a lock relay-sync may take (a link, a FIFO, another
    /// user's file, in a directory others can write): relay-fs names it and the fix.
    #[error(transparent)]
    Refused(relay_fs::FsError),
}

/// Takes the exclusive, non-blocking lock on `path`, creating the file (0600) and its directory
/// (0700) when missing, and writes this process's pid and the time into it.
pub(crate) fn take(path: &Path) -> Result<RunLock, LockError> {
    let io = |source| LockError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        relay_fs::create_dir(dir, 0o700).map_err(refused_or_io)?;
    }
    // Never through a link, never a FIFO, never another user's file: the pid line below would
    // overwrite whatever it is.
    let mut file = relay_fs::open_lock(path, 0o600).map_err(refused_or_io)?;
    match file.try_lock() {
        Ok(()) => {
            // Only the holder writes, so a reader sees the whole line or, between the truncate
            // and the write, nothing (read as "since an unknown time").
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let stamp = format!("pid={} since={since}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(stamp.as_bytes()))
                .map_err(io)?;
            Ok(RunLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => Err(LockError::Held(holder(path, &mut file))),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

/// A refusal as itself, any other failure as the lock file's I/O error.
fn refused_or_io(error: relay_fs::FsError) -> LockError {
    match error {
        relay_fs::FsError::Io { path, source, .. } => LockError::Io { path, source },
        other => LockError::Refused(other),
    }
}

/// What the holder wrote into the lock file.
fn holder(path: &Path, file: &mut File) -> Held {
    let mut text = String::new();
    // An unreadable or foreign file only loses the detail, not the verdict; a pid line is
    // short, and more than the lock's limit is not read.
    let _ = file
        .take(relay_fs::Kind::LOCK.limit())
        .read_to_string(&mut text);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse::<u64>().ok())
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Held {
        path: path.to_owned(),
        pid: field("pid").and_then(|pid| u32::try_from(pid).ok()),
        held_for: field("since").map(|since| Duration::from_secs(now.saturating_sub(since))),
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
        let Err(LockError::Held(held)) = take(&path) else {
            panic!("the second taker got the lock");
        };
        assert_eq!(held.pid, Some(std::process::id()));
        assert!(held
            .held_for
            .is_some_and(|held| held < Duration::from_secs(60)));
        assert!(!held.is_stuck(Duration::from_secs(60)));
        drop(first);
        take(&path).unwrap();
    }

    #[test]
    fn a_lock_held_since_long_ago_is_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-sync.lock");
        let first = take(&path).unwrap();
        // What a holder that took the lock an hour ago would have written.
        let hour_ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 3600;
        std::fs::write(&path, format!("pid=4242 since={hour_ago}\n")).unwrap();
        let Err(LockError::Held(held)) = take(&path) else {
            panic!("the second taker got the lock");
        };
        assert_eq!(held.pid, Some(4242));
        assert!(held.is_stuck(Duration::from_secs(300)));
        assert!(
            held.to_string().contains("held by pid 4242 for 3600s"),
            "{held}"
        );
        drop(first);
    }
}
