//! What the config names, root acts on: it runs `DB_PASSWORD_COMMAND`, `ALERT_COMMAND` and the
//! commands in `POSTFIX_COMMAND_DIR`, sends `DB_PASSWORD_FILE`'s secret, and trusts `DB_TLS_CA`.
//! So the config file and each of those must be owned by root (or the user relay-sync runs
//! as) and writable by that owner alone, and so must the directory holding each (or someone
//! could put another file in its place). A file that holds a secret (a config with
//! `DB_PASSWORD`, `DB_PASSWORD_FILE`) must not be readable by group or others either.
//!
//! The programs the command keys run are vetted the same way, and how is in [`command`].
//!
//! A violation is a configuration error (exit 2, and a failed `check`) naming the file and the
//! `chown`/`chmod` line that fixes it. A directory with the sticky bit (`/tmp`) is fine: others
//! may not rename or delete what they do not own there.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ConfigError;

mod command;

pub(super) use command::{check_command, Launch};

/// What else a trusted path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Secrecy {
    /// Anyone may read it.
    Public,
    /// It holds a secret: its owner alone may read it.
    Secret,
}

/// The user relay-sync runs as.
fn running_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks a file's owner and mode (as `fstat` or `stat` gave them).
pub(super) fn check_mode(
    what: &'static str,
    path: &Path,
    uid: u32,
    mode: u32,
    secrecy: Secrecy,
) -> Result<(), ConfigError> {
    let shown = path.display();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if uid != 0 && uid != running_uid() {
        problems.push(format!("owned by uid {uid}"));
        fixes.push(format!("chown root {shown}"));
    }
    if mode & 0o022 != 0 {
        problems.push("writable by group or others".to_owned());
        fixes.push(format!("chmod go-w {shown}"));
    }
    if secrecy == Secrecy::Secret && mode & 0o044 != 0 {
        problems.push("readable by group or others".to_owned());
        fixes.push(format!("chmod go-r {shown}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Untrusted {
        what,
        path: path.to_owned(),
        problem: format!("{} (mode {:04o})", problems.join(" and "), mode & 0o7777),
        fix: fixes.join(" && "),
    })
}

/// Checks `path` (following a symbolic link: what is read or run is the target) and the
/// directory holding it. A missing path is left to the code that uses it, which names it.
pub(super) fn check_path(
    what: &'static str,
    path: &Path,
    secrecy: Secrecy,
) -> Result<(), ConfigError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    check_mode(what, path, meta.uid(), meta.mode(), secrecy)?;
    check_parent(what, path)
}

/// Checks the directory holding `path`: owned by root or this user, and not writable by
/// others unless it is sticky.
pub(super) fn check_parent(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let Some(dir) = std::fs::canonicalize(path)
        .ok()
        .and_then(|real| real.parent().map(Path::to_owned))
    else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(&dir) else {
        return Ok(());
    };
    let sticky = meta.mode() & 0o1000 != 0;
    let mode = if sticky {
        meta.mode() & !0o022
    } else {
        meta.mode()
    };
    check_mode(what, &dir, meta.uid(), mode, Secrecy::Public).map_err(|error| match error {
        ConfigError::Untrusted {
            path: dir,
            problem,
            fix,
            ..
        } => ConfigError::Untrusted {
            what,
            path: path.to_owned(),
            problem: format!("in {} which is {problem}", dir.display()),
            fix,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_rules() {
        let path = Path::new("/etc/relay-sync.conf");
        assert!(check_mode("config file", path, 0, 0o600, Secrecy::Secret).is_ok());
        assert!(check_mode("config file", path, 0, 0o644, Secrecy::Public).is_ok());
        let cases = [
            (65534, 0o600, Secrecy::Public),
            (0, 0o666, Secrecy::Public),
            (0, 0o620, Secrecy::Public),
            (0, 0o640, Secrecy::Secret),
            (0, 0o604, Secrecy::Secret),
        ];
        let mut out = String::new();
        for (uid, mode, secrecy) in cases {
            let error = check_mode("config file", path, uid, mode, secrecy).unwrap_err();
            out.push_str(&format!("{uid} {mode:o} {secrecy:?} => {error}\n"));
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn a_group_writable_directory_is_refused_a_sticky_one_is_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-password");
        std::fs::write(&file, "pw").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let error = check_path("DB_PASSWORD_FILE", &file, Secrecy::Secret).unwrap_err();
        assert!(
            error.to_string().contains("writable by group or others"),
            "{error}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_path("DB_PASSWORD_FILE", &file, Secrecy::Secret).unwrap();
    }
}
