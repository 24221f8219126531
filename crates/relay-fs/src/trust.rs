//! Whose files and directories relay-sync trusts: root's and its own user's, in directories no
//! one else can put anything into.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{io, shell_word, FsError};

/// Whether `uid` may own a link relay-sync follows or a file it trusts: root, or the user
/// relay-sync runs as.
pub fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == effective_uid()
}

/// The user relay-sync runs as.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What relay-sync asks of a file or directory it trusts, by what it is to relay-sync. The
/// rule is one: **owned by root or this user, writable by no one else**; the kinds differ only
/// in what else they ask ([`breaches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trust {
    /// A file relay-sync reads, runs or keeps.
    File,
    /// A file that holds a secret (a password file, a config with `DB_PASSWORD`): no one else
    /// may read it either.
    Secret,
    /// A directory holding what relay-sync trusts. A sticky one (`/tmp`, `/run/lock`) is
    /// accepted: others may add names there, but not rename or remove what is not theirs.
    Dir,
    /// A directory no one else may put a name into, sticky or not: one searched for a program
    /// (a `PATH` directory, where a program put under the same name would run instead), or one
    /// whose files relay-sync takes for root's.
    PrivateDir,
}

/// One way a file or directory breaks the rule its [`Trust`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Breach {
    /// Owned by this uid, neither root nor the user relay-sync runs as.
    Owner(u32),
    /// Group or others may write it.
    Writable,
    /// Group or others may read it, and it holds a secret.
    Readable,
}

impl Breach {
    /// The command that mends it for `path`, with `path` quoted for a shell ([`shell_word`]):
    /// `chown root PATH`, `chmod go-w PATH`, `chmod go-r PATH`.
    pub fn fix(self, path: &Path) -> String {
        let command = match self {
            Breach::Owner(_) => "chown root",
            Breach::Writable => "chmod go-w",
            Breach::Readable => "chmod go-r",
        };
        format!("{command} {}", shell_word(path))
    }
}

impl std::fmt::Display for Breach {
    /// `owned by uid 65534`, `writable by group or others`, `readable by group or others`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Breach::Owner(uid) => write!(f, "owned by uid {uid}"),
            Breach::Writable => f.write_str("writable by group or others"),
            Breach::Readable => f.write_str("readable by group or others"),
        }
    }
}

/// How a file or directory owned by `uid`, with `mode` (as `fstat` or `stat` gave them),
/// breaks the rule `trust` asks for; empty when it does not. The one place the rule is
/// written: relay-fs's readers and writers and relay-ops' checks of the config file, the
/// files it names and the programs it runs all ask it.
///
/// ```
/// use relay_fs::{breaches, Breach, Trust};
/// assert_eq!(breaches(0, 0o100644, Trust::File), []);
/// assert_eq!(breaches(0, 0o100644, Trust::Secret), [Breach::Readable]);
/// assert_eq!(breaches(0, 0o41777, Trust::Dir), []);
/// assert_eq!(breaches(0, 0o41777, Trust::PrivateDir), [Breach::Writable]);
/// ```
pub fn breaches(uid: u32, mode: u32, trust: Trust) -> Vec<Breach> {
    let mut found = Vec::new();
    if !trusted_owner(uid) {
        found.push(Breach::Owner(uid));
    }
    let sticky_accepted = trust == Trust::Dir && sticky(mode);
    if others_can_write(mode) && !sticky_accepted {
        found.push(Breach::Writable);
    }
    if trust == Trust::Secret && mode & 0o044 != 0 {
        found.push(Breach::Readable);
    }
    found
}

/// Whether the write bits for group or others are set in `mode`.
const fn others_can_write(mode: u32) -> bool {
    mode & 0o022 != 0
}

/// Whether `mode` has the sticky bit: others may create names in such a directory, but not
/// rename or remove what is not theirs.
const fn sticky(mode: u32) -> bool {
    mode & 0o1000 != 0
}

/// What is wrong with a directory relay-sync is to read a kept file from, and the commands
/// that fix it: the rule of [`Trust::Dir`].
pub(crate) fn dir_problems(dir: &Path, uid: u32, mode: u32) -> Vec<(String, String)> {
    breaches(uid, mode, Trust::Dir)
        .into_iter()
        .map(|breach| {
            let problem = match breach {
                Breach::Owner(uid) => format!(
                    "it is in {}, which is owned by uid {uid} (mode {:04o}): others can put \
                     anything there",
                    dir.display(),
                    mode & 0o7777
                ),
                _ => format!(
                    "it is in {}, which group or others can write (mode {:04o})",
                    dir.display(),
                    mode & 0o7777
                ),
            };
            (problem, breach.fix(dir))
        })
        .collect()
}

/// What is wrong with a file relay-sync keeps, by the rule of [`Trust::File`], and the
/// commands that fix it: `what` names the file (`the lock file`). A file another user owns is
/// removed rather than chowned: relay-sync writes its own anew.
pub(crate) fn kept_file_problems(
    what: &str,
    path: &Path,
    uid: u32,
    mode: u32,
) -> Vec<(String, String)> {
    breaches(uid, mode, Trust::File)
        .into_iter()
        .map(|breach| match breach {
            Breach::Owner(uid) => (
                format!("{what} is owned by uid {uid}, not by root"),
                format!("rm {}", shell_word(path)),
            ),
            _ => (
                format!(
                    "{what} is writable by group or others (mode {:04o})",
                    mode & 0o7777
                ),
                breach.fix(path),
            ),
        })
        .collect()
}

/// Whether only root or this user can put a file into the directory holding `path` (the rule
/// of [`Trust::PrivateDir`]): then any file there was put there, or given to its owner, by
/// root.
pub(crate) fn private_dir_of(path: &Path) -> bool {
    fs::metadata(crate::parent_of(path))
        .is_ok_and(|meta| breaches(meta.uid(), meta.mode(), Trust::PrivateDir).is_empty())
}

/// The file `path` finally points to when it is a symbolic link that relay-sync may follow;
/// `None` when it is not a link (or does not exist).
///
/// A link is followed only when the link and the file it resolves to are owned by root or by
/// the running user: a `TRANSPORT_FILE` kept by configuration management is root's choice,
/// while a link someone else planted is refused, naming it. A link to nothing is refused too:
/// writing through it would create a file wherever it points.
pub fn trusted_link(path: &Path) -> Result<Option<PathBuf>, FsError> {
    let link = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => meta,
        _ => return Ok(None),
    };
    let to = || fs::read_link(path).map_or_else(|_| "?".into(), |to| to.display().to_string());
    if !trusted_owner(link.uid()) {
        return Err(FsError::Refused {
            path: path.to_owned(),
            problem: format!(
                "a symbolic link to {} owned by uid {}; relay-sync follows a link only when \
                 root owns it and what it points to",
                to(),
                link.uid()
            ),
            fix: format!(
                "remove the link (`rm {}`), or `chown -h root` it if it is yours",
                shell_word(path)
            ),
        });
    }
    let target = fs::canonicalize(path).map_err(|error| FsError::Refused {
        path: path.to_owned(),
        problem: format!(
            "a symbolic link to {}, which cannot be followed ({error}); it was left as it is",
            to()
        ),
        fix: "point the link at the file or replace it with one".to_owned(),
    })?;
    let meta = fs::metadata(&target).map_err(|source| io("inspect", &target, source))?;
    if !trusted_owner(meta.uid()) {
        return Err(FsError::Refused {
            path: path.to_owned(),
            problem: format!(
                "a symbolic link to {}, which is owned by uid {}; relay-sync follows a link \
                 only to what root owns",
                target.display(),
                meta.uid()
            ),
            fix: format!(
                "run `chown root {}` or replace the link",
                shell_word(&target)
            ),
        });
    }
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{refusal, require_root, victim, NOBODY};

    #[test]
    fn a_directory_is_trusted_when_no_one_else_can_write_it() {
        let me = effective_uid();
        assert!(dir_problems(Path::new("/d"), me, 0o40700).is_empty());
        assert!(dir_problems(Path::new("/d"), 0, 0o40755).is_empty());
        // Sticky: others may add names, never take ours away.
        assert!(dir_problems(Path::new("/run/lock"), 0, 0o41777).is_empty());
        let group = dir_problems(Path::new("/d"), 0, 0o40775);
        assert_eq!(group.len(), 1);
        assert_eq!(group[0].1, "chmod go-w /d");
        // Another user's directory (this user is not `nobody`: see `require_root`).
        require_root();
        let theirs = dir_problems(Path::new("/my dir"), NOBODY, 0o40755);
        assert_eq!(theirs[0].1, "chown root '/my dir'");
        assert!(theirs[0].0.contains("owned by uid 65534"), "{theirs:?}");
    }

    /// The rule, once: each way to break it, with the fix quoted for a shell.
    #[test]
    fn each_breach_of_the_trust_rule_names_its_fix() {
        require_root();
        assert_eq!(
            breaches(NOBODY, 0o100666, Trust::Secret),
            [Breach::Owner(NOBODY), Breach::Writable, Breach::Readable]
        );
        assert_eq!(breaches(0, 0o100666, Trust::File), [Breach::Writable]);
        assert_eq!(breaches(0, 0o40775, Trust::Dir), [Breach::Writable]);
        assert_eq!(breaches(0, 0o41777, Trust::Dir), []);
        assert_eq!(breaches(0, 0o41777, Trust::PrivateDir), [Breach::Writable]);
        let path = Path::new("/etc/relay sync.conf");
        let fixes: Vec<String> = [Breach::Owner(NOBODY), Breach::Writable, Breach::Readable]
            .iter()
            .map(|breach| format!("{breach}: {}", breach.fix(path)))
            .collect();
        assert_eq!(
            fixes,
            [
                "owned by uid 65534: chown root '/etc/relay sync.conf'",
                "writable by group or others: chmod go-w '/etc/relay sync.conf'",
                "readable by group or others: chmod go-r '/etc/relay sync.conf'",
            ]
        );
    }

    #[test]
    fn a_link_is_followed_only_when_root_made_it_and_owns_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = victim(dir.path());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert_eq!(
            trusted_link(&link).unwrap(),
            Some(fs::canonicalize(&victim).unwrap())
        );
        assert_eq!(trusted_link(&victim).unwrap(), None);
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(refusal(trusted_link(&dangling)).contains("cannot be followed"));
        {
            require_root();
            std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
            let text = refusal(trusted_link(&link));
            assert!(text.contains("owned by uid 65534"), "{text}");
            assert!(text.contains(&link.display().to_string()), "{text}");
        }
    }
}
