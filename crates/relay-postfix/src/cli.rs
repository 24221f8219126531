//! [`PostfixCli`]: the traits implemented with the real `postconf`, `postmap` and `postfix`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use relay_fs::{BuildDir, Kind, Ownership};

use crate::{
    backup, io, postconf_cache, prefix, Backup, PostfixError, PostfixRead, PostfixSettings,
    PostfixWrite,
};

/// Postfix's compiled-in configuration directory: no `-c` is passed for it.
pub(crate) const DEFAULT_CONFIG_DIR: &str = "/etc/postfix";

/// Map types relay-sync can build and the file suffix of their database.
const MAP_TYPES: [(&str, &str); 4] = [
    ("hash", "db"),
    ("btree", "db"),
    ("lmdb", "lmdb"),
    ("cdb", "cdb"),
];

/// Postfix driven through its own commands.
#[derive(Debug)]
pub struct PostfixCli {
    settings: PostfixSettings,
    relay_domains_map: PathBuf,
    recipients_map: PathBuf,
    map_type: String,
    map_suffix: &'static str,
    transport_maps: String,
    /// `relay_domains` as [`PostfixCli::new`]'s postconf printed it, handed out by the first
    /// [`PostfixRead::relay_domains`] call.
    relay_domains_at_start: Mutex<Option<String>>,
    /// `relay_recipient_maps` as the same postconf printed it, handed out once likewise.
    relay_recipient_maps_at_start: Mutex<Option<String>>,
    /// Databases built ahead by [`PostfixWrite::prepare_maps`], waiting to be installed.
    staged: Mutex<Vec<Staged>>,
}

/// A map database built under its temporary name and not yet renamed into place.
#[derive(Debug)]
struct Staged {
    /// The source file it will replace.
    source: PathBuf,
    /// Length and hash of the text it was built from: only a write of the same text uses it.
    fingerprint: (usize, u64),
    /// The build's result; an error is reported by the write that would have used it.
    built: Result<Built, PostfixError>,
}

/// A map's new source and database, built and flushed in a private [`BuildDir`] with the owners
/// and modes of the files they will replace, waiting to be renamed into place. Dropping it
/// removes whatever was not installed.
#[derive(Debug)]
struct Built {
    /// The new source file, named like the file it replaces.
    source: PathBuf,
    /// Its descriptor, on which owner and mode were set.
    source_file: File,
    /// The database postmap built from it.
    database: PathBuf,
    /// Its descriptor, opened without following a link and checked to be a regular file.
    database_file: File,
    /// Declared last, so that it is dropped (and removed) after the files are closed.
    _dir: BuildDir,
}

impl Clone for PostfixCli {
    /// A clone reads `relay_domains` afresh.
    fn clone(&self) -> PostfixCli {
        PostfixCli {
            settings: self.settings.clone(),
            relay_domains_map: self.relay_domains_map.clone(),
            recipients_map: self.recipients_map.clone(),
            map_type: self.map_type.clone(),
            map_suffix: self.map_suffix,
            transport_maps: self.transport_maps.clone(),
            relay_domains_at_start: Mutex::new(None),
            relay_recipient_maps_at_start: Mutex::new(None),
            staged: Mutex::new(Vec::new()),
        }
    }
}

impl PostfixCli {
    /// Checks that the commands exist and settles the map type (`MAP_TYPE`, or Postfix's
    /// `default_database_type`).
    ///
    /// The same `postconf` reads `relay_domains`: the first [`PostfixRead::relay_domains`] call
    /// returns that value, later calls run postconf again. Every Postfix command costs a run
    /// several milliseconds, and a no-change run is little else.
    pub fn new(settings: PostfixSettings) -> Result<PostfixCli, PostfixError> {
        PostfixCli::build(settings, None)
    }

    /// [`PostfixCli::new`], skipping its postconf when `cache` holds what postconf printed
    /// for the very same `main.cf` (same file, size, mtime and ctime, none of the last two
    /// seconds) and the same `postconf` binary; otherwise it runs postconf and stores the
    /// result in `cache`. Only for a run that holds the run lock and may write; without a
    /// command prefix only (`main.cf` must be on this host to be inspected).
    pub fn with_postconf_cache(
        settings: PostfixSettings,
        cache: &Path,
    ) -> Result<PostfixCli, PostfixError> {
        PostfixCli::build(settings, Some(cache))
    }

    fn build(settings: PostfixSettings, cache: Option<&Path>) -> Result<PostfixCli, PostfixError> {
        if settings.command_prefix.is_empty() {
            for name in ["postconf", "postmap", "postfix"] {
                let path = settings.command_dir.join(name);
                if !path.exists() {
                    return Err(PostfixError::CommandMissing { path });
                }
            }
        }
        let mut cli = PostfixCli {
            relay_domains_map: settings.config_dir.join("relay_domains"),
            recipients_map: settings.config_dir.join("relay_recipients"),
            settings,
            map_type: String::new(),
            map_suffix: "",
            transport_maps: String::new(),
            relay_domains_at_start: Mutex::new(None),
            relay_recipient_maps_at_start: Mutex::new(None),
            staged: Mutex::new(Vec::new()),
        };
        let cache = cache.filter(|_| cli.settings.command_prefix.is_empty());
        let key = cache
            .and_then(|_| postconf_cache::key(&cli.settings.config_dir, &cli.settings.command_dir));
        // relay_recipient_maps only for recipient validation: without it, the one postconf is
        // the same command as before the feature existed.
        let mut names = vec!["transport_maps", "default_database_type", "relay_domains"];
        if cli.settings.recipient_validation {
            names.push("relay_recipient_maps");
        }
        let cached = cache.zip(key.as_deref()).and_then(|(path, key)| {
            let values = postconf_cache::load(path, key, &names)?;
            tracing::debug!(
                "main.cf unchanged since the last run: postconf values from {}",
                path.display()
            );
            Some(values)
        });
        let values = match cached {
            Some(values) => values,
            None => {
                // One postconf for all of them: every command costs a few milliseconds of a
                // no-change run. `-h` prints one line per name, in order; values never span
                // lines.
                let mut args = vec!["-h".to_owned()];
                args.extend(names.iter().map(|name| (*name).to_owned()));
                let out = cli.run("postconf", &args)?;
                let values = lines_for(&out, names.len()).ok_or_else(|| PostfixError::Invalid {
                    path: cli.settings.command_dir.join("postconf"),
                    detail: format!(
                        "`postconf {}` printed {} line(s) where {} were expected: {:?}; check \
                         that POSTFIX_COMMAND_DIR (and POSTFIX_COMMAND_PREFIX) run Postfix's \
                         own postconf",
                        args.join(" "),
                        out.lines().count(),
                        names.len(),
                        relay_process::excerpt(&out)
                    ),
                })?;
                if let (Some(path), Some(key)) = (cache, &key) {
                    postconf_cache::save(path, key, &names, &values);
                }
                values
            }
        };
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or_default();
        let (transport_maps, default_type, relay_domains) = (next(), next(), next());
        cli.transport_maps = transport_maps;
        cli.relay_domains_at_start = Mutex::new(Some(relay_domains));
        if cli.settings.recipient_validation {
            cli.relay_recipient_maps_at_start = Mutex::new(Some(next()));
        }
        let from_postfix = cli.settings.map_type.is_none();
        let map_type = cli.settings.map_type.clone().unwrap_or(default_type);
        let Some(&(_, suffix)) = MAP_TYPES.iter().find(|(name, _)| *name == map_type) else {
            let whose = if from_postfix {
                "Postfix's default_database_type"
            } else {
                "MAP_TYPE"
            };
            return Err(PostfixError::Invalid {
                path: cli.settings.transport_file.clone(),
                detail: format!(
                    "map type {map_type:?} ({whose}) is not supported; set MAP_TYPE to hash, \
                     btree, lmdb or cdb"
                ),
            });
        };
        cli.map_type = map_type;
        cli.map_suffix = suffix;
        Ok(cli)
    }

    /// `transport_maps` as `postconf -h` printed it when this was built.
    pub fn transport_maps(&self) -> &str {
        &self.transport_maps
    }

    /// The map type in use (`hash`, `lmdb`, …).
    pub fn map_type(&self) -> &str {
        &self.map_type
    }

    /// The transport map's database file (`transport.db`, `transport.lmdb`, …).
    pub fn transport_database(&self) -> PathBuf {
        database_of(&self.settings.transport_file, self.map_suffix)
    }

    /// Removes what a run killed while writing the transport map or the relay-domains table
    /// (kill -9, power loss) left beside it, so that it does not wait for the next change to
    /// go away: build directories `.NAME.RANDOM.relay-sync.tmp`, and the fixed names of
    /// versions before them (`.NAME.relay-sync.tmp`, its databases, Berkeley DB's `__db.` file).
    /// Only this user's own regular files and build directories are removed
    /// ([`relay_fs::remove_leftover`]); anything else there is left alone. Call it only while
    /// holding the run lock: a running sync uses these names.
    pub fn remove_leftovers(&self) -> Result<(), PostfixError> {
        for source in [
            &self.settings.transport_file,
            &self.relay_domains_map,
            &self.recipients_map,
        ] {
            let Some(base) = source.file_name().map(|n| n.to_string_lossy()) else {
                continue;
            };
            let dir = match source.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io("list", dir, source)),
            };
            for entry in entries {
                let entry = entry.map_err(|source| io("list", dir, source))?;
                let name = entry.file_name();
                if is_leftover_of(&name.to_string_lossy(), &base) {
                    relay_fs::remove_leftover(&entry.path(), true)?;
                }
            }
        }
        Ok(())
    }

    /// Sets `RELAY_DOMAINS_MAP`, map mode's relay-domains table source (default:
    /// `POSTFIX_CONFIG_DIR/relay_domains`).
    #[must_use]
    pub fn with_relay_domains_map(mut self, path: PathBuf) -> PostfixCli {
        self.relay_domains_map = path;
        self
    }

    /// Sets `RECIPIENTS_MAP`, recipient validation's table source (default:
    /// `POSTFIX_CONFIG_DIR/relay_recipients`).
    #[must_use]
    pub fn with_recipients_map(mut self, path: PathBuf) -> PostfixCli {
        self.recipients_map = path;
        self
    }

    /// The recipients table's database file (`relay_recipients.db`, `.lmdb`, …).
    pub fn recipients_database(&self) -> PathBuf {
        database_of(&self.recipients_map, self.map_suffix)
    }

    /// The relay-domains table's database file (`relay_domains.db`, `.lmdb`, …).
    pub fn relay_domains_database(&self) -> PathBuf {
        database_of(&self.relay_domains_map, self.map_suffix)
    }

    /// `postconf -h NAME`, without `$` expansion.
    pub fn postconf_value(&self, name: &str) -> Result<String, PostfixError> {
        let out = self.run("postconf", &["-h".into(), name.into()])?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// Container mode: runs `test -e PATH` through `POSTFIX_COMMAND_PREFIX` (bounded by
    /// `COMMAND_TIMEOUT` like every Postfix command), so that `relay-sync check` can tell
    /// whether a file created on this host is at the same path for Postfix. A missing file is
    /// `CommandFailed` naming the command and its status. Without a prefix it is a check of
    /// this host's own file system.
    pub fn container_sees(&self, path: &Path) -> Result<(), PostfixError> {
        let argv = self.through_prefix(vec![
            "test".to_owned(),
            "-e".to_owned(),
            path.to_string_lossy().into_owned(),
        ]);
        let (status, _, stderr) = self.bounded(relay_process::Command::new(&argv))?;
        if status.success() {
            return Ok(());
        }
        Err(PostfixError::CommandFailed {
            command: argv.join(" "),
            status: status.to_string(),
            stderr: relay_process::excerpt(&stderr),
        })
    }

    /// The command line for `program` with `args`, as run: full path and `-c DIR` when needed,
    /// through the prefix and its container's `timeout` when there is one.
    fn command(&self, program: &str, args: &[String]) -> Vec<String> {
        self.through_prefix(self.postfix_command(program, args))
    }

    /// The Postfix command itself: full path, `-c DIR` when needed, `args`.
    fn postfix_command(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut argv = vec![self
            .settings
            .command_dir
            .join(program)
            .to_string_lossy()
            .into_owned()];
        if self.settings.config_dir != Path::new(DEFAULT_CONFIG_DIR) {
            argv.push("-c".into());
            argv.push(self.settings.config_dir.to_string_lossy().into_owned());
        }
        argv.extend(args.iter().cloned());
        argv
    }

    /// `command` through `POSTFIX_COMMAND_PREFIX` under the container's own `timeout`
    /// ([`prefix::wrap`]); `command` itself without a prefix.
    fn through_prefix(&self, command: Vec<String>) -> Vec<String> {
        prefix::wrap(
            &self.settings.command_prefix,
            self.settings.command_timeout,
            command,
        )
    }

    /// Runs `command` bounded by `COMMAND_TIMEOUT` ([`prefix::run_bounded`]).
    fn bounded(
        &self,
        command: relay_process::Command,
    ) -> Result<(std::process::ExitStatus, String, String), PostfixError> {
        prefix::run_bounded(&self.settings, command)
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
        self.timed(program, args, |command| command)
    }

    /// Runs a command with its output going to unnamed files rather than pipes, and returns
    /// when the command itself exits. `postfix reload` ends by starting `postsuper` in the
    /// background; with pipes, waiting for the output would wait for that `postsuper` too
    /// (about 20 ms), which neither a shell nor the reload itself waits for. Without a
    /// temporary file (`TMPDIR` full or unwritable) the runner falls back to pipes and says so.
    fn run_to_files(
        &self,
        program: &str,
        args: &[String],
    ) -> Result<(std::process::ExitStatus, String, String), PostfixError> {
        self.timed(program, args, |command| {
            command.capture(relay_process::Capture::Files)
        })
    }

    /// Runs a command with `lines` (each ending in a line break) on its standard input. On this
    /// host they are written to it; through a prefix they are handed over as an argument
    /// ([`prefix::with_lines`]), since `docker exec` and `podman exec` without `-i` pass no
    /// standard input. Also returns the command line as errors name it.
    fn run_with_lines(
        &self,
        program: &str,
        args: &[String],
        lines: &str,
    ) -> Result<(std::process::ExitStatus, String, String, String), PostfixError> {
        let command = if self.settings.command_prefix.is_empty() {
            relay_process::Command::new(self.postfix_command(program, args)).stdin(lines)
        } else {
            let (argv, shown) = prefix::with_lines(
                &self.settings.command_prefix,
                self.settings.command_timeout,
                self.postfix_command(program, args),
                lines,
            );
            relay_process::Command::new(argv).show_as(shown)
        };
        let shown = command.command_line().to_owned();
        let (status, stdout, stderr) = self.bounded(command)?;
        Ok((status, stdout, stderr, shown))
    }

    /// Runs the command line of `program` with `args` through the process runner, adjusted by
    /// `adjust`, bounded by `COMMAND_TIMEOUT` ([`PostfixCli::bounded`]). `MAIL_CONFIG` is left
    /// out of its environment: `POSTFIX_CONFIG_DIR` alone says which configuration is meant
    /// (a `-c` when it is not the default), as it does for the files relay-sync reads and
    /// writes.
    fn timed(
        &self,
        program: &str,
        args: &[String],
        adjust: impl FnOnce(relay_process::Command) -> relay_process::Command,
    ) -> Result<(std::process::ExitStatus, String, String), PostfixError> {
        self.bounded(adjust(relay_process::Command::new(
            self.command(program, args),
        )))
    }

    /// Builds the map for `text` under a temporary name and renames source and database into
    /// place: lookups never see a half-built table (DATABASE_README).
    ///
    /// The sequence: [`PostfixCli::build_map`] in a private directory beside `NAME`; rename the
    /// source over `NAME` and then the database over `NAME.db`, each checked to be the file
    /// built; flush the directory. The source is written before postmap runs, so the database's
    /// mtime is never older than the source's. On any failure the build directory is removed
    /// and the previous source and database are untouched; the one exception is a failure of
    /// the very last rename (the database's), after which the new source stands beside the old,
    /// now stale, database exactly as after a crash at that instant: the next run rebuilds it
    /// (see the comment there).
    ///
    /// The same mechanism installs the transport map and map mode's relay-domains table. When
    /// [`PostfixWrite::prepare_maps`] has already built this text, only the renames are left.
    fn install_map(&self, source: &Path, text: &str) -> Result<(), PostfixError> {
        let built = match self.take_staged(source, text) {
            Some(built) => built?,
            None => self.build_map(source, text)?,
        };
        // Source first, then database. The database was built after the temporary source
        // was written, so once both are in place it is not older than its source. A crash
        // between the two renames leaves the new source beside the old database, which is
        // then older than its source: the next run sees a stale map and rebuilds it,
        // whatever the database (MariaDB) says by then. The other order could leave a new
        // database beside an old source, looking fresh, with routes the source lacks
        // (a rollback killed there would keep them for good).
        match relay_fs::trusted_link(source)? {
            None => relay_fs::rename_checked(&built.source, source, &built.source_file)?,
            // A source that is a symbolic link root keeps (configuration management) stays
            // one: the file it points to is replaced, dated like the built source, so that the
            // database is not older than it. The database is where Postfix looks for it:
            // beside the link.
            Some(target) => {
                let modified = built
                    .source_file
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .map_err(|error| io("inspect", &built.source, error))?;
                relay_fs::replace_dated(&target, text.as_bytes(), NEW_FILE_MODE, Some(modified))?;
            }
        }
        relay_fs::rename_checked(
            &built.database,
            &database_of(source, self.map_suffix),
            &built.database_file,
        )?;
        Ok(relay_fs::sync_dir(source)?)
    }

    /// The first half of [`PostfixCli::install_map`]: the new source and database, built in a
    /// private directory beside `source` and flushed (both before either is renamed), with the
    /// owners and modes of the files they will replace (0644 for new ones).
    ///
    /// postmap creates its output without `O_EXCL`, so it writes only where nobody else can
    /// plant a link ([`BuildDir`]); the database it made (in a container, perhaps) is opened
    /// without following a link and must be a regular file before its owner and mode are set
    /// on its descriptor.
    fn build_map(&self, source: &Path, text: &str) -> Result<Built, PostfixError> {
        let database = database_of(source, self.map_suffix);
        // A link someone else planted at the source is refused before anything is built.
        let target = relay_fs::trusted_link(source)?;
        let source_owner = Ownership::of(target.as_deref().unwrap_or(source))?;
        let db_owner = Ownership::of(&database)?.or(source_owner);
        let dir = BuildDir::beside(source)?;
        let temp_source = dir.join(source.file_name().unwrap_or(source.as_os_str()));
        let temp_db = database_of(&temp_source, self.map_suffix);
        let mut source_file = relay_fs::create_new(&temp_source)
            .map_err(|error| io("create", &temp_source, error))?;
        // Flushed after postmap, not before: postmap reads the page cache, and a run's first
        // fsync can wait tens of milliseconds for the file system's journal (measured: 15 ms
        // after a database write), which then overlaps the build.
        source_file
            .write_all(text.as_bytes())
            .map_err(|error| io("write", &temp_source, error))?;
        // Owners are applied only after postmap: run as root, postmap drops privileges to the
        // source file's owner, who may not be allowed to create files in the directory.
        self.run(
            "postmap",
            &[format!("{}:{}", self.map_type, temp_source.display())],
        )?;
        let database_file = relay_fs::open_produced(&temp_db)?;
        for (file, path, owner) in [
            (&source_file, &temp_source, source_owner),
            (&database_file, &temp_db, db_owner),
        ] {
            match owner {
                Some(owner) => owner.apply(file, path)?,
                None => relay_fs::set_mode(file, path, NEW_FILE_MODE)?,
            }
            file.sync_all().map_err(|error| io("flush", path, error))?;
        }
        Ok(Built {
            source: temp_source,
            source_file,
            database: temp_db,
            database_file,
            _dir: dir,
        })
    }

    /// The build [`PostfixWrite::prepare_maps`] made of exactly `text` for `source`, if any.
    /// Any other build staged for `source` is stale and removed from the list.
    fn take_staged(&self, source: &Path, text: &str) -> Option<Result<Built, PostfixError>> {
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = staged.iter().position(|s| s.source == source)?;
        let entry = staged.swap_remove(index);
        (entry.fingerprint == fingerprint(text)).then_some(entry.built)
    }
}

/// Length and hash of a map's text: tells the write that a staged build is for it.
fn fingerprint(text: &str) -> (usize, u64) {
    use std::hash::BuildHasher;
    // Keys drawn once per process: no text can be made to collide with another on purpose.
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    (
        text.len(),
        KEYS.get_or_init(std::hash::RandomState::new).hash_one(text),
    )
}

impl PostfixRead for PostfixCli {
    fn shell_command(&self, program: &str, args: &[&str]) -> String {
        self.settings.shell_command(program, args)
    }

    fn relay_domains(&self) -> Result<String, PostfixError> {
        let at_start = self
            .relay_domains_at_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let value = match at_start {
            Some(value) => value,
            None => {
                let out = self.run("postconf", &["-h".into(), "relay_domains".into()])?;
                out.trim_end_matches('\n').to_owned()
            }
        };
        // When relay_domains is not set, `-h` prints Postfix's default, an expression
        // (`${{$compatibility_level} <level {2} ? {$mydestination} : {}}`) that no list can be
        // rewritten from: use what it means instead. `postconf -n` tells a main.cf that sets
        // the same text (kept as it is) from one that does not set it at all.
        if !value.contains("$compatibility_level") {
            return Ok(value);
        }
        let explicit = self.run(
            "postconf",
            &["-n".into(), "-h".into(), "relay_domains".into()],
        )?;
        let explicit = explicit.trim_end_matches('\n');
        if !explicit.is_empty() {
            return Ok(explicit.to_owned());
        }
        let expanded = self.run(
            "postconf",
            &["-x".into(), "-h".into(), "relay_domains".into()],
        )?;
        Ok(if expanded.trim().is_empty() {
            String::new()
        } else {
            "$mydestination".to_owned()
        })
    }

    fn read_transport(&self) -> Result<Option<String>, PostfixError> {
        read_text(&self.settings.transport_file)
    }

    fn transport_map_is_fresh(&self) -> Result<bool, PostfixError> {
        map_is_fresh(&self.settings.transport_file, &self.transport_database())
    }

    fn relay_domains_table(&self) -> (String, PathBuf) {
        (self.map_type.clone(), self.relay_domains_map.clone())
    }

    fn read_relay_domains_map(&self) -> Result<Option<String>, PostfixError> {
        read_text(&self.relay_domains_map)
    }

    fn relay_domains_map_is_fresh(&self) -> Result<bool, PostfixError> {
        map_is_fresh(&self.relay_domains_map, &self.relay_domains_database())
    }

    fn relay_recipient_maps(&self) -> Result<String, PostfixError> {
        let at_start = self
            .relay_recipient_maps_at_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match at_start {
            Some(value) => Ok(value),
            None => self.postconf_value("relay_recipient_maps"),
        }
    }

    fn recipients_table(&self) -> (String, PathBuf) {
        (self.map_type.clone(), self.recipients_map.clone())
    }

    fn read_recipients_map(&self) -> Result<Option<String>, PostfixError> {
        read_text(&self.recipients_map)
    }

    fn recipients_map_header(&self) -> Option<String> {
        use std::io::Read;
        // As read_text: a link someone other than root planted is not followed, and nothing
        // but a regular file is opened.
        let file = relay_fs::open(Kind::MAP_SOURCE, &self.recipients_map).ok()??;
        let mut head = Vec::with_capacity(4096);
        file.take(4096).read_to_end(&mut head).ok()?;
        let line = head.split(|&b| b == b'\n').next()?;
        String::from_utf8(line.to_vec()).ok()
    }

    fn recipients_map_is_fresh(&self) -> Result<bool, PostfixError> {
        map_is_fresh(&self.recipients_map, &self.recipients_database())
    }

    fn lookup_recipients(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        let name = format!("{}:{}", self.map_type, self.recipients_map.display());
        self.lookup_in(&name, keys)
    }

    fn lookup_transport(&self, key: &str) -> Result<Option<String>, PostfixError> {
        self.lookup_one(&self.transport_map_name(), key)
    }

    fn lookup_transports(&self, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        self.lookup_in(&self.transport_map_name(), keys)
    }

    fn transport_map_name(&self) -> String {
        format!(
            "{}:{}",
            self.map_type,
            self.settings.transport_file.display()
        )
    }
}

impl PostfixCli {
    /// `postconf -e "NAME = VALUE"`; a value with a line break is refused.
    fn set_parameter(&self, name: &str, value: &str) -> Result<(), PostfixError> {
        if value.contains(['\n', '\r']) {
            return Err(PostfixError::Invalid {
                path: self.settings.config_dir.join("main.cf"),
                detail: format!("refusing a {name} value with a line break"),
            });
        }
        self.run("postconf", &["-e".into(), format!("{name} = {value}")])
            .map(|_| ())
    }

    /// `postmap -q KEY MAP`: the value, or `None` when the key is not found.
    fn lookup_one(&self, map: &str, key: &str) -> Result<Option<String>, PostfixError> {
        let args = ["-q".to_owned(), key.to_owned(), map.to_owned()];
        let (status, stdout, stderr) = self.run_status("postmap", &args)?;
        match status.code() {
            Some(0) => Ok(Some(stdout.trim_end_matches('\n').to_owned())),
            // postmap -q exits 1 when the key is not found (postmap(1)), and also on a fatal
            // error (a missing database, …), which it reports as `postmap: fatal: …`. Warnings
            // alone (e.g. `overriding earlier entry` for a parameter set twice in main.cf) do
            // not make a found-nothing an error.
            Some(1) if !is_fatal(&stderr) => {
                if !stderr.trim().is_empty() {
                    tracing::debug!("postmap -q {key}: {}", stderr.trim());
                }
                Ok(None)
            }
            _ => Err(failed(
                &self.command("postmap", &args),
                &status,
                &stdout,
                &stderr,
            )),
        }
    }

    /// One `postmap -q - MAP` for all the keys, written to its standard input; it prints
    /// `key<TAB>value` for each key found. Keys that are not single words are looked up one by
    /// one.
    fn lookup_in(&self, map: &str, keys: &[&str]) -> Result<Vec<Option<String>>, PostfixError> {
        if keys.len() < 2
            || keys
                .iter()
                .any(|k| k.is_empty() || k.contains(char::is_whitespace))
        {
            return keys.iter().map(|key| self.lookup_one(map, key)).collect();
        }
        let args = ["-q".to_owned(), "-".to_owned(), map.to_owned()];
        // Through a prefix the keys travel as one argument: a large list goes in parts.
        let limit = if self.settings.command_prefix.is_empty() {
            usize::MAX
        } else {
            prefix::LINES_LIMIT
        };
        let mut printed = String::new();
        for part in batches(keys, limit) {
            let mut input = part.join("\n");
            input.push('\n');
            let (status, stdout, stderr, shown) = self.run_with_lines("postmap", &args, &input)?;
            match status.code() {
                Some(0) => printed.push_str(&stdout),
                // Exit 1 alone is "none of the keys found", as for a single -q.
                Some(1) if !is_fatal(&stderr) => {}
                _ => return Err(failed_shown(shown, &status, &stdout, &stderr)),
            }
        }
        let found: std::collections::HashMap<&str, &str> = printed
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .collect();
        Ok(keys
            .iter()
            .map(|key| found.get(key).map(|value| (*value).to_owned()))
            .collect())
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
        self.install_map(&self.settings.transport_file, text)
    }

    fn rebuild_transport_map(&self) -> Result<(), PostfixError> {
        match self.read_transport()? {
            Some(text) => self.install_map(&self.settings.transport_file, &text),
            None => Ok(()),
        }
    }

    fn write_relay_domains_map(&self, text: &str) -> Result<(), PostfixError> {
        self.install_map(&self.relay_domains_map, text)
    }

    /// Runs the builds at once, one thread each: every postmap is a process of its own, and a
    /// million-entry table takes seconds.
    fn prepare_maps(
        &self,
        transport: Option<&str>,
        relay_domains_map: Option<&str>,
        recipients_map: Option<&str>,
    ) {
        let jobs: Vec<(&PathBuf, &str)> = [
            (&self.settings.transport_file, transport),
            (&self.relay_domains_map, relay_domains_map),
            (&self.recipients_map, recipients_map),
        ]
        .into_iter()
        .filter_map(|(source, text)| Some((source, text?)))
        .collect();
        // A build whose thread cannot start (a process limit) is simply not done ahead: its
        // write builds it then.
        let built: Vec<Staged> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .filter_map(|&(source, text)| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || self.build_map(source, text))
                        .inspect_err(|error| {
                            tracing::debug!(
                                "cannot start a thread to build {} ahead ({error}); its write \
                                 builds it",
                                source.display()
                            );
                        })
                        .ok()
                        .map(|handle| (source, text, handle))
                })
                .collect();
            handles
                .into_iter()
                .map(|(source, text, handle)| Staged {
                    source: source.clone(),
                    fingerprint: fingerprint(text),
                    built: handle.join().unwrap_or_else(|_| {
                        Err(PostfixError::Invalid {
                            path: source.clone(),
                            detail: "building the map stopped unexpectedly".into(),
                        })
                    }),
                })
                .collect()
        });
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        staged.retain(|old| built.iter().all(|new| new.source != old.source));
        staged.extend(built);
    }

    fn discard_prepared(&self) {
        // Dropping a build removes its directory.
        drop(std::mem::take(
            &mut *self
                .staged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ));
    }

    fn backup_relay_domains_map(&self, stamp: &str, text: &str) -> Result<PathBuf, PostfixError> {
        backup::write_relay_domains_map(&self.settings.backup_dir, stamp, text)
    }

    fn set_relay_domains(&self, value: &str) -> Result<(), PostfixError> {
        self.set_parameter("relay_domains", value)
    }

    fn write_recipients_map(&self, text: &str) -> Result<(), PostfixError> {
        self.install_map(&self.recipients_map, text)
    }

    fn set_relay_recipient_maps(&self, value: &str) -> Result<(), PostfixError> {
        self.set_parameter("relay_recipient_maps", value)
    }

    fn backup_recipients(
        &self,
        stamp: &str,
        relay_recipient_maps: &str,
        table: Option<&str>,
    ) -> Result<Vec<PathBuf>, PostfixError> {
        backup::write_recipients(
            &self.settings.backup_dir,
            stamp,
            relay_recipient_maps,
            table,
        )
    }

    fn reload(&self) -> Result<(), PostfixError> {
        let args = ["reload".to_owned()];
        let (status, stdout, stderr) = self.run_to_files("postfix", &args)?;
        if status.success() {
            return Ok(());
        }
        let error = failed(&self.command("postfix", &args), &status, &stdout, &stderr);
        // postfix-script logs its reason to the mail log, not to stderr: name the likely one.
        let running = self
            .run_status("postfix", &["status".into()])
            .is_ok_and(|(status, _, _)| status.success());
        Err(match error {
            // Through a prefix the exec client's own words come first (a container that is
            // not running says so), then what `postfix status` found.
            PostfixError::CommandFailed {
                command,
                status,
                stderr,
            } if !running && !self.settings.command_prefix.is_empty() => {
                PostfixError::CommandFailed {
                    command,
                    status,
                    stderr: format!(
                        "{stderr}; `postfix status` through POSTFIX_COMMAND_PREFIX fails too: \
                         is the container running, and Postfix in it?"
                    ),
                }
            }
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

/// Mode of a transport file or map database that did not exist before (Postfix's own
/// `postmap` default, whatever the umask).
const NEW_FILE_MODE: u32 = 0o644;

/// Whether `name`, in the directory of the map source `base`, is what a killed build of that
/// map left: a build directory (`.BASE.RANDOM.relay-sync.tmp`), or a fixed name of versions
/// before them: `.BASE.relay-sync.tmp`, its database (`….tmp.db`, `.lmdb`, `.cdb`), Berkeley
/// DB's creation file (`__db.` and the database's name) or cdb's temporary (`….cdb.tmp`).
fn is_leftover_of(name: &str, base: &str) -> bool {
    let fixed = format!(".{base}.relay-sync.tmp");
    let unprefixed = name.strip_prefix("__db.").unwrap_or(name);
    let fixed_name = unprefixed == fixed
        || unprefixed
            .strip_prefix(fixed.as_str())
            .is_some_and(|rest| rest.starts_with('.'));
    fixed_name || relay_fs::temp_name_base(name) == Some(base)
}

/// The `n` lines `postconf -h NAME…` prints for `n` names, one value each; `None` for any
/// other number of lines (a wrapper that prints a banner, a truncated answer).
fn lines_for(out: &str, n: usize) -> Option<Vec<String>> {
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    (lines.len() == n).then_some(lines)
}

/// Whether a Postfix command's stderr reports an error rather than only warnings: Postfix
/// prefixes every message with its severity (`postmap: fatal: …`, `postmap: warning: …`).
fn is_fatal(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        let line = line.trim();
        !line.is_empty()
            && !line.contains(": warning: ")
            && !line.starts_with("warning: ")
            && !line.contains(": info: ")
    })
}

/// A map source's contents, or `None` when it does not exist. A symbolic link is read only
/// when relay-sync would also write through it ([`relay_fs::trusted_link`]), and only a
/// regular file is opened ([`Kind::MAP_SOURCE`]).
fn read_text(path: &Path) -> Result<Option<String>, PostfixError> {
    match relay_fs::read(Kind::MAP_SOURCE, path)? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PostfixError::Invalid {
                path: path.to_owned(),
                detail: "not UTF-8 text; fix the file's encoding by hand".into(),
            }),
        None => Ok(None),
    }
}

/// Whether `database` exists and is not older than `source`; a missing source is fresh.
fn map_is_fresh(source: &Path, database: &Path) -> Result<bool, PostfixError> {
    let mtime = |path: &Path| match fs::metadata(path) {
        Ok(meta) => meta
            .modified()
            .map(Some)
            .map_err(|source| io("inspect", path, source)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io("inspect", path, source)),
    };
    let Some(source) = mtime(source)? else {
        return Ok(true);
    };
    Ok(mtime(database)?.is_some_and(|db| db >= source))
}

/// `transport` + `.db`, `.lmdb`, `.cdb`.
fn database_of(source: &Path, suffix: &str) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// `keys` in consecutive parts of at most `limit` bytes (a key and its line break each), every
/// part holding at least one key.
fn batches<'k>(keys: &'k [&'k str], limit: usize) -> Vec<&'k [&'k str]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (index, key) in keys.iter().enumerate() {
        let size = key.len() + 1;
        if index > start && bytes.saturating_add(size) > limit {
            parts.push(&keys[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < keys.len() {
        parts.push(&keys[start..]);
    }
    parts
}

fn failed(
    argv: &[String],
    status: &std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
) -> PostfixError {
    failed_shown(argv.join(" "), status, stdout, stderr)
}

/// [`failed`] for a command named as `shown`.
fn failed_shown(
    shown: String,
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
        command: shown,
        status: status.to_string(),
        stderr: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postconf_answers_are_one_line_per_name_or_nothing() {
        assert_eq!(
            lines_for("hash:/etc/postfix/transport\nhash\n\n", 3),
            Some(vec![
                "hash:/etc/postfix/transport".to_owned(),
                "hash".to_owned(),
                String::new(),
            ])
        );
        // A wrapper's banner before the answer would make `hash` the transport_maps and the
        // transport_maps value the map type.
        assert_eq!(
            lines_for("postconf wrapper v1\nx\nhash\na.example\n", 3),
            None
        );
        assert_eq!(lines_for("x\nhash\n", 3), None);
        assert_eq!(lines_for("x\nhash\na.example\n", 4), None);
    }

    #[test]
    fn only_non_warning_lines_make_stderr_fatal() {
        assert!(!is_fatal(""));
        assert!(!is_fatal(
            "postmap: warning: /etc/postfix/main.cf, line 3: overriding earlier entry: mydomain=x\n"
        ));
        assert!(is_fatal(
            "postmap: fatal: open database /etc/postfix/transport.db: No such file or directory\n"
        ));
        assert!(is_fatal(
            "BDB0002 __fop_file_setup:  Retry limit (100) exceeded\npostmap: fatal: open database x: File exists\n"
        ));
    }

    #[test]
    fn batches_hold_every_key_once_in_order_within_the_limit() {
        let keys = ["a.example", "bb.example", "c.example", "dddd.example"];
        assert_eq!(batches(&keys, usize::MAX), vec![&keys[..]]);
        let parts = batches(&keys, 22);
        assert_eq!(parts, vec![&keys[..2], &keys[2..3], &keys[3..]]);
        // A key longer than the limit still goes, alone.
        assert_eq!(batches(&keys, 1).len(), 4);
        assert!(batches(&[], 10).is_empty());
    }

    #[test]
    fn leftovers_are_relay_syncs_names_for_this_map_only() {
        for ours in [
            ".transport.Ab3dE6gH9jK1.relay-sync.tmp",
            ".transport.relay-sync.tmp",
            ".transport.relay-sync.tmp.db",
            "__db..transport.relay-sync.tmp.db",
            ".transport.relay-sync.tmp.cdb.tmp",
        ] {
            assert!(is_leftover_of(ours, "transport"), "{ours}");
        }
        for foreign in [
            "transport",
            "transport.db",
            ".transport.bak",
            ".transport.relay-sync.tmpx",
            ".relay_domains.Ab3dE6gH9jK1.relay-sync.tmp",
            ".transport.Ab3dE6gH9jK1.relay-sync.tmp.db.keep",
        ] {
            assert!(!is_leftover_of(foreign, "transport"), "{foreign}");
        }
    }
}
