//! The one way relay-sync reads, creates, replaces, appends to and tightens a file or a
//! directory: never through a path that someone other than root (or the running user)
//! controls.
//!
//! relay-sync runs as root, often in directories other users can write: a node-exporter
//! textfile directory, a group-writable `STATE_DIR`, the directory a mail container shares with
//! the host. Whoever can write a directory can plant a symbolic link, a FIFO or a file of their
//! own at any name in it that they can predict or observe. The rules here make such a plant
//! harmless (SECURITY.md names the test that enforces each).
//!
//! **Writing** ([`replace`], [`create_new`], [`BuildDir`], [`open_append`], [`open_lock`],
//! [`Probe`], [`create_dir`], [`tighten_dir`]):
//!
//! - A temporary file gets an unpredictable name (`.NAME.RANDOM.relay-sync.tmp`) and is created
//!   with `O_CREAT|O_EXCL|O_NOFOLLOW`: it is a new file of ours or the call fails.
//! - Owner and mode are set on the open descriptor (`fchown`, `fchmod`), never by path.
//! - A file is replaced by `rename(2)`, which replaces a link planted at the final name rather
//!   than writing through it. Only a *regular file* found there lends its owner and mode, only
//!   when root or this user owns it or no one else can write its directory, and never its
//!   setuid, setgid or sticky bit ([`Ownership`]).
//! - A file another program produced (`postmap`'s database) is opened with `O_NOFOLLOW` and must
//!   be a regular file before anything is done to it ([`open_produced`]).
//! - A symbolic link is followed only when it and what it points to are owned by root or by the
//!   running user ([`trusted_link`]): root's own choice, such as a `TRANSPORT_FILE` kept by
//!   configuration management or a `LOG_FILE` pointing into a shared log directory.
//!
//! **Reading** ([`read`], [`read_to_string`], [`open`], [`inspect`]) a file of a [`Kind`]:
//!
//! - nothing is opened that is not a regular file: the name is looked at first (`fstatat`
//!   without following), then opened `O_NOFOLLOW|O_NONBLOCK` and checked again on the
//!   descriptor, so that a FIFO or a device can neither hang a run nor feed it without end;
//! - its size is bounded by the kind's limit, before and while it is read;
//! - a file relay-sync keeps (state, hold, outbox, journal, backups, …) must also be owned by
//!   root or the running user, writable by its owner alone, have one hard link, and sit in a
//!   directory that only root or the running user can write (a sticky directory such as
//!   `/run/lock` is accepted: there no one can rename or remove what is not theirs).
//!
//! Anything else is refused with [`FsError::Refused`], which names the file and the command
//! that fixes it (`rm`, `chown`, `chmod`).
//!
//! *Architecture invariant:* every file relay-sync owns is opened here and nowhere else (CI's
//! clippy `disallowed-methods` list keeps it so); nothing here follows a link someone else
//! made, blocks on a FIFO, or reads without a bound.

// This crate is the door the workspace's `disallowed-methods` list (clippy.toml) sends every
// other crate to: it alone opens files by path, with the rules above.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

mod probe;
mod read;
mod trust;
mod write;

pub use probe::{check_writable, Probe};
pub use read::{inspect, open, read, read_to_string, Kind, Reader};
pub use trust::{breaches, trusted_link, trusted_owner, Breach, Trust};
pub use write::{
    create_dir, create_new, open_append, open_lock, open_produced, remove_leftover, rename_checked,
    replace, replace_dated, set_mode, sync_dir, temp_name_base, tighten_dir, BuildDir, Ownership,
};

/// What went wrong with a file. Every variant names the file; a refusal also says how to fix
/// it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `write`, `rename into place`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something at a name relay-sync uses is not what relay-sync may read or write there: a
    /// link someone else made, a FIFO, another user's file, a directory others can write, a
    /// file past its kind's size limit.
    #[error("refusing {}: {problem}; {fix}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. `the hold file is a FIFO (named pipe), not a regular file`.
        problem: String,
        /// What to run, e.g. ``run `rm /var/lib/relay-sync/hold` ``.
        fix: String,
    },
    /// A file is not what it must be in another way (not UTF-8 text, replaced while it was
    /// installed).
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

impl FsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. }
            | FsError::Refused { path, .. }
            | FsError::Invalid { path, .. } => path,
        }
    }

    /// Whether relay-sync refused the file (rather than the system failing an operation).
    pub fn is_refusal(&self) -> bool {
        matches!(self, FsError::Refused { .. })
    }
}

/// An [`FsError::Io`] naming what was being done to which file.
pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> FsError {
    FsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `path` as one word of a shell command, for a fix relay-sync suggests (`chown root '/my
/// dir'`): as it is when it needs no quoting. Every command relay-sync suggests is quoted by
/// shlex, here for a path and in relay-postfix for Postfix's commands, so that a fix can be
/// pasted as it is printed.
///
/// ```
/// use std::path::Path;
/// assert_eq!(relay_fs::shell_word(Path::new("/var/lib/relay-sync")), "/var/lib/relay-sync");
/// assert_eq!(relay_fs::shell_word(Path::new("/my dir")), "'/my dir'");
/// ```
pub fn shell_word(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    match shlex::bytes::try_quote(path.as_os_str().as_bytes()) {
        Ok(quoted) => String::from_utf8_lossy(&quoted).into_owned(),
        // Only a NUL byte cannot be quoted, and no path holds one.
        Err(_) => path.display().to_string(),
    }
}

/// A test's temporary directory, made here rather than by `tempfile::tempdir` so that tests
/// can also make it others' (the `nobody` cases run as root only).
#[cfg(test)]
pub(crate) mod testing {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    /// The uid of `nobody`: a local user who is not root.
    pub(crate) const NOBODY: u32 = 65534;

    /// Fails unless the tests run as root, as CI does: the cases about another user's files
    /// chown to `nobody`.
    pub(crate) fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test chowns files to nobody: run it as root (sudo -E cargo test -p relay-fs)"
        );
    }

    /// A root-owned (this user's) 0600 file that must stay as it is.
    pub(crate) fn victim(dir: &Path) -> PathBuf {
        let path = dir.join("victim");
        fs::write(&path, "secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    pub(crate) fn assert_untouched(path: &Path) {
        let meta = fs::symlink_metadata(path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(fs::read_to_string(path).unwrap(), "secret\n");
    }

    /// A FIFO at `path`.
    pub(crate) fn fifo(path: &Path) {
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
    }

    /// The error's text, or a panic naming what was returned instead.
    pub(crate) fn refusal<T: std::fmt::Debug>(result: Result<T, crate::FsError>) -> String {
        match result {
            Err(error @ crate::FsError::Refused { .. }) => error.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
