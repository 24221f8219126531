//! The one way relay-sync creates, replaces, opens for appending and tightens a file or a
//! directory: never through a path that someone other than root (or the running user) controls.
//!
//! relay-sync runs as root, often in directories other users can write: a node-exporter textfile
//! directory, a group-writable `STATE_DIR`, the directory a mail container shares with the host.
//! Whoever can write a directory can plant a symbolic link (or a FIFO, or a file of their own)
//! at any name in it that they can predict or observe. The rules here make such a plant
//! harmless (SECURITY.md names the test that enforces each):
//!
//! - A temporary file gets an unpredictable name (`.NAME.RANDOM.relay-sync.tmp`) and is created
//!   with `O_CREAT|O_EXCL|O_NOFOLLOW`: it is a new file of ours or the call fails.
//! - Owner and mode are set on the open descriptor (`fchown`, `fchmod`), never by path.
//! - A file is replaced by `rename(2)`, which replaces a link planted at the final name rather
//!   than writing through it; the owner and mode kept are those of a *regular file* found there.
//! - A file another program produced (`postmap`'s database, possibly made in a container) is
//!   opened with `O_NOFOLLOW` and must be a regular file (`fstat` on the descriptor) before
//!   anything is done to it (`open_produced`).
//! - A map is built in a private directory (`BuildDir`, mode 0700), since `postmap` creates its
//!   output with `O_CREAT` but without `O_EXCL`: in a shared directory a link planted at the
//!   output's name, once the random source name is seen, would be followed by a root `postmap`.
//! - A directory is tightened through an `O_DIRECTORY|O_NOFOLLOW` descriptor ([`tighten_dir`]);
//!   a directory that is a symbolic link is never chmodded.
//! - A symbolic link is followed only when it and what it points to are owned by root or by the
//!   running user ([`trusted_link`]): root's own choice, such as a `TRANSPORT_FILE` kept by
//!   configuration management or a `LOG_FILE` pointing into a shared log directory.
//! - What a killed run left is removed only when it is a regular file (or, for a map build, a
//!   directory) owned by the running user and named by relay-sync's own pattern
//!   (`remove_leftover`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PostfixError;

/// The suffix of every temporary name relay-sync uses.
const TEMP_SUFFIX: &str = ".relay-sync.tmp";

/// Random characters in a temporary name: 62^12 names, none predictable.
const RANDOM_LEN: usize = 12;

/// Whether `uid` may own a link relay-sync follows or a file it trusts: root, or the user
/// relay-sync runs as.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == effective_uid()
}

/// The user relay-sync runs as.
fn effective_uid() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Owner and permission bits to give a new version of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Ownership {
    /// The owner and mode of the regular file at `path`, or `None` when there is none: nothing
    /// there, or something else (a link someone planted lends its owner to nothing).
    pub(crate) fn of(path: &Path) -> Result<Option<Ownership>, PostfixError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_file() => Ok(Some(Ownership {
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.mode() & 0o7777,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("inspect", path, source)),
        }
    }

    /// Applies this owner and mode to the open `file` (`fchown`, `fchmod`); `path` names it in
    /// errors.
    pub(crate) fn apply(self, file: &File, path: &Path) -> Result<(), PostfixError> {
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
            .map_err(|source| io("set the owner of", path, source))?;
        set_mode(file, path, self.mode)
    }
}

/// Sets the permission bits of the open `file` (exactly `mode`, whatever the umask).
pub(crate) fn set_mode(file: &File, path: &Path, mode: u32) -> Result<(), PostfixError> {
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|source| io("set the mode of", path, source))
}

/// Creates a new file at `path`, mode 0600 for now: `O_CREAT|O_EXCL|O_NOFOLLOW`, so an existing
/// file or link there is an error, never opened.
pub(crate) fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(path)
}

/// A new temporary file beside `path` (`.NAME.RANDOM.relay-sync.tmp` in the same directory),
/// created by [`create_new`] and removed when dropped unless persisted.
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, PostfixError> {
    let dir = parent_of(path);
    let prefix = format!(".{}.", file_name(path));
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(RANDOM_LEN)
        .make_in(dir, create_new)
        .map_err(|source| io("create a temporary file in", dir, source))
}

/// Replaces `path` with `bytes` atomically: a new temporary file in the same directory, the
/// owner and mode of the regular file it replaces (`new_mode` for a new file) set on its
/// descriptor, fsync, rename, directory fsync. A crash leaves the old file or the new one; a
/// link at `path` is replaced, never written through.
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
    let ownership = Ownership::of(path)?;
    // Dropped on any error below, which removes the temporary file.
    let mut temp = temp_beside(path)?;
    let temp_path = temp.path().to_owned();
    temp.write_all(bytes)
        .map_err(|source| io("write", &temp_path, source))?;
    let file = temp.as_file();
    if let Some(modified) = modified {
        file.set_modified(modified)
            .map_err(|source| io("set the time of", &temp_path, source))?;
    }
    match ownership {
        Some(ownership) => ownership.apply(file, &temp_path)?,
        None => set_mode(file, &temp_path, new_mode)?,
    }
    file.sync_all()
        .map_err(|source| io("write", &temp_path, source))?;
    temp.persist(path)
        .map_err(|error| io("rename into place", path, error.error))?;
    sync_dir(path)
}

/// Opens a file another program produced (`postmap`'s database) without following a link, and
/// checks that it is a regular file, before relay-sync does anything to it. Anything else is
/// refused, naming the file: a link there would lend relay-sync's root to whoever planted it.
pub(crate) fn open_produced(path: &Path) -> Result<File, PostfixError> {
    // O_NONBLOCK: a FIFO planted there must not hang the run; it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(libc::ELOOP) {
                not_regular(path, "a symbolic link")
            } else {
                io("open", path, error)
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(path, "not a regular file"));
    }
    Ok(file)
}

/// The refusal of a produced file that is not a regular file.
fn not_regular(path: &Path, what: &str) -> PostfixError {
    PostfixError::Invalid {
        path: path.to_owned(),
        detail: format!(
            "{what} where postmap was to write a map database; refusing to touch it (was \
             postmap, or the container it runs in, tampered with?): inspect it and remove it"
        ),
    }
}

/// Renames `from` over `to`, then checks that the name `to` holds `file` (the descriptor
/// relay-sync checked and flushed): a swap between the check and the rename is refused.
pub(crate) fn rename_checked(from: &Path, to: &Path, file: &File) -> Result<(), PostfixError> {
    fs::rename(from, to).map_err(|source| io("rename into place", to, source))?;
    let expected = file
        .metadata()
        .map_err(|source| io("inspect", from, source))?;
    let installed = fs::symlink_metadata(to).map_err(|source| io("inspect", to, source))?;
    if (installed.dev(), installed.ino()) != (expected.dev(), expected.ino()) {
        return Err(PostfixError::Invalid {
            path: to.to_owned(),
            detail: "was replaced by another file while relay-sync installed it; inspect \
                     the directory for another writer"
                .into(),
        });
    }
    Ok(())
}

/// Flushes the directory holding `path`, so that renames in it survive a power loss.
pub(crate) fn sync_dir(path: &Path) -> Result<(), PostfixError> {
    let dir = parent_of(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("flush directory", dir, source))
}

/// A private directory (`.NAME.RANDOM.relay-sync.tmp`, mode 0700) beside `NAME`, for building a
/// map: nobody but root can plant anything in it, whatever the name `postmap` writes to. On the
/// same file system as `NAME`, so its files are renamed into place atomically. Removed, with
/// what is left in it, when dropped.
#[derive(Debug)]
pub(crate) struct BuildDir {
    dir: tempfile::TempDir,
}

impl BuildDir {
    /// Creates the directory beside `path` (`mkdir` never follows a link; a taken name is
    /// retried with another).
    pub(crate) fn beside(path: &Path) -> Result<BuildDir, PostfixError> {
        let parent = parent_of(path);
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name(path)))
            .suffix(TEMP_SUFFIX)
            .rand_bytes(RANDOM_LEN)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|source| io("create a build directory in", parent, source))?;
        Ok(BuildDir { dir })
    }

    /// `name` inside the directory.
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The file `path` finally points to when it is a symbolic link that relay-sync may follow;
/// `None` when it is not a link (or does not exist).
///
/// A link is followed only when the link and the file it resolves to are owned by root or by
/// the running user: a `TRANSPORT_FILE` kept by configuration management is root's choice,
/// while a link someone else planted is refused, naming it. A link to nothing is refused too:
/// writing through it would create a file wherever it points.
pub fn trusted_link(path: &Path) -> Result<Option<PathBuf>, PostfixError> {
    let link = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => meta,
        _ => return Ok(None),
    };
    let to = || fs::read_link(path).map_or_else(|_| "?".into(), |to| to.display().to_string());
    if !trusted_owner(link.uid()) {
        return Err(PostfixError::Invalid {
            path: path.to_owned(),
            detail: format!(
                "a symbolic link to {} owned by uid {}; relay-sync follows a link only when \
                 root owns it and what it points to: remove the link, or `chown -h root` it \
                 if it is yours",
                to(),
                link.uid()
            ),
        });
    }
    let target = fs::canonicalize(path).map_err(|error| PostfixError::Invalid {
        path: path.to_owned(),
        detail: format!(
            "a symbolic link to {}, which cannot be followed ({error}); it was left as it is: \
             point the link at the file or replace it with one",
            to()
        ),
    })?;
    let meta = fs::metadata(&target).map_err(|source| io("inspect", &target, source))?;
    if !trusted_owner(meta.uid()) {
        return Err(PostfixError::Invalid {
            path: path.to_owned(),
            detail: format!(
                "a symbolic link to {}, which is owned by uid {}; relay-sync follows a link \
                 only to what root owns: `chown root` it or replace the link",
                target.display(),
                meta.uid()
            ),
        });
    }
    Ok(Some(target))
}

/// Opens `path` for appending, the way relay-sync opens its log: a new file is created with
/// `O_EXCL|O_NOFOLLOW` and given exactly `new_mode` on its descriptor; an existing one is opened
/// with `O_NOFOLLOW`, unless it is a symbolic link that [`trusted_link`] accepts (root's own
/// link, e.g. into a shared log directory). A link owned by anyone else is refused, naming it.
pub fn open_append(path: &Path, new_mode: u32) -> std::io::Result<File> {
    match create_or_open(path, new_mode, |options| {
        options.append(true);
    }) {
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            match trusted_link(path).map_err(std::io::Error::other)? {
                Some(target) => OpenOptions::new().append(true).open(target),
                None => Err(error),
            }
        }
        other => other,
    }
}

/// Opens `path` for reading and writing without truncating it (a lock file): never through a
/// symbolic link (`O_NOFOLLOW`); a missing file is created with `O_EXCL` and given exactly
/// `new_mode` on its descriptor.
pub fn open_or_create(path: &Path, new_mode: u32) -> std::io::Result<File> {
    create_or_open(path, new_mode, |options| {
        options.read(true).write(true);
    })
}

/// Creates `path` with `O_EXCL|O_NOFOLLOW` and exactly `new_mode` set on its descriptor, or,
/// when it exists (another run may create it at the same time), opens it with `O_NOFOLLOW`;
/// `access` says how (append, read and write).
fn create_or_open(
    path: &Path,
    new_mode: u32,
    access: impl Fn(&mut OpenOptions),
) -> std::io::Result<File> {
    let options = |create: bool| {
        let mut options = OpenOptions::new();
        access(&mut options);
        options
            .create_new(create)
            .mode(new_mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        options
    };
    match options(true).open(path) {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(new_mode))?;
            Ok(file)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            options(false).open(path)
        }
        Err(error) => Err(error),
    }
}

/// Creates `dir` and its missing parents, each given exactly `mode` on its own descriptor
/// (whatever the umask); an existing directory is left as it is. The one way relay-sync creates
/// a directory of its own (`STATE_DIR`, the log directory, `BACKUP_DIR`, the lock's directory).
pub fn create_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.exists()) {
        create_dir(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => open_dir(dir)?.set_permissions(fs::Permissions::from_mode(mode)),
        // Created by a concurrent run, or a trusted link to a directory: left as it is.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens the directory `dir` itself, never through a link (`O_DIRECTORY|O_NOFOLLOW`).
fn open_dir(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Takes group and other permissions beyond `mode` away from the existing directory `dir`,
/// through its own descriptor. A directory that is a symbolic link is never chmodded: a
/// [`trusted_link`] is left as root set it up, and any other link is refused, naming it.
pub fn tighten_dir(dir: &Path, mode: u32) -> Result<(), PostfixError> {
    let handle = match open_dir(dir) {
        Ok(handle) => handle,
        // With O_DIRECTORY, Linux reports a link as ENOTDIR rather than ELOOP.
        Err(_) if fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink()) => {
            return trusted_link(dir).map(drop);
        }
        Err(source) => return Err(io("open directory", dir, source)),
    };
    let current = handle
        .metadata()
        .map_err(|source| io("inspect", dir, source))?
        .mode()
        & 0o7777;
    if current & !mode != 0 {
        handle
            .set_permissions(fs::Permissions::from_mode(current & mode))
            .map_err(|source| io("set the mode of", dir, source))?;
    }
    Ok(())
}

/// The `NAME` of a temporary name relay-sync made for `NAME`: `.NAME.RANDOM.relay-sync.tmp`,
/// or the fixed `.NAME.relay-sync.tmp` of versions before random names (left by a run of
/// such a version that was killed).
pub(crate) fn temp_name_base(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    match inner.rsplit_once('.') {
        Some((base, random))
            if random.len() == RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Some(base)
        }
        _ => Some(inner),
    }
}

/// Removes what a killed run left at `path`, only when it is relay-sync's own: a regular file,
/// or a build directory ([`BuildDir`]; `directories` says whether one is expected here), owned
/// by the running user. Anything else there is left alone (and logged at debug). The caller
/// matched the name against relay-sync's pattern.
pub(crate) fn remove_leftover(path: &Path, directories: bool) -> Result<(), PostfixError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("inspect leftover", path, source)),
    };
    let ours = meta.uid() == effective_uid();
    let result = if ours && meta.file_type().is_file() {
        fs::remove_file(path)
    } else if ours && directories && meta.file_type().is_dir() {
        // std's remove_dir_all never follows a link inside the tree.
        fs::remove_dir_all(path)
    } else {
        tracing::debug!(
            "{} looks like a relay-sync temporary name but is not this user's own file; left \
             as it is",
            path.display()
        );
        return Ok(());
    };
    match result {
        Ok(()) => {
            tracing::debug!("removed leftover {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io("remove leftover", path, source)),
    }
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `path`'s last component, as text for a temporary name.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default()
        .into_owned()
}

/// A [`PostfixError::Io`] naming what was being done to which file.
pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> PostfixError {
    PostfixError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root-owned (this user's) 0600 file that must stay as it is.
    fn victim(dir: &Path) -> PathBuf {
        let path = dir.join("victim");
        fs::write(&path, "secret\n").unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn assert_untouched(path: &Path) {
        let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), effective_uid());
        assert_eq!(fs::read_to_string(path).ok().as_deref(), Some("secret\n"));
    }

    #[test]
    fn create_new_never_opens_an_existing_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let victim = victim(dir.path());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap_or_else(|e| panic!("{e}"));
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling)
            .unwrap_or_else(|e| panic!("{e}"));
        for name in [&link, &dangling, &victim] {
            let error = create_new(name).err().map(|e| e.kind());
            assert_eq!(error, Some(std::io::ErrorKind::AlreadyExists), "{name:?}");
        }
        assert_untouched(&victim);
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn build_dirs_are_private_and_never_reused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("transport");
        let first = BuildDir::beside(&source).unwrap_or_else(|e| panic!("{e}"));
        let second = BuildDir::beside(&source).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(first.join(""), second.join(""));
        for build in [&first, &second] {
            let path = build.join("");
            let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(meta.file_type().is_dir());
            assert_eq!(meta.mode() & 0o777, 0o700, "{path:?}");
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert_eq!(temp_name_base(&name), Some("transport"), "{name}");
        }
        let kept = first.join("");
        drop(first);
        assert!(!kept.exists(), "a dropped build directory is removed");
    }

    #[test]
    fn produced_files_must_be_regular_files_opened_without_following() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let victim = victim(dir.path());
        let link = dir.path().join("transport.db");
        std::os::unix::fs::symlink(&victim, &link).unwrap_or_else(|e| panic!("{e}"));
        let error = open_produced(&link).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(
                |e| e.contains("symbolic link") && e.contains(&link.display().to_string())
            ),
            "{error:?}"
        );
        let fifo = dir.path().join("fifo.db");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: `name` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = open_produced(&fifo).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("not a regular file")),
            "{error:?}"
        );
        assert!(open_produced(&victim).is_ok());
        assert_untouched(&victim);
    }

    #[test]
    fn temporary_names_are_unpredictable_and_read_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state");
        let a = temp_beside(&path).unwrap_or_else(|e| panic!("{e}"));
        let b = temp_beside(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.path(), b.path());
        for temp in [&a, &b] {
            let name = temp
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            assert_eq!(temp_name_base(&name), Some("state"), "{name}");
        }
        assert_eq!(temp_name_base(".state.relay-sync.tmp"), Some("state"));
        assert_eq!(temp_name_base("state"), None);
        assert_eq!(temp_name_base(".state.relay-sync.tmp.db"), None);
    }
}
