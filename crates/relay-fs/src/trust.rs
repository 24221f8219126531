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
/// that fix it: it must be owned by root or this user, and writable by no one else unless it is
/// sticky.
pub(crate) fn dir_problems(dir: &Path, uid: u32, mode: u32) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if !trusted_owner(uid) {
        problems.push((
            format!(
                "it is in {}, which is owned by uid {uid} (mode {:04o}): others can put \
                 anything there",
                dir.display(),
                mode & 0o7777
            ),
            format!("chown root {}", shell_word(dir)),
        ));
    }
    if others_can_write(mode) && !sticky(mode) {
        problems.push((
            format!(
                "it is in {}, which group or others can write (mode {:04o})",
                dir.display(),
                mode & 0o7777
            ),
            format!("chmod go-w {}", shell_word(dir)),
        ));
    }
    problems
}

/// Whether only root or this user can put a file into the directory holding `path` (owned by
/// one of them, writable by no one else, sticky or not): then any file there was put there,
/// or given to its owner, by root.
pub(crate) fn private_dir_of(path: &Path) -> bool {
    fs::metadata(crate::parent_of(path))
        .is_ok_and(|meta| trusted_owner(meta.uid()) && !others_can_write(meta.mode()))
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
