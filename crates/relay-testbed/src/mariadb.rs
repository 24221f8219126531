//! A private, throwaway MariaDB server on 127.0.0.1.
//!
//! Each [`MariaDb`] gets its own temporary directory (data directory, socket, pid file, error log
//! and, for [`MariaDb::start_with_tls`], a test CA and server certificate), a free loopback port,
//! and a `root` account without password that is reachable over the socket only. The system's
//! MariaDB, its `my.cnf` and its data are never touched: every program runs with `--no-defaults`.
//!
//! Measured on a 2-core VM with MariaDB 10.11: `mariadb-install-db` takes 0.8–1 s, so the first
//! [`MariaDb::start`] of a process takes about 1–1.3 s; it keeps the result as a template, and
//! every later start copies it and takes about 0.25–0.3 s (0.35–0.45 s with TLS, certificates
//! included). The server itself is ready about 0.12 s after it was spawned, also in
//! [`MariaDb::start_again`]; [`MariaDb::stop`] takes about 50 ms, drop about 70 ms. Tests that
//! only read share one server per process through [`MariaDb::shared`].

use std::ffi::{CString, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const CLIENT: &str = "/usr/bin/mariadb";
const OPENSSL: &str = "/usr/bin/openssl";

/// How long the server may take to accept `SELECT 1` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness and shutdown are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Server settings shared by `mariadb-install-db` (which passes unknown options on to the
/// bootstrap server) and every start of the server. A throwaway instance needs neither a large
/// buffer pool nor durability against power loss, and small InnoDB files are quicker to create.
/// `innodb_flush_log_at_trx_commit = 2` still survives a killed server (the log is in the page
/// cache), which tests of `kill` and `start_again` rely on.
const SERVER_TUNING: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-data-file-path=ibdata1:4M:autoextend",
    "--innodb-autoextend-increment=4",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
    // Debian's packaged defaults, which `--no-defaults` would otherwise drop in favour of latin1.
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// A private MariaDB server listening on 127.0.0.1 and on a Unix socket, stopped and removed on
/// drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let db = relay_testbed::MariaDb::start()?;
/// db.load_fixtures()?;
/// let names = db.sql("SELECT name FROM mailserver_usermgmt.domains WHERE enabled = 1")?;
/// assert!(names.lines().any(|name| name == "example.com"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MariaDb {
    port: u16,
    datadir: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    error_log: PathBuf,
    tls: Option<TlsFiles>,
    /// The address it listens on: 127.0.0.1, or the address inside its namespace.
    host: String,
    /// Options after the testbed's own (replication settings, for instance).
    extra_args: Vec<String>,
    /// The network namespace it runs in, when [`ServerOptions::in_network_namespace`] asked
    /// for one; removed after the server has stopped.
    netns: Option<crate::NetNs>,
    /// The server's owner when the tests run as root (`mariadbd` refuses to run as root).
    run_as: Option<Account>,
    child: Mutex<Option<Child>>,
    /// Declared last so that it is removed after the server has been stopped.
    dir: tempfile::TempDir,
}

/// How [`MariaDb::start_with`] starts a server: [`MariaDb::start`]'s defaults, with TLS, in a
/// network namespace of its own, or with more server options.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use relay_testbed::{MariaDb, ServerOptions};
/// let db = MariaDb::start_with(ServerOptions::new().in_network_namespace().arg("--server-id=7"))?;
/// let ns = db.netns().expect("asked for one");
/// ns.link_down()?; // connections to db.host() hang until link_up
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    tls: bool,
    netns: bool,
    args: Vec<String>,
}

impl ServerOptions {
    /// [`MariaDb::start`]'s settings: no TLS, 127.0.0.1, nothing added.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// TLS as [`MariaDb::start_with_tls`] sets it up.
    pub fn tls(mut self) -> ServerOptions {
        self.tls = true;
        self
    }

    /// Runs the server inside a [`crate::NetNs`] of its own, listening on the namespace's
    /// address ([`MariaDb::host`]) instead of 127.0.0.1; its Unix socket works as before.
    /// Connections from the host arrive from [`crate::NetNs::host_address`], which a MariaDB
    /// account must name.
    pub fn in_network_namespace(mut self) -> ServerOptions {
        self.netns = true;
        self
    }

    /// One more server option, given after the testbed's own (so it wins over them).
    pub fn arg(mut self, arg: impl Into<String>) -> ServerOptions {
        self.args.push(arg.into());
        self
    }
}

/// The certificates of a TLS-enabled instance.
#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    untrusted_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The CAs as a client is given them: root's copies, since relay-sync refuses a
    /// `DB_TLS_CA` anyone but root may change (the server's copies belong to its account).
    client_ca: PathBuf,
    client_untrusted_ca: PathBuf,
}

/// A system account: name, uid and gid.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl MariaDb {
    /// Creates a fresh data directory and starts a server on a free port of 127.0.0.1, without
    /// TLS, and waits until it answers `SELECT 1` (at most 30 s).
    ///
    /// The data directory holds the system tables only; call [`MariaDb::load_fixtures`] for the
    /// admin panel's schema, the `relay_sync` user and the seed rows.
    pub fn start() -> anyhow::Result<MariaDb> {
        Self::launch(ServerOptions::new())
    }

    /// Like [`MariaDb::start`], with `options`.
    pub fn start_with(options: ServerOptions) -> anyhow::Result<MariaDb> {
        Self::launch(options)
    }

    /// Like [`MariaDb::start`], with TLS enabled: a throwaway CA ([`MariaDb::tls_ca`]) signs a
    /// server certificate that names `localhost` only, so a client connecting to `127.0.0.1` sees
    /// a trusted certificate for another name, and one connecting to `localhost` sees a fully
    /// valid one. The certificates are made with `openssl` (EC P-256, valid for a year).
    pub fn start_with_tls() -> anyhow::Result<MariaDb> {
        Self::launch(ServerOptions::new().tls())
    }

    /// A server shared by every caller in this process, started with [`MariaDb::start`] on first
    /// use with the fixtures loaded, and killed and removed when the process exits.
    ///
    /// Only for tests that read: a test that changes rows, users or grants, or needs to stop or
    /// restart the server, starts its own. A failed start is reported to every caller.
    pub fn shared() -> anyhow::Result<&'static MariaDb> {
        static SHARED: OnceLock<Result<MariaDb, String>> = OnceLock::new();
        shared_instance(&SHARED, false)
    }

    /// Like [`MariaDb::shared`], for a server started with [`MariaDb::start_with_tls`].
    pub fn shared_with_tls() -> anyhow::Result<&'static MariaDb> {
        static SHARED_TLS: OnceLock<Result<MariaDb, String>> = OnceLock::new();
        shared_instance(&SHARED_TLS, true)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket, where `root` logs in without a password.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The address the server listens on: `"127.0.0.1"`, or the address inside its network
    /// namespace ([`ServerOptions::in_network_namespace`]).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The network namespace the server runs in, if it was started in one.
    pub fn netns(&self) -> Option<&crate::NetNs> {
        self.netns.as_ref()
    }

    /// The data directory (owned by `mysql` when the tests run as root).
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The server's error log, for diagnostics.
    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// The CA certificate (PEM) that signed the server certificate; `None` without TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.client_ca.as_path())
    }

    /// A CA certificate (PEM) that did not sign the server certificate, for tests that expect
    /// verification to fail; `None` without TLS.
    pub fn tls_untrusted_ca(&self) -> Option<&Path> {
        self.tls
            .as_ref()
            .map(|tls| tls.client_untrusted_ca.as_path())
    }

    /// Runs `sql` (one or more statements) as `root` over the socket with the `mariadb` client
    /// in batch mode (`-N -B`: no column names, tab-separated) and returns its standard output.
    ///
    /// The statements go to the client's standard input, so their size is not limited by the
    /// command line. No database is selected: name tables as `database.table` or start with
    /// `USE`. A failure carries the client's standard error.
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        self.run_client(sql, true)
    }

    /// Like [`MariaDb::sql`], with column names: for `SHOW … \G`, whose vertical output then
    /// names each field (`Seconds_Behind_Master: 0`).
    pub(crate) fn sql_with_names(&self, sql: &str) -> anyhow::Result<String> {
        self.run_client(sql, false)
    }

    fn run_client(&self, sql: &str, skip_names: bool) -> anyhow::Result<String> {
        let mut command = self.client_command();
        if !skip_names {
            command.arg("--column-names");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {CLIENT}"))?;
        // Writing and reading on one thread could deadlock once both pipes are full, so the
        // statements are written by a helper thread.
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("the mariadb client has no standard input"))?;
        let input = sql.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child
            .wait_with_output()
            .with_context(|| format!("cannot wait for {CLIENT}"))?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("the thread writing to the mariadb client panicked"))?;
        if !output.status.success() {
            bail!(
                "mariadb client failed ({}): {}\nSQL: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                abbreviate(sql)
            );
        }
        written.context("cannot write SQL to the mariadb client")?;
        String::from_utf8(output.stdout).context("the mariadb client printed non-UTF-8 output")
    }

    /// Runs the SQL file at `path` like [`MariaDb::sql`].
    pub fn sql_file(&self, path: &Path) -> anyhow::Result<String> {
        let sql =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.sql(&sql)
            .with_context(|| format!("cannot run {}", path.display()))
    }

    /// Loads `fixtures/sql/schema.sql` (database `mailserver_usermgmt`, tables `domains` and
    /// `users`, user `relay_sync`@`127.0.0.1` with password `relay-sync-test-pw` and `SELECT` on
    /// `domains` only) and then `fixtures/sql/seed.sql` (replaces all rows of both tables with
    /// the seed).
    ///
    /// Running it again resets the rows to the seed.
    pub fn load_fixtures(&self) -> anyhow::Result<()> {
        let dir = crate::fixtures_dir().join("sql");
        self.sql_file(&dir.join("schema.sql"))?;
        self.sql_file(&dir.join("seed.sql"))?;
        Ok(())
    }

    /// Applies the opt-in grant for recipient validation to the fixtures' user: `SELECT (email,
    /// enabled)` on `mailserver_usermgmt.users`. The statements are the commented-out opt-in
    /// block of `packaging/create-user.sql`, uncommented and given the user's host
    /// (`127.0.0.1`), so the tests exercise the SQL that ships. Call after
    /// [`MariaDb::load_fixtures`].
    pub fn grant_recipients(&self) -> anyhow::Result<()> {
        let path = crate::packaging_dir().join("create-user.sql");
        let sql =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let grants = opt_in_grants(&sql);
        if grants.is_empty() {
            bail!("{} has no commented-out opt-in GRANT", path.display());
        }
        self.sql(&grants.replace("GATEWAY_IP", "127.0.0.1"))
            .with_context(|| format!("cannot run the opt-in block of {}", path.display()))?;
        Ok(())
    }

    /// Starts the server's general log (into the `mysql.general_log` table), empty.
    pub fn start_general_log(&self) -> anyhow::Result<()> {
        self.sql(
            "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 0; \
             TRUNCATE mysql.general_log; SET GLOBAL general_log = 1;",
        )
        .map(drop)
    }

    /// Stops the general log and returns what the sessions of `user` sent, one
    /// `COMMAND_TYPE\tARGUMENT` line each, oldest first (e.g. `Connect`, `Query`, `Quit`).
    ///
    /// The server logs `Quit` when it reads it, which may be just after the client exited, so
    /// this waits up to 5 s for one.
    pub fn general_log_of(&self, user: &str) -> anyhow::Result<String> {
        let query = format!(
            "SELECT command_type, argument FROM mysql.general_log \
             WHERE thread_id IN (SELECT thread_id FROM mysql.general_log \
                                 WHERE command_type = 'Connect' AND argument LIKE '{user}@%') \
             ORDER BY event_time"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let log = loop {
            let log = self.sql(&query)?;
            if log.contains("Quit") || Instant::now() > deadline {
                break log;
            }
            sleep(Duration::from_millis(50));
        };
        self.sql("SET GLOBAL general_log = 0;")?;
        Ok(log)
    }

    /// Whether the server process is still alive.
    pub fn is_running(&self) -> bool {
        match self.lock_child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Shuts the server down cleanly: sends SIGTERM and waits until the process has exited, at
    /// most 30 s, after which it is killed and an error returned. Does nothing when the server
    /// is not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.lock_child().take() else {
            return Ok(());
        };
        terminate(&mut child, STOP_TIMEOUT)
    }

    /// Kills the server with SIGKILL, as a crash or power loss would, and reaps it. Does
    /// nothing when the server is not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.lock_child().take() else {
            return Ok(());
        };
        kill_and_reap(&mut child)
    }

    /// Starts the server again on the same data directory and port after [`MariaDb::stop`] or
    /// [`MariaDb::kill`], and waits until it is ready. Fails if it is still running.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("mariadbd on port {} is still running", self.port);
        }
        self.spawn_server()
    }

    fn launch(options: ServerOptions) -> anyhow::Result<MariaDb> {
        let tls = options.tls;
        crate::require(MARIADBD, "mariadb-server")?;
        crate::require(INSTALL_DB, "mariadb-server")?;
        crate::require(CLIENT, "mariadb-client")?;
        if tls {
            crate::require(OPENSSL, "openssl")?;
        }

        let dir = server_tempdir("relay-testbed-mariadb-")?;
        let run_as = server_account()?;

        let datadir = dir.path().join("data");
        copy_template(&datadir, run_as.as_ref())?;
        let run_dir = dir.path().join("run");
        fs::create_dir(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
        give_to(run_as.as_ref(), &run_dir)?;

        let tls = if tls {
            Some(make_certificates(&dir.path().join("tls"), run_as.as_ref())?)
        } else {
            None
        };

        let netns = if options.netns {
            Some(crate::NetNs::create()?)
        } else {
            None
        };
        let mut db = MariaDb {
            port: 0,
            host: netns
                .as_ref()
                .map_or_else(|| "127.0.0.1".to_owned(), |ns| ns.address().to_string()),
            extra_args: options.args,
            netns,
            socket: run_dir.join("mariadbd.sock"),
            pid_file: run_dir.join("mariadbd.pid"),
            error_log: run_dir.join("error.log"),
            datadir,
            tls,
            run_as,
            child: Mutex::new(None),
            dir,
        };
        // The port was free when `free_port` looked; someone may have taken it since.
        let mut attempts = 0;
        loop {
            attempts += 1;
            db.port = crate::free_port()?;
            match db.spawn_server() {
                Ok(()) => return Ok(db),
                Err(_)
                    if attempts < 3 && db.error_log_tail().contains("Address already in use") =>
                {
                    // Start the next attempt's error log afresh.
                    let _ = fs::remove_file(&db.error_log);
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn_server(&mut self) -> anyhow::Result<()> {
        let mut args: Vec<OsString> = vec![
            "--no-defaults".into(),
            flag("--datadir=", &self.datadir),
            flag("--socket=", &self.socket),
            flag("--pid-file=", &self.pid_file),
            flag("--log-error=", &self.error_log),
            format!("--port={}", self.port).into(),
            format!("--bind-address={}", self.host).into(),
            "--skip-name-resolve".into(),
            // Tests provoke failed handshakes on purpose; they must never get 127.0.0.1 blocked.
            "--max-connect-errors=1000000".into(),
        ];
        if let Some(account) = &self.run_as {
            args.push(format!("--user={}", account.name).into());
        }
        args.extend(SERVER_TUNING.iter().map(OsString::from));
        if let Some(tls) = &self.tls {
            args.push(flag("--ssl-ca=", &tls.ca));
            args.push(flag("--ssl-cert=", &tls.cert));
            args.push(flag("--ssl-key=", &tls.key));
        }
        args.extend(self.extra_args.iter().map(OsString::from));

        let started = Instant::now();
        let mut command = match &self.netns {
            Some(ns) => ns.command(MARIADBD),
            None => Command::new(MARIADBD),
        };
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {MARIADBD}"))?;
        *self.lock_child() = Some(child);
        self.wait_ready(started)
    }

    /// Polls `SELECT 1` over the socket until it works, the server exits, or time runs out.
    fn wait_ready(&self, started: Instant) -> anyhow::Result<()> {
        loop {
            let exited = match self.lock_child().as_mut() {
                Some(child) => child.try_wait().context("cannot poll mariadbd")?,
                None => bail!("mariadbd is not running"),
            };
            if let Some(status) = exited {
                self.lock_child().take();
                bail!(
                    "mariadbd on port {} exited with {status} before it was ready; end of {}:\n{}",
                    self.port,
                    self.error_log.display(),
                    self.error_log_tail()
                );
            }
            if self.socket.exists() && self.select_one() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let tail = self.error_log_tail();
                if let Some(mut child) = self.lock_child().take() {
                    // Already failing; the kill's own outcome adds nothing.
                    let _ = kill_and_reap(&mut child);
                }
                bail!(
                    "mariadbd on port {} was not ready after {} s; end of {}:\n{tail}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.error_log.display()
                );
            }
            sleep(POLL_INTERVAL);
        }
    }

    fn select_one(&self) -> bool {
        self.client_command()
            .args(["-e", "SELECT 1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn client_command(&self) -> Command {
        let mut command = Command::new(CLIENT);
        command
            .arg("--no-defaults")
            .arg("-N")
            .arg("-B")
            .arg("--user=root")
            .arg(flag("--socket=", &self.socket))
            .arg("--default-character-set=utf8mb4");
        command
    }

    /// The last lines of the server's error log, or why it could not be read.
    fn error_log_tail(&self) -> String {
        match fs::read(&self.error_log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            Err(err) => format!("({} unreadable: {err})", self.error_log.display()),
        }
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the `Option` intact, so a poisoned lock is
        // still usable.
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Kills the server and removes its directory, for shared instances that are never dropped.
    /// Runs at process exit and therefore never panics and never blocks on the lock.
    fn kill_and_remove_now(&self) {
        if let Ok(mut child) = self.child.try_lock() {
            if let Some(child) = child.as_mut() {
                let _ = kill_and_reap(child);
            }
        }
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; `terminate` kills what does not stop in time.
        let _ = self.stop();
    }
}

fn shared_instance(
    slot: &'static OnceLock<Result<MariaDb, String>>,
    tls: bool,
) -> anyhow::Result<&'static MariaDb> {
    let instance = slot.get_or_init(|| {
        MariaDb::launch(if tls {
            ServerOptions::new().tls()
        } else {
            ServerOptions::new()
        })
        .and_then(|db| {
            db.load_fixtures()?;
            Ok(db)
        })
        .map_err(|err| format!("{err:#}"))
    });
    match instance {
        Ok(db) => {
            clean_up_at_exit(db);
            Ok(db)
        }
        Err(err) => Err(anyhow!("the shared MariaDB did not start: {err}")),
    }
}

/// What the exit handler removes: shared servers and the template data directory, which are
/// statics and therefore never dropped. A static because the handler cannot capture anything.
static AT_EXIT: Mutex<AtExit> = Mutex::new(AtExit {
    servers: Vec::new(),
    dirs: Vec::new(),
});

struct AtExit {
    servers: Vec<&'static MariaDb>,
    dirs: Vec<PathBuf>,
}

/// Puts a shared instance on the exit handler's list (once).
fn clean_up_at_exit(db: &'static MariaDb) {
    let mut at_exit = AT_EXIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !at_exit.servers.iter().any(|known| std::ptr::eq(*known, db)) {
        at_exit.servers.push(db);
    }
    drop(at_exit);
    register_exit_handler();
}

/// Puts a directory on the exit handler's list.
fn remove_dir_at_exit(dir: PathBuf) {
    AT_EXIT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .dirs
        .push(dir);
    register_exit_handler();
}

fn register_exit_handler() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `atexit` only stores the function pointer; `clean_up_now` is an
        // `extern "C"` function that does not unwind.
        unsafe {
            libc::atexit(clean_up_now);
        }
    });
}

extern "C" fn clean_up_now() {
    // The test harness exits after all tests have finished, so nothing else holds the lock; if
    // something does, leaking the servers beats blocking the exit.
    let Ok(at_exit) = AT_EXIT.try_lock() else {
        return;
    };
    for db in &at_exit.servers {
        db.kill_and_remove_now();
    }
    for dir in &at_exit.dirs {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Sends SIGTERM and waits for the exit; kills the process if it takes longer than `timeout`.
fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our own unreaped child,
    // so it cannot have been reused by another process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let err = std::io::Error::last_os_error();
        kill_and_reap(child)?;
        bail!("cannot send SIGTERM to mariadbd (pid {pid}): {err}");
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        sleep(POLL_INTERVAL);
    }
    kill_and_reap(child)?;
    bail!(
        "mariadbd (pid {pid}) did not stop within {} s and was killed",
        timeout.as_secs()
    )
}

fn kill_and_reap(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_none() {
        child.kill().context("cannot kill mariadbd")?;
    }
    child.wait().context("cannot reap mariadbd")?;
    Ok(())
}

/// `mariadbd` refuses to run as root: when the tests run as root, the server runs as `mysql`.
fn server_account() -> anyhow::Result<Option<Account>> {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("mysql").context("account name")?;
    // SAFETY: `getpwnam` receives a valid C string; the returned record is read at once, before
    // any other call that could overwrite it. Tests are threads of one process, and the other
    // users of this static buffer in this process are other calls of this function, which
    // read the same record.
    let account = unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            None
        } else {
            Some(((*entry).pw_uid, (*entry).pw_gid))
        }
    };
    match account {
        Some((uid, gid)) => Ok(Some(Account {
            name: "mysql".to_owned(),
            uid,
            gid,
        })),
        None => bail!(
            "there is no `mysql` account to run mariadbd as: install it with \
             `apt-get install -y mariadb-server`"
        ),
    }
}

/// Hands `path` to the server's account (when running as root).
fn give_to(account: Option<&Account>, path: &Path) -> anyhow::Result<()> {
    if let Some(account) = account {
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
            .with_context(|| format!("cannot chown {} to {}", path.display(), account.name))?;
    }
    Ok(())
}

/// A temporary directory that the server's account can traverse (but not list).
fn server_tempdir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temporary directory")?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot chmod {}", dir.path().display()))?;
    Ok(dir)
}

/// Creates `datadir` as a copy of this process's template data directory, which
/// `mariadb-install-db` makes on first use.
///
/// `mariadb-install-db` takes about 0.8 s, most of it loading the help tables and the `sys`
/// schema; copying its result takes about 0.15 s. So only the first server of a test process
/// pays for it. The template is removed when the process exits.
fn copy_template(datadir: &Path, run_as: Option<&Account>) -> anyhow::Result<()> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let template = TEMPLATE
        .get_or_init(|| make_template(run_as).map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow!("{err}"))?;
    // `cp -a` keeps the owner (`mysql`) and modes that the server expects.
    let output = Command::new("cp")
        .arg("-a")
        .arg(template)
        .arg(datadir)
        .stdin(Stdio::null())
        .output()
        .context("cannot run cp")?;
    check("cp -a (MariaDB template data directory)", &output)
}

fn make_template(run_as: Option<&Account>) -> anyhow::Result<PathBuf> {
    let dir = server_tempdir("relay-testbed-mariadb-template-")?;
    let datadir = dir.path().join("data");
    fs::create_dir(&datadir).with_context(|| format!("cannot create {}", datadir.display()))?;
    give_to(run_as, &datadir)?;
    install_db(&datadir, run_as)?;
    let dir = dir.keep();
    remove_dir_at_exit(dir.clone());
    Ok(datadir)
}

fn install_db(datadir: &Path, run_as: Option<&Account>) -> anyhow::Result<()> {
    let mut command = Command::new(INSTALL_DB);
    command
        .arg("--no-defaults")
        .arg(flag("--datadir=", datadir))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .args(SERVER_TUNING);
    if let Some(account) = run_as {
        command.arg(format!("--user={}", account.name));
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {INSTALL_DB}"))?;
    check(INSTALL_DB, &output)
}

/// Makes a CA, a server certificate for `localhost` signed by it, and an unrelated second CA.
fn make_certificates(dir: &Path, run_as: Option<&Account>) -> anyhow::Result<TlsFiles> {
    fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let client = dir.with_file_name("client-tls");
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        untrusted_ca: dir.join("untrusted-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_ca: client.join("ca.pem"),
        client_untrusted_ca: client.join("untrusted-ca.pem"),
    };
    let ca_key = dir.join("ca-key.pem");
    let csr = dir.join("server.csr");
    let extensions = dir.join("server.ext");
    fs::write(
        &extensions,
        "basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost\n",
    )
    .with_context(|| format!("cannot write {}", extensions.display()))?;

    for (key, cert, name) in [
        (&ca_key, &files.ca, "relay-sync test CA"),
        (
            &dir.join("untrusted-ca-key.pem"),
            &files.untrusted_ca,
            "relay-sync untrusted test CA",
        ),
    ] {
        openssl(&[
            "req".into(),
            "-x509".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:prime256v1".into(),
            "-nodes".into(),
            "-days".into(),
            "365".into(),
            "-subj".into(),
            format!("/CN={name}").into(),
            "-addext".into(),
            "basicConstraints=critical,CA:TRUE".into(),
            "-addext".into(),
            "keyUsage=critical,keyCertSign,cRLSign".into(),
            "-keyout".into(),
            key.into(),
            "-out".into(),
            cert.into(),
        ])?;
    }
    openssl(&[
        "req".into(),
        "-new".into(),
        "-newkey".into(),
        "ec".into(),
        "-pkeyopt".into(),
        "ec_paramgen_curve:prime256v1".into(),
        "-nodes".into(),
        "-subj".into(),
        "/CN=localhost".into(),
        "-keyout".into(),
        (&files.key).into(),
        "-out".into(),
        (&csr).into(),
    ])?;
    openssl(&[
        "x509".into(),
        "-req".into(),
        "-in".into(),
        csr.into(),
        "-CA".into(),
        (&files.ca).into(),
        "-CAkey".into(),
        ca_key.into(),
        "-set_serial".into(),
        "2".into(),
        "-days".into(),
        "365".into(),
        "-extfile".into(),
        extensions.into(),
        "-out".into(),
        (&files.cert).into(),
    ])?;

    // The server reads its key and certificates after it has switched to its own account.
    fs::create_dir(&client).with_context(|| format!("cannot create {}", client.display()))?;
    for (from, to) in [
        (&files.ca, &files.client_ca),
        (&files.untrusted_ca, &files.client_untrusted_ca),
    ] {
        fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    }
    give_to(run_as, dir)?;
    for path in [&files.ca, &files.cert, &files.key] {
        give_to(run_as, path)?;
    }
    Ok(files)
}

fn openssl(args: &[OsString]) -> anyhow::Result<()> {
    let output = Command::new(OPENSSL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {OPENSSL}"))?;
    check(OPENSSL, &output)
}

fn check(program: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{program} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// `--name=` followed by a path, without assuming the path is UTF-8.
fn flag(name: &str, path: &Path) -> OsString {
    let mut flag = OsString::from(name);
    flag.push(path);
    flag
}

/// The first few hundred characters of `sql`, for error messages.
fn abbreviate(sql: &str) -> String {
    const LIMIT: usize = 300;
    match sql.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{} … ({} more bytes)", &sql[..cut], sql.len() - cut),
        None => sql.to_owned(),
    }
}

/// The command types of a [`MariaDb::general_log_of`] answer, in order (e.g. `Connect`,
/// `Query`, `Quit`).
pub fn command_types(general_log: &str) -> Vec<&str> {
    general_log
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default())
        .collect()
}

/// The commented-out `GRANT` statements after the line that starts the opt-in block of
/// `create-user.sql`, uncommented, one a line.
fn opt_in_grants(sql: &str) -> String {
    sql.lines()
        .skip_while(|line| !line.starts_with("-- Opt-in"))
        .filter_map(|line| line.strip_prefix("-- GRANT "))
        .map(|grant| format!("GRANT {grant}\n"))
        .collect()
}

#[cfg(test)]
mod opt_in_tests {
    use super::opt_in_grants;

    #[test]
    fn the_opt_in_block_of_create_user_sql_is_one_column_limited_grant() {
        let path = crate::packaging_dir().join("create-user.sql");
        let sql = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            opt_in_grants(&sql),
            "GRANT SELECT (email, enabled) ON mailserver_usermgmt.users TO 'relay_sync'@'GATEWAY_IP';\n"
        );
    }
}
