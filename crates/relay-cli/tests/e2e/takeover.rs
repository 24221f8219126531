//! No file is created or changed through a path someone else controls (SECURITY.md, issue 11
//! findings 1, 2 and 4), checked on the built binary the way each takeover was reproduced: a
//! directory owned by `nobody` holding a link, planted at a name relay-sync uses, to a
//! root-owned 0600 victim; then a run; then the victim's owner, mode and contents, unchanged.
//!
//! Temporary names are unpredictable now, so links are planted at the fixed names earlier
//! versions used and at the final names, which a run must replace by rename, never write
//! through.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use relay_testbed::takeover::{nobody_dir, plant, Victim};

use crate::gateway::Gateway;

/// The fixed temporary name earlier versions used for `name` in `dir`.
fn fixed_temp(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.relay-sync.tmp"))
}

/// `METRICS_FILE` in a textfile collector's directory a local user can write: links at the
/// temporary and the final name are replaced by a regular file, never written through.
#[test]
fn takeover_metrics_file_in_a_nobody_dir_is_replaced_not_written_through() {
    let gw = Gateway::start("kuma8088.com", "");
    let textfile = nobody_dir(&gw.dir.path().join("textfile"));
    let metrics = textfile.join("relay-sync.prom");
    gw.edit_config(|text| format!("{text}METRICS_FILE={}\n", metrics.display()));
    let victim = Victim::new();
    let final_victim = Victim::new();
    plant(&fixed_temp(&textfile, "relay-sync.prom"), &victim.path);
    plant(&metrics, &final_victim.path);

    gw.sync_expecting(0);

    victim.assert_untouched();
    final_victim.assert_untouched();
    let meta = fs::symlink_metadata(&metrics).unwrap();
    assert!(meta.file_type().is_file(), "the link was written through");
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert!(fs::read_to_string(&metrics)
        .unwrap()
        .contains("relay_sync_last_success"));
}

/// `STATE_DIR` owned by `nobody`, with links at the temporary names of every file a run writes
/// there (state, the alert outbox, the reload journal, the postconf cache): the run is refused
/// (exit 2) naming the directory and the `chown` that fixes it, and what it records there is
/// written by rename, never through a link; the victim is untouched.
#[test]
fn takeover_state_dir_owned_by_nobody_is_never_written_through() {
    let gw = Gateway::start("kuma8088.com", "");
    let state = nobody_dir(&gw.dir.path().join("state"));
    let victim = Victim::new();
    for name in [
        "state",
        "alerts.pending",
        "reload.pending",
        "postconf.cache",
    ] {
        plant(&fixed_temp(&state, name), &victim.path);
    }

    let run = gw.run(&[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("run `chown root {}`", state.display())),
        "{run:?}"
    );
    victim.assert_untouched();
    let meta = fs::symlink_metadata(state.join("state")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
}

/// The run lock, replaced by `nobody` with a link: the lock is not taken through it (the pid
/// line would overwrite the victim), the run stops, and the victim is untouched.
#[test]
fn takeover_lock_file_link_planted_by_nobody_is_refused() {
    let gw = Gateway::start("kuma8088.com", "");
    let state = nobody_dir(&gw.dir.path().join("state"));
    let victim = Victim::new();
    let lock = state.join("relay-sync.lock");
    plant(&lock, &victim.path);

    let run = gw.run(&[]);
    assert_ne!(run.code, 0, "{run:?}");
    victim.assert_untouched();
    let said = format!("{}{}", run.stderr, gw.log());
    assert!(said.contains(&lock.display().to_string()), "{run:?}");
}

/// `BACKUP_DIR` owned by `nobody`, with links at the temporary names of the backups of this
/// second and the next few: the backup is refused before anything is written or changed
/// (exit 5, nothing to roll back), naming the directory and the `chown` that fixes it; the
/// victim is untouched and the directory keeps its mode.
#[test]
fn takeover_backup_dir_owned_by_nobody_is_never_written_through() {
    let gw = Gateway::start("kuma8088.com", "");
    let backups = nobody_dir(&gw.backup_dir());
    let victim = Victim::new();
    let now = chrono::Local::now();
    for second in 0..15 {
        let stamp = (now + chrono::Duration::seconds(second)).format("%Y%m%d-%H%M%S");
        for kind in ["relay_domains", "transport"] {
            plant(
                &fixed_temp(&backups, &format!("{kind}.{stamp}.bak")),
                &victim.path,
            );
        }
    }
    let files = gw.files_before_first_sync();

    let run = gw.run(&[]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("run `chown root {}`", backups.display())),
        "{run:?}"
    );
    victim.assert_untouched();
    assert_eq!(gw.files_before_first_sync(), files, "Postfix was changed");
    assert_eq!(fs::metadata(&backups).unwrap().mode() & 0o7777, 0o755);
    for entry in fs::read_dir(&backups).unwrap() {
        let entry = entry.unwrap();
        assert!(entry.file_type().unwrap().is_symlink(), "{entry:?} written");
    }
}

/// A `BACKUP_DIR` that is a symbolic link (root's own) to a 0755 directory: the backups go
/// there, and the directory the link points to is not chmodded to 0700 through it.
#[test]
fn takeover_symlinked_backup_dir_keeps_its_targets_mode() {
    let gw = Gateway::start("kuma8088.com", "");
    let target = gw.dir.path().join("shared-backups");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(&target, gw.backup_dir()).unwrap();

    gw.sync_expecting(0);
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);
    assert!(!relay_postfix::list_backups(&target).unwrap().is_empty());
}

/// The transport file in a directory `nobody` can write, replaced by `nobody` with a link to
/// the victim: the run refuses, naming the link, and neither reads nor writes the victim.
#[test]
fn takeover_transport_link_planted_by_nobody_is_refused() {
    let gw = Gateway::start("kuma8088.com", "");
    let maps = nobody_dir(&gw.dir.path().join("maps"));
    let transport = maps.join("transport");
    gw.postfix
        .command(
            "/usr/sbin/postconf",
            &[
                "-e",
                &format!("transport_maps = hash:{}", transport.display()),
            ],
        )
        .unwrap();
    gw.edit_config(|text| format!("{text}TRANSPORT_FILE={}\n", transport.display()));
    let victim = Victim::new();
    plant(&fixed_temp(&maps, "transport"), &victim.path);
    plant(&transport, &victim.path);

    let run = gw.run(&[]);
    assert_ne!(run.code, 0, "{run:?}");
    victim.assert_untouched();
    let said = format!("{}{}", run.stderr, gw.log());
    assert!(said.contains(&transport.display().to_string()), "{said}");
    assert!(said.contains("owned by uid 65534"), "{said}");
}

/// A `postmap` (a compromised mail container behind `POSTFIX_COMMAND_PREFIX` can do the same,
/// with no race) that leaves a link to the victim where the database should be: the step
/// fails naming the file, the run is rolled back, and the victim is untouched.
#[test]
fn takeover_postmap_database_left_as_a_link_is_refused() {
    let gw = Gateway::start("kuma8088.com", "");
    gw.sync_expecting(0);
    gw.sql("INSERT INTO mailserver_usermgmt.domains (name, enabled) VALUES ('new.example', 1)");
    let victim = Victim::new();
    let commands = gw.stand_in_commands(
        "link-postmap",
        &[(
            "postmap",
            &format!(
                "case \" $* \" in *\" -q \"*) exec /usr/sbin/postmap \"$@\";; esac\n\
                 /usr/sbin/postmap \"$@\" || exit $?\n\
                 for a in \"$@\"; do case \"$a\" in hash:*) f=\"${{a#hash:}}.db\"; \
                 rm -f \"$f\"; ln -s '{}' \"$f\";; esac; done",
                victim.path.display()
            ),
        )],
    );
    let transport_before = gw.transport();

    let run = gw.run_env(&[], &[("POSTFIX_COMMAND_DIR", commands.to_str().unwrap())]);
    assert!(matches!(run.code, 5 | 6), "{run:?}\n{}", gw.log());
    victim.assert_untouched();
    let log = gw.log();
    assert!(log.contains("transport.db"), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(gw.transport(), transport_before);
    assert_eq!(gw.lookup("new.example"), None);
}

/// `LOG_FILE` replaced by `nobody` with a link to the victim: the run stops before it logs a
/// line (exit 2), naming the log file, and the victim gets nothing appended. A link root made
/// is root's choice and is followed.
#[test]
fn takeover_log_file_link_owned_by_nobody_is_refused() {
    let gw = Gateway::start("kuma8088.com", "");
    let log_dir = gw.dir.path().join("log");
    fs::create_dir(&log_dir).unwrap();
    let log_file = log_dir.join("relay-sync.log");
    let victim = Victim::new();
    plant(&log_file, &victim.path);

    let run = gw.run(&[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&log_file.display().to_string()),
        "{run:?}"
    );
    victim.assert_untouched();

    // Root's own link into a shared log directory.
    let shared = tempfile::tempdir().unwrap();
    let target = shared.path().join("relay-sync.log");
    fs::write(&target, "").unwrap();
    fs::remove_file(&log_file).unwrap();
    std::os::unix::fs::symlink(&target, &log_file).unwrap();
    gw.sync_expecting(0);
    assert!(fs::read_to_string(&target).unwrap().contains("INFO"));
}
