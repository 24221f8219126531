//! Creating, replacing, appending to and tightening files and directories, never through a
//! path someone else controls.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::read::{refuse, Kind};
use crate::trust::{
    dir_problems, effective_uid, kept_file_problems, private_dir_of, trusted_link, trusted_owner,
};
use crate::{io, parent_of, shell_word, FsError};

/// The suffix of every temporary name relay-sync uses.
pub(crate) const TEMP_SUFFIX: &str = ".relay-sync.tmp";

/// Random characters in a temporary name: 62^12 names, none predictable.
pub(crate) const RANDOM_LEN: usize = 12;

/// Owner and permission bits to give a new version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    uid: u32,
    gid: u32,
    mode: u32,
}

impl Ownership {
    /// What the file at `path` lends the file that replaces it, or `None` when it lends
    /// nothing (the new file is then this user's, with the caller's mode for a new file).
    ///
    /// Only a regular file lends (a link someone planted lends its owner to nothing), and only
    /// when root or this user owns it or no one else can put a file in its directory, so that
    /// its owner is root's choice (a transport map given to `postfix`), not a planted file's.
    /// Its permission bits are lent; its setuid, setgid and sticky bits never are.
    pub fn of(path: &Path) -> Result<Option<Ownership>, FsError> {
        match fs::symlink_metadata(path) {
            Ok(meta)
                if meta.file_type().is_file()
                    && (trusted_owner(meta.uid()) || private_dir_of(path)) =>
            {
                Ok(Some(Ownership {
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o777,
                }))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("inspect", path, source)),
        }
    }

    /// Applies this owner and mode to the open `file` (`fchown`, `fchmod`); `path` names it in
    /// errors.
    pub fn apply(self, file: &File, path: &Path) -> Result<(), FsError> {
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
            .map_err(|source| io("set the owner of", path, source))?;
        set_mode(file, path, self.mode)
    }
}

/// Sets the permission bits of the open `file` (exactly `mode`, whatever the umask).
pub fn set_mode(file: &File, path: &Path, mode: u32) -> Result<(), FsError> {
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|source| io("set the mode of", path, source))
}

/// Creates a new file at `path`, mode 0600 for now: `O_CREAT|O_EXCL|O_NOFOLLOW`, so an existing
/// file or link there is an error, never opened.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc_flags::NOFOLLOW | libc_flags::CLOEXEC)
        .mode(0o600)
        .open(path)
}

/// The open flags std does not name, from rustix's table of them.
mod libc_flags {
    use rustix::fs::OFlags;

    /// Flags as `open(2)` takes them.
    const fn raw(flags: OFlags) -> i32 {
        flags.bits().cast_signed()
    }

    pub(super) const NOFOLLOW: i32 = raw(OFlags::NOFOLLOW);
    pub(super) const CLOEXEC: i32 = raw(OFlags::CLOEXEC);
    pub(super) const NONBLOCK: i32 = raw(OFlags::NONBLOCK);
    pub(super) const DIRECTORY: i32 = raw(OFlags::DIRECTORY);
    pub(super) const NOCTTY: i32 = raw(OFlags::NOCTTY);
}

/// A new temporary file beside `path` (`.NAME.RANDOM.relay-sync.tmp` in the same directory),
/// created by [`create_new`] and removed when dropped unless persisted.
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, FsError> {
    temp_in(parent_of(path), &file_name(path))
}

/// A new temporary file `.NAME.RANDOM.relay-sync.tmp` in `dir`.
pub(crate) fn temp_in(dir: &Path, name: &str) -> Result<tempfile::NamedTempFile, FsError> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMP_SUFFIX)
        .rand_bytes(RANDOM_LEN)
        .make_in(dir, create_new)
        .map_err(|source| io("create a temporary file in", dir, source))
}

/// Replaces `path` with `bytes` atomically: a new temporary file in the same directory, the
/// owner and mode lent by the regular file it replaces ([`Ownership::of`]; `new_mode` for a
/// new file) set on its descriptor, fsync, rename, directory fsync. A crash leaves the old file
/// or the new one; a link (or a FIFO) at `path` is replaced, never written through.
pub fn replace(path: &Path, bytes: &[u8], new_mode: u32) -> Result<(), FsError> {
    replace_dated(path, bytes, new_mode, None)
}

/// [`replace`], the new file's modification time set to `modified` when given.
pub fn replace_dated(
    path: &Path,
    bytes: &[u8],
    new_mode: u32,
    modified: Option<std::time::SystemTime>,
) -> Result<(), FsError> {
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
pub fn open_produced(path: &Path) -> Result<File, FsError> {
    // O_NONBLOCK: a FIFO planted there must not hang the run; it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK | libc_flags::CLOEXEC)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                not_produced(path, "a symbolic link")
            } else {
                io("open", path, error)
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    if !meta.file_type().is_file() {
        return Err(not_produced(path, "not a regular file"));
    }
    Ok(file)
}

/// The refusal of a produced file that is not a regular file.
fn not_produced(path: &Path, what: &str) -> FsError {
    FsError::Refused {
        path: path.to_owned(),
        problem: format!(
            "{what} where postmap was to write a map database; relay-sync does not touch it \
             (was postmap, or the container it runs in, tampered with?)"
        ),
        fix: format!("inspect it and remove it (`rm {}`)", shell_word(path)),
    }
}

/// Renames `from` over `to`, then checks that the name `to` holds `file` (the descriptor
/// relay-sync checked and flushed): a swap between the check and the rename is refused.
pub fn rename_checked(from: &Path, to: &Path, file: &File) -> Result<(), FsError> {
    fs::rename(from, to).map_err(|source| io("rename into place", to, source))?;
    let expected = file
        .metadata()
        .map_err(|source| io("inspect", from, source))?;
    let installed = fs::symlink_metadata(to).map_err(|source| io("inspect", to, source))?;
    if (installed.dev(), installed.ino()) != (expected.dev(), expected.ino()) {
        return Err(FsError::Invalid {
            path: to.to_owned(),
            detail: "was replaced by another file while relay-sync installed it; inspect \
                     the directory for another writer"
                .into(),
        });
    }
    Ok(())
}

/// Flushes the directory holding `path`, so that renames in it survive a power loss.
pub fn sync_dir(path: &Path) -> Result<(), FsError> {
    let dir = parent_of(path);
    open_dir(dir, false)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("flush directory", dir, source))
}

/// A private directory (`.NAME.RANDOM.relay-sync.tmp`, mode 0700) beside `NAME`, for building a
/// map: nobody but root can plant anything in it, whatever the name `postmap` writes to. On the
/// same file system as `NAME`, so its files are renamed into place atomically. Removed, with
/// what is left in it, when dropped.
#[derive(Debug)]
pub struct BuildDir {
    dir: tempfile::TempDir,
}

impl BuildDir {
    /// Creates the directory beside `path` (`mkdir` never follows a link; a taken name is
    /// retried with another).
    pub fn beside(path: &Path) -> Result<BuildDir, FsError> {
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
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Opens `path` for appending, the way relay-sync opens its log, never blocking: a new file is
/// created with `O_EXCL|O_NOFOLLOW` and given exactly `new_mode` on its descriptor; an existing
/// one is opened `O_NOFOLLOW|O_NONBLOCK`, unless it is a symbolic link that [`trusted_link`]
/// accepts (root's own link, e.g. into a shared log directory). It must be a regular file: a
/// FIFO, a device, or a link owned by anyone else is refused, naming it.
pub fn open_append(path: &Path, new_mode: u32) -> Result<File, FsError> {
    let target = trusted_link(path)?;
    let target = target.as_deref().unwrap_or(path);
    refuse_unless_regular(Kind::LOG, target, path)?;
    let file = create_or_open(target, new_mode, |options| {
        options.append(true);
    })
    .map_err(|error| open_error(path, error))?;
    check_regular(&file, path)?;
    Ok(file)
}

/// Opens `path` for reading and writing without truncating it (the run lock), with the rules of
/// a file relay-sync keeps ([`Kind::LOCK`]): never through a symbolic link, never blocking; an
/// existing file must be a regular file of root's or this user's, in a directory no one else
/// can write (a sticky one such as `/run/lock` is fine). A missing file is created with
/// `O_EXCL` and given exactly `new_mode` on its descriptor.
pub fn open_lock(path: &Path, new_mode: u32) -> Result<File, FsError> {
    let dir = parent_of(path);
    let meta = fs::metadata(dir).map_err(|source| io("inspect", dir, source))?;
    refuse(path, dir_problems(dir, meta.uid(), meta.mode()))?;
    let file = create_or_open(path, new_mode, |options| {
        options.read(true).write(true);
    })
    .map_err(|error| open_error(path, error))?;
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    // The checks a kept file's reader makes, on the descriptor (its size is bounded by the
    // reader of the pid line).
    if !meta.file_type().is_file() {
        return Err(not_regular(Kind::LOCK.what(), path, meta.mode()));
    }
    let mut problems = kept_file_problems(Kind::LOCK.what(), path, meta.uid(), meta.mode());
    if meta.nlink() > 1 {
        problems.push((
            format!(
                "the lock file has {} hard links, where relay-sync's own file has one",
                meta.nlink()
            ),
            format!("rm {}", shell_word(path)),
        ));
    }
    refuse(path, problems)?;
    Ok(file)
}

/// The error of an open that failed: a link (`ELOOP`) or a FIFO without a reader (`ENXIO`)
/// is a refusal naming the file, anything else the OS error.
fn open_error(path: &Path, error: std::io::Error) -> FsError {
    let raw = error.raw_os_error();
    if raw == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        FsError::Refused {
            path: path.to_owned(),
            problem: "a symbolic link, which relay-sync never follows here".to_owned(),
            fix: format!("run `rm {}`", shell_word(path)),
        }
    } else if raw == Some(rustix::io::Errno::NXIO.raw_os_error()) {
        FsError::Refused {
            path: path.to_owned(),
            problem: "a FIFO (named pipe) or a device, not a regular file".to_owned(),
            fix: format!("run `rm {}`", shell_word(path)),
        }
    } else {
        io("open", path, error)
    }
}

/// Refuses what is at `target` (named `path` in messages) when it exists and is not a regular
/// file, before anything opens it.
fn refuse_unless_regular(kind: Kind, target: &Path, path: &Path) -> Result<(), FsError> {
    match fs::symlink_metadata(target) {
        Ok(meta) if !meta.file_type().is_file() && !meta.file_type().is_symlink() => {
            Err(not_regular(kind.what(), path, meta.mode()))
        }
        _ => Ok(()),
    }
}

/// The descriptor must be a regular file.
fn check_regular(file: &File, path: &Path) -> Result<(), FsError> {
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    if meta.file_type().is_file() {
        Ok(())
    } else {
        Err(not_regular(Kind::LOG.what(), path, meta.mode()))
    }
}

/// The refusal of something that is not a regular file.
pub(crate) fn not_regular(what: &str, path: &Path, mode: u32) -> FsError {
    let found = match FileType::from_raw_mode(mode) {
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        _ => "not a file",
    };
    let fix = if FileType::from_raw_mode(mode) == FileType::Directory {
        crate::read::move_aside(path)
    } else {
        format!("rm {}", shell_word(path))
    };
    FsError::Refused {
        path: path.to_owned(),
        problem: format!("{what} is {found}, not a regular file"),
        fix: format!("run `{fix}`"),
    }
}

/// Creates `path` with `O_EXCL|O_NOFOLLOW` and exactly `new_mode` set on its descriptor, or,
/// when it exists (another run may create it at the same time), opens it with
/// `O_NOFOLLOW|O_NONBLOCK`; `access` says how (append, read and write).
fn create_or_open(
    path: &Path,
    new_mode: u32,
    access: impl Fn(&mut OpenOptions),
) -> std::io::Result<File> {
    let options = |create: bool| {
        let mut options = OpenOptions::new();
        access(&mut options);
        options.create_new(create).mode(new_mode).custom_flags(
            libc_flags::NOFOLLOW | libc_flags::NONBLOCK | libc_flags::NOCTTY | libc_flags::CLOEXEC,
        );
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
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.exists()) {
        create_dir(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => open_dir(dir, true)
            .and_then(|handle| handle.set_permissions(fs::Permissions::from_mode(mode)))
            .map_err(|source| io("set the mode of", dir, source)),
        // Created by a concurrent run, or a trusted link to a directory: left as it is.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(source) => Err(io("create", dir, source)),
    }
}

/// Opens the directory `dir` itself (`O_DIRECTORY`), never through a link when `nofollow`.
fn open_dir(dir: &Path, nofollow: bool) -> std::io::Result<File> {
    let follow = if nofollow { libc_flags::NOFOLLOW } else { 0 };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::DIRECTORY | follow | libc_flags::CLOEXEC)
        .open(dir)
}

/// Takes group and other permissions beyond `mode` away from the existing directory `dir`,
/// through its own descriptor. A directory that is a symbolic link is never chmodded: a
/// [`trusted_link`] is left as root set it up, and any other link is refused, naming it. So is
/// a directory owned by anyone but root or this user: it is not chmodded, and refused.
pub fn tighten_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
    let handle = match open_dir(dir, true) {
        Ok(handle) => handle,
        // With O_DIRECTORY, Linux reports a link as ENOTDIR rather than ELOOP.
        Err(_) if fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink()) => {
            return trusted_link(dir).map(drop);
        }
        Err(source) => return Err(io("open directory", dir, source)),
    };
    let meta = handle
        .metadata()
        .map_err(|source| io("inspect", dir, source))?;
    // Someone else's directory is theirs to chmod, and no place for root's files.
    if !trusted_owner(meta.uid()) {
        return Err(FsError::Refused {
            path: dir.to_owned(),
            problem: format!(
                "the directory is owned by uid {} (mode {:04o}), not by root: others could put \
                 anything there",
                meta.uid(),
                meta.mode() & 0o7777
            ),
            fix: format!("run `chown root {}`", shell_word(dir)),
        });
    }
    let current = meta.mode() & 0o7777;
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
pub fn temp_name_base(name: &str) -> Option<&str> {
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
pub fn remove_leftover(path: &Path, directories: bool) -> Result<(), FsError> {
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

/// `path`'s last component, as text for a temporary name.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_untouched, fifo, refusal, require_root, victim, NOBODY};

    #[test]
    fn create_new_never_opens_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for name in [&link, &dangling, &victim] {
            let error = create_new(name).err().map(|e| e.kind());
            assert_eq!(error, Some(std::io::ErrorKind::AlreadyExists), "{name:?}");
        }
        assert_untouched(&victim);
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn build_dirs_are_private_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("transport");
        let first = BuildDir::beside(&source).unwrap();
        let second = BuildDir::beside(&source).unwrap();
        assert_ne!(first.join(""), second.join(""));
        for build in [&first, &second] {
            let path = build.join("");
            let meta = fs::symlink_metadata(&path).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let link = dir.path().join("transport.db");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let text = refusal(open_produced(&link));
        assert!(text.contains("symbolic link"), "{text}");
        assert!(text.contains(&link.display().to_string()), "{text}");
        let fifo_path = dir.path().join("fifo.db");
        fifo(&fifo_path);
        assert!(refusal(open_produced(&fifo_path)).contains("not a regular file"));
        assert!(open_produced(&victim).is_ok());
        assert_untouched(&victim);
    }

    #[test]
    fn temporary_names_are_unpredictable_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let a = temp_beside(&path).unwrap();
        let b = temp_beside(&path).unwrap();
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

    #[test]
    fn replace_writes_a_new_file_over_a_link_or_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let link = dir.path().join("state");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        replace(&link, b"new\n", 0o600).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&link).unwrap(), "new\n");
        assert_untouched(&victim);
        let pipe = dir.path().join("relay_sync.prom");
        fifo(&pipe);
        replace(&pipe, b"m 1\n", 0o644).unwrap();
        let meta = fs::symlink_metadata(&pipe).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.mode() & 0o7777, 0o644);
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_never_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o7640)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o7640);
        replace(&path, b"new\n", 0o600).unwrap();
        // The owner's own permission bits are kept, the special ones never.
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_planted_file_lends_neither_its_owner_nor_its_mode() {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let path = dir.path().join("state");
        fs::write(&path, "planted\n").unwrap();
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4777)).unwrap();
        assert_eq!(Ownership::of(&path).unwrap(), None);
        replace(&path, b"new\n", 0o600).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
        // In a directory only root can write, another user's file is root's choice: a map
        // given to `postfix` keeps its owner.
        std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&theirs, "map\n").unwrap();
        std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&theirs, b"new map\n", 0o644).unwrap();
        let meta = fs::metadata(&theirs).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (NOBODY, 0o640));
    }

    #[test]
    fn appending_never_blocks_and_needs_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("relay-sync.log");
        fifo(&pipe);
        let text = refusal(open_append(&pipe, 0o640));
        assert!(
            text.contains("FIFO (named pipe), not a regular file"),
            "{text}"
        );
        let text = refusal(open_append(Path::new("/dev/null"), 0o640));
        assert!(text.contains("character device"), "{text}");
        // Root's own link to a device is still not a log file.
        let link = dir.path().join("null.log");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert!(refusal(open_append(&link, 0o640)).contains("character device"));
        let log = dir.path().join("new.log");
        let mut file = open_append(&log, 0o640).unwrap();
        file.write_all(b"line\n").unwrap();
        assert_eq!(fs::metadata(&log).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn only_roots_own_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backup");
        create_dir(&backups, 0o755).unwrap();
        tighten_dir(&backups, 0o700).unwrap();
        assert_eq!(fs::metadata(&backups).unwrap().mode() & 0o7777, 0o700);
        require_root();
        fs::set_permissions(&backups, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&backups, Some(NOBODY), Some(NOBODY)).unwrap();
        let text = refusal(tighten_dir(&backups, 0o700));
        assert!(text.contains("owned by uid 65534"), "{text}");
        assert!(
            text.contains(&format!("chown root {}", backups.display())),
            "{text}"
        );
        assert_eq!(fs::metadata(&backups).unwrap().mode() & 0o7777, 0o755);
    }

    #[test]
    fn the_lock_is_a_kept_file() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("relay-sync.lock");
        drop(open_lock(&lock, 0o600).unwrap());
        drop(open_lock(&lock, 0o600).unwrap());
        let pipe = dir.path().join("fifo.lock");
        fifo(&pipe);
        assert!(refusal(open_lock(&pipe, 0o600)).contains("FIFO"));
        let victim = victim(dir.path());
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(refusal(open_lock(&link, 0o600)).contains("symbolic link"));
        assert_untouched(&victim);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(refusal(open_lock(&lock, 0o600)).contains("chmod go-w"));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        drop(open_lock(&lock, 0o600).unwrap());
    }
}
