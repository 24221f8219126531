//! One MX gateway under test: a private MariaDB with the admin panel's schema, a private
//! Postfix, a config file for relay-sync, and helpers to run the binary and read the results.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use relay_testbed::{MariaDb, Postfix};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_relay-sync");

pub(crate) struct Gateway {
    pub(crate) db: MariaDb,
    pub(crate) postfix: Postfix,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    /// Variables set for every run of the binary (e.g. test credentials for AWS).
    pub(crate) env: Vec<(String, String)>,
}

/// What one run of the binary did.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Gateway {
    /// A gateway whose Postfix relays `initial_relay_domains`, with the seed data loaded and
    /// `extra` appended to the config file.
    pub(crate) fn start(initial_relay_domains: &str, extra: &str) -> Gateway {
        Gateway::start_on(MariaDb::start().unwrap(), initial_relay_domains, extra)
    }

    /// Like [`Gateway::start`], on a database the caller started (e.g. with TLS).
    pub(crate) fn start_on(db: MariaDb, initial_relay_domains: &str, extra: &str) -> Gateway {
        db.load_fixtures().unwrap();
        let postfix = Postfix::start(initial_relay_domains).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay-sync.conf");
        let text = format!(
            "# relay-sync e2e gateway\n\
             DB_HOST=127.0.0.1\n\
             DB_PORT={port}\n\
             DB_USER=relay_sync\n\
             DB_PASSWORD=relay-sync-test-pw\n\
             DB_CONNECT_TIMEOUT=2\n\
             DELL_RELAY_IP=127.0.0.1\n\
             DELL_RELAY_PORT=2525\n\
             PRESERVE_DOMAINS=kuma8088.com\n\
             POSTFIX_CONFIG_DIR={pf}\n\
             BACKUP_DIR={d}/backup\n\
             LOG_FILE={d}/log/relay-sync.log\n\
             STATE_DIR={d}/state\n\
             {extra}\n",
            port = db.port(),
            pf = postfix.config_dir().display(),
            d = dir.path().display(),
        );
        fs::write(&config, text).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        Gateway {
            db,
            postfix,
            dir,
            config,
            env: Vec::new(),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// The binary's command line with this gateway's config, not yet started.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG");
        // A developer's own AWS settings must never reach a test run: only `env`'s do.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the binary with `RELAY_SYNC_*` overrides (`("DB_TLS", "required")` sets
    /// `RELAY_SYNC_DB_TLS`): the environment wins over the config file (SPEC §5).
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        for (key, value) in env {
            command.env(format!("RELAY_SYNC_{key}"), value);
        }
        let output: Output = command.output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `program` (e.g. an installed relay-sync) with `--config` and `args`, with `env`
    /// added to the environment.
    pub(crate) fn run_program(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output: Output = Command::new(program)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Rewrites the config file with `edit` (its mode stays 0600).
    pub(crate) fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.config).unwrap();
        fs::write(&self.config, edit(text)).unwrap();
    }

    /// `text` with this gateway's temporary paths and ports replaced by placeholders, for
    /// snapshots.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(
            &self.postfix.config_dir().display().to_string(),
            "[POSTFIX]",
        )
        .replace(&self.dir.path().display().to_string(), "[DIR]")
        .replace(&format!(":{}", self.db.port()), ":[PORT]")
    }

    /// Runs a sync and asserts its exit code.
    pub(crate) fn sync_expecting(&self, code: i32) -> Run {
        let run = self.run(&[]);
        assert_eq!(run.code, code, "{run:?}\n--- log\n{}", self.log());
        run
    }

    pub(crate) fn sql(&self, sql: &str) {
        self.db.sql(sql).unwrap();
    }

    pub(crate) fn relay_domains(&self) -> String {
        self.postfix.postconf("relay_domains").unwrap()
    }

    pub(crate) fn transport_path(&self) -> PathBuf {
        self.postfix.config_dir().join("transport")
    }

    pub(crate) fn transport(&self) -> String {
        fs::read_to_string(self.transport_path()).unwrap()
    }

    pub(crate) fn main_cf(&self) -> String {
        fs::read_to_string(self.postfix.config_dir().join("main.cf")).unwrap()
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/relay-sync.log")).unwrap_or_default()
    }

    pub(crate) fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backup")
    }

    /// `postmap -q KEY hash:TRANSPORT` through the real postmap.
    pub(crate) fn lookup(&self, key: &str) -> Option<String> {
        let out = Command::new("/usr/sbin/postmap")
            .arg("-c")
            .arg(self.postfix.config_dir())
            .arg("-q")
            .arg(key)
            .arg(format!("hash:{}", self.transport_path().display()))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Modification times of every file relay-sync may write.
    pub(crate) fn mtimes(&self) -> Vec<(PathBuf, SystemTime)> {
        let dir = self.postfix.config_dir();
        ["main.cf", "transport", "transport.db"]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let mtime = fs::metadata(&path).unwrap().modified().unwrap();
                (path, mtime)
            })
            .collect()
    }

    /// Contents of main.cf and transport (when present) before any sync.
    pub(crate) fn files_before_first_sync(&self) -> Vec<Option<Vec<u8>>> {
        let dir = self.postfix.config_dir();
        ["main.cf", "transport", "transport.db"]
            .iter()
            .map(|name| fs::read(dir.join(name)).ok())
            .collect()
    }

    /// Contents of main.cf, transport and transport.db, to prove a failed run changed nothing.
    pub(crate) fn files(&self) -> Vec<Vec<u8>> {
        let dir = self.postfix.config_dir();
        ["main.cf", "transport", "transport.db"]
            .iter()
            .map(|name| fs::read(dir.join(name)).unwrap())
            .collect()
    }
}

/// Files in `dir` whose names start with `prefix`.
pub(crate) fn files_starting_with(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

impl Gateway {
    /// Runs a sync with `RELAY_SYNC_*` overrides and asserts its exit code.
    pub(crate) fn sync_env_expecting(&self, env: &[(&str, &str)], code: i32) -> Run {
        let run = self.run_env(&[], env);
        assert_eq!(run.code, code, "{run:?}\n--- log\n{}", self.log());
        run
    }

    /// Stand-ins where `postconf -e` fails with `postconf: fatal: stand-in: cannot update
    /// main.cf` ([`BROKEN_POSTCONF_SAYS`]) and every read works: the `POSTFIX_COMMAND_DIR`.
    pub(crate) fn broken_postconf(&self) -> PathBuf {
        self.stand_in_commands(
            "broken-postconf",
            &[(
                "postconf",
                r#"case " $* " in *" -e "*) echo "postconf: fatal: stand-in: cannot update main.cf" >&2; exit 1;; esac
exec /usr/sbin/postconf "$@""#,
            )],
        )
    }

    /// A `POSTFIX_COMMAND_DIR` named `name` whose `postconf`, `postmap` and `postfix` are shell
    /// scripts: each runs the given body, or else hands over to the real command in /usr/sbin.
    /// A body usually ends with `exec /usr/sbin/NAME "$@"` for the calls it does not break.
    pub(crate) fn stand_in_commands(&self, name: &str, bodies: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        for program in ["postconf", "postmap", "postfix"] {
            let body = bodies.iter().find(|(p, _)| *p == program).map_or_else(
                || format!("exec /usr/sbin/{program} \"$@\""),
                |(_, b)| (*b).to_owned(),
            );
            let path = dir.join(program);
            fs::write(
                &path,
                format!("#!/bin/sh\n# relay-sync e2e stand-in for {program}\n{body}\n"),
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }
}

/// What [`Gateway::broken_postconf`]'s `postconf -e` prints.
pub(crate) const BROKEN_POSTCONF_SAYS: &str = "stand-in: cannot update main.cf";
