//! The man pages, rendered from the same clap definition as `--help` (clap_mangen), with the
//! sections a man page reader looks for and clap does not know: EXIT STATUS, ENVIRONMENT,
//! FILES and SEE ALSO.
//!
//! `relay-sync man [COMMAND]` prints one page; `relay-sync man --out-dir DIR` writes every
//! page the packages ship, so the list of pages lives here and nowhere else: a page can only
//! refer to a page in that list (SEE ALSO and SUBCOMMANDS are built from it).

use std::io::Write;
use std::path::Path;

use relay_ops::manual::{exits, DESCRIPTION, ENVIRONMENT, FILES};
use relay_ops::ExitStatus;
use roff::{bold, roman, Roff};

use crate::logging;

/// One page: its file name's stem (`relay-sync-check`), its section, and its roff text.
pub(crate) struct Page {
    pub(crate) name: String,
    section: u8,
    pub(crate) roff: Vec<u8>,
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

/// Every page the packages ship: relay-sync(1), one relay-sync-COMMAND(1) per visible command,
/// and relay-sync.conf(5) once [`config_page`] renders it.
pub(crate) fn pages() -> std::io::Result<Vec<Page>> {
    let mut cli = crate::command()
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
    let mut ours = Roff::new();
    exit_status_section(&mut ours, "sync");
    ours.control("PP", []).text([roman(
        "These are a sync's; the page of each command lists that command's own.",
    )]);
    section(&mut ours, "ENVIRONMENT", ENVIRONMENT);
    section(&mut ours, "FILES", FILES);
    see_also_section(&mut ours, &see_also);
    ours.to_writer(&mut roff)?;
    man.render_version_section(&mut roff)?;
    pages.push(Page {
        name: "relay-sync".to_owned(),
        section: 1,
        roff,
    });

    for sub in commands {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_owned();
        let command = sub.get_name().to_owned();
        let mut roff = Vec::new();
        // A subcommand has no version of its own; the footer names the program's.
        let man = clap_mangen::Man::new(sub).source(SOURCE);
        man.render_title(&mut roff)?;
        man.render_name_section(&mut roff)?;
        man.render_synopsis_section(&mut roff)?;
        man.render_description_section(&mut roff)?;
        man.render_options_section(&mut roff)?;
        let mut also = vec!["relay-sync(1)".to_owned()];
        if config.is_some() {
            also.push("relay-sync.conf(5)".to_owned());
        }
        let mut ours = Roff::new();
        exit_status_section(&mut ours, &command);
        see_also_section(&mut ours, &also);
        ours.to_writer(&mut roff)?;
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
fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", [])
            .text([bold(*tag)])
            .text([roman(*text)]);
    }
}

/// EXIT STATUS: each code `command` can end with, and what it means for it.
fn exit_status_section(roff: &mut Roff, command: &str) {
    roff.control("SH", ["EXIT STATUS"]);
    for exit in exits(command) {
        roff.control("TP", [])
            .text([bold(exit.status.code().to_string())])
            .text([roman(exit.detail.replace('`', ""))]);
    }
}

fn see_also_section(roff: &mut Roff, pages: &[String]) {
    let mut refs = Vec::new();
    for page in pages {
        if !refs.is_empty() {
            refs.push(roman(", "));
        }
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        refs.push(bold(name));
        refs.push(roman(format!("({section}")));
    }
    roff.control("SH", ["SEE ALSO"]).text(refs);
}

/// `relay-sync man [COMMAND]`: prints relay-sync(1), or relay-sync-COMMAND(1), or (with
/// `relay-sync.conf`) relay-sync.conf(5) when it exists.
pub(crate) fn print(command: Option<&str>) -> ExitStatus {
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
        return ExitStatus::Usage;
    };
    match std::io::stdout().write_all(&page.roff) {
        Ok(()) => ExitStatus::Success,
        Err(error) => write_failed(&error),
    }
}

/// `relay-sync man --out-dir DIR`: writes every page as DIR/NAME.SECTION and prints the file
/// names, one a line.
pub(crate) fn write_all(dir: &Path) -> ExitStatus {
    let written = pages().and_then(|pages| {
        // Made as relay-sync makes its own directories (the mode on each new one's descriptor),
        // readable by all as man pages are.
        relay_fs::create_dir(dir, 0o755).map_err(std::io::Error::other)?;
        let mut names = String::new();
        for page in pages {
            // Replaced by rename like every file relay-sync writes: a packager may run this as
            // root in a directory others can write.
            relay_fs::replace(&dir.join(page.file_name()), &page.roff, 0o644)
                .map_err(std::io::Error::other)?;
            names.push_str(&page.file_name());
            names.push('\n');
        }
        std::io::stdout().write_all(names.as_bytes())
    });
    match written {
        Ok(()) => ExitStatus::Success,
        Err(error) => write_failed(&error),
    }
}

fn write_failed(error: &std::io::Error) -> ExitStatus {
    logging::early_error(&format!("cannot write the man page: {error}"));
    ExitStatus::Internal
}
