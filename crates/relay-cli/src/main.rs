//! `relay-sync`: keeps a Postfix MX gateway's `relay_domains` and transport map in step with the
//! domains an admin panel keeps in MariaDB.
//!
//! This binary is glue: it parses arguments and the config file into typed settings, sets up
//! logging and the run lock, hands the work to `relay-engine`, and returns the exit code that the
//! outcome carries (SPEC §8, derived in one place: `relay_engine::Outcome::exit_code`).

mod alert;
mod check;
mod config;
mod failures;
mod lock;
mod logging;
mod metrics;
mod report;
mod rollback;
mod shell;
mod status;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relay_core::{DomainName, GuardSettings, NextHop};
use relay_db::{DomainSource, MariaDbSource};
use relay_engine::{Outcome, SyncSettings};
use relay_postfix::{PostfixCli, PostfixError};

use crate::config::{Config, RelayTransport};
use crate::logging::StderrMode;

/// Exit codes that do not come from a run's outcome (SPEC §8).
const EXIT_USAGE: u8 = 2;
const EXIT_INTERNAL: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "relay-sync",
    version,
    about = "Keep Postfix relay_domains and transport in step with the domains in MariaDB",
    long_about = "Keep Postfix relay_domains and the transport map in step with the enabled \
domains of the admin panel's MariaDB. Run from cron every 5 minutes. Exit codes: 0 synced or \
nothing to do, 1 internal error, 2 usage or configuration error, 3 database unreachable \
(configuration kept), 4 refused by the safety guard (configuration kept), 5 a step failed and \
was rolled back, 6 critical: reload or rollback failed, manual intervention required."
)]
struct Cli {
    /// Configuration file (KEY=VALUE lines; default /opt/mailserver/config/relay-sync.conf);
    /// `RELAY_SYNC_<KEY>` environment variables override it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Also log DEBUG lines (each Postfix command run and how long it took, cache and TLS
    /// fallbacks) to the log file, and to stderr on a terminal.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sync: SyncArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one sync (the default when no command is given).
    Sync(SyncArgs),
    /// Check that this host is ready to sync.
    ///
    /// Checks the config file and its permissions, the password source, the database and the
    /// DB user's grants (a loud warning when they allow more than SELECT on the domains table),
    /// the Postfix commands, that transport_maps names TRANSPORT_FILE, and that every file and
    /// directory relay-sync writes is writable. Changes nothing. Exits 1 when a check fails.
    Check(OutputArgs),
    /// Show the last result, the failure streak, the managed domains and the backups.
    ///
    /// Reads files only (STATE_DIR, the transport file, BACKUP_DIR): it answers when the
    /// database and Postfix are down, and never shows a secret.
    Status(OutputArgs),
    /// Restore a backup generation and reload Postfix.
    ///
    /// Restores the transport file and relay_domains of the newest generation (or --to STAMP),
    /// then reloads Postfix. Takes the run lock and backs up the current state first, so a
    /// rollback can itself be rolled back. The next sync applies the database again.
    Rollback(RollbackArgs),
    /// List the backup generations in BACKUP_DIR, oldest first.
    Backups,
    /// Print a shell completion script.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): relay-sync(1), or relay-sync-COMMAND(1).
    #[command(hide = true)]
    Man {
        /// A command, for its own page.
        command: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct OutputArgs {
    /// Print JSON, for monitoring.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
struct RollbackArgs {
    /// The generation to restore (YYYYMMDD-HHMMSS, as `relay-sync backups` lists it); the
    /// newest when not given.
    #[arg(long, value_name = "STAMP")]
    to: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct SyncArgs {
    /// Print the plan and the diff; change nothing, not even the log file.
    #[arg(long)]
    dry_run: bool,
    /// Lift the safety guard's removal limit for this run.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    return_large_buffers();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Sync(cli.sync));
    let max_level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "relay-sync",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man { command } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            cli.build();
            let page = match command.as_deref() {
                None => cli,
                Some(name) => match cli.find_subcommand(name) {
                    // After `build`, a subcommand displays as `relay-sync-NAME`.
                    Some(sub) => sub.clone(),
                    None => {
                        logging::early_error(&format!("no command {name:?}"));
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
            };
            return match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    logging::early_error(&format!("cannot write the man page: {error}"));
                    ExitCode::from(EXIT_INTERNAL)
                }
            };
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars_os()) {
        Ok(config) => config,
        Err(error) => {
            if let Command::Check(args) = command {
                // `check` reports a broken configuration like any other failed check.
                return ExitCode::from(print_check(
                    &check::config_failed(&error.to_string()),
                    args,
                ));
            }
            logging::early_error(&error.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = match command {
        Command::Sync(args) => sync(&config, args, max_level),
        Command::Check(args) => print_check(&check::run(&config), args),
        Command::Status(args) => {
            let status = status::read(&config);
            if args.json {
                println!("{}", to_json(&status));
            } else {
                print!("{}", status.render());
            }
            0
        }
        Command::Rollback(args) => rollback(&config, args.to.as_deref(), max_level),
        Command::Backups => match rollback::render_backups(&config) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(error) => {
                logging::early_error(&error.to_string());
                EXIT_INTERNAL
            }
        },
        Command::Completions { .. } | Command::Man { .. } => 0,
    };
    ExitCode::from(code)
}

/// Prints the check report (text or JSON) and returns its exit code.
fn print_check(report: &check::Report, args: OutputArgs) -> u8 {
    if args.json {
        println!("{}", to_json(report));
    } else {
        print!("{}", report.render());
    }
    report.exit_code()
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// `relay-sync rollback`: under the run lock, logged like a run.
fn rollback(config: &Config, to: Option<&str>, max_level: tracing::Level) -> u8 {
    if let Err(error) = logging::init(Some(config.log_file.as_path()), StderrMode::All, max_level) {
        logging::early_error(&error.to_string());
        return EXIT_USAGE;
    }
    let _lock = match lock::take(&config.lock_file) {
        Ok(lock) => lock,
        Err(lock::LockError::Held(path)) => {
            tracing::error!(
                "A sync is running (it holds {}); try again when it has finished",
                path.display()
            );
            return EXIT_INTERNAL;
        }
        Err(error) => {
            tracing::error!("{error}");
            return EXIT_INTERNAL;
        }
    };
    match rollback::rollback(config, to) {
        Ok(message) => {
            print!("{message}");
            0
        }
        Err(error) => {
            tracing::error!("Rollback failed: {error}");
            EXIT_INTERNAL
        }
    }
}

/// Asks glibc to map every allocation of 128 KiB or more on its own, so that it goes back to
/// the system when freed. Its default threshold rises as large blocks are freed, after which
/// a run's big buffers (the transport file, the rendered maps, the database's rows) are carved
/// from the heap and kept: at a million domains that is tens of megabytes of peak RSS.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Runs `sync` (or its dry run) and returns the exit code.
fn sync(config: &Config, args: SyncArgs, max_level: tracing::Level) -> u8 {
    let started = std::time::Instant::now();
    // A dry run touches nothing: no log file, no lock file; its log goes to stderr only.
    let log_file = (!args.dry_run).then_some(config.log_file.as_path());
    let stderr = if args.dry_run {
        StderrMode::All
    } else {
        StderrMode::detect()
    };
    if let Err(error) = logging::init(log_file, stderr, max_level) {
        logging::early_error(&error.to_string());
        return EXIT_USAGE;
    }
    let _lock = if args.dry_run {
        None
    } else {
        match lock::take(&config.lock_file) {
            Ok(lock) => Some(lock),
            Err(lock::LockError::Held(_)) => {
                tracing::info!("Another sync is running, skipping");
                return 0;
            }
            Err(error) => {
                tracing::error!("{error}");
                return EXIT_INTERNAL;
            }
        }
    };

    let settings = match sync_settings(config, args) {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
            return EXIT_USAGE;
        }
    };
    let password = match config.resolve_password() {
        Ok(password) => password,
        Err(error) => {
            tracing::error!("{error}");
            return EXIT_USAGE;
        }
    };
    let source = MariaDbSource::new(config.db_settings(password));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return EXIT_INTERNAL;
        }
    };
    // The database query and Postfix's first postconf overlap: each takes a few milliseconds,
    // and a no-change run is little else.
    // A real run keeps postconf's answers in STATE_DIR while main.cf stays the same file; a
    // dry run writes nothing, so it always asks postconf.
    let cache = (!args.dry_run).then(|| config.state_dir.join(POSTCONF_CACHE));
    let (postfix, fetched) = runtime.block_on(prefetch(&source, config.postfix_settings(), cache));
    let postfix = match postfix {
        Ok(postfix) => postfix.with_relay_domains_map(config.relay_domains_map.clone()),
        Err(error @ PostfixError::CommandMissing { .. }) => {
            tracing::error!("{error}");
            return EXIT_USAGE;
        }
        Err(error) => {
            tracing::error!("Cannot read the current Postfix configuration: {error}");
            tracing::error!("Keeping current configuration");
            let outcome = Outcome::ReadFailed(error);
            if !args.dry_run {
                track(config, &outcome, started);
            }
            return outcome.exit_code();
        }
    };
    if let Err(problem) = check::transport_maps_verdict(config, &postfix) {
        tracing::error!("{problem}");
        tracing::error!("Keeping current configuration");
        return EXIT_USAGE;
    }
    if !args.dry_run {
        // Under the lock: what a run killed mid-write left goes now, not at the next change.
        if let Err(error) = postfix.remove_leftovers() {
            tracing::warn!("{error}");
        }
    }
    let source = Prefetched {
        rows: std::sync::Mutex::new(fetched),
        source: &source,
    };

    if args.dry_run {
        let transport = config.transport_file.display().to_string();
        return match runtime.block_on(relay_engine::dry_run(&settings, &source, &postfix)) {
            Ok((prepared, verdict)) => {
                print!("{}", report::dry_run(&prepared, &verdict, &transport));
                // The dry run exits as the real run would: 4 when the guard would refuse.
                verdict.map_or_else(|refusal| Outcome::Refused(refusal).exit_code(), |()| 0)
            }
            Err(Outcome::NoChange) => {
                println!("relay-sync dry run: no changes");
                0
            }
            Err(outcome) => outcome.exit_code(),
        };
    }
    let outcome = runtime.block_on(relay_engine::run(&settings, &source, &postfix));
    track(config, &outcome, started);
    // The run's outcome carries its SPEC §8 exit code (relay_engine::Outcome::exit_code).
    outcome.exit_code()
}

/// The file in `STATE_DIR` where a run keeps what postconf printed (see
/// [`PostfixCli::with_postconf_cache`]).
const POSTCONF_CACHE: &str = "postconf.cache";

/// Builds the [`PostfixCli`] (its one postconf) on a blocking thread while the database query
/// runs. The query's result is `None` when the postconf failed first: the run ends there, and
/// the query is dropped.
async fn prefetch<S: DomainSource>(
    source: &S,
    settings: relay_postfix::PostfixSettings,
    cache: Option<PathBuf>,
) -> (
    Result<PostfixCli, PostfixError>,
    Option<Result<Vec<String>, relay_db::DbError>>,
) {
    let mut postfix = tokio::task::spawn_blocking(move || match cache {
        Some(cache) => PostfixCli::with_postconf_cache(settings, &cache),
        None => PostfixCli::new(settings),
    });
    let fetch = source.fetch_names();
    tokio::pin!(fetch);
    let mut fetched = None;
    let postfix = loop {
        tokio::select! {
            joined = &mut postfix => break joined,
            rows = &mut fetch, if fetched.is_none() => fetched = Some(rows),
        }
    };
    let postfix = match postfix {
        Ok(postfix) => postfix,
        // The closure does not panic; if it ever did, say so rather than abort the process.
        Err(error) => Err(PostfixError::Invalid {
            path: PathBuf::from("postconf"),
            detail: format!("reading the Postfix configuration stopped: {error}"),
        }),
    };
    if postfix.is_ok() && fetched.is_none() {
        fetched = Some(fetch.await);
    }
    (postfix, fetched)
}

/// A [`DomainSource`] whose first fetch returns the rows [`prefetch`] already has.
struct Prefetched<'a, S> {
    rows: std::sync::Mutex<Option<Result<Vec<String>, relay_db::DbError>>>,
    source: &'a S,
}

impl<S: DomainSource + Sync> DomainSource for Prefetched<'_, S> {
    async fn fetch_names(&self) -> Result<Vec<String>, relay_db::DbError> {
        let rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match rows {
            Some(rows) => rows,
            None => self.source.fetch_names().await,
        }
    }
}

/// SPEC §7: records the run in `STATE_DIR` and sends the alerts it calls for. Nothing here
/// changes the run's outcome.
fn track(config: &Config, outcome: &Outcome, started: std::time::Instant) {
    let host = host_name();
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let previous = failures::load(&config.state_dir).unwrap_or_else(|error| {
        tracing::error!("{error}");
        failures::RunState::default()
    });
    let summary = outcome.to_string();
    let result = failures::RunResult {
        exit: outcome.exit_code(),
        summary: &summary,
        now: &now,
        host: &host,
    };
    let (state, alerts) = failures::advance(&previous, result, config.alert_after_failures);
    if state.consecutive_db_failures >= failures::DB_FAILURES_LOGGED_AFTER {
        tracing::error!(
            "Database unreachable for {} consecutive runs",
            state.consecutive_db_failures
        );
    }
    for alert in &alerts {
        alert::send(config, &host, alert);
    }
    if let Err(error) = failures::save(&config.state_dir, &state) {
        tracing::error!("Failure tracking not saved: {error}");
    }
    if let Some(path) = &config.metrics_file {
        write_metrics(config, path, outcome, &state, started);
    }
}

/// Writes `METRICS_FILE` for this run; a failure is logged and changes nothing else.
fn write_metrics(
    config: &Config,
    path: &std::path::Path,
    outcome: &Outcome,
    state: &failures::RunState,
    started: std::time::Instant,
) {
    let now = chrono::Utc::now().timestamp();
    let (added, removed) = match outcome {
        Outcome::Applied(applied) => (applied.added.len(), applied.removed.len()),
        _ => (0, 0),
    };
    // What Postfix routes now: the managed block as it is on disk after the run.
    let domains = std::fs::read_to_string(&config.transport_file)
        .ok()
        .and_then(|text| {
            relay_core::TransportFile::parse(&text)
                .ok()
                .map(|file| file.managed_entries().len())
        })
        .unwrap_or(0);
    let exit = outcome.exit_code();
    let metrics = metrics::RunMetrics {
        last_run: now,
        last_success: if exit == 0 {
            now
        } else {
            metrics::previous_last_success(path).unwrap_or(0)
        },
        exit,
        domains,
        added,
        removed,
        duration: started.elapsed().as_secs_f64(),
        consecutive_failures: state.consecutive_failures,
    };
    if let Err(error) = metrics::write(path, &metrics) {
        tracing::error!("Metrics not written to {}: {error}", path.display());
    }
}

/// This machine's name, for alert subjects and the default sender.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Turns the config's raw values into the engine's typed settings.
fn sync_settings(config: &Config, args: SyncArgs) -> Result<SyncSettings, String> {
    let transport = match config.relay_transport {
        RelayTransport::Smtp => relay_core::Transport::Smtp,
        RelayTransport::Lmtp => relay_core::Transport::Lmtp,
    };
    let next_hop = NextHop::new(transport, &config.dell_relay_ip, config.dell_relay_port)
        .map_err(|e| format!("DELL_RELAY_IP: {e}"))?;
    let preserve = config
        .preserve_domains
        .iter()
        .map(|raw| {
            DomainName::parse(raw).map_err(|e| {
                format!(
                    "PRESERVE_DOMAINS: {} is not a domain name: {e}",
                    relay_core::escape_for_log(raw)
                )
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(SyncSettings {
        next_hop,
        preserve,
        guard: GuardSettings {
            max_remove_percent: config.max_remove_percent,
            allow_empty: config.allow_empty,
            force: args.force,
        },
        mode: match config.relay_domains_mode {
            config::RelayDomainsMode::Inline => relay_core::RelayDomainsMode::Inline,
            config::RelayDomainsMode::Map => relay_core::RelayDomainsMode::Map,
        },
    })
}
