//! Backups (SPEC §6): `BACKUP_DIR/relay_domains.STAMP.bak` and `BACKUP_DIR/transport.STAMP.bak`,
//! STAMP being `YYYYMMDD-HHMMSS` in local time (with `-2`, `-3`, … when that second is taken),
//! the newest `BACKUP_KEEP` generations of each kind kept. In map mode a generation also holds
//! `BACKUP_DIR/relay_domains_map.STAMP.bak`, the table's source, kept as long as its generation.
//!
//! Decisions beyond SPEC §6: the directory is created with mode 0700, and an existing one with
//! looser permissions is tightened to 0700 (backups are the gateway's configuration, readable
//! by root alone; nothing else is expected to share the directory), through its own descriptor:
//! a `BACKUP_DIR` that is a symbolic link root made is used as it is, and one anyone else made
//! is refused ([`relay_fs::tighten_dir`]). Files are 0600 and written
//! atomically, and read back through relay-fs as files relay-sync keeps ([`Kind::BACKUP`],
//! [`Kind::BACKUP_INDEX`]): never through a link, and only from a `BACKUP_DIR` no one but root
//! can write. A transport file that did not exist is backed up as an empty file. Rotation
//! never deletes a file whose name does not follow the pattern exactly (`-1`, `-02` or a
//! different suffix make a file foreign), nor the generation it has just written.
//! [`list_backups`] and [`read_backup`] serve `relay-sync rollback` and `status`.
//!
//! What a restore can vouch for: the index ([`GENERATIONS_INDEX`]) records, when a generation
//! is written, the SHA-256 of each of its files, and [`read_generation`] refuses a file whose
//! contents no longer match, or that the index has no digest for. A generation from before
//! digests were recorded is read, and said to be unvouched ([`BackupContents::unvouched`]): the
//! caller decides (`rollback` needs `--force`). The index is replaced atomically, and read with
//! bounds: a line that does not parse, or a sequence past [`MAX_SEQUENCE`], refuses the index
//! rather than being skipped or wrapping the counter.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use relay_fs::Kind;
use sha2::{Digest, Sha256};

use crate::{io, Backup, PostfixError};

/// The kinds of backup file, by name prefix.
pub(crate) const KINDS: [&str; 2] = ["relay_domains", "transport"];

/// One generation of backups: the files sharing a stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupGeneration {
    /// `YYYYMMDD-HHMMSS` or `YYYYMMDD-HHMMSS-N`.
    pub stamp: String,
    /// Its place in the order generations were written ([`GENERATIONS_INDEX`]); `None` for a
    /// generation written before the index existed (it sorts before every indexed one).
    pub sequence: Option<u64>,
    /// What wrote it, and how that ended.
    pub origin: Origin,
    /// The SHA-256 (lowercase hex) of each of its files, by name prefix (`transport`, …), as
    /// the index recorded them when they were written; empty for a generation from before
    /// digests (or before the index).
    pub digests: BTreeMap<String, String>,
    /// `relay_domains.STAMP.bak`, when present.
    pub relay_domains: Option<PathBuf>,
    /// `transport.STAMP.bak`, when present.
    pub transport: Option<PathBuf>,
    /// `relay_domains_map.STAMP.bak` (map mode's table), when present.
    pub relay_domains_map: Option<PathBuf>,
    /// `relay_recipient_maps.STAMP.bak` (the parameter, recipient validation), when present.
    pub relay_recipient_maps: Option<PathBuf>,
    /// `relay_recipients.STAMP.bak` (the recipients table's source), when present.
    pub recipients_map: Option<PathBuf>,
}

/// A stamp's sort key: the second, then the same-second counter (so `-10` sorts after `-9`).
/// Only the canonical forms are stamps: `YYYYMMDD-HHMMSS`, or that with `-N` where N is 2 or
/// more without leading zeros, so that no two spellings share a key (`-1`, `-02` and `-+3` are
/// not stamps, and files named with them are foreign).
fn stamp_key(stamp: &str) -> Option<(String, u32)> {
    let (base, counter) = match stamp.split_at_checked(15)? {
        (base, "") => (base, 1),
        (base, rest) => {
            let digits = rest.strip_prefix('-')?;
            let canonical = !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0');
            let counter: u32 = digits.parse().ok().filter(|_| canonical)?;
            (base, (counter >= 2).then_some(counter)?)
        }
    };
    let ok = base.as_bytes()[8] == b'-'
        && base
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit());
    ok.then(|| (base.to_owned(), counter))
}

/// The stamp in a backup file name of `kind`, if the name follows the pattern.
fn stamp_of<'a>(name: &'a str, kind: &str) -> Option<&'a str> {
    let stamp = name
        .strip_prefix(kind)?
        .strip_prefix('.')?
        .strip_suffix(".bak")?;
    stamp_key(stamp).map(|_| stamp)
}

/// Every backup generation in `dir`, oldest first: in the order they were written (the
/// sequence in [`GENERATIONS_INDEX`]), those from before the index first by stamp (second, then
/// the `-N` counter).
/// Files not named by the pattern are ignored; a missing directory has no generations.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupGeneration>, PostfixError> {
    let mut generations: BTreeMap<(String, u32), BackupGeneration> = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io("list", dir, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| io("list", dir, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        for kind in KINDS {
            if let Some(stamp) = stamp_of(&name, kind) {
                let Some(key) = stamp_key(stamp) else {
                    continue;
                };
                let generation = generations.entry(key).or_insert_with(|| BackupGeneration {
                    stamp: stamp.to_owned(),
                    sequence: None,
                    origin: Origin::Unknown,
                    digests: BTreeMap::new(),
                    relay_domains: None,
                    transport: None,
                    relay_domains_map: None,
                    relay_recipient_maps: None,
                    recipients_map: None,
                });
                let path = Some(entry.path());
                if kind == "relay_domains" {
                    generation.relay_domains = path;
                } else {
                    generation.transport = path;
                }
            }
        }
    }
    // A table backup belongs to the generation of its stamp; alone it is not a generation.
    let mut generations: Vec<BackupGeneration> = generations.into_values().collect();
    let index = read_index(dir)?;
    for generation in &mut generations {
        if let Some(entry) = index.get(&generation.stamp) {
            generation.sequence = Some(entry.sequence);
            generation.origin = entry.origin;
            generation.digests.clone_from(&entry.digests);
        }
    }
    // Newest is the last written, whatever the clock said: the stamps are local time, which
    // goes back an hour each autumn and may have run ahead before a correction. Generations
    // from before the index come first, in stamp order (a stable sort keeps it).
    generations.sort_by_key(|generation| generation.sequence);
    for generation in &mut generations {
        let beside = |prefix: &str| {
            let path = dir.join(format!("{prefix}.{}.bak", generation.stamp));
            fs::symlink_metadata(&path).is_ok().then_some(path)
        };
        generation.relay_domains_map = beside(RELAY_DOMAINS_MAP_BACKUP);
        generation.relay_recipient_maps = beside(RELAY_RECIPIENT_MAPS_BACKUP);
        generation.recipients_map = beside(RECIPIENTS_MAP_BACKUP);
    }
    Ok(generations)
}

/// What one backup generation holds, read back for `relay-sync rollback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupContents {
    /// The generation's stamp.
    pub stamp: String,
    /// The `relay_domains` value as it was (the file's one trailing newline removed), ready for
    /// [`PostfixWrite::set_relay_domains`](crate::PostfixWrite::set_relay_domains).
    pub relay_domains: String,
    /// The transport file as it was. Empty when there was no transport file: restoring an empty
    /// map routes nothing, like a missing one.
    pub transport: String,
    /// Map mode's table (`relay_domains_map.STAMP.bak`) as it was, when the generation has one:
    /// a run backs it up when `RELAY_DOMAINS_MODE=map` or when `relay_domains` names it.
    pub relay_domains_map: Option<String>,
    /// `relay_recipient_maps` as it was, when the generation has it: a run backs it up when
    /// recipient validation is on or is being turned off.
    pub relay_recipient_maps: Option<String>,
    /// The recipients table's source as it was, when the generation has it.
    pub recipients_map: Option<String>,
    /// Why relay-sync cannot vouch for this generation, when it cannot: it was written before
    /// the index recorded digests (or before the index). `None`: every file matched the digest
    /// recorded when it was written.
    pub unvouched: Option<String>,
}

/// Reads the generation `stamp` from `dir`, or the newest one when `stamp` is `None`.
///
/// Both files must be there: a generation missing one of them (a run stopped between the two
/// writes, or a file deleted by hand) is an error naming the missing file, so that a rollback
/// never restores half a state. An unknown stamp or a directory without backups is
/// [`PostfixError::Invalid`].
///
/// ```no_run
/// # fn main() -> Result<(), relay_postfix::PostfixError> {
/// use std::path::Path;
/// let newest = relay_postfix::read_backup(Path::new("/opt/mailserver/backup"), None)?;
/// println!("relay_domains was: {}", newest.relay_domains);
/// # Ok(())
/// # }
/// ```
pub fn read_backup(dir: &Path, stamp: Option<&str>) -> Result<BackupContents, PostfixError> {
    let generations = list_backups(dir)?;
    let generation = match stamp {
        Some(stamp) => generations.iter().find(|g| g.stamp == stamp).ok_or_else(|| {
            invalid(
                dir,
                format!("no backup generation {stamp} (files relay_domains.{stamp}.bak and transport.{stamp}.bak)"),
            )
        })?,
        None => generations
            .last()
            .ok_or_else(|| invalid(dir, "no backups: nothing to restore".to_owned()))?,
    };
    read_generation(dir, generation)
}

/// Reads what `generation` (from [`list_backups`] of `dir`) holds. A missing file is an error
/// naming it, so that a rollback never restores half a state. Each file is read as a file
/// relay-sync keeps (never through a link, only from a `BACKUP_DIR` no one else can write)
/// and checked against the digest the index recorded for it: a file that changed since, or
/// one the index has no digest for while it has the others', is refused, naming it.
pub fn read_generation(
    dir: &Path,
    generation: &BackupGeneration,
) -> Result<BackupContents, PostfixError> {
    let read = |path: &Option<PathBuf>, kind: &str| -> Result<String, PostfixError> {
        let path = path
            .clone()
            .unwrap_or_else(|| dir.join(format!("{kind}.{}.bak", generation.stamp)));
        let bytes = relay_fs::read(Kind::BACKUP, &path)?.ok_or_else(|| {
            io(
                "read",
                &path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        vouch(generation, kind, &path, &bytes)?;
        String::from_utf8(bytes).map_err(|_| invalid(&path, "not UTF-8 text".to_owned()))
    };
    let relay_domains = read(&generation.relay_domains, "relay_domains")?;
    let relay_domains = relay_domains
        .strip_suffix('\n')
        .unwrap_or(&relay_domains)
        .to_owned();
    if relay_domains.contains(['\n', '\r']) {
        let path = dir.join(format!("relay_domains.{}.bak", generation.stamp));
        return Err(invalid(
            &path,
            "holds more than one line; a relay_domains backup is a single value".to_owned(),
        ));
    }
    let transport = read(&generation.transport, "transport")?;
    let relay_domains_map = generation
        .relay_domains_map
        .as_ref()
        .map(|_| read(&generation.relay_domains_map, RELAY_DOMAINS_MAP_BACKUP))
        .transpose()?;
    let relay_recipient_maps = generation
        .relay_recipient_maps
        .as_ref()
        .map(|_| {
            read(
                &generation.relay_recipient_maps,
                RELAY_RECIPIENT_MAPS_BACKUP,
            )
        })
        .transpose()?
        .map(|value| value.strip_suffix('\n').unwrap_or(&value).to_owned());
    if let Some(value) = relay_recipient_maps
        .as_ref()
        .filter(|v| v.contains(['\n', '\r']))
    {
        let path = dir.join(format!(
            "{RELAY_RECIPIENT_MAPS_BACKUP}.{}.bak",
            generation.stamp
        ));
        return Err(invalid(
            &path,
            format!("holds more than one line ({} bytes); a relay_recipient_maps backup is a single value", value.len()),
        ));
    }
    let recipients_map = generation
        .recipients_map
        .as_ref()
        .map(|_| read(&generation.recipients_map, RECIPIENTS_MAP_BACKUP))
        .transpose()?;
    let unvouched = generation.digests.is_empty().then(|| {
        if generation.sequence.is_some() {
            "the backup index records no digest of its files (written by a relay-sync from \
             before digests)"
                .to_owned()
        } else {
            format!(
                "it is not in the backup index {GENERATIONS_INDEX} (written by a relay-sync from \
                 before the index, or by someone else)"
            )
        }
    });
    Ok(BackupContents {
        stamp: generation.stamp.clone(),
        relay_domains,
        transport,
        relay_domains_map,
        relay_recipient_maps,
        recipients_map,
        unvouched,
    })
}

/// Checks `bytes`, read from the backup file `path` of `generation` (name prefix `kind`),
/// against the digest the index recorded when it was written. A generation without digests
/// passes here (its contents say it is unvouched).
fn vouch(
    generation: &BackupGeneration,
    kind: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<(), PostfixError> {
    if generation.digests.is_empty() {
        return Ok(());
    }
    let refuse = |problem: String| -> PostfixError {
        relay_fs::FsError::Refused {
            path: path.to_owned(),
            problem,
            fix: format!(
                "move it out of {} and roll back to another generation (`relay-sync backups` \
                 lists them)",
                parent_dir(path).display()
            ),
        }
        .into()
    };
    match generation.digests.get(kind) {
        Some(recorded) => {
            let actual = sha256_hex(bytes);
            if *recorded == actual {
                Ok(())
            } else {
                Err(refuse(format!(
                    "it changed since relay-sync wrote it: its SHA-256 is {actual}, the backup \
                     index recorded {recorded}"
                )))
            }
        }
        None => Err(refuse(format!(
            "the backup index records the digests of generation {}'s files but none for this \
             one: relay-sync did not write it",
            generation.stamp
        ))),
    }
}

/// The directory holding `path`.
fn parent_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The SHA-256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
            hex
        })
}

fn invalid(path: &Path, detail: String) -> PostfixError {
    PostfixError::Invalid {
        path: path.to_owned(),
        detail,
    }
}

/// Writes a new generation and deletes generations beyond `keep` (at least 1: the generation
/// just written is never deleted, since a failed run restores from it).
pub(crate) fn write(
    dir: &Path,
    keep: usize,
    relay_domains: &str,
    transport: Option<&str>,
) -> Result<Backup, PostfixError> {
    ensure_private_dir(dir)?;
    let base = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    // Past the highest generation of this second: reusing a lower stamp that rotation freed
    // would make the newest backup sort as the oldest (and be rotated away next). Rotation
    // always keeps the newest, so the highest is never deleted.
    let highest = list_backups(dir)?
        .iter()
        .filter_map(|g| stamp_key(&g.stamp))
        .filter(|(second, _)| *second == base)
        .map(|(_, counter)| counter)
        .max();
    let stamp = match highest {
        None => base,
        Some(counter) => format!("{base}-{}", counter + 1),
    };
    let relay_path = dir.join(format!("relay_domains.{stamp}.bak"));
    let transport_path = dir.join(format!("transport.{stamp}.bak"));
    // The index is read (and so checked) before anything is written: a refused index leaves
    // the backup directory as it was.
    let mut index = read_index(dir)?;
    let newest = index
        .values()
        .map(|entry| entry.sequence)
        .max()
        .unwrap_or(0);
    let sequence = newest
        .checked_add(1)
        .filter(|next| *next <= MAX_SEQUENCE)
        .ok_or_else(|| {
            PostfixError::from(relay_fs::FsError::Refused {
                path: dir.join(GENERATIONS_INDEX),
                problem: format!(
                    "its newest sequence is {newest}, the highest relay-sync writes: there is no \
                     next one"
                ),
                fix: "renumber its lines from 1, oldest first".to_owned(),
            })
        })?;
    let relay_text = format!("{relay_domains}\n");
    // A transport file that did not exist is backed up as an empty file: restoring it gives an
    // empty map, which routes nothing, exactly like a missing one.
    let transport_text = transport.unwrap_or("");
    relay_fs::replace(&relay_path, relay_text.as_bytes(), 0o600)?;
    relay_fs::replace(&transport_path, transport_text.as_bytes(), 0o600)?;
    let digests = BTreeMap::from([
        (
            "relay_domains".to_owned(),
            sha256_hex(relay_text.as_bytes()),
        ),
        (
            "transport".to_owned(),
            sha256_hex(transport_text.as_bytes()),
        ),
    ]);
    index.insert(
        stamp.clone(),
        Entry {
            sequence,
            origin: Origin::Sync,
            digests,
        },
    );
    write_index(dir, &index)?;
    rotate(dir, keep.max(1), Some(&stamp))?;
    Ok(Backup {
        stamp,
        files: vec![relay_path, transport_path],
    })
}

/// Writes `BACKUP_DIR/relay_domains_map.STAMP.bak` beside the generation `stamp` that
/// [`PostfixWrite::backup`](crate::PostfixWrite::backup) has just written. Rotation deletes it
/// with its generation.
pub(crate) fn write_relay_domains_map(
    dir: &Path,
    stamp: &str,
    text: &str,
) -> Result<PathBuf, PostfixError> {
    let path = dir.join(format!("{RELAY_DOMAINS_MAP_BACKUP}.{stamp}.bak"));
    relay_fs::replace(&path, text.as_bytes(), 0o600)?;
    record_digests(dir, stamp, &[(RELAY_DOMAINS_MAP_BACKUP, text)])?;
    Ok(path)
}

/// Adds the digests of files just written beside generation `stamp` to its index entry.
fn record_digests(dir: &Path, stamp: &str, files: &[(&str, &str)]) -> Result<(), PostfixError> {
    let mut index = read_index(dir)?;
    let Some(entry) = index.get_mut(stamp) else {
        // Not a generation relay-sync recorded: the file stays unvouched, and a restore of it
        // needs --force.
        return Ok(());
    };
    for (kind, text) in files {
        entry
            .digests
            .insert((*kind).to_owned(), sha256_hex(text.as_bytes()));
    }
    write_index(dir, &index)
}

/// Name prefix of map mode's table backups.
pub(crate) const RELAY_DOMAINS_MAP_BACKUP: &str = "relay_domains_map";

/// Name prefix of `relay_recipient_maps` backups (recipient validation).
pub(crate) const RELAY_RECIPIENT_MAPS_BACKUP: &str = "relay_recipient_maps";

/// Name prefix of the recipients table's backups.
pub(crate) const RECIPIENTS_MAP_BACKUP: &str = "relay_recipients";

/// Writes the recipient side of the generation `stamp`: `relay_recipient_maps` as it was and,
/// when there is one, the recipients table's source. Rotation deletes them with their
/// generation.
pub(crate) fn write_recipients(
    dir: &Path,
    stamp: &str,
    relay_recipient_maps: &str,
    table: Option<&str>,
) -> Result<Vec<PathBuf>, PostfixError> {
    let mut files = Vec::with_capacity(2);
    let path = dir.join(format!("{RELAY_RECIPIENT_MAPS_BACKUP}.{stamp}.bak"));
    let value = format!("{relay_recipient_maps}\n");
    relay_fs::replace(&path, value.as_bytes(), 0o600)?;
    files.push(path);
    let mut digests = vec![(RELAY_RECIPIENT_MAPS_BACKUP, value.as_str())];
    if let Some(text) = table {
        let path = dir.join(format!("{RECIPIENTS_MAP_BACKUP}.{stamp}.bak"));
        relay_fs::replace(&path, text.as_bytes(), 0o600)?;
        files.push(path);
        digests.push((RECIPIENTS_MAP_BACKUP, text));
    }
    record_digests(dir, stamp, &digests)?;
    Ok(files)
}

/// Creates the backup directory with mode 0700, or tightens an existing one to 0700: backups
/// hold the gateway's configuration and need not be readable by anyone but root. Never through
/// a symbolic link ([`relay_fs::tighten_dir`]).
fn ensure_private_dir(dir: &Path) -> Result<(), PostfixError> {
    relay_fs::create_dir(dir, 0o700)?;
    Ok(relay_fs::tighten_dir(dir, 0o700)?)
}

/// Deletes generations beyond `keep`, the table backups of deleted generations, and the
/// temporary files of backup writes that a crash interrupted (this user's, named by the
/// pattern). Files not named by the pattern are kept.
///
/// Generations that end in [`Origin::Failed`] (a run that wrote them, failed and rolled back)
/// are counted apart: the newest `keep` of them are kept, and they never push out one from a
/// run that worked. `current`, the generation just written, is neither counted nor deleted: its
/// run has not ended, and it is the one a failed run restores from. So until the run is over
/// (see [`finish_backups`]) there may be `keep` others beside it.
fn rotate(dir: &Path, keep: usize, current: Option<&str>) -> Result<(), PostfixError> {
    for entry in fs::read_dir(dir).map_err(|source| io("list", dir, source))? {
        let entry = entry.map_err(|source| io("list", dir, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let interrupted = relay_fs::temp_name_base(&name).is_some_and(|n| {
            KINDS
                .iter()
                .chain([&RELAY_DOMAINS_MAP_BACKUP])
                .any(|kind| stamp_of(n, kind).is_some())
        });
        if interrupted {
            relay_fs::remove_leftover(&entry.path(), false)?;
        }
    }
    let generations = list_backups(dir)?;
    let others: Vec<&BackupGeneration> = generations
        .iter()
        .filter(|g| Some(g.stamp.as_str()) != current)
        .collect();
    let mut doomed: Vec<&BackupGeneration> = Vec::new();
    for failed in [true, false] {
        let kind: Vec<&&BackupGeneration> = others
            .iter()
            .filter(|g| (g.origin == Origin::Failed) == failed)
            .collect();
        let excess = kind.len().saturating_sub(keep);
        doomed.extend(kind[..excess].iter().map(|g| **g));
    }
    for generation in &doomed {
        for path in [
            &generation.relay_domains,
            &generation.transport,
            &generation.relay_domains_map,
            &generation.relay_recipient_maps,
            &generation.recipients_map,
        ]
        .into_iter()
        .flatten()
        {
            fs::remove_file(path).map_err(|source| io("delete old backup", path, source))?;
        }
    }
    // Map mode's table backups go with their generation (only names that follow the pattern:
    // `relay_domains_map.manual.bak` is not ours).
    let kept: std::collections::BTreeSet<String> = list_backups(dir)?
        .into_iter()
        .map(|generation| generation.stamp)
        .collect();
    for entry in fs::read_dir(dir).map_err(|source| io("list", dir, source))? {
        let entry = entry.map_err(|source| io("list", dir, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = [
            RELAY_DOMAINS_MAP_BACKUP,
            RELAY_RECIPIENT_MAPS_BACKUP,
            RECIPIENTS_MAP_BACKUP,
        ]
        .into_iter()
        .filter_map(|prefix| stamp_of(&name, prefix))
        .any(|stamp| Some(stamp) != current && !kept.contains(stamp));
        if orphan {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| io("delete old backup", &path, source))?;
        }
    }
    // The index keeps only generations that still exist.
    let mut index = read_index(dir)?;
    let before = index.len();
    index.retain(|stamp, _| kept.contains(stamp) || Some(stamp.as_str()) == current);
    if index.len() == before {
        return Ok(());
    }
    write_index(dir, &index)
}

/// The file in `BACKUP_DIR` recording the order generations were written in, their origin and
/// the digests of their files: `SEQUENCE STAMP ORIGIN [PREFIX=SHA256]…` lines (a line without
/// digests is from a relay-sync that did not record them yet).
pub const GENERATIONS_INDEX: &str = "relay-sync.generations";

/// The highest sequence relay-sync writes, and reads: a generation every second would reach it
/// after 136 years. A larger one was not written by relay-sync, and refusing it keeps the next
/// sequence from wrapping (an index line of `18446744073709551615` made relay-sync's counter
/// wrap to 0, and the generation on that line stayed "newest" for ever).
pub(crate) const MAX_SEQUENCE: u64 = 4_294_967_295;

/// One generation's line in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Its place in the order generations were written.
    sequence: u64,
    /// What wrote it, and how that ended.
    origin: Origin,
    /// The SHA-256 of each of its files, by name prefix; empty on a line from before digests.
    digests: BTreeMap<String, String>,
}

/// What wrote a generation, and how that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A sync, before a change that was applied (or still running).
    Sync,
    /// `relay-sync rollback`, saving the state it replaced.
    Rollback,
    /// A sync whose change failed and was rolled back: it holds the state that is still in
    /// place, so it does not count toward `BACKUP_KEEP`.
    Failed,
    /// Written before generations were recorded.
    Unknown,
}

impl Origin {
    /// The word in the index and in `relay-sync backups`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Sync => "sync",
            Origin::Rollback => "rollback",
            Origin::Failed => "failed",
            Origin::Unknown => "unknown",
        }
    }

    fn parse(word: &str) -> Origin {
        match word {
            "sync" => Origin::Sync,
            "rollback" => Origin::Rollback,
            "failed" => Origin::Failed,
            _ => Origin::Unknown,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The index: stamp → its [`Entry`]. A missing file is an empty index. A line that does not
/// parse as relay-sync writes it (a sequence that is not a number up to [`MAX_SEQUENCE`], a
/// stamp that is not one, a digest that is not `PREFIX=` and 64 hex digits) refuses the whole
/// index, naming the line: relay-sync wrote none of it, and skipping or wrapping it would let
/// it decide which generation is newest.
fn read_index(dir: &Path) -> Result<BTreeMap<String, Entry>, PostfixError> {
    let path = dir.join(GENERATIONS_INDEX);
    let Some(text) = relay_fs::read_to_string(Kind::BACKUP_INDEX, &path)? else {
        return Ok(BTreeMap::new());
    };
    let mut index = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (stamp, entry) = parse_index_line(line).map_err(|problem| {
            PostfixError::from(relay_fs::FsError::Refused {
                path: path.clone(),
                problem: format!("line {}: {problem}", number + 1),
                fix: format!(
                    "remove that line (`sed -i '{}d' {}`): its generation then needs \
                     `rollback --force`",
                    number + 1,
                    relay_fs::shell_word(&path)
                ),
            })
        })?;
        index.insert(stamp, entry);
    }
    Ok(index)
}

/// One index line, or what is wrong with it (its words shown escaped and cut).
fn parse_index_line(line: &str) -> Result<(String, Entry), String> {
    let shown = |word: &str| format!("{:?}", word.chars().take(40).collect::<String>());
    let mut words = line.split_whitespace();
    let (Some(sequence), Some(stamp), Some(origin)) = (words.next(), words.next(), words.next())
    else {
        return Err("not SEQUENCE STAMP ORIGIN".to_owned());
    };
    let sequence = sequence
        .parse::<u64>()
        .ok()
        .filter(|s| sequence.bytes().all(|b| b.is_ascii_digit()) && *s <= MAX_SEQUENCE)
        .ok_or_else(|| {
            format!(
                "the sequence {} is not a number from 0 to {MAX_SEQUENCE}",
                shown(sequence)
            )
        })?;
    if stamp_key(stamp).is_none() {
        return Err(format!("{} is not a backup stamp", shown(stamp)));
    }
    let mut digests = BTreeMap::new();
    for word in words {
        let digest = word.split_once('=').filter(|(kind, hex)| {
            ALL_PREFIXES.contains(kind)
                && hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        let Some((kind, hex)) = digest else {
            return Err(format!(
                "{} is not a file's digest (PREFIX=SHA256)",
                shown(word)
            ));
        };
        digests.insert(kind.to_owned(), hex.to_owned());
    }
    Ok((
        stamp.to_owned(),
        Entry {
            sequence,
            origin: Origin::parse(origin),
            digests,
        },
    ))
}

/// Every name prefix a generation's files have.
const ALL_PREFIXES: [&str; 5] = [
    "relay_domains",
    "transport",
    RELAY_DOMAINS_MAP_BACKUP,
    RELAY_RECIPIENT_MAPS_BACKUP,
    RECIPIENTS_MAP_BACKUP,
];

fn write_index(dir: &Path, index: &BTreeMap<String, Entry>) -> Result<(), PostfixError> {
    let mut entries: Vec<(&String, &Entry)> = index.iter().collect();
    entries.sort_by_key(|(stamp, entry)| (entry.sequence, (*stamp).clone()));
    let mut text = String::from(
        "# relay-sync's backup generations, oldest first: SEQUENCE STAMP ORIGIN, then the SHA-256\n\
         # of each file. Written by relay-sync; the sequence, not the stamp's clock, says which is\n\
         # newest, and a restore checks each file against its digest.\n",
    );
    for (stamp, entry) in entries {
        text.push_str(&format!("{} {stamp} {}", entry.sequence, entry.origin));
        for (kind, hex) in &entry.digests {
            text.push_str(&format!(" {kind}={hex}"));
        }
        text.push('\n');
    }
    Ok(relay_fs::replace(
        &dir.join(GENERATIONS_INDEX),
        text.as_bytes(),
        0o600,
    )?)
}

/// The sequence of the newest generation in `dir` (0 when there is none): what a caller reads
/// before a run, to know afterwards which generations the run wrote.
pub fn newest_backup_sequence(dir: &Path) -> Result<u64, PostfixError> {
    Ok(read_index(dir)?
        .values()
        .map(|entry| entry.sequence)
        .max()
        .unwrap_or(0))
}

/// Ends a run's backups: the generations written after `since` (see
/// [`newest_backup_sequence`]) get `origin`, and generations beyond `keep` are deleted (see
/// the rotation rule: failed ones never push out the others).
pub fn finish_backups(
    dir: &Path,
    since: u64,
    origin: Origin,
    keep: usize,
) -> Result<(), PostfixError> {
    let mut index = read_index(dir)?;
    let mut changed = false;
    for entry in index.values_mut() {
        if entry.sequence > since && entry.origin != origin {
            entry.origin = origin;
            changed = true;
        }
    }
    if changed {
        write_index(dir, &index)?;
    }
    if dir.is_dir() {
        rotate(dir, keep.max(1), None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stamps_sort_by_second_then_counter() {
        assert!(stamp_key("20261123-120000").is_some());
        assert!(stamp_key("20261123-120000-10") > stamp_key("20261123-120000-9"));
        assert!(stamp_key("20261123-120001") > stamp_key("20261123-120000-9"));
        assert_eq!(stamp_key("2026112-120000"), None);
        assert_eq!(stamp_key("20261123x120000"), None);
        assert_eq!(
            stamp_of("transport.20261123-120000.bak", "transport"),
            Some("20261123-120000")
        );
        assert_eq!(stamp_of("transport.notes.bak", "transport"), None);
    }

    #[test]
    fn only_canonical_stamps_are_stamps() {
        for foreign in [
            "20261123-120000-1",
            "20261123-120000-0",
            "20261123-120000-02",
            "20261123-120000-+3",
            "20261123-120000-",
            "20261123-120000-x",
            "20261123-120000-99999999999",
            "20261123-1200000",
            "20261123-12000é",
            "",
        ] {
            assert_eq!(stamp_key(foreign), None, "{foreign:?}");
        }
        assert_eq!(
            stamp_key("20261123-120000-2"),
            Some(("20261123-120000".to_owned(), 2))
        );
    }

    #[test]
    fn a_generation_stamped_before_older_ones_is_still_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A backup from the future: the clock was set back since.
        for kind in KINDS {
            fs::write(dir.path().join(format!("{kind}.29991231-235959.bak")), "x").unwrap();
        }
        let b = write(dir.path(), 1, "a.example", None).unwrap();
        // Until its run ends, the new generation is kept beside `keep` others.
        assert_eq!(list_backups(dir.path()).unwrap().len(), 2);
        finish_backups(dir.path(), 0, Origin::Sync, 1).unwrap();
        // Newest is the last written: the future-stamped one is the older, and goes.
        let left = list_backups(dir.path()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].stamp, b.stamp);
    }

    #[test]
    fn a_table_backup_belongs_to_its_generation_and_alone_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let b = backup_run(dir.path(), 3, "hash:/etc/postfix/relay_domains", Some(""));
        write_relay_domains_map(dir.path(), &b.stamp, "a.example OK\n").unwrap();
        let orphan = dir
            .path()
            .join(format!("{RELAY_DOMAINS_MAP_BACKUP}.20200101-000000.bak"));
        fs::write(&orphan, "b.example OK\n").unwrap();
        let generations = list_backups(dir.path()).unwrap();
        assert_eq!(generations.len(), 1, "{generations:?}");
        let contents = read_generation(dir.path(), &generations[0]).unwrap();
        assert_eq!(
            contents.relay_domains_map.as_deref(),
            Some("a.example OK\n")
        );

        // An inline generation has no table.
        let inline = backup_run(dir.path(), 3, "a.example", None);
        let contents = read_backup(dir.path(), Some(&inline.stamp)).unwrap();
        assert_eq!(contents.relay_domains_map, None);

        // The next backup deletes the orphan and a crashed write's temporary file of a table
        // backup, and never a file not named by the pattern.
        let foreign = dir
            .path()
            .join(format!("{RELAY_DOMAINS_MAP_BACKUP}.manual.bak"));
        fs::write(&foreign, "mine\n").unwrap();
        let crashed = dir.path().join(format!(
            ".{RELAY_DOMAINS_MAP_BACKUP}.{}.bak.Ab3dE6gH9jK1.relay-sync.tmp",
            inline.stamp
        ));
        fs::write(&crashed, "half").unwrap();
        backup_run(dir.path(), 3, "a.example", None);
        assert!(!orphan.exists());
        assert!(!crashed.exists());
        assert!(foreign.exists());
        // Rotation takes a generation's table backup with it.
        let table_of_b = generations[0].relay_domains_map.clone().unwrap();
        assert!(table_of_b.exists());
        backup_run(dir.path(), 3, "a.example", None);
        assert!(!table_of_b.exists());
        assert_eq!(list_backups(dir.path()).unwrap().len(), 3);
        assert!(foreign.exists());
    }

    /// One run's backup as relay-ops makes it: written, then finished with its origin.
    fn backup_run(dir: &Path, keep: usize, relay_domains: &str, transport: Option<&str>) -> Backup {
        backup_ending(dir, keep, relay_domains, transport, Origin::Sync)
    }

    fn backup_ending(
        dir: &Path,
        keep: usize,
        relay_domains: &str,
        transport: Option<&str>,
        origin: Origin,
    ) -> Backup {
        let since = newest_backup_sequence(dir).unwrap();
        let backup = write(dir, keep, relay_domains, transport).unwrap();
        finish_backups(dir, since, origin, keep).unwrap();
        backup
    }

    /// Issue "hardened", finding 6: with BACKUP_KEEP=2 and a run failing every 5 minutes, the
    /// generations of the runs that worked stay; the failed ones are kept apart, at most 2.
    #[test]
    fn failed_runs_never_push_out_a_good_generation() {
        let dir = tempfile::tempdir().unwrap();
        let good: Vec<String> = (0..3)
            .map(|i| backup_run(dir.path(), 2, &format!("good{i}"), None).stamp)
            .collect();
        let failed: Vec<String> = (0..6)
            .map(|i| backup_ending(dir.path(), 2, &format!("bad{i}"), None, Origin::Failed).stamp)
            .collect();
        let left = list_backups(dir.path()).unwrap();
        let by_origin = |origin| -> Vec<&str> {
            left.iter()
                .filter(|g| g.origin == origin)
                .map(|g| g.stamp.as_str())
                .collect()
        };
        assert_eq!(by_origin(Origin::Sync), [&good[1], &good[2]]);
        assert_eq!(by_origin(Origin::Failed), [&failed[4], &failed[5]]);
        // The order is the order of writing.
        let sequences: Vec<u64> = left.iter().map(|g| g.sequence.unwrap()).collect();
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
        let index = fs::read_to_string(dir.path().join(GENERATIONS_INDEX)).unwrap();
        assert_eq!(
            index.lines().filter(|l| !l.starts_with('#')).count(),
            4,
            "{index}"
        );
    }

    #[test]
    fn keep_zero_still_keeps_the_generation_just_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = write(dir.path(), 0, "a.example", None).unwrap();
        let left = list_backups(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].stamp, b.stamp);
        assert_eq!(fs::read(left[0].transport.as_ref().unwrap()).unwrap(), b"");
    }

    #[test]
    fn same_second_gets_distinct_stamps_and_rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backup");
        fs::create_dir(&backups).unwrap();
        fs::write(backups.join("transport.keep-me.bak"), "foreign").unwrap();
        let mut stamps = Vec::new();
        for i in 0..7 {
            let b = backup_run(&backups, 5, &format!("v{i}"), Some("t"));
            stamps.push(b.stamp);
        }
        let unique: std::collections::BTreeSet<_> = stamps.iter().collect();
        assert_eq!(unique.len(), 7, "{stamps:?}");
        let left = list_backups(&backups).unwrap();
        assert_eq!(left.len(), 5);
        assert_eq!(left.last().unwrap().stamp, stamps[6]);
        assert_eq!(left.first().unwrap().stamp, stamps[2]);
        assert!(backups.join("transport.keep-me.bak").exists());
        let text =
            fs::read_to_string(left.last().unwrap().relay_domains.as_ref().unwrap()).unwrap();
        assert_eq!(text, "v6\n");
        let mode = fs::metadata(&backups).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file_mode = fs::metadata(left[0].transport.as_ref().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
    }

    /// The index records each file's SHA-256 when it is written (the table's and the
    /// recipients' too); a restore reads them back vouched for, and refuses a file that changed
    /// since, or one the index has no digest for, naming it.
    #[test]
    fn each_generation_is_vouched_for_by_the_digests_of_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = backup_run(
            dir.path(),
            3,
            "hash:/etc/postfix/relay_domains",
            Some("t\n"),
        );
        write_relay_domains_map(dir.path(), &b.stamp, "a.example OK\n").unwrap();
        write_recipients(dir.path(), &b.stamp, "hash:/r", Some("a@a.example OK\n")).unwrap();
        let index = fs::read_to_string(dir.path().join(GENERATIONS_INDEX)).unwrap();
        let line = index.lines().find(|l| l.contains(&b.stamp)).unwrap();
        for kind in ALL_PREFIXES {
            assert!(line.contains(&format!(" {kind}=")), "{kind}: {line}");
        }
        assert!(
            line.contains(&format!(" transport={}", sha256_hex(b"t\n"))),
            "{line}"
        );
        let generation = &list_backups(dir.path()).unwrap()[0];
        let contents = read_generation(dir.path(), generation).unwrap();
        assert_eq!(contents.unvouched, None);
        assert_eq!(contents.recipients_map.as_deref(), Some("a@a.example OK\n"));

        // Changed since: refused, naming the file (exit 2 as a refusal).
        let transport = generation.transport.clone().unwrap();
        fs::write(&transport, "* smtp:[127.0.0.2]:2525\n").unwrap();
        let error = read_generation(dir.path(), generation).unwrap_err();
        assert!(
            matches!(&error, PostfixError::File(e) if e.is_refusal()),
            "{error}"
        );
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "refusing {}: it changed since relay-sync wrote it",
                transport.display()
            )),
            "{text}"
        );
        fs::write(&transport, "t\n").unwrap();
        read_generation(dir.path(), generation).unwrap();

        // A file beside the generation that relay-sync did not record.
        let other = backup_run(dir.path(), 3, "a.example", None);
        let planted = dir
            .path()
            .join(format!("{RELAY_DOMAINS_MAP_BACKUP}.{}.bak", other.stamp));
        fs::write(&planted, "static-ok.example OK\n").unwrap();
        let generation = list_backups(dir.path()).unwrap().pop().unwrap();
        let text = read_generation(dir.path(), &generation)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with(&format!(
                "refusing {}: the backup index records",
                planted.display()
            )) && text.contains("relay-sync did not write it"),
            "{text}"
        );
    }

    /// A generation from before digests (an index line of three words), or before the index,
    /// is read but said to be unvouched: `rollback` needs `--force` for it.
    #[test]
    fn a_generation_without_digests_is_read_unvouched() {
        let dir = tempfile::tempdir().unwrap();
        for kind in KINDS {
            fs::write(
                dir.path().join(format!("{kind}.20200101-000000.bak")),
                "a.example\n",
            )
            .unwrap();
            fs::write(
                dir.path().join(format!("{kind}.20200102-000000.bak")),
                "a.example\n",
            )
            .unwrap();
        }
        fs::write(
            dir.path().join(GENERATIONS_INDEX),
            "# an index from before digests\n7 20200102-000000 sync\n",
        )
        .unwrap();
        let generations = list_backups(dir.path()).unwrap();
        let unvouched: Vec<String> = generations
            .iter()
            .map(|g| read_generation(dir.path(), g).unwrap().unvouched.unwrap())
            .collect();
        assert!(
            unvouched[0].contains("not in the backup index"),
            "{unvouched:?}"
        );
        assert!(unvouched[1].contains("records no digest"), "{unvouched:?}");
    }

    /// Issue 19: an index line of `18446744073709551615` wrapped relay-sync's counter, and the
    /// generation on it stayed newest for ever. A sequence past [`MAX_SEQUENCE`], or a line
    /// that does not parse, refuses the index (naming the line), before anything is written.
    #[test]
    fn an_index_line_that_does_not_parse_or_fit_is_refused_not_wrapped() {
        for (line, problem) in [
            (
                "18446744073709551615 20991231-235959 sync",
                "the sequence \"18446744073709551615\" is not a number from 0 to 4294967295",
            ),
            (
                "99999999999999999999999 20991231-235959 sync",
                "is not a number",
            ),
            ("+5 20991231-235959 sync", "is not a number"),
            ("5 tomorrow sync", "\"tomorrow\" is not a backup stamp"),
            ("5 20991231-235959", "not SEQUENCE STAMP ORIGIN"),
            (
                "5 20991231-235959 sync transport=abc",
                "\"transport=abc\" is not a file's digest",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let index = dir.path().join(GENERATIONS_INDEX);
            fs::write(&index, format!("# relay-sync's\n{line}\n")).unwrap();
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
            let error = write(dir.path(), 5, "a.example", None).unwrap_err();
            assert!(
                matches!(&error, PostfixError::File(e) if e.is_refusal()),
                "{error}"
            );
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("refusing {}: line 2: ", index.display()))
                    && text.contains(problem)
                    && text.contains(&format!("sed -i '2d' {}", index.display())),
                "{line}: {text}"
            );
            assert!(list_backups(dir.path()).is_err(), "{line}");
            // Nothing was written beside the index.
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{line}");
        }
        // The highest sequence relay-sync writes is read, and has no next one.
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(GENERATIONS_INDEX),
            format!("{MAX_SEQUENCE} 20200101-000000 sync\n"),
        )
        .unwrap();
        let text = write(dir.path(), 5, "a.example", None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("there is no next one"), "{text}");
    }

    /// The `sed` that drops a bad index line can be pasted as it is printed, whatever the
    /// name of `BACKUP_DIR`.
    #[test]
    fn the_sed_that_drops_an_index_line_is_quoted_for_a_shell() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("mail backups");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let index = dir.join(GENERATIONS_INDEX);
        fs::write(&index, "5 tomorrow sync\n").unwrap();
        let text = list_backups(&dir).unwrap_err().to_string();
        assert!(
            text.contains(&format!("`sed -i '1d' '{}'`", index.display())),
            "{text}"
        );
    }
}
