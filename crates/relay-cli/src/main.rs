//! `relay-sync`: keeps a Postfix MX gateway's `relay_domains` and transport map in step with the
//! domains an admin panel keeps in MariaDB.
//!
//! This binary is glue: it parses the arguments, loads the config, sets up logging, makes one
//! call into `relay-ops` (which operates the gateway), renders the result, and exits with the
//! code the result carries (SPEC §8, derived in one place: `relay_ops::RunOutcome::exit_code`).

// Unit tests set files up by path in temporary directories of their own.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod logging;
mod man;
mod report;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relay_ops::{check, Config, DryRun, Gateway, SyncOptions};

use crate::logging::StderrMode;

/// Exit codes that do not come from a run's outcome (SPEC §8).
const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_INTERNAL: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "relay-sync",
    version,
    about = "Keep Postfix relay_domains and transport in step with the domains in MariaDB",
    long_about = "Keep Postfix relay_domains and the transport map in step with the enabled \
domains of the admin panel's MariaDB. Run from cron or the timer every 5 minutes, or stay \
running with `relay-sync watch` to sync within seconds of a change. Exit codes: 0 synced, \
nothing to do, skipped or held; 1 internal error; 2 usage or configuration error; 3 database \
unreachable or no password (configuration kept); 4 refused by the safety guard (configuration \
kept); 5 a step failed and was rolled back; 6 critical: reload or rollback failed, manual \
intervention required. relay-sync(1) says more under EXIT STATUS."
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
    Status(StatusArgs),
    /// Stay running and sync whenever the enabled domains in the database change.
    ///
    /// Polls a cheap change signal every POLL_INTERVAL (default 2 s) and runs the same sync
    /// as cron (same lock, guard, backups and rollback) when the enabled set changed, plus a
    /// full sync every RECONCILE_INTERVAL (default 300 s). SIGTERM/SIGINT stop it after the
    /// step in progress (exit 0), SIGHUP re-reads the config (an invalid one is kept out),
    /// SIGUSR1 syncs at once. Under systemd (Type=notify) it reports READY after the first
    /// sync, WATCHDOG every cycle and STATUS. With LOG_FILE=- it logs to standard output.
    Watch,
    /// Restore a backup generation and reload Postfix.
    ///
    /// Restores the transport file and relay_domains of the newest generation (or --to STAMP),
    /// then reloads Postfix. Takes the run lock and backs up the current state first, so a
    /// rollback can itself be rolled back. The next sync applies the database again, unless
    /// --hold holds syncs.
    Rollback(RollbackArgs),
    /// List the backup generations in BACKUP_DIR, oldest first.
    Backups,
    /// Hold syncs: until `release`, a sync changes nothing, logs why and exits 0.
    ///
    /// The hold is kept in STATE_DIR (it survives a reboot) and shown by `status`, `check` and
    /// the metric relay_sync_held.
    Hold {
        /// Why: whoever finds the gateway held must know.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Lift the hold placed by `hold` (or `rollback --hold`).
    Release,
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
        /// Write every page (relay-sync.1, relay-sync-COMMAND.1, ...) into DIR instead.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct OutputArgs {
    /// Print JSON (schema relay-sync.check/1, docs/json.md), for monitoring.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct StatusArgs {
    /// Print JSON (schema relay-sync.status/1, docs/json.md), for monitoring.
    #[arg(long)]
    json: bool,
    /// With --json, list the managed domains too (by default only their count).
    #[arg(long, requires = "json")]
    domains: bool,
    /// Exit 1 when the last successful sync ended more than SECONDS ago (or there was none):
    /// a container HEALTHCHECK. For a watcher, choose more than RECONCILE_INTERVAL.
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
}

#[derive(Debug, Clone, Default, clap::Args)]
struct RollbackArgs {
    /// The generation to restore (YYYYMMDD-HHMMSS, as `relay-sync backups` lists it); the
    /// newest when not given.
    #[arg(long, value_name = "STAMP")]
    to: Option<String>,
    /// Then hold syncs with this reason, so the next sync does not apply the database again
    /// (`release` lifts it).
    #[arg(long, value_name = "REASON")]
    hold: Option<String>,
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
    let level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    if !command.changes_the_gateway() {
        die_quietly_on_closed_pipe();
    }
    match command {
        Command::Completions { shell } => return completions(shell),
        Command::Man { command, out_dir } => {
            return match out_dir {
                Some(dir) => man::write_all(&dir),
                None => man::print(command.as_deref()),
            }
        }
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars_os()) {
        Ok(config) => config,
        Err(error) => {
            if let Command::Check(args) = command {
                // `check` reports a broken configuration like any other failed check.
                return print_check(&check::config_failed(&error.to_string()), args);
            }
            logging::early_error(&error.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let log_file = config.log_file.clone();
    let gateway = Gateway::new(config);
    match command {
        Command::Sync(args) if args.dry_run => dry_run(&gateway, level),
        Command::Sync(args) => {
            // Under cron only ERROR lines reach stderr, so cron mails failures and nothing else.
            if let Err(code) = start_logging(Some(&log_file), StderrMode::detect(), level) {
                return code;
            }
            let record = gateway.sync_blocking(SyncOptions { force: args.force });
            ExitCode::from(record.exit_code())
        }
        Command::Check(args) => print_check(&gateway.check_blocking(), args),
        Command::Status(args) => {
            let status = gateway.status_blocking();
            if args.json {
                println!(
                    "{}",
                    to_json(&relay_ops::json::status(&status, args.domains))
                );
            } else {
                print!("{}", report::status(&status));
            }
            match args.max_age.map(|max| (max, status.last_success_age())) {
                None => ExitCode::SUCCESS,
                Some((max, Some(age))) if age.as_secs() <= max => ExitCode::SUCCESS,
                Some((max, age)) => {
                    let age = age.map_or_else(
                        || "no successful sync is recorded".to_owned(),
                        |age| format!("the last successful sync ended {} s ago", age.as_secs()),
                    );
                    logging::early_error(&format!(
                        "unhealthy: {age} (--max-age {max}); see `relay-sync status` and the log"
                    ));
                    ExitCode::from(EXIT_INTERNAL)
                }
            }
        }
        Command::Watch => {
            if let Err(code) = start_logging(Some(&log_file), StderrMode::detect(), level) {
                return code;
            }
            watch::run(gateway, cli.config.clone())
        }
        Command::Rollback(args) => {
            if let Err(code) = start_logging(Some(&log_file), StderrMode::All, level) {
                return code;
            }
            match gateway.rollback_blocking(args.to.as_deref(), args.hold.as_deref()) {
                Ok(done) => {
                    let next = match &done.hold {
                        Some(hold) => format!("Syncs are {hold}; `relay-sync release` lifts it."),
                        None => "The next sync applies the database again: `relay-sync hold \
                                 --reason TEXT` (or `rollback --hold`) stops that."
                            .to_owned(),
                    };
                    println!(
                        "rolled back to {}; the state before the rollback was saved as {}. {next}",
                        done.restored, done.saved
                    );
                    ExitCode::SUCCESS
                }
                Err(error @ relay_ops::RollbackError::Busy(_)) => {
                    tracing::error!("{error}");
                    ExitCode::from(EXIT_INTERNAL)
                }
                Err(error) => {
                    tracing::error!("Rollback failed: {error}");
                    ExitCode::from(EXIT_INTERNAL)
                }
            }
        }
        Command::Backups => match gateway.backups_blocking() {
            Ok(generations) => {
                print!(
                    "{}",
                    report::backups(&gateway.config().backup_dir, &generations)
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                logging::early_error(&error.to_string());
                ExitCode::from(EXIT_INTERNAL)
            }
        },
        Command::Hold { reason } => match gateway.hold_blocking(&reason) {
            Ok(hold) => {
                println!("syncs are {hold}; `relay-sync release` lifts it");
                ExitCode::SUCCESS
            }
            Err(error) => {
                logging::early_error(&error.to_string());
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Release => match gateway.release_blocking() {
            Ok(Some(hold)) => {
                println!("released the hold ({hold}); the next sync applies the database");
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("syncs were not held");
                ExitCode::SUCCESS
            }
            Err(error) => {
                logging::early_error(&error.to_string());
                ExitCode::from(EXIT_INTERNAL)
            }
        },
        Command::Completions { .. } | Command::Man { .. } => ExitCode::SUCCESS,
    }
}

impl Command {
    /// Whether the command writes to the gateway (a sync that is not a dry run, a rollback).
    fn changes_the_gateway(&self) -> bool {
        match self {
            Command::Sync(args) => !args.dry_run,
            Command::Rollback(_) | Command::Hold { .. } | Command::Release | Command::Watch => true,
            Command::Check(_)
            | Command::Status(_)
            | Command::Backups
            | Command::Completions { .. }
            | Command::Man { .. } => false,
        }
    }
}

/// Lets a command that only prints end quietly when its reader goes away
/// (`relay-sync completions fish | head -1`), as `cat` does: SIGPIPE ends the process instead
/// of `println!` panicking on `EPIPE`. Rust ignores SIGPIPE by default, and a sync or a
/// rollback keeps it that way: a closed stdout must never kill a run between two apply steps.
fn die_quietly_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default is async-signal-safe and happens
    // before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sets up logging up to `level`; a log file that cannot be opened is a configuration error.
fn start_logging(
    log_file: Option<&std::path::Path>,
    stderr: StderrMode,
    level: tracing::Level,
) -> Result<(), ExitCode> {
    logging::init(log_file, stderr, level).map_err(|error| {
        logging::early_error(&error.to_string());
        ExitCode::from(EXIT_USAGE)
    })
}

/// `--dry-run`: prints the plan and exits as the real run would. It touches nothing: no log
/// file, no lock file; its log goes to stderr only.
fn dry_run(gateway: &Gateway, level: tracing::Level) -> ExitCode {
    if let Err(code) = start_logging(None, StderrMode::All, level) {
        return code;
    }
    let result = gateway.dry_run_blocking();
    match &result {
        DryRun::Planned { prepared, verdict } => {
            let transport = gateway.config().transport_file.display().to_string();
            print!("{}", report::dry_run(prepared, verdict, &transport));
        }
        DryRun::NoChange => println!("relay-sync dry run: no changes"),
        DryRun::Failed(_) => {}
    }
    ExitCode::from(result.exit_code())
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "relay-sync",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// Prints the check report (text or JSON) and exits 1 when a check failed.
fn print_check(report: &relay_ops::CheckReport, args: OutputArgs) -> ExitCode {
    if args.json {
        println!("{}", to_json(&relay_ops::json::check(report)));
    } else {
        print!("{}", report::check(report));
    }
    ExitCode::from(report.exit_code())
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
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
