//! `relay-sync`: keeps a Postfix MX gateway's `relay_domains` and transport map in step with the
//! domains an admin panel keeps in MariaDB.
//!
//! This binary is glue: it parses the arguments, loads the config, sets up logging, makes one
//! call into `relay-ops` (which operates the gateway), renders the result, and exits with the
//! code of the result's `relay_ops::ExitStatus` (SPEC §8's table is `ExitStatus::code`, in
//! relay-ops, so that an embedder gets the same codes).

// Unit tests set files up by path in temporary directories of their own.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod logging;
mod man;
mod report;
mod watch;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use clap_complete::Shell;
use relay_ops::{
    check, manual, Config, DryRun, ExitStatus, Gateway, Health, RollbackError, SyncOptions,
};

use crate::logging::StderrMode;

/// The binary's name, for completion scripts.
const BIN: &str = "relay-sync";

#[derive(Debug, Parser)]
#[command(
    name = "relay-sync",
    version,
    about = "Keep Postfix relay_domains and the transport map in step with the domains in MariaDB.\n\
             Run it every 5 minutes (relay-sync.timer or cron), or keep `relay-sync watch` running."
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
    /// directory relay-sync writes is writable. Changes nothing.
    Check(CheckArgs),
    /// Show the last result, the failure streak, the managed domains and the backups.
    ///
    /// Reads files only (STATE_DIR, the transport file, BACKUP_DIR): it answers when the
    /// database and Postfix are down, and never shows a secret.
    Status(StatusArgs),
    /// Stay running and sync whenever the enabled domains in the database change.
    ///
    /// Polls a cheap change signal every POLL_INTERVAL (default 0.25 s) and runs the same sync
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
    Backups(BackupsArgs),
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
        shell: Shell,
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
struct CheckArgs {
    /// Print JSON (schema relay-sync.check/2, in /usr/share/relay-sync/schema/), for
    /// monitoring.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct BackupsArgs {
    /// Print JSON (schema relay-sync.backups/1, in /usr/share/relay-sync/schema/).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct StatusArgs {
    /// Print JSON (schema relay-sync.status/1, in /usr/share/relay-sync/schema/), for
    /// monitoring.
    #[arg(long)]
    json: bool,
    /// With --json, list the managed domains too (by default only their count).
    #[arg(long, requires = "json")]
    domains: bool,
    /// Fail as unhealthy when the last successful sync ended more than SECONDS ago (or there
    /// was none): a container HEALTHCHECK. For a watcher, choose more than RECONCILE_INTERVAL.
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
    #[arg(long, value_name = "REASON", conflicts_with = "dry_run")]
    hold: Option<String>,
    /// Show the generation a rollback would restore and what in it needs --force; change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Restore a generation that holds what a sync never writes (a static:, pcre: or regexp:
    /// table or a pattern in relay_domains, a hand-written route for `*` or for a domain it
    /// does not relay) or that relay-sync cannot vouch for (no digests).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
struct SyncArgs {
    /// Print the plan and the diff; change nothing, not even the log file.
    #[arg(long)]
    dry_run: bool,
    /// Lift the safety guard's removal limit for this run.
    #[arg(long)]
    force: bool,
    /// Print what the run did as JSON (schema relay-sync.sync/1); with --dry-run, what it
    /// would do (relay-sync.plan/1). The schemas are in /usr/share/relay-sync/schema/.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    return_large_buffers();
    let status = match run() {
        Ok(status) | Err(status) => status,
    };
    // The one place a command's status becomes the process's exit code: SPEC §8's table is
    // `relay_ops::ExitStatus::code`.
    ExitCode::from(status.code())
}

/// Runs the command line. `Err` is a command that ended before its operation ran: a usage or
/// configuration error (already reported), or `--help`.
fn run() -> Result<ExitStatus, ExitStatus> {
    let cli = parse()?;
    let level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let command = cli.command.unwrap_or(Command::Sync(cli.sync));
    if !command.changes_the_gateway() {
        die_quietly_on_closed_pipe();
    }
    let config_path = cli.config;
    let load = || Config::load(config_path.as_deref(), std::env::vars_os()).map(Gateway::new);
    let gateway = || load().map_err(|error| failed(&error, ExitStatus::Usage));
    Ok(match command {
        Command::Completions { shell } => completions(shell),
        Command::Man {
            out_dir: Some(dir), ..
        } => man::write_all(&dir),
        Command::Man { command, .. } => man::print(command.as_deref()),
        Command::Check(args) => {
            if cli.verbose {
                // `-v check` adds relay-sync's DEBUG lines on stderr (what each source of AWS's
                // credential chain said, say); without it check prints its report alone.
                start_logging(None, StderrMode::All, level)?;
            }
            let report = match load() {
                Ok(gateway) => gateway.check_blocking(),
                // `check` reports a broken configuration like any other failed check.
                Err(error) => check::config_failed(&error.to_string()),
            };
            print_check(&report, args)
        }
        Command::Sync(args) if args.dry_run => {
            let gateway = gateway()?;
            // A dry run touches nothing: no log file, no lock file; its log goes to stderr.
            start_logging(None, StderrMode::All, level)?;
            dry_run(&gateway, args.json)
        }
        Command::Sync(args) => {
            let gateway = gateway()?;
            // Under cron only ERROR lines reach stderr, so cron mails failures and nothing else.
            start_logging(Some(&gateway), StderrMode::detect(), level)?;
            let record = gateway.sync_blocking(SyncOptions { force: args.force });
            if args.json {
                print_json(&relay_ops::json::sync(&record));
            }
            record.exit_status()
        }
        Command::Status(args) => status(&gateway()?, args),
        Command::Watch => {
            let gateway = gateway()?;
            start_logging(Some(&gateway), StderrMode::detect(), level)?;
            match watch::run(gateway, config_path.clone()) {
                Ok(_) => ExitStatus::Success,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitStatus::Internal
                }
            }
        }
        Command::Rollback(args) if args.dry_run => {
            let gateway = gateway()?;
            // As a sync's dry run: no log file, its log goes to stderr.
            start_logging(None, StderrMode::All, level)?;
            rollback_dry_run(&gateway, &args)
        }
        Command::Rollback(args) => {
            let gateway = gateway()?;
            start_logging(Some(&gateway), StderrMode::All, level)?;
            rollback(&gateway, &args)
        }
        Command::Backups(args) => backups(&gateway()?, args),
        Command::Hold { reason } => hold(&gateway()?, &reason),
        Command::Release => release(&gateway()?),
    })
}

/// The command line, parsed; clap's own messages (an error, `--help`, `--version`) are
/// printed here, and give a usage error or success.
fn parse() -> Result<Cli, ExitStatus> {
    command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .map_err(|error| {
            if error.use_stderr() && logging::stderr_is_journal() {
                // A usage error under systemd: each of its lines an error in the journal.
                logging::journal_text(tracing::Level::ERROR, &error.render().to_string());
            } else {
                // Printing can only fail on a closed pipe; there is no one left to tell.
                let _ = error.print();
            }
            if error.use_stderr() {
                ExitStatus::Usage
            } else {
                ExitStatus::Success
            }
        })
}

/// The clap definition, with each command's exit codes at the end of its `--help`, from
/// `relay_ops::manual::exits` like the man pages and the README.
fn command() -> clap::Command {
    let mut command = Cli::command().after_help(exit_help(
        "sync",
        "Exit status of a sync (a command's: `relay-sync COMMAND --help`; more: `man relay-sync`):",
    ));
    for name in manual::COMMANDS {
        command =
            command.mut_subcommand(name, |sub| sub.after_help(exit_help(name, "Exit status:")));
    }
    command
}

/// One line per exit code of `command`, under `title`.
fn exit_help(command: &str, title: &str) -> String {
    let mut out = format!("{title}\n");
    for exit in manual::exits(command) {
        out.push_str(&format!("  {}  {}\n", exit.status.code(), exit.summary));
    }
    out
}

fn status(gateway: &Gateway, args: StatusArgs) -> ExitStatus {
    let status = gateway.status_blocking();
    if args.json {
        print_json(&relay_ops::json::status(&status, args.domains));
    } else {
        print!("{}", report::status(&status));
    }
    let health = status.health(args.max_age.map(Duration::from_secs));
    if health != Health::Healthy {
        logging::early_error(&format!(
            "{health} (--max-age); see `relay-sync status` and the log"
        ));
    }
    health.exit_status()
}

fn rollback(gateway: &Gateway, args: &RollbackArgs) -> ExitStatus {
    match gateway.rollback_blocking(args.to.as_deref(), args.hold.as_deref(), args.force) {
        Ok(done) => {
            let next = match &done.hold {
                Some(hold) => format!("Syncs are {hold}; `relay-sync release` lifts it."),
                None => "The next sync applies the database again: `relay-sync hold --reason \
                         TEXT` (or `rollback --hold`) stops that."
                    .to_owned(),
            };
            println!(
                "rolled back to {}; the state before the rollback was saved as {}. {next}",
                done.restored, done.saved
            );
            ExitStatus::Success
        }
        Err(error @ RollbackError::Busy(_)) => {
            tracing::error!("{error}");
            error.exit_status()
        }
        Err(error) => {
            tracing::error!("Rollback failed: {error}");
            error.exit_status()
        }
    }
}

fn rollback_dry_run(gateway: &Gateway, args: &RollbackArgs) -> ExitStatus {
    match gateway.rollback_preview_blocking(args.to.as_deref(), args.force) {
        Ok(preview) => {
            print!("{}", report::rollback_preview(&preview));
            preview.exit_status()
        }
        Err(error) => {
            tracing::error!("Rollback dry run failed: {error}");
            error.exit_status()
        }
    }
}

fn backups(gateway: &Gateway, args: BackupsArgs) -> ExitStatus {
    let dir = &gateway.config().backup_dir;
    match gateway.backups_blocking() {
        Ok(generations) if args.json => {
            print_json(&relay_ops::json::backups(dir, &generations));
        }
        Ok(generations) => print!("{}", report::backups(dir, &generations)),
        Err(error) => return failed(&error, error.exit_status()),
    }
    ExitStatus::Success
}

fn hold(gateway: &Gateway, reason: &str) -> ExitStatus {
    match gateway.hold_blocking(reason) {
        Ok(hold) => println!("syncs are {hold}; `relay-sync release` lifts it"),
        Err(error) => return failed(&error, error.exit_status()),
    }
    ExitStatus::Success
}

fn release(gateway: &Gateway) -> ExitStatus {
    match gateway.release_blocking() {
        Ok(Some(hold)) => {
            println!("released the hold ({hold}); the next sync applies the database");
        }
        Ok(None) => println!("syncs were not held"),
        Err(error) => return failed(&error, error.exit_status()),
    }
    ExitStatus::Success
}

/// Reports `error` on stderr, as a log line, and gives `status`.
fn failed(error: &dyn std::fmt::Display, status: ExitStatus) -> ExitStatus {
    logging::early_error(&error.to_string());
    status
}

impl Command {
    /// Whether the command writes to the gateway (a sync that is not a dry run, a rollback).
    fn changes_the_gateway(&self) -> bool {
        match self {
            Command::Sync(args) => !args.dry_run,
            Command::Rollback(args) => !args.dry_run,
            Command::Hold { .. } | Command::Release | Command::Watch => true,
            Command::Check(_)
            | Command::Status(_)
            | Command::Backups(_)
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

/// Sets up logging up to `level`, to the gateway's `LOG_FILE` when given; a log file that
/// cannot be opened is a configuration error.
fn start_logging(
    gateway: Option<&Gateway>,
    stderr: StderrMode,
    level: tracing::Level,
) -> Result<(), ExitStatus> {
    let log_file = gateway.map(|gateway| gateway.config().log_file.as_path());
    logging::init(log_file, stderr, level).map_err(|error| failed(&error, ExitStatus::Usage))
}

/// `--dry-run`: prints the plan (text, or JSON with `json`) and ends as the real run would.
fn dry_run(gateway: &Gateway, json: bool) -> ExitStatus {
    let result = gateway.dry_run_blocking();
    if json {
        print_json(&relay_ops::json::plan(
            &result,
            &gateway.config().transport_file,
        ));
        return result.exit_status();
    }
    match &result {
        DryRun::Planned { prepared, verdict } => {
            let transport = gateway.config().transport_file.display().to_string();
            print!("{}", report::dry_run(prepared, verdict, &transport));
        }
        DryRun::NoChange => println!("relay-sync dry run: no changes"),
        DryRun::Failed(_) => {}
    }
    result.exit_status()
}

/// Prints the completion script for `shell`.
fn completions(shell: Shell) -> ExitStatus {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), BIN, &mut script);
    if shell == Shell::Bash {
        script = bash_states_named_alike(&String::from_utf8_lossy(&script)).into_bytes();
    }
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitStatus::Success,
        Err(error) => failed(
            &format!("cannot print the completion script: {error}"),
            ExitStatus::Internal,
        ),
    }
}

/// clap_complete's bash script spells a subcommand's state one way where it sets it
/// (`relay__sync__subcmd__status`) and another in the `case` label that should match it
/// (`relay__subcmd__sync__subcmd__status`) when the binary's name has a hyphen, so no option of
/// a subcommand ever completes (clap-rs/clap#6421, still so in clap_complete 4.6.12). The labels
/// are renamed to the spelling the script sets; once clap_complete is fixed this changes
/// nothing, and `completion_of_a_subcommand_option` in the e2e tests keeps watch either way.
fn bash_states_named_alike(script: &str) -> String {
    let label = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let state = format!("{}__subcmd__", BIN.replace('-', "__"));
    script.replace(&label, &state)
}

/// Prints the check report (text or JSON); a failed check is [`ExitStatus::CheckFailed`].
fn print_check(report: &relay_ops::CheckReport, args: CheckArgs) -> ExitStatus {
    if args.json {
        print_json(&relay_ops::json::check(report));
    } else {
        print!("{}", report::check(report));
    }
    report.exit_status()
}

/// Prints a `--json` document on stdout. A sync's stdout that is gone must not panic after the
/// run (a sync ignores SIGPIPE, so that it is never killed between two apply steps): the
/// failure is reported on stderr and the run's exit code stands.
fn print_json(value: &impl serde::Serialize) {
    let printed = serde_json::to_string_pretty(value)
        .map_err(std::io::Error::other)
        .and_then(|text| writeln!(std::io::stdout(), "{text}"));
    if let Err(error) = printed {
        logging::early_error(&format!("cannot print the JSON document: {error}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes listed after a line starting with "Exit status" in a `--help` text.
    fn codes_in_help(help: &str) -> Vec<u8> {
        help.lines()
            .skip_while(|line| !line.starts_with("Exit status"))
            .skip(1)
            .map_while(|line| line.strip_prefix("  ")?.split_once("  "))
            .map(|(code, _)| code.parse().unwrap())
            .collect()
    }

    /// The codes in a page's EXIT STATUS section.
    fn codes_in_man_page(roff: &[u8]) -> Vec<u8> {
        String::from_utf8_lossy(roff)
            .lines()
            .skip_while(|line| *line != ".SH \"EXIT STATUS\"")
            .skip(1)
            .take_while(|line| !line.starts_with(".SH"))
            .filter_map(|line| line.strip_prefix("\\fB")?.strip_suffix("\\fR"))
            .map(|code| code.parse().unwrap())
            .collect()
    }

    /// The codes the README's generated tables list for `command`.
    fn codes_in_readme(readme: &str, command: &str) -> Vec<u8> {
        let table = readme
            .split_once("<!-- BEGIN exit codes")
            .and_then(|(_, rest)| rest.split_once("<!-- END exit codes"))
            .expect("README.md has the exit code markers")
            .0;
        if command == "sync" {
            let (spec, _) = table.split_once("The other commands").unwrap();
            return spec
                .lines()
                .filter_map(|line| line.strip_prefix("| ")?.split_once(" |"))
                .filter_map(|(code, _)| code.parse().ok())
                .collect();
        }
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("| `{command}` |")))
            .unwrap_or_else(|| panic!("no README row for {command}"));
        row.split('`')
            .filter_map(|part| part.parse().ok())
            .collect()
    }

    /// Each command's `--help`, man page and README row list the same exit codes: those
    /// relay_ops::manual::exits gives it (whose truth relay-ops' own test keeps).
    #[test]
    fn help_man_pages_and_readme_list_the_same_exit_codes() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        let pages = man::pages().unwrap();
        let mut top = command();
        let top_help = top.render_help().to_string();
        let want: Vec<u8> = manual::exits("sync")
            .iter()
            .map(|e| e.status.code())
            .collect();
        assert_eq!(codes_in_help(&top_help), want, "{top_help}");
        let page = pages.iter().find(|p| p.name == "relay-sync").unwrap();
        assert_eq!(codes_in_man_page(&page.roff), want);
        for name in manual::COMMANDS {
            let want: Vec<u8> = manual::exits(name)
                .iter()
                .map(|e| e.status.code())
                .collect();
            assert!(!want.is_empty(), "{name}");
            let sub = top.find_subcommand_mut(name).unwrap();
            let hidden = sub.is_hide_set();
            let help = sub.render_long_help().to_string();
            assert_eq!(codes_in_help(&help), want, "{name} --help:\n{help}");
            assert_eq!(codes_in_readme(&readme, name), want, "README, {name}");
            // The generators are hidden and have no page of their own.
            let page = pages
                .iter()
                .find(|p| p.name == format!("relay-sync-{name}"));
            match page {
                Some(page) => assert_eq!(codes_in_man_page(&page.roff), want, "{name}(1)"),
                None => assert!(hidden, "no man page for {name}"),
            }
        }
    }

    /// The project's rule: no exit code is written as a number in relay-cli; each comes from
    /// a status through `ExitStatus::code`, in `main`.
    #[test]
    fn no_exit_code_is_a_literal() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Spelled in pieces, so that this test is not a hit of its own.
                let literal = [
                    concat!("ExitCode", "::from("),
                    concat!("process", "::exit("),
                ]
                .iter()
                .any(|call| {
                    line.split(call)
                        .skip(1)
                        .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                });
                let constant = [
                    concat!("ExitCode", "::SUCCESS"),
                    concat!("ExitCode", "::FAILURE"),
                ]
                .iter()
                .any(|name| line.contains(name));
                assert!(
                    !literal && !constant,
                    "{}:{}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }

    /// Every state the bash script sets for a command has a `case` label that reads it, so
    /// the command's options complete (clap-rs/clap#6421).
    #[test]
    fn every_bash_state_is_matched() {
        let mut script = Vec::new();
        clap_complete::generate(Shell::Bash, &mut command(), BIN, &mut script);
        let script = bash_states_named_alike(&String::from_utf8_lossy(&script));
        let states: Vec<&str> = script
            .lines()
            .filter_map(|line| line.trim().strip_prefix("cmd=\"")?.strip_suffix('"'))
            .filter(|state| !state.is_empty())
            .collect();
        assert!(states.len() > 10, "{script}");
        for state in states {
            assert!(
                script
                    .lines()
                    .any(|line| line.trim() == format!("{state})")),
                "no case label for {state}"
            );
        }
    }
}
