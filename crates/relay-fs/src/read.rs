//! Reading a file relay-sync keeps or shares, by [`Kind`]: never through someone else's link,
//! never a FIFO or a device, never past the kind's size limit.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::trust::{dir_problems, kept_file_problems, trusted_link};
use crate::{io, parent_of, shell_word, FsError};

/// What a file is to relay-sync, and so how it may be read and how large it may be.
///
/// Every file relay-sync reads has its kind here, with the limit a read of it never goes past:
/// the limits are far above anything relay-sync writes (a million domains, a million
/// recipients), and far below what would exhaust a gateway's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    what: &'static str,
    limit: u64,
    rule: Rule,
    /// Whether relay-sync writes the whole file anew when it is gone, so that removing a bad
    /// one is the fix; otherwise the file is an operator's or Postfix's (the config, a map
    /// with hand-written lines, a certificate), and a refusal never tells them to delete it.
    recreated: bool,
}

/// Which rules a kind's files follow beyond "a regular file, bounded, not through someone
/// else's link".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// A file relay-sync keeps for itself (`STATE_DIR`, `BACKUP_DIR`, the lock): never a link;
    /// owned by root or this user, writable by its owner alone, one hard link; in a directory
    /// only root or this user can write (or a sticky one).
    Kept,
    /// A file relay-sync writes for others or shares with them (Postfix's maps, the metrics
    /// textfile): a link is followed when root made it ([`trusted_link`]); owner and directory
    /// are the operator's choice.
    Shared,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl Kind {
    /// `STATE_DIR/state`: the last run and the failure streak.
    pub const STATE: Kind = Kind::kept("the state file", MIB);
    /// `STATE_DIR/hold`: why syncs are held.
    pub const HOLD: Kind = Kind::kept("the hold file", 64 * KIB);
    /// `STATE_DIR/alerts.pending`: undelivered alerts (at most 20 of them).
    pub const OUTBOX: Kind = Kind::kept("the alert outbox", 16 * MIB);
    /// `STATE_DIR/reload.pending`: a reload is owed.
    pub const JOURNAL: Kind = Kind::kept("the reload journal", 64 * KIB);
    /// `STATE_DIR/invalid-rows.json`: the rows the last run rejected. A writer leaves a set
    /// larger than this unremembered rather than write what it could not read back.
    pub const INVALID_ROWS: Kind = Kind::kept("the rejected rows file", 64 * MIB);
    /// `STATE_DIR/postconf.cache`: postconf's answers, `relay_domains` among them (inline
    /// mode: every domain).
    pub const POSTCONF_CACHE: Kind = Kind::kept("the postconf cache", 256 * MIB);
    /// `LOCK_FILE`: the run lock and its holder's pid line.
    pub const LOCK: Kind = Kind::kept("the lock file", 4 * KIB);
    /// `BACKUP_DIR/relay-sync.generations`: which generation is newest.
    pub const BACKUP_INDEX: Kind = Kind::kept("the backup index", 16 * MIB);
    /// `BACKUP_DIR/*.STAMP.bak`: a saved `relay_domains`, transport file or table.
    pub const BACKUP: Kind = Kind::kept("the backup", GIB);
    /// A Postfix map source relay-sync writes (`TRANSPORT_FILE`, the relay-domains and
    /// recipients tables).
    pub const MAP_SOURCE: Kind = Kind::shared("the map source", GIB);
    /// `METRICS_FILE`, read back for the last success it recorded.
    pub const METRICS: Kind = Kind::written("the metrics file", MIB);
    /// Postfix's `main.cf`, read by a watcher to notice a hand edit or a recreated container.
    pub const POSTFIX_CONFIG: Kind = Kind::shared("Postfix's main.cf", 16 * MIB);
    /// A daemon's pid file (`queue_directory/pid/master.pid`): one number.
    pub const PID_FILE: Kind = Kind::shared("the pid file", 4 * KIB);
    /// `DB_TLS_CA`: the PEM certificates relay-sync trusts for the database (a bundle of
    /// every public root is about 200 KiB).
    pub const CA_CERT: Kind = Kind::shared("the CA certificate", 16 * MIB);
    /// A program relay-sync runs as root (`ALERT_COMMAND`'s, …), whose first line is read for
    /// its `#!` interpreter; no program is anywhere near this large.
    pub const PROGRAM: Kind = Kind::shared("the program", 64 * GIB);
    /// The configuration file (`--config`, `/opt/mailserver/config/relay-sync.conf`): the
    /// operator's, so a link root made is followed and its owner and mode are checked by
    /// relay-ops on the descriptor ([`crate::breaches`]). The shipped sample, every key
    /// documented, is about 10 KiB.
    pub const CONFIG: Kind = Kind::shared("the config file", MIB);
    /// `DB_PASSWORD_FILE`: one password, the operator's file (a link root made is followed; its
    /// owner and mode are checked by relay-ops on the descriptor, as a secret's).
    pub const PASSWORD_FILE: Kind = Kind::shared("DB_PASSWORD_FILE", 64 * KIB);
    /// `LOG_FILE`, which relay-sync only appends to ([`crate::open_append`]).
    pub(crate) const LOG: Kind = Kind::written("the log file", 0);

    /// A file relay-sync keeps, and writes anew when it is gone.
    const fn kept(what: &'static str, limit: u64) -> Kind {
        Kind {
            what,
            limit,
            rule: Rule::Kept,
            recreated: true,
        }
    }

    /// A shared file relay-sync writes whole and writes anew when it is gone.
    const fn written(what: &'static str, limit: u64) -> Kind {
        Kind {
            what,
            limit,
            rule: Rule::Shared,
            recreated: true,
        }
    }

    /// A shared file that is someone else's to keep: relay-sync never recreates it.
    const fn shared(what: &'static str, limit: u64) -> Kind {
        Kind {
            what,
            limit,
            rule: Rule::Shared,
            recreated: false,
        }
    }

    /// The most bytes a file of this kind may hold.
    pub const fn limit(self) -> u64 {
        self.limit
    }

    /// What the file is, for messages: `the hold file`.
    pub const fn what(self) -> &'static str {
        self.what
    }
}

/// A file opened by [`open`]: reads past the kind's limit fail (the file grew while it was
/// read) rather than go on.
#[derive(Debug)]
pub struct Reader {
    file: File,
    path: PathBuf,
    kind: Kind,
    left: u64,
}

impl Reader {
    /// The file's metadata, as `fstat` gave it when it was checked.
    pub fn metadata(&self) -> std::io::Result<Metadata> {
        self.file.metadata()
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let end = buf.len().min(want);
        let n = self.file.read(&mut buf[..end])?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} grew past {} while it was read",
                self.path.display(),
                size(self.kind.limit)
            ))
        })?;
        Ok(n)
    }
}

/// Opens the file of `kind` at `path` for reading, after the checks of its kind; `None` when
/// nothing is there. See the crate documentation for the rules.
pub fn open(kind: Kind, path: &Path) -> Result<Option<Reader>, FsError> {
    let found = match kind.rule {
        Rule::Kept => open_kept(kind, path)?,
        Rule::Shared => open_shared(kind, path)?,
    };
    Ok(found.map(|(file, _)| Reader {
        file,
        path: path.to_owned(),
        kind,
        left: kind.limit,
    }))
}

/// The bytes of the file of `kind` at `path`; `None` when nothing is there.
pub fn read(kind: Kind, path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    let Some(reader) = open(kind, path)? else {
        return Ok(None);
    };
    let expected = reader
        .metadata()
        .map_or(0, |meta| usize::try_from(meta.len()).unwrap_or(0));
    let mut bytes = Vec::with_capacity(expected);
    // Take one byte more than the limit, to tell a file that grew past it from one at it.
    let Reader { file, .. } = reader;
    file.take(kind.limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| io("read", path, source))?;
    if bytes.len() as u64 > kind.limit {
        return Err(too_big(kind, path, bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// The text of the file of `kind` at `path`; `None` when nothing is there. Not UTF-8 is
/// [`FsError::Invalid`].
pub fn read_to_string(kind: Kind, path: &Path) -> Result<Option<String>, FsError> {
    read(kind, path)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| FsError::Invalid {
                path: path.to_owned(),
                detail: format!("{} is not UTF-8 text", kind.what),
            })
        })
        .transpose()
}

/// Checks the file of `kind` at `path` as [`open`] does, without reading it: its metadata, or
/// `None` when nothing is there.
pub fn inspect(kind: Kind, path: &Path) -> Result<Option<Metadata>, FsError> {
    open(kind, path)?
        .map(|reader| {
            reader
                .metadata()
                .map_err(|source| io("inspect", path, source))
        })
        .transpose()
}

/// How a problem with a file is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fix {
    /// A shell command that fixes it (`rm PATH`, `chmod go-w PATH`).
    Run(String),
    /// What the operator should look at, for a file that is theirs: relay-sync cannot know
    /// the right content, and never tells them to delete it.
    Check(String),
}

impl From<String> for Fix {
    fn from(command: String) -> Fix {
        Fix::Run(command)
    }
}

/// A problem found with a file and how it is fixed.
type Problems = Vec<(String, Fix)>;

/// The refusal of `path` for `problems` (none: `Ok`): the commands that fix them, joined with
/// `&&`, then anything else to check.
pub(crate) fn refuse<F: Into<Fix>>(
    path: &Path,
    problems: impl IntoIterator<Item = (String, F)>,
) -> Result<(), FsError> {
    let mut problem: Vec<String> = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    for (what, fix) in problems {
        problem.push(what);
        let (fix, list) = match fix.into() {
            Fix::Run(command) => (command, &mut commands),
            Fix::Check(advice) => (advice, &mut checks),
        };
        if !list.contains(&fix) {
            list.push(fix);
        }
    }
    if problem.is_empty() {
        return Ok(());
    }
    let mut fix = checks;
    if !commands.is_empty() {
        fix.insert(0, format!("run `{}`", commands.join(" && ")));
    }
    Err(FsError::Refused {
        path: path.to_owned(),
        problem: problem.join("; "),
        fix: fix.join("; "),
    })
}

/// The fix for a file of `kind` at `path` that is the wrong type or too large: removing it
/// where relay-sync writes it anew, and otherwise a look at whether it is the file meant
/// (`must` says what it must be).
fn replace_fix(kind: Kind, path: &Path, must: &str) -> Fix {
    if kind.recreated {
        Fix::Run(format!("rm {}", shell_word(path)))
    } else {
        Fix::Check(format!(
            "check that {} is the file meant: {} {must}",
            shell_word(path),
            kind.what
        ))
    }
}

/// What a file that is not a regular file must be instead, for [`replace_fix`].
const MUST_BE_REGULAR: &str =
    "must be a regular file (replace it with one, or name one in the setting that names it)";

/// What a file past its limit may hold, for [`replace_fix`].
fn must_fit(kind: Kind) -> String {
    format!("may hold at most {}", size(kind.limit))
}

/// What a file's type is, in words.
fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of an unknown type",
    }
}

/// The command that moves a directory found where a file belongs out of the way (never
/// `rm -r`: what is in it may matter).
pub(crate) fn move_aside(path: &Path) -> String {
    let word = shell_word(path);
    let aside = shell_word(Path::new(&format!("{}.moved-aside", path.display())));
    format!("mv {word} {aside}")
}

/// `n` bytes, in words.
fn size(n: u64) -> String {
    match n {
        n if n >= GIB && n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

fn too_big(kind: Kind, path: &Path, len: u64) -> FsError {
    FsError::Refused {
        path: path.to_owned(),
        problem: format!(
            "{} holds {len} bytes, more than the {} it may hold",
            kind.what,
            size(kind.limit)
        ),
        fix: match replace_fix(kind, path, &must_fit(kind)) {
            Fix::Run(command) => format!("run `{command}`"),
            Fix::Check(advice) => advice,
        },
    }
}

/// What is wrong with a file of `kind` (by the metadata of its name or of its descriptor).
fn file_problems(
    kind: Kind,
    path: &Path,
    file_type: FileType,
    uid: u32,
    mode: u32,
    nlink: u64,
    len: u64,
) -> Problems {
    let rm = || Fix::Run(format!("rm {}", shell_word(path)));
    let mut problems = Problems::new();
    if file_type == FileType::Directory {
        problems.push((
            format!("{} is a directory, not a regular file", kind.what),
            Fix::Run(move_aside(path)),
        ));
        return problems;
    }
    if file_type != FileType::RegularFile {
        let link = if file_type == FileType::Symlink {
            let to = std::fs::read_link(path)
                .map_or_else(|_| "?".to_owned(), |to| to.display().to_string());
            format!(" to {to}, which relay-sync never follows here")
        } else {
            ", not a regular file".to_owned()
        };
        problems.push((
            format!("{} is {}{link}", kind.what, type_name(file_type)),
            replace_fix(kind, path, MUST_BE_REGULAR),
        ));
        return problems;
    }
    if kind.rule == Rule::Kept {
        problems.extend(
            kept_file_problems(kind.what, path, uid, mode)
                .into_iter()
                .map(|(problem, command)| (problem, Fix::Run(command))),
        );
        if nlink > 1 {
            problems.push((
                format!(
                    "{} has {nlink} hard links, where relay-sync's own file has one",
                    kind.what
                ),
                rm(),
            ));
        }
    }
    if len > kind.limit {
        problems.push((
            format!(
                "{} holds {len} bytes, more than the {} it may hold",
                kind.what,
                size(kind.limit)
            ),
            replace_fix(kind, path, &must_fit(kind)),
        ));
    }
    problems
}

/// The checks on an open descriptor: the file checked by name is the file opened, and it
/// passes again.
fn check_descriptor(
    kind: Kind,
    path: &Path,
    file: &File,
    named: Option<(u64, u64)>,
) -> Result<Metadata, FsError> {
    let meta = file
        .metadata()
        .map_err(|source| io("inspect", path, source))?;
    if named.is_some_and(|named| named != (meta.dev(), meta.ino())) {
        return Err(FsError::Refused {
            path: path.to_owned(),
            problem: format!("{} was replaced while relay-sync opened it", kind.what),
            fix: format!("inspect {} for another writer", shell_word(parent_of(path))),
        });
    }
    refuse(
        path,
        file_problems(
            kind,
            path,
            FileType::from_raw_mode(meta.mode()),
            meta.uid(),
            meta.mode(),
            meta.nlink(),
            meta.len(),
        ),
    )?;
    Ok(meta)
}

/// A `stat`'s link count, whose width differs between architectures.
#[allow(clippy::useless_conversion)] // u32 on some architectures, u64 on others.
fn nlink(stat: &rustix::fs::Stat) -> u64 {
    u64::from(stat.st_nlink)
}

/// Opens a kept file: the directory first (its owner and mode, on its descriptor), then the
/// name in it without following (`fstatat`), and only a regular file that passes is opened,
/// relative to the directory already checked, `O_NOFOLLOW|O_NONBLOCK`.
fn open_kept(kind: Kind, path: &Path) -> Result<Option<(File, Metadata)>, FsError> {
    let Some(name) = path.file_name() else {
        return Err(FsError::Invalid {
            path: path.to_owned(),
            detail: "names a directory, not a file".to_owned(),
        });
    };
    let dir_path = parent_of(path);
    let dir = match rustix::fs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(io("open directory", dir_path, errno.into())),
    };
    let dir_stat =
        rustix::fs::fstat(&dir).map_err(|errno| io("inspect", dir_path, errno.into()))?;
    let mut problems: Problems = dir_problems(dir_path, dir_stat.st_uid, dir_stat.st_mode)
        .into_iter()
        .map(|(problem, command)| (problem, Fix::Run(command)))
        .collect();
    let named = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => {
            // Nothing to read, but a directory others can write is refused all the same: what
            // is missing now can be planted before the next read.
            refuse(path, problems)?;
            return Ok(None);
        }
        Err(errno) => return Err(io("inspect", path, errno.into())),
    };
    problems.extend(file_problems(
        kind,
        path,
        FileType::from_raw_mode(named.st_mode),
        named.st_uid,
        named.st_mode,
        nlink(&named),
        named.st_size.max(0).unsigned_abs(),
    ));
    refuse(path, problems)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        rustix::io::Errno::LOOP => FsError::Refused {
            path: path.to_owned(),
            problem: format!(
                "{} became a symbolic link while relay-sync opened it",
                kind.what
            ),
            fix: format!("run `rm {}`", shell_word(path)),
        },
        errno => io("open", path, errno.into()),
    })?;
    let file = File::from(fd);
    let meta = check_descriptor(kind, path, &file, Some((named.st_dev, named.st_ino)))?;
    Ok(Some((file, meta)))
}

/// Opens a shared file: through a link only when root made it, and only a regular file,
/// `O_NOFOLLOW|O_NONBLOCK`.
fn open_shared(kind: Kind, path: &Path) -> Result<Option<(File, Metadata)>, FsError> {
    let target = trusted_link(path)?;
    let target = target.as_deref().unwrap_or(path);
    let named = match std::fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io("inspect", target, source)),
    };
    refuse(
        path,
        file_problems(
            kind,
            path,
            FileType::from_raw_mode(named.mode()),
            named.uid(),
            named.mode(),
            named.nlink(),
            named.len(),
        ),
    )?;
    let fd = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        rustix::io::Errno::NOENT => None,
        errno => Some(io("open", path, errno.into())),
    });
    let fd = match fd {
        Ok(fd) => fd,
        // Removed between the look and the open: nothing there, as for any reader.
        Err(None) => return Ok(None),
        Err(Some(error)) => return Err(error),
    };
    let file = File::from(fd);
    let meta = check_descriptor(kind, path, &file, Some((named.dev(), named.ino())))?;
    Ok(Some((file, meta)))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::testing::{assert_untouched, fifo, refusal, require_root, victim, NOBODY};

    /// A private directory (0700, this user's) for a test.
    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn a_kept_file_is_read_and_a_missing_one_is_none() {
        let dir = private_dir();
        let path = dir.path().join("hold");
        assert_eq!(read(Kind::HOLD, &path).unwrap(), None);
        assert!(inspect(Kind::HOLD, &path).unwrap().is_none());
        fs::write(&path, "migrating\n").unwrap();
        assert_eq!(
            read_to_string(Kind::HOLD, &path).unwrap().as_deref(),
            Some("migrating\n")
        );
        assert_eq!(
            inspect(Kind::HOLD, &path).unwrap().map(|m| m.len()),
            Some(10)
        );
        // A directory that does not exist yet holds nothing.
        assert_eq!(
            read(Kind::STATE, &dir.path().join("none/state")).unwrap(),
            None
        );
    }

    /// A file relay-sync writes anew is removed to fix it; an operator's file (the config, a
    /// map source with hand-written lines, a certificate) is never: the fix asks them to check
    /// it. Before: every refusal said `rm`, even of the config file.
    #[test]
    fn only_a_file_relay_sync_recreates_is_to_be_removed() {
        let dir = private_dir();
        let big = dir.path().join("big file");
        let word = shell_word(&big);
        // A sparse file one byte past the kind's limit: refused by its size, before a read.
        let past = |kind: Kind| {
            let file = fs::File::create(&big).unwrap();
            file.set_len(kind.limit() + 1).unwrap();
        };
        for kind in [Kind::CONFIG, Kind::MAP_SOURCE, Kind::POSTFIX_CONFIG] {
            past(kind);
            let text = refusal(inspect(kind, &big));
            assert!(!text.contains("rm "), "{text}");
            assert!(
                text.ends_with(&format!(
                    "; check that {word} is the file meant: {} may hold at most {}",
                    kind.what(),
                    size(kind.limit())
                )),
                "{text}"
            );
        }
        for kind in [Kind::STATE, Kind::METRICS] {
            past(kind);
            let text = refusal(inspect(kind, &big));
            assert!(text.ends_with(&format!("; run `rm {word}`")), "{text}");
        }
        let pipe = dir.path().join("pipe");
        fifo(&pipe);
        for kind in [Kind::PASSWORD_FILE, Kind::CA_CERT] {
            let text = refusal(read(kind, &pipe));
            assert!(
                text.ends_with(&format!(
                    "{} is a FIFO (named pipe), not a regular file; check that {} is the file \
                     meant: {} {MUST_BE_REGULAR}",
                    kind.what(),
                    pipe.display(),
                    kind.what()
                )),
                "{text}"
            );
        }
        let text = refusal(read(Kind::HOLD, &pipe));
        assert!(
            text.ends_with(&format!("; run `rm {}`", pipe.display())),
            "{text}"
        );
    }

    #[test]
    fn a_link_is_never_followed_to_a_kept_file() {
        let dir = private_dir();
        let victim = victim(dir.path());
        let link = dir.path().join("hold");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let text = refusal(read(Kind::HOLD, &link));
        assert!(
            text.contains("the hold file is a symbolic link to"),
            "{text}"
        );
        assert!(
            text.contains(&format!("run `rm {}`", link.display())),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        // Not even root's own link: a kept file is relay-sync's, in place.
        let zero = dir.path().join("state");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(refusal(read(Kind::STATE, &zero)).contains("/dev/zero"));
        assert_untouched(&victim);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = private_dir();
        let path = dir.path().join("hold");
        fifo(&path);
        let text = refusal(read(Kind::HOLD, &path));
        assert!(
            text.contains("a FIFO (named pipe), not a regular file"),
            "{text}"
        );
        // Shared files too: a FIFO at the metrics file or a map source.
        let text = refusal(read(Kind::METRICS, &path));
        assert!(text.contains("the metrics file is a FIFO"), "{text}");
        assert!(refusal(open(Kind::MAP_SOURCE, &path)).contains("FIFO"));
    }

    #[test]
    fn a_device_is_refused_without_opening_it() {
        // Root's own link to a device, as a shared file may be: still not a regular file.
        let dir = private_dir();
        let link = dir.path().join("relay_sync.prom");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let text = refusal(read(Kind::METRICS, &link));
        assert!(
            text.contains("a character device, not a regular file"),
            "{text}"
        );
        let text = refusal(read(Kind::MAP_SOURCE, Path::new("/dev/zero")));
        assert!(text.contains("character device"), "{text}");
    }

    #[test]
    fn a_kept_file_others_can_write_or_link_is_refused() {
        let dir = private_dir();
        let path = dir.path().join("state");
        fs::write(&path, "X=1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let text = refusal(read(Kind::STATE, &path));
        assert!(
            text.contains("writable by group or others (mode 0666)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("chmod go-w {}", path.display())),
            "{text}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let second = dir.path().join("second-name");
        fs::hard_link(&path, &second).unwrap();
        let text = refusal(read(Kind::STATE, &path));
        assert!(text.contains("has 2 hard links"), "{text}");
        fs::remove_file(&second).unwrap();
        assert!(read(Kind::STATE, &path).unwrap().is_some());
    }

    #[test]
    fn another_users_file_or_directory_is_refused() {
        require_root();
        let dir = private_dir();
        let path = dir.path().join("state");
        fs::write(&path, "X=1\n").unwrap();
        std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        let text = refusal(read(Kind::STATE, &path));
        assert!(text.contains("owned by uid 65534, not by root"), "{text}");
        assert!(text.contains(&format!("rm {}", path.display())), "{text}");
        // A shared file is the operator's to give: Postfix may own a map.
        assert!(read(Kind::MAP_SOURCE, &path).unwrap().is_some());

        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let text = refusal(read(Kind::STATE, &path));
        assert!(text.contains("which is owned by uid 65534"), "{text}");
        assert!(
            text.contains(&format!("chown root {}", dir.path().display())),
            "{text}"
        );
        // Even a file that is not there: it could be planted before the next read.
        assert!(refusal(read(Kind::HOLD, &dir.path().join("hold"))).contains("uid 65534"));
    }

    #[test]
    fn a_writable_directory_is_refused_a_sticky_one_is_not() {
        let dir = private_dir();
        let path = dir.path().join("relay-sync.lock");
        fs::write(&path, "pid=1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let text = refusal(read(Kind::LOCK, &path));
        assert!(
            text.contains("which group or others can write (mode 0770)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("chmod go-w {}", dir.path().display())),
            "{text}"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(read(Kind::LOCK, &path).unwrap().is_some());
        // A shared file's directory is the operator's: a group-writable textfile directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
        assert!(read(Kind::METRICS, &path).unwrap().is_some());
    }

    #[test]
    fn a_file_past_its_kinds_limit_is_refused() {
        let dir = private_dir();
        let path = dir.path().join("hold");
        let limit = usize::try_from(Kind::HOLD.limit()).unwrap();
        fs::write(&path, vec![b'x'; limit]).unwrap();
        assert_eq!(
            read(Kind::HOLD, &path).unwrap().map(|b| b.len()),
            Some(limit)
        );
        fs::write(&path, vec![b'x'; limit + 1]).unwrap();
        let text = refusal(read(Kind::HOLD, &path));
        assert!(
            text.contains("the hold file holds 65537 bytes, more than the 64 KiB it may hold"),
            "{text}"
        );
        // A streaming reader stops at the limit too.
        let mut reader = open(Kind::LOCK, &dir.path().join("none")).unwrap();
        assert!(reader.is_none());
        let lock = dir.path().join("lock");
        fs::write(&lock, "pid=1\n").unwrap();
        reader = open(Kind::LOCK, &lock).unwrap();
        let mut text = String::new();
        reader.unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "pid=1\n");
    }

    #[test]
    fn a_shared_file_follows_only_roots_link() {
        let dir = private_dir();
        let target = dir.path().join("transport.real");
        fs::write(&target, "a.example smtp:[h]\n").unwrap();
        let link = dir.path().join("transport");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            read_to_string(Kind::MAP_SOURCE, &link).unwrap().as_deref(),
            Some("a.example smtp:[h]\n")
        );
        {
            require_root();
            std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
            assert!(refusal(read(Kind::MAP_SOURCE, &link)).contains("owned by uid 65534"));
        }
        fs::write(&target, [0xff, 0xfe]).unwrap();
        let error = read_to_string(Kind::MAP_SOURCE, &target).unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}
