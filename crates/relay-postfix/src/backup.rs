//! Backups (SPEC §6): `BACKUP_DIR/relay_domains.STAMP.bak` and `BACKUP_DIR/transport.STAMP.bak`,
//! STAMP being `YYYYMMDD-HHMMSS` in local time (with `-2`, `-3`, … when that second is taken),
//! the newest `BACKUP_KEEP` generations of each kind kept.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atomic::{self, io};
use crate::{Backup, PostfixError};

/// The kinds of backup file, by name prefix.
pub(crate) const KINDS: [&str; 2] = ["relay_domains", "transport"];

/// One generation of backups: the files sharing a stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupGeneration {
    /// `YYYYMMDD-HHMMSS` or `YYYYMMDD-HHMMSS-N`.
    pub stamp: String,
    /// `relay_domains.STAMP.bak`, when present.
    pub relay_domains: Option<PathBuf>,
    /// `transport.STAMP.bak`, when present.
    pub transport: Option<PathBuf>,
}

/// A stamp's sort key: the second, then the same-second counter (so `-10` sorts after `-9`).
fn stamp_key(stamp: &str) -> Option<(String, u32)> {
    let (base, counter) = match stamp.len() {
        15 => (stamp, 1),
        n if n > 16 && stamp.as_bytes()[15] == b'-' => (&stamp[..15], stamp[16..].parse().ok()?),
        _ => return None,
    };
    let ok = base.len() == 15
        && base.as_bytes()[8] == b'-'
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

/// Every backup generation in `dir`, oldest first. Files not named by the pattern are ignored.
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
                    relay_domains: None,
                    transport: None,
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
    Ok(generations.into_values().collect())
}

/// Writes a new generation and deletes generations beyond `keep`.
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
    atomic::replace(&relay_path, format!("{relay_domains}\n").as_bytes(), 0o600)?;
    // A transport file that did not exist is backed up as an empty file: restoring it gives an
    // empty map, which routes nothing, exactly like a missing one.
    atomic::replace(&transport_path, transport.unwrap_or("").as_bytes(), 0o600)?;
    rotate(dir, keep)?;
    Ok(Backup {
        stamp,
        files: vec![relay_path, transport_path],
    })
}

/// Creates the backup directory with mode 0700, or tightens an existing one to 0700: backups
/// hold the gateway's configuration and need not be readable by anyone but root.
fn ensure_private_dir(dir: &Path) -> Result<(), PostfixError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io("create", dir, source))?;
    }
    let mode = fs::metadata(dir)
        .map_err(|source| io("inspect", dir, source))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| io("set the mode of", dir, source))?;
    }
    Ok(())
}

/// Deletes the oldest generations of each kind beyond `keep`.
fn rotate(dir: &Path, keep: usize) -> Result<(), PostfixError> {
    let generations = list_backups(dir)?;
    for kind in KINDS {
        let files: Vec<&PathBuf> = generations
            .iter()
            .filter_map(|g| {
                if kind == "relay_domains" {
                    g.relay_domains.as_ref()
                } else {
                    g.transport.as_ref()
                }
            })
            .collect();
        let excess = files.len().saturating_sub(keep);
        for path in &files[..excess] {
            fs::remove_file(path).map_err(|source| io("delete old backup", path, source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn same_second_gets_distinct_stamps_and_rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backup");
        fs::create_dir(&backups).unwrap();
        fs::write(backups.join("transport.keep-me.bak"), "foreign").unwrap();
        let mut stamps = Vec::new();
        for i in 0..7 {
            let b = write(&backups, 5, &format!("v{i}"), Some("t")).unwrap();
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
}
