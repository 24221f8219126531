//! The man pages, rendered from the same clap definition as `--help` (clap_mangen), with the
//! sections a man page reader looks for and clap does not know: EXIT STATUS, ENVIRONMENT,
//! FILES and SEE ALSO.
//!
//! `relay-sync man [COMMAND]` prints one page; `relay-sync man --out-dir DIR` writes every
//! page the packages ship, so the list of pages lives here and nowhere else: a page can only
//! refer to a page in that list (SEE ALSO and SUBCOMMANDS are built from it).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::{logging, Cli, EXIT_INTERNAL, EXIT_USAGE};

/// One page: its file name's stem (`relay-sync-check`), its section, and its roff text.
struct Page {
    name: String,
    section: u8,
    roff: Vec<u8>,
}

impl Page {
    fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }
}

/// relay-sync.conf(5), rendered from the configuration key table.
///
/// It is rendered from `relay_ops::config`'s key table, the same table as the sample config
/// and the README's (issue 13), so the three cannot disagree.
fn config_page() -> Option<Vec<u8>> {
    Some(relay_ops::config::man_page(env!("CARGO_PKG_VERSION")).into_bytes())
}

/// Every page's footer: the program and its version.
const SOURCE: &str = concat!("relay-sync ", env!("CARGO_PKG_VERSION"));

/// The DESCRIPTION of relay-sync(1); `--help` keeps its shorter text.
const DESCRIPTION: &str = "relay-sync keeps a Postfix MX gateway's relay_domains and \
transport map in step with the enabled domains of the admin panel's MariaDB. It is run as root \
every 5 minutes, by relay-sync.timer or by cron. Without a command it runs sync.

One run takes LOCK_FILE, reads the enabled domains, plans the domains to add and remove, \
refuses a mass removal (the safety guard), backs up relay_domains and the transport file to \
BACKUP_DIR, applies the change in an order that never lets Postfix accept a domain without its \
transport entry, reloads Postfix and verifies the result. A failed step is rolled back. The \
database is only read.";

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RELAY_SYNC_<KEY>",
        "Any configuration key, e.g. RELAY_SYNC_DB_HOST; the environment wins over the \
         configuration file. No command relay-sync runs inherits these variables.",
    ),
    (
        "RELAY_SYNC_ALERT_SEVERITY, RELAY_SYNC_ALERT_SUBJECT",
        "Not read: set for ALERT_COMMAND, which gets the alert's message on its standard input.",
    ),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, \
         AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, \
         AWS_EC2_METADATA_DISABLED, AWS_ENDPOINT_URL_SNS",
        "With ALERT_SNS_TOPIC_ARN (a build with the sns feature): read by AWS's standard \
         credential chain and endpoint settings, as the AWS CLI reads them. No credential is \
         ever logged or shown.",
    ),
];

/// The default paths; each is a configuration key and may be elsewhere.
const FILES: &[(&str, &str)] = &[
    (
        "/opt/mailserver/config/relay-sync.conf",
        "The configuration (KEY=VALUE lines, mode 0600; --config names another).",
    ),
    (
        "/opt/mailserver/config/relay-sync.db-password",
        "The database password, when DB_PASSWORD_FILE names it (mode 0600).",
    ),
    (
        "/etc/postfix/main.cf, /etc/postfix/transport",
        "Postfix's relay_domains and the transport map's source (POSTFIX_CONFIG_DIR, \
         TRANSPORT_FILE); relay-sync owns the transport file's managed block only.",
    ),
    (
        "/opt/mailserver/backup/",
        "BACKUP_DIR: the backup generations (relay_domains.STAMP.bak, transport.STAMP.bak), \
         BACKUP_KEEP of each. Removing or purging the package never deletes them.",
    ),
    (
        "/var/log/mailserver/relay-sync.log",
        "LOG_FILE, rotated by /etc/logrotate.d/relay-sync.",
    ),
    (
        "/var/lib/relay-sync/",
        "STATE_DIR: state (the last result and the failure streak), relay-sync.lock \
         (LOCK_FILE), postconf.cache and alerts.pending.",
    ),
    (
        "/usr/lib/systemd/system/relay-sync.service, relay-sync.timer",
        "The hardened unit and its 5-minute timer (not enabled by the package).",
    ),
    (
        "/usr/share/relay-sync/relay-sync.cron",
        "The cron alternative to the timer (copy it to /etc/cron.d/relay-sync).",
    ),
    (
        "/usr/share/relay-sync/create-user.sql",
        "Creates the SELECT-only database user.",
    ),
];

/// The exit status of the commands that do not sync.
/// A sync's exit codes, from relay-ops (the README's table comes from the same list), without
/// the Markdown quotes.
fn sync_exit_status() -> Vec<(&'static str, String)> {
    relay_ops::EXIT_CODES
        .iter()
        .map(|(code, meaning)| (EXIT_DIGITS[usize::from(*code)], meaning.replace('`', "")))
        .collect()
}

/// The exit codes as text, so that the man page's items borrow like the other sections'.
const EXIT_DIGITS: [&str; 7] = ["0", "1", "2", "3", "4", "5", "6"];

fn command_exit_status(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "check" => &[
            ("0", "Every check passed."),
            ("1", "A check failed; the report says which."),
            ("2", "A usage error."),
        ],
        "rollback" => &[
            ("0", "Rolled back and Postfix reloaded."),
            (
                "1",
                "The rollback failed or another run holds the lock; the log says why.",
            ),
            ("2", "A usage or configuration error."),
        ],
        "backups" => &[
            ("0", "The generations were listed."),
            ("1", "BACKUP_DIR could not be read."),
            ("2", "A usage or configuration error."),
        ],
        _ => &[("0", "Success."), ("2", "A usage or configuration error.")],
    }
}

/// Every page the packages ship: relay-sync(1), one relay-sync-COMMAND(1) per visible command,
/// and relay-sync.conf(5) once [`config_page`] renders it.
fn pages() -> std::io::Result<Vec<Page>> {
    let mut cli = <Cli as clap::CommandFactory>::command()
        // `help` is clap's, not a page of ours: without this, SUBCOMMANDS would name a
        // relay-sync-help(1) that no package ships.
        .disable_help_subcommand(true)
        .long_about(DESCRIPTION);
    cli.build();
    let config = config_page();
    let commands: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();

    let mut see_also: Vec<String> = commands
        .iter()
        .map(|sub| format!("{}(1)", sub.get_display_name().unwrap_or(sub.get_name())))
        .collect();
    if config.is_some() {
        see_also.push("relay-sync.conf(5)".to_owned());
    }

    let mut pages = Vec::new();
    let mut roff = Vec::new();
    let man = clap_mangen::Man::new(cli.clone());
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    man.render_options_section(&mut roff)?;
    man.render_subcommands_section(&mut roff)?;
    section(&mut roff, "EXIT STATUS", &sync_exit_status())?;
    section(&mut roff, "ENVIRONMENT", ENVIRONMENT)?;
    section(&mut roff, "FILES", FILES)?;
    see_also_section(&mut roff, &see_also)?;
    man.render_version_section(&mut roff)?;
    pages.push(Page {
        name: "relay-sync".to_owned(),
        section: 1,
        roff,
    });

    for sub in commands {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_owned();
        let exit_status = match sub.get_name() {
            "sync" => sync_exit_status(),
            other => command_exit_status(other)
                .iter()
                .map(|(code, text)| (*code, (*text).to_owned()))
                .collect(),
        };
        let mut roff = Vec::new();
        // A subcommand has no version of its own; the footer names the program's.
        let man = clap_mangen::Man::new(sub).source(SOURCE);
        man.render_title(&mut roff)?;
        man.render_name_section(&mut roff)?;
        man.render_synopsis_section(&mut roff)?;
        man.render_description_section(&mut roff)?;
        man.render_options_section(&mut roff)?;
        section(&mut roff, "EXIT STATUS", &exit_status)?;
        let mut also = vec!["relay-sync(1)".to_owned()];
        if config.is_some() {
            also.push("relay-sync.conf(5)".to_owned());
        }
        see_also_section(&mut roff, &also)?;
        pages.push(Page {
            name,
            section: 1,
            roff,
        });
    }
    if let Some(roff) = config {
        pages.push(Page {
            name: "relay-sync.conf".to_owned(),
            section: 5,
            roff,
        });
    }
    Ok(pages)
}

/// A section of tagged paragraphs (`.TP`).
fn section<T: AsRef<str>>(
    out: &mut Vec<u8>,
    title: &str,
    items: &[(&str, T)],
) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")?;
    for (tag, text) in items {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            escape(tag),
            escape(text.as_ref())
        )?;
    }
    Ok(())
}

fn see_also_section(out: &mut Vec<u8>, pages: &[String]) -> std::io::Result<()> {
    let refs: Vec<String> = pages
        .iter()
        .map(|page| {
            let (name, section) = page.split_once('(').unwrap_or((page, ""));
            format!("\\fB{}\\fR({section}", escape(name))
        })
        .collect();
    writeln!(out, ".SH \"SEE ALSO\"\n{}", refs.join(", "))
}

/// Escapes text for roff: backslashes, hyphens (so `man` does not turn them into dashes), and
/// a leading dot or quote that would start a request.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// `relay-sync man [COMMAND]`: prints relay-sync(1), or relay-sync-COMMAND(1), or (with
/// `relay-sync.conf`) relay-sync.conf(5) when it exists.
pub(crate) fn print(command: Option<&str>) -> ExitCode {
    let wanted = match command {
        None => "relay-sync".to_owned(),
        Some("relay-sync.conf") => "relay-sync.conf".to_owned(),
        Some(name) => format!("relay-sync-{name}"),
    };
    let pages = match pages() {
        Ok(pages) => pages,
        Err(error) => return write_failed(&error),
    };
    let Some(page) = pages.into_iter().find(|page| page.name == wanted) else {
        logging::early_error(&format!("no man page for {:?}", command.unwrap_or("")));
        return ExitCode::from(EXIT_USAGE);
    };
    match std::io::stdout().write_all(&page.roff) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => write_failed(&error),
    }
}

/// `relay-sync man --out-dir DIR`: writes every page as DIR/NAME.SECTION and prints the file
/// names, one a line.
pub(crate) fn write_all(dir: &Path) -> ExitCode {
    let written = pages().and_then(|pages| {
        std::fs::create_dir_all(dir)?;
        let mut names = String::new();
        for page in pages {
            std::fs::write(dir.join(page.file_name()), &page.roff)?;
            names.push_str(&page.file_name());
            names.push('\n');
        }
        std::io::stdout().write_all(names.as_bytes())
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => write_failed(&error),
    }
}

fn write_failed(error: &std::io::Error) -> ExitCode {
    logging::early_error(&format!("cannot write the man page: {error}"));
    ExitCode::from(EXIT_INTERNAL)
}
