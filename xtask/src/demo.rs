//! `cargo xtask demo`: relay-sync's main job against a throwaway sandbox, narrated.
//!
//! A private MariaDB holds the admin panel's `domains` table (fixtures/sql), a private Postfix
//! plays the MX gateway, and relay-sync runs against both: a dry run, the first sync, a change
//! in the database, and a run that finds nothing to do. Everything is removed afterwards.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use relay_testbed::{MariaDb, Postfix};

pub(crate) fn run(binary: &Path) -> Result<()> {
    step("Starting a private MariaDB and a private Postfix on 127.0.0.1 (throwaway, in /tmp)");
    let db = MariaDb::start()?;
    db.load_fixtures()?;
    let postfix = Postfix::start("kuma8088.com, old.example")?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay-sync.conf");
    fs::write(
        &config,
        format!(
            "# A demo configuration: see docs/configuration.md for every key.\n\
             DB_HOST=127.0.0.1\nDB_PORT={}\nDB_USER=relay_sync\nDB_PASSWORD=relay-sync-test-pw\n\
             DELL_RELAY_IP=127.0.0.1\nDELL_RELAY_PORT=2525\nPRESERVE_DOMAINS=kuma8088.com\n\
             POSTFIX_CONFIG_DIR={}\nBACKUP_DIR={d}/backup\nLOG_FILE={d}/relay-sync.log\n\
             STATE_DIR={d}/state\n",
            db.port(),
            postfix.config_dir().display(),
            d = dir.path().display()
        ),
    )?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600))?;
    println!(
        "  MariaDB on 127.0.0.1:{}, Postfix config in {}",
        db.port(),
        postfix.config_dir().display()
    );
    println!("  enabled in the database: {}", enabled(&db)?);
    println!(
        "  Postfix relay_domains:   {}",
        postfix.postconf("relay_domains")?
    );

    step("relay-sync --dry-run: the plan and the diff, nothing changed");
    sync(binary, &config, &["--dry-run"])?;

    step("relay-sync: the first sync");
    sync(binary, &config, &[])?;
    println!(
        "  Postfix relay_domains now: {}",
        postfix.postconf("relay_domains")?
    );
    println!("  transport file now:");
    for line in fs::read_to_string(postfix.config_dir().join("transport"))?.lines() {
        println!("    {line}");
    }

    step("The admin enables new-customer.example and disables example.net; the next cron run:");
    db.sql(
        "INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('new-customer.example', 1); \
         UPDATE mailserver_usermgmt.domains SET enabled = 0 WHERE name = 'example.net';",
    )?;
    sync(binary, &config, &[])?;

    step("Nothing changed in the database: the run returns early and writes nothing");
    sync(binary, &config, &[])?;

    step("The log file, as an operator reads it");
    print!("{}", fs::read_to_string(dir.path().join("relay-sync.log"))?);
    step("Backups");
    let mut names: Vec<_> = fs::read_dir(dir.path().join("backup"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        println!("  {name}");
    }
    step("Stopping MariaDB and Postfix and removing the sandbox");
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn enabled(db: &MariaDb) -> Result<String> {
    let out =
        db.sql("SELECT name FROM mailserver_usermgmt.domains WHERE enabled = 1 ORDER BY name")?;
    Ok(out.lines().collect::<Vec<_>>().join(", "))
}

/// Runs relay-sync as cron would, and shows its exit code and output.
fn sync(binary: &Path, config: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    // Under cron, stderr holds the ERROR lines only; shown here so a failure is visible.
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    println!("  -> exit code {}", output.status.code().unwrap_or(-1));
    Ok(())
}
