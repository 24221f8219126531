//! The documentation rendered from the key table: the sample config file
//! (`packaging/relay-sync.conf`), docs/configuration.md's table and relay-sync.conf(5). A test
//! keeps the files in the repository equal to what is rendered here.

use std::fmt::Write as _;

use roff::{bold, roman, Roff};

use super::declare::{Sample, Shown};
use super::source::keys;
use super::{and_list, DEFAULT_CONFIG_FILE, SECTIONS};

const SAMPLE_HEADER: &str = "\
# /opt/mailserver/config/relay-sync.conf: relay-sync's configuration (mode 0600, owner root).
#
# KEY=VALUE lines; `#` starts a comment line (not an inline comment: `#` after `=` belongs to
# the value). One pair of quotes around a value is removed; nothing else is expanded, so paths
# are written out in full. Every key may also be set as RELAY_SYNC_<KEY> in the environment,
# which wins. Unknown keys are an error. A commented KEY=VALUE line shows the key's default or,
# for a key without one, an example: remove the `#` to use it.
# After editing: `relay-sync check` (add --json for monitoring). Every key is described in
# relay-sync.conf(5): `man 5 relay-sync.conf`.
";
// The sample is generated from config/keys.rs (as are the README's table and
// relay-sync.conf(5)); a test says when the shipped copy differs, and
// `UPDATE_EXPECT=1 cargo test -p relay-ops config::` rewrites it.

/// The keys that must be set, as `A and B`.
fn required_keys() -> String {
    and_list(
        keys()
            .filter(|key| key.default == Shown::Required)
            .map(|key| key.name),
    )
}

/// What the documentation says of a key's sample value, after its default.
fn sample_text(sample: Option<Sample>, quote: &str) -> String {
    match sample {
        Some(Sample::Example(value)) => format!(" Example: {quote}{value}{quote}."),
        Some(Sample::Shipped(value)) => format!(" The packaged file sets {quote}{value}{quote}."),
        None => String::new(),
    }
}

/// The sample config file, `packaging/relay-sync.conf`: every key with its description,
/// commented out at its default or with an example, so that the file as shipped configures
/// nothing site-specific (relay-sync refuses to run until the required keys are set).
pub fn sample_config() -> String {
    let mut out = SAMPLE_HEADER.to_owned();
    out.push_str("#\n");
    comment(
        &mut out,
        &format!(
            "Set {} before the first run: until then relay-sync changes nothing, records \
             nothing and exits 2 (\"not configured\").",
            required_keys()
        ),
    );
    for section in SECTIONS {
        let heading = format!("# ---- {} ", section.title);
        let _ = writeln!(out, "\n{heading:-<92}");
        comment(&mut out, section.note);
        for key in section.keys {
            match key.default {
                Shown::Required => comment(&mut out, &format!("{} Required.", key.about)),
                Shown::Derived(default) => {
                    comment(&mut out, key.about);
                    let default = format!("By default {}.", default.replace('`', ""));
                    comment(&mut out, &default);
                }
                Shown::Value(_) | Shown::Unset => comment(&mut out, key.about),
            }
            let _ = match (key.sample, key.default) {
                (Some(Sample::Shipped(value)), _) => writeln!(out, "{}={value}", key.name),
                (Some(Sample::Example(value)), _) | (None, Shown::Value(value)) => {
                    writeln!(out, "#{}={value}", key.name)
                }
                (None, _) => writeln!(out, "#{}=", key.name),
            };
        }
    }
    out
}

/// Appends `text` as `# ` lines of at most 96 characters.
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > 96 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        let _ = writeln!(out, "{line}");
    }
}

/// A key's default in words, for the man page.
fn default_text(default: Shown) -> String {
    match default {
        Shown::Required => "Required.".to_owned(),
        Shown::Value(value) => format!("Default: {value}."),
        Shown::Derived(default) => format!("Default: {}.", default.replace('`', "")),
        Shown::Unset => "Not set by default.".to_owned(),
    }
}

/// relay-sync.conf(5), in roff: every key with its default and meaning, from the same table as
/// the sample config file and docs/configuration.md's table. `version` goes in the footer.
pub fn man_page(version: &str) -> String {
    let mut page = Roff::new();
    let source = format!("relay-sync {version}");
    // An empty date, quoted: roff's `control` leaves an empty argument out altogether.
    page.control(
        "TH",
        ["RELAY-SYNC.CONF", "5", "\"\"", &source, "File Formats"],
    );
    page.control("SH", ["NAME"])
        .text([roman("relay-sync.conf - configuration of relay-sync")]);
    page.control("SH", ["SYNOPSIS"])
        .text([roman(DEFAULT_CONFIG_FILE)]);
    page.control("SH", ["DESCRIPTION"]).text([roman(format!(
        "KEY=VALUE lines; lines starting with # or ; are comments. One pair of quotes around a \
         whole value is removed; nothing else is interpreted. Every key may also come from the \
         environment as RELAY_SYNC_<KEY>, which wins over the file. Unknown keys, keys set twice \
         and sections are errors naming the file and line. An empty value is the same as not \
         setting the key. Paths must be absolute; timeouts are seconds, fractions allowed. The \
         file, and the files and commands it names, must be owned by root and writable by root \
         alone; a file holding DB_PASSWORD must be readable by root alone. Until {} are set, \
         relay-sync refuses to run (exit 2) and records nothing.",
        required_keys()
    ))]);
    for section in SECTIONS {
        page.control("SS", [section.title]);
        let note = section
            .note
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !note.is_empty() {
            page.text([roman(note)]).control("PP", []);
        }
        for key in section.keys {
            let text = format!(
                "{} {}{}",
                key.about_line().replace('`', ""),
                default_text(key.default),
                sample_text(key.sample, "")
            );
            page.control("TP", [])
                .text([bold(key.name)])
                .text([roman(text)]);
        }
    }
    page.control("SH", ["SEE ALSO"])
        .text([bold("relay-sync"), roman("(1)")]);
    page.render()
}

/// docs/configuration.md's table of every key: key, default, meaning.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in keys() {
        let default = match key.default {
            Shown::Required => "required".to_owned(),
            Shown::Value(value) => format!("`{value}`"),
            Shown::Derived(default) => default.to_owned(),
            Shown::Unset => "—".to_owned(),
        };
        let meaning = key.about_line() + &sample_text(key.sample, "`");
        let _ = writeln!(out, "| `{}` | {default} | {meaning} |", key.name);
    }
    out
}
