//! Where the values come from: the file's `KEY=VALUE` lines and the `RELAY_SYNC_*` variables,
//! each value kept with its [`Origin`] (the file and line, or the variable) so that every error
//! can say where to look. [`Values::read`] then converts each value with its key's own parser
//! into the raw struct the key table declares.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use super::keys::{Raw, SECTIONS};
use super::{ConfigError, Key, Origin, ENV_PREFIX, RESERVED_ENV};

/// One `KEY=VALUE` line of the file, quotes removed. No `Debug`: the value may be a password.
pub(super) struct Line {
    pub(super) number: usize,
    pub(super) key: String,
    pub(super) value: String,
}

/// Splits the file into `KEY=VALUE` lines. Whitespace around keys and values is ignored, lines
/// starting with `#` or `;` are comments (indented ones too), and blank lines are allowed. A
/// `#` after the `=` belongs to the value. Errors never show the line: it may hold a password.
pub(super) fn parse_lines(path: &Path, text: &str) -> Result<Vec<Line>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let syntax = |detail| ConfigError::Syntax {
            path: path.to_owned(),
            line: number,
            detail,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            return Err(syntax(
                "sections like [name] are not supported: write plain KEY=VALUE lines",
            ));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(syntax(
                "expected KEY=VALUE, a comment starting with # or a blank line",
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(syntax("expected KEY=VALUE, found nothing before `=`"));
        }
        lines.push(Line {
            number,
            key: key.to_owned(),
            value: unquote(value.trim()).to_owned(),
        });
    }
    Ok(lines)
}

/// Removes one pair of matching quotes around the whole value.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Every key, in table order.
pub(super) fn keys() -> impl Iterator<Item = &'static Key> {
    SECTIONS.iter().flat_map(|section| section.keys)
}

/// The key called `name`.
fn key(name: &str) -> Option<&'static Key> {
    keys().find(|key| key.name == name)
}

/// The known key closest to `key` (case-insensitive, at most two edits away; an `export `
/// prefix is ignored).
pub(super) fn suggest(key: &str) -> Option<&'static str> {
    let key = key.strip_prefix("export ").unwrap_or(key).trim();
    let key = key.to_ascii_uppercase();
    keys()
        .map(|known| (strsim::levenshtein(&key, known.name), known.name))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// One raw value and where it came from. No `Debug`: the value may be a password.
struct Entry {
    /// The text, or `None` for an environment variable that is not UTF-8.
    value: Option<String>,
    origin: Origin,
}

/// The raw values, file lines overlaid by the environment, keyed by the names as written.
#[derive(Default)]
pub(super) struct Values {
    entries: BTreeMap<String, Entry>,
}

impl Values {
    /// Adds the file's lines; a key set twice is an error naming both lines.
    pub(super) fn add_file_lines(
        &mut self,
        path: &Path,
        lines: Vec<Line>,
    ) -> Result<(), ConfigError> {
        for line in lines {
            if let Some(Origin::File { line: first, .. }) =
                self.entries.get(&line.key).map(|entry| &entry.origin)
            {
                return Err(ConfigError::DuplicateKey {
                    key: line.key,
                    path: path.to_owned(),
                    first: *first,
                    second: line.number,
                });
            }
            let origin = Origin::File {
                path: path.to_owned(),
                line: line.number,
            };
            let value = Some(line.value);
            self.entries.insert(line.key, Entry { value, origin });
        }
        Ok(())
    }

    /// Adds the `RELAY_SYNC_*` variables of `env`, which win over the file's lines. Their values
    /// are used verbatim: the shell or systemd has already removed any quotes.
    pub(super) fn add_env(&mut self, env: impl Iterator<Item = (OsString, OsString)>) {
        for (name, value) in env {
            let name = name.to_string_lossy().into_owned();
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                if !RESERVED_ENV.contains(&name.as_str()) {
                    let entry = Entry {
                        value: value.into_string().ok(),
                        origin: Origin::Env { var: name.clone() },
                    };
                    self.entries.insert(key.to_owned(), entry);
                }
            }
        }
    }

    /// The entries in the order an operator reads them: the file's lines, then the variables
    /// sorted by name, so that the error reported among several is always the first one.
    fn in_order(&self) -> Vec<(&str, &Entry)> {
        let mut entries: Vec<(&str, &Entry)> = self
            .entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry))
            .collect();
        entries.sort_by_key(|(_, entry)| match &entry.origin {
            Origin::File { line, .. } => (0, *line, ""),
            Origin::Env { var } => (1, 0, var.as_str()),
        });
        entries
    }

    /// Converts every value with its key's parser, after checking every name, so that a typo is
    /// reported as such rather than as the value of another key. Empty values are not set.
    pub(super) fn read(&self) -> Result<Raw, ConfigError> {
        let mut set = Vec::new();
        for (name, entry) in self.in_order() {
            let Some(key) = key(name) else {
                return Err(match &entry.origin {
                    Origin::File { path, line } => ConfigError::UnknownKey {
                        key: name.to_owned(),
                        path: path.clone(),
                        line: *line,
                        suggestion: suggest(name),
                    },
                    Origin::Env { var } => ConfigError::UnknownEnv {
                        var: var.clone(),
                        suggestion: suggest(name),
                    },
                });
            };
            match &entry.value {
                None => return Err(self.invalid(key.name, "valid UTF-8 text")),
                Some(value) if !value.is_empty() => set.push((key.name, value)),
                Some(_) => {}
            }
        }
        let mut raw = Raw::default();
        for (name, value) in set {
            raw.set(name, value)
                .map_err(|expected| self.invalid(name, expected))?;
        }
        Ok(raw)
    }

    /// Whether `key` has a value that is not empty.
    pub(super) fn is_set(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| entry.value.as_deref() != Some(""))
    }

    /// Where `key`'s value came from. Called only for keys that are set; the variable's name
    /// stands in otherwise.
    pub(super) fn origin_of(&self, key: &str) -> Origin {
        self.entries.get(key).map_or_else(
            || Origin::Env {
                var: format!("{ENV_PREFIX}{key}"),
            },
            |entry| entry.origin.clone(),
        )
    }

    /// The error for a value of `key` that cannot be used: the value is shown unless secret.
    pub(super) fn invalid(&self, key: &'static str, expected: impl Into<String>) -> ConfigError {
        let secret = self::key(key).is_some_and(|known| known.secret);
        ConfigError::Invalid {
            key,
            origin: self.origin_of(key),
            value: self
                .entries
                .get(key)
                .and_then(|entry| entry.value.clone())
                .filter(|_| !secret),
            expected: expected.into(),
        }
    }
}
