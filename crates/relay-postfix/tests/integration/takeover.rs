//! No file is created or changed through a path someone else controls (SECURITY.md): each test
//! sets a takeover up the way it was reproduced — a directory owned by `nobody` holding a link,
//! planted at a name relay-sync uses, to a root-owned 0600 victim — runs the write, and checks
//! that the victim's owner, mode and contents are unchanged.
//!
//! Temporary names are unpredictable now; links are planted at the fixed names earlier versions
//! used and at the final names, which a write must replace by rename, never write through.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use relay_postfix::{PostfixCli, PostfixError, PostfixWrite};
use relay_testbed::takeover::{nobody_dir, plant, Victim};
use relay_testbed::Postfix;

use crate::{block, settings, HOP, NOBODY, NOGROUP};

/// The names a write of `name` in `dir` used before temporary names were random.
fn fixed_temp_names(dir: &Path, name: &str) -> Vec<PathBuf> {
    [
        format!(".{name}.relay-sync.tmp"),
        format!(".{name}.relay-sync.tmp.db"),
        format!("__db..{name}.relay-sync.tmp.db"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .collect()
}

/// A textfile collector's directory (`METRICS_FILE`'s) that a local user can write: the links at
/// the temporary name and at the final name are replaced, the victim is untouched, and the new
/// file is a regular file with the mode for a new file.
#[test]
fn replace_file_never_writes_through_a_link_planted_in_a_nobody_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = nobody_dir(&root.path().join("textfile"));
    let victim = Victim::new();
    let metrics = dir.join("relay-sync.prom");
    for link in fixed_temp_names(&dir, "relay-sync.prom") {
        plant(&link, &victim.path);
    }
    let final_victim = Victim::new();
    plant(&metrics, &final_victim.path);

    relay_fs::replace(&metrics, b"relay_sync_up 1\n", 0o644).unwrap();

    victim.assert_untouched();
    final_victim.assert_untouched();
    let meta = fs::symlink_metadata(&metrics).unwrap();
    assert!(meta.file_type().is_file(), "the link was written through");
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(fs::read_to_string(&metrics).unwrap(), "relay_sync_up 1\n");
}

/// `BACKUP_DIR` owned by `nobody`, with links planted at every temporary name a backup of this
/// second and the next few would have used: the backup is refused, naming the directory and
/// the `chown` that fixes it, before anything is written; the victim is untouched and the
/// directory is not chmodded (it is not root's).
#[test]
fn a_backup_never_writes_through_a_link_planted_in_a_nobody_backup_dir() {
    let postfix = Postfix::start("a.example").unwrap();
    let root = tempfile::tempdir().unwrap();
    let backups = nobody_dir(&root.path().join("backup"));
    let victim = Victim::new();
    let now = chrono::Local::now();
    let mut planted = 0;
    for second in 0..10 {
        let stamp = (now + chrono::Duration::seconds(second)).format("%Y%m%d-%H%M%S");
        for kind in ["relay_domains", "transport"] {
            for suffix in ["", "-2", "-3"] {
                let name = format!("{kind}.{stamp}{suffix}.bak");
                for link in fixed_temp_names(&backups, &name) {
                    plant(&link, &victim.path);
                    planted += 1;
                }
            }
        }
    }
    let cli = PostfixCli::new(settings(&postfix, &backups, None)).unwrap();

    let error = cli
        .backup("a.example", Some(&block(&["a.example"])))
        .unwrap_err();

    let text = error.to_string();
    assert!(text.contains("owned by uid 65534"), "{text}");
    assert!(
        text.contains(&format!("chown root {}", backups.display())),
        "{text}"
    );
    victim.assert_untouched();
    assert_eq!(
        fs::read_dir(&backups).unwrap().count(),
        planted,
        "a file was written"
    );
    assert_eq!(fs::metadata(&backups).unwrap().mode() & 0o7777, 0o755);
}

/// A `BACKUP_DIR` that is a symbolic link is never chmodded through: root's own link is used as
/// it is (its target keeps mode 0755), and a link `nobody` made is refused, naming it.
#[test]
fn a_symlinked_backup_dir_keeps_its_targets_mode() {
    let postfix = Postfix::start("a.example").unwrap();
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("shared");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let link = root.path().join("backup");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let cli = PostfixCli::new(settings(&postfix, &link, None)).unwrap();

    let backup = cli.backup("a.example", None).unwrap();
    assert_eq!(
        fs::metadata(&target).unwrap().mode() & 0o7777,
        0o755,
        "the link's target was chmodded"
    );
    assert!(backup.files.iter().all(|f| f.exists()));

    // The same link, made by `nobody`.
    std::os::unix::fs::lchown(&link, Some(NOBODY), Some(NOGROUP)).unwrap();
    let error = cli.backup("a.example", None).unwrap_err();
    assert!(
        error.to_string().contains(&link.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);
}

/// The transport file's directory owned by `nobody`, who replaced `transport` with a link to the
/// victim and planted links at the temporary names: the write is refused, naming the link, and
/// the victim is untouched. A link root made (configuration management) is still written
/// through.
#[test]
fn a_transport_link_nobody_planted_is_refused_and_the_victim_untouched() {
    let postfix = Postfix::start("a.example").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = nobody_dir(&root.path().join("postfix-maps"));
    let victim = Victim::new();
    let transport = dir.join("transport");
    for link in fixed_temp_names(&dir, "transport") {
        plant(&link, &victim.path);
    }
    plant(&transport, &victim.path);
    let mut s = settings(&postfix, &root.path().join("backup"), Some("hash"));
    s.transport_file = transport.clone();
    let cli = PostfixCli::new(s).unwrap();

    let error = cli.write_transport(&block(&["a.example"])).unwrap_err();
    assert!(
        error.to_string().contains(&transport.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("owned by uid 65534"), "{error}");
    victim.assert_untouched();
    // Reading it is refused the same way: the victim's text never reaches a plan.
    assert!(relay_postfix::PostfixRead::read_transport(&cli).is_err());

    // The same directory without the planted link at `transport`: written, and the links at
    // the old temporary names are neither followed nor in the way.
    fs::remove_file(&transport).unwrap();
    cli.write_transport(&block(&["a.example"])).unwrap();
    victim.assert_untouched();
    assert!(fs::symlink_metadata(&transport)
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(
        relay_postfix::PostfixRead::lookup_transport(&cli, "a.example")
            .unwrap()
            .as_deref(),
        Some(HOP)
    );
}

/// A `postmap` that leaves a link where its database should be (a compromised mail container,
/// reached through `POSTFIX_COMMAND_PREFIX`, can do that without any race): the database is
/// opened without following the link, refused with an error naming it, and neither the victim
/// nor the installed map is changed.
#[test]
fn a_database_postmap_left_as_a_link_is_refused_and_the_victim_untouched() {
    let postfix = Postfix::start("a.example").unwrap();
    let root = tempfile::tempdir().unwrap();
    let (good, _backups) = crate::cli(&postfix, Some("hash"));
    good.write_transport(&block(&["a.example"])).unwrap();
    // As reproduced: the victim became nobody 0644, the owner and mode of the database.
    let db = good.transport_database();
    std::os::unix::fs::chown(&db, Some(NOBODY), Some(NOGROUP)).unwrap();
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    let source_before = fs::read(postfix.transport_file()).unwrap();
    let db_before = fs::read(&db).unwrap();

    let victim = Victim::new();
    let commands = crate::stand_in_commands(
        "postmap",
        &format!(
            "case \" $* \" in *\" -q \"*) exec /usr/sbin/postmap \"$@\";; esac\n\
             /usr/sbin/postmap \"$@\" || exit $?\n\
             for a in \"$@\"; do case \"$a\" in hash:*) f=\"${{a#hash:}}.db\"; \
             rm -f \"$f\"; ln -s '{}' \"$f\";; esac; done",
            victim.path.display()
        ),
    );
    let mut s = settings(&postfix, &root.path().join("backup"), Some("hash"));
    s.command_dir = commands.path().to_owned();
    let bad = PostfixCli::new(s).unwrap();

    let error = bad
        .write_transport(&block(&["a.example", "b.example"]))
        .unwrap_err();
    match &error {
        PostfixError::File(file) => match file.as_ref() {
            relay_fs::FsError::Refused { path, problem, .. } => {
                assert!(path.to_string_lossy().ends_with("transport.db"), "{error}");
                assert!(problem.contains("symbolic link"), "{error}");
            }
            other => panic!("expected a refusal naming the database, got {other:?}"),
        },
        other => panic!("expected a refusal naming the database, got {other:?}"),
    }
    victim.assert_untouched();
    assert_eq!(fs::read(postfix.transport_file()).unwrap(), source_before);
    assert_eq!(fs::read(&db).unwrap(), db_before);
    assert!(
        crate::temp_files(&postfix).is_empty(),
        "{:?}",
        crate::temp_files(&postfix)
    );
}
