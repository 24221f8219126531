//! The commands relay-sync runs as root, vetted like the files it trusts: `DB_PASSWORD_COMMAND`
//! and `ALERT_COMMAND` (each a `/bin/sh -c` string) and the first word of
//! `POSTFIX_COMMAND_PREFIX` (run as it is, found through `PATH`).
//!
//! Each is resolved to the file that runs, as the shell (or `execvp`) would: a word with a `/`
//! is that path; a bare name is searched for in `PATH`, in order. Then:
//!
//! - the file (what a symbolic link finally points to), the directory holding it, and the
//!   directory holding the name (the link, when it is one) must be owned by root or the running
//!   user and writable by no one else (a sticky directory is fine: no one can replace root's
//!   file there), as for `POSTFIX_COMMAND_DIR`;
//! - every `PATH` directory searched before the file was found (all of them when it was not)
//!   must be writable by no one else, sticky or not: a program of the same name put there
//!   would run instead;
//! - a script (`#!`) has its interpreter vetted the same way, and `#!/usr/bin/env NAME` the
//!   program `NAME` is found as in `PATH`. An interpreter in a root-owned system directory
//!   (`/usr/bin`, `/bin`, …) passes as it is; one under `/opt` or a home directory is checked.
//!
//! What is and is not vetted in a shell string (decided here, documented in SECURITY.md):
//!
//! - **Vetted:** the first program the string runs: its first word, after `NAME=value`
//!   assignments and `exec` or `command`. A shell builtin (`echo`, `printf`, `test`, `exit`, …)
//!   is the shell itself: nothing to vet.
//! - **Refused** (exit 2, "cannot tell which program it runs"): a first word the shell would
//!   expand or that does not name a program: quoting, `$`, backquotes, globs, `~`, a keyword
//!   (`if`, `for`, `{`, `(`, …), `eval`, `.`/`source`. The fix is to name the program first,
//!   as a plain path or name, or to put the commands in a script root owns and name that.
//! - **Not vetted:** what comes later in the string (after `;`, `&&`, `|`, in `$(…)`), programs
//!   the first program runs (`sudo X`, `env X`, `timeout N X`), and what they read. The config
//!   file is root's alone, so those words are root's choice; keep anything longer than one
//!   program in a script that root owns.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{breaches, check_mode, Trust};
use crate::config::ConfigError;

/// How a key's command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::config) enum Launch<'a> {
    /// Through `/bin/sh -c`: `DB_PASSWORD_COMMAND`, `ALERT_COMMAND`.
    Shell(&'a str),
    /// As an argument vector whose first word is this: `POSTFIX_COMMAND_PREFIX`.
    Program(&'a str),
}

/// Where the shell looks for a bare name when `PATH` is not set: dash's default, which also
/// covers glibc's `execvp` (`/bin:/usr/bin`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shell builtins a command may start with: they run no file, so there is nothing to vet.
const BUILTINS: &[&str] = &[
    ":", "true", "false", "echo", "printf", "test", "[", "exit", "return", "set", "unset",
    "export", "readonly", "cd", "pwd", "read", "kill", "trap", "wait", "umask", "ulimit", "shift",
    "type", "times", "alias", "unalias", "getopts", "hash", "local",
];

/// First words after which the shell runs something this vetting cannot tell.
const OPAQUE: &[&str] = &[
    "eval", ".", "source", "if", "then", "else", "elif", "fi", "for", "while", "until", "do",
    "done", "case", "esac", "select", "function", "!", "{", "}", "[[", "]]", "time",
];

/// Directories whose programs are the system's own: an interpreter found in one of them (and
/// owned by root) passes as it is.
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/libexec"];

/// How deep interpreters of interpreters are followed (Linux runs at most 4 levels).
const MAX_INTERPRETERS: usize = 4;

/// The most of a program read to find its `#!` line (Linux reads 256 bytes).
const SHEBANG_LIMIT: u64 = 256;

/// Vets the program `key`'s command runs, with `path` as `PATH` (`None`: unset); see the
/// module documentation. A program that cannot be found is left to the run, which names it.
pub(in crate::config) fn check_command(
    key: &'static str,
    launch: Launch<'_>,
    path: Option<&OsStr>,
) -> Result<(), ConfigError> {
    let word = match launch {
        Launch::Program(word) => Some(word),
        Launch::Shell(command) => {
            first_program(command).map_err(|reason| ConfigError::Unvetted { key, reason })?
        }
    };
    let Some(word) = word else {
        return Ok(());
    };
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    check_program(key, "program", word, path, 0)
}

/// The first program `command` runs, `None` for a builtin or an empty command, or why it
/// cannot be told.
fn first_program(command: &str) -> Result<Option<&str>, String> {
    let mut rest = command.trim_start();
    loop {
        if rest.is_empty() {
            return Ok(None);
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || ";&|<>()".contains(c))
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        if word.is_empty() {
            return Err(format!(
                "it starts with `{}`",
                rest.chars().next().unwrap_or_default()
            ));
        }
        if is_assignment(word) || ((word == "exec" || word == "command") && !after.is_empty()) {
            rest = after.trim_start();
            if rest.starts_with('-') {
                return Err(format!("`{word}` is given options"));
            }
            continue;
        }
        if OPAQUE.contains(&word) {
            return Err(format!("it starts with `{word}`"));
        }
        if !is_plain(word) {
            return Err(format!(
                "its first word `{word}` is quoted or expanded by the shell"
            ));
        }
        if BUILTINS.contains(&word) || word == "exec" || word == "command" {
            return Ok(None);
        }
        return Ok(Some(word));
    }
}

/// Whether the shell takes `word` as it is: no quoting, expansion, glob or `~`.
fn is_plain(word: &str) -> bool {
    word.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+,:@%=-".contains(&b))
}

/// Whether `word` is a plain `NAME=value` assignment.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, value)| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && is_plain(value)
    })
}

/// Vets the program `word` names, `role` of `key` (`program`, `interpreter`), found through
/// `path` when it has no `/`; `depth` interpreters deep.
fn check_program(
    key: &'static str,
    role: &'static str,
    word: &str,
    path: &OsStr,
    depth: usize,
) -> Result<(), ConfigError> {
    let Some(found) = resolve(key, word, path)? else {
        return Ok(());
    };
    if role == "interpreter" && is_system_program(&found) {
        return Ok(());
    }
    let untrusted = |path: &Path, problem: String, fix: String| ConfigError::UntrustedCommand {
        key,
        role,
        path: path.to_owned(),
        problem,
        fix,
    };
    let Ok(meta) = std::fs::metadata(&found) else {
        return Ok(());
    };
    relabel(
        check_mode(key, &found, meta.uid(), meta.mode(), Trust::File),
        &untrusted,
    )?;
    // The directory holding the name, and the one holding what it finally points to.
    let real = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
    for dir in [parent(&found), parent(&real)] {
        check_dir(&dir, true).map_err(|(problem, fix)| {
            untrusted(
                &found,
                format!("in {} which is {problem}", dir.display()),
                fix,
            )
        })?;
    }
    if depth < MAX_INTERPRETERS && meta.is_file() {
        if let Some((interpreter, argument)) = interpreter_of(&real) {
            check_program(key, "interpreter", &interpreter, path, depth + 1)?;
            let is_env = Path::new(&interpreter).file_name() == Some(OsStr::new("env"));
            if let Some(program) = argument.filter(|_| is_env) {
                check_program(key, "interpreter", &program, path, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Maps a [`check_mode`] refusal of a program to the command's own error.
fn relabel(
    result: Result<(), ConfigError>,
    untrusted: &impl Fn(&Path, String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    result.map_err(|error| match error {
        ConfigError::Untrusted {
            path, problem, fix, ..
        } => untrusted(&path, problem, fix),
        other => other,
    })
}

/// The file `word` names: itself when it holds a `/`, else the first executable file of that
/// name in `path`'s directories, each searched directory vetted on the way; `None` when there
/// is none.
fn resolve(key: &'static str, word: &str, path: &OsStr) -> Result<Option<PathBuf>, ConfigError> {
    if word.contains('/') {
        return Ok(Some(PathBuf::from(word)));
    }
    for dir in path.as_bytes().split(|b| *b == b':') {
        // An empty entry is the current directory, as for the shell.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(word);
        if is_executable_file(&candidate) {
            return Ok(Some(candidate));
        }
        // Searched and passed over: anyone who can add a name here runs before the program.
        check_dir(dir, false).map_err(|(problem, fix)| ConfigError::UntrustedCommand {
            key,
            role: "PATH directory",
            path: dir.to_owned(),
            problem: format!("{problem}, searched before `{word}` is found: one put there would run in its place"),
            fix,
        })?;
    }
    Ok(None)
}

/// Whether `path` is a regular file with an execute bit, as the shell's search takes it.
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// What is wrong with `dir` as a directory a program is found in, and its fix: it must be
/// owned by root or this user and writable by no one else (sticky accepted when `sticky_ok`:
/// [`Trust::Dir`], else [`Trust::PrivateDir`]). A directory that does not exist holds nothing
/// to run.
fn check_dir(dir: &Path, sticky_ok: bool) -> Result<(), (String, String)> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let trust = if sticky_ok {
        Trust::Dir
    } else {
        Trust::PrivateDir
    };
    breaches(dir, meta.uid(), meta.mode(), trust)
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Whether `program` is in a root-owned system directory (`/usr/bin`, …) and root's.
fn is_system_program(program: &Path) -> bool {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    let in_system_dir = real
        .parent()
        .is_some_and(|dir| SYSTEM_DIRS.iter().any(|system| dir == Path::new(system)));
    let roots = |path: &Path| std::fs::metadata(path).is_ok_and(|meta| meta.uid() == 0);
    in_system_dir && roots(&real) && real.parent().is_some_and(roots)
}

/// A script's interpreter and its first argument (`#!/usr/bin/env python3`: `/usr/bin/env`,
/// `python3`), read through relay-fs (a regular file, never blocking); `None` for anything
/// that is not a script.
fn interpreter_of(program: &Path) -> Option<(String, Option<String>)> {
    let reader = relay_fs::open(relay_fs::Kind::PROGRAM, program).ok()??;
    let mut head = Vec::new();
    reader.take(SHEBANG_LIMIT).read_to_end(&mut head).ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interpreter = words.next()?.to_owned();
    let argument = words.find(|word| !word.starts_with('-')).map(str::to_owned);
    Some((interpreter, argument))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A script `name` in `dir` with `body`, mode 0755.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        chmod(&path, 0o755);
        path
    }

    fn shell(command: &str, path: &Path) -> Result<(), ConfigError> {
        check_command(
            "ALERT_COMMAND",
            Launch::Shell(command),
            Some(path.as_os_str()),
        )
    }

    #[test]
    fn the_first_program_of_a_shell_string() {
        for (command, first) in [
            ("logger -t relay-sync -p mail.err", Some("logger")),
            ("  /opt/bin/alert --to ops", Some("/opt/bin/alert")),
            ("LC_ALL=C exec /opt/bin/alert", Some("/opt/bin/alert")),
            ("cat /run/secret | tr -d x", Some("cat")),
            ("id>/tmp/x", Some("id")),
            ("echo 'vault: token expired' >&2; exit 7", None),
            ("exit 1", None),
            ("", None),
        ] {
            assert_eq!(first_program(command), Ok(first), "{command}");
        }
        for command in [
            "\"$HOME/bin/alert\"",
            "$ALERT",
            "~/bin/alert",
            "/opt/bin/al*",
            "(cd /tmp && alert)",
            "if true; then alert; fi",
            "eval alert",
            ". /etc/alert.sh",
            "exec -a x /opt/bin/alert",
            "`which alert`",
        ] {
            let reason = first_program(command).unwrap_err();
            assert!(!reason.is_empty(), "{command}");
        }
    }

    /// The reproduction: a 0777 script in a 0777 directory, named by path or found through
    /// `PATH`; then the fix.
    #[test]
    fn a_program_others_can_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let alert = script(&bin, "alert", "#!/bin/sh\nexit 0\n");
        chmod(&alert, 0o777);
        chmod(&bin, 0o777);
        let error = shell(&format!("{} critical", alert.display()), &bin).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "ALERT_COMMAND's program {} is writable by group or others (mode 0777): relay-sync \
                 runs ALERT_COMMAND as root",
                alert.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("chmod go-w {}", alert.display())),
            "{text}"
        );
        chmod(&alert, 0o755);
        let text = shell("alert critical", &bin).unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "in {} which is writable by group or others",
                bin.display()
            )),
            "{text}"
        );
        chmod(&bin, 0o1777);
        shell("alert", &bin).unwrap();
        chmod(&bin, 0o755);
        shell("alert", &bin).unwrap();
        check_command(
            "POSTFIX_COMMAND_PREFIX",
            Launch::Program("alert"),
            Some(bin.as_os_str()),
        )
        .unwrap();
    }

    /// A `PATH` directory others can write, searched before the program is found, is refused
    /// even when sticky: a program of the same name put there would run instead.
    #[test]
    fn a_writable_path_directory_before_the_program_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (open, safe) = (dir.path().join("open"), dir.path().join("safe"));
        fs::create_dir(&open).unwrap();
        fs::create_dir(&safe).unwrap();
        script(&safe, "alert", "#!/bin/sh\n");
        chmod(&open, 0o1777);
        let path = format!("{}:{}", open.display(), safe.display());
        let text = shell("alert", Path::new(&path)).unwrap_err().to_string();
        assert!(
            text.starts_with(&format!(
                "ALERT_COMMAND's PATH directory {} is writable by group or others (mode 1777), \
                 searched before `alert` is found: one put there would run in its place",
                open.display()
            )),
            "{text}"
        );
        // After the program, or for a name found nowhere: before it, or searched in vain.
        let path = format!("{}:{}", safe.display(), open.display());
        shell("alert", Path::new(&path)).unwrap();
        assert!(shell("missing-program", Path::new(&path)).is_err());
    }

    /// A script's interpreter outside the system directories is vetted, and so is the program
    /// `#!/usr/bin/env NAME` finds; `/bin/sh` passes as it is.
    #[test]
    fn a_scripts_interpreter_is_vetted() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        fs::create_dir(&venv).unwrap();
        let python = script(&venv, "python", "#!/bin/sh\n");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        script(
            &bin,
            "alert",
            &format!("#!{} -u\nprint()\n", python.display()),
        );
        script(&bin, "via-env", "#!/usr/bin/env python\nprint()\n");
        let path = format!("{}:{}", bin.display(), venv.display());
        shell("alert", Path::new(&path)).unwrap();
        shell("via-env", Path::new(&path)).unwrap();
        chmod(&python, 0o777);
        for command in ["alert", "via-env"] {
            let text = shell(command, Path::new(&path)).unwrap_err().to_string();
            assert!(
                text.starts_with(&format!(
                    "ALERT_COMMAND's interpreter {} is writable",
                    python.display()
                )),
                "{command}: {text}"
            );
        }
        assert!(is_system_program(Path::new("/bin/sh")));
        assert!(!is_system_program(&python));
    }

    #[test]
    fn unvetted_commands_are_named_with_the_fix() {
        let text = shell("\"$HOME/alert\" x", Path::new("/usr/bin"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "ALERT_COMMAND cannot be vetted: its first word `\"$HOME/alert\"` is quoted or \
             expanded by the shell; relay-sync runs it as root and checks the program it runs \
             first, so start it with that program's path or name, unquoted (or put the commands \
             in a script root owns, and name the script)"
        );
    }

    /// The fix for a `PATH` directory can be pasted as it is printed: its path is quoted.
    #[test]
    fn the_fix_quotes_the_directory_for_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let (open, safe) = (dir.path().join("open bin"), dir.path().join("safe"));
        fs::create_dir(&open).unwrap();
        fs::create_dir(&safe).unwrap();
        script(&safe, "alert", "#!/bin/sh\n");
        chmod(&open, 0o777);
        let path = format!("{}:{}", open.display(), safe.display());
        let text = shell("alert", Path::new(&path)).unwrap_err().to_string();
        assert!(
            text.ends_with(&format!("run `chmod go-w '{}'`", open.display())),
            "{text}"
        );
    }
}
