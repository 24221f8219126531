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

use relay_ops::manual::{exit_status, DESCRIPTION, ENVIRONMENT, FILES};

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
    section(&mut roff, "EXIT STATUS", &exit_status("sync"))?;
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
        let exit_status = exit_status(sub.get_name());
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
fn section<A: AsRef<str>, B: AsRef<str>>(
    out: &mut Vec<u8>,
    title: &str,
    items: &[(A, B)],
) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")?;
    for (tag, text) in items {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            escape(tag.as_ref()),
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
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => write_failed(&error),
    }
}

fn write_failed(error: &std::io::Error) -> ExitCode {
    logging::early_error(&format!("cannot write the man page: {error}"));
    ExitCode::from(EXIT_INTERNAL)
}
