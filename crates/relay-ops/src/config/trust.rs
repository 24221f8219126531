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

pub(super) use relay_fs::Trust;

/// Why an operator's file root reads (the config file, `DB_PASSWORD_FILE`) could not be read.
pub(super) enum Unreadable {
    /// The system failed: the file cannot be opened or read, or it is a directory (as
    /// `open(2)` says, so that the message is the one an operator knows).
    Io(std::io::Error),
    /// relay-fs refused what is there: a FIFO or a device (which would hang or feed a run
    /// without end), a link someone other than root made, a file past its kind's limit.
    Refused(relay_fs::FsError),
}

/// Reads an operator's file root trusts through relay-fs ([`relay_fs::open`]): never a FIFO or
/// a device, never through a link someone other than root made, never past `kind`'s limit.
/// Its bytes and its metadata as `fstat` gave them on the descriptor read, from which its
/// owner and mode are checked ([`check_mode`]); `None` when nothing is there.
pub(super) fn read_file(
    kind: relay_fs::Kind,
    path: &Path,
) -> Result<Option<(Vec<u8>, std::fs::Metadata)>, Unreadable> {
    use std::io::Read;
    let Some(mut reader) = open_file(kind, path)? else {
        return Ok(None);
    };
    let meta = reader.metadata().map_err(Unreadable::Io)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(Unreadable::Io)?;
    Ok(Some((bytes, meta)))
}

/// Opens an operator's file as [`read_file`] does, without reading it.
pub(super) fn open_file(
    kind: relay_fs::Kind,
    path: &Path,
) -> Result<Option<relay_fs::Reader>, Unreadable> {
    relay_fs::open(kind, path).map_err(|error| match error {
        relay_fs::FsError::Io { source, .. } => Unreadable::Io(source),
        // A directory named where the file belongs is a typo in a path, not something to move
        // aside: said as `open(2)` says it. `stat` opens nothing, so this cannot hang.
        relay_fs::FsError::Refused { .. }
            if std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) =>
        {
            Unreadable::Io(std::io::Error::from_raw_os_error(libc::EISDIR))
        }
        error => Unreadable::Refused(error),
    })
}

/// How a file or directory at `path`, owned by `uid` with `mode` (as `fstat` or `stat` gave
/// them), breaks the rule `trust` asks for (relay-fs's, the one rule), in words and as the
/// commands that mend it: `owned by uid 65534 and writable by group or others (mode 0666)`,
/// `chown root PATH && chmod go-w PATH`.
pub(super) fn breaches(
    path: &Path,
    uid: u32,
    mode: u32,
    trust: Trust,
) -> Result<(), (String, String)> {
    let found = relay_fs::breaches(uid, mode, trust);
    if found.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = found.iter().map(ToString::to_string).collect();
    let fixes: Vec<String> = found.iter().map(|breach| breach.fix(path)).collect();
    Err((
        format!("{} (mode {:04o})", problems.join(" and "), mode & 0o7777),
        fixes.join(" && "),
    ))
}

/// Checks a file's owner and mode (as `fstat` or `stat` gave them): [`Trust::File`], or
/// [`Trust::Secret`] for one that holds a secret.
pub(super) fn check_mode(
    what: &'static str,
    path: &Path,
    uid: u32,
    mode: u32,
    trust: Trust,
) -> Result<(), ConfigError> {
    breaches(path, uid, mode, trust).map_err(|(problem, fix)| ConfigError::Untrusted {
        what,
        path: path.to_owned(),
        problem,
        fix,
    })
}

/// Checks `path` (following a symbolic link: what is read or run is the target) and the
/// directory holding it. A missing path is left to the code that uses it, which names it.
pub(super) fn check_path(what: &'static str, path: &Path, trust: Trust) -> Result<(), ConfigError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    check_mode(what, path, meta.uid(), meta.mode(), trust)?;
    check_parent(what, path)
}

/// Checks the directory holding `path`: owned by root or this user, and not writable by
/// others unless it is sticky ([`Trust::Dir`]).
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
    breaches(&dir, meta.uid(), meta.mode(), Trust::Dir).map_err(|(problem, fix)| {
        ConfigError::Untrusted {
            what,
            path: path.to_owned(),
            problem: format!("in {} which is {problem}", dir.display()),
            fix,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_rules() {
        let path = Path::new("/etc/relay-sync.conf");
        assert!(check_mode("config file", path, 0, 0o600, Trust::Secret).is_ok());
        assert!(check_mode("config file", path, 0, 0o644, Trust::File).is_ok());
        let cases = [
            (65534, 0o600, Trust::File),
            (0, 0o666, Trust::File),
            (0, 0o620, Trust::File),
            (0, 0o640, Trust::Secret),
            (0, 0o604, Trust::Secret),
        ];
        let mut out = String::new();
        for (uid, mode, trust) in cases {
            let error = check_mode("config file", path, uid, mode, trust).unwrap_err();
            let secrecy = if trust == Trust::Secret {
                "Secret"
            } else {
                "Public"
            };
            out.push_str(&format!("{uid} {mode:o} {secrecy} => {error}\n"));
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
        let error = check_path("DB_PASSWORD_FILE", &file, Trust::Secret).unwrap_err();
        assert!(
            error.to_string().contains("writable by group or others"),
            "{error}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_path("DB_PASSWORD_FILE", &file, Trust::Secret).unwrap();
    }

    /// A fix can be pasted as it is printed: each path in it is quoted for a shell (a path
    /// with a space used to give `chown root /etc/relay sync.conf`).
    #[test]
    fn the_fix_quotes_the_path_for_a_shell() {
        let path = Path::new("/etc/relay sync.conf");
        let error = check_mode("config file", path, 65534, 0o666, Trust::File).unwrap_err();
        assert!(
            error.to_string().ends_with(
                "run `chown root '/etc/relay sync.conf' && chmod go-w '/etc/relay sync.conf'`"
            ),
            "{error}"
        );
        let error = ConfigError::Permissions {
            path: path.to_owned(),
            mode: 0o644,
        };
        assert!(
            error
                .to_string()
                .contains("run `chmod 600 '/etc/relay sync.conf'`"),
            "{error}"
        );
    }
}
