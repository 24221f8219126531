//! Atomic file replacement: temporary file in the same directory, fsync, owner and mode of the
//! file it replaces, rename, directory fsync. A crash at any instant leaves the old file or the
//! new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PostfixError;

/// The fixed temporary name for `path`: `.NAME.relay-sync.tmp` beside it. Fixed rather than
/// random so that a run after a crash overwrites, and then removes, what the crashed run left.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.relay-sync.tmp"))
}

/// Owner and permission bits to give a new version of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Ownership {
    /// The owner and mode of `path`, or `None` if it does not exist.
    pub(crate) fn of(path: &Path) -> Result<Option<Ownership>, PostfixError> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(Ownership {
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.permissions().mode() & 0o7777,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("inspect", path, source)),
        }
    }

    /// Applies this owner and mode to `path`.
    pub(crate) fn apply(self, path: &Path) -> Result<(), PostfixError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|source| io("set the owner of", path, source))?;
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))
            .map_err(|source| io("set the mode of", path, source))
    }
}

/// Writes `bytes` to `temp` without flushing them: the caller flushes with [`sync_file`]
/// before the rename that makes them count.
pub(crate) fn write_unsynced(temp: &Path, bytes: &[u8], mode: u32) -> Result<(), PostfixError> {
    create_with(temp, bytes, mode).map(drop)
}

/// Creates (or truncates) `temp` with `mode` and writes `bytes` to it.
fn create_with(temp: &Path, bytes: &[u8], mode: u32) -> Result<File, PostfixError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(temp)
        .map_err(|source| io("create", temp, source))?;
    file.write_all(bytes)
        .map_err(|source| io("write", temp, source))?;
    Ok(file)
}

/// Flushes an existing file (e.g. a map database postmap just built) to disk.
pub(crate) fn sync_file(path: &Path) -> Result<(), PostfixError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| io("flush", path, source))
}

/// Renames `from` over `to`.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), PostfixError> {
    fs::rename(from, to).map_err(|source| io("rename into place", to, source))
}

/// Flushes a directory, so that renames in it survive a power loss.
pub(crate) fn sync_dir(path: &Path) -> Result<(), PostfixError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("flush directory", dir, source))
}

/// Replaces `path` with `bytes` atomically, keeping its owner and mode (`new_mode` for a file
/// that did not exist).
pub(crate) fn replace(path: &Path, bytes: &[u8], new_mode: u32) -> Result<(), PostfixError> {
    replace_dated(path, bytes, new_mode, None)
}

/// [`replace`], the new file's modification time set to `modified` when given.
pub(crate) fn replace_dated(
    path: &Path,
    bytes: &[u8],
    new_mode: u32,
    modified: Option<std::time::SystemTime>,
) -> Result<(), PostfixError> {
    let temp = temp_path(path);
    let result = (|| {
        let ownership = Ownership::of(path)?;
        let file = create_with(&temp, bytes, 0o600)?;
        if let Some(modified) = modified {
            file.set_modified(modified)
                .map_err(|source| io("set the time of", &temp, source))?;
        }
        file.sync_all()
            .map_err(|source| io("write", &temp, source))?;
        drop(file);
        match ownership {
            Some(ownership) => ownership.apply(&temp)?,
            None => set_mode(&temp, new_mode)?,
        }
        rename(&temp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        remove_if_present(&temp);
    }
    result
}

/// Removes a leftover temporary file; a missing one is fine, and any other failure is left for
/// the rename that follows to report.
pub(crate) fn remove_if_present(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Removes what a crashed run left under a temporary name before it is reused; unlike
/// [`remove_if_present`], a file that cannot be removed is an error, since the step that follows
/// would trip over it.
pub(crate) fn remove_stale(path: &Path) -> Result<(), PostfixError> {
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!("removed leftover {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io("remove leftover", path, source)),
    }
}

/// Sets the permission bits of `path` (exactly `mode`, whatever the umask).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), PostfixError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| io("set the mode of", path, source))
}

/// A [`PostfixError::Io`] naming what was being done to which file.
pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> PostfixError {
    PostfixError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
