//! `relay-sync rollback [--to STAMP]` and `relay-sync backups` (SPEC §6): restore a backup
//! generation by hand, and list them.
//!
//! A rollback takes the run lock (a sync must not run in the middle of it), backs up the
//! current state first (so a rollback can itself be rolled back: it becomes the newest
//! generation), then restores the transport file (written atomically and rebuilt under a
//! temporary name, like a sync), map mode's table when the generation has one, sets
//! `relay_domains`, and reloads Postfix, all through
//! `PostfixWrite`. The next sync applies the database again: a rollback is for getting mail
//! flowing while the cause is found, with the timer or cron entry paused if needed.

use std::fs;

use relay_postfix::{
    list_backups, read_generation, BackupGeneration, PostfixCli, PostfixRead, PostfixWrite,
};

use crate::config::Config;

/// Why a rollback could not be done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RollbackError {
    /// No backups at all.
    #[error("no backups in {0}: nothing to roll back to")]
    NoBackups(String),
    /// `--to STAMP` names no generation.
    #[error("no backup generation {stamp} in {dir}; `relay-sync backups` lists them")]
    UnknownStamp {
        /// The stamp asked for.
        stamp: String,
        /// The backup directory.
        dir: String,
    },
    /// A Postfix step failed.
    #[error(transparent)]
    Postfix(#[from] relay_postfix::PostfixError),
}

/// Picks the generation: `--to STAMP`, or the newest.
pub(crate) fn pick(
    generations: &[BackupGeneration],
    to: Option<&str>,
    dir: &str,
) -> Result<BackupGeneration, RollbackError> {
    let generation = match to {
        Some(stamp) => generations
            .iter()
            .find(|g| g.stamp == stamp)
            .ok_or_else(|| RollbackError::UnknownStamp {
                stamp: stamp.to_owned(),
                dir: dir.to_owned(),
            })?,
        None => generations
            .last()
            .ok_or_else(|| RollbackError::NoBackups(dir.to_owned()))?,
    };
    Ok(generation.clone())
}

/// Restores `to` (or the newest generation). The caller holds the run lock and has set up
/// logging.
pub(crate) fn rollback(config: &Config, to: Option<&str>) -> Result<String, RollbackError> {
    let dir = config.backup_dir.display().to_string();
    let generations = list_backups(&config.backup_dir)?;
    let generation = pick(&generations, to, &dir)?;
    let contents = read_generation(&config.backup_dir, &generation)?;
    let stamp = contents.stamp;
    let relay_domains = contents.relay_domains;
    let transport = contents.transport;
    tracing::info!("Rolling back to backup {stamp} by request");

    let postfix = PostfixCli::new(config.postfix_settings())?
        .with_relay_domains_map(config.relay_domains_map.clone());
    let current_relay = postfix.relay_domains()?;
    let current_transport = postfix.read_transport()?;
    let current_table = postfix.read_relay_domains_map()?;
    let mut saved = postfix.backup(&current_relay, current_transport.as_deref())?;
    if let Some(text) = &current_table {
        saved
            .files
            .push(postfix.backup_relay_domains_map(&saved.stamp, text)?);
    }
    for file in &saved.files {
        tracing::info!("Backup created: {}", file.display());
    }
    postfix.write_transport(&transport)?;
    tracing::info!(
        "Restored transport file {} from {stamp}",
        config.transport_file.display()
    );
    // Map mode's domains are in the table: it goes back before relay_domains names it.
    if let Some(table) = &contents.relay_domains_map {
        postfix.write_relay_domains_map(table)?;
        tracing::info!(
            "Restored relay domains table {} from {stamp}",
            config.relay_domains_map.display()
        );
    }
    postfix.set_relay_domains(&relay_domains)?;
    tracing::info!("Restored relay_domains: {relay_domains}");
    postfix.reload()?;
    tracing::info!("Postfix reloaded successfully");
    tracing::info!("Rollback successful");
    Ok(format!(
        "rolled back to {stamp}; the state before the rollback was saved as {}. The next sync applies \
         the database again: pause the timer or cron entry if it must not.\n",
        saved.stamp
    ))
}

/// What `relay-sync backups` prints: one line per generation, oldest first.
pub(crate) fn render_backups(config: &Config) -> Result<String, RollbackError> {
    let generations = list_backups(&config.backup_dir)?;
    if generations.is_empty() {
        return Ok(format!("no backups in {}\n", config.backup_dir.display()));
    }
    let mut out = format!(
        "backups in {} (oldest first):\n",
        config.backup_dir.display()
    );
    let newest = generations.len() - 1;
    for (i, g) in generations.iter().enumerate() {
        let relay = g
            .relay_domains
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .map(|v| v.trim_end().to_owned());
        // Counted as a sync would see them: plain domain names, not tables or parameters.
        let domains = relay
            .as_deref()
            .and_then(|v| relay_core::RelayDomains::parse(v).ok())
            .map_or(0, |parsed| parsed.domains.len());
        // Map mode's domains are in its table: one `DOMAIN OK` line each.
        let table = g
            .relay_domains_map
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .map(|text| {
                let entries = text
                    .lines()
                    .filter(|line| !line.trim_start().is_empty() && !line.starts_with('#'))
                    .count();
                format!(", {entries} in its table")
            })
            .unwrap_or_default();
        let kinds: Vec<&str> = [
            g.relay_domains.as_ref().map(|_| "relay_domains"),
            g.transport.as_ref().map(|_| "transport"),
            g.relay_domains_map.as_ref().map(|_| "relay_domains_map"),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.push_str(&format!(
            "{}  {} domain(s) in relay_domains{table}; {}{}\n",
            g.stamp,
            domains,
            kinds.join(" + "),
            if i == newest { "  (newest)" } else { "" }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_or_the_named_one() {
        // Built by relay-postfix from file names, as a rollback sees them.
        let dir = tempfile::tempdir().unwrap();
        for stamp in ["20261123-110000", "20261123-100000"] {
            fs::write(dir.path().join(format!("transport.{stamp}.bak")), "").unwrap();
        }
        let all = list_backups(dir.path()).unwrap();
        assert_eq!(pick(&all, None, "/b").unwrap().stamp, "20261123-110000");
        assert_eq!(
            pick(&all, Some("20261123-100000"), "/b").unwrap().stamp,
            "20261123-100000"
        );
        insta::assert_snapshot!(
            pick(&all, Some("20261123-090000"), "/b").unwrap_err().to_string(),
            @"no backup generation 20261123-090000 in /b; `relay-sync backups` lists them"
        );
        insta::assert_snapshot!(
            pick(&[], None, "/b").unwrap_err().to_string(),
            @"no backups in /b: nothing to roll back to"
        );
    }
}
