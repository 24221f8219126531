//! [`PostfixCli`]: the traits implemented with the real `postconf`, `postmap` and `postfix`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::atomic::{self, io, Ownership};
use crate::{backup, Backup, PostfixError, PostfixRead, PostfixSettings, PostfixWrite};

/// Postfix's compiled-in configuration directory: no `-c` is passed for it.
const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

/// Map types relay-sync can build and the file suffix of their database.
const MAP_TYPES: [(&str, &str); 4] = [
    ("hash", "db"),
    ("btree", "db"),
    ("lmdb", "lmdb"),
    ("cdb", "cdb"),
];

/// Postfix driven through its own commands.
#[derive(Debug, Clone)]
pub struct PostfixCli {
    settings: PostfixSettings,
    map_type: String,
    map_suffix: &'static str,
}

impl PostfixCli {
    /// Checks that the commands exist and settles the map type (`MAP_TYPE`, or Postfix's
    /// `default_database_type`).
    pub fn new(settings: PostfixSettings) -> Result<PostfixCli, PostfixError> {
        if settings.command_prefix.is_empty() {
            for name in ["postconf", "postmap", "postfix"] {
                let path = settings.command_dir.join(name);
                if !path.exists() {
                    return Err(PostfixError::CommandMissing { path });
                }
            }
        }
        let mut cli = PostfixCli {
            settings,
            map_type: String::new(),
            map_suffix: "",
        };
        let map_type = match cli.settings.map_type.clone() {
            Some(map_type) => map_type,
            None => cli.postconf_value("default_database_type")?,
        };
        let Some(&(_, suffix)) = MAP_TYPES.iter().find(|(name, _)| *name == map_type) else {
            return Err(PostfixError::Invalid {
                path: cli.settings.transport_file.clone(),
                detail: format!(
                    "map type {map_type:?} is not supported; set MAP_TYPE to hash, btree, lmdb or cdb"
                ),
            });
        };
        cli.map_type = map_type;
        cli.map_suffix = suffix;
        Ok(cli)
    }

    /// The map type in use (`hash`, `lmdb`, …).
    pub fn map_type(&self) -> &str {
        &self.map_type
    }

    /// The transport map's database file (`transport.db`, `transport.lmdb`, …).
    pub fn transport_database(&self) -> PathBuf {
        database_of(&self.settings.transport_file, self.map_suffix)
    }

    /// `postconf -h NAME`, without `$` expansion.
    pub fn postconf_value(&self, name: &str) -> Result<String, PostfixError> {
        let out = self.run("postconf", &["-h".into(), name.into()])?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// The command line for `program` with `args`: prefix, full path, `-c DIR` when needed.
    fn command(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut argv = self.settings.command_prefix.clone();
        argv.push(
            self.settings
                .command_dir
                .join(program)
                .to_string_lossy()
                .into_owned(),
        );
        if self.settings.config_dir != Path::new(DEFAULT_CONFIG_DIR) {
            argv.push("-c".into());
            argv.push(self.settings.config_dir.to_string_lossy().into_owned());
        }
        argv.extend(args.iter().cloned());
        argv
    }

    /// Runs a command and returns its stdout; a non-zero exit is `CommandFailed` with stderr.
    fn run(&self, program: &str, args: &[String]) -> Result<String, PostfixError> {
        let (status, stdout, stderr) = self.run_status(program, args)?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(failed(
                &self.command(program, args),
                &status,
                &stdout,
                &stderr,
            ))
        }
    }

    fn run_status(
        &self,
        program: &str,
        args: &[String],
    ) -> Result<(std::process::ExitStatus, String, String), PostfixError> {
        let argv = self.command(program, args);
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| PostfixError::Spawn {
                command: argv.join(" "),
                source,
            })?;
        Ok((
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Builds the map for `text` under a temporary name and renames source and database into
    /// place: lookups never see a half-built table (DATABASE_README).
    fn install_transport(&self, text: &str) -> Result<(), PostfixError> {
        let source = &self.settings.transport_file;
        let temp_source = atomic::temp_path(source);
        let temp_db = database_of(&temp_source, self.map_suffix);
        let result = (|| {
            let source_owner = Ownership::of(source)?;
            let db_owner = Ownership::of(&self.transport_database())?.or(source_owner);
            atomic::write_temp(&temp_source, text.as_bytes(), 0o644)?;
            // Owners are applied only after postmap: run as root, postmap drops privileges to
            // the source file's owner, who may not be allowed to create files in the directory.
            self.run(
                "postmap",
                &[format!("{}:{}", self.map_type, temp_source.display())],
            )?;
            if let Some(owner) = source_owner {
                owner.apply(&temp_source)?;
            }
            if let Some(owner) = db_owner {
                owner.apply(&temp_db)?;
            }
            atomic::sync_file(&temp_db)?;
            // Database first, then source: the database is never older than its source, and a
            // crash between the two leaves a source that the next run rewrites.
            atomic::rename(&temp_db, &self.transport_database())?;
            atomic::rename(&temp_source, source)?;
            atomic::sync_dir(source)
        })();
        if result.is_err() {
            atomic::remove_if_present(&temp_source);
            atomic::remove_if_present(&temp_db);
        }
        result
    }
}

impl PostfixRead for PostfixCli {
    fn relay_domains(&self) -> Result<String, PostfixError> {
        self.postconf_value("relay_domains")
    }

    fn read_transport(&self) -> Result<Option<String>, PostfixError> {
        let path = &self.settings.transport_file;
        match fs::read(path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| PostfixError::Invalid {
                    path: path.clone(),
                    detail: "not UTF-8 text; fix the file's encoding by hand".into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("read", path, source)),
        }
    }

    fn transport_map_is_fresh(&self) -> Result<bool, PostfixError> {
        let mtime = |path: &Path| match fs::metadata(path) {
            Ok(meta) => meta
                .modified()
                .map(Some)
                .map_err(|source| io("inspect", path, source)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io("inspect", path, source)),
        };
        let Some(source) = mtime(&self.settings.transport_file)? else {
            return Ok(true);
        };
        Ok(mtime(&self.transport_database())?.is_some_and(|db| db >= source))
    }

    fn lookup_transport(&self, key: &str) -> Result<Option<String>, PostfixError> {
        let args = ["-q".to_owned(), key.to_owned(), self.transport_map_name()];
        let (status, stdout, stderr) = self.run_status("postmap", &args)?;
        match status.code() {
            Some(0) => Ok(Some(stdout.trim_end_matches('\n').to_owned())),
            // postmap -q exits 1 when the key is not found (postmap(1)).
            Some(1) if stderr.trim().is_empty() => Ok(None),
            _ => Err(failed(
                &self.command("postmap", &args),
                &status,
                &stdout,
                &stderr,
            )),
        }
    }

    fn transport_map_name(&self) -> String {
        format!(
            "{}:{}",
            self.map_type,
            self.settings.transport_file.display()
        )
    }
}

impl PostfixWrite for PostfixCli {
    fn backup(&self, relay_domains: &str, transport: Option<&str>) -> Result<Backup, PostfixError> {
        backup::write(
            &self.settings.backup_dir,
            self.settings.backup_keep,
            relay_domains,
            transport,
        )
    }

    fn write_transport(&self, text: &str) -> Result<(), PostfixError> {
        self.install_transport(text)
    }

    fn rebuild_transport_map(&self) -> Result<(), PostfixError> {
        match self.read_transport()? {
            Some(text) => self.install_transport(&text),
            None => Ok(()),
        }
    }

    fn set_relay_domains(&self, value: &str) -> Result<(), PostfixError> {
        if value.contains(['\n', '\r']) {
            return Err(PostfixError::Invalid {
                path: self.settings.config_dir.join("main.cf"),
                detail: "refusing a relay_domains value with a line break".into(),
            });
        }
        self.run(
            "postconf",
            &["-e".into(), format!("relay_domains = {value}")],
        )
        .map(|_| ())
    }

    fn reload(&self) -> Result<(), PostfixError> {
        let error = match self.run("postfix", &["reload".into()]) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        // postfix-script logs its reason to the mail log, not to stderr: name the likely one.
        let running = self
            .run_status("postfix", &["status".into()])
            .is_ok_and(|(status, _, _)| status.success());
        Err(match error {
            PostfixError::CommandFailed {
                command, status, ..
            } if !running => PostfixError::CommandFailed {
                command,
                status,
                stderr: "the Postfix mail system is not running (postfix status); \
                         start it with `postfix start`"
                    .to_owned(),
            },
            other => other,
        })
    }
}

/// `transport` + `.db`, `.lmdb`, `.cdb`.
fn database_of(source: &Path, suffix: &str) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn failed(
    argv: &[String],
    status: &std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
) -> PostfixError {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let text = match text.trim() {
        "" => "no output; Postfix logs the reason to its mail log (maillog_file or syslog)",
        text => text,
    };
    PostfixError::CommandFailed {
        command: argv.join(" "),
        status: status.to_string(),
        stderr: text.to_owned(),
    }
}
